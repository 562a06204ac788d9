"""Super-network training (docs/method.md, 'Training'): optimizer, train steps, the loop of one run.

All seeds of a run train together: every array of the train state has a leading
seed axis and the step is vmapped over it. Randomness is a pure function of
(seed, step), so a resumed run draws exactly what the uninterrupted one would.

Two train steps compute the same update for strictly fair sampling:
  * `fair_group_step` (used): the whole group of |O| micro-batches in one static
    graph (model.py's fair-group mode); loss = sum of micro-batch mean losses, so
    the gradient is the SUM of the micro-batch gradients (docs/method.md, 'Strictly fair
    update').
  * `reference_micro_step`: one micro-batch on one path through `nn.switch`,
    accumulated by optax.MultiSteps (sum, not mean); the straightforward reference.
train.shared_layers changes only what the layers every path uses (SHARED_LAYERS) do
with their |O| gradients: 'mean' scales them by 1/|O| in `fair_group_step`;
'every_micro_step' (`shared_micro_group_step`) steps them after every micro-batch.
Every step reports the update norms of the shared layers and of the cell ops;
`with_gradient_probe` compares the |O| member gradients at a few fixed steps.
"""
from __future__ import annotations

import collections
import functools
import json
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from spos_jax import augment
from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import memory
from spos_jax import model as model_lib
from spos_jax import preemption
from spos_jax import sampling
from spos_jax import sharding
from spos_jax import space
from spos_jax import workdir as workdir_lib

# Streams of randomness derived from each seed.
_INIT, _DATA, _PATH, _AUGMENT = range(4)

# The layers every path uses: the stem conv and its BN, the two reduction blocks
# between the stages, the final BN and the classifier (model.SuperNet's top-level
# modules other than the cells). In a strictly fair step each cell op gets the
# gradient of the one micro-batch that drew it, but these get the sum of all |O|
# (train.shared_layers chooses what they do with it).
SHARED_LAYERS = ('stem', 'stem_bn', 'reduction_1', 'reduction_2', 'head_bn', 'classifier')


def split_shared(tree) -> tuple[dict, dict]:
  """(shared layers, cell ops) of a params-shaped tree, split by top-level name."""
  unknown = [k for k in tree if k not in SHARED_LAYERS and not k.startswith('cell')]
  if unknown:
    raise ValueError(f'layers {unknown} are neither cells (cell_*, cells_*) nor in '
                     f'train.SHARED_LAYERS: add them to one of the two')
  return ({k: v for k, v in tree.items() if k in SHARED_LAYERS},
          {k: v for k, v in tree.items() if k not in SHARED_LAYERS})


def merge_shared(shared: dict, cells: dict) -> dict:
  """The inverse of split_shared."""
  return {**shared, **cells}


def scale_shared(grads, factor):
  """grads with the shared layers' entries times factor, the cell ops' unchanged."""
  shared, cells = split_shared(grads)
  return merge_shared(jax.tree.map(lambda g: g * factor, shared), cells)


@flax.struct.dataclass
class TrainState:
  seed: jax.Array  # int32; keys derive from it
  step: jax.Array  # optimizer steps taken
  params: Any
  batch_stats: Any
  opt_state: Any


def create_model(config, **overrides) -> model_lib.SuperNet:
  m = config.model
  kwargs = dict(
      channels=m.channels, cells_per_stage=m.cells_per_stage,
      allowed_ops=config_lib.allowed_ops(config), lt_skip=m.lt_skip, lt_pool=m.lt_pool,
      pool_exclude_padding=m.pool_exclude_padding, node_reduction=m.node_reduction,
      scan_cells=m.scan_cells, num_classes=data_lib.num_classes(config.data.dataset),
      dtype=jnp.bfloat16 if config.train.precision == 'bf16' else jnp.float32)
  kwargs.update(overrides)
  return model_lib.SuperNet(**kwargs)


def steps_per_epoch(config, num_train: int) -> int:
  """Micro-batches per epoch (the last incomplete batch of an epoch is dropped)."""
  return data_lib.steps_per_epoch(num_train, config.train.batch_size)


def total_steps(config, num_train: int) -> int:
  """Optimizer steps of the run: one per fair group of |O| micro-batches."""
  micro = config.train.epochs * steps_per_epoch(config, num_train)
  steps = micro // config_lib.group_size(config)
  if steps < 1:
    raise config_lib.ConfigError(
        f'{micro} micro-batches ({config.train.epochs} epochs of {num_train} images in '
        f'batches of {config.train.batch_size}) make no fair group of '
        f'{config_lib.group_size(config)}: raise train.epochs or lower train.batch_size')
  return steps


def learning_rate_schedule(config, num_train: int) -> optax.Schedule:
  """Cosine lr -> lr_min over the run, after an optional linear warm-up from 0."""
  t = config.train
  steps = total_steps(config, num_train)
  warmup = int(round(t.warmup_epochs * steps / t.epochs))
  if warmup == 0:
    return optax.cosine_decay_schedule(t.lr, steps, alpha=t.lr_min / t.lr)
  return optax.warmup_cosine_decay_schedule(0.0, t.lr, warmup, steps, end_value=t.lr_min)


