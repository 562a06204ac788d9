"""From a sweep file to jobs: resolved configs, main-job commands, run folders.

A job is one `python -m spos_jax.main` call in ROOT/<name>. Its config is resolved
here exactly as main will resolve it (the same config file and --config.* flags
through ml_collections.config_flags), so bad overrides fail before anything starts.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import os
import re
import sys
import time

from absl import flags
from ml_collections import config_flags

from launch import grid
from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import run as run_lib
from spos_jax import workdir as workdir_lib

SWEEP_RECORD = 'sweep.json'
LOG_FILE = workdir_lib.LOG_FILE
# Under ROOT: JAX's persistent compilation cache of every run of the root, so a
# requeued or repeated run loads its compiled steps instead of compiling again.
COMPILATION_CACHE = '.jax_cache'


class SweepError(ValueError):
  """A sweep that cannot be launched: bad file, flag, override or root."""


class RunFolderError(RuntimeError):
  """One run's folder cannot hold it: that run fails, the sweep goes on without it."""


@dataclasses.dataclass(frozen=True)
class Job:
  name: str  # the run's name, with '-seedS' when seeds are split
  run: grid.Run  # the sweep's run
  overrides: dict  # the run's overrides, with seeds=(S,) when seeds are split
  base_config: str  # absolute path of the size's config file
  flags: dict  # --config.KEY=VALUE strings: the run's, then the command line's
  config: object  # the resolved ConfigDict, as main will see it
  workdir: str
  compilation_cache: str = ''  # --compilation_cache of the main job; '' passes none

  @property
  def log(self) -> str:
    return os.path.join(self.workdir, LOG_FILE)

  def command(self, python: str = sys.executable) -> list[str]:
    cache = [f'--compilation_cache={self.compilation_cache}'] if self.compilation_cache else []
    return [python, '-m', 'spos_jax.main', f'--config={self.base_config}',
            f'--workdir={self.workdir}', *cache,
            *(f'--config.{k}={v}' for k, v in self.flags.items())]


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str  # the file's stem, e.g. 'fig4'
  path: str
  config: object  # the sweep file's get_config()
  runs: list


