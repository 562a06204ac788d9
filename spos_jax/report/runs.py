"""Reading run folders: their checked results, why others have none, their trajectory.

ROOT/<run>/ is one run's workdir: config.json and results/<eval name>/ with
predictions.csv and metrics.json (results.py). Run names are '<size>-<variant>', size
s (small), m (medium) or w (wide), e.g. 's-all', 'm-mask_none+avg_pool_3x3'; other
names take their size from the config. A run names its sweeps (paper figures) in a
SWEEP file or sweep.json.

Each run is checked before use (seeds of metrics.json against config.json, every seed
x arch in predictions.csv); a run that fails is refused (RunError naming the file and
the reason), never mixed in. The sweep report and the reproduction page both read
runs through load_run and explain absent ones with missing_reason.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import json
import math
import os
import re
from typing import Sequence

import numpy as np

from spos_jax import bench as bench_lib
from spos_jax import results
from spos_jax import trajectory as trajectory_lib
from spos_jax import workdir as workdir_lib

DEFAULT_EVAL_NAME = 'running-groups'
SWEEP_FILES = ('SWEEP', 'sweep.json')
SIZES = {'s': 'small', 'm': 'medium', 'w': 'wide'}  # run name prefixes (launch/grid.py)
SIZE_OF_SHAPE = {(32, 2): 's', (64, 4): 'm', (96, 2): 'w'}  # (C, N) of configs/*.py
OTHER_SIZE = 'other'
RUN_NAME = re.compile(r'^([smw])-(.+)$')
# What a run folder holds besides its results: any of these makes a folder a run.
RUN_FOLDER_ENTRIES = (workdir_lib.CONFIG_FILE, workdir_lib.CHECKPOINTS_FOLDER,
                      workdir_lib.TRAINED_MARKER, workdir_lib.FAILED_MARKER)
# Besides results, what shows a run was started (its proxies alone are not a run).
STARTED_ENTRIES = (workdir_lib.CHECKPOINTS_FOLDER, workdir_lib.TRAINED_MARKER,
                   workdir_lib.FAILED_MARKER)


class ReportError(Exception):
  """The report cannot be made: no results, or an unusable root or bench."""


class RunError(ReportError):
  """One run's results are incomplete or inconsistent; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Predictions:
  """predictions.csv as arrays: archs sorted by NB201 index, seeds in config order."""
  indices: np.ndarray  # int64 [m]
  scores: np.ndarray  # float64 [S, m], super-net accuracy (%) or proxy score
  truth: np.ndarray  # float64 [m], bench accuracy (%)
  arch_strings: tuple[str, ...] = ()  # [m]


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  folder: str
  size: str  # 's', 'm', 'w' or OTHER_SIZE
  variant: str
  sweep: str  # the sweep it is reported under; '' when the run names none
  eval_name: str
  config: dict  # flattened
  metrics: dict  # metrics.json
  seeds: tuple[str, ...]
  predictions: Predictions
  sweeps: tuple[str, ...] = ()  # every sweep that names the run

  @property
  def results_folder(self) -> str:
    return results.evaluation_folder(self.folder, self.eval_name)

  @property
  def score(self) -> dict:
    """metrics.json's score record (what scored the archs); super-net when absent."""
    proxy = results.proxy_of_results_name(self.eval_name)
    default = ({'kind': 'proxy', 'name': proxy} if proxy is not None
               else {'kind': 'supernet', 'name': 'supernet'})
    return self.metrics.get('score') or default

  @property
  def is_proxy(self) -> bool:
    return self.score.get('kind') == 'proxy'

  @property
  def label(self) -> str:
    """The run's name in tables and legends; a proxy's says which proxy."""
    return f'{self.name}: proxy {self.score.get("name")}' if self.is_proxy else self.name


@dataclasses.dataclass(frozen=True)
class Problem:
  """A run left out of the report, and why."""
  name: str
  reason: str


@dataclasses.dataclass
class Collection:
  runs: list[Run]  # super-net evaluations, one per run folder
  missing: list[Problem]
  refused: list[Problem]
  proxies: list[Run] = dataclasses.field(default_factory=list)  # results/proxy-<name>


