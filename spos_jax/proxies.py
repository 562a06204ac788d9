"""Zero-cost proxies: score archs at initialisation, without training.

Four proxies, as defined by Abdelfattah et al. 2021 ("Zero-Cost Proxies for
Lightweight NAS", code SamsungLabs/zero-cost-nas) and Mellor et al. 2021 (NASWOT,
whose first version's Jacobian covariance is `jacob_cov`). "Weights" are the kernels
of every conv and linear layer (Flax leaves named `kernel`); biases and BN
parameters never count.
  * synflow: BN removed (their `bn=False` copy: stem, cell ops and head lose their
    BN; the two reduction blocks keep theirs, since their NB201 model builds the
    reduction blocks without the switch, and run them on batch statistics), every
    parameter replaced by its absolute value, one all-ones image, R = sum of the
    logits: sum over weights of |w * dR/dw|. In float64, as theirs.
  * snip: sum over weights of |w * dL/dw|, L the mean cross-entropy of the batch.
  * grad_norm: sum over weight layers of the L2 norm of dL/dw.
  * jacob_cov: J = d(sum of logits)/d(images), one row per image; C = corrcoef(J)
    (float64); score = -sum_i log(v_i + k) + 1 / (v_i + k), v the eigenvalues of C,
    k = 1e-5.
snip, grad_norm and jacob_cov run BN on batch statistics (their `net.train()`).
Higher is predicted better for all four as defined (jacob_cov carries its own minus
sign), so no sign is flipped.

The network of an arch is its stand-alone network (model.SuperNet with `fixed_arch`),
whose parameters are a subset of the super-network's. Initialisation: one
super-network init per seed (`initial_variables`, PRNG key from the seed), whose
path-subset is every arch's initial weights. An arch's scores are then a pure function
of (seed, arch): independent of which other archs are scored with it, of the chunking,
and of the op mask (Flax derives each layer's init key from its name), and archs that
share an op on an edge share its initial values, so their differences come from the
architecture rather than the init draw. (zero-cost-nas instead builds each network
from the running torch RNG, and draws a fresh training batch for every arch; here every
arch sees the same batch.)

Batched: `jax.vmap` over archs of the single-path super-network, whose per-arch path
makes `nn.switch` a select that runs every allowed op of an edge (the cells cost |O|x
a single arch's average FLOPs; the stem, reductions and head do not grow). The
fair-group forward would avoid that but shares the stem, reduction and head layers
between its members, whose gradients then sum over members: wrong for per-arch
gradient proxies. Under vmap each arch's gradients are its own (a select sends no
gradient to the ops it did not pick), so the unpicked ops' weights add exactly zero.

Dead archs (no non-'none' path from node 0 to node 3, all at chance accuracy in the
bench) are not computed; they get each proxy's smallest value: 0 for synflow, snip
and grad_norm (what their gradients give: exactly zero), and for jacob_cov the score
of a rank-1 correlation matrix (every image's Jacobian parallel),
-((B-1)(log k + 1/k) + log(B+k) + 1/(B+k)), below which no B x B correlation matrix
scores (zero-cost-nas gives NaN: the correlation of an all-zero Jacobian is undefined).
Live archs' jacob_cov is clamped to that bound too (it only bites on NaN, from an
image whose Jacobian is constant).
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spos_jax import memory
from spos_jax import model as model_lib
from spos_jax import preemption
from spos_jax import space

PROXY_NAMES = ('synflow', 'jacob_cov', 'snip', 'grad_norm')
JACOB_COV_K = 1e-5  # Mellor et al.'s k, as in zero-cost-nas
_GRADIENT_PROXIES = ('snip', 'grad_norm')
IMAGE_SHAPE = (32, 32, 3)


class ProxyError(ValueError):
  """A proxy request that cannot be scored as asked (names, archs, batch, model)."""


# ---------------------------------------------------------------- what counts


def is_weight(path) -> bool:
  """True for conv and linear kernels: the layers whose weights the proxies sum."""
  return getattr(path[-1], 'key', None) == 'kernel'


def _weights(tree) -> list[jax.Array]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return [leaf for path, leaf in leaves if is_weight(path)]


def _sum_over_weights(fn, params, grads) -> jax.Array:
  """sum_l fn(w_l, g_l) over the weight layers l, as fp32 (or wider) scalars."""
  terms = [fn(w, g) for w, g in zip(_weights(params), _weights(grads))]
  return sum(jnp.asarray(t, jnp.promote_types(t.dtype, jnp.float32)) for t in terms)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy over the batch (PyTorch's F.cross_entropy default)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1).mean()


# ---------------------------------------------------------------- one network


def gradient_proxies(apply: Callable, params, images, labels) -> tuple:
  """(snip, grad_norm, J [B, D]) of one network; apply(params, images) -> logits.

  One forward, two backward passes: dL/dparams (L the mean cross-entropy) and
  d(sum of logits)/d(images), the Jacobian rows that jacob_cov correlates.
  """
  logits, pullback = jax.vjp(apply, params, images)
  param_grads, _ = pullback(jax.grad(cross_entropy)(logits, labels).astype(logits.dtype))
  _, image_grads = pullback(jnp.ones_like(logits))
  snip = _sum_over_weights(lambda w, g: jnp.abs(w * g).sum(), params, param_grads)
  grad_norm = _sum_over_weights(lambda w, g: jnp.sqrt(jnp.square(g).sum()), params,
                                param_grads)
  return snip, grad_norm, image_grads.reshape(images.shape[0], -1)


def synflow_scaled(apply: Callable, params, image_shape) -> tuple:
  """(S, e) with synflow = S * 2**e; apply(params, images) -> (logits, e).

  Parameters become their absolute values and the input one all-ones image; R is
  the sum of the logits. `apply` may scale activations by 2**-e (a power of two the
  gradient does not see) to keep them in range: every weight gradient is then scaled
  by exactly 2**-e, which the caller multiplies back.
  """
  abs_params = jax.tree.map(jnp.abs, params)
  ones = jnp.ones((1,) + tuple(image_shape), jax.tree.leaves(params)[0].dtype)

  def total_output(p):
    logits, log2_scale = apply(p, ones)
    return logits.sum(), log2_scale
  grads, log2_scale = jax.grad(total_output, has_aux=True)(abs_params)
  return _sum_over_weights(lambda w, g: jnp.abs(w * g).sum(), abs_params, grads), log2_scale


def correlation(jacobian: jax.Array) -> jax.Array:
  """np.corrcoef of the rows of J [B, D], in J's dtype (float64 under x64)."""
  centred = jacobian - jacobian.mean(-1, keepdims=True)
  rows = centred / jnp.sqrt(jnp.square(centred).sum(-1, keepdims=True))
  corr = jnp.matmul(rows, jnp.swapaxes(rows, -1, -2), precision=jax.lax.Precision.HIGHEST)
  return jnp.clip(corr, -1.0, 1.0)


