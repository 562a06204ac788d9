"""Run jobs on this machine: one at a time, or one per GPU group when GPUs are visible.

Each job is a `python -m spos_jax.main` subprocess in its own session, with output
appended to ROOT/<name>/log.txt. SIGINT/SIGTERM to the launcher stop new starts and
forward SIGTERM to running jobs, which checkpoint and exit with status 3
(spos_jax/preemption.py); a rerun resumes them.

While jobs run, a progress line every `progress_s` seconds: runs done / failed /
left, the sweep's ETA from the durations of the runs done so far, and per running
run what its log says last (training: its epoch and ETA).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import signal
import subprocess
import time

from launch import plan
from spos_jax import preemption

STATUSES = ('done', 'failed', 'interrupted', 'not started', 'skipped')
PROGRESS_S = 30.0  # seconds between progress lines
_POLL_S = 0.5
# absl's line prefix: 'I0314 12:00:01.123456 140211 train.py:347] '.
_ABSL_PREFIX = re.compile(r'^[IWEF]\d{4} [\d:.]+ +\d+ [^\]]*\] ')
# spos_jax.train's training line: 'epoch 3.00/250 step 420/35150 loss ... ETA 1h02m'.
_EPOCH_LINE = re.compile(r'^epoch (\S+) step \S+ .* ETA (\S+)')
_LOG_TAIL_BYTES = 16384


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


def format_duration(seconds: float) -> str:
  """0m12s, 4m10s, 2h05m: as the training line writes its ETA."""
  hours, rest = divmod(int(max(seconds, 0)), 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


def last_log_line(text: str) -> str:
  """The last absl line (prefix removed) of the current attempt, else its last line.

  The attempt starts after the newest '=== ' header the launchers write; absl lines
  are preferred over library output and tracebacks, which say less about the phase.
  """
  lines = text.splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith('=== ')]
  lines = [line.strip() for line in lines[starts[-1] + 1 if starts else 0:] if line.strip()]
  logged = [_ABSL_PREFIX.sub('', line) for line in lines if _ABSL_PREFIX.match(line)]
  return (logged or lines or [''])[-1]


def phase(log_line: str, width: int = 100) -> str:
  """A run's phase from its last log line: 'epoch 3.00/250, ETA 1h02m', else the line."""
  if not log_line:
    return 'starting'
  epoch = _EPOCH_LINE.match(log_line)
  if epoch:
    return f'epoch {epoch.group(1)}, ETA {epoch.group(2)}'
  return log_line if len(log_line) <= width else log_line[:width - 3] + '...'


def read_log_tail(path: str, size: int = _LOG_TAIL_BYTES) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(max(os.fstat(f.fileno()).st_size - size, 0))
      return f.read().decode(errors='replace')
  except OSError:
    return ''


def sweep_eta(durations: list[float], running_s: list[float], waiting: int,
              slots: int) -> float | None:
  """Seconds until every run has ended, from the mean duration of the runs done so far
  (None before the first): each running run takes the mean (it has run part of it),
  each waiting run the whole mean, spread over the parallel slots."""
  if not durations:
    return None
  mean = sum(durations) / len(durations)
  work = sum(max(mean - s, 0.0) for s in running_s) + waiting * mean
  return work / max(slots, 1)


def progress_line(outcomes: list[Outcome], running: dict, waiting: int, slots: int,
                  durations: list[float], now: float) -> str:
  """One line: counts, the sweep's ETA, and each running run's time and phase."""
  counts = collections.Counter(o.status for o in outcomes)
  left = len(running) + waiting
  eta = sweep_eta(durations, [now - r.started for r in running.values()], waiting, slots)
  if eta is None:
    eta_text = 'ETA after the first run is done'
  else:
    mean = sum(durations) / len(durations)
    eta_text = f'ETA {format_duration(eta)} (mean run {format_duration(mean)})'
  runs = ''.join(f' | {name} {format_duration(now - r.started)}: '
                 f'{phase(last_log_line(read_log_tail(r.job.log)))}'
                 for name, r in running.items())
  return (f'{time.strftime("%H:%M:%S")} progress: {counts["done"]} done, '
          f'{counts["failed"]} failed, {left} left; {eta_text}{runs}')


@dataclasses.dataclass
class _Running:
  job: plan.Job
  slot: str | None
  log: object  # the open log file
  process: subprocess.Popen
  started: float  # time.monotonic() at the start


def _start(job: plan.Job, slot: str | None, pythonpath: str) -> _Running:
  """Start the job; OSError when its log cannot be opened or the command not run."""
  log = open(job.log, 'a')  # pylint: disable=consider-using-with  (closed when it ends)
  try:
    log.write(plan.log_header(job, 'local' if slot is None else f'local, GPUs {slot}'))
    log.flush()
    process = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT,
                               env=job_env(slot, pythonpath),
                               start_new_session=True)  # Ctrl-C reaches only the launcher
  except BaseException:
    log.close()
    raise
  print(f'start  {job.name}' + ('' if slot is None else f' on GPU {slot}') + f'  (log: {job.log})',
        flush=True)
  return _Running(job, slot, log, process, time.monotonic())


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


def _report(outcome: Outcome) -> Outcome:
  print(f'{outcome.status:<6} {outcome.job.name}' +
        (f': {outcome.message}' if outcome.message else ''), flush=True)
  return outcome


def run_jobs(jobs: list[plan.Job], slots: list[str | None], pythonpath: str,
             progress_s: float = PROGRESS_S) -> list[Outcome]:
  """Run every job, len(slots) at a time; a failure does not stop the others.

  Every progress_s seconds while jobs run, a progress_line.
  """
  running = {}  # job name -> _Running
  stop = _Stop(running)
  previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
  pending, free, outcomes = collections.deque(jobs), list(slots), []
  durations = []  # seconds of each run done
  last_progress = time.monotonic()
  try:
    while running or (pending and not stop.requested):
      while pending and free and not stop.requested:
        job = pending.popleft()
        try:
          running[job.name] = _start(job, free[0], pythonpath)
          free.pop(0)
        except OSError as e:  # its log or its command: this run fails, the others go on
          outcomes.append(_report(Outcome(job, 'failed', f'could not start: {e}')))
      time.sleep(_POLL_S)
      now = time.monotonic()
      for name in [n for n, r in running.items() if r.process.poll() is not None]:
        r = running.pop(name)
        r.log.close()
        free.append(r.slot)
        outcomes.append(_report(outcome_of(r.job, r.process.returncode, bool(stop.requested))))
        if outcomes[-1].status == 'done':
          durations.append(now - r.started)
      if running and now - last_progress >= progress_s:
        last_progress = now
        print(progress_line(outcomes, running, 0 if stop.requested else len(pending),
                            len(slots), durations, now), flush=True)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return outcomes + [Outcome(job, 'not started', 'stopped before it started') for job in pending]