# ---------------------------------------------------------------------------
# Sweeps and names


def sweep_key(name: str) -> str:
  """'Fig. 4', 'fig4' and 'Fig 4' are one sweep."""
  return re.sub(r'[^a-z0-9]', '', name.lower())


def read_sweeps(folder: str) -> list[str]:
  """Every sweep/figure a run belongs to, from SWEEP or sweep.json; [] when none.

  launch.sweep records each sweep that names a run (runs such as s-all are shared
  by several figures) in sweep.json's 'sweeps' list.
  """
  for file in SWEEP_FILES:
    path = os.path.join(folder, file)
    try:
      with open(path) as f:
        text = f.read().strip()
    except OSError:
      continue
    if not file.endswith('.json'):
      if text:
        return [text.splitlines()[0].strip()]
      continue
    try:
      payload = json.loads(text)
    except ValueError:
      continue
    if not isinstance(payload, dict):
      return [str(payload)] if payload else []
    names = [str(entry.get('figure') or entry.get('sweep') or '')
             for entry in payload.get('sweeps', []) if isinstance(entry, dict)]
    names.append(str(next((payload[k] for k in ('figure', 'sweep', 'name') if k in payload), '')))
    return list(dict.fromkeys(n for n in names if n))
  return []


def read_sweep(folder: str, prefer: str | None = None) -> str:
  """The sweep a run is reported under: `prefer` when the run belongs to it."""
  names = read_sweeps(folder)
  for name in names:
    if prefer and sweep_key(name) == sweep_key(prefer):
      return name
  return names[-1] if names else ''


def sweep_names(folders: Sequence[str]) -> list[str]:
  return sorted({n for folder in folders for n in read_sweeps(folder)})


def size_and_variant(name: str, config: dict) -> tuple[str, str]:
  """('s', 'all') from 's-all'; other names take the size from C and N of the config."""
  match = RUN_NAME.match(name)
  if match:
    return match.group(1), match.group(2)
  shape = (config.get('model.channels'), config.get('model.cells_per_stage'))
  return SIZE_OF_SHAPE.get(shape, OTHER_SIZE), name


# ---------------------------------------------------------------------------
# A run folder's evaluations


def is_run_folder(path: str) -> bool:
  names = (results.RESULTS_FOLDER,) + RUN_FOLDER_ENTRIES + SWEEP_FILES
  return any(os.path.exists(os.path.join(path, n)) for n in names)


def is_single_run(path: str) -> bool:
  """A run folder itself (its results/ or config.json), not a sweep root."""
  return any(os.path.exists(os.path.join(path, n))
             for n in (results.RESULTS_FOLDER, workdir_lib.CONFIG_FILE))


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_run_info(folder: str) -> dict:
  """run_info.json (versions, device, commit); {} when absent or unreadable."""
  info = _read_json(os.path.join(folder, workdir_lib.RUN_INFO_FILE))
  return info if isinstance(info, dict) else {}


_LAUNCH_HEADER = re.compile(r'^=== (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) ')
_ABSL_TIME = re.compile(r'^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)')


def log_wall_seconds(text: str) -> float | None:
  """Seconds a run spent in its launches: from each launch's '=== ' header to the
  last absl line after it, summed; None without a header (no launcher log).

  absl lines carry no year: the header's, plus one where the month wraps past
  December. Time between launches (a preempted run waiting) is not counted.
  """
  total, launches, start, end = 0.0, 0, None, None
  for line in text.splitlines() + ['=== end']:
    if line.startswith('=== '):
      if start is not None and end is not None:
        total += max((end - start).total_seconds(), 0.0)
      header = _LAUNCH_HEADER.match(line)
      start = datetime.datetime(*map(int, header.groups())) if header else None
      end = None
      launches += header is not None
      continue
    stamp = _ABSL_TIME.match(line) if start is not None else None
    if stamp:
      month, day, hour, minute, second = map(int, stamp.groups())
      year = start.year + (month < start.month)
      end = datetime.datetime(year, month, day, hour, minute, second)
  return total if launches else None