def jacob_cov_floor(batch_size: int, k: float = JACOB_COV_K) -> float:
  """The lowest jacob_cov of a B x B correlation matrix: rank 1, eigenvalues (B, 0, ..)."""
  return -float((batch_size - 1) * (np.log(k) + 1 / k) + np.log(batch_size + k)
                + 1 / (batch_size + k))


def jacob_cov_from_correlation(corr: np.ndarray, k: float = JACOB_COV_K) -> np.ndarray:
  """-sum(log(v + k) + 1/(v + k)) over the eigenvalues v of each corr [..., B, B] (float64).

  Non-finite matrices (an image whose Jacobian is constant) and anything below the
  rank-1 floor score the floor.
  """
  corr = np.asarray(corr, np.float64)
  floor = jacob_cov_floor(corr.shape[-1], k)
  finite = np.isfinite(corr).all((-2, -1))
  score = np.full(corr.shape[:-2], floor)
  v = np.linalg.eigvalsh(corr[finite])
  score[finite] = -(np.log(v + k) + 1 / (v + k)).sum(-1)
  return np.fmax(score, floor)


# ---------------------------------------------------------------- the super-network


@functools.lru_cache(maxsize=16)
def _init(model):
  return jax.jit(functools.partial(model.init, train=False))


def initial_variables(model: model_lib.SuperNet, seed: int) -> dict:
  """The super-network's initial variables for `seed` (PRNG key from the seed)."""
  path = jnp.zeros(space.NUM_EDGES, jnp.int32)
  images = jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32)
  return dict(_init(model)(jax.random.PRNGKey(seed), images, path))


