"""Super-network training (SPEC 4-5): optimizer, train steps, the loop of one run.

All seeds of a run train together: every array of the train state has a leading
seed axis and the step is vmapped over it. Randomness is a pure function of
(seed, step), so a resumed run draws exactly what the uninterrupted one would.

Two train steps compute the same update for strictly fair sampling:
  * `fair_group_step` (used): the whole group of |O| micro-batches in one static
    graph (model.py's fair-group mode); loss = sum of micro-batch mean losses, so
    the gradient is the SUM of the micro-batch gradients (SPEC 4).
  * `reference_micro_step`: one micro-batch on one path through `nn.switch`,
    accumulated by optax.MultiSteps (sum, not mean); the straightforward reference.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

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


def create_optimizer(config, num_train: int) -> optax.GradientTransformation:
  """PyTorch SGD semantics: clip the summed gradient, add decay, momentum, lr."""
  t = config.train
  parts = []
  if t.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(t.clip_norm))
  if t.weight_decay > 0:
    parts.append(optax.add_decayed_weights(t.weight_decay, mask=weight_decay_mask))
  parts.append(optax.sgd(learning_rate_schedule(config, num_train), momentum=t.momentum))
  return optax.chain(*parts)


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


def finish_step(state, tx, grads, new_stats, loss, correct, count):
  """tx on the (summed) gradient, the step counter, and the metrics of one step."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  metrics = dict(loss=loss, accuracy=correct / count,
                 grad_norm=optax.tree_utils.tree_norm(grads))
  metrics['finite'] = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=new_stats, opt_state=opt_state), metrics


def fair_group_step(config, model, tx, state: TrainState, data,
                    mesh=None) -> tuple[TrainState, dict]:
  """One optimizer step on a whole group in one graph (fast path, one seed).

  Strictly fair: the |O| micro-batches run as members of one fair-group forward.
  Uniform: the group has one member and runs the single-path forward. With a
  device mesh each micro-batch is split across the devices (sharding.py).
  """
  images, labels, paths, aug_keys = group_inputs(config, data, state.seed, state.step)
  images = sharding.split_batch(images, mesh, batch_axis=1)
  labels = sharding.split_batch(labels, mesh, batch_axis=1)
  x = augment_members(config, aug_keys, images)
  grouped = config.sampling.method == 'fair'

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    if grouped:
      logits, new_vars = model.apply(variables, x, paths, train=True, mutable=['batch_stats'])
    else:
      logits, new_vars = model.apply(variables, x[0], paths[0], train=True,
                                     mutable=['batch_stats'])
      logits = logits[None]
    per_member = cross_entropy(logits, labels, config.train.label_smoothing).mean(-1)
    return per_member.sum(), (new_vars['batch_stats'], logits, per_member)

  grads, (new_stats, logits, per_member) = jax.grad(loss_fn, has_aux=True)(state.params)
  correct = (logits.argmax(-1) == labels).sum()
  return finish_step(state, tx, grads, new_stats, per_member.mean(), correct, labels.size)


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


def over_seeds(one_seed: Callable, seeds_in_parallel: bool = True) -> Callable:
  """(states [seeds, ...], data) -> one_seed on every seed: together (vmap) or one
  after another inside the step (lax.map: the same updates, one seed's memory)."""
  if seeds_in_parallel:
    return jax.vmap(one_seed, in_axes=(0, None))
  return lambda states, data: jax.lax.map(lambda s: one_seed(s, data), states)


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
  return chunked(over_seeds(one_seed, seeds_in_parallel), num_steps, chunk)


def compile_fitting(make_chunk: Callable[[bool], Callable], states, data, what: str,
                    num_seeds: int) -> tuple[Callable, bool]:
  """(compiled make_chunk(seeds_in_parallel), seeds_in_parallel): the seeds step one
  after another when all at once would not fit the device.

  what: the work, for messages ('training 5 seeds of C=32 N=2 at batch 256'). Memory
  that does not suffice even for one seed at a time is a DeviceMemoryError naming
  the estimate and the limit, before anything runs.
  """
  def compiled(seeds_in_parallel):
    return make_chunk(seeds_in_parallel).lower(states, data).compile()
  parallel = True
  train_chunk = compiled(parallel)
  if num_seeds > 1 and not memory.fits(train_chunk):
    logging.warning('%s needs an estimated %.1f GiB, over the device limit of %.1f GiB: '
                    'the seeds train one after another', what,
                    memory.estimate_bytes(train_chunk) / 2**30,
                    memory.device_limit_bytes() / 2**30)
    parallel = False
    train_chunk = compiled(parallel)
    what += ', one seed at a time,'
  memory.check_fits(train_chunk, what,
                    'train fewer seeds per run (--config.seeds), a smaller train.batch_size '
                    'or train.steps_per_dispatch, let JAX take more of the GPU '
                    '(XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 by default) or use a larger device')
  return train_chunk, parallel