def weight_decay_mask(params) -> Any:
  """True for conv and linear kernels; BN parameters and biases get no decay."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def sgd(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """PyTorch SGD semantics: clip the gradient, add decay, momentum, lr = schedule(updates)."""
  t = config.train
  parts = []
  if t.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(t.clip_norm))
  if t.weight_decay > 0:
    parts.append(optax.add_decayed_weights(t.weight_decay, mask=weight_decay_mask))
  parts.append(optax.sgd(schedule, momentum=t.momentum))
  return optax.chain(*parts)


class SharedLayerOptimizer(NamedTuple):
  """SGD on the shared layers and on the cell ops, each part with its own state.

  train.shared_layers='every_micro_step': `shared_micro_group_step` updates the
  shared layers with `shared` after every micro-batch and the cell ops with `cells`
  once per group. State {'shared': ..., 'cells': ...}; there is no whole-tree update.
  """
  shared: optax.GradientTransformation
  cells: optax.GradientTransformation

  def init(self, params):
    shared, cells = split_shared(params)
    return {'shared': self.shared.init(shared), 'cells': self.cells.init(cells)}


def create_optimizer(config, num_train: int):
  """PyTorch SGD semantics: clip the summed gradient, add decay, momentum, lr.

  train.shared_layers='every_micro_step' gives a SharedLayerOptimizer: the shared
  layers take |O| updates per optimizer step, each at that step's lr (their schedule
  counts micro-steps // |O|), with their own momentum and their decay |O| times per
  step, as uniform sampling's layers take it; the cell ops are stepped as in 'sum'.
  """
  schedule = learning_rate_schedule(config, num_train)
  if config.train.shared_layers != 'every_micro_step':
    return sgd(config, schedule)
  k = config_lib.group_size(config)
  return SharedLayerOptimizer(shared=sgd(config, lambda micro_step: schedule(micro_step // k)),
                              cells=sgd(config, schedule))


def init_state(model, tx, seed, image_shape=data_lib.IMAGE_SHAPE) -> TrainState:
  """One seed's state; vmap over seeds for a run."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), _INIT)
  dummy = jnp.zeros((1,) + image_shape, jnp.float32)
  # Single-path init creates every op's variables (model.Edge.single).
  variables = model.init(key, dummy, jnp.zeros(space.NUM_EDGES, jnp.int32), train=True)
  params = variables['params']
  return TrainState(seed=jnp.asarray(seed, jnp.int32), step=jnp.zeros((), jnp.int32),
                    params=params, batch_stats=variables['batch_stats'],
                    opt_state=tx.init(params))


def init_states(model, tx, seeds, image_shape=data_lib.IMAGE_SHAPE) -> TrainState:
  """All seeds' states stacked on a leading axis."""
  init = jax.jit(jax.vmap(lambda s: init_state(model, tx, s, image_shape)))
  return init(jnp.asarray(seeds, jnp.int32))


def _stream_key(seed, stream):
  return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


def group_inputs(config, data: data_lib.DeviceData, seed, step):
  """Micro-batches, labels, paths and augmentation keys of one optimizer step.

  Returns images uint8 [K, B, 32, 32, 3], labels [K, B], paths [K, *edges] and
  keys [K]; K = |O| for fair sampling, 1 for uniform. Both train steps use this, so
  the fast and the reference path see identical inputs.
  """
  k = config_lib.group_size(config)
  allowed = config_lib.allowed_ops(config)
  num_cells = 3 * config.model.cells_per_stage if config.sampling.topology == 'unshared' else None
  micro_steps = step * k + jnp.arange(k)
  index_fn = functools.partial(data_lib.micro_batch_indices, num_train=data.num_train,
                               batch_size=config.train.batch_size)
  indices = jax.vmap(index_fn, in_axes=(None, 0))(_stream_key(seed, _DATA), micro_steps)
  path_key = jax.random.fold_in(_stream_key(seed, _PATH), step)
  if config.sampling.method == 'fair':
    paths = sampling.fair_group(path_key, allowed, num_cells)
  else:
    paths = sampling.uniform_path(path_key, allowed, num_cells)[None]
  aug_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      _stream_key(seed, _AUGMENT), micro_steps)
  return data.train_images[indices], data.train_labels[indices], paths, aug_keys


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example cross-entropy with targets (1-e) onehot + e/K."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing) \
      if label_smoothing else jax.nn.one_hot(labels, num_classes)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def augment_micro_batch(config, key, images):
  """One micro-batch's training input: uint8 [B, ...] -> float, with the data set's stats."""
  return augment.augment_batch(key, images, config.train.augment,
                               stats=data_lib.channel_stats(config.data.dataset))


def augment_members(config, keys, images):
  """Augment each micro-batch with its own key: [K, B, ...] uint8 -> float."""
  return jax.vmap(functools.partial(augment_micro_batch, config))(keys, images)


