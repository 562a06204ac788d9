"""Zero-cost proxies: the batched scores equal a straightforward computation per arch.

The reference builds each arch's stand-alone network (SuperNet with fixed_arch) with
the super-network's initial weights restricted to that arch, and differentiates it
with plain jax.grad, one arch at a time; synflow's reference runs in float64 with
jax_enable_x64 switched on for the test.
"""
import os
import signal
import threading

import flax.linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spos_jax import model as model_lib
from spos_jax import preemption
from spos_jax import proxies
from spos_jax import space

from conftest import fast_jit

SEED = 3
# Two live archs with every op kind, a dead arch whose convs feed nothing, one more live.
ARCHS = np.array([[3, 1, 2, 4, 0, 3],
                  [1, 4, 3, 2, 3, 1],
                  [3, 2, 1, 0, 0, 0],
                  [2, 0, 1, 3, 4, 2]], np.int32)
DEAD_ROW = 2


@pytest.fixture(scope='module')
def batch():
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32)
  return images, jnp.asarray(rng.integers(0, 10, 8), jnp.int32)


@pytest.fixture(scope='module')
def init_variables(supernet):
  return proxies.initial_variables(supernet, SEED)


@pytest.fixture(scope='module')
def batched(supernet, batch, init_variables):
  # 3 live archs at 2 per call: two calls, the second padded.
  return proxies.score_archs(supernet, ARCHS, *batch, seed=SEED, archs_per_call=2,
                             variables=init_variables)


# ---------------------------------------------------------------- reference


def standalone(supernet, variables, arch):
  """The stand-alone network of `arch` and its variables: the super-net's subset."""
  net = supernet.clone(fixed_arch=tuple(int(o) for o in arch))
  shapes = jax.eval_shape(lambda: net.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
  full = flatten_dict(variables)
  return net, unflatten_dict({k: full[k] for k in flatten_dict(shapes)})


def kernels(tree):
  return [v for k, v in flatten_dict(tree).items() if k[-1] == 'kernel']


def reference_gradient_proxies(net, variables, images, labels):
  """snip, grad_norm, jacob_cov of one stand-alone network, written out plainly."""
  def logits_of(params, x):
    out, _ = net.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                       train=True, mutable=['batch_stats'])
    return out

  def loss(params):
    return optax.softmax_cross_entropy_with_integer_labels(
        logits_of(params, images), labels).mean()

  params = variables['params']
  grads, jac = fast_jit(lambda p, x: (jax.grad(loss)(p), jax.grad(
      lambda x: logits_of(p, x).sum())(x)))(params, images)
  snip = sum(float(jnp.abs(w * g).sum()) for w, g in zip(kernels(params), kernels(grads)))
  grad_norm = sum(float(jnp.linalg.norm(g.ravel())) for g in kernels(grads))
  with np.errstate(invalid='ignore', divide='ignore'):
    corr = np.corrcoef(np.asarray(jac, np.float64).reshape(len(images), -1))
  if not np.isfinite(corr).all():
    return snip, grad_norm, np.nan
  v, _ = np.linalg.eig(corr)
  k = 1e-5
  return snip, grad_norm, float(-np.sum(np.log(v + k) + 1. / (v + k)).real)


def without_bn_except_reductions(next_fun, args, kwargs, context):
  """zero-cost-nas's bn=False NB201 copy: only the reduction blocks keep their BN."""
  module = context.module
  if (isinstance(module, model_lib.BatchNorm) and context.method_name == '__call__'
      and not isinstance(module.parent, model_lib.ReductionBlock)):
    return args[0]
  return next_fun(*args, **kwargs)


def reference_synflow(net, variables):
  """sum |w * dR/dw|, R = sum(logits) of abs params on one ones image, float64."""
  with jax.enable_x64(True):
    net64 = net.clone(dtype=jnp.float64)
    params = jax.tree.map(lambda p: jnp.abs(p.astype(jnp.float64)), variables['params'])

    def total(p):
      with nn.intercept_methods(without_bn_except_reductions):
        out, _ = net64.apply({'params': p, 'batch_stats': variables['batch_stats']},
                             jnp.ones((1, 32, 32, 3), jnp.float64), train=True,
                             mutable=['batch_stats'])
      return out.sum()
    grads = fast_jit(jax.grad(total))(params)
    return sum(float(jnp.abs(w * g).sum()) for w, g in zip(kernels(params), kernels(grads)))


@pytest.fixture(scope='module')
def reference(supernet, batch, init_variables):
  out = {name: [] for name in proxies.PROXY_NAMES}
  for arch in ARCHS:
    net, variables = standalone(supernet, init_variables, arch)
    snip, grad_norm, jacob_cov = reference_gradient_proxies(net, variables, *batch)
    out['snip'].append(snip)
    out['grad_norm'].append(grad_norm)
    out['jacob_cov'].append(jacob_cov)
    out['synflow'].append(reference_synflow(net, variables))
  return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------- hand-worked values


