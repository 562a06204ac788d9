"""The run folder: its config record, reproducibility record, markers and logs.

WORKDIR/config.json   the resolved config (a rerun with other results-changing
                      values is refused, naming the keys)
WORKDIR/run_info.json package versions, device, git commit, data split seed
WORKDIR/TRAINED       written when training finished; FAILED holds why a run stopped
WORKDIR/tb/           TensorBoard event files
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import tempfile

import jax

from spos_jax import config as config_lib

CONFIG_FILE = 'config.json'
RUN_INFO_FILE = 'run_info.json'
TRAINED_MARKER = 'TRAINED'
FAILED_MARKER = 'FAILED'
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'scipy',
             'ml_collections', 'tensorflow-datasets')


class WorkdirError(RuntimeError):
  """The workdir cannot be used: unwritable, or it holds another config's run."""


def write_temporary(folder: str, text: str) -> str:
  """Write text to a new temporary file in folder; its path. Removed if writing fails.

  The file gets the umask's usual mode (mkstemp's 0600 would hide results from the
  other users of a shared folder).
  """
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
  except BaseException:
    os.remove(tmp)
    raise
  return tmp


def write_text_atomic(path: str, text: str) -> None:
  """Write to a temporary file and rename it: readers never see half a file."""
  os.replace(write_temporary(os.path.dirname(os.path.abspath(path)), text), path)


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
    raise WorkdirError(f'workdir {workdir!r} is not writable: {e}') from None


def load_config_record(workdir: str) -> dict | None:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f'{path} is unreadable ({e}); move it away or use a new workdir') from None


def prepare(workdir: str, config) -> None:
  """Create/check the workdir before any training work, and record the config.

  A workdir that holds checkpoints or results of a different config is refused
  (nothing is overwritten); keys that do not change results
  (config.RESUMABLE_KEYS) may differ. A config.json without any of those (a start
  that failed early) is simply replaced.
  """
  check_writable(workdir)
  current = config_lib.flatten(config)
  saved = load_config_record(workdir)
  has_work = any(os.path.isdir(os.path.join(workdir, sub)) and os.listdir(
      os.path.join(workdir, sub)) for sub in ('checkpoints', 'results'))
  if saved is None and has_work:
    raise WorkdirError(f'{workdir} holds checkpoints or results but no {CONFIG_FILE}; '
                       f'refusing to mix runs')
  if saved is not None and has_work:
    differing = config_lib.differing_keys(saved, current)
    if differing:
      details = ', '.join(f'{k}: {saved.get(k, "<missing>")!r} -> {current.get(k, "<missing>")!r}'
                          for k in differing[:10])
      raise WorkdirError(
          f'{workdir} holds a run of a different config ({len(differing)} keys differ: '
          f'{details}); use another --workdir or rerun with the saved values')
  write_json_atomic(os.path.join(workdir, CONFIG_FILE), current)
  write_json_atomic(os.path.join(workdir, RUN_INFO_FILE), run_info(config))
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


def run_info(config) -> dict:
  """What produced this run: versions, device, commit, data split, bench file hash."""
  devices = jax.devices()
  return dict(
      bench_path=config.bench.path,
      bench_sha256=_file_sha256(config.bench.path) if config.bench.path else None,
      packages=_package_versions(), python=platform.python_version(),
      device_kind=devices[0].device_kind, platform=devices[0].platform,
      device_count=len(devices), git_commit=_git_commit(),
      data_split_seed=config.data.split_seed, data_source=config.data.source,
      data_path=config.data.path)


def mark_failed(workdir: str, message: str) -> None:
  write_text_atomic(os.path.join(workdir, FAILED_MARKER), message + '\n')


def mark_trained(workdir: str, step: int) -> None:
  write_text_atomic(os.path.join(workdir, TRAINED_MARKER), f'{step}\n')


def is_trained(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, TRAINED_MARKER))


def summary_writer(workdir: str):
  """TensorBoard writer for WORKDIR/tb (tensorboardX, imported when used)."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter(os.path.join(workdir, 'tb'))