def step_metrics(params, updates, grads, loss, correct, count) -> dict:
  """Loss, accuracy, gradient norm and finiteness of a step, and how far it moved the
  shared layers and the cell ops: update_norm_* = ||update||, param_norm_* = ||params
  before||, so that a run shows whether the shared layers' steps are |O| times larger."""
  metrics = dict(loss=loss, accuracy=correct / count,
                 grad_norm=optax.tree_utils.tree_norm(grads))
  metrics['finite'] = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  for name, part_updates, part_params in zip(('shared', 'cells'), split_shared(updates),
                                             split_shared(params)):
    metrics[f'update_norm_{name}'] = optax.tree_utils.tree_norm(part_updates)
    metrics[f'param_norm_{name}'] = optax.tree_utils.tree_norm(part_params)
  return metrics


def finish_step(state, tx, grads, new_stats, loss, correct, count):
  """tx on the (summed) gradient, the step counter, and the metrics of one step."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  metrics = step_metrics(state.params, updates, grads, loss, correct, count)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=new_stats, opt_state=opt_state), metrics


def fair_group_step(config, model, tx, state: TrainState, data,
                    mesh=None) -> tuple[TrainState, dict]:
  """One optimizer step on a whole group in one graph (fast path, one seed).

  Strictly fair: the |O| micro-batches run as members of one fair-group forward.
  Uniform: the group has one member and runs the single-path forward. With a
  device mesh each micro-batch is split across the devices (sharding.py).
  train.shared_layers: 'sum' steps every layer on the summed gradient; 'mean' first
  divides the shared layers' part by |O|; 'every_micro_step' is
  `shared_micro_group_step`.
  """
  if config.train.shared_layers == 'every_micro_step':
    return shared_micro_group_step(config, model, tx, state, data, mesh)
  images, labels, paths, aug_keys = group_inputs(config, data, state.seed, state.step)
  images = sharding.split_batch(images, mesh, batch_axis=1)
  labels = sharding.split_batch(labels, mesh, batch_axis=1)
  x = augment_members(config, aug_keys, images)
  grouped = config.sampling.method == 'fair'

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    if grouped:
      logits, new_vars = model.apply(variables, x, paths, train=True, mutable=['batch_stats'])
    elif config.train.uniform_ops == 'all':
      # A path batched over one member turns each edge's conditional into a select
      # over every allowed op's output and statistics: the same step, no conditional.
      logits, new_vars = jax.vmap(
          lambda path: model.apply(variables, x[0], path, train=True,
                                   mutable=['batch_stats']))(paths)
      new_vars = jax.tree.map(lambda a: a[0], new_vars)
    else:
      logits, new_vars = model.apply(variables, x[0], paths[0], train=True,
                                     mutable=['batch_stats'])
      logits = logits[None]
    per_member = cross_entropy(logits, labels, config.train.label_smoothing).mean(-1)
    return per_member.sum(), (new_vars['batch_stats'], logits, per_member)

  grads, (new_stats, logits, per_member) = jax.grad(loss_fn, has_aux=True)(state.params)
  if config.train.shared_layers == 'mean':
    grads = scale_shared(grads, 1 / config_lib.group_size(config))
  correct = (logits.argmax(-1) == labels).sum()
  return finish_step(state, tx, grads, new_stats, per_member.mean(), correct, labels.size)


def unroll_micro_steps() -> bool:
  """Whether shared_micro_group_step unrolls its scan: on the CPU, where XLA runs
  convolutions inside loops many times slower (BUILD.md has the measured cost)."""
  return jax.default_backend() == 'cpu'


def shared_micro_group_step(config, model, tx: SharedLayerOptimizer, state: TrainState, data,
                            mesh=None) -> tuple[TrainState, dict]:
  """One optimizer step where the shared layers step after every micro-batch (one seed).

  train.shared_layers='every_micro_step'. Micro-batch k runs single-path (nn.switch)
  with the shared layers as the k micro-steps before it left them and the cell ops
  as the group found them; the shared layers then take a tx.shared step on its
  gradient. After the group the cell ops take one tx.cells step on the sum of the
  |O| gradients, their strictly fair update. Each micro-batch needs the shared layers
  its predecessor wrote, so the micro-steps are a lax.scan over the group: one
  member's graph to compile. On the CPU the scan is unrolled (unroll_micro_steps):
  |O| copies compile several times longer but run many times faster there. Under
  vmap over seeds nn.switch becomes a select that runs every allowed op, as for
  uniform sampling.
  """
  images, labels, paths, aug_keys = group_inputs(config, data, state.seed, state.step)
  images = sharding.split_batch(images, mesh, batch_axis=1)
  labels = sharding.split_batch(labels, mesh, batch_axis=1)
  x = augment_members(config, aug_keys, images)
  shared, cells = split_shared(state.params)

  def loss_fn(shared, cells, stats, x, labels, path):
    logits, new_vars = model.apply({'params': merge_shared(shared, cells), 'batch_stats': stats},
                                   x, path, train=True, mutable=['batch_stats'])
    loss = cross_entropy(logits, labels, config.train.label_smoothing).mean()
    return loss, (new_vars['batch_stats'], (logits.argmax(-1) == labels).sum())

  def micro_step(carry, member):
    shared, shared_opt, stats, sums = carry
    (loss, (stats, correct)), (g_shared, g_cells) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(shared, cells, stats, *member)
    updates, shared_opt = tx.shared.update(g_shared, shared_opt, shared)
    sums = jax.tree.map(jnp.add, sums, (g_shared, updates, g_cells, loss, correct))
    return (optax.apply_updates(shared, updates), shared_opt, stats, sums), None

  zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  sums = (zeros(shared), zeros(shared), zeros(cells), jnp.zeros(()), jnp.zeros((), jnp.int32))
  (shared, shared_opt, stats, sums), _ = jax.lax.scan(
      micro_step, (shared, state.opt_state['shared'], state.batch_stats, sums),
      (x, labels, paths), unroll=unroll_micro_steps())
  shared_grads, shared_updates, cell_grads, loss_sum, correct = sums
  cell_updates, cells_opt = tx.cells.update(cell_grads, state.opt_state['cells'], cells)
  metrics = step_metrics(state.params, merge_shared(shared_updates, cell_updates),
                         merge_shared(shared_grads, cell_grads), loss_sum / labels.shape[0],
                         correct, labels.size)
  return state.replace(step=state.step + 1,
                       params=merge_shared(shared, optax.apply_updates(cells, cell_updates)),
                       batch_stats=stats, opt_state={'shared': shared_opt, 'cells': cells_opt}
                       ), metrics


def reference_micro_step(config, model, tx_multi, state: TrainState, data, member):
  """Micro-step `member` of the current group, single path, via optax.MultiSteps.

  tx_multi = optax.MultiSteps(tx, K, use_grad_mean=False): it sums K micro-batch
  gradients and applies tx once. state.step counts micro-steps here.
  """
  k = config_lib.group_size(config)
  group = state.step // k
  images, labels, paths, aug_keys = group_inputs(config, data, state.seed, group)
  x = augment_micro_batch(config, aug_keys[member], images[member])

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    logits, new_vars = model.apply(variables, x, paths[member], train=True,
                                   mutable=['batch_stats'])
    loss = cross_entropy(logits, labels[member], config.train.label_smoothing).mean()
    return loss, (new_vars['batch_stats'], logits)

  (loss, (new_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = (logits.argmax(-1) == labels[member]).sum()
  return finish_step(state, tx_multi, grads, new_stats, loss, correct, labels[member].size)


# Where in a run the |O| member gradients of the shared layers are compared
# (with_gradient_probe), as fractions of its optimizer steps: a few fixed points,
# since each costs a group's forward and |O| backward passes.
PROBE_FRACTIONS = (0.0, 0.02, 0.1, 0.25, 0.5, 0.75, 0.98)


def probe_steps(num_steps: int) -> tuple[int, ...]:
  """The optimizer steps (0-based, the state's step before it) probed in a run."""
  return tuple(sorted({min(int(f * num_steps), num_steps - 1) for f in PROBE_FRACTIONS}))


def member_gradients(config, model, state: TrainState, data):
  """Each member's gradient w.r.t. the shared layers: a tree of leaves [K, ...] (one seed).

  The group of state.step, as fair_group_step runs it. Member k's loss reaches the
  shared layers only through its own micro-batch (every layer normalises each
  member with its own batch statistics), so row k is micro-batch k's gradient,
  and the rows sum to the shared layers' part of fair_group_step's gradient.
  """
  images, labels, paths, aug_keys = group_inputs(config, data, state.seed, state.step)
  x = augment_members(config, aug_keys, images)
  shared, cells = split_shared(state.params)

  def member_losses(shared):
    variables = {'params': merge_shared(shared, cells), 'batch_stats': state.batch_stats}
    logits, _ = model.apply(variables, x, paths, train=True, mutable=['batch_stats'])
    return cross_entropy(logits, labels, config.train.label_smoothing).mean(-1)
  return jax.jacrev(member_losses)(shared)


def gradient_coherence(member_grads) -> dict[str, jax.Array]:
  """How alike K member gradients are, per shared layer and over all of them ('all').

  '<layer>/cosine': the mean cosine similarity of the K(K-1)/2 pairs.
  '<layer>/step_multiple': the norm of their sum over their mean norm, the summed
  step in units of one micro-batch's: sqrt(K) for orthogonal gradients, K for
  parallel ones (the |O|-times step the sum would then take).
  """
  layers = {name: member_grads[name] for name in SHARED_LAYERS if name in member_grads}
  out = {}
  for name, tree in {**layers, 'all': member_grads}.items():
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(tree)], axis=1)
    gram = jnp.dot(flat, flat.T, precision=jax.lax.Precision.HIGHEST)
    norms = jnp.sqrt(jnp.diagonal(gram))
    cosines = gram / jnp.maximum(norms[:, None] * norms[None, :], 1e-30)
    k = flat.shape[0]
    out[f'{name}/cosine'] = (cosines.sum() - jnp.trace(cosines)) / (k * (k - 1))
    out[f'{name}/step_multiple'] = jnp.sqrt(jnp.maximum(gram.sum(), 0.0)) / jnp.maximum(
        norms.mean(), 1e-30)
  return out


