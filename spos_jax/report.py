"""A sweep's report: every run's results over seeds, the paper's figures, report.md.

  python -m spos_jax.report --root=RUNS [--out=REPORT] [--eval_name=running-groups]
      [--bench=TABLE.csv] [--figure=NAME]
  python -m spos_jax.report --run=RUN [--out=REPORT]     # one run: summary + report
  python -m spos_jax.report --run=RUN --best=10          # its 10 best archs, printed

ROOT/<run>/ is one run's workdir: config.json and results/<eval name>/ with
predictions.csv and metrics.json (results.py). Run names are '<size>-<variant>', size
s (small), m (medium) or w (wide), e.g. 's-all', 'm-mask_none+avg_pool_3x3'; other
names take their size from the config. A run names its sweeps (paper figures) in a
SWEEP file or sweep.json; the report has a section per sweep, a run shared by several
sweeps appears in each, and --figure=NAME keeps one sweep ('Fig. 4', 'Fig 4' and
'fig4' are the same name; an unknown one lists the names there are). A --root that is
itself a run folder is reported as --run.

results/proxy-<name>/ holds a zero-cost proxy's scores (column proxy_score): proxies
get rows of their own in the CSVs, a table, and a figure of Kendall tau and Spearman
against N beside the super-net runs of the same subset.

Each run is checked before use (seeds of metrics.json against config.json, every seed
x arch in predictions.csv); a run that fails is refused with the file and the reason,
never mixed in. Runs without results are listed as missing.

OUT/summary.csv      one row per run and group (top10..top500, random, all): mean and
                     std over seeds of each results.GROUP_METRICS field
OUT/summary_run.csv  one row per run: tau_a, precision@10/50/100, top-1 rank/regret
OUT/op_usage.csv     Fig. 3's numbers (only with --bench)
OUT/figures/         fig4_accuracy_tau_<sweep> (columns: single op / Zero+X / Pool+X
                     masked; rows: A_N and Kendall tau per size), fig11_scc_pcc_*,
                     fig2_scatter_*, fig3_op_usage, proxies_kt_scc_*; .png and .pdf
OUT/report.md        the tables and figures of the study, missing and refused runs

Every mean and std is recomputed from the per-seed values of metrics.json with
results.mean_std's convention (sample std, ddof=1; empty with a single seed). tau_a is
the paper's: Kendall tau of N against A_N, A_N averaged over seeds first.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import math
import os
import re
import sys
from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import matplotlib.ticker
import numpy as np

from spos_jax import bench as bench_lib
from spos_jax import metrics as metrics_lib
from spos_jax import results
from spos_jax import space

DEFAULT_EVAL_NAME = 'running-groups'
CONFIG_FILE = 'config.json'
SWEEP_FILES = ('SWEEP', 'sweep.json')
SIZES = {'s': 'small', 'm': 'medium', 'w': 'wide'}
SIZE_OF_SHAPE = {(32, 2): 's', (64, 4): 'm', (96, 2): 'w'}  # (C, N) of configs/*.py
OTHER_SIZE = 'other'
RUN_NAME = re.compile(r'^([smw])-(.+)$')
SCATTER_GROUPS = ('top50', 'top250', 'random')
SCATTER_ROWS_PER_FIGURE = 8
# Fig. 3's subsets: the full space and each op masked once.
USAGE_MASKS = ((),) + tuple((op,) for op in range(space.NUM_OPS))
FIGURES_DIR = 'figures'
FIGURE_FORMATS = ('png', 'pdf')
TOP1_FIELDS = ('bench_rank', 'bench_accuracy', 'regret')


class ReportError(Exception):
  """The report cannot be made: no results, or an unusable root or bench."""


class RunError(ReportError):
  """One run's results are incomplete or inconsistent; the message names the file."""


# ---------------------------------------------------------------------------
# Reading runs


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
    return os.path.join(self.folder, 'results', self.eval_name)

  @property
  def score(self) -> dict:
    """metrics.json's score record (what scored the archs); super-net when absent."""
    kind = 'proxy' if is_proxy_evaluation(self.eval_name) else 'supernet'
    default = {'kind': kind, 'name': self.eval_name[len(PROXY_PREFIX):] if kind == 'proxy'
               else 'supernet'}
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


PROXY_PREFIX = 'proxy-'


def is_proxy_evaluation(eval_name: str) -> bool:
  """results/proxy-<name>/ holds a zero-cost proxy's scores, not a super-net's."""
  return eval_name.startswith(PROXY_PREFIX)


def sweep_key(name: str) -> str:
  """'Fig. 4', 'fig4' and 'Fig 4' are one sweep."""
  return re.sub(r'[^a-z0-9]', '', name.lower())


def _load_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f'{path}: unreadable JSON ({e})') from None


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


def size_and_variant(name: str, config: dict) -> tuple[str, str]:
  """('s', 'all') from 's-all'; other names take the size from C and N of the config."""
  match = RUN_NAME.match(name)
  if match:
    return match.group(1), match.group(2)
  shape = (config.get('model.channels'), config.get('model.cells_per_stage'))
  return SIZE_OF_SHAPE.get(shape, OTHER_SIZE), name


def is_run_folder(path: str) -> bool:
  names = ('results', CONFIG_FILE, 'checkpoints', 'TRAINED', 'FAILED') + SWEEP_FILES
  return any(os.path.exists(os.path.join(path, n)) for n in names)


def evaluations(folder: str, proxies: bool = False) -> list[str]:
  """Names of the completed super-net (or proxy) evaluations of a run folder."""
  base = os.path.join(folder, 'results')
  if not os.path.isdir(base):
    return []
  return sorted(n for n in os.listdir(base)
                if os.path.isfile(os.path.join(base, n, results.METRICS_FILE))
                and evaluation_is_proxy(os.path.join(base, n)) == proxies)


