"""Path samplers (docs/method.md, 'Path sampling'): pure functions of a PRNG key, jit-able.

A path holds op indices (space.OPS order): [6] with shared topology, [num_cells, 6]
with unshared topology. Strictly fair sampling returns a whole group [K, ...] whose
every edge column is a permutation of the K = |allowed| ops.
"""
from __future__ import annotations

from typing import Sequence

import math

import jax
import jax.numpy as jnp

from spos_jax import space

METHODS = ('fair', 'uniform')
TOPOLOGIES = ('shared', 'unshared')


def _edge_shape(num_cells: int | None) -> tuple[int, ...]:
  return (space.NUM_EDGES,) if num_cells is None else (num_cells, space.NUM_EDGES)


def fair_group(key, allowed: Sequence[int], num_cells: int | None = None) -> jax.Array:
  """[K, *edges] paths; each edge (or cell-edge) walks a fresh permutation of allowed.

  num_cells=None is shared topology; an int draws one permutation per cell-edge.
  """
  allowed = jnp.asarray(allowed, jnp.int32)
  edges = _edge_shape(num_cells)
  keys = jax.random.split(key, math.prod(edges))
  perms = jax.vmap(lambda k: jax.random.permutation(k, allowed))(keys)  # [E, K]
  return perms.T.reshape((len(allowed),) + edges)


def uniform_path(key, allowed: Sequence[int], num_cells: int | None = None) -> jax.Array:
  """One path; every edge (or cell-edge) draws an allowed op uniformly."""
  allowed = jnp.asarray(allowed, jnp.int32)
  return jax.random.choice(key, allowed, _edge_shape(num_cells))


def eval_path(arch) -> jax.Array:
  """Evaluation always uses one choice for every cell: the arch itself, [6]."""
  return jnp.asarray(arch, jnp.int32)