def compile_gradient_probe(config, model, states, data) -> Callable | None:
  """jit(states, data) -> gradient_coherence of every seed's member gradients, compiled.

  The seeds together (vmap) when XLA's estimate fits the device, else one after
  another (compile_fitting); None, with a warning, where even one seed would not fit:
  the probe is instrumentation and never stops a run.
  """
  def make(seeds_in_parallel):
    def one_seed(state, data):
      return gradient_coherence(member_gradients(config, model, state, data))
    return jax.jit(over_seeds(one_seed, seeds_in_parallel, config.train.seed_loop))
  what = f'comparing the member gradients of {len(config.seeds)} seeds'
  try:
    return compile_fitting(make, states, data, what, len(config.seeds),
                           program_key('gradient_probe', config, 0, states, data))[0]
  except memory.DeviceMemoryError as e:
    logging.warning('%s; the run goes on without the shared_grads/ scalars', e)
    return None


def with_gradient_probe(config, model, train_chunk: Callable, num_steps: int) -> Callable:
  """train_chunk, which also measures gradient_coherence at probe_steps.

  A chunk that starts at or just before a probe step first measures the group of
  the step it starts at, on the states before it donates them; its metrics get
  'shared_grads/<layer>/<measure>' [steps, seeds], NaN but in the first row. Strictly
  fair runs only: uniform sampling's group has one member. The probe compiles at
  its first use.
  """
  if config_lib.group_size(config) < 2:
    return train_chunk
  due = probe_steps(num_steps)
  chunk = min(config.train.steps_per_dispatch, num_steps)
  probe = []  # [compiled or None] once compiled

  def run(states, data):
    start = step_of(states)
    measured = None
    if any(start <= s < start + chunk for s in due):
      if not probe:
        probe.append(compile_gradient_probe(config, model, states, data))
      if probe[0] is not None:
        measured = jax.device_get(probe[0](states, data))
    states, metrics = train_chunk(states, data)
    if measured is not None:
      rows = np.shape(metrics['valid'])[0]
      for name, values in measured.items():
        column = np.full((rows,) + np.shape(values), np.nan, np.float32)
        column[0] = values
        metrics = dict(metrics, **{f'shared_grads/{name}': column})
    return states, metrics
  return run