def _single_path_apply(model, batch_stats, path):
  """apply(params, images) -> logits of the arch `path`, BN on batch statistics."""
  def apply(params, images):
    logits, _ = model.apply({'params': params, 'batch_stats': batch_stats}, images, path,
                            train=True, mutable=['batch_stats'])
    return logits
  return apply


def _batch_norm64(module: model_lib.BatchNorm, x):
  """The module's BN on batch statistics, in x's dtype (the model's BN computes in fp32)."""
  axes = (-4, -3, -2)
  mean = x.mean(axes, keepdims=True)
  var = jnp.square(x - mean).mean(axes, keepdims=True)
  y = (x - mean) / jnp.sqrt(var + module.epsilon)
  if module.affine:
    y = y * module.get_variable('params', 'scale') + module.get_variable('params', 'bias')
  return y


def _log2_magnitude(x):
  """floor(log2(max |x|)), 0 for all-zero x; no gradient."""
  peak = jax.lax.stop_gradient(jnp.abs(x).max())
  return jnp.where(peak > 0, jnp.floor(jnp.log2(jnp.where(peak > 0, peak, 1.0))), 0.0)


def _synflow_interceptor(log2_scales: list):
  """Flax interceptor: the bn=False copy, in float64, with the head kept in fp32 range.

  BNs of the stem, the cell ops and the head become the identity; the reduction
  blocks' BNs run on batch statistics in float64. The head's input is scaled by
  2**-e (e from its magnitude, recorded in log2_scales) because the model casts the
  head's features to fp32, whose range deep all-conv paths exceed.
  """
  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if not isinstance(module, model_lib.BatchNorm) or context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    x = args[0]
    if isinstance(module.parent, model_lib.ReductionBlock):
      return _batch_norm64(module, x)
    if module.name == 'head_bn':
      log2_scales.append(_log2_magnitude(x))
      return x * jnp.exp2(-log2_scales[-1])
    return x
  return intercept


def _synflow_apply(model64, batch_stats, path):
  """apply(params, images) -> (logits, e) of the arch `path` as synflow sees it."""
  def apply(params, images):
    log2_scales = []
    with nn.intercept_methods(_synflow_interceptor(log2_scales)):
      logits, _ = model64.apply({'params': params, 'batch_stats': batch_stats}, images,
                                path, train=True, mutable=['batch_stats'])
    return logits, log2_scales[0]
  return apply


@functools.lru_cache(maxsize=16)
def _gradient_scorer(model, with_jacobian: bool):
  """jit(params, batch_stats, paths [M, 6], images, labels) -> snip [M], grad_norm [M], J."""
  def one_arch(params, batch_stats, path, images, labels):
    snip, grad_norm, jacobian = gradient_proxies(
        _single_path_apply(model, batch_stats, path), params, images, labels)
    return (snip, grad_norm) + ((jacobian,) if with_jacobian else ())

  return memory.CheckedJit(
      jax.vmap(one_arch, in_axes=(None, None, 0, None, None)),
      lambda params, stats, paths, images, labels: (
          f'zero-cost proxies of {paths.shape[0]} archs on {images.shape[0]} images'),
      'lower archs_per_call or the proxy batch size')


@functools.lru_cache(maxsize=16)
def _synflow_scorer(model):
  """jit(params, batch_stats, paths [M, 6]) -> (S [M], e [M]); call it under x64."""
  model64 = model.clone(dtype=jnp.float64)

  def one_arch(params, batch_stats, path):
    params64 = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    return synflow_scaled(_synflow_apply(model64, batch_stats, path), params64, IMAGE_SHAPE)

  return jax.jit(jax.vmap(one_arch, in_axes=(None, None, 0)))


