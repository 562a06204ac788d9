"""A sweep's report: every run's results over seeds, the paper's figures, report.md.

  python -m spos_jax.report --root=RUNS --out=REPORT [--eval_name=running-groups]
      [--bench=TABLE.csv] [--figure=NAME]

ROOT/<run>/ is one run's workdir: config.json and results/<eval name>/ with
predictions.csv and metrics.json (results.py). Run names are '<size>-<variant>', size
s (small), m (medium) or w (wide), e.g. 's-all', 'm-mask_none+avg_pool_3x3'; other
names take their size from the config. A run may name its sweep (paper figure) in a
SWEEP file or sweep.json; runs are then grouped by sweep and size, and --figure=NAME
keeps one sweep only.

Each run is checked before use (seeds of metrics.json against config.json, every seed
x arch in predictions.csv); a run that fails is refused with the file and the reason,
never mixed in. Runs without results are listed as missing.

OUT/summary.csv      one row per run and group (top10..top500, random, all): mean and
                     std over seeds of each results.GROUP_METRICS field
OUT/summary_run.csv  one row per run: tau_a, precision@10/50/100, top-1 rank/regret
OUT/op_usage.csv     Fig. 3's numbers (only with --bench)
OUT/figures/         fig2_scatter_*, fig3_op_usage, fig4_accuracy_tau_*, fig11_scc_pcc_*
                     as .png and .pdf
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
  scores: np.ndarray  # float64 [S, m], super-net accuracy (%)
  truth: np.ndarray  # float64 [m], bench accuracy (%)


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  folder: str
  size: str  # 's', 'm', 'w' or OTHER_SIZE
  variant: str
  sweep: str  # '' when the run names none
  eval_name: str
  config: dict  # flattened
  metrics: dict  # metrics.json
  seeds: tuple[str, ...]
  predictions: Predictions

  @property
  def results_folder(self) -> str:
    return os.path.join(self.folder, 'results', self.eval_name)


@dataclasses.dataclass(frozen=True)
class Problem:
  """A run left out of the report, and why."""
  name: str
  reason: str


@dataclasses.dataclass
class Collection:
  runs: list[Run]
  missing: list[Problem]
  refused: list[Problem]


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
  if prefer in names:
    return prefer
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


def evaluations(folder: str) -> list[str]:
  """Names of the completed evaluations (results/<name>/metrics.json) of a run."""
  base = os.path.join(folder, 'results')
  if not os.path.isdir(base):
    return []
  return sorted(n for n in os.listdir(base)
                if os.path.isfile(os.path.join(base, n, results.METRICS_FILE)))


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
  if not rows or tuple(rows[0]) != results.PREDICTION_COLUMNS:
    raise RunError(f'{path}: header must be {",".join(results.PREDICTION_COLUMNS)}')
  score, truth = {}, {}
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
    score[seed, index] = _number(path, line, 'supernet_acc', fields[3])
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
  return Predictions(indices, scores, np.asarray([truth[i] for i in indices.tolist()]))


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
             sweep=read_sweep(folder, sweep),
             eval_name=eval_name, config=config, metrics=summary, seeds=seeds,
             predictions=predictions)


def collect(root: str, eval_name: str | None = None, sweep: str | None = None,
            skip: Sequence[str] = ()) -> Collection:
  """Every run folder under root: loaded, missing or refused."""
  if not os.path.isdir(root):
    raise ReportError(f'--root={root}: not a directory')
  try:
    names = sorted(os.listdir(root))
  except OSError as e:
    raise ReportError(f'--root={root}: cannot list ({e})') from None
  skip = {os.path.realpath(p) for p in skip}
  found = Collection([], [], [])
  for name in names:
    folder = os.path.join(root, name)
    if (name.startswith('.') or not os.path.isdir(folder)
        or os.path.realpath(folder) in skip or not is_run_folder(folder)):
      continue
    if sweep and sweep not in read_sweeps(folder):
      continue
    try:
      chosen = choose_evaluation(folder, eval_name)
      if chosen is None:
        found.missing.append(Problem(name, missing_reason(folder, eval_name)))
      else:
        found.runs.append(load_run(folder, chosen, sweep))
    except RunError as e:
      found.refused.append(Problem(name, str(e)))
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
  return {'run': run.name, 'size': run.size, 'variant': run.variant, 'sweep': run.sweep,
          'eval_name': run.eval_name}


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


def scatter_figure(runs: Sequence[Run], bench: bench_lib.Bench | None, title: str) -> Figure:
  """Fig. 2: super-net (x, mean over seeds) vs bench accuracy (y); rows = runs."""
  figure = _new_figure(3.6 * len(SCATTER_GROUPS), 2.9 * len(runs))
  axes = figure.subplots(len(runs), len(SCATTER_GROUPS), squeeze=False)
  for row, run in enumerate(runs):
    x = run.predictions.scores.mean(axis=0)
    for col, group in enumerate(SCATTER_GROUPS):
      ax = axes[row, col]
      found = group_positions(run, group, bench)
      if found is None:
        ax.text(0.5, 0.5, f'{group}: not evaluated', ha='center', va='center',
                transform=ax.transAxes)
        ax.set_title(f'{run.name}: {group}', fontsize=9)
        continue
      pos, label = found
      stats_group = group if label != 'all scored' else 'all'
      kt = group_stat(run, stats_group, 'kendall_tau')
      ax.scatter(x[pos], run.predictions.truth[pos], s=9, alpha=0.6, color=f'C{col}',
                 edgecolors='none')
      ax.set_title(f'{run.name}: {label} (n={len(pos)})\nKT {_format(*kt)}', fontsize=9)
      ax.grid(alpha=0.3)
      ax.tick_params(labelsize=8)
      if col == 0:
        ax.set_ylabel(_bench_label([run]), fontsize=9)
      if row == len(runs) - 1:
        ax.set_xlabel('super-net accuracy (%, mean over seeds)', fontsize=9)
  figure.suptitle(f'{title}\nKT: mean ± std over seeds of the per-seed Kendall tau',
                  fontsize=10)
  return figure


def _log_n_axis(ax, sizes: Sequence[int]) -> None:
  ax.set_xscale('log')
  ax.set_xticks(list(sizes))
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  ax.set_xlabel('N (top-N bench archs)')
  ax.grid(alpha=0.3)


def lines_figure(runs: Sequence[Run], panels: Sequence[tuple[str, str]], title: str,
                 with_tau_a: bool) -> Figure:
  """Figs. 4-6 and 11: a metric against N, one line per run, std band over seeds.

  The run's random group is drawn as a dotted level in the run's colour.
  """
  figure = _new_figure(5.2 * len(panels) + 3.0, 4.2)
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  colors = run_colors(len(runs))
  all_sizes = sorted({n for run in runs for n in top_sizes(run)})
  handles = []
  for run, color in zip(runs, colors):
    sizes = top_sizes(run)
    label = run.variant + (f'  (τa={tau_a(run):+.2f})' if with_tau_a else '')
    for ax, (field, _) in zip(axes, panels):
      stats = [group_stat(run, f'top{n}', field) for n in sizes]
      mean = np.asarray([m for m, _ in stats], np.float64)
      line, = ax.plot(sizes, mean, marker='o', ms=3, lw=1.5, color=color, label=label)
      if all(s is not None for _, s in stats):
        std = np.asarray([s for _, s in stats], np.float64)
        ax.fill_between(sizes, mean - std, mean + std, color=color, alpha=0.15, lw=0)
      if 'random' in run.metrics['groups']:
        ax.axhline(group_stat(run, 'random', field)[0], color=color, ls=':', lw=1)
    handles.append(line)
  for ax, (_, ylabel) in zip(axes, panels):
    _log_n_axis(ax, all_sizes)
    ax.set_ylabel(ylabel)
  handles.append(Line2D([], [], color='gray', ls=':', label='random sample (dotted)'))
  figure.legend(handles=handles, loc='outside right center', fontsize=8,
                title='run' + ('  (tau_a)' if with_tau_a else ''), title_fontsize=8)
  figure.suptitle(f'{title}: mean ± std over seeds', fontsize=10)
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


def panel_key(run: Run) -> tuple:
  return (run.sweep, list(SIZES).index(run.size) if run.size in SIZES else len(SIZES))


def size_title(runs: Sequence[Run]) -> str:
  """'small (C=32, N=2)', prefixed by the sweep name when the runs carry one."""
  size = runs[0].size
  shapes = sorted({(r.config.get('model.channels'), r.config.get('model.cells_per_stage'))
                   for r in runs}, key=str)
  shape = ', '.join(f'C={c}, N={n}' for c, n in shapes)
  text = f'{SIZES.get(size, "other size")} ({shape})'
  return f'{runs[0].sweep}: {text}' if runs[0].sweep else text


def panels_of(runs: Sequence[Run]) -> list[list[Run]]:
  """Runs grouped by sweep and size (s, m, w, other), each in name order."""
  grouped = collections.defaultdict(list)
  for run in sorted(runs, key=lambda r: r.name):
    grouped[panel_key(run)].append(run)
  return [grouped[k] for k in sorted(grouped)]


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
    cells = [f'`{run.name}`', str(len(run.seeds)), _format(row['tau_a'], digits=2)]
    for g in groups:
      cells.append(_format(*group_stat(run, g, 'kendall_tau'))
                   if g in run.metrics['groups'] else '–')
    for k in results.PRECISION_KS:
      cells.append(_format(row[f'precision_at_{k}_mean'], row[f'precision_at_{k}_std'], 2))
    cells.append(_format(row['top1_bench_rank_mean'], row['top1_bench_rank_std'], 1))
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


def size_section(runs: Sequence[Run], bench: bench_lib.Bench | None, out: str) -> list[str]:
  """One sweep/size: its table and figures (Figs. 4-6, 11 and 2)."""
  title = size_title(runs)
  stem = _stem(f'{runs[0].sweep}_{runs[0].size}' if runs[0].sweep else runs[0].size)
  lines = [f'## {title}', ''] + kt_table(runs) + ['']
  accuracy = lines_figure(runs, (('mean_supernet_acc', 'A_N: mean super-net accuracy (%)'),
                                 ('kendall_tau', 'Kendall tau')), title, with_tau_a=True)
  lines += [_figure_link(save_figure(accuracy, out, f'fig4_accuracy_tau_{stem}'),
                         f'A_N and Kendall tau against N, {title}'), '']
  correlations = lines_figure(runs, (('spearman', 'Spearman (SCC)'),
                                     ('pearson', 'Pearson (PCC)')), title, with_tau_a=False)
  lines += [_figure_link(save_figure(correlations, out, f'fig11_scc_pcc_{stem}'),
                         f'SCC and PCC against N, {title}'), '']
  chunks = [runs[i:i + SCATTER_ROWS_PER_FIGURE]
            for i in range(0, len(runs), SCATTER_ROWS_PER_FIGURE)]
  for part, chunk in enumerate(chunks, start=1):
    suffix = f'_{part}' if len(chunks) > 1 else ''
    figure = scatter_figure(chunk, bench, f'{title}{suffix.replace("_", ", part ")}')
    lines += [_figure_link(save_figure(figure, out, f'fig2_scatter_{stem}{suffix}'),
                           f'super-net vs bench accuracy, {title}'), '']
  if any(group_positions(r, 'random', bench)[1] == 'all scored' for r in runs
         if 'random' in r.metrics['groups']):
    lines += ['Where a panel says "all scored", the random group could not be redrawn: '
              'pass the bench table the runs used (`--bench`).', '']
  return lines


READING = (
    'Reading the tables: KT is the Kendall tau (paper formula) of super-net against '
    'bench accuracy within a group, mean ± std over seeds; τa the Kendall tau of N '
    'against A_N (A_N averaged over seeds first; -1 is best); P@K the share of the '
    'bench top-K among the super-net top-K (all scored archs); top-1 the bench rank '
    "(1 = best) and regret (bench accuracy points) of the super-net's first arch. In "
    'the line plots, bands are ± one std over seeds and dotted levels the random group.')


def overview(root: str, found: Collection, bench: bench_lib.Bench | None) -> list[str]:
  evals = collections.Counter(r.eval_name for r in found.runs)
  lines = ['# Single-path ranking correlations: sweep report', '',
           f'- root: `{os.path.abspath(root)}`',
           f'- runs: {len(found.runs)} with results, {len(found.missing)} missing, '
           f'{len(found.refused)} refused',
           '- evaluation: ' + ', '.join(f'`{n}` ({c} run{"s" * (c != 1)})'
                                        for n, c in sorted(evals.items())),
           f'- bench for Fig. 3 and random groups: `{bench.path}`' if bench
           else '- bench: none given (`--bench`); Fig. 3 skipped',
           '- `summary.csv`: one row per run and group, mean/std over seeds (ddof=1) '
           'of n, kendall_tau, kendall_tau_b, spearman, pearson, mean_supernet_acc, '
           'mean_bench_acc; `summary_run.csv`: one row per run, tau_a, precision@K, '
           'top-1 rank/accuracy/regret.']
  if len(evals) > 1:
    lines.append('- **note**: runs used different evaluations; compare with care.')
  return lines + ['', READING, '']


def write_report(root: str, out: str, eval_name: str | None = None,
                 bench_path: str | None = None, sweep: str | None = None) -> Collection:
  """Collect the runs under root, write the CSVs, figures and report.md into out."""
  found = collect(root, eval_name, sweep, skip=[out])
  if not found.runs:
    details = [f'{p.name}: {p.reason}' for p in found.refused + found.missing]
    wanted = f'results/{eval_name}' if eval_name else 'results/<eval name>'
    raise ReportError(f'no run under {root} has usable {wanted}/{results.METRICS_FILE}'
                      + (': ' + '; '.join(details) if details else ' (no run folders)'))
  bench = load_bench(bench_path) if bench_path else None
  os.makedirs(out, exist_ok=True)
  runs = sorted(found.runs, key=lambda r: (panel_key(r), r.name))
  write_csv(os.path.join(out, 'summary.csv'), [row for r in runs for row in group_rows(r)])
  write_csv(os.path.join(out, 'summary_run.csv'), [run_row(r) for r in runs])
  lines = overview(root, found, bench)
  for panel in panels_of(runs):
    lines += size_section(panel, bench, out)
  lines += usage_section(runs, bench, out)
  lines += problems_section('Refused runs', found.refused, 'None.')
  lines += problems_section('Missing runs', found.missing, 'None: every run has results.')
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))
  return found


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m spos_jax.report', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--root', required=True, help='sweep folder: one run folder each')
  parser.add_argument('--out', required=True, help='report folder to write')
  parser.add_argument('--eval_name', default=None,
                      help="results/<name> to report; default: a run's only one, else "
                           f'{DEFAULT_EVAL_NAME!r}')
  parser.add_argument('--bench', default=None,
                      help='bench table (csv/csv.gz): Fig. 3 and the random groups')
  parser.add_argument('--figure', default=None,
                      help='report only runs whose SWEEP/sweep.json names this sweep')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    found = write_report(args.root, args.out, args.eval_name, args.bench, args.figure)
  except ReportError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for problem in found.refused:
    print(f'warning: refused run {problem.name}: {problem.reason}', file=sys.stderr)
  print(f'{len(found.runs)} runs reported, {len(found.missing)} missing, '
        f'{len(found.refused)} refused: {os.path.join(args.out, "report.md")}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
