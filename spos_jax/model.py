"""The NB201 single-path super-network as Flax modules.

What it computes: docs/method.md, 'Network and sizes' and 'Operations'.

One module serves four uses, with identical parameter names:
  * single path: images [B, H, W, 3] and a path [6] (shared topology) or
    [num_cells, 6] (unshared); each edge runs its sampled op through `nn.switch`.
    This is the straightforward reference.
  * fair group: images [K, B, H, W, 3], K = |allowed ops|, and a path [K, 6] or
    [K, num_cells, 6] whose every edge column is a permutation of the allowed ops.
    Member k is micro-batch k on path k. Every op of an edge runs exactly once, on
    the member that drew it, so the whole strictly fair group is one static graph
    with no conditionals and no wasted FLOPs. Shared layers (stem, reduction
    blocks, head) normalise each member with its own batch statistics, so the
    result equals K separate single-path forwards.
  * stand-alone: `fixed_arch` set; each edge owns only its one op and `path` is
    unused. Its parameters are a subset of the super-network's.
  * split (few-shot sub-network, fewshot.py): `split_edge` set; that edge of every
    cell runs one op `split_op` on all members (`Edge.same`) and the other five
    edges form the fair group. Same parameters as the super-network.
With `scan_cells` the N identical cells of a stage run as one `nn.scan` (a smaller
graph to compile); their variables carry a leading [N] axis (`stack_cells`).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spos_jax import space

# PyTorch's default conv/linear init (kaiming_uniform, a=sqrt(5)) as in the paper's code.
torch_default_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def _broadcast_stat(stat: jax.Array) -> jax.Array:
  """Statistics [..., C] -> [..., 1, 1, 1, C], to meet features [..., B, H, W, C]."""
  return stat.reshape(stat.shape[:-1] + (1, 1, 1) + stat.shape[-1:])


class BatchNorm(nn.Module):
  """Batch norm over [*group, B, H, W, C] with statistics per group member.

  Running statistics follow PyTorch's update r <- m r + (1 - m) batch_stat (the
  running variance takes the unbiased batch variance, as PyTorch's does). With a
  group axis of K members the K updates are applied in member order, as K
  sequential single-path steps would (closed form, one op). Statistics are fp32.
  `capture` replaces the running statistics by this batch's (per member; the
  unbiased variance, as the running update uses), which BN recalibration averages
  over batches.
  """
  affine: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  capture: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if train:
      axes = (-4, -3, -2)
      # One pass over x (E[x^2] - E[x]^2, as flax.linen.BatchNorm): both reductions fuse.
      mean = x32.mean(axes)
      var = jnp.maximum(jnp.square(x32).mean(axes) - jnp.square(mean), 0.0)
      if not self.is_initializing():
        # Stored variances are unbiased, as PyTorch's BN keeps them (and SPOS's
        # recalibration, which uses it); the batch itself is normalised with the biased one.
        count = x.shape[-4] * x.shape[-3] * x.shape[-2]
        unbiased_var = var * count / max(count - 1, 1)
        if self.capture:
          ra_mean.value, ra_var.value = mean, unbiased_var
        else:
          ra_mean.value = self._sequential_ema(ra_mean.value, mean)
          ra_var.value = self._sequential_ema(ra_var.value, unbiased_var)
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x32 - _broadcast_stat(mean)) * jax.lax.rsqrt(
        _broadcast_stat(var) + self.epsilon)
    if self.affine:
      scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
      bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
      y = y * scale + bias
    return y.astype(self.dtype)

  def _sequential_ema(self, running, batch):
    """Apply r <- m r + (1-m) b for each member's b in order, in closed form."""
    if batch.ndim == 1:
      return self.momentum * running + (1 - self.momentum) * batch
    batch = batch.reshape(-1, batch.shape[-1])
    k = batch.shape[0]
    weights = (1 - self.momentum) * self.momentum ** jnp.arange(k - 1, -1, -1)
    return self.momentum ** k * running + jnp.einsum('k,kc->c', weights, batch)


def _flat_leading(fn, x, keep: int = 3):
  """Apply fn to x with all but the last `keep` axes merged into one batch axis."""
  lead = x.shape[:-keep]
  y = fn(x.reshape((-1,) + x.shape[-keep:]))
  return y.reshape(lead + y.shape[1:])