def over_seeds(one_seed: Callable, seeds_in_parallel: bool = True,
               seed_loop: str = 'vmap') -> Callable:
  """(states [seeds, ...], data) -> one_seed on every seed.

  seed_loop 'vmap': together (vmap) or, not seeds_in_parallel, one after another inside
  the step (lax.map: the same updates, one seed's memory). 'unrolled': one after
  another, each seed's step written out in the program (neither vmap nor a loop, which
  XLA:CPU both runs slowly: its vmapped convolutions are grouped ones).
  """
  if seed_loop == 'unrolled':
    return functools.partial(_unrolled_over_seeds, one_seed)
  if seeds_in_parallel:
    return jax.vmap(one_seed, in_axes=(0, None))
  return lambda states, data: jax.lax.map(lambda s: one_seed(s, data), states)


def _unrolled_over_seeds(one_seed: Callable, states, data):
  num_seeds = jax.tree.leaves(states)[0].shape[0]
  outs = [one_seed(jax.tree.map(lambda x, i=i: x[i], states), data) for i in range(num_seeds)]
  return jax.tree.map(lambda *per_seed: jnp.stack(per_seed), *outs)


def chunked(step_fn: Callable, num_steps: int, chunk: int) -> Callable:
  """jit(states, data) -> (states, metrics [chunk, ...]) running step_fn `chunk` times.

  chunk > 1 scans the steps in one dispatch (fewer launches on a GPU); steps past
  num_steps are skipped and marked invalid, so one compiled function serves every
  chunk. chunk == 1 is a plain step: XLA:CPU runs convolutions inside loops about
  10x slower than outside, so CPU configs dispatch one step at a time.
  """
  # Jitted, the step is traced once for both branches of the scan's cond (the skip
  # branch's eval_shape hits jit's trace cache): half the small step's trace time.
  step_fn = jax.jit(step_fn)

  def run(states, data):
    new_states, metrics = step_fn(states, data)
    return new_states, dict(metrics, valid=jnp.ones_like(metrics['finite']))

  def one_step(states, data):
    new_states, metrics = run(states, data)
    return new_states, jax.tree.map(lambda m: m[None], metrics)

  def scanned(states, data):
    def body(states, _):
      def skip(states):
        shapes = jax.eval_shape(run, states, data)[1]
        return states, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # invalid
      return jax.lax.cond(states.step.reshape(-1)[0] < num_steps, lambda s: run(s, data),
                          skip, states)
    return jax.lax.scan(body, states, None, length=chunk)

  return jax.jit(one_step if chunk == 1 else scanned, donate_argnums=0)


def make_train_chunk(config, model, tx, num_steps: int, chunk: int, mesh=None,
                     seeds_in_parallel: bool = True) -> Callable:
  """jit(states, data) -> (states, metrics [chunk, seeds]) running `chunk` fair-group
  steps of every seed (`chunked`, `over_seeds`)."""
  def one_seed(state, data):
    return fair_group_step(config, model, tx, state, data, mesh)
  return chunked(over_seeds(one_seed, seeds_in_parallel, config.train.seed_loop), num_steps,
                 chunk)


# Compiled programs of this process, newest last, by program_key: the same program
# asked for again (a resume in the same process, a sweep's repeated config, the
# tests' many short runs) is neither traced nor compiled again. A few suffice.
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_KEPT = 8