@functools.lru_cache(maxsize=1)
def _correlation64():
  """jit(J [M, B, D]) -> corrcoef [M, B, B] in float64; call it under x64."""
  return jax.jit(lambda j: correlation(j.astype(jnp.float64)))


# ---------------------------------------------------------------- the public entry


def check_request(model, archs, images, labels, names, archs_per_call) -> np.ndarray:
  """Validated archs [m, 6] int32; a ProxyError in one line for anything else."""
  unknown = [n for n in names if n not in PROXY_NAMES]
  if unknown or not names:
    raise ProxyError(f'unknown proxy {unknown[0] if unknown else "(none given)"!r}; '
                     f'choices: {", ".join(PROXY_NAMES)}')
  if model.fixed_arch is not None:
    raise ProxyError('proxies score archs on the super-network (fixed_arch must be None), '
                     f'got fixed_arch={model.fixed_arch}')
  if model.scan_cells:
    # grad_norm sums one norm per layer; a scanned stage stacks its cells' kernels.
    raise ProxyError('proxies run on the unrolled super-network: set scan_cells=False '
                     '(it changes compile time only), got scan_cells=True')
  archs = np.asarray(archs)
  if archs.ndim != 2 or archs.shape[1] != space.NUM_EDGES or not np.issubdtype(
      archs.dtype, np.integer):
    raise ProxyError(f'archs must be an int array [m, {space.NUM_EDGES}], got '
                     f'{archs.dtype} {list(archs.shape)}')
  if len(archs) and (archs.min() < 0 or archs.max() >= space.NUM_OPS):
    raise ProxyError(f'op indices must lie in 0..{space.NUM_OPS - 1}, got '
                     f'{archs.min()}..{archs.max()}')
  allowed = tuple(model.allowed_ops)
  outside = ~space.uses_only(archs, allowed)
  if outside.any():
    raise ProxyError(
        f'arch {space.arch_to_string(archs[outside][0])} uses a masked op; the model '
        f'allows only {", ".join(space.OPS[o] for o in allowed)}: masked ops are never '
        f'scored, drop those archs (space.uses_only)')
  if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
    raise ProxyError(f'images must be [B, {", ".join(map(str, IMAGE_SHAPE))}], got '
                     f'{list(images.shape)}')
  if labels.shape != images.shape[:1]:
    raise ProxyError(f'labels must be [{images.shape[0]}] (one per image), got '
                     f'{list(labels.shape)}')
  if 'jacob_cov' in names and images.shape[0] < 2:
    raise ProxyError(f'jacob_cov correlates the Jacobians of >= 2 images, got a batch '
                     f'of {images.shape[0]}')
  if archs_per_call < 1:
    raise ProxyError(f'archs_per_call must be >= 1, got {archs_per_call}')
  return archs.astype(np.int32)