def training_description(config) -> str:
  return (f'training {len(config.seeds)} seeds of C={config.model.channels} '
          f'N={config.model.cells_per_stage} at batch {config.train.batch_size}')


def compile_train_chunk(config, model, tx, num_steps: int, states, data, mesh=None):
  """(compiled train chunk, seeds_in_parallel) of the one-shot step (compile_fitting)."""
  chunk = min(config.train.steps_per_dispatch, num_steps)

  def make_chunk(seeds_in_parallel):
    return make_train_chunk(config, model, tx, num_steps, chunk, mesh, seeds_in_parallel)
  return compile_fitting(make_chunk, states, data, training_description(config),
                         len(config.seeds))


def format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
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
                  images_per_step, tb_prefix='train', log_prefix='') -> None:
  """Console line and TensorBoard scalars from a chunk's metrics [steps, seeds, *members]
  (the members, few-shot sub-networks, averaged)."""
  valid = _per_seed(np.asarray(metrics['valid'], bool))[:, 0] == 1  # all members valid
  losses = _per_seed(metrics['loss'])[valid]
  loss = float(losses.mean())
  acc = 100.0 * float(_per_seed(metrics['accuracy'])[valid].mean())  # percent, as scoring
  images_left = (num_steps - step) * images_per_step
  logging.info('%sepoch %.2f/%d step %d/%d loss %.4f acc %.1f%% lr %.5f %.0f img/s ETA %s',
               log_prefix, epoch, config.train.epochs, step, num_steps, loss, acc, lr, rate,
               format_eta(images_left / max(rate, 1e-9)))
  writer.add_scalar(f'{tb_prefix}/loss', loss, step)
  writer.add_scalar(f'{tb_prefix}/accuracy_percent', acc, step)
  writer.add_scalar(f'{tb_prefix}/learning_rate', lr, step)
  writer.add_scalar(f'{tb_prefix}/images_per_second', rate, step)
  for i, seed in enumerate(config.seeds):
    writer.add_scalar(f'{tb_prefix}/loss_seed_{seed}', float(losses[:, i].mean()), step)
  writer.flush()


def images_per_step(config, states) -> int:
  """Training images of one optimizer step: a group for each seed (and sub-network)."""
  return int(np.size(states.step)) * config_lib.group_size(config) * config.train.batch_size


def step_of(states) -> int:
  """The optimizer step of stacked states (all seeds, and sub-networks, step together)."""
  return int(np.asarray(states.step).reshape(-1)[0])


def train_loop(config, workdir: str, states, data: data_lib.DeviceData,
               compile_chunk: Callable, ckpt: checkpoint.Checkpointer, *, what: str,
               stop_after_steps: int | None = None, member_names=(), tb_prefix='train',
               log_prefix='') -> TrainState:
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
  try:
    with preemption.PreemptionWatcher() as watcher:
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
        step = step_of(states)
        if step - last_logged >= config.train.log_every_steps or step == num_steps:
          now = time.time()
          rate = (step - last_logged) * step_images / max(now - last_log_time, 1e-9)
          _log_progress(writer, config, metrics, step=step, num_steps=num_steps, rate=rate,
                        lr=float(schedule(step - 1)),
                        epoch=step * config_lib.group_size(config) / micro_per_epoch,
                        images_per_step=step_images, tb_prefix=tb_prefix,
                        log_prefix=log_prefix)
          last_logged, last_log_time = step, now
        if step - last_saved >= config.train.checkpoint_every_steps or step == num_steps:
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
          stop_after_steps: int | None = None) -> TrainState:
  """Train every seed of the run; resume from the newest checkpoint in workdir.

  stop_after_steps ends this call early (tests, time-limited jobs); SIGTERM or
  SIGUSR1 save a checkpoint at the next step boundary and raise Preempted. The
  same call again resumes.
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
    return compile_train_chunk(config, model, tx, num_steps, states, data, mesh)[0]
  return train_loop(config, workdir, states, data, compile_chunk, ckpt,
                    what=f'the train step ({len(config.seeds)} seeds)',
                    stop_after_steps=stop_after_steps)