def _conv(features, kernel, strides=1, name=None, dtype=jnp.float32):
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=((kernel // 2, kernel // 2),) * 2, use_bias=False,
                 kernel_init=torch_default_init, dtype=dtype, name=name)


class ConvOp(nn.Module):
  """ReLU -> conv (no bias, same padding) -> BN without affine parameters."""
  features: int
  kernel: int
  bn_momentum: float
  bn_capture: bool
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    x = _conv(self.features, self.kernel, dtype=self.dtype)(nn.relu(x))
    return BatchNorm(affine=False, momentum=self.bn_momentum, capture=self.bn_capture,
                     dtype=self.dtype)(x, train)


class PoolOp(nn.Module):
  """3x3 average pool, stride 1; with a Linear Transformer a 1x1 conv follows."""
  features: int
  exclude_padding: bool
  linear_transformer: bool
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    # Flax pools only [B, H, W, C] with explicit padding; a split edge passes [K, B, ...].
    y = _flat_leading(lambda h: nn.avg_pool(h, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                                            count_include_pad=not self.exclude_padding), x)
    y = y.astype(x.dtype)  # the padding-excluding divisor is fp32; keep the compute dtype
    if self.linear_transformer:
      y = _conv(self.features, 1, dtype=self.dtype)(y)
    return y


class SkipOp(nn.Module):
  """Identity; with a Linear Transformer a bias-free 1x1 conv (no BN)."""
  features: int
  linear_transformer: bool
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    if self.linear_transformer:
      return _conv(self.features, 1, dtype=self.dtype)(x)
    return x


class ZeroOp(nn.Module):
  """The 'none' op: zeros, so nothing flows back through this edge."""

  def __call__(self, x, train: bool):
    del train
    return jnp.zeros_like(x)


class Edge(nn.Module):
  """One cell edge holding its candidate ops (or only the fixed one)."""
  features: int
  op_indices: tuple[int, ...]
  lt_skip: bool
  lt_pool: bool
  pool_exclude_padding: bool
  bn_momentum: float
  bn_capture: bool
  dtype: Any

  def setup(self):
    def make(op):
      if op == space.NONE:
        return ZeroOp()
      if op == space.SKIP:
        return SkipOp(self.features, self.lt_skip, self.dtype)
      if op == space.POOL:
        return PoolOp(self.features, self.pool_exclude_padding, self.lt_pool, self.dtype)
      return ConvOp(self.features, 1 if op == space.CONV1 else 3, self.bn_momentum,
                    self.bn_capture, self.dtype)
    self.ops = {space.OPS[op]: make(op) for op in self.op_indices}

  def _branch(self, j, train: bool):
    # `train` is bound here, not passed as an operand: nn.switch would trace it.
    return lambda mdl, x: mdl.ops[space.OPS[mdl.op_indices[j]]](x, train)

  def fixed(self, x, train: bool):
    (op,) = self.op_indices
    return self.ops[space.OPS[op]](x, train)

  def single(self, x, op, train: bool):
    """x [B, H, W, C], op a traced scalar op index."""
    branches = [self._branch(j, train) for j in range(len(self.op_indices))]
    if self.is_initializing():  # create every op's variables
      return sum(b(self, x) for b in branches)
    position = _op_positions(self.op_indices)[op]
    return nn.switch(position, branches, self, x)

  def same(self, x, op, train: bool):
    """x [K, B, H, W, C], every member on the same op (a split edge, few-shot).

    A Python int op runs that op alone (static); a traced scalar selects it with
    `nn.switch`, a real conditional as long as op is not batched (under `vmap`
    over sub-networks it becomes a select that computes every op).
    """
    if isinstance(op, (int, np.integer)) and not self.is_initializing():
      if op not in self.op_indices:
        raise ValueError(f'split op {space.OPS[op]} is not an allowed op of this edge')
      return self.ops[space.OPS[int(op)]](x, train)
    return self.single(x, op, train)

  def group(self, x, ops, train: bool):
    """x [K, B, H, W, C]; ops [K] a permutation of op_indices (member k's op)."""
    if x.shape[0] != len(self.op_indices):
      raise ValueError(f'a fair group has one member per allowed op: '
                       f'{len(self.op_indices)}, got {x.shape[0]}')
    position = _op_positions(self.op_indices)[ops]  # member k drew op op_indices[position[k]]
    by_op = permute_members(x, jnp.argsort(position))  # row j: the member that drew op j
    outs = jnp.stack([self._branch(j, train)(self, by_op[j])
                      for j in range(len(self.op_indices))])
    return permute_members(outs, position)  # back to member order


@jax.custom_vjp
def permute_members(x, order):
  """x[order] along the leading axis; `order` must be a permutation.

  Autodiff would transpose the gather into a scatter-add; a permutation's transpose
  is the gather by its inverse, which is what the backward pass runs instead.
  """
  return x.at[order].get(mode='promise_in_bounds', unique_indices=True)


def _permute_members_fwd(x, order):
  return permute_members(x, order), order


def _permute_members_bwd(order, grad):
  return permute_members(grad, jnp.argsort(order)), None


permute_members.defvjp(_permute_members_fwd, _permute_members_bwd)


def _op_positions(op_indices: Sequence[int]) -> jax.Array:
  """Lookup table op index -> position in op_indices (0 for ops not present)."""
  table = np.zeros(space.NUM_OPS, np.int32)
  table[list(op_indices)] = np.arange(len(op_indices))
  return jnp.asarray(table)


class Cell(nn.Module):
  """NB201 cell: node j = sum (or mean) over i < j of edge_{j<-i}(node i)."""
  features: int
  op_indices: tuple[int, ...] | None  # allowed ops; None when fixed_arch is set
  fixed_arch: tuple[int, ...] | None
  lt_skip: bool
  lt_pool: bool
  pool_exclude_padding: bool
  node_reduction: str
  bn_momentum: float
  bn_capture: bool
  dtype: Any
  split_edge: int | None = None  # few-shot: this edge runs split_op, not the path's op

  @nn.compact
  def __call__(self, x, path, train: bool, grouped: bool, split_op=None):
    nodes = [x]
    for node in range(1, space.NUM_NODES):
      incoming = []
      for e, (to, frm) in enumerate(space.EDGES):
        if to != node:
          continue
        ops = (self.fixed_arch[e],) if self.fixed_arch is not None else self.op_indices
        edge = Edge(self.features, tuple(ops), self.lt_skip, self.lt_pool,
                    self.pool_exclude_padding, self.bn_momentum, self.bn_capture,
                    self.dtype, name=f'edge_{to}_{frm}')
        if self.fixed_arch is not None:
          incoming.append(edge.fixed(nodes[frm], train))
        elif e == self.split_edge and split_op is not None:
          incoming.append(edge.same(nodes[frm], split_op, train))
        elif grouped:
          incoming.append(edge.group(nodes[frm], path[..., e], train))
        else:
          incoming.append(edge.single(nodes[frm], path[e], train))
      total = sum(incoming)
      nodes.append(total / len(incoming) if self.node_reduction == 'mean' else total)
    return nodes[-1]


class ScanStep(Cell):
  """One cell as an `nn.scan` body: (x, path) -> (next x, None); train, grouped fixed."""
  train: bool = False
  grouped: bool = False

  def __call__(self, x, path, split_op=None):  # pylint: disable=arguments-differ
    return super().__call__(x, path, self.train, self.grouped, split_op), None


class ReductionBlock(nn.Module):
  """ResNet basic block, stride 2; shortcut 2x2 avg-pool then 1x1 conv."""
  features: int
  bn_momentum: float
  bn_capture: bool
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: BatchNorm(affine=True, momentum=self.bn_momentum,
                                capture=self.bn_capture, dtype=self.dtype, name=name)
    conv_a = _conv(self.features, 3, strides=2, name='conv_a', dtype=self.dtype)
    conv_b = _conv(self.features, 3, name='conv_b', dtype=self.dtype)
    y = _flat_leading(conv_a, nn.relu(x))
    y = nn.relu(bn('bn_a')(y, train))
    y = bn('bn_b')(_flat_leading(conv_b, y), train)
    shortcut_conv = _conv(self.features, 1, name='shortcut', dtype=self.dtype)
    shortcut = _flat_leading(
        lambda h: shortcut_conv(nn.avg_pool(h, (2, 2), strides=(2, 2))), x)
    return y + shortcut


class SuperNet(nn.Module):
  """Stem, 3 stages of N cells with 2 reduction blocks between, head."""
  channels: int = 32
  cells_per_stage: int = 2
  allowed_ops: tuple[int, ...] = tuple(range(space.NUM_OPS))
  lt_skip: bool = False
  lt_pool: bool = False
  pool_exclude_padding: bool = True
  node_reduction: str = 'sum'
  num_classes: int = 10
  fixed_arch: tuple[int, ...] | None = None
  bn_momentum: float = 0.9
  bn_capture: bool = False
  scan_cells: bool = False
  dtype: Any = jnp.float32
  # Few-shot sub-networks (fewshot.py): the edge every member of a group shares, and
  # its op when static (scoring one sub-network); else the call's split_op (traced).
  split_edge: int | None = None
  split_op: int | None = None

  @property
  def num_cells(self) -> int:
    return 3 * self.cells_per_stage

  @nn.compact
  def __call__(self, images, path=None, *, train: bool, split_op=None):
    """Logits [B, classes] (single path, stand-alone) or [K, B, classes] (fair group).

    With split_edge set, edge split_edge of every cell runs split_op (a traced
    scalar, else the split_op attribute) on all members and ignores the path's op
    there: the other edges form the fair group, as in a few-shot sub-network.
    """
    grouped = images.ndim == 5
    split_op = self.split_op if split_op is None else split_op
    if self.split_edge is not None and split_op is None and grouped:
      raise ValueError('a fair group on a split super-network needs split_op')
    if self.fixed_arch is None and path is None:
      raise ValueError('the super-network needs a path (or set fixed_arch)')
    if self.fixed_arch is not None and grouped:
      raise ValueError('a stand-alone network (fixed_arch) takes images [B, H, W, 3]')
    unshared = path is not None and path.ndim == (3 if grouped else 2)
    bn = lambda name: BatchNorm(affine=True, momentum=self.bn_momentum,
                                capture=self.bn_capture, dtype=self.dtype, name=name)
    x = images.astype(self.dtype)
    x = bn('stem_bn')(_flat_leading(_conv(self.channels, 3, name='stem', dtype=self.dtype), x),
                      train)
    for stage in range(3):
      features = self.channels * 2 ** stage
      if stage > 0:
        x = ReductionBlock(features, self.bn_momentum, self.bn_capture, self.dtype,
                           name=f'reduction_{stage}')(x, train)
      cell_args = (features, None if self.fixed_arch else tuple(self.allowed_ops),
                   self.fixed_arch, self.lt_skip, self.lt_pool, self.pool_exclude_padding,
                   self.node_reduction, self.bn_momentum, self.bn_capture, self.dtype,
                   self.split_edge)
      if self.scan_cells:
        x = self._scanned_stage(cell_args, stage, x, path, unshared, train, grouped, split_op)
        continue
      first = stage * self.cells_per_stage
      for i in range(self.cells_per_stage):
        cell_path = None
        if path is not None:
          cell_path = path[..., first + i, :] if unshared else path
        x = Cell(*cell_args, name=f'cell_{stage}_{i}')(x, cell_path, train, grouped, split_op)
    x = nn.relu(bn('head_bn')(x, train))
    x = x.astype(jnp.float32).mean(axis=(-3, -2))
    return nn.Dense(self.num_classes, kernel_init=torch_default_init, name='classifier')(x)

  def _scanned_stage(self, cell_args, stage, x, path, unshared, train, grouped, split_op):
    """The N identical cells of a stage as one `nn.scan` (one cell in the graph).

    Variables get a leading [N] axis (`stack_cells` converts from the unrolled
    layout); the paths are scanned along with them.
    """
    n = self.cells_per_stage
    if path is None:  # fixed_arch: the cells take no path
      cell_paths = jnp.zeros((n, space.NUM_EDGES), jnp.int32)
    elif unshared:
      first = stage * n
      cell_paths = jnp.moveaxis(path[..., first:first + n, :], -2, 0)
    else:
      cell_paths = jnp.broadcast_to(path, (n,) + path.shape)
    split = () if split_op is None else (split_op,)  # the same op in every cell
    scan = nn.scan(ScanStep, variable_axes={'params': 0, 'batch_stats': 0},
                   split_rngs={'params': True}, in_axes=(0, nn.broadcast) if split else 0,
                   length=n)
    x, _ = scan(*cell_args, train=train, grouped=grouped, name=f'cells_{stage}')(
        x, cell_paths, *split)
    return x


def stack_cells(variables, cells_per_stage: int):
  """Unrolled variables (cell_{s}_{i}) -> the scan_cells layout (cells_{s}, axis [N])."""
  out = {k: v for k, v in variables.items() if not k.startswith('cell_')}
  for stage in range(3):
    cells = [variables[f'cell_{stage}_{i}'] for i in range(cells_per_stage)]
    out[f'cells_{stage}'] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *cells)
  return out


def unstack_cells(variables, cells_per_stage: int):
  """The scan_cells layout -> unrolled variables (the inverse of stack_cells)."""
  out = {k: v for k, v in variables.items() if not k.startswith('cells_')}
  for stage in range(3):
    for i in range(cells_per_stage):
      out[f'cell_{stage}_{i}'] = jax.tree.map(lambda leaf: leaf[i], variables[f'cells_{stage}'])
  return out
