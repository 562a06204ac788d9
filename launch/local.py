"""Run jobs on this machine: one at a time, or one per GPU group when GPUs are visible.

Each job is a `python -m spos_jax.main` subprocess in its own session, with output
appended to ROOT/<name>/log.txt. SIGINT/SIGTERM to the launcher stop new starts and
forward SIGTERM to running jobs, which checkpoint and exit with status 3
(spos_jax/preemption.py); a rerun resumes them.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import time

from launch import plan
from spos_jax import preemption

STATUSES = ('done', 'failed', 'interrupted', 'not started', 'skipped')
_POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class Outcome:
  job: plan.Job
  status: str  # one of STATUSES
  message: str = ''


def visible_gpus() -> list[str]:
  """GPU ids this process may use: CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`, else none."""
  env = os.environ.get('CUDA_VISIBLE_DEVICES')
  if env is not None:
    return [d.strip() for d in env.split(',') if d.strip() and d.strip() != '-1']
  try:
    listing = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True,
                             timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(l for l in listing.splitlines() if l.startswith('GPU '))]


def gpu_slots(gpus: list[str], gpus_per_run: int) -> list[str | None]:
  """CUDA_VISIBLE_DEVICES of each parallel slot; [None] (one slot, env untouched) on CPU."""
  if not gpus or gpus_per_run < 1:
    return [None]
  groups = [gpus[i:i + gpus_per_run] for i in range(0, len(gpus), gpus_per_run)]
  return [','.join(g) for g in groups if len(g) == gpus_per_run] or [','.join(gpus)]


def job_env(slot: str | None, pythonpath: str) -> dict:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, (pythonpath, env.get('PYTHONPATH'))))
  if slot is not None:
    env['CUDA_VISIBLE_DEVICES'] = slot
  return env


def outcome_of(job: plan.Job, returncode: int, stopped: bool) -> Outcome:
  """done / interrupted / failed from the exit status, the markers and the results."""
  if returncode == 0 and plan.is_finished(job):
    return Outcome(job, 'done')
  if returncode == preemption.PREEMPTED_EXIT_CODE or (stopped and returncode != 0):
    return Outcome(job, 'interrupted', f'exit status {returncode}; rerun to resume')
  if returncode == 0:
    return Outcome(job, 'failed', 'exit status 0 but no results or TRAINED marker')
  return Outcome(job, 'failed', f'exit status {returncode}: {plan.failure_message(job)}')


@dataclasses.dataclass
class _Running:
  job: plan.Job
  slot: str | None
  log: object  # the open log file
  process: subprocess.Popen


def _start(job: plan.Job, slot: str | None, pythonpath: str) -> _Running:
  log = open(job.log, 'a')  # pylint: disable=consider-using-with  (closed when it ends)
  log.write(plan.log_header(job, 'local' if slot is None else f'local, GPUs {slot}'))
  log.flush()
  print(f'start  {job.name}' + ('' if slot is None else f' on GPU {slot}') + f'  (log: {job.log})',
        flush=True)
  process = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT,
                             env=job_env(slot, pythonpath),
                             start_new_session=True)  # Ctrl-C reaches only the launcher
  return _Running(job, slot, log, process)


class _Stop:
  """Signal handler: the first signal stops new starts and asks running jobs to stop."""

  def __init__(self, running: dict):
    self.requested = 0
    self.running = running

  def __call__(self, signum, frame):
    del frame
    self.requested += 1
    # SIGTERM asks main for a checkpoint; a second signal means "now".
    forward = signal.SIGTERM if self.requested == 1 else signal.SIGKILL
    print(f'launch.sweep: got {signal.Signals(signum).name}; sending '
          f'{signal.Signals(forward).name} to {len(self.running)} running job(s)', flush=True)
    for r in self.running.values():
      if r.process.poll() is None:
        r.process.send_signal(forward)


def run_jobs(jobs: list[plan.Job], slots: list[str | None], pythonpath: str) -> list[Outcome]:
  """Run every job, len(slots) at a time; a failure does not stop the others."""
  running = {}  # job name -> _Running
  stop = _Stop(running)
  previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
  pending, free, outcomes = collections.deque(jobs), list(slots), []
  try:
    while running or (pending and not stop.requested):
      while pending and free and not stop.requested:
        job = pending.popleft()
        running[job.name] = _start(job, free.pop(0), pythonpath)
      time.sleep(_POLL_S)
      for name in [n for n, r in running.items() if r.process.poll() is not None]:
        r = running.pop(name)
        r.log.close()
        free.append(r.slot)
        outcome = outcome_of(r.job, r.process.returncode, bool(stop.requested))
        print(f'{outcome.status:<6} {name}' + (f': {outcome.message}' if outcome.message else ''),
              flush=True)
        outcomes.append(outcome)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return outcomes + [Outcome(job, 'not started', 'stopped before it started') for job in pending]