def evaluation_is_proxy(results_folder: str) -> bool:
  """metrics.json's score.kind; for older files, the proxy-<name> folder convention."""
  try:
    with open(os.path.join(results_folder, results.METRICS_FILE)) as f:
      kind = (json.load(f).get('score') or {}).get('kind')
  except (OSError, ValueError, AttributeError):
    kind = None
  if kind is None:
    return is_proxy_evaluation(os.path.basename(results_folder))
  return kind == 'proxy'


def choose_evaluation(folder: str, requested: str | None) -> str | None:
  """The eval name to report; None when the run has no such results (missing)."""
  names = evaluations(folder)
  if requested:
    return requested if requested in names else None
  if len(names) <= 1:
    return names[0] if names else None
  if DEFAULT_EVAL_NAME in names:
    return DEFAULT_EVAL_NAME
  raise RunError(f'{os.path.join(folder, "results")}: several evaluations '
                 f'({", ".join(names)}); pass --eval_name to pick one')


def missing_reason(folder: str, requested: str | None) -> str:
  """Why a run has no results: failed, still training, or not evaluated."""
  failed = os.path.join(folder, 'FAILED')
  if os.path.exists(failed):
    with open(failed) as f:
      first = (f.readline().strip() or 'no message')
    return f'FAILED: {first}'
  names = evaluations(folder)
  if requested and names:
    return f'no results/{requested}/{results.METRICS_FILE} (has: {", ".join(names)})'
  if os.path.exists(os.path.join(folder, 'TRAINED')):
    return f'trained, but no results/*/{results.METRICS_FILE} (not evaluated)'
  return f'no results/*/{results.METRICS_FILE} (training not finished)'


def _seed_list(values) -> tuple[str, ...]:
  return tuple(str(v) for v in values)


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
                   f'{CONFIG_FILE} lists {len(seeds)} ({", ".join(seeds)})')
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
  """predictions.csv, refused (RunError naming path) unless it holds every seed x arch."""
  try:
    with open(path, newline='') as f:
      rows = list(csv.reader(f))
  except OSError as e:
    raise RunError(f'{path}: cannot read ({e})') from None
  headers = [results.prediction_columns(c) for c in results.SCORE_KINDS]
  if not rows or tuple(rows[0]) not in headers:
    raise RunError(f'{path}: header must be '
                   + ' or '.join(",".join(h) for h in headers))
  score_column = rows[0][3]
  score, truth, arch = {}, {}, {}
  for line, fields in enumerate(rows[1:], start=2):
    if len(fields) != len(results.PREDICTION_COLUMNS):
      raise RunError(f'{path}, line {line}: {len(fields)} fields, expected '
                     f'{len(results.PREDICTION_COLUMNS)}')
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
  results_folder = os.path.join(folder, 'results', eval_name)
  metrics_path = os.path.join(results_folder, results.METRICS_FILE)
  summary = _load_json(metrics_path)
  config_path = os.path.join(folder, CONFIG_FILE)
  if os.path.exists(config_path):
    config = _load_json(config_path)
  elif isinstance(summary, dict) and isinstance(summary.get('config'), dict):
    config = summary['config']  # the config the evaluation recorded
  else:
    raise RunError(f'{config_path}: missing, and {metrics_path} records no config')
  if 'seeds' not in config:
    raise RunError(f'{config_path}: no "seeds" entry')
  seeds = _seed_list(config['seeds'])
  if evaluation_is_proxy(results_folder) and isinstance(summary, dict) and 'seeds' in summary:
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


def add_run_folder(found: Collection, folder: str, eval_name: str | None,
                   sweep: str | None) -> None:
  """A run folder's super-net evaluation (loaded, missing or refused) and its proxies."""
  name = os.path.basename(os.path.normpath(folder))
  proxies = evaluations(folder, proxies=True)
  try:
    chosen = choose_evaluation(folder, eval_name)
    if chosen is not None:
      found.runs.append(load_run(folder, chosen, sweep))
    elif not proxies or any(os.path.exists(os.path.join(folder, n))
                            for n in ('checkpoints', 'TRAINED', 'FAILED')):
      found.missing.append(Problem(name, missing_reason(folder, eval_name)))
  except RunError as e:
    found.refused.append(Problem(name, str(e)))
  for proxy in proxies:
    try:
      found.proxies.append(load_run(folder, proxy, sweep))
    except RunError as e:
      found.refused.append(Problem(f'{name}: {proxy}', str(e)))


def sweep_names(folders: Sequence[str]) -> list[str]:
  return sorted({n for folder in folders for n in read_sweeps(folder)})


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


def is_single_run(path: str) -> bool:
  """A run folder itself (its results/ or config.json), not a sweep root."""
  return any(os.path.exists(os.path.join(path, n)) for n in ('results', CONFIG_FILE))


def collect_run(folder: str, eval_name: str | None = None) -> Collection:
  """One run folder as a collection: its super-net evaluation and its proxies."""
  if not os.path.isdir(folder):
    raise ReportError(f'--run={folder}: not a directory')
  if not is_single_run(folder):
    raise ReportError(f'--run={folder}: not a run folder (no results/ or {CONFIG_FILE})')
  found = Collection([], [], [])
  add_run_folder(found, folder, eval_name, None)
  return found


# ---------------------------------------------------------------------------
# Numbers over seeds


def mean_std(values) -> tuple[float, float | None]:
  """Mean and sample std over seeds (ddof=1; None with one seed), as results.mean_std."""
  stats = results.mean_std(values)
  return stats['mean'], stats['std']


def per_seed(run: Run, entry: dict, field: str | None = None) -> np.ndarray:
  """An entry's per-seed values (of one field) in the run's seed order."""
  values = [entry['per_seed'][s] for s in run.seeds]
  return np.asarray([v[field] if field else v for v in values], np.float64)


def group_order(names) -> list[str]:
  """top10, top25, ... by N, then random, all, then any others."""
  def key(name):
    match = re.fullmatch(r'top(\d+)', name)
    if match:
      return (0, int(match.group(1)), name)
    return (1, {'random': 0, 'all': 1}.get(name, 2), name)
  return sorted(names, key=key)


def top_sizes(run: Run) -> list[int]:
  """The N of the run's top-N groups, ascending."""
  return sorted(int(g[3:]) for g in run.metrics['groups'] if re.fullmatch(r'top\d+', g))


