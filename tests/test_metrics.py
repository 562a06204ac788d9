"""Tests for spos_jax.metrics: against brute-force pair counting and scipy."""
import math
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from spos_jax import metrics


def brute_kendall_tau(x, y):
  """Paper formula by O(n^2) pair counting: (C - D) / (n choose 2)."""
  x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
  n = x.size
  concordant = discordant = 0
  for i in range(n):
    for j in range(i + 1, n):
      s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
      concordant += s > 0
      discordant += s < 0
  return (concordant - discordant) / (n * (n - 1) / 2)


def brute_kendall_tau_fast(x, y):
  """Same count, vectorised over the n x n sign matrix (for n of a few hundred)."""
  x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
  n = x.size
  s = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
  return np.triu(s, k=1).sum() / (n * (n - 1) / 2)


# Kendall tau, paper formula.


def test_kendall_tau_hand_example():
  # Pairs: (0,1) C, (0,2) C, (0,3) tied in x, (1,2) tied in y, (1,3) D, (2,3) D.
  x = [1, 2, 3, 1]
  y = [1, 2, 2, 3]
  assert metrics.kendall_tau(x, y) == pytest.approx((2 - 2) / 6)
  x = [1, 2, 3, 4]
  y = [1, 3, 3, 4]  # five concordant, one tied in y
  assert metrics.kendall_tau(x, y) == pytest.approx(5 / 6)
  assert metrics.kendall_tau_b(x, y) == pytest.approx(5 / math.sqrt(6 * 5))


def test_kendall_tau_perfect_orders():
  x = np.arange(20)
  assert metrics.kendall_tau(x, x) == 1.0
  assert metrics.kendall_tau(x, -x) == -1.0


@pytest.mark.parametrize('seed', range(3))
def test_kendall_tau_no_ties_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=300)
  y = x + rng.normal(size=300)
  assert metrics.kendall_tau(x, y) == pytest.approx(brute_kendall_tau_fast(x, y))


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('ties', ['x', 'y', 'both'])
def test_kendall_tau_ties_matches_brute_force(seed, ties):
  rng = np.random.default_rng(seed)
  n = 400
  x = rng.integers(0, 6, n) if ties in ('x', 'both') else rng.normal(size=n)
  y = rng.integers(0, 6, n) + (x > np.median(x)) * 2
  if ties == 'x':
    y = y + rng.normal(size=n)
  expected = brute_kendall_tau_fast(x, y)
  assert metrics.kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_joint_ties_and_odd_lengths():
  rng = np.random.default_rng(7)
  for n in (2, 3, 5, 17, 33, 64, 65, 129):
    x = rng.integers(0, 3, n)
    y = rng.integers(0, 3, n)
    if np.all(x == x[0]) or np.all(y == y[0]):
      continue
    assert metrics.kendall_tau(x, y) == pytest.approx(brute_kendall_tau(x, y)), n


def test_kendall_tau_differs_from_tau_b_on_ties():
  x = [1, 1, 2, 2, 3]
  y = [1, 2, 2, 3, 3]
  assert metrics.kendall_tau(x, y) < metrics.kendall_tau_b(x, y)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
                min_size=2, max_size=40))
def test_kendall_tau_property_brute_force(pairs):
  x, y = (np.array(v) for v in zip(*pairs))
  got = metrics.kendall_tau(x, y)
  if np.all(x == x[0]) or np.all(y == y[0]):
    assert math.isnan(got)
  else:
    assert got == pytest.approx(brute_kendall_tau(x, y), abs=1e-12)


def test_kendall_tau_full_nb201_size_matches_scipy():
  # No ties in continuous data, where the paper's tau equals tau-b.
  rng = np.random.default_rng(0)
  x = rng.random(15625)
  y = x + rng.random(15625)
  expected = scipy.stats.kendalltau(x, y).statistic
  assert metrics.kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)
  assert metrics.kendall_tau_b(x, y) == pytest.approx(expected, abs=1e-12)


# tau-b, Spearman, Pearson against scipy.