def read_log_wall_seconds(folder: str) -> float | None:
  try:
    with open(os.path.join(folder, workdir_lib.LOG_FILE), encoding='utf-8',
              errors='replace') as f:
      return log_wall_seconds(f.read())
  except OSError:
    return None


def read_evaluations(folder: str) -> dict[str, dict]:
  """{eval name: metrics.json} of every completed evaluation of a run folder.

  An unreadable metrics.json is kept as {}: load_run names the fault.
  """
  base = os.path.join(folder, results.RESULTS_FOLDER)
  found = {}
  for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
    path = os.path.join(base, name, results.METRICS_FILE)
    if os.path.isfile(path):
      summary = _read_json(path)
      found[name] = summary if isinstance(summary, dict) else {}
  return found


def is_proxy_evaluation(eval_name: str, summary: dict) -> bool:
  """metrics.json's score.kind; for older files, the proxy-<name> folder convention."""
  score = summary.get('score') if isinstance(summary, dict) else None
  kind = score.get('kind') if isinstance(score, dict) else None
  if kind is None:
    return results.proxy_of_results_name(eval_name) is not None
  return kind == 'proxy'


def evaluations(folder: str, proxies: bool = False) -> list[str]:
  """Names of the completed super-net (or proxy) evaluations of a run folder."""
  return [name for name, summary in read_evaluations(folder).items()
          if is_proxy_evaluation(name, summary) == proxies]


def choose_evaluation(folder: str, requested: str | None) -> str | None:
  """The eval name to report; None when the run has no such results (missing)."""
  names = evaluations(folder)
  if requested:
    return requested if requested in names else None
  if len(names) <= 1:
    return names[0] if names else None
  if DEFAULT_EVAL_NAME in names:
    return DEFAULT_EVAL_NAME
  raise RunError(f'{os.path.join(folder, results.RESULTS_FOLDER)}: several evaluations '
                 f'({", ".join(names)}); pass --eval_name to pick one')


def missing_reason(folder: str, requested: str | None) -> str:
  """Why a run has no (requested) results: failed, still training, or not evaluated."""
  try:
    with open(os.path.join(folder, workdir_lib.FAILED_MARKER)) as f:
      return f'{workdir_lib.FAILED_MARKER}: {f.readline().strip() or "no message"}'
  except OSError:
    pass
  names = evaluations(folder)
  if requested and names:
    return (f'no {results.RESULTS_FOLDER}/{requested}/{results.METRICS_FILE} '
            f'(has: {", ".join(names)})')
  anywhere = f'{results.RESULTS_FOLDER}/*/{results.METRICS_FILE}'
  if workdir_lib.is_trained(folder):
    return f'trained, but no {anywhere} (not evaluated)'
  return f'no {anywhere} (training not finished)'


# ---------------------------------------------------------------------------
# Checking and loading one evaluation


def _seed_list(values) -> tuple[str, ...]:
  return tuple(str(v) for v in values)


def _load_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f'{path}: unreadable JSON ({e})') from None


def check_metrics(path: str, summary: dict, seeds: tuple[str, ...]) -> None:
  """RunError naming path unless metrics.json holds every seed of the config."""
  if not isinstance(summary, dict):
    raise RunError(f'{path}: not a metrics object')
  for key in ('groups', 'tau_a', 'precision_at_k', 'top1', 'seeds'):
    if key not in summary:
      raise RunError(f'{path}: no {key!r} entry (not written by results.write?)')
  found = _seed_list(summary['seeds'])
  if len(found) != len(seeds) or set(found) != set(seeds):
    raise RunError(f'{path}: {len(found)} seed(s) ({", ".join(found)}) but '
                   f'{workdir_lib.CONFIG_FILE} lists {len(seeds)} ({", ".join(seeds)})')
  entries = [(f'groups/{g}', e) for g, e in summary['groups'].items()]
  entries += [('tau_a', summary['tau_a']), ('top1', summary['top1'])]
  entries += [(f'precision_at_k/{k}', e) for k, e in summary['precision_at_k'].items()]
  for where, entry in entries:
    lacking = [s for s in seeds if s not in entry.get('per_seed', {})]
    if lacking:
      raise RunError(f'{path}: {where} has no per-seed value for seed(s) '
                     f'{", ".join(lacking)}')
  for group in ('all', *(f'top{n}' for n in summary['tau_a'].get('group_sizes', []))):
    if group not in summary['groups']:
      raise RunError(f'{path}: no group {group!r}')


