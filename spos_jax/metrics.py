"""Ranking-correlation metrics: Kendall tau (paper formula and tau-b), SCC, PCC, tau_a, P@K.

Definitions: docs/method.md, 'Metrics'. Conventions:
- Every metric takes 1-D arrays of equal length; a length mismatch, input that is not
  1-D, or NaN values raise ValueError.
- Correlations of fewer than two points or of a constant vector are float('nan'),
  returned quietly (no exception, no warning).
- Higher is better for both the super-network prediction (`pred`) and the bench
  accuracy (`truth`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats

ArrayLike = Sequence[float] | np.ndarray


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
  """1-D float64 copy of `values`; raises ValueError on other shapes or NaN values."""
  arr = np.asarray(values, dtype=np.float64)
  if arr.ndim != 1:
    raise ValueError(f'{name} must be 1-D, got shape {arr.shape}')
  num_nan = int(np.count_nonzero(np.isnan(arr)))
  if num_nan:
    raise ValueError(f'{name} contains {num_nan} NaN value(s) out of {arr.size}')
  return arr


def _as_pair(x: ArrayLike, y: ArrayLike,
             names: tuple[str, str] = ('x', 'y')) -> tuple[np.ndarray, np.ndarray]:
  """Validated 1-D float64 vectors of equal length."""
  x, y = _as_vector(x, names[0]), _as_vector(y, names[1])
  if x.size != y.size:
    raise ValueError(
        f'{names[0]} and {names[1]} differ in length: {x.size} != {y.size}')
  return x, y


def _is_degenerate(x: np.ndarray, y: np.ndarray) -> bool:
  """True when no correlation is defined: n < 2 or a constant vector."""
  return x.size < 2 or np.all(x == x[0]) or np.all(y == y[0])


def _tied_pairs(keys: np.ndarray) -> int:
  """Number of pairs with equal keys: sum of t (t - 1) / 2 over groups of size t."""
  _, counts = np.unique(keys, return_counts=True)
  counts = counts.astype(np.int64)
  return int(np.sum(counts * (counts - 1) // 2))


def _count_inversions(values: np.ndarray) -> int:
  """Pairs i < j with values[i] > values[j] (strictly), for ints in [0, n).

  A bottom-up merge sort, vectorised per level: runs of width w are paired; for each
  element of a right run, the elements of its left run that are strictly greater are
  counted with one searchsorted over all left runs (keys offset by pair id * n keep the
  runs apart). log2(n) levels, each O(n log n) in numpy.
  """
  n = values.size
  v = values.astype(np.int64)
  pos = np.arange(n, dtype=np.int64)
  total = 0
  width = 1
  while width < n:
    pair = pos // (2 * width)
    is_left = (pos // width) % 2 == 0
    keys = pair * n + v
    left_end = np.cumsum(np.bincount(pair[is_left], minlength=int(pair[-1]) + 1))
    right_keys, right_pair = keys[~is_left], pair[~is_left]
    at = np.searchsorted(keys[is_left], right_keys, side='right')
    total += int(np.sum(left_end[right_pair] - at))
    v = np.sort(keys) - pair * n  # runs of width 2w are now sorted
    width *= 2
  return total


def _pair_counts(x: np.ndarray, y: np.ndarray) -> tuple[int, int, int, int]:
  """(C - D, all pairs n0, pairs tied in x n1, pairs tied in y n2), in O(n log n).

  Knight's algorithm: sort by x then y; the strict inversions of y in that order are
  the discordant pairs D; pairs tied in neither variable number n0 - n1 - n2 + n3
  (n3: pairs tied in both), so C - D = n0 - n1 - n2 + n3 - 2 D.
  """
  n = x.size
  _, x_rank = np.unique(x, return_inverse=True)
  _, y_rank = np.unique(y, return_inverse=True)
  x_rank, y_rank = x_rank.astype(np.int64), y_rank.astype(np.int64)
  order = np.lexsort((y_rank, x_rank))
  discordant = _count_inversions(y_rank[order])
  n0 = n * (n - 1) // 2
  n1 = _tied_pairs(x_rank)
  n2 = _tied_pairs(y_rank)
  n3 = _tied_pairs(x_rank * n + y_rank)
  return n0 - n1 - n2 + n3 - 2 * discordant, n0, n1, n2


def kendall_tau(x: ArrayLike, y: ArrayLike) -> float:
  """Paper's Kendall tau: (concordant - discordant) / (n choose 2), in O(n log n).

  A pair tied in x or in y counts as neither concordant nor discordant (but stays in
  the denominator). NaN for n < 2 or a constant vector.
  """
  x, y = _as_pair(x, y)
  if _is_degenerate(x, y):
    return float('nan')
  c_minus_d, n0, _, _ = _pair_counts(x, y)
  return c_minus_d / n0


def kendall_tau_b(x: ArrayLike, y: ArrayLike) -> float:
  """Kendall tau-b, (C - D) / sqrt((n0 - n1) (n0 - n2)): scipy.stats.kendalltau's default."""
  x, y = _as_pair(x, y)
  if _is_degenerate(x, y):
    return float('nan')
  c_minus_d, n0, n1, n2 = _pair_counts(x, y)
  tau = c_minus_d / np.sqrt(float(n0 - n1) * float(n0 - n2))
  return float(np.clip(tau, -1.0, 1.0))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation of validated, non-degenerate vectors."""
  xc, yc = x - x.mean(), y - y.mean()
  with np.errstate(invalid='ignore', over='ignore', divide='ignore'):
    r = np.dot(xc, yc) / (np.linalg.norm(xc) * np.linalg.norm(yc))
  return float(np.clip(r, -1.0, 1.0))


def pearson(x: ArrayLike, y: ArrayLike) -> float:
  """Pearson correlation (PCC); NaN for n < 2 or a constant vector."""
  x, y = _as_pair(x, y)
  if _is_degenerate(x, y):
    return float('nan')
  return _pearson(x, y)


def spearman(x: ArrayLike, y: ArrayLike) -> float:
  """Spearman rank correlation (SCC): PCC of average ranks; NaN if n < 2 or constant."""
  x, y = _as_pair(x, y)
  if _is_degenerate(x, y):
    return float('nan')
  return _pearson(scipy.stats.rankdata(x), scipy.stats.rankdata(y))


def correlations(pred: ArrayLike, truth: ArrayLike) -> dict:
  """All correlations of super-net predictions against bench accuracies, as a dict.

  Keys: n (int), kendall_tau (paper formula), kendall_tau_b, spearman, pearson.
  """
  pred, truth = _as_pair(pred, truth, ('pred', 'truth'))
  out = {'n': int(pred.size)}
  if _is_degenerate(pred, truth):
    nan = float('nan')
    out.update(kendall_tau=nan, kendall_tau_b=nan, spearman=nan, pearson=nan)
    return out
  c_minus_d, n0, n1, n2 = _pair_counts(pred, truth)
  out['kendall_tau'] = c_minus_d / n0
  out['kendall_tau_b'] = float(
      np.clip(c_minus_d / np.sqrt(float(n0 - n1) * float(n0 - n2)), -1.0, 1.0))
  out['spearman'] = _pearson(scipy.stats.rankdata(pred), scipy.stats.rankdata(truth))
  out['pearson'] = _pearson(pred, truth)
  return out


def tau_a(group_sizes: ArrayLike, mean_accuracies: ArrayLike) -> float:
  """Paper's tau_a: Kendall tau (paper formula) between N and A_N over the top-N groups.

  `group_sizes` are N (10, 25, 50, ...); `mean_accuracies` are A_N, the super-net
  accuracy averaged over the top-N archs and seeds. A_N falling as N grows gives -1
  (best), rising gives +1. NaN for fewer than two groups or a constant A_N.
  """
  sizes, accs = _as_pair(group_sizes, mean_accuracies,
                         ('group_sizes', 'mean_accuracies'))
  return kendall_tau(sizes, accs)


def _top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k largest values; ties keep the lower index first (stable sort)."""
  return np.argsort(-values, kind='stable')[:k]


