"""Graceful stops: SIGTERM or SIGUSR1 ask the run to checkpoint and exit.

Clusters send SIGTERM before killing a job, and Slurm can send SIGUSR1 some time
before the time limit (`#SBATCH --signal`). The handler only sets a flag; the
train loop saves a checkpoint at the next step boundary and exits with
PREEMPTED_EXIT_CODE so that a requeued job resumes from it.
"""
from __future__ import annotations

import signal
import threading

PREEMPTED_EXIT_CODE = 3
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
  """Raised by the train loop after it saved a checkpoint on request."""

  def __init__(self, step: int, signal_name: str):
    super().__init__(f'stopped by {signal_name} at step {step} after saving a checkpoint; '
                     f'run the same command again to resume')
    self.step = step


class PreemptionWatcher:
  """Context manager: records the first stop signal received while active."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is None:
      self.signal_name = signal.Signals(signum).name

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # handlers need the main thread
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