def group_stat(run: Run, group: str, field: str) -> tuple[float, float | None]:
  return mean_std(per_seed(run, run.metrics['groups'][group], field))


def tau_a(run: Run) -> float:
  """Paper's tau_a: Kendall tau of N against A_N averaged over seeds (top-N only)."""
  sizes = list(run.metrics['tau_a'].get('group_sizes') or top_sizes(run))
  a_n = [group_stat(run, f'top{n}', 'mean_supernet_acc')[0] for n in sizes]
  if len(sizes) < 2 or any(math.isnan(a) for a in a_n):
    return float('nan')  # metrics.tau_a refuses NaN
  return metrics_lib.tau_a(sizes, a_n)


def _identity(run: Run) -> dict:
  return {'run': run.name, 'size': run.size, 'variant': run.variant,
          'sweep': ';'.join(run.sweeps), 'eval_name': run.eval_name,
          'score_kind': run.score.get('kind'), 'score_name': run.score.get('name')}


def group_rows(run: Run) -> list[dict]:
  """summary.csv rows of one run: each group's metrics, mean and std over seeds."""
  rows = []
  for group in group_order(run.metrics['groups']):
    row = dict(_identity(run), group=group, n_seeds=len(run.seeds))
    for field in results.GROUP_METRICS:
      row[f'{field}_mean'], row[f'{field}_std'] = group_stat(run, group, field)
    rows.append(row)
  return rows


def run_row(run: Run) -> dict:
  """summary_run.csv's row of one run: tau_a, precision@K and top-1, over seeds."""
  config = run.config
  row = dict(_identity(run), n_seeds=len(run.seeds), seeds=' '.join(run.seeds),
             archs_scored=len(run.predictions.indices),
             masked_ops=config.get('space.masked_ops', ''),
             channels=config.get('model.channels'),
             cells_per_stage=config.get('model.cells_per_stage'),
             bench_metric=run.metrics.get('bench', {}).get('metric'),
             bench_sha256=run.metrics.get('bench', {}).get('sha256'), tau_a=tau_a(run))
  row['tau_a_per_seed_mean'], row['tau_a_per_seed_std'] = mean_std(
      per_seed(run, run.metrics['tau_a']))
  for k in results.PRECISION_KS:
    entry = run.metrics['precision_at_k'].get(str(k))
    stats = mean_std(per_seed(run, entry)) if entry else (None, None)
    row[f'precision_at_{k}_mean'], row[f'precision_at_{k}_std'] = stats
  for field in TOP1_FIELDS:
    row[f'top1_{field}_mean'], row[f'top1_{field}_std'] = mean_std(
        per_seed(run, run.metrics['top1'], field))
  if float(row['top1_bench_rank_mean']).is_integer():  # one seed, or all seeds agree
    row['top1_bench_rank_mean'] = int(row['top1_bench_rank_mean'])
  best = run.metrics['top1'].get('of_mean_score') or {}
  row['top1_of_mean_score_nb201_index'] = best.get('nb201_index')
  row['top1_of_mean_score_arch'] = best.get('arch')
  return row


def _cell(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)  # shortest exact repr: the CSV keeps full precision
  return str(value)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  """Rows with the union of their keys as columns (first seen first)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_cell(row.get(c)) for c in columns])


# ---------------------------------------------------------------------------
# Groups of archs in predictions.csv


class _Indices:
  """Just enough of a bench for bench.random_sample: NB201 indices and a length."""

  def __init__(self, indices: np.ndarray):
    self.indices = indices

  def __len__(self) -> int:
    return len(self.indices)


def top_positions(run: Run, n: int) -> np.ndarray:
  """Positions of the bench's top n among the scored archs (bench.ranking's order)."""
  pred = run.predictions
  return np.lexsort((pred.indices, -pred.truth))[:n]


def random_indices(run: Run, bench: bench_lib.Bench | None) -> np.ndarray | None:
  """NB201 indices of the run's random group, redrawn as evaluate did; None if unknown.

  The draw needs the run's whole subset: the bench table (same sha256), or the
  predictions themselves when the run scored all of its subset.
  """
  config = run.config
  subset = None
  if bench is not None and bench.sha256 == run.metrics.get('bench', {}).get('sha256'):
    allowed = space.allowed_ops_from_mask(config.get('space.masked_ops', ''))
    subset = _Indices(bench_lib.restrict(bench, allowed).indices)
  elif len(run.predictions.indices) == run.metrics.get('bench', {}).get('archs_in_subset'):
    subset = _Indices(run.predictions.indices)
  if subset is None:
    return None
  rows = bench_lib.random_sample(subset, int(config.get('eval.random_size', 1000)),
                                 int(config.get('eval.random_seed', 0)))
  return np.sort(subset.indices[rows])


def group_positions(run: Run, group: str,
                    bench: bench_lib.Bench | None) -> tuple[np.ndarray, str] | None:
  """(positions into predictions, label) of a group; None when it cannot be found.

  The random group falls back to all scored archs when it cannot be redrawn, or when
  it is all of them.
  """
  entry = run.metrics['groups'].get(group)
  if entry is None:
    return None
  n = int(per_seed(run, entry, 'n')[0])
  scored = len(run.predictions.indices)
  if group.startswith('top'):
    return top_positions(run, n), group
  if group != 'random':
    return None
  wanted = random_indices(run, bench)
  if wanted is not None and len(wanted) == n:
    if np.isin(wanted, run.predictions.indices).all():
      return np.searchsorted(run.predictions.indices, wanted), 'random'
  if n == scored:
    return np.arange(scored), 'random'
  return np.arange(scored), 'all scored'


# ---------------------------------------------------------------------------
# Figures


def _new_figure(width: float, height: float) -> Figure:
  figure = Figure(figsize=(width, height), layout='constrained')
  FigureCanvasAgg(figure)  # Agg, without pyplot's global state
  return figure


def save_figure(figure: Figure, out: str, stem: str) -> list[str]:
  """Write stem.png and stem.pdf under out/figures; their paths relative to out."""
  os.makedirs(os.path.join(out, FIGURES_DIR), exist_ok=True)
  paths = []
  for ext in FIGURE_FORMATS:
    rel = os.path.join(FIGURES_DIR, f'{stem}.{ext}')
    figure.savefig(os.path.join(out, rel), dpi=120, bbox_inches='tight')
    paths.append(rel)
  return paths


def run_colors(count: int) -> list:
  palette = matplotlib.colormaps['tab10' if count <= 10 else 'tab20'].colors
  return [palette[i % len(palette)] for i in range(count)]


def _format_rank(mean, std) -> str:
  """A bench rank: an integer when it is one (one seed, or all seeds agree)."""
  if float(mean).is_integer() and not std:
    return str(int(mean))
  return _format(mean, std, 1)


def seeds_phrase(runs: Sequence[Run]) -> str:
  """How the runs' numbers aggregate seeds, for titles: no '± std' for one seed."""
  counts = sorted({len(r.seeds) for r in runs})
  if counts == [1]:
    return 'one seed (no std)'
  if len(counts) == 1:
    return f'mean ± std over {counts[0]} seeds'
  return f'mean ± std over {counts[0]}-{counts[-1]} seeds (runs of one seed: no std)'


