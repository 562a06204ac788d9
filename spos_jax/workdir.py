"""The run folder: its config record, reproducibility record, markers and logs.

WORKDIR/config.json   the resolved config (a rerun with other results-changing
                      values is refused, naming the keys)
WORKDIR/run_info.json package versions, device, git commit, data split seed
WORKDIR/TRAINED       written when training finished (holds the final step); FAILED
                      holds why a run stopped
WORKDIR/FEWSHOT_TRAINED  the same for the few-shot phase (fewshot.py), whose
                      checkpoints live in checkpoints_fewshot/
WORKDIR/tb/           TensorBoard event files
WORKDIR/.lock         flock'ed by the one process working on the run (lock())

Every file is written to a temporary name and renamed. A full disk (ENOSPC, EDQUOT)
ends a write with DiskFullError, one line naming the file and the free space, and
leaves no temporary file behind.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile

from absl import logging
import jax

from spos_jax import bench as bench_lib
from spos_jax import config as config_lib

CONFIG_FILE = 'config.json'
RUN_INFO_FILE = 'run_info.json'
TRAINED_MARKER = 'TRAINED'
FEWSHOT_TRAINED_MARKER = 'FEWSHOT_TRAINED'
CHECKPOINTS_FOLDER = 'checkpoints'
FEWSHOT_CHECKPOINTS_FOLDER = 'checkpoints_fewshot'
# Folders whose contents make a workdir a run of its config.json (check_same_run).
WORK_FOLDERS = (CHECKPOINTS_FOLDER, FEWSHOT_CHECKPOINTS_FOLDER, 'results')
FAILED_MARKER = 'FAILED'
LOG_FILE = 'log.txt'  # the launchers' console log of a run, one '=== ' header per launch
LOCK_FILE = '.lock'
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'scipy',
             'ml_collections', 'tensorflow-datasets')


class WorkdirError(RuntimeError):
  """The workdir cannot be used: unwritable, full, locked, or another config's run."""


class DiskFullError(WorkdirError):
  """A write failed for lack of space (ENOSPC) or quota (EDQUOT)."""


# ----------------------------------------------------------------------- disk space


def is_disk_full(error: BaseException) -> bool:
  """Whether error, or one it was raised from, is ENOSPC/EDQUOT.

  Orbax reports a full disk as tensorstore's ValueError('RESOURCE_EXHAUSTED: ...
  No space left on device [os_error_code=\'28\']'), without an errno: its text counts.
  """
  texts = tuple(os.strerror(code) for code in _DISK_FULL_ERRNOS)
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
      return True
    if any(text in str(error) for text in texts):
      return True
    error = error.__cause__ or error.__context__
  return False


def _size_text(num_bytes: float) -> str:
  if num_bytes < 1024:
    return f'{int(num_bytes)} bytes'
  for unit in ('KiB', 'MiB', 'GiB'):
    num_bytes /= 1024
    if num_bytes < 1024 or unit == 'GiB':
      return f'{num_bytes:.1f} {unit}'