def precision_at_k(pred: ArrayLike, truth: ArrayLike, k: int) -> float:
  """Share of the bench's top-k archs (by truth) that are also in the super-net's top-k.

  Both top-k sets come from a stable sort by descending value: among equal values the
  arch at the lower position in the input comes first. Needs 1 <= k <= n.
  """
  pred, truth = _as_pair(pred, truth, ('pred', 'truth'))
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise ValueError(f'k must be an int, got {k!r}')
  if not 1 <= k <= pred.size:
    raise ValueError(f'k must be in [1, n={pred.size}], got {k}')
  hits = np.intersect1d(_top_k_indices(pred, k), _top_k_indices(truth, k))
  return hits.size / k


def top1_regret(pred: ArrayLike, truth: ArrayLike) -> dict:
  """Bench standing of the arch the super-net ranks first (argmax pred, ties -> first).

  Returns index (its position), bench_rank (1 = best; 1 + number of archs with a
  strictly better bench accuracy, so ties take the best rank among equals),
  bench_accuracy, best_accuracy (max truth) and regret (best_accuracy - bench_accuracy).
  """
  pred, truth = _as_pair(pred, truth, ('pred', 'truth'))
  if pred.size == 0:
    raise ValueError('top1_regret needs at least one arch, got n=0')
  index = int(np.argmax(pred))
  acc = float(truth[index])
  best = float(np.max(truth))
  return {
      'index': index,
      'bench_rank': 1 + int(np.count_nonzero(truth > acc)),
      'bench_accuracy': acc,
      'best_accuracy': best,
      'regret': best - acc,
  }