def _format(mean, std=None, digits: int = 3) -> str:
  if mean is None:
    return '–'
  if isinstance(mean, float) and math.isnan(mean):
    return 'nan'
  text = f'{mean:.{digits}f}'
  return text if std is None else f'{text} ± {std:.{digits}f}'


def _bench_label(runs: Sequence[Run]) -> str:
  names = {r.metrics.get('bench', {}).get('metric') for r in runs} - {None}
  return f'bench {"/".join(sorted(names)) or "accuracy"} (%)'


def scatter_groups(runs: Sequence[Run], bench: bench_lib.Bench | None) -> list[str]:
  """Fig. 2's groups that at least one of the runs evaluated."""
  return [g for g in SCATTER_GROUPS
          if any(group_positions(r, g, bench) is not None for r in runs)]


def scatter_figure(runs: Sequence[Run], bench: bench_lib.Bench | None,
                   title: str) -> Figure | None:
  """Fig. 2: super-net (x, mean over seeds) vs bench accuracy (y); rows = runs.

  Only groups with data get a column, and a run without one of them leaves its panel
  out; None when no run evaluated any of the groups.
  """
  groups = scatter_groups(runs, bench)
  if not groups:
    return None
  figure = _new_figure(3.6 * len(groups), 2.9 * len(runs))
  axes = figure.subplots(len(runs), len(groups), squeeze=False)
  for row, run in enumerate(runs):
    x = run.predictions.scores.mean(axis=0)
    for col, group in enumerate(groups):
      ax = axes[row, col]
      found = group_positions(run, group, bench)
      if found is None:
        ax.set_axis_off()
        continue
      pos, label = found
      stats_group = group if label != 'all scored' else 'all'
      kt = group_stat(run, stats_group, 'kendall_tau')
      ax.scatter(x[pos], run.predictions.truth[pos], s=9, alpha=0.6, color=f'C{col}',
                 edgecolors='none')
      ax.set_title(f'{run.label}: {label} (n={len(pos)})\nKT {_format(*kt)}', fontsize=9)
      ax.grid(alpha=0.3)
      ax.tick_params(labelsize=8)
      if col == 0:
        ax.set_ylabel(_bench_label([run]), fontsize=9)
      if row == len(runs) - 1:
        ax.set_xlabel('super-net accuracy (%, mean over seeds)', fontsize=9)
  figure.suptitle(f'{title}\nKT of each seed, {seeds_phrase(runs)}', fontsize=10)
  return figure


def _log_n_axis(ax, sizes: Sequence[int]) -> None:
  ax.set_xscale('log')
  ax.set_xticks(list(sizes))
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  ax.set_xlabel('N (top-N bench archs)')
  ax.grid(alpha=0.3)


def plot_against_n(ax, run: Run, field: str, color, label: str, **style):
  """One run's field over its top-N groups (std band with several seeds), random dotted."""
  sizes = top_sizes(run)
  stats = [group_stat(run, f'top{n}', field) for n in sizes]
  mean = np.asarray([m for m, _ in stats], np.float64)
  line, = ax.plot(sizes, mean, marker='o', ms=3, lw=1.5, color=color, label=label, **style)
  if stats and all(s is not None for _, s in stats):
    std = np.asarray([s for _, s in stats], np.float64)
    ax.fill_between(sizes, mean - std, mean + std, color=color, alpha=0.15, lw=0)
  if 'random' in run.metrics['groups']:
    ax.axhline(group_stat(run, 'random', field)[0], color=color, ls=':', lw=1)
  return line


def lines_figure(runs: Sequence[Run], panels: Sequence[tuple[str, str]], title: str,
                 with_tau_a: bool) -> Figure:
  """Figs. 5, 6 and 11: a metric against N, one line per run, std band over seeds.

  The run's random group is drawn as a dotted level in the run's colour.
  """
  figure = _new_figure(5.2 * len(panels) + 3.0, 4.2)
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  colors = run_colors(len(runs))
  all_sizes = sorted({n for run in runs for n in top_sizes(run)})
  handles = []
  for run, color in zip(runs, colors):
    label = run.variant + (f'  (τa={tau_a(run):+.2f})' if with_tau_a else '')
    for ax, (field, _) in zip(axes, panels):
      line = plot_against_n(ax, run, field, color, label)
    handles.append(line)
  for ax, (_, ylabel) in zip(axes, panels):
    _log_n_axis(ax, all_sizes)
    ax.set_ylabel(ylabel)
  handles.append(Line2D([], [], color='gray', ls=':', label='random sample (dotted)'))
  figure.legend(handles=handles, loc='outside right center', fontsize=8,
                title='run' + ('  (tau_a)' if with_tau_a else ''), title_fontsize=8)
  figure.suptitle(f'{title}: {seeds_phrase(runs)}', fontsize=10)
  return figure


