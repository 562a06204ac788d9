"""Data parallelism over the visible devices with jax.sharding.

With several devices, every micro-batch is split along its batch axis across a 1-D
'data' mesh; parameters, optimizer state and the data set are replicated. XLA's
SPMD partitioner inserts the all-reduces of BN statistics and gradients, so one
step computes what one device would (up to float summation order).
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def data_mesh() -> Mesh | None:
  """A 1-D mesh over all devices, or None on a single device."""
  devices = jax.devices()
  if len(devices) == 1:
    return None
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh | None) -> None:
  if mesh is not None and batch_size % mesh.size:
    raise ValueError(f'train.batch_size={batch_size} must be divisible by the {mesh.size} '
                     f'devices that share each micro-batch')


def replicate(tree, mesh: Mesh | None):
  """Place every array of tree on all devices of the mesh (no-op without a mesh)."""
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, P()))


def split_batch(x, mesh: Mesh | None, batch_axis: int):
  """Constrain x to be split across devices along batch_axis (inside jit)."""
  if mesh is None:
    return x
  spec = [None] * x.ndim
  spec[batch_axis] = DATA_AXIS
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))