def _number(path: str, line: int, column: str, text: str, kind=float):
  try:
    return kind(text)
  except ValueError:
    raise RunError(f'{path}, line {line}: {column} {text!r} is not a number') from None


def read_predictions(path: str, seeds: tuple[str, ...]) -> Predictions:
  """predictions.csv, refused (RunError naming path) unless it holds every seed x arch.

  Columns after the five of results.prediction_columns (e.g. an arch's isomorphism
  class) are not needed here and are skipped.
  """
  try:
    with open(path, newline='') as f:
      rows = list(csv.reader(f))
  except OSError as e:
    raise RunError(f'{path}: cannot read ({e})') from None
  headers = [results.prediction_columns(c) for c in results.SCORE_KINDS]
  width = len(headers[0])
  if not rows or tuple(rows[0][:width]) not in headers:
    raise RunError(f'{path}: header must be '
                   + ' or '.join(",".join(h) for h in headers))
  score_column = rows[0][3]
  score, truth, arch = {}, {}, {}
  for line, fields in enumerate(rows[1:], start=2):
    if len(fields) != len(rows[0]):
      raise RunError(f'{path}, line {line}: {len(fields)} fields, expected '
                     f'{len(rows[0])}')
    seed = str(_number(path, line, 'seed', fields[0], int))
    index = _number(path, line, 'nb201_index', fields[1], int)
    if seed not in seeds:
      raise RunError(f'{path}, line {line}: seed {seed} is not one of the config seeds '
                     f'({", ".join(seeds)})')
    if (seed, index) in score:
      raise RunError(f'{path}, line {line}: seed {seed}, NB201 index {index} appears twice')
    score[seed, index] = _number(path, line, score_column, fields[3])
    arch[index] = fields[2]
    bench_acc = _number(path, line, 'bench_acc', fields[4])
    if truth.setdefault(index, bench_acc) != bench_acc:
      raise RunError(f'{path}, line {line}: NB201 index {index} has two bench accuracies')
  indices = np.asarray(sorted(truth), np.int64)
  for seed in seeds:
    lacking = [i for i in indices.tolist() if (seed, i) not in score]
    if len(lacking) == len(indices):
      raise RunError(f'{path}: no rows for seed {seed} (config seeds: {", ".join(seeds)})')
    if lacking:
      raise RunError(f'{path}: seed {seed} lacks {len(lacking)} of {len(indices)} archs '
                     f'(first: NB201 index {lacking[0]})')
  scores = np.asarray([[score[s, i] for i in indices.tolist()] for s in seeds], np.float64)
  return Predictions(indices, scores, np.asarray([truth[i] for i in indices.tolist()]),
                     tuple(arch[i] for i in indices.tolist()))


def load_run(folder: str, eval_name: str, sweep: str | None = None) -> Run:
  """One run's checked results; RunError naming the file that is wrong."""
  results_folder = results.evaluation_folder(folder, eval_name)
  metrics_path = os.path.join(results_folder, results.METRICS_FILE)
  summary = _load_json(metrics_path)
  config_path = os.path.join(folder, workdir_lib.CONFIG_FILE)
  if os.path.exists(config_path):
    config = _load_json(config_path)
  elif isinstance(summary, dict) and isinstance(summary.get('config'), dict):
    config = summary['config']  # the config the evaluation recorded
  else:
    raise RunError(f'{config_path}: missing, and {metrics_path} records no config')
  if 'seeds' not in config:
    raise RunError(f'{config_path}: no "seeds" entry')
  seeds = _seed_list(config['seeds'])
  if (isinstance(summary, dict) and is_proxy_evaluation(eval_name, summary)
      and 'seeds' in summary):
    seeds = _seed_list(summary['seeds'])  # a proxy scores at init: its own seeds
  check_metrics(metrics_path, summary, seeds)
  predictions_path = os.path.join(results_folder, results.PREDICTIONS_FILE)
  predictions = read_predictions(predictions_path, seeds)
  scored = len(predictions.indices)
  for seed in seeds:
    n = summary['groups']['all']['per_seed'][seed]['n']
    if n != scored:
      raise RunError(f'{predictions_path}: {scored} archs, but {metrics_path} counts {n} '
                     f'in group all (seed {seed})')
  name = os.path.basename(os.path.normpath(folder))
  size, variant = size_and_variant(name, config)
  return Run(name=name, folder=folder, size=size, variant=variant,
             sweep=read_sweep(folder, sweep), sweeps=tuple(read_sweeps(folder)),
             eval_name=eval_name, config=config, metrics=summary, seeds=seeds,
             predictions=predictions)