def load_module(path: str, what: str):
  """Execute a Python file as a module; SweepError when it is missing or broken."""
  if not os.path.isfile(path):
    raise SweepError(f'{what} {path!r} does not exist')
  spec = importlib.util.spec_from_file_location(
      re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0]), path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  (any error of a user's file)
    raise SweepError(f'{what} {path!r} fails to load: {type(e).__name__}: {e}') from None
  return module


def load_sweep(path: str) -> Sweep:
  """A sweep file: get_config() (figure, sizes, ...) and get_runs() with unique names."""
  module = load_module(path, 'sweep file')
  for function in ('get_config', 'get_runs'):
    if not callable(getattr(module, function, None)):
      raise SweepError(f'sweep file {path!r} has no {function}()')
  runs = [grid.Run(*r) for r in module.get_runs()]
  duplicates = sorted(n for n, k in collections.Counter(r.name for r in runs).items() if k > 1)
  if duplicates:
    raise SweepError(f'sweep file {path!r} names runs twice: {", ".join(duplicates)}')
  stem = os.path.splitext(os.path.basename(path))[0]
  return Sweep(stem, os.path.abspath(path), module.get_config(), runs)


def size_configs(sweep: Sweep, replacements: str = '') -> dict[str, str]:
  """{size: absolute config path}: the sweep's (relative to its file), then 's=FILE,...'."""
  folder = os.path.dirname(sweep.path)
  paths = {size: os.path.normpath(os.path.join(folder, path))
           for size, path in sweep.config.sizes.items()}
  for item in filter(None, (s.strip() for s in replacements.split(','))):
    size, sep, path = item.partition('=')
    if not sep or size not in paths:
      raise SweepError(f'--size_config: {item!r} is not SIZE=FILE with SIZE one of '
                       f'{", ".join(paths)}')
    paths[size] = os.path.abspath(path)
  for size, path in paths.items():
    if not os.path.isfile(path):
      raise SweepError(f'config file of size {size!r} does not exist: {path}')
  return paths


def split_config_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Separate --config.KEY=VALUE (or --config.KEY VALUE) from the other arguments."""
  rest, overrides = [], {}
  args = iter(argv)
  for arg in args:
    if not arg.startswith('--config.'):
      rest.append(arg)
      continue
    key, sep, value = arg[len('--config.'):].partition('=')
    if not sep:
      value = next(args, None)
      if value is None:
        raise SweepError(f'{arg} needs a value')
    overrides[key] = value
  return rest, overrides


def check_keys(overrides: dict) -> None:
  known = config_lib.flatten(config_lib.base_config())
  unknown = sorted(k for k in overrides if k not in known)
  if unknown:
    raise SweepError(f'unknown config key(s): {", ".join("--config." + k for k in unknown)}')


def flag_value(value) -> str:
  """A typed override as config_flags parses it back: True, 5.0, (3,), none,avg_pool_3x3."""
  return str(tuple(value)) if isinstance(value, (list, tuple)) else str(value)


def resolve_config(base_config: str, overrides: dict[str, str]):
  """The config main builds from `--config=base_config --config.KEY=VALUE ...`."""
  check_keys(overrides)
  argv = ['launch', f'--config={base_config}',
          *(f'--config.{k}={v}' for k, v in overrides.items())]
  values = flags.FlagValues()
  # sys_argv: config_flags reads the overrides from it, not from the given argv.
  config_flags.DEFINE_config_file('config', None, flag_values=values, lock_config=True,
                                  sys_argv=argv)
  try:
    values(argv)
  except (flags.Error, ValueError, TypeError, KeyError, AttributeError) as e:
    raise SweepError(f'bad config override: {e}') from None
  config = values.config
  config_lib.validate(config)
  return config


def check_bench(config) -> None:
  """SweepError unless bench.path is 'builtin', '' / 'none' (no ranking) or a readable file.

  Relative paths are taken from here: the main jobs run in this folder too (the
  Slurm script cd's to it), so they open the file checked here.
  """
  try:
    bench_lib.check_path(config.bench.path)
  except bench_lib.BenchError as e:
    raise SweepError(str(e)) from None


def _resolve_run(name: str, base_config: str, overrides: dict):
  try:
    config = resolve_config(base_config, overrides)
    check_bench(config)
  except (SweepError, config_lib.ConfigError) as e:
    raise SweepError(f'run {name}: {e}') from None
  return config


def jobs_for(sweep: Sweep, root: str, sizes: dict, cli_overrides: dict,
             split_seeds: bool = False) -> list[Job]:
  """Every job of the sweep: run overrides, then the command line's; optionally per seed."""
  jobs = []
  cache = os.path.join(root, COMPILATION_CACHE)
  for run in sweep.runs:
    if run.size not in sizes:
      raise SweepError(f'run {run.name}: size {run.size!r} has no config file in the sweep')
    base = sizes[run.size]
    overrides = {**{k: flag_value(v) for k, v in run.overrides.items()}, **cli_overrides}
    config = _resolve_run(run.name, base, overrides)
    if not split_seeds:
      jobs.append(Job(run.name, run, run.overrides, base, overrides, config,
                      os.path.join(root, run.name), cache))
      continue
    # The split's seeds=(s,) goes last: it must win over a command-line --config.seeds.
    for one in grid.split_seeds(run, config.seeds):
      one_overrides = {**overrides, 'seeds': flag_value(one.overrides['seeds'])}
      jobs.append(Job(one.name, run, one.overrides, base, one_overrides,
                      _resolve_run(one.name, base, one_overrides),
                      os.path.join(root, one.name), cache))
  return jobs


def select(jobs: list[Job], pattern: str) -> list[Job]:
  """Jobs whose name matches the regular expression (re.search); all for ''."""
  if not pattern:
    return jobs
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise SweepError(f'--only={pattern!r} is not a regular expression: {e}') from None
  chosen = [j for j in jobs if regex.search(j.name)]
  if not chosen:
    raise SweepError(f'--only={pattern!r} matches no run; the runs are: '
                     f'{" ".join(j.name for j in jobs)}')
  return chosen


def prepare_root(root: str) -> str:
  """The absolute root folder, created and checked writable."""
  root = os.path.abspath(root)
  try:
    workdir_lib.check_writable(root)
  except workdir_lib.WorkdirError as e:
    raise SweepError(f'--root: {e}') from None
  return root


def check_run_folder(job: Job, create: bool = True) -> None:
  """RunFolderError when ROOT/<name> cannot hold the run: a file in its place, a
  folder that cannot be written (create=True creates it to find out), a config.json
  that cannot be read or holds no config. main refuses such a folder too; checked
  here, the launcher reports that run and goes on with the others.
  """
  if os.path.lexists(job.workdir) and not os.path.isdir(job.workdir):
    raise RunFolderError(f'run folder {job.workdir} is a file, not a folder; '
                         f'move it away or use another --root')
  try:
    if create:
      workdir_lib.check_writable(job.workdir)
    saved = workdir_lib.load_config_record(job.workdir)
  except workdir_lib.WorkdirError as e:
    raise RunFolderError(str(e)) from None
  if saved is not None and not isinstance(saved, dict):
    raise RunFolderError(f'{os.path.join(job.workdir, workdir_lib.CONFIG_FILE)} holds a JSON '
                         f'{type(saved).__name__}, not a config; move it away')


def is_finished(job: Job) -> bool:
  """Nothing left to do for the job (run.is_finished): its config's run, trained, with
  the results of this very evaluation. A run folder trained with other
  results-changing values (e.g. a 1-epoch smoke test) or holding results of other
  evaluation settings is not finished: its job is launched, and main refuses it
  naming the difference.
  """
  return run_lib.is_finished(job.config, job.workdir)


def failure_message(job: Job) -> str:
  """Why a run failed: its FAILED marker, else the last 'error:' line of its log."""
  try:
    with open(os.path.join(job.workdir, workdir_lib.FAILED_MARKER), errors='replace') as f:
      return f.read().strip()
  except OSError:  # no marker (or not a file): the log says why
    pass
  try:
    with open(job.log, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return 'no log'
  errors = [line for line in lines if line.startswith('error:')]
  return (errors or lines or ['empty log'])[-1]


def _earlier_sweeps(path: str) -> list[dict]:
  """The sweeps an existing sweep.json names; none when it is missing or damaged."""
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return []
  sweeps = record.get('sweeps', []) if isinstance(record, dict) else []
  return [s for s in sweeps if isinstance(s, dict)] if isinstance(sweeps, list) else []


def write_record(sweep: Sweep, job: Job, python: str = sys.executable) -> None:
  """ROOT/<name>/sweep.json: run, overrides, and every sweep that names the run.

  RunFolderError when it cannot be written (that run fails, the sweep goes on).
  """
  path = os.path.join(job.workdir, SWEEP_RECORD)
  entry = dict(sweep=sweep.name, sweep_file=sweep.path, figure=sweep.config.figure)
  sweeps = [s for s in _earlier_sweeps(path) if s.get('sweep_file') != sweep.path] + [entry]
  try:
    os.makedirs(job.workdir, exist_ok=True)
    workdir_lib.write_json_atomic(path, dict(
        name=job.name, run=job.run.name, size=job.run.size, base_config=job.base_config,
        overrides=job.overrides, flags=job.flags, command=job.command(python),
        sweeps=sweeps, **entry))
  except (OSError, workdir_lib.WorkdirError) as e:  # WorkdirError: the disk is full
    raise RunFolderError(f'cannot write {path}: {e}') from None


def log_header(job: Job, how: str) -> str:
  stamp = time.strftime('%Y-%m-%d %H:%M:%S')
  return f'=== {stamp} launch.sweep ({how}): {" ".join(job.command())}\n'