def proxy_batch(train_images: np.ndarray, train_labels: np.ndarray, batch_size: int = 64,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`batch_size` training images [B, 32, 32, 3] uint8 and labels, drawn by `seed`.

  zero-cost-nas scores on one batch of 64 training images; here it is the same
  batch for every arch. Normalise it as for evaluation (augment.eval_images).
  """
  if not 1 <= batch_size <= len(train_images):
    raise ProxyError(f'the proxy batch size must lie in 1..{len(train_images)}, got '
                     f'{batch_size}')
  pick = np.random.default_rng(seed).permutation(len(train_images))[:batch_size]
  return np.asarray(train_images)[pick], np.asarray(train_labels)[pick]


def _chunks(archs: np.ndarray, size: int):
  """Chunks of `size` archs, the last padded with copies of its first (one shape)."""
  for start in range(0, len(archs), size):
    part = archs[start:start + size]
    yield jnp.asarray(np.concatenate([part, part[:1].repeat(size - len(part), 0)])), len(part)


def score_archs(model: model_lib.SuperNet, archs, images, labels,
                names: Sequence[str] = PROXY_NAMES, seed: int = 0,
                archs_per_call: int = 16, variables: dict | None = None, *,
                report: Callable[[int, int], None] | None = None,
                report_every_s: float = 30.0) -> dict[str, np.ndarray]:
  """Proxy scores of each arch [m, 6] at initialisation: {name: float64 [m]}.

  model: the super-network (any allowed_ops; an arch with a masked op is an error);
  images float [B, 32, 32, 3] normalised as for training, labels int [B]; the
  initial weights are `initial_variables(model, seed)` unless `variables` is given.
  Higher is predicted better. `archs_per_call` archs run in one jitted, vmapped call.
  report(archs_done, archs_total), if given, is called at most every report_every_s
  seconds (dead archs count as done from the start: they cost nothing). SIGTERM,
  SIGUSR1 or Ctrl-C stop it after the current chunk with preemption.Stopped.
  """
  names = tuple(names)
  images, labels = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)
  archs = check_request(model, archs, images, labels, names, archs_per_call)
  variables = variables if variables is not None else initial_variables(model, seed)
  params, batch_stats = variables['params'], variables['batch_stats']
  live = ~space.is_dead(archs)
  want_gradients = any(n in names for n in ('jacob_cov',) + _GRADIENT_PROXIES)
  gradients = _gradient_scorer(model, 'jacob_cov' in names) if want_gradients else None

  def run_chunk(paths):
    out = {}
    if gradients is not None:
      snip, grad_norm, *jacobian = gradients(params, batch_stats, paths, images, labels)
      out.update(snip=snip, grad_norm=grad_norm)
      if jacobian:
        with jax.enable_x64(True):
          out['jacob_cov'] = _correlation64()(jacobian[0])
    if 'synflow' in names:
      with jax.enable_x64(True):
        out['synflow'] = _synflow_scorer(model)(params, batch_stats, paths)
    return out

  # One chunk in flight while the previous one is read back and finished on the host.
  parts, pending = [], None
  done, last_report = int(np.count_nonzero(~live)), time.monotonic()
  with preemption.PreemptionWatcher(kept=lambda: preemption.SCORE_AGAIN) as watcher:
    for paths, n in _chunks(archs[live], archs_per_call):
      dispatched = (run_chunk(paths), n)
      if pending is not None:
        parts.append(_finish_chunk(*pending))
        done += pending[1]
        if report is not None and time.monotonic() - last_report >= report_every_s:
          report(done, len(archs))
          last_report = time.monotonic()
      pending = dispatched
      watcher.stop_if_requested('scoring zero-cost proxies')
    if pending is not None:
      parts.append(_finish_chunk(*pending))
  return {name: _with_dead(parts, name, live, images.shape[0]) for name in names}


def _finish_chunk(out: dict, n: int) -> dict[str, np.ndarray]:
  """Device results of a chunk -> float64 scores of its first n (unpadded) archs."""
  host = jax.device_get(out)
  scores = {k: np.asarray(host[k], np.float64)[:n] for k in _GRADIENT_PROXIES if k in host}
  if 'synflow' in host:
    scaled, log2_scale = host['synflow']
    scores['synflow'] = np.ldexp(np.asarray(scaled, np.float64)[:n],
                                 np.asarray(log2_scale)[:n].astype(np.int64))
  if 'jacob_cov' in host:
    scores['jacob_cov'] = jacob_cov_from_correlation(host['jacob_cov'][:n])
  return scores


def _with_dead(parts: list, name: str, live: np.ndarray, batch_size: int) -> np.ndarray:
  """Scores of all archs: the live ones computed, the dead ones the proxy's floor."""
  floor = jacob_cov_floor(batch_size) if name == 'jacob_cov' else 0.0
  scores = np.full(len(live), floor, np.float64)
  if parts:
    scores[live] = np.concatenate([p[name] for p in parts])
  return scores