def _existing_ancestor(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def free_space_text(path: str) -> str:
  """'<n> free' on the file system of path (or why that is unknown)."""
  try:
    free = shutil.disk_usage(_existing_ancestor(path)).free
  except OSError as e:
    return f'free space unknown ({e.strerror})'
  return f'{_size_text(free)} free'


def disk_full_error(path: str, error: BaseException) -> DiskFullError:
  """The one-line error for a write of path that failed on a full disk."""
  reason = 'quota exceeded' if 'quota' in str(error).lower() or getattr(
      error, 'errno', None) == errno.EDQUOT else 'no space left on the device'
  return DiskFullError(f'disk full writing {path} ({reason}, {free_space_text(path)}); '
                       f'free some space and rerun the same command')


def check_free_space(path: str, need_bytes: int, what: str) -> None:
  """DiskFullError unless the file system of path (or its nearest existing folder)
  has need_bytes free: for refusing work whose output could not be written."""
  try:
    free = shutil.disk_usage(_existing_ancestor(path)).free
  except OSError:
    return  # nothing to measure with: the write itself will say
  if free < need_bytes:
    raise DiskFullError(f'not enough free space for {what} in {path}: {_size_text(free)} '
                        f'free, {_size_text(need_bytes)} needed; free some space and rerun')


# ---------------------------------------------------------------------- file writes


def write_temporary(folder: str, text: str, target: str | None = None) -> str:
  """Write text to a new temporary file in folder; its path. Removed if writing fails.

  The file gets the umask's usual mode (mkstemp's 0600 would hide results from the
  other users of a shared folder). A full disk raises DiskFullError naming target
  (the file the text is for), or folder.
  """
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
  except OSError as e:
    if is_disk_full(e):
      raise disk_full_error(target or folder, e) from None
    raise
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
  except BaseException as e:
    os.remove(tmp)
    if is_disk_full(e):
      raise disk_full_error(target or folder, e) from None
    raise
  return tmp


def write_text_atomic(path: str, text: str) -> None:
  """Write to a temporary file and rename it: readers never see half a file."""
  tmp = write_temporary(os.path.dirname(os.path.abspath(path)), text, target=path)
  try:
    os.replace(tmp, path)
  except BaseException as e:
    os.remove(tmp)
    if is_disk_full(e):
      raise disk_full_error(path, e) from None
    raise


def _strict_json(value):
  """NaN/Inf (e.g. the correlation of constant predictions) -> null: strict JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_strict_json(v) for v in value]
  return value


def json_text(payload) -> str:
  """Strict JSON (NaN written as null), indented, keys sorted."""
  return json.dumps(_strict_json(payload), indent=2, sort_keys=True, default=str,
                    allow_nan=False) + '\n'


def write_json_atomic(path: str, payload) -> None:
  write_text_atomic(path, json_text(payload))


def check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=workdir, prefix='.write-probe-')
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    if is_disk_full(e):
      raise disk_full_error(workdir, e) from None
    raise WorkdirError(f'workdir {workdir!r} is not writable: {e}') from None


def load_config_record(workdir: str) -> dict | None:
  """The run's config.json ({'train.lr': 0.025, ...}); None when there is none.

  WorkdirError, in one line naming the file, when it is unreadable or not a run's
  record: not a JSON object, empty, or holding keys that no config has.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f'{path} is unreadable ({e}); move it away or use a new workdir') from None
  problem = _config_record_problem(saved)
  if problem:
    raise WorkdirError(f'{path} {problem}, not a config record of a run '
                       f'({{"train.lr": 0.025, ...}}); move it away or use a new workdir')
  return saved


def _config_record_problem(saved) -> str | None:
  """What makes a parsed config.json no run's record; None when it is one.

  Keys a record lacks take their defaults (a run recorded before they existed).
  """
  if not isinstance(saved, dict):
    return f'holds a JSON {_json_type(saved)}'
  if not saved:
    return 'holds an empty JSON object'
  known = config_lib.flatten(config_lib.base_config())
  unknown = sorted(k for k in saved if k not in known)
  if unknown:
    return f'holds {len(unknown)} unknown keys ({", ".join(map(repr, unknown[:3]))})'
  return None


def _json_type(value) -> str:
  names = {list: 'list', str: 'string', bool: 'boolean', int: 'number', float: 'number',
           type(None): 'null'}
  return names.get(type(value), type(value).__name__)


def has_work(workdir: str) -> bool:
  """Whether workdir holds checkpoints or results: what makes it a run of its record."""
  return any(os.path.isdir(os.path.join(workdir, sub)) and os.listdir(
      os.path.join(workdir, sub)) for sub in WORK_FOLDERS)


def check_same_run(workdir: str, config) -> None:
  """WorkdirError unless workdir is new or its checkpoints and results are this config's.

  Keys that do not change results (config.RESUMABLE_KEYS) may differ; a config.json
  without checkpoints or results (a start that failed early) does not count. Reads
  only: for refusing a run before anything is written.
  """
  saved = load_config_record(workdir)
  worked = has_work(workdir)
  if saved is None and worked:
    raise WorkdirError(f'{workdir} holds checkpoints or results but no {CONFIG_FILE}; '
                       f'refusing to mix runs')
  if saved is not None and worked:
    current = config_lib.flatten(config)
    differing = config_lib.differing_keys(saved, current)
    if differing:
      details = ', '.join(f'{k}: {saved.get(k, "<missing>")!r} -> {current.get(k, "<missing>")!r}'
                          for k in differing[:10])
      raise WorkdirError(
          f'{workdir} holds a run of a different config ({len(differing)} keys differ: '
          f'{details}); use another --workdir or rerun with the saved values')


