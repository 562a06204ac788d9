"""Graceful stops: SIGTERM, SIGUSR1 or Ctrl-C (SIGINT) ask the run to checkpoint and exit.

Clusters send SIGTERM before killing a job, and Slurm can send SIGUSR1 some time
before the time limit (`#SBATCH --signal`); a person presses Ctrl-C. The handler
only sets a flag; the train loop saves a checkpoint at the next step boundary, and
scoring stops after its current call without writing results; both exit with
PREEMPTED_EXIT_CODE so that a requeued job (or the same command) resumes.

A second Ctrl-C ends the process at once with INTERRUPTED_EXIT_CODE, saying what is
kept, even while the main thread is inside a long XLA call (a compile takes minutes
on a CPU, and Python runs signal handlers only between bytecodes): the C-level
handler writes each signal's number to a pipe (signal.set_wakeup_fd), which a
thread reads.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

PREEMPTED_EXIT_CODE = 3
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # what a shell reports for a Ctrl-C
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
  """Raised by the train loop after it saved a checkpoint on request."""

  def __init__(self, step: int | None, signal_name: str, message: str | None = None):
    super().__init__(message or (
        f'stopped by {signal_name} at step {step} after saving a checkpoint; run the same '
        f'command again to resume'))
    self.step = step
    self.signal_name = signal_name


# What a stopped scoring leaves, and what its rerun does.
SCORE_AGAIN = 'no results were written; run the same command again to score again'


class Stopped(Preempted):
  """Raised by work whose partial results are not kept (scoring) on a stop signal."""

  def __init__(self, signal_name: str, what: str):
    super().__init__(None, signal_name, f'stopped by {signal_name} while {what}; '
                     f'{SCORE_AGAIN}')


class PreemptionWatcher:
  """Context manager: records the first stop signal received while active.

  kept() says what stays on disk if the process ends now and what a rerun does (the
  line of a second Ctrl-C, which exits at once); it runs on the watching thread, so
  it must only read (e.g. list a folder). A watcher entered while another is active
  leaves the signals to the outer one. By default the inner one never reports a
  request: scoring inside the train loop's ranking trajectory must not end training
  before the loop's own safe point (its checkpoint). An outer watcher made with
  inner_stops=True lends its request to the watchers inside it: an evaluation watches
  from its first step to its last, and the scoring inside stops at its next call.
  """

  def __init__(self, kept: Callable[[], str] | None = None, *, inner_stops: bool = False):
    self._signal_name: str | None = None
    self._kept = kept
    self._inner_stops = inner_stops
    self._previous = {}
    self._pipe = None
    self._previous_wakeup_fd = -1
    self._thread = None
    self._installed = False

  @property
  def signal_name(self) -> str | None:
    """The first stop signal's name (SIGTERM, ...) or None; an inner watcher reports
    the outer one's where that one was made with inner_stops=True."""
    if self._installed or not _ACTIVE:
      return self._signal_name
    outer = _ACTIVE[0]
    return outer.signal_name if outer._inner_stops else None  # pylint: disable=protected-access

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def stop_if_requested(self, what: str) -> None:
    """Raise Stopped when a stop signal arrived: for work that keeps nothing partial."""
    if self.requested:
      raise Stopped(self.signal_name, what)

  def _handle(self, signum, frame):
    del frame
    if self._signal_name is None:
      self._signal_name = signal.Signals(signum).name

  def _watch_for_a_second_interrupt(self, read_fd: int) -> None:
    """Exit at once on the second SIGINT: the thread body reading the wakeup pipe."""
    interrupts = 0
    while True:
      try:
        received = os.read(read_fd, 64)
      except OSError:
        return
      if not received:  # the pipe was closed: the watcher exited
        return
      interrupts += received.count(signal.SIGINT)
      if interrupts >= 2:
        kept = self._kept() if self._kept is not None else (
            'run the same command again to resume')
        sys.stderr.write(f'stopped at once by a second SIGINT (Ctrl-C); {kept}\n')
        sys.stderr.flush()
        os._exit(INTERRUPTED_EXIT_CODE)  # pylint: disable=protected-access

  def __enter__(self):
    # Handlers need the main thread; an outer watcher keeps its own.
    if threading.current_thread() is threading.main_thread() and not _ACTIVE:
      _ACTIVE.append(self)
      self._installed = True
      read_fd, write_fd = os.pipe()
      os.set_blocking(write_fd, False)  # set_wakeup_fd requires it
      self._pipe = (read_fd, write_fd)
      self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd)
      self._thread = threading.Thread(target=self._watch_for_a_second_interrupt,
                                      args=(read_fd,), daemon=True,
                                      name='second-interrupt-watcher')
      self._thread.start()
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    if self._pipe is not None:
      signal.set_wakeup_fd(self._previous_wakeup_fd)
      read_fd, write_fd = self._pipe
      os.close(write_fd)  # the thread reads end-of-file and returns
      self._thread.join()
      os.close(read_fd)
      self._pipe = None
    if self._installed:
      _ACTIVE.remove(self)
      self._installed = False
    return False


_ACTIVE: list[PreemptionWatcher] = []  # the watcher holding the signals (at most one)