def test_synflow_of_a_linear_chain_is_worked_by_hand():
  # y = |W2|^T |W1|^T 1 + |b|: R = 1^T|W1| |W2| + |b| = [5, 3.5] . [2, 3] + 4 = 24.5.
  # Each layer's sum of w dR/dw is R without the bias (20.5): synflow = 41. Counting
  # the bias (|b| * dR/db = 4) or skipping the abs would give another value.
  params = {'one': {'kernel': jnp.array([[1., -2.], [3., .5], [-1., 1.]])},
            'two': {'kernel': jnp.array([[2.], [-3.]]), 'bias': jnp.array([-4.])}}

  def apply(p, x):
    x = x.reshape(1, -1)
    return x @ p['one']['kernel'] @ p['two']['kernel'] + p['two']['bias'], 0.0
  scaled, log2_scale = proxies.synflow_scaled(apply, params, (3,))
  assert float(scaled) * 2.0 ** float(log2_scale) == pytest.approx(41.0)

  def apply_scaled(p, x):  # the head's 2**-3 scaling is undone exactly
    logits, _ = apply(p, x)
    return logits / 8.0, 3.0
  scaled, log2_scale = proxies.synflow_scaled(apply_scaled, params, (3,))
  assert float(scaled) * 2.0 ** float(log2_scale) == pytest.approx(41.0)