# Fig. 4's columns: subsets grouped by the ops masked besides one more ("Zero+X").
# The first op of a subset in this order is part of its column's base.
FAMILY_ORDER = ('none', 'avg_pool_3x3', 'nor_conv_1x1', 'skip_connect', 'nor_conv_3x3')
OP_SHORT = {'none': 'Zero', 'skip_connect': 'Skip', 'nor_conv_1x1': '1x1',
            'nor_conv_3x3': '3x3', 'avg_pool_3x3': 'Pool'}
SINGLE_FAMILY = 'single op masked'


def mask_family(masked_ops: str) -> tuple[str, ...]:
  """The base of a subset's column: () for all ops or one op masked; ('none',) for
  Zero+X; ('none', 'avg_pool_3x3') for Zero+Pool+X."""
  names = sorted((space.OPS[i] for i in space.parse_op_list(masked_ops or '')),
                 key=FAMILY_ORDER.index)
  return tuple(names[:-1])


def family_title(family: tuple[str, ...]) -> str:
  if not family:
    return SINGLE_FAMILY + ' (or none)'
  return '+'.join(OP_SHORT[o] for o in family) + '+X masked'


def subset_grid_figure(runs: Sequence[Run], title: str) -> Figure:
  """Fig. 4 as in the paper: a column per subset family (single op, Zero+X, Pool+X,
  ...), per size a row of A_N and a row of Kendall tau, one colour per variant."""
  families = sorted({mask_family(r.config.get('space.masked_ops', '')) for r in runs},
                    key=lambda f: (len(f), [FAMILY_ORDER.index(o) for o in f]))
  sizes = sorted({r.size for r in runs}, key=lambda z: list(SIZES).index(z)
                 if z in SIZES else len(SIZES))
  fields = (('mean_supernet_acc', 'A_N (%)'), ('kendall_tau', 'Kendall tau'))
  figure = _new_figure(4.4 * len(families), 2.7 * len(fields) * len(sizes))
  axes = figure.subplots(len(fields) * len(sizes), len(families), squeeze=False)
  variants = sorted({r.variant for r in runs})
  colors = dict(zip(variants, run_colors(len(variants))))
  all_sizes = sorted({n for run in runs for n in top_sizes(run)})
  for i, size in enumerate(sizes):
    for col, family in enumerate(families):
      mine = [r for r in runs if r.size == size
              and mask_family(r.config.get('space.masked_ops', '')) == family]
      for j, (field, ylabel) in enumerate(fields):
        ax = axes[i * len(fields) + j, col]
        for run in sorted(mine, key=lambda r: r.name):
          plot_against_n(ax, run, field, colors[run.variant],
                         f'{run.variant}  (τa={tau_a(run):+.2f})')
        _log_n_axis(ax, all_sizes)
        ax.tick_params(labelsize=7)
        if col == 0:
          ax.set_ylabel(f'{SIZES.get(size, size)}: {ylabel}', fontsize=8)
        if i == 0 and j == 0:
          ax.set_title(family_title(family), fontsize=9)
        if j == 0 and mine:
          ax.legend(fontsize=6, loc='best', title='subset (τa)', title_fontsize=6)
        if not mine:
          ax.set_axis_off()
  figure.suptitle(f'{title}: A_N and Kendall tau against N, {seeds_phrase(runs)}; '
                  'dotted: the random sample', fontsize=10)
  return figure


def proxy_figure(runs: Sequence[Run], proxies: Sequence[Run], title: str) -> Figure:
  """Super-net runs (solid) and zero-cost proxies (dashed) on one axis: Kendall tau and
  Spearman against N, the 'all' group as a marker at its size."""
  panels = (('kendall_tau', 'Kendall tau'), ('spearman', 'Spearman (SCC)'))
  figure = _new_figure(5.2 * len(panels) + 3.5, 4.2)
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  members = list(runs) + list(proxies)
  colors = run_colors(len(members))
  ticks = sorted({n for r in members for n in top_sizes(r)}
                 | {int(group_stat(r, 'all', 'n')[0]) for r in members
                    if 'all' in r.metrics['groups']})
  for run, color in zip(members, colors):
    style = {'ls': '--'} if run.is_proxy else {}
    for ax, (field, _) in zip(axes, panels):
      plot_against_n(ax, run, field, color, run.label, **style)
      if 'all' in run.metrics['groups']:
        ax.plot([group_stat(run, 'all', 'n')[0]], [group_stat(run, 'all', field)[0]],
                marker='*', ms=9, color=color, ls='none')
  for ax, (_, ylabel) in zip(axes, panels):
    _log_n_axis(ax, ticks)
    ax.set_ylabel(ylabel)
  handles = [Line2D([], [], color=c, ls='--' if r.is_proxy else '-', marker='o', ms=3,
                    label=r.label) for r, c in zip(members, colors)]
  handles += [Line2D([], [], color='gray', marker='*', ms=9, ls='none',
                     label="group 'all' (at its size)"),
              Line2D([], [], color='gray', ls=':', label='random sample (dotted)')]
  figure.legend(handles=handles, loc='outside right center', fontsize=8,
                title='super-net (solid), proxy (dashed)', title_fontsize=8)
  figure.suptitle(f'{title}: {seeds_phrase(members)}', fontsize=10)
  return figure


OP_COLORS = dict(zip(space.OPS, ('#7f7f7f', '#1f77b4', '#2ca02c', '#d62728', '#9467bd')))