def program_key(kind: str, config, num_steps: int, states, data, mesh=None) -> str:
  """What a compiled train program depends on: its kind, the whole config, the step
  count, the device mesh, the backend's micro-step choice and x64, and each argument
  array's shape, dtype, sharding and whether it is committed to its device (jit
  compiles committed and uncommitted arrays apart)."""
  arrays = [(x.shape, str(x.dtype), str(x.sharding), x.committed)
            for x in jax.tree.leaves((states, data))]
  return json.dumps([kind, config_lib.flatten(config), num_steps, str(mesh),
                     unroll_micro_steps(), jax.config.jax_enable_x64, str(arrays)],
                    sort_keys=True, default=str)


def compile_fitting(make_chunk: Callable[[bool], Callable], states, data, what: str,
                    num_seeds: int, key: str | None = None) -> tuple[Callable, bool]:
  """(compiled make_chunk(seeds_in_parallel), seeds_in_parallel): the seeds step one
  after another when all at once would not fit the device.

  what: the work, for messages ('training 5 seeds of C=32 N=2 at batch 256'). Memory
  that does not suffice even for one seed at a time is a DeviceMemoryError naming
  the estimate and the limit, before anything runs. key (program_key) keeps the
  compiled programs for the rest of the process; the memory rule is applied anew.
  """
  def compiled(seeds_in_parallel):
    if key is None:
      return make_chunk(seeds_in_parallel).lower(states, data).compile()
    cache_key = (key, seeds_in_parallel)
    if cache_key in _COMPILED:
      _COMPILED.move_to_end(cache_key)
    else:
      _COMPILED[cache_key] = make_chunk(seeds_in_parallel).lower(states, data).compile()
      while len(_COMPILED) > _COMPILED_KEPT:
        _COMPILED.popitem(last=False)
    return _COMPILED[cache_key]
  parallel = True
  train_chunk = compiled(parallel)
  if num_seeds > 1 and not memory.fits(train_chunk):
    logging.warning('%s needs an estimated %.1f GiB, over the %.1f GiB that %s allows: '
                    'the seeds train one after another', what,
                    memory.estimate_bytes(train_chunk) / 2**30,
                    memory.device_limit_bytes() / 2**30, memory.memory_name())
    parallel = False
    train_chunk = compiled(parallel)
    what += ', one seed at a time,'
  memory.check_fits(train_chunk, what, _MEMORY_HINT_HOST if memory.on_host() else _MEMORY_HINT)
  return train_chunk, parallel


_MEMORY_HINT = ('train fewer seeds per run (--config.seeds), a smaller train.batch_size '
                'or train.steps_per_dispatch, let JAX take more of the GPU '
                '(XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 by default) or use a larger device')
_MEMORY_HINT_HOST = ('on a CPU, lower --config.train.batch_size or --config.model.channels, '
                     'or start from configs/tiny.py, the CPU-sized run')


def training_description(config) -> str:
  return (f'training {len(config.seeds)} seeds of C={config.model.channels} '
          f'N={config.model.cells_per_stage} at batch {config.train.batch_size}')


def compile_train_chunk(config, model, tx, num_steps: int, states, data, mesh=None):
  """(compiled train chunk, seeds_in_parallel) of the one-shot step (compile_fitting)."""
  chunk = min(config.train.steps_per_dispatch, num_steps)

  def make_chunk(seeds_in_parallel):
    return make_train_chunk(config, model, tx, num_steps, chunk, mesh, seeds_in_parallel)
  return compile_fitting(make_chunk, states, data, training_description(config),
                         len(config.seeds),
                         program_key('train', config, num_steps, states, data, mesh))


def format_eta(seconds: float) -> str:
  """'4m05s', '3h07m' or, past two days, '12d 4h': the ETA as a person reads it."""
  seconds = int(max(seconds, 0))
  days, rest_of_day = divmod(seconds, 86400)
  if days >= 2:
    return f'{days}d {rest_of_day // 3600}h'
  h, rest = divmod(seconds, 3600)
  return f'{h}h{rest // 60:02d}m' if h else f'{rest // 60}m{rest % 60:02d}s'


class DivergenceError(RuntimeError):
  """A non-finite loss or gradient; the last good checkpoint is kept."""


def _check_finite(metrics, step_before: int, config, workdir, member_names=()):
  """Stop on the first non-finite loss or gradient of a chunk (nothing is saved).

  metrics [steps, seeds] or [steps, seeds, members] (few-shot: one column per
  sub-network, member_names saying which); the message names the step, the seed
  and the member.
  """
  bad = np.asarray(metrics['valid'], bool) & ~np.asarray(metrics['finite'], bool)
  if not bad.any():
    return
  step_row, seed_col, *member = np.argwhere(bad)[0]
  step = step_before + int(step_row) + 1
  where = f'seed {tuple(config.seeds)[int(seed_col)]}'
  if member:
    j = int(member[0])
    where += ', ' + (member_names[j] if j < len(member_names) else f'member {j}')
  message = (f'non-finite loss or gradient at optimizer step {step}, {where} '
             f'(lr={config.train.lr}, precision={config.train.precision}, '
             f'masked_ops={config.space.masked_ops!r}); the last good checkpoint is kept')
  workdir_lib.mark_failed(workdir, message)
  raise DivergenceError(message)