def prepare(workdir: str, config) -> None:
  """Create/check the workdir before any training work, and record the config.

  A workdir that holds checkpoints or results of a different config is refused
  (check_same_run; nothing is overwritten), else config.json and run_info.json are
  written and an old FAILED removed.
  """
  check_writable(workdir)
  check_same_run(workdir, config)
  current = config_lib.flatten(config_lib.resolved(config))  # what 'auto' and '' meant
  # What the run's data recorded (record_data) outlives the rewrite: a resume checks it.
  kept = {k: v for k, v in load_run_info(workdir).items() if k in _DATA_RECORD_KEYS}
  try:
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), current)
    write_json_atomic(os.path.join(workdir, RUN_INFO_FILE), {**run_info(config), **kept})
  except DiskFullError as e:
    record_failure(workdir, e)
    raise
  failed = os.path.join(workdir, FAILED_MARKER)
  if os.path.exists(failed):
    os.remove(failed)  # a new attempt; a new failure writes it again


def _package_versions() -> dict:
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def _git_commit() -> str:
  """HEAD of the package's checkout, '+dirty' when tracked files have changes."""
  here = os.path.dirname(os.path.abspath(__file__))

  def git(*args):
    return subprocess.run(['git', *args], cwd=here, capture_output=True, text=True,
                          timeout=5, check=True).stdout.strip()
  try:
    commit = git('rev-parse', 'HEAD')
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  try:
    if commit and git('status', '--porcelain', '--untracked-files=no'):
      commit += '+dirty'
  except (OSError, subprocess.SubprocessError):
    commit += '+unknown-status'
  return commit or 'unknown'


def _file_sha256(path: str) -> str | None:
  """sha256 of a file's bytes (as bench.Bench.sha256 records it); None if unreadable."""
  try:
    with open(path, 'rb') as f:
      return hashlib.sha256(f.read()).hexdigest()
  except OSError:
    return None


def cpu_model(cpuinfo: str) -> str | None:
  """The first processor's model in /proc/cpuinfo text, with its family and model
  numbers where given ('AMD EPYC (family 26, model 2)'): vendors give one model name
  to several generations, and XLA:CPU compiles for the host's instruction set, so a
  CPU run's floats can differ between them."""
  fields = {}
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(':')
    if not sep:
      if fields:
        break  # the first processor's block has ended
      continue
    fields.setdefault(key.strip(), value.strip())
  name = fields.get('model name')
  if name and 'cpu family' in fields:
    name += f' (family {fields["cpu family"]}, model {fields.get("model", "?")})'
  return name


def _host_cpu() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      model = cpu_model(f.read())
  except OSError:
    model = None
  return model or platform.processor() or platform.machine() or 'unknown'


def run_info(config) -> dict:
  """What produced this run: versions, device and host CPU, commit, data split, bench
  file hash."""
  devices = jax.devices()
  bench_path = bench_lib.resolve_path(config.bench.path)  # builtin: the packaged table
  return dict(
      bench_path=bench_path,
      bench_sha256=_file_sha256(bench_path) if bench_path else None,
      packages=_package_versions(), python=platform.python_version(),
      device_kind=devices[0].device_kind, platform=devices[0].platform,
      device_count=len(devices), host_cpu=_host_cpu(), host_cpu_count=os.cpu_count(),
      git_commit=_git_commit(),
      data_split_seed=config.data.split_seed, data_source=config_lib.data_source(config),
      data_path=config.data.path)


def load_run_info(workdir: str) -> dict:
  """run_info.json as a dict; {} when it is missing or unreadable (it records, it
  does not decide: config.json does)."""
  try:
    with open(os.path.join(workdir, RUN_INFO_FILE)) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return {}
  return info if isinstance(info, dict) else {}