# ---------------------------------------------------------------------------
# Every run of a root


def add_run_folder(found: Collection, folder: str, eval_name: str | None,
                   sweep: str | None) -> None:
  """A run folder's super-net evaluation (loaded, missing or refused) and its proxies."""
  name = os.path.basename(os.path.normpath(folder))
  proxies = evaluations(folder, proxies=True)
  try:
    chosen = choose_evaluation(folder, eval_name)
    if chosen is not None:
      found.runs.append(load_run(folder, chosen, sweep))
    elif not proxies or any(os.path.exists(os.path.join(folder, n)) for n in STARTED_ENTRIES):
      found.missing.append(Problem(name, missing_reason(folder, eval_name)))
  except RunError as e:
    found.refused.append(Problem(name, str(e)))
  for proxy in proxies:
    try:
      found.proxies.append(load_run(folder, proxy, sweep))
    except RunError as e:
      found.refused.append(Problem(f'{name}: {proxy}', str(e)))


def collect(root: str, eval_name: str | None = None, sweep: str | None = None,
            skip: Sequence[str] = ()) -> Collection:
  """Every run folder under root: loaded, missing or refused.

  With sweep, only the runs that name it (compared without case and punctuation:
  'Fig 4' finds 'Fig. 4'); a name that matches no run is a ReportError listing the
  sweeps there are.
  """
  if not os.path.isdir(root):
    raise ReportError(f'--root={root}: not a directory')
  try:
    names = sorted(os.listdir(root))
  except OSError as e:
    raise ReportError(f'--root={root}: cannot list ({e})') from None
  skip = {os.path.realpath(p) for p in skip}
  folders = [os.path.join(root, n) for n in names
             if not n.startswith('.') and os.path.isdir(os.path.join(root, n))
             and os.path.realpath(os.path.join(root, n)) not in skip
             and is_run_folder(os.path.join(root, n))]
  if sweep:
    wanted = [f for f in folders
              if sweep_key(sweep) in {sweep_key(n) for n in read_sweeps(f)}]
    if folders and not wanted:
      there = sweep_names(folders)
      raise ReportError(f'--figure={sweep!r} names no run under {root}; sweeps there: '
                        + (', '.join(repr(n) for n in there) if there
                           else 'none (no run has a SWEEP or sweep.json)'))
    folders = wanted
  found = Collection([], [], [])
  for folder in folders:
    add_run_folder(found, folder, eval_name, sweep)
  return found


def collect_run(folder: str, eval_name: str | None = None) -> Collection:
  """One run folder as a collection: its super-net evaluation and its proxies."""
  if not os.path.isdir(folder):
    raise ReportError(f'--run={folder}: not a directory')
  if not is_single_run(folder):
    raise ReportError(f'--run={folder}: not a run folder (no {results.RESULTS_FOLDER}/ or '
                      f'{workdir_lib.CONFIG_FILE})')
  found = Collection([], [], [])
  add_run_folder(found, folder, eval_name, None)
  return found


# ---------------------------------------------------------------------------
# The bench table