def usage_figure(rows: Sequence[dict], metric: str) -> Figure:
  """Fig. 3: op usage (top row) and share (bottom row) of the top-N archs per subset."""
  masks = list(dict.fromkeys(r['mask'] for r in rows))
  figure = _new_figure(3.4 * len(masks) + 1.5, 5.6)
  axes = figure.subplots(2, len(masks), squeeze=False, sharey='row')
  width = 0.8 / space.NUM_OPS
  for col, mask in enumerate(masks):
    mine = [r for r in rows if r['mask'] == mask]
    tops = list(dict.fromkeys(r['top_n'] for r in mine))
    x = np.arange(len(tops))
    for row, field in enumerate(('usage', 'share')):
      ax = axes[row, col]
      for i, op in enumerate(space.OPS):
        values = [next(r[field] for r in mine if r['top_n'] == t and r['op'] == op)
                  for t in tops]
        ax.bar(x + (i - (space.NUM_OPS - 1) / 2) * width, values, width,
               color=OP_COLORS[op], label=op)
      ax.set_xticks(x, tops, fontsize=7)
      ax.grid(axis='y', alpha=0.3)
      if row == 0:
        ax.set_title('all ops' if mask == 'all_ops' else f'masked: {mask}', fontsize=9)
      else:
        ax.set_xlabel('top-N bench archs', fontsize=8)
  axes[0, 0].set_ylabel('usage: share of archs\nholding the op')
  axes[1, 0].set_ylabel('share of the 6 edges\nholding the op')
  handles, labels = axes[0, 0].get_legend_handles_labels()
  figure.legend(handles, labels, loc='outside right center', fontsize=8, title='op')
  figure.suptitle(f'Operation usage of the top-N archs, ranked by {metric}', fontsize=10)
  return figure


# ---------------------------------------------------------------------------
# The report


def _stem(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.+-]+', '_', text).strip('_') or 'runs'


def size_order(size: str) -> int:
  return list(SIZES).index(size) if size in SIZES else len(SIZES)


def size_title(runs: Sequence[Run]) -> str:
  """'small (C=32, N=2)'."""
  size = runs[0].size
  shapes = sorted({(r.config.get('model.channels'), r.config.get('model.cells_per_stage'))
                   for r in runs}, key=str)
  shape = ', '.join(f'C={c}, N={n}' for c, n in shapes)
  return f'{SIZES.get(size, "other size")} ({shape})'


def sections_of(runs: Sequence[Run], sweep: str | None) -> list[tuple[str, list[Run]]]:
  """(sweep, its runs) per sweep, sweeps in name order and '' (no sweep) last.

  A run shared by several sweeps (s-all is in Figs. 2, 4, 6, ...) is reported in each;
  with sweep (--figure) only in that one.
  """
  grouped = collections.defaultdict(list)
  for run in sorted(runs, key=lambda r: r.name):
    names = [run.sweep] if sweep else (run.sweeps or ('',))
    for name in names:
      grouped[name].append(dataclasses.replace(run, sweep=name))
  return [(name, grouped[name]) for name in sorted(grouped, key=lambda n: (n == '', n))]


def sizes_of(runs: Sequence[Run]) -> list[list[Run]]:
  """Runs grouped by size (s, m, w, other), each in name order."""
  grouped = collections.defaultdict(list)
  for run in sorted(runs, key=lambda r: r.name):
    grouped[run.size].append(run)
  return [grouped[k] for k in sorted(grouped, key=size_order)]


def _figure_link(paths: Sequence[str], alt: str) -> str:
  png, pdf = paths
  return f'![{alt}]({png})\n\n[PDF]({pdf})'


def kt_table(runs: Sequence[Run]) -> list[str]:
  """Markdown table: per run seeds, tau_a, KT per group, precision@K, top-1."""
  sizes = sorted({n for r in runs for n in top_sizes(r)})
  groups = [f'top{n}' for n in sizes] + ['random', 'all']
  header = (['run', 'seeds', 'τa'] + [f'KT {g}' for g in groups]
            + [f'P@{k}' for k in results.PRECISION_KS] + ['top-1 rank', 'top-1 regret'])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for run in runs:
    row = run_row(run)
    cells = [f'`{run.label}`', str(len(run.seeds)), _format(row['tau_a'], digits=2)]
    for g in groups:
      cells.append(_format(*group_stat(run, g, 'kendall_tau'))
                   if g in run.metrics['groups'] else '–')
    for k in results.PRECISION_KS:
      cells.append(_format(row[f'precision_at_{k}_mean'], row[f'precision_at_{k}_std'], 2))
    cells.append(_format_rank(row['top1_bench_rank_mean'], row['top1_bench_rank_std']))
    cells.append(_format(row['top1_regret_mean'], row['top1_regret_std'], 2))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def load_bench(path: str) -> bench_lib.Bench:
  try:
    return bench_lib.load_bench(path, expect_full=False)
  except bench_lib.BenchError as e:
    raise ReportError(f'--bench: {e}') from None


def usage_metric(runs: Sequence[Run], bench: bench_lib.Bench) -> str:
  """The bench metric most runs ranked by, if the table has it."""
  counts = collections.Counter(r.metrics.get('bench', {}).get('metric') for r in runs)
  for metric, _ in counts.most_common():
    if metric in bench.metrics:
      return metric
  return bench_lib.DEFAULT_METRIC if bench_lib.DEFAULT_METRIC in bench.metrics else (
      bench.metric_names[0])


def usage_section(runs: Sequence[Run], bench: bench_lib.Bench | None, out: str) -> list[str]:
  """Fig. 3 from the bench table, with op_usage.csv; a note when there is no table."""
  lines = ['## Operation usage (Fig. 3)', '']
  if bench is None:
    return lines + ['Skipped: pass `--bench=TABLE.csv` to draw the op usage of the '
                    'bench\'s top-N archs.', '']
  metric = usage_metric(runs, bench)
  top_ns = sorted({n for r in runs for n in top_sizes(r)}) or bench_lib.DEFAULT_TOP_NS
  rows = []
  for masked in USAGE_MASKS:
    rows += bench_lib.usage_rows(bench, masked, metric, top_ns)
  bench_lib.write_usage_csv(os.path.join(out, 'op_usage.csv'), rows)
  paths = save_figure(usage_figure(rows, metric), out, 'fig3_op_usage')
  return lines + [
      f'Bench `{bench.path}` ({len(bench)} archs, sha256 `{bench.sha256[:12]}`), ranked '
      f'by `{metric}`. usage(op): share of the top-N archs holding op at least once; '
      'share(op): occurrences / (6 N). Numbers in `op_usage.csv`.', '',
      _figure_link(paths, 'Fig. 3-style op usage'), '']