def load_device_data(config) -> data_lib.DeviceData:
  """The configured data set on the device: 45k/5k split, optional train subset."""
  d = config.data
  arrays = data_lib.load_arrays(d.source, d.path, d.tfds_data_dir, d.synthetic_size,
                                d.split_seed, dataset=d.dataset, cache_dir=d.cache_dir)
  data = data_lib.to_device(arrays, d.val_size, d.split_seed, d.dataset)
  if d.train_subset:
    if d.train_subset > data.num_train:
      raise config_lib.ConfigError(f'data.train_subset={d.train_subset} exceeds the '
                                   f'{data.num_train} training images')
    data = data.replace(train_images=data.train_images[:d.train_subset],
                        train_labels=data.train_labels[:d.train_subset])
  return data


def _per_seed(values) -> np.ndarray:
  """[steps, seeds, *members] -> [steps, seeds]: the mean over the members."""
  values = np.asarray(values)
  return values.reshape(values.shape[:2] + (-1,)).mean(-1)


def _log_progress(writer, config, metrics, *, step, num_steps, rate, lr, epoch,
                  images_per_step, tb_prefix='train', log_prefix='') -> float:
  """Console line and TensorBoard scalars from a chunk's metrics [steps, seeds, *members]
  (the members, few-shot sub-networks, averaged); returns the ETA in seconds."""
  valid = _per_seed(np.asarray(metrics['valid'], bool))[:, 0] == 1  # all members valid
  losses = _per_seed(metrics['loss'])[valid]
  loss = float(losses.mean())
  acc = 100.0 * float(_per_seed(metrics['accuracy'])[valid].mean())  # percent, as scoring
  eta = (num_steps - step) * images_per_step / max(rate, 1e-9)
  logging.info('%sepoch %.2f/%d step %d/%d loss %.4f acc %.1f%% lr %.5f %.0f img/s ETA %s',
               log_prefix, epoch, config.train.epochs, step, num_steps, loss, acc, lr, rate,
               format_eta(eta))
  writer.add_scalar(f'{tb_prefix}/loss', loss, step)
  writer.add_scalar(f'{tb_prefix}/accuracy_percent', acc, step)
  writer.add_scalar(f'{tb_prefix}/learning_rate', lr, step)
  writer.add_scalar(f'{tb_prefix}/images_per_second', rate, step)
  for i, seed in enumerate(config.seeds):
    writer.add_scalar(f'{tb_prefix}/loss_seed_{seed}', float(losses[:, i].mean()), step)
  writer.flush()
  return eta


# A run on the CPU that would take longer than this says so once, and names the CPU config.
_LONG_ON_HOST_SECONDS = 3 * 3600


def warn_if_long_on_host(eta: float, log_prefix: str = '') -> None:
  if memory.on_host() and eta > _LONG_ON_HOST_SECONDS:
    logging.warning('%sthis run trains on the CPU and needs about %s more at this rate; '
                    'configs/tiny.py is sized for a CPU (a GPU runs this config in minutes)',
                    log_prefix, format_eta(eta))


def log_step_metrics(writer, metrics, step_before: int, tb_prefix: str = 'train') -> None:
  """TensorBoard scalars of every step of a chunk's metrics [steps, seeds, *members]
  (seeds and sub-networks averaged): update_norm/{shared,cells}, relative_update/...
  (the update's norm over the weights'), and shared_grads/... where probed."""
  valid = _per_seed(np.asarray(metrics['valid'], bool))[:, 0] == 1
  for row in np.flatnonzero(valid):
    step = step_before + int(row) + 1
    for part in ('shared', 'cells'):
      if f'update_norm_{part}' not in metrics:
        continue
      update = _per_seed(metrics[f'update_norm_{part}'])[row]
      weights = _per_seed(metrics[f'param_norm_{part}'])[row]
      writer.add_scalar(f'{tb_prefix}/update_norm/{part}', float(update.mean()), step)
      if (weights > 0).all():  # a subset of parameter-free ops has no cell weights
        writer.add_scalar(f'{tb_prefix}/relative_update/{part}',
                          float((update / weights).mean()), step)
    for key, values in metrics.items():
      value = _per_seed(values)[row] if key.startswith('shared_grads/') else None
      if value is not None and np.isfinite(value).all():
        writer.add_scalar(f'{tb_prefix}/{key}', float(value.mean()), step)


def images_per_step(config, states) -> int:
  """Training images of one optimizer step: a group for each seed (and sub-network)."""
  return int(np.size(states.step)) * config_lib.group_size(config) * config.train.batch_size


def step_of(states) -> int:
  """The optimizer step of stacked states (all seeds, and sub-networks, step together)."""
  return int(np.asarray(states.step).reshape(-1)[0])