def test_jacob_cov_of_two_images_is_worked_by_hand():
  # corrcoef of two rows with correlation r has eigenvalues 1 - r and 1 + r.
  r, k = 0.6, 1e-5
  expected = -sum(np.log(v + k) + 1 / (v + k) for v in (1 - r, 1 + r))
  corr = np.array([[1.0, r], [r, 1.0]])
  assert proxies.jacob_cov_from_correlation(corr) == pytest.approx(expected, rel=1e-12)
  # Rows of J with correlation r, through the device-side correlation:
  rows = jnp.array([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) + jnp.array([[0.0] * 3, [0.0, 1.0, 0.0]])
  assert np.asarray(proxies.correlation(rows)) == pytest.approx(
      np.corrcoef(np.asarray(rows)), abs=1e-6)


def test_jacob_cov_floor_is_rank_one_and_below_every_correlation():
  b = 4
  floor = proxies.jacob_cov_floor(b)
  assert proxies.jacob_cov_from_correlation(np.ones((b, b))) == pytest.approx(floor, rel=1e-9)
  rng = np.random.default_rng(0)
  corr = np.corrcoef(rng.normal(size=(b, 50)))
  assert proxies.jacob_cov_from_correlation(corr) > floor
  assert proxies.jacob_cov_from_correlation(np.full((b, b), np.nan)) == floor


# ---------------------------------------------------------------- batched = reference


@pytest.mark.slow
@pytest.mark.parametrize('name', proxies.PROXY_NAMES)
def test_batched_proxy_equals_standalone_network_one_by_one(name, batched, reference):
  live = ~space.is_dead(ARCHS)
  got, want = batched[name][live], reference[name][live]
  assert np.isfinite(got).all()
  tolerance = {'synflow': 1e-6, 'jacob_cov': 1e-4}.get(name, 1e-4)
  np.testing.assert_allclose(got, want, rtol=tolerance)
  # The archs score differently, so a mix-up of members would show.
  assert len(np.unique(np.round(want, 6))) == len(want)


@pytest.mark.slow
def test_permuting_archs_permutes_scores(supernet, batch, init_variables, batched):
  order = np.array([3, 2, 0, 1])
  again = proxies.score_archs(supernet, ARCHS[order], *batch, seed=SEED, archs_per_call=2,
                              variables=init_variables)
  for name in proxies.PROXY_NAMES:
    np.testing.assert_allclose(again[name], batched[name][order], rtol=1e-6)


def test_progress_is_reported_and_a_stop_signal_ends_the_scoring(supernet, batch,
                                                                 init_variables, batched):
  """report(done, total) counts finished archs (the dead one from the start); SIGTERM
  stops after the current chunk with preemption.Stopped, restoring the handler."""
  del batched  # compiles the scorers this test reuses
  reports = []

  def report(done, total):
    reports.append((done, total))
    sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
    sender.start()
    sender.join()
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(preemption.Stopped, match='stopped by SIGTERM while scoring zero-cost '
                                               'proxies; no results were written'):
    proxies.score_archs(supernet, ARCHS, *batch, seed=SEED, archs_per_call=2,
                        variables=init_variables, report=report, report_every_s=0.0)
  assert reports == [(3, 4)]  # 1 dead + the first chunk's 2; the second was in flight
  assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_dead_arch_scores_each_proxys_floor(batched, reference):
  floors = {'synflow': 0.0, 'snip': 0.0, 'grad_norm': 0.0,
            'jacob_cov': proxies.jacob_cov_floor(8)}
  for name, floor in floors.items():
    assert batched[name][DEAD_ROW] == floor
    assert (np.delete(batched[name], DEAD_ROW) > floor).all()
  # What the gradients of the dead stand-alone network give: exactly zero; jacob_cov
  # of its all-zero Jacobian is undefined (NaN in zero-cost-nas).
  for name in ('synflow', 'snip', 'grad_norm'):
    assert reference[name][DEAD_ROW] == 0.0
  assert np.isnan(reference['jacob_cov'][DEAD_ROW])


def test_initial_weights_are_a_function_of_the_seed(supernet, init_variables):
  again = proxies.initial_variables(supernet, SEED)
  other = proxies.initial_variables(supernet, SEED + 1)
  same = jax.tree.map(lambda a, b: bool((a == b).all()), init_variables, again)
  assert all(jax.tree.leaves(same))
  stem = ('params', 'stem', 'kernel')
  assert not np.array_equal(flatten_dict(other)[stem], flatten_dict(init_variables)[stem])


# ---------------------------------------------------------------- masked spaces


@pytest.mark.slow
def test_masked_space_scores_equal_the_full_spaces(supernet, batch, init_variables):
  # Only skip and 3x3 allowed: the super-net holds 2 ops per edge, yet each arch's
  # initial weights, and so its scores, are those of the full space (Flax inits each
  # layer from its name), which a wrong op position or init would break.
  masked = model_lib.SuperNet(channels=4, cells_per_stage=1, allowed_ops=(1, 3))
  archs = np.array([[1, 3, 3, 1, 3, 1], [3, 3, 1, 1, 1, 3]], np.int32)
  got = proxies.score_archs(masked, archs, *batch, seed=SEED, archs_per_call=2)
  full = proxies.score_archs(supernet, archs, *batch, seed=SEED, archs_per_call=2,
                             variables=init_variables)
  for name in proxies.PROXY_NAMES:
    np.testing.assert_allclose(got[name], full[name], rtol=1e-5)
    assert got[name][0] != got[name][1]


def test_archs_with_masked_ops_are_refused(batch):
  masked = model_lib.SuperNet(channels=4, cells_per_stage=1, allowed_ops=(1, 2, 3, 4))
  with pytest.raises(proxies.ProxyError,
                     match=r'none~1.*uses a masked op; the model allows only skip_connect, '):
    proxies.score_archs(masked, ARCHS, *batch)


# ---------------------------------------------------------------- readable errors


@pytest.mark.parametrize('change, message', [
    (dict(names=('synflow', 'naswot')), r"unknown proxy 'naswot'; choices: synflow, jacob_cov"),
    (dict(archs=ARCHS[:, :5]), r'archs must be an int array \[m, 6\], got int32 \[4, 5\]'),
    (dict(archs=ARCHS + 5), r'op indices must lie in 0..4, got 5..9'),
    (dict(images=jnp.zeros((8, 28, 28, 3))), r'images must be \[B, 32, 32, 3\], got \[8, 28'),
    (dict(labels=jnp.zeros(7, jnp.int32)), r'labels must be \[8\]'),
    (dict(images=jnp.zeros((1, 32, 32, 3)), labels=jnp.zeros(1, jnp.int32)),
     r'jacob_cov correlates the Jacobians of >= 2 images, got a batch of 1'),
    (dict(archs_per_call=0), r'archs_per_call must be >= 1, got 0'),
])
def test_bad_requests_fail_in_one_readable_line(supernet, batch, change, message):
  request = dict(archs=ARCHS, images=batch[0], labels=batch[1], names=proxies.PROXY_NAMES,
                 archs_per_call=2)
  request.update(change)
  with pytest.raises(proxies.ProxyError, match=message) as error:
    proxies.score_archs(supernet, **request)
  assert '\n' not in str(error.value)


def test_standalone_and_scanned_models_are_refused(supernet, batch):
  with pytest.raises(proxies.ProxyError, match=r'fixed_arch must be None'):
    proxies.score_archs(supernet.clone(fixed_arch=(1,) * 6), ARCHS, *batch)
  with pytest.raises(proxies.ProxyError, match=r'set scan_cells=False'):
    proxies.score_archs(supernet.clone(scan_cells=True), ARCHS, *batch)


def test_proxy_batch_is_drawn_by_seed():
  images = np.arange(20 * 4, dtype=np.uint8).reshape(20, 1, 1, 4)
  labels = np.arange(20)
  x, y = proxies.proxy_batch(images, labels, batch_size=5, seed=2)
  x2, y2 = proxies.proxy_batch(images, labels, batch_size=5, seed=2)
  assert x.shape == (5, 1, 1, 4) and np.array_equal(x, x2) and np.array_equal(y, y2)
  assert np.array_equal(images[y], x)  # labels stay with their images
  with pytest.raises(proxies.ProxyError, match=r'batch size must lie in 1..20, got 21'):
    proxies.proxy_batch(images, labels, batch_size=21)
