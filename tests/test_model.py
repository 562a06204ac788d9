"""Tests of spos_jax.model: parameter layout, stand-alone nets, fair groups, ops."""
from flax.traverse_util import flatten_dict, unflatten_dict
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spos_jax import model as model_lib
from spos_jax import sampling, space

from conftest import fast_jit, random_variables

C = 4  # channels of the tiny nets (stages at 4, 8, 16); N = 1 cell per stage
FULL = (0, 1, 2, 3, 4)
KNOWN_ARCH = (3, 3, 4, 1, 3, 1)  # |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+...
DEAD_ARCH = (1, 0, 0, 0, 0, 0)  # skip into node 1, but nothing reaches node 3


def _net(**kwargs):
  return model_lib.SuperNet(**dict(dict(channels=C, cells_per_stage=1), **kwargs))


def _shapes(net):
  """{'params': flat {path: shape}, 'batch_stats': ...} without running the init."""
  path = None if net.fixed_arch is not None else jnp.zeros(6, jnp.int32)
  v = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), path,
                                      train=True))
  return {col: {k: s.shape for k, s in flatten_dict(v[col]).items()} for col in v}


def _count(flat_shapes):
  return sum(int(np.prod(s)) for s in flat_shapes.values())


def _hand_count(arch_ops_per_edge, lt_skip=False, lt_pool=False, c=C, n=1):
  """Params by hand from docs/method.md; arch_ops_per_edge: the ops held by each of the 6 edges."""
  def op(o, w):
    return {space.NONE: 0, space.SKIP: w * w if lt_skip else 0, space.CONV1: w * w,
            space.CONV3: 9 * w * w, space.POOL: w * w if lt_pool else 0}[o]
  total = 27 * c + 2 * c  # stem conv 3x3x3xC, stem BN scale and bias
  for stage in range(3):
    w = c * 2 ** stage
    if stage:  # reduction: conv_a 3x3 (w/2->w), bn_a, conv_b 3x3, bn_b, 1x1 shortcut
      total += 9 * (w // 2) * w + 2 * w + 9 * w * w + 2 * w + (w // 2) * w
    total += n * sum(op(o, w) for ops in arch_ops_per_edge for o in ops)
  return total + 2 * 4 * c + 4 * c * 10 + 10  # head BN, classifier kernel and bias


def _variables_for(net, source, seed=1):
  """Variables of `net` taken by name from `source`; any name source lacks is random."""
  rng = np.random.default_rng(seed)
  out = {}
  for col, shapes in _shapes(net).items():
    src = flatten_dict(source[col])
    flat = {}
    for k, shape in shapes.items():
      if k in src:
        assert src[k].shape == shape, k
        flat[k] = src[k]
      else:
        flat[k] = jnp.asarray(rng.normal(0, 0.3, shape), jnp.float32)
    out[col] = unflatten_dict(flat)
  return out


@fast_jit(static_argnums=0)
def _eval(net, variables, x, path):
  return net.apply(variables, x, path, train=False)


@fast_jit(static_argnums=0)
def _train_forward(net, variables, x, path):
  return net.apply(variables, x, path, train=True, mutable=['batch_stats'])


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
  fa, fb = flatten_dict(a), flatten_dict(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg='/'.join(k))


# ------------------------------------------------------------------ parameter layout


def test_supernet_parameter_count_and_shapes():
  """All ops allowed: every edge holds a 1x1 and a 3x3 conv kernel; count as by hand."""
  shapes = _shapes(_net())
  params = shapes['params']
  assert _count(params) == _hand_count([FULL] * 6) == 25054
  assert params[('stem', 'kernel')] == (3, 3, 3, C)
  assert params[('reduction_1', 'conv_a', 'kernel')] == (3, 3, C, 2 * C)
  assert params[('reduction_2', 'shortcut', 'kernel')] == (1, 1, 2 * C, 4 * C)
  assert params[('classifier', 'kernel')] == (4 * C, 10)
  for stage, w in enumerate((C, 2 * C, 4 * C)):
    for to, frm in space.EDGES:
      edge = (f'cell_{stage}_0', f'edge_{to}_{frm}')
      assert params[edge + ('ops_nor_conv_1x1', 'Conv_0', 'kernel')] == (1, 1, w, w)
      assert params[edge + ('ops_nor_conv_3x3', 'Conv_0', 'kernel')] == (3, 3, w, w)
      # Op BNs have no affine parameters, only running statistics.
      assert shapes['batch_stats'][edge + ('ops_nor_conv_3x3', 'BatchNorm_0', 'mean')] == (w,)
      assert not any(k[:2] == edge and 'BatchNorm_0' in k for k in params)
  # Convs have no bias anywhere; the classifier has one.
  assert [k for k in params if k[-1] == 'bias' and 'bn' not in k[-2]] == [('classifier', 'bias')]


@pytest.mark.parametrize('masked', [(space.CONV3,), (space.CONV1, space.POOL), (space.NONE,)])
def test_masked_supernet_has_no_masked_op_params(masked):
  """A masked op owns no parameters or statistics; the count drops by exactly its size."""
  allowed = tuple(o for o in FULL if o not in masked)
  shapes = _shapes(_net(allowed_ops=allowed))
  assert _count(shapes['params']) == _hand_count([allowed] * 6)
  names = {space.OPS[o] for o in masked}
  for col in shapes.values():
    assert not any(f'ops_{name}' in k for k in col for name in names)
  full = _shapes(_net())
  for col in shapes:  # same names and shapes as the full super-network
    assert all(full[col][k] == s for k, s in shapes[col].items())


@pytest.mark.parametrize('arch', [KNOWN_ARCH, (0,) * 6, (2, 4, 1, 0, 3, 4)])
def test_standalone_params_are_a_subset_of_the_supernet(arch):
  """Stand-alone nets own exactly their arch's ops, with the super-network's names/shapes."""
  full = _shapes(_net())
  alone = _shapes(_net(fixed_arch=arch))
  for col in ('params', 'batch_stats'):
    assert alone[col], col
    for k, shape in alone[col].items():
      assert full[col].get(k) == shape, k
  assert _count(alone['params']) == _hand_count([(o,) for o in arch])
  # Exactly one op per edge: no other op's name appears.
  for stage in range(3):
    for e, (to, frm) in enumerate(space.EDGES):
      held = {k[2] for k in alone['params'] if k[:2] == (f'cell_{stage}_0', f'edge_{to}_{frm}')}
      expected = {f'ops_{space.OPS[arch[e]]}'} if arch[e] in (space.CONV1, space.CONV3) else set()
      assert held == expected


def test_standalone_hand_count_of_known_arch():
  """NB201's best cell at C=4, N=1: 3 conv3x3 edges per cell plus the fixed layers."""
  fixed = 116 + 928 + 3648 + 202  # stem+BN, reduction 1, reduction 2, head BN+classifier
  convs = 3 * 9 * (4 * 4 + 8 * 8 + 16 * 16)
  assert _count(_shapes(_net(fixed_arch=KNOWN_ARCH))['params']) == fixed + convs == 13966
  assert _count(_shapes(_net(fixed_arch=(0,) * 6))['params']) == fixed


# ------------------------------------------------------------ super-net vs stand-alone


@pytest.mark.parametrize('arch', [KNOWN_ARCH, DEAD_ARCH, (0,) * 6, (2, 4, 1, 0, 3, 4),
                                  (1,) * 6])
def test_fixed_path_equals_standalone(supernet, supernet_variables, images, arch):
  """Super-net on path `arch` == stand-alone `arch` with the same params (eval, running stats)."""
  x = images[0]
  alone = _net(fixed_arch=arch)
  alone_vars = {col: unflatten_dict({k: flatten_dict(supernet_variables[col])[k]
                                     for k in shapes})
                for col, shapes in _shapes(alone).items()}
  got = _eval(supernet, supernet_variables, x, jnp.asarray(arch, jnp.int32))
  want = _eval(alone, alone_vars, x, None)
  assert got.shape == (4, 10)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if arch == (0,) * 6:  # all cells output zeros: the logits cannot depend on the image
    np.testing.assert_allclose(got, np.broadcast_to(got[:1], got.shape), atol=1e-6)


def test_paths_change_the_output(supernet, supernet_variables, images):
  """Different paths give different logits (the path really selects ops)."""
  a = _eval(supernet, supernet_variables, images[0], jnp.asarray(KNOWN_ARCH, jnp.int32))
  b = _eval(supernet, supernet_variables, images[0], jnp.asarray((2, 4, 1, 0, 3, 4), jnp.int32))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


# -------------------------------------------------- fair group vs sequential single paths


GROUP_CASES = {
    'shared': dict(allowed=FULL, num_cells=None, lt=False),
    'unshared': dict(allowed=FULL, num_cells=3, lt=False),
    'masked_k3': dict(allowed=(1, 2, 3), num_cells=None, lt=False),
    'lt_k4_unshared': dict(allowed=(1, 2, 3, 4), num_cells=3, lt=True),
}


@pytest.mark.parametrize('case', list(GROUP_CASES))
def test_fair_group_equals_sequential_single_paths(supernet_variables, images, case):
  """Group forward == K single-path train forwards in member order: logits and running stats."""
  spec = GROUP_CASES[case]
  allowed = spec['allowed']
  k = len(allowed)
  net = _net(allowed_ops=allowed, lt_skip=spec['lt'], lt_pool=spec['lt'])
  variables = _variables_for(net, supernet_variables)
  paths = sampling.fair_group(jax.random.PRNGKey(3), allowed, spec['num_cells'])
  x = images[:k]
  logits, new_vars = _train_forward(net, variables, x, paths)
  assert logits.shape == (k, 4, 10)
  v = variables
  for member in range(k):
    single, updated = _train_forward(net, v, x[member], paths[member])
    np.testing.assert_allclose(logits[member], single, rtol=1e-5, atol=1e-5,
                               err_msg=f'member {member}')
    v = {'params': v['params'], 'batch_stats': updated['batch_stats']}
  _assert_trees_close(new_vars['batch_stats'], v['batch_stats'])
  # The shared stem BN saw K updates: its stats moved away from the start.
  start = flatten_dict(variables['batch_stats'])[('stem_bn', 'mean')]
  assert np.abs(flatten_dict(new_vars['batch_stats'])[('stem_bn', 'mean')] - start).max() > 1e-3


def test_fair_group_needs_one_member_per_op(supernet, supernet_variables, images):
  """A group of the wrong size is refused rather than silently mis-assigned."""
  paths = sampling.fair_group(jax.random.PRNGKey(0), FULL)
  with pytest.raises(ValueError, match='one member per allowed op'):
    supernet.apply(supernet_variables, images[:4], paths[:4], train=True, mutable=['batch_stats'])


# --------------------------------------------------------------- ops: LT, pool, nodes


@pytest.mark.parametrize('flag,op', [('lt_skip', 'skip_connect'), ('lt_pool', 'avg_pool_3x3')])
def test_linear_transformer_adds_a_1x1_kernel_per_edge(flag, op):
  """LT adds one bias-free [1, 1, w, w] kernel (no BN) to every skip (pool) edge of every cell."""
  base = _shapes(_net())
  lt = _shapes(_net(**{flag: True}))
  added = {k: s for k, s in lt['params'].items() if k not in base['params']}
  assert len(added) == 6 * 3
  for stage, w in enumerate((C, 2 * C, 4 * C)):
    for to, frm in space.EDGES:
      key = (f'cell_{stage}_0', f'edge_{to}_{frm}', f'ops_{op}', 'Conv_0', 'kernel')
      assert added[key] == (1, 1, w, w)
  assert _count(lt['params']) - _count(base['params']) == 6 * (C * C + 4 * C * C + 16 * C * C)
  assert _count(lt['params']) == _hand_count([FULL] * 6, **{flag: True})
  assert lt['batch_stats'] == base['batch_stats']


def _avg_pool_reference(x, exclude_padding):
  """3x3 mean, stride 1, padding 1, in numpy; divisor 9 or the in-image count."""
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (1, 1), (1, 1), (0, 0)))
  total = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  count = sum(ones[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  return total / (count if exclude_padding else 9.0)


def _op(module, x):
  variables = module.init(jax.random.PRNGKey(0), x, True)
  return module.apply(variables, x, True), variables


def test_skip_op_identity_and_linear_transformer():
  """Plain skip is the identity; with LT it is x @ W of its 1x1 kernel, no longer x."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 4))
  y, variables = _op(model_lib.SkipOp(4, False, jnp.float32), x)
  np.testing.assert_array_equal(y, x)
  assert not variables
  y, variables = _op(model_lib.SkipOp(4, True, jnp.float32), x)
  kernel = variables['params']['Conv_0']['kernel']
  assert kernel.shape == (1, 1, 4, 4) and set(variables) == {'params'}
  np.testing.assert_allclose(y, jnp.einsum('bhwc,cd->bhwd', x, kernel[0, 0]), rtol=1e-5,
                             atol=1e-6)
  assert np.abs(np.asarray(y - x)).max() > 1e-2


def test_pool_op_linear_transformer():
  """With LT, pool is the 3x3 average followed by its bias-free 1x1 conv."""
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 4))
  plain, variables = _op(model_lib.PoolOp(4, True, False, jnp.float32), x)
  assert not variables
  y, variables = _op(model_lib.PoolOp(4, True, True, jnp.float32), x)
  kernel = variables['params']['Conv_0']['kernel']
  assert kernel.shape == (1, 1, 4, 4) and set(variables) == {'params'}
  np.testing.assert_allclose(y, jnp.einsum('bhwc,cd->bhwd', plain, kernel[0, 0]), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize('exclude_padding', [True, False])
def test_pool_divisor(exclude_padding):
  """Excluding padding keeps a constant image constant; including it shrinks the border."""
  pool = model_lib.PoolOp(2, exclude_padding, False, jnp.float32)
  ones = jnp.ones((1, 5, 5, 2))
  y = np.asarray(pool.apply({}, ones, True))
  if exclude_padding:
    np.testing.assert_allclose(y, 1.0, rtol=1e-6)
  else:
    np.testing.assert_allclose(y[0, 2, 2], 1.0, rtol=1e-6)  # interior
    np.testing.assert_allclose(y[0, 0, 0], 4 / 9, rtol=1e-6)  # corner
    np.testing.assert_allclose(y[0, 0, 2], 6 / 9, rtol=1e-6)  # edge
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 7, 3))
  pool = model_lib.PoolOp(3, exclude_padding, False, jnp.float32)
  np.testing.assert_allclose(pool.apply({}, x, True), _avg_pool_reference(x, exclude_padding),
                             rtol=1e-5, atol=1e-6)


def test_supernet_pool_padding_option_changes_output(supernet, supernet_variables, images):
  """The padding option reaches the network: an all-pool path gives other logits."""
  path = jnp.full(6, space.POOL, jnp.int32)
  a = _eval(supernet, supernet_variables, images[0], path)
  b = _eval(_net(pool_exclude_padding=False), supernet_variables, images[0], path)
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4


def _cell(reduction, arch):
  return model_lib.Cell(4, None, arch, False, False, True, reduction, 0.9, False, jnp.float32)


def test_node_reduction_sum_and_mean():
  """All-skip cell: sum gives 4x at node 3 (1, 2, 4 paths), mean gives x."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 4))
  skip = (space.SKIP,) * 6
  np.testing.assert_allclose(_cell('sum', skip).apply({}, x, None, False, False), 4 * x,
                             rtol=1e-6)
  np.testing.assert_allclose(_cell('mean', skip).apply({}, x, None, False, False), x, rtol=1e-6)
  # Mean divides by all incoming edges, 'none' ones included: node 3 = (x + 0 + x) / 3.
  arch = (space.SKIP, space.NONE, space.SKIP, space.SKIP, space.NONE, space.SKIP)
  np.testing.assert_allclose(_cell('mean', arch).apply({}, x, None, False, False),
                             (x + x / 2) / 3, rtol=1e-6)


def test_node_reduction_changes_supernet_output(supernet, supernet_variables, images):
  """'mean' and 'sum' give different logits for the same params and path."""
  path = jnp.asarray(KNOWN_ARCH, jnp.int32)
  a = _eval(supernet, supernet_variables, images[0], path)
  b = _eval(_net(node_reduction='mean'), supernet_variables, images[0], path)
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4


def test_bn_capture_stores_per_member_stats_in_group_mode(supernet_variables, images):
  """bn_capture in a fair group: shared BNs hold [K, C] batch stats, one row per member."""
  net = _net(bn_capture=True)
  paths = sampling.fair_group(jax.random.PRNGKey(4), FULL)
  _, new_vars = _train_forward(net, supernet_variables, images, paths)
  stats = flatten_dict(new_vars['batch_stats'])
  assert stats[('stem_bn', 'mean')].shape == (5, C)
  assert stats[('stem_bn', 'var')].shape == (5, C)
  assert stats[('reduction_1', 'bn_a', 'mean')].shape == (5, 2 * C)
  assert stats[('reduction_2', 'bn_b', 'var')].shape == (5, 4 * C)
  assert stats[('head_bn', 'mean')].shape == (5, 4 * C)
  # An op BN sees one member, so it keeps [C].
  assert stats[('cell_0_0', 'edge_1_0', 'ops_nor_conv_3x3', 'BatchNorm_0', 'mean')].shape == (C,)
  # Row k is member k's own batch statistics of the stem conv output.
  kernel = supernet_variables['params']['stem']['kernel']
  for k in range(5):
    h = jax.lax.conv_general_dilated(images[k], kernel, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(stats[('stem_bn', 'mean')][k], h.mean((0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(stats[('stem_bn', 'var')][k], h.var((0, 1, 2), ddof=1),
                               rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(stats[('stem_bn', 'mean')][0] - stats[('stem_bn', 'mean')][1])).max() > 0


def test_bn_capture_stores_the_unbiased_variance():
  """Recalibration keeps PyTorch's (unbiased) variance, as training's running update does.

  Values 1, 2, 3, 4 in one channel: mean 2.5, biased variance 1.25, unbiased 5/3.
  """
  x = jnp.asarray([1., 2., 3., 4.]).reshape(4, 1, 1, 1)
  bn = model_lib.BatchNorm(affine=False, capture=True)
  variables = bn.init(jax.random.PRNGKey(0), x, train=True)
  _, new = bn.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(new['batch_stats']['mean'], [2.5], rtol=1e-6)
  np.testing.assert_allclose(new['batch_stats']['var'], [5.0 / 3.0], rtol=1e-6)
  # The running update (momentum 0.9 from var 1) takes the same unbiased value.
  _, running = model_lib.BatchNorm(affine=False).apply(variables, x, train=True,
                                                       mutable=['batch_stats'])
  np.testing.assert_allclose(running['batch_stats']['var'], [0.9 + 0.1 * 5.0 / 3.0], rtol=1e-6)


# -------------------------------------------------------------- permutations, scanned cells


def test_permute_members_gradient_is_the_inverse_gather():
  """The custom backward of permute_members equals autodiff of the plain gather."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(5, 3, 2)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(5, 3, 2)), jnp.float32)
  for order in ([0, 1, 2, 3, 4], [3, 0, 4, 2, 1], [4, 3, 2, 1, 0]):
    order = jnp.asarray(order)
    np.testing.assert_array_equal(model_lib.permute_members(x, order), x[order])
    fast = jax.grad(lambda v: (model_lib.permute_members(v, order) * weights).sum())(x)
    plain = jax.grad(lambda v: (v[order] * weights).sum())(x)
    np.testing.assert_array_equal(fast, plain)


@pytest.mark.parametrize('num_cells', [None, 6], ids=['shared', 'unshared'])
def test_scanned_cells_equal_unrolled_cells(images, num_cells):
  """model.scan_cells: same logits, BN updates and gradients as the unrolled cells."""
  unrolled, scanned = _net(cells_per_stage=2), _net(cells_per_stage=2, scan_cells=True)
  variables = random_variables(unrolled)
  stacked = {col: model_lib.stack_cells(v, 2) for col, v in variables.items()}
  assert jax.tree.structure(stacked) == jax.tree.structure(random_variables(scanned))
  _assert_trees_close(
      {col: model_lib.unstack_cells(v, 2) for col, v in stacked.items()}, variables, 0, 0)
  paths = sampling.fair_group(jax.random.PRNGKey(5), FULL, num_cells)

  def loss_and_stats(net, v):
    def loss(params):
      logits, new = net.apply({'params': params, 'batch_stats': v['batch_stats']}, images,
                              paths, train=True, mutable=['batch_stats'])
      return jnp.square(logits).mean(), (logits, new['batch_stats'])
    return fast_jit(jax.grad(loss, has_aux=True))(v['params'])

  grads, (logits, stats) = loss_and_stats(unrolled, variables)
  scanned_grads, (scanned_logits, scanned_stats) = loss_and_stats(scanned, stacked)
  np.testing.assert_allclose(scanned_logits, logits, rtol=1e-5, atol=1e-5)
  _assert_trees_close(model_lib.unstack_cells(scanned_stats, 2), stats)
  _assert_trees_close(model_lib.unstack_cells(scanned_grads, 2), grads, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(_eval(scanned, stacked, images[0], paths[0]),
                             _eval(unrolled, variables, images[0], paths[0]),
                             rtol=1e-5, atol=1e-5)