def problems_section(title: str, problems: Sequence[Problem], empty: str) -> list[str]:
  lines = [f'## {title}', '']
  if not problems:
    return lines + [empty, '']
  return lines + [f'- `{p.name}`: {p.reason}' for p in problems] + ['']


def sweep_section(sweep: str, runs: Sequence[Run], bench: bench_lib.Bench | None,
                  out: str) -> list[str]:
  """One sweep: a table per size, Fig. 4's grid, then per size Figs. 11 and 2."""
  title = sweep or 'Runs without a sweep'
  stem = _stem(sweep) if sweep else ''
  lines = [f'## {title}', '']
  for part in sizes_of(runs):
    lines += [f'### {size_title(part)}', ''] + kt_table(part) + ['']
  grid = subset_grid_figure(runs, title)
  name = 'fig4_accuracy_tau' + (f'_{stem}' if stem else '')
  lines += [_figure_link(save_figure(grid, out, name),
                         f'A_N and Kendall tau against N, {title}'), '']
  for part in sizes_of(runs):
    part_title = f'{title}, {size_title(part)}'
    part_stem = f'{stem}_{part[0].size}' if stem else part[0].size
    correlations = lines_figure(part, (('spearman', 'Spearman (SCC)'),
                                       ('pearson', 'Pearson (PCC)')), part_title,
                                with_tau_a=False)
    lines += [_figure_link(save_figure(correlations, out, f'fig11_scc_pcc_{part_stem}'),
                           f'SCC and PCC against N, {part_title}'), '']
    chunks = [part[i:i + SCATTER_ROWS_PER_FIGURE]
              for i in range(0, len(part), SCATTER_ROWS_PER_FIGURE)]
    for number, chunk in enumerate(chunks, start=1):
      suffix = f'_{number}' if len(chunks) > 1 else ''
      figure = scatter_figure(chunk, bench, f'{part_title}{suffix.replace("_", ", part ")}')
      if figure is not None:
        lines += [_figure_link(save_figure(figure, out, f'fig2_scatter_{part_stem}{suffix}'),
                               f'super-net vs bench accuracy, {part_title}'), '']
  if any(group_positions(r, 'random', bench)[1] == 'all scored' for r in runs
         if 'random' in r.metrics['groups']):
    lines += ['Where a panel says "all scored", the random group could not be redrawn: '
              'pass the bench table the runs used (`--bench`).', '']
  return lines


def proxy_section(runs: Sequence[Run], proxies: Sequence[Run], out: str) -> list[str]:
  """Zero-cost proxies against the super-net runs of the same subset, one figure each."""
  lines = ['## Zero-cost proxies and super-networks', '',
           'Proxies score each arch at initialisation (no training). Their τa is the Kendall '
           'tau of N against the mean proxy score of the top-N.', ''] + kt_table(proxies) + ['']
  subsets = sorted({p.config.get('space.masked_ops', '') for p in proxies})
  for masked in subsets:
    mine = [p for p in proxies if p.config.get('space.masked_ops', '') == masked]
    same = [r for r in runs if r.config.get('space.masked_ops', '') == masked]
    name = f'masked {masked}' if masked else 'all ops'
    figure = proxy_figure(same, mine, f'Super-networks and proxies, {name}')
    lines += [_figure_link(save_figure(figure, out, f'proxies_kt_scc_{_stem(name)}'),
                           f'Kendall tau and Spearman against N, {name}'), '']
  return lines


READING = (
    'Reading the tables: KT is the Kendall tau (paper formula) of super-net against '
    'bench accuracy within a group (mean ± std over seeds; a single value with one '
    'seed); τa the Kendall tau of N against A_N (A_N averaged over seeds first; -1 is '
    'best); P@K the share of the bench top-K among the super-net top-K (all scored '
    "archs); top-1 the bench rank (1 = best) and regret (bench accuracy points) of the "
    "super-net's first arch. Accuracies are percentages. In the line plots, bands are "
    '± one std over seeds (runs of several seeds) and dotted levels the random group.')


def overview(root: str, found: Collection, bench: bench_lib.Bench | None) -> list[str]:
  evals = collections.Counter(r.eval_name for r in found.runs)
  lines = ['# Single-path ranking correlations: sweep report', '',
           f'- root: `{os.path.abspath(root)}`',
           f'- runs: {len(found.runs)} with results, {len(found.missing)} missing, '
           f'{len(found.refused)} refused; {len(found.proxies)} proxy evaluation(s)',
           '- evaluation: ' + ', '.join(f'`{n}` ({c} run{"s" * (c != 1)})'
                                        for n, c in sorted(evals.items())),
           f'- bench for Fig. 3 and random groups: `{bench.path}`' if bench
           else '- bench: none given (`--bench`); Fig. 3 skipped',
           '- `summary.csv`: one row per run and group, mean/std over seeds (ddof=1) '
           'of n, kendall_tau, kendall_tau_b, spearman, pearson, mean_supernet_acc, '
           'mean_bench_acc; `summary_run.csv`: one row per run, tau_a, precision@K, '
           'top-1 rank/accuracy/regret. Proxies have rows of their own (score_kind '
           'proxy), where mean_supernet_acc is the mean proxy score.']
  if len(evals) > 1:
    lines.append('- **note**: runs used different evaluations; compare with care.')
  return lines + ['', READING, '']