def train_loop(config, workdir: str, states, data: data_lib.DeviceData,
               compile_chunk: Callable, ckpt: checkpoint.Checkpointer, *, what: str,
               stop_after_steps: int | None = None, member_names=(), tb_prefix='train',
               log_prefix='', on_steps: Callable | None = None) -> TrainState:
  """Train `states` (fresh or restored) to total_steps(config): the loop of both phases.

  compile_chunk(states, data) -> the compiled chunk (states, data) -> (states,
  metrics [steps, seeds, *members]); called only when there are steps to train.
  Logs a console line with an ETA and TensorBoard scalars (tb_prefix/...) every
  train.log_every_steps; saves with `ckpt` every train.checkpoint_every_steps and
  at the end; a non-finite loss or gradient writes FAILED naming the step, seed
  and member (member_names) and raises DivergenceError; SIGTERM or SIGUSR1 save at
  the next step boundary and raise Preempted; the final step writes ckpt.marker.
  stop_after_steps ends the call early (tests, time-limited jobs). Closes ckpt.
  what: the step being compiled, for the log ('the train step (5 seeds)').
  on_steps(states, step_before, step), if given, runs after every chunk and before
  that step's checkpoint is saved (trajectory.Recorder: a kill between the two makes
  the resumed run redo it, never skip it).
  """
  num_steps = total_steps(config, data.num_train)
  schedule = learning_rate_schedule(config, data.num_train)
  micro_per_epoch = steps_per_epoch(config, data.num_train)
  step_images = images_per_step(config, states)
  writer = workdir_lib.summary_writer(workdir)
  step = step_of(states)
  if step:
    logging.info('%sresumed from step %d of %d', log_prefix, step, num_steps)
  last_saved = last_logged = step
  warned_long = False
  try:
    with preemption.PreemptionWatcher(
        kept=functools.partial(workdir_lib.kept_text, workdir)) as watcher:
      train_chunk = None
      while step < num_steps and (stop_after_steps is None or step < stop_after_steps):
        if train_chunk is None:  # a finished phase compiles nothing
          logging.info('%scompiling %s; about a minute on a GPU, a few on a CPU',
                       log_prefix, what)
          compile_start = time.time()
          train_chunk = compile_chunk(states, data)
          logging.info('%scompiled in %.0f s', log_prefix, time.time() - compile_start)
          last_log_time = time.time()
        step_before = step
        states, metrics = train_chunk(states, data)
        metrics = jax.device_get(metrics)
        _check_finite(metrics, step_before, config, workdir, member_names)
        log_step_metrics(writer, metrics, step_before, tb_prefix)
        step = step_of(states)
        if on_steps is not None:
          on_steps(states, step_before, step)
        if step - last_logged >= config.train.log_every_steps or step == num_steps:
          now = time.time()
          rate = (step - last_logged) * step_images / max(now - last_log_time, 1e-9)
          eta = _log_progress(writer, config, metrics, step=step, num_steps=num_steps,
                              rate=rate, lr=float(schedule(step - 1)),
                              epoch=step * config_lib.group_size(config) / micro_per_epoch,
                              images_per_step=step_images, tb_prefix=tb_prefix,
                              log_prefix=log_prefix)
          if not warned_long:
            warn_if_long_on_host(eta, log_prefix)
            warned_long = True
          last_logged, last_log_time = step, now
        # On the grid of multiples of checkpoint_every_steps, also after a resume from a
        # preemption's step: eval.average_checkpoints averages only checkpoints on it.
        every = config.train.checkpoint_every_steps
        if step // every > last_saved // every or step == num_steps:
          ckpt.save(step, states)
          last_saved = step
        if watcher.requested:
          ckpt.save(step, states)
          raise preemption.Preempted(step, watcher.signal_name)
    ckpt.save(step, states)
  finally:
    ckpt.close()
    writer.close()
  if step == num_steps:
    workdir_lib.mark_trained(workdir, step, ckpt.marker)
  return states


def train(config, workdir: str, data: data_lib.DeviceData | None = None, *,
          stop_after_steps: int | None = None, on_steps: Callable | None = None
          ) -> TrainState:
  """Train every seed of the run; resume from the newest checkpoint in workdir.

  stop_after_steps ends this call early (tests, time-limited jobs); SIGTERM or
  SIGUSR1 save a checkpoint at the next step boundary and raise Preempted. The
  same call again resumes. on_steps: train_loop's hook (the ranking trajectory).
  """
  config_lib.validate(config)
  workdir_lib.prepare(workdir, config)
  if data is None:
    data = load_device_data(config)
  model = create_model(config)
  tx = create_optimizer(config, data.num_train)
  num_steps = total_steps(config, data.num_train)
  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
  states = ckpt.restore_latest(init_states(model, tx, tuple(config.seeds),
                                           data.train_images.shape[1:]))
  mesh = sharding.data_mesh()
  if mesh is not None:
    sharding.check_batch_size(config.train.batch_size, mesh)
    logging.info('data parallel over %d devices', mesh.size)
    states, data = sharding.replicate((states, data), mesh)

  def compile_chunk(states, data):
    chunk = compile_train_chunk(config, model, tx, num_steps, states, data, mesh)[0]
    return with_gradient_probe(config, model, chunk, num_steps)
  return train_loop(config, workdir, states, data, compile_chunk, ckpt,
                    what=f'the train step ({len(config.seeds)} seeds)',
                    stop_after_steps=stop_after_steps, on_steps=on_steps)