@pytest.mark.parametrize('seed', range(4))
def test_tau_b_spearman_pearson_match_scipy(seed):
  rng = np.random.default_rng(seed)
  n = 500
  x = rng.integers(0, 10, n).astype(float)
  y = x + rng.integers(0, 8, n) if seed % 2 else x + rng.normal(size=n)
  assert metrics.kendall_tau_b(x, y) == pytest.approx(
      scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
  assert metrics.spearman(x, y) == pytest.approx(
      scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
  assert metrics.pearson(x, y) == pytest.approx(
      scipy.stats.pearsonr(x, y).statistic, abs=1e-12)


def test_correlations_dict():
  rng = np.random.default_rng(3)
  pred = rng.integers(0, 20, 200)
  truth = pred + rng.normal(size=200) * 5
  out = metrics.correlations(pred, truth)
  assert set(out) == {'n', 'kendall_tau', 'kendall_tau_b', 'spearman', 'pearson'}
  assert out['n'] == 200 and type(out['n']) is int
  assert all(type(v) is float for k, v in out.items() if k != 'n')
  assert out['kendall_tau'] == pytest.approx(metrics.kendall_tau(pred, truth))
  assert out['kendall_tau_b'] == pytest.approx(metrics.kendall_tau_b(pred, truth))
  assert out['spearman'] == pytest.approx(metrics.spearman(pred, truth))
  assert out['pearson'] == pytest.approx(metrics.pearson(pred, truth))


# tau_a.


def test_tau_a_falling_is_minus_one():
  sizes = [10, 25, 50, 100, 150, 250, 500]
  assert metrics.tau_a(sizes, [0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4]) == -1.0


def test_tau_a_rising_is_plus_one():
  sizes = [10, 25, 50, 100, 150, 250, 500]
  assert metrics.tau_a(sizes, [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]) == 1.0


def test_tau_a_mixed_with_tie():
  # Pairs of (N, A_N): (10,.7) (25,.6) (50,.6) (100,.65): D, D, D, tied, C, C -> (2-3)/6.
  assert metrics.tau_a([10, 25, 50, 100], [0.7, 0.6, 0.6, 0.65]) == pytest.approx(-1 / 6)


# Precision at k and top-1 regret.


def test_precision_at_k_hand_example():
  pred = [0.9, 0.8, 0.7, 0.1, 0.5]
  truth = [90.0, 70.0, 95.0, 80.0, 60.0]
  # Super-net top-2: {0, 1}; bench top-2: {2, 0} -> 1 / 2.
  assert metrics.precision_at_k(pred, truth, 2) == 0.5
  # Top-3: {0, 1, 2} vs {2, 0, 3} -> 2 / 3.
  assert metrics.precision_at_k(pred, truth, 3) == pytest.approx(2 / 3)
  assert metrics.precision_at_k(pred, truth, 5) == 1.0
  assert metrics.precision_at_k(pred, truth, 1) == 0.0


def test_precision_at_k_ties_keep_lower_position():
  pred = [0.5, 0.5, 0.5, 0.1]
  truth = [1.0, 2.0, 3.0, 4.0]
  # Super-net top-1 among three equal values is position 0; bench top-1 is {3}.
  assert metrics.precision_at_k(pred, truth, 1) == 0.0
  # Super-net top-3 {0, 1, 2}; bench top-3 {3, 2, 1} -> 2 / 3.
  assert metrics.precision_at_k(pred, truth, 3) == pytest.approx(2 / 3)
  truth = [4.0, 4.0, 4.0, 4.0]
  assert metrics.precision_at_k(pred, truth, 2) == 1.0  # both pick {0, 1}


@pytest.mark.parametrize('k', [0, 5, -1, 2.0, True])
def test_precision_at_k_bad_k(k):
  with pytest.raises(ValueError, match='k must'):
    metrics.precision_at_k([1, 2, 3, 4], [1, 2, 3, 4], k)


def test_top1_regret_hand_example_with_ties():
  pred = [0.3, 0.9, 0.9, 0.2, 0.1]  # tie for first: position 1 wins
  truth = [94.0, 91.0, 94.0, 92.0, 91.0]
  out = metrics.top1_regret(pred, truth)
  # Archs strictly better than 91.0: 94, 94, 92 -> rank 4, even with the 91.0 tie.
  assert out == {
      'index': 1, 'bench_rank': 4, 'bench_accuracy': 91.0,
      'best_accuracy': 94.0, 'regret': 3.0,
  }
  out = metrics.top1_regret([0.0, 0.0, 1.0], [5.0, 3.0, 5.0])
  assert out['index'] == 2 and out['bench_rank'] == 1 and out['regret'] == 0.0


# Degenerate and invalid input.


@pytest.mark.parametrize('fn', [metrics.kendall_tau, metrics.kendall_tau_b,
                                metrics.spearman, metrics.pearson, metrics.tau_a])
def test_degenerate_inputs_give_nan_quietly(fn):
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert math.isnan(fn([], []))
    assert math.isnan(fn([1.0], [2.0]))
    assert math.isnan(fn([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    assert math.isnan(fn([4, 4, 4], [1, 2, 3]))


def test_correlations_degenerate_is_nan():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    out = metrics.correlations([1.0, 2.0], [3.0, 3.0])
  assert out['n'] == 2
  assert all(math.isnan(out[k])
             for k in ('kendall_tau', 'kendall_tau_b', 'spearman', 'pearson'))


@pytest.mark.parametrize('fn', [metrics.kendall_tau, metrics.kendall_tau_b,
                                metrics.spearman, metrics.pearson, metrics.correlations,
                                metrics.tau_a, metrics.top1_regret])
def test_invalid_inputs_raise(fn):
  with pytest.raises(ValueError, match='differ in length: 3 != 2'):
    fn([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match='must be 1-D'):
    fn(np.ones((2, 2)), np.ones((2, 2)))
  with pytest.raises(ValueError, match='must be 1-D'):
    fn(1.0, 2.0)
  with pytest.raises(ValueError, match='2 NaN'):
    fn([1.0, np.nan, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0])


def test_precision_and_regret_validate_input():
  with pytest.raises(ValueError, match='1 NaN'):
    metrics.precision_at_k([1.0, 2.0], [np.nan, 1.0], 1)
  with pytest.raises(ValueError, match='at least one'):
    metrics.top1_regret([], [])
