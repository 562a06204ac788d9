"""Numbers over seeds: group statistics, tau_a, the CSV rows, the groups of archs and
the ranking trajectory's series.

Every mean and std is recomputed from the per-seed values of metrics.json with
results.mean_std's convention (sample std, ddof=1; None with a single seed; a null,
undefined, value is NaN). tau_a is the paper's: Kendall tau of N against A_N, A_N
averaged over seeds first.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from spos_jax import bench as bench_lib
from spos_jax import metrics as metrics_lib
from spos_jax import results
from spos_jax import space
from spos_jax import trajectory as trajectory_lib
from spos_jax.report import runs as runs_lib

Run = runs_lib.Run
TOP1_FIELDS = results.TOP1_FIELDS


# ---------------------------------------------------------------------------
# Group statistics


def mean_std(values) -> tuple[float, float | None]:
  """Mean and sample std over seeds (ddof=1; None with one seed), as results.mean_std."""
  stats = results.mean_std(values)
  return stats['mean'], stats['std']


def per_seed(run: Run, entry: dict, field: str | None = None) -> np.ndarray:
  """An entry's per-seed values (of one field) in the run's seed order; null is NaN."""
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


# ---------------------------------------------------------------------------
# Rows of summary.csv and summary_run.csv


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


# ---------------------------------------------------------------------------
# Numbers as text


def format_stat(mean, std=None, digits: int = 3) -> str:
  """'0.123 ± 0.045'; the mean alone without a std; '–' for None; 'nan' for NaN."""
  if mean is None:
    return '–'
  if isinstance(mean, float) and math.isnan(mean):
    return 'nan'
  text = f'{mean:.{digits}f}'
  return text if std is None else f'{text} ± {std:.{digits}f}'


def format_rank(mean, std) -> str:
  """A bench rank: an integer when it is one (one seed, or all seeds agree)."""
  if float(mean).is_integer() and not std:
    return str(int(mean))
  return format_stat(mean, std, 1)


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
    scope = (run.metrics.get('evaluation') or {}).get('eval.scope', config.get('eval.scope'))
    subset = _Indices(bench_lib.ranked_subset(bench, allowed, scope == 'unique').indices)
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
# The ranking trajectory


# The groups a trajectory's Kendall tau and Spearman are read from, first present wins:
# every arch the run ranks, else the fixed random sample of a sampled trajectory.
TRAJECTORY_GROUPS = ('all', trajectory_lib.SAMPLE_GROUP)


@dataclasses.dataclass(frozen=True)
class Series:
  """One field of a trajectory against epoch: mean, min and max over seeds."""
  group: str  # the group the values are of; '' for tau_a (one value per seed)
  epochs: np.ndarray  # float64 [e], ascending
  mean: np.ndarray  # float64 [e]; NaN where no seed has a value
  low: np.ndarray
  high: np.ndarray


def trajectory_group(trajectory: runs_lib.Trajectory) -> str | None:
  """The group whose Kendall tau and Spearman stand for the run; None if neither."""
  present = set(trajectory.group.tolist())
  return next((g for g in TRAJECTORY_GROUPS if g in present), None)


def _seed_values(trajectory: runs_lib.Trajectory, field: str,
                 rows: np.ndarray) -> dict[tuple[float, str], float]:
  """{(epoch, seed): value} of the given rows; of repeated (epoch, seed) rows, the
  first finite value of the row with the most archs."""
  found = {}
  n = trajectory.values['n'][rows]
  order = np.argsort(-np.nan_to_num(n, nan=-1.0), kind='stable')
  for row in rows[order]:
    value = trajectory.values[field][row]
    key = (float(trajectory.epoch[row]), str(trajectory.seed[row]))
    if key not in found or (math.isnan(found[key]) and not math.isnan(value)):
      found[key] = float(value)
  return found


def trajectory_series(trajectory: runs_lib.Trajectory, field: str) -> Series | None:
  """field against epoch over seeds; None when the trajectory has no rows for it.

  kendall_tau, spearman (and the other per-group fields) are read from the group of
  trajectory_group; tau_a, one value per epoch and seed repeated on each group's row,
  from any row. Undefined values (NaN) are left out of the mean, min and max.
  """
  if field == 'tau_a':
    group = ''
    rows = np.arange(len(trajectory))
  else:
    group = trajectory_group(trajectory)
    if group is None:
      return None
    rows = np.flatnonzero(trajectory.group == group)
  by_epoch = {}
  for (epoch, _), value in _seed_values(trajectory, field, rows).items():
    by_epoch.setdefault(epoch, []).append(value)
  epochs = sorted(by_epoch)
  stats = []
  for epoch in epochs:
    finite = [v for v in by_epoch[epoch] if not math.isnan(v)]
    stats.append((float(np.mean(finite)), min(finite), max(finite)) if finite
                 else (math.nan,) * 3)
  mean, low, high = (np.asarray(column, np.float64).reshape(-1)
                     for column in zip(*stats)) if stats else (np.zeros(0),) * 3
  return Series(group, np.asarray(epochs, np.float64), mean, low, high)