# ------------------------------------------------------------------ the run's data

# run_info.json keys that record the data a run was trained on (record_data).
DATA_SHA256_KEY = 'data_sha256'
FINAL_STEP_KEY = 'final_step'
_DATA_RECORD_KEYS = (DATA_SHA256_KEY, FINAL_STEP_KEY)


def record_data(workdir: str, data_sha256: str, final_step: int | None = None) -> None:
  """Check the data a run is about to use against the one it recorded; record it.

  data_sha256 fingerprints the contents (data.fingerprint: train and validation
  arrays after the split), so another path to the same arrays is the same data and
  changed contents at the same path are not. A run with checkpoints or results
  that recorded other contents is refused (WorkdirError, one line naming both
  fingerprints); a run without any (a start that failed early) records the new
  ones. final_step, the step training ends at with this data, is what a TRAINED
  marker is checked against (marker_problem).
  """
  info = load_run_info(workdir)
  recorded = info.get(DATA_SHA256_KEY)
  if recorded and recorded != data_sha256 and has_work(workdir):
    was = info.get('data_path') or info.get('data_source') or 'its data'
    raise WorkdirError(
        f'{workdir} was trained on data with fingerprint {recorded[:16]} ({was}), but the '
        f'data given now has fingerprint {data_sha256[:16]} (train and validation arrays '
        f'after the split); pass the data the run started with, or use another --workdir')
  update = {DATA_SHA256_KEY: data_sha256}
  if final_step is not None:
    update[FINAL_STEP_KEY] = int(final_step)
  if all(info.get(k) == v for k, v in update.items()):
    return
  check_writable(workdir)
  write_json_atomic(os.path.join(workdir, RUN_INFO_FILE), {**info, **update})


# -------------------------------------------------------------------------- markers


def mark_failed(workdir: str, message: str) -> None:
  write_text_atomic(os.path.join(workdir, FAILED_MARKER), message + '\n')


def record_failure(workdir: str, error: BaseException) -> None:
  """Write FAILED with error's message if the disk allows; otherwise only log that
  it could not (the caller raises error itself: the first error is the one to read)."""
  try:
    mark_failed(workdir, str(error))
  except (OSError, WorkdirError) as e:
    logging.warning('could not write %s either: %s',
                    os.path.join(workdir, FAILED_MARKER), e)


def mark_trained(workdir: str, step: int, marker: str = TRAINED_MARKER) -> None:
  """Write marker (TRAINED, or FEWSHOT_TRAINED for the few-shot phase) naming step."""
  try:
    write_text_atomic(os.path.join(workdir, marker), f'{step}\n')
  except DiskFullError as e:
    record_failure(workdir, e)
    raise


def is_trained(workdir: str, marker: str = TRAINED_MARKER) -> bool:
  return os.path.exists(os.path.join(workdir, marker))


def trained_step(workdir: str, marker: str = TRAINED_MARKER) -> int | None:
  """The final step the marker names; None when that training has not finished."""
  path = os.path.join(workdir, marker)
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return None
  except OSError as e:
    raise WorkdirError(f'{path} is unreadable ({e.strerror})') from None
  try:
    return int(text.strip())
  except ValueError:
    raise WorkdirError(f'{path} holds {text.strip()[:40]!r}, not a step number; remove it '
                       f'and rerun spos_jax.main to finish the run') from None


def withdraw_trained(workdir: str, why: str, marker: str = TRAINED_MARKER,
                     then: str = 'rerunning spos_jax.main retrains the last steps') -> None:
  """Remove the marker (its final checkpoint is gone), so that a rerun retrains."""
  path = os.path.join(workdir, marker)
  if os.path.exists(path):
    os.remove(path)
    logging.warning('removed %s: %s; %s', path, why, then)


def checkpoint_steps(workdir: str, folder: str = CHECKPOINTS_FOLDER) -> list[int]:
  """Steps of the finished checkpoints in WORKDIR/folder, ascending.

  Orbax names a finished checkpoint by its step alone (a save in progress has a
  suffix), so the folder's names say it without opening orbax: cheap, and safe
  from a signal-watching thread.
  """
  try:
    names = os.listdir(os.path.join(workdir, folder))
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit())


