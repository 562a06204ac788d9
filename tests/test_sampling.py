"""Tests of spos_jax.sampling: strictly fair groups, uniform paths, masks, keys."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from spos_jax import sampling, space

from conftest import fast_jit

NUM_DRAWS = 2000
FULL = (0, 1, 2, 3, 4)
# Full space, 'none,avg_pool_3x3' masked, and a two-op subset.
SUBSETS = [FULL, (1, 2, 3), (0, 4)]
CELLS = [None, 3]  # shared topology, unshared with 3 cells


def _keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


# `allowed` is traced, so one compilation serves every subset of the same size.
@fast_jit(static_argnums=2)
def _fair_batch(keys, allowed, num_cells):
  return jax.vmap(lambda k: sampling.fair_group(k, allowed, num_cells))(keys)


@fast_jit(static_argnums=2)
def _uniform_batch(keys, allowed, num_cells):
  return jax.vmap(lambda k: sampling.uniform_path(k, allowed, num_cells))(keys)


@functools.lru_cache(maxsize=None)
def _draws(kind, allowed, num_cells):
  """NUM_DRAWS fair groups [n, K, *edges] or uniform paths [n, *edges] (cached)."""
  batch = _fair_batch if kind == 'fair' else _uniform_batch
  return np.asarray(batch(_keys(NUM_DRAWS), jnp.asarray(allowed, jnp.int32), num_cells))


def _edges(num_cells):
  return (6,) if num_cells is None else (num_cells, 6)


def _chi2_bound(df):
  """A loose bound: a uniform sample exceeds it with probability 1e-6."""
  return scipy.stats.chi2.ppf(1 - 1e-6, df)


def _assert_uniform(column, allowed):
  counts = np.bincount(column, minlength=space.NUM_OPS)
  assert counts[[i for i in range(space.NUM_OPS) if i not in allowed]].sum() == 0
  assert scipy.stats.chisquare(counts[list(allowed)]).statistic < _chi2_bound(len(allowed) - 1)


@pytest.mark.parametrize('allowed', SUBSETS)
@pytest.mark.parametrize('num_cells', CELLS)
def test_fair_group_uses_each_allowed_op_once_per_edge(allowed, num_cells):
  """Every edge (every cell's edge when unshared) of a group is a permutation of allowed."""
  groups = _draws('fair', allowed, num_cells)
  edges = _edges(num_cells)
  assert groups.shape == (NUM_DRAWS, len(allowed)) + edges
  expected = np.broadcast_to(np.asarray(allowed).reshape((1, -1) + (1,) * len(edges)),
                             groups.shape)
  np.testing.assert_array_equal(np.sort(groups, axis=1), expected)


@pytest.mark.parametrize('num_cells', CELLS)
def test_fair_group_permutations_are_random(num_cells):
  """The op member 0 draws at each (cell-)edge is uniform; edges permute independently."""
  allowed = (1, 2, 3)
  first = _draws('fair', allowed, num_cells)[:, 0].reshape(NUM_DRAWS, -1)
  for column in first.T:
    _assert_uniform(column, allowed)
  # One permutation shared by all edges would make every row constant.
  assert (first != first[:, :1]).any(axis=1).mean() > 0.9


def test_unshared_cells_draw_their_own_paths():
  """Unshared topology: the cells of one group almost always hold different paths."""
  groups = _draws('fair', FULL, 3)
  assert (groups[:, :, 0] != groups[:, :, 1]).any(axis=(1, 2)).mean() > 0.95


def test_fair_group_never_draws_masked_ops():
  """A masked subset's fair group never holds a masked op."""
  allowed = space.allowed_ops_from_mask('none,avg_pool_3x3')
  for num_cells in CELLS:
    groups = _draws('fair', allowed, num_cells)
    assert not np.isin(groups, (space.NONE, space.POOL)).any()


@pytest.mark.parametrize('allowed', SUBSETS)
@pytest.mark.parametrize('num_cells', CELLS)
def test_uniform_paths_never_draw_masked_ops_and_are_uniform(allowed, num_cells):
  """Uniform draws use only allowed ops, with per-edge frequencies close to uniform."""
  paths = _draws('uniform', allowed, num_cells)
  assert paths.shape == (NUM_DRAWS,) + _edges(num_cells)
  flat = paths.reshape(NUM_DRAWS, -1)
  for column in flat.T:
    _assert_uniform(column, allowed)
  # Edges draw independently: a path with one op everywhere is rare.
  assert (flat == flat[:, :1]).all(axis=1).mean() < 0.05


@pytest.mark.parametrize('kind,allowed,num_cells', [
    ('fair', FULL, None), ('fair', (1, 2, 3), 3), ('uniform', FULL, None),
    ('uniform', (0, 4), 3)])
def test_reproducible_from_the_key(kind, allowed, num_cells):
  """A key fixes the draw: eager calls repeat it and match the jitted batch; keys differ."""
  draw = sampling.fair_group if kind == 'fair' else sampling.uniform_path
  key = _keys(NUM_DRAWS)[5]
  once = np.asarray(draw(key, allowed, num_cells))
  np.testing.assert_array_equal(once, draw(key, allowed, num_cells))
  batch = _draws(kind, allowed, num_cells)
  np.testing.assert_array_equal(once, batch[5])
  assert sum(not np.array_equal(b, once) for b in batch[:50]) >= 40


def test_eval_path_is_the_arch():
  """Evaluation uses the arch itself as one [6] path for every cell."""
  path = sampling.eval_path(np.array([3, 3, 4, 1, 3, 1]))
  assert path.dtype == jnp.int32 and path.shape == (6,)
  np.testing.assert_array_equal(path, [3, 3, 4, 1, 3, 1])