def load_bench(path: str) -> bench_lib.Bench:
  """The --bench table; ReportError in one line when it cannot be read."""
  try:
    return bench_lib.load_bench(path, expect_full=False)
  except bench_lib.BenchError as e:
    raise ReportError(f'--bench: {e}') from None


def recorded_bench_paths(runs: Sequence[Run]) -> list[tuple[str, str]]:
  """(file, sha256) of the tables the runs recorded, the most used table first.

  A run names its table three ways: config.json's bench.path ('builtin' is the
  packaged table, wherever the package is), metrics.json's evaluation identity
  (the resolved path) and its bench record.
  """
  uses = collections.Counter()
  files = collections.defaultdict(list)  # sha256 -> files, first seen first
  for run in runs:
    record = run.metrics.get('bench') or {}
    sha256 = record.get('sha256')
    if not sha256:
      continue
    uses[sha256] += 1
    named = (run.config.get('bench.path'),
             (run.metrics.get('evaluation') or {}).get('bench.path'), record.get('path'))
    for value in named:
      path = bench_lib.resolve_path(value) if isinstance(value, str) else None
      if path and path not in files[sha256]:
        files[sha256].append(path)
  return [(path, sha256) for sha256, _ in uses.most_common() for path in files[sha256]]


def recorded_bench(runs: Sequence[Run]) -> bench_lib.Bench | None:
  """The table the runs ranked against, if a file of it (same sha256) is readable here."""
  for path, sha256 in recorded_bench_paths(runs):
    if not os.path.isfile(path):
      continue
    try:
      bench = bench_lib.load_bench(path, expect_full=False)
    except bench_lib.BenchError:
      continue
    if bench.sha256 == sha256:
      return bench
  return None


# ---------------------------------------------------------------------------
# The ranking trajectory (trajectory.csv, written during training)


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """trajectory.csv as columns, one entry per row (evaluation epoch x seed x group)."""
  path: str
  epoch: np.ndarray  # float64 [r]
  seed: np.ndarray  # str [r]
  group: np.ndarray  # str [r]
  values: dict[str, np.ndarray]  # n, kendall_tau, ... -> float64 [r]; NaN where undefined

  def __len__(self) -> int:
    return len(self.epoch)


TRAJECTORY_VALUES = tuple(c for c in trajectory_lib.COLUMNS
                          if c not in ('epoch', 'step', 'seed', 'group'))


def _value(path: str, line: int, column: str, text: str) -> float:
  """A number of trajectory.csv; empty (undefined, e.g. a constant ranking) is NaN."""
  if not text.strip():
    return math.nan
  return _number(path, line, column, text)


def read_trajectory(folder: str) -> Trajectory | None:
  """The run's trajectory.csv; None when it has none or no rows yet, RunError naming
  the file and line when it cannot be read."""
  path = os.path.join(folder, trajectory_lib.TRAJECTORY_FILE)
  try:
    with open(path, newline='') as f:
      rows = list(csv.reader(f))
  except FileNotFoundError:
    return None
  except OSError as e:
    raise RunError(f'{path}: cannot read ({e})') from None
  if not rows:
    return None
  header = rows[0]
  lacking = [c for c in trajectory_lib.COLUMNS if c not in header]
  if lacking:
    raise RunError(f'{path}: no column {", ".join(lacking)} (header: {",".join(header)})')
  col = {name: i for i, name in enumerate(header)}
  epoch, seed, group = [], [], []
  values = {name: [] for name in TRAJECTORY_VALUES}
  for line, fields in enumerate(rows[1:], start=2):
    if len(fields) != len(header):
      raise RunError(f'{path}, line {line}: {len(fields)} fields, expected {len(header)}')
    epoch.append(_number(path, line, 'epoch', fields[col['epoch']]))
    seed.append(fields[col['seed']])
    group.append(fields[col['group']])
    for name in TRAJECTORY_VALUES:
      values[name].append(_value(path, line, name, fields[col[name]]))
  if not epoch:
    return None
  return Trajectory(path, np.asarray(epoch, np.float64), np.asarray(seed, str),
                    np.asarray(group, str),
                    {k: np.asarray(v, np.float64) for k, v in values.items()})