def kept_text(workdir: str) -> str:
  """What a run stopped now keeps (its newest checkpoint of each phase) and what the
  rerun does: the end of the line of an interrupted run."""
  kept = [f'{os.path.join(workdir, folder, str(steps[-1]))} (step {steps[-1]})'
          for folder in (CHECKPOINTS_FOLDER, FEWSHOT_CHECKPOINTS_FOLDER)
          for steps in [checkpoint_steps(workdir, folder)] if steps]
  if not kept:
    return 'no checkpoint was saved yet; run the same command again to start'
  return (f'kept the newest checkpoint {" and ".join(kept)}, the steps after it are lost; '
          f'run the same command again to resume')


def marker_problem(workdir: str, marker: str = TRAINED_MARKER,
                   folder: str = CHECKPOINTS_FOLDER) -> str | None:
  """Why the finished marker cannot be believed; None when it can (or is absent).

  The marker must name the final step the run's data makes (TRAINED, when
  record_data recorded it), and no checkpoint in folder may be newer. An older
  newest checkpoint is not the marker's fault: the final one was lost (restore
  refuses it by name, and a rerun of main retrains the last steps).
  """
  step = trained_step(workdir, marker)
  if step is None:
    return None
  path = os.path.join(workdir, marker)
  final = load_run_info(workdir).get(FINAL_STEP_KEY) if marker == TRAINED_MARKER else None
  if isinstance(final, int) and step != final:
    return f'{path} names step {step}, but the run\'s final step is {final}'
  steps = checkpoint_steps(workdir, folder)
  if steps and steps[-1] > step:
    return (f'{path} names step {step}, but the newest checkpoint in '
            f'{os.path.join(workdir, folder)} is step {steps[-1]}')
  return None


# ----------------------------------------------------------------------------- lock


_HELD_LOCKS = set()  # lock files this process holds: lock() is re-entrant


def _holder_record() -> str:
  return json.dumps(dict(
      pid=os.getpid(), host=socket.gethostname(), command=' '.join(sys.argv),
      since=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))) + '\n'


def _holder_text(fd: int) -> str:
  """Who holds the lock, from what its holder wrote into the lock file."""
  try:
    holder = json.loads(os.pread(fd, 65536, 0).decode())
    command = holder['command'] if len(holder['command']) <= 120 else (
        holder['command'][:117] + '...')
    return (f'pid {holder["pid"]} on {holder["host"]} since {holder["since"]} '
            f'({command})')
  except (OSError, ValueError, KeyError, TypeError):
    return 'another process (it has not written who it is yet)'


@contextlib.contextmanager
def lock(workdir: str):
  """Hold the workdir's exclusive lock: one process trains or scores a run at a time.

  fcntl.flock on WORKDIR/.lock, never waiting: when another process holds it,
  WorkdirError says who (pid, host, since, command). The kernel releases the lock
  when its holder exits, however it ends (kill -9 too), so a crash never leaves a
  stale lock; the file itself stays. Re-entrant within a process. The lock is held
  by an open file that exec'd child processes do not inherit.
  """
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  if path in _HELD_LOCKS:
    yield
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    raise WorkdirError(f'cannot open the lock file {path}: {e.strerror}') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _holder_text(fd)
    os.close(fd)
    if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
      raise WorkdirError(f'cannot lock {path}: {e.strerror}') from None
    raise WorkdirError(f'{workdir} is in use by {holder}; wait for it to finish or '
                       f'use another --workdir') from None
  try:
    try:  # who holds it, for the message of a second process; a full disk may refuse
      os.ftruncate(fd, 0)
      os.pwrite(fd, _holder_record().encode(), 0)
    except OSError as e:
      logging.warning('could not write the holder into %s: %s', path, e.strerror)
    _HELD_LOCKS.add(path)
    yield
  finally:
    _HELD_LOCKS.discard(path)
    try:
      os.ftruncate(fd, 0)  # while still held: the file names a holder only when held
    except OSError:
      pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def summary_writer(workdir: str):
  """TensorBoard writer for WORKDIR/tb (tensorboardX, imported when used)."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter(os.path.join(workdir, 'tb'))