def write_report(root: str, out: str, eval_name: str | None = None,
                 bench_path: str | None = None, sweep: str | None = None,
                 single: bool = False) -> Collection:
  """Collect the runs under root (or the single run folder root), write the CSVs,
  figures and report.md into out."""
  if single:
    found = collect_run(root, eval_name)
  else:
    found = collect(root, eval_name, sweep, skip=[out])
  if not found.runs and not found.proxies:
    details = [f'{p.name}: {p.reason}' for p in found.refused + found.missing]
    wanted = f'results/{eval_name}' if eval_name else 'results/<eval name>'
    raise ReportError(f'no run under {root} has usable {wanted}/{results.METRICS_FILE}'
                      + (': ' + '; '.join(details) if details else ' (no run folders)'))
  bench = load_bench(bench_path) if bench_path else None
  os.makedirs(out, exist_ok=True)
  everything = sorted(found.runs + found.proxies, key=lambda r: (r.name, r.eval_name))
  write_csv(os.path.join(out, 'summary.csv'),
            [row for r in everything for row in group_rows(r)])
  write_csv(os.path.join(out, 'summary_run.csv'), [run_row(r) for r in everything])
  lines = overview(root, found, bench)
  for name, runs in sections_of(found.runs, sweep):
    lines += sweep_section(name, runs, bench, out)
  if found.proxies:
    lines += proxy_section(found.runs, found.proxies, out)
  if found.runs:
    lines += usage_section(found.runs, bench, out)
  lines += problems_section('Refused runs', found.refused, 'None.')
  lines += problems_section('Missing runs', found.missing, 'None: every run has results.')
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))
  return found


# ---------------------------------------------------------------------------
# A run's best archs


def best_archs(run: Run, k: int) -> list[dict]:
  """The k archs with the best score (mean over seeds; ties by NB201 index).

  bench_rank is 1 + the scored archs with a better bench accuracy. When the run
  scored only groups, a rank above the largest top-N is not exact (unscored archs
  may be better): exact is False there.
  """
  pred = run.predictions
  mean = pred.scores.mean(axis=0)
  std = pred.scores.std(axis=0, ddof=1) if len(run.seeds) > 1 else None
  scored = len(pred.indices)
  whole = scored >= int(run.metrics.get('bench', {}).get('archs_in_subset') or 0)
  exact_up_to = scored if whole else max(top_sizes(run), default=0)
  out = []
  for position in np.lexsort((pred.indices, -mean))[:k]:
    rank = 1 + int(np.count_nonzero(pred.truth > pred.truth[position]))
    out.append({'nb201_index': int(pred.indices[position]),
                'arch': pred.arch_strings[position] if pred.arch_strings else '',
                'bench_rank': rank, 'exact': rank <= exact_up_to,
                'bench_accuracy': float(pred.truth[position]),
                'score_mean': float(mean[position]),
                'score_std': None if std is None else float(std[position])})
  return out


def format_best(run: Run, k: int) -> str:
  """The k best archs of a run as a plain-text table."""
  rows = best_archs(run, k)
  proxy = run.is_proxy
  what = f'proxy {run.score.get("name")} score' if proxy else 'super-net accuracy (%)'
  seeds = f'mean over {len(run.seeds)} seeds' if len(run.seeds) > 1 else 'one seed'
  metric = run.metrics.get('bench', {}).get('metric', 'bench')
  subset = run.metrics.get('bench', {}).get('archs_in_subset')
  pattern = '{:.4g}' if proxy else '{:.2f}'
  table = [('#', 'NB201', 'bench rank', f'{metric} (%)', what, 'arch')]
  for i, row in enumerate(rows, start=1):
    score = pattern.format(row['score_mean'])
    if row['score_std'] is not None:
      score += ' +- ' + pattern.format(row['score_std'])
    rank = str(row['bench_rank']) if row['exact'] else f'>{max(top_sizes(run))}'
    table.append((str(i), str(row['nb201_index']), rank, f"{row['bench_accuracy']:.2f}",
                  score, row['arch']))
  widths = [max(len(r[c]) for r in table) for c in range(len(table[0]) - 1)]
  lines = [f'{run.label} ({run.eval_name}): best {len(rows)} archs by {what}, {seeds}; '
           f'bench rank among {subset or "the"} archs of the subset']
  for row in table:
    lines.append('  '.join(c.rjust(w) for c, w in zip(row, widths)) + '  ' + row[-1])
  return '\n'.join(lines)


# ---------------------------------------------------------------------------
# Command line


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive integer')
  return value


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m spos_jax.report', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--root', help='sweep folder (one run folder each), or one run folder')
  where.add_argument('--run', help='one run folder (its workdir)')
  parser.add_argument('--out', default=None,
                      help='report folder to write; default ROOT/report (RUN/report)')
  parser.add_argument('--eval_name', default=None,
                      help="results/<name> to report; default: a run's only one, else "
                           f'{DEFAULT_EVAL_NAME!r}')
  parser.add_argument('--bench', default=None,
                      help='bench table (csv/csv.gz): Fig. 3 and the random groups')
  parser.add_argument('--figure', default=None,
                      help="report only runs whose SWEEP/sweep.json names this sweep "
                           "('Fig. 4', 'Fig 4' or 'fig4')")
  parser.add_argument('--best', type=_positive_int, default=None, metavar='K',
                      help="print a single run's K best archs (bench rank, accuracy, "
                           'score) and write nothing')
  return parser


def print_best(folder: str, eval_name: str | None, k: int) -> None:
  found = collect_run(folder, eval_name)
  if not found.runs and not found.proxies:
    problems = found.refused + found.missing
    raise ReportError(f'{folder}: no usable results'
                      + (f' ({problems[0].reason})' if problems else ''))
  for run in found.runs + found.proxies:
    print(format_best(run, k))


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  folder = args.run or args.root
  try:
    single = bool(args.run) or is_single_run(folder)
    if args.best is not None:
      if not single:
        raise ReportError(f'--best needs one run folder (--run=DIR); {folder} is a sweep '
                          'root')
      print_best(folder, args.eval_name, args.best)
      return 0
    out = args.out or os.path.join(folder, 'report')
    found = write_report(folder, out, args.eval_name, args.bench, args.figure, single)
  except ReportError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for problem in found.refused:
    print(f'warning: refused run {problem.name}: {problem.reason}', file=sys.stderr)
  if single:
    for run in found.runs + found.proxies:
      print(results.format_summary(run.metrics, run.results_folder) + '\n')
  print(f'{len(found.runs)} runs reported, {len(found.missing)} missing, '
        f'{len(found.refused)} refused: {os.path.join(out, "report.md")}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
