"""Few-shot super-networks (Zhao et al., "Few-shot Neural Architecture Search", ICML 2021).

The trained one-shot super-network is split on one edge e (`fewshot.split_edge`):
sub-network j holds op allowed[j] on edge e of every cell and all allowed ops on
the other five edges, so the J = |allowed| sub-networks partition the (masked)
space. Each starts as a copy of the one-shot weights and BN statistics and trains
`fewshot.epochs` more epochs with the run's sampler: strictly fair over the five
other edges (a group of |O| micro-batches in which each of them walks a
permutation of the allowed ops) or uniform. An arch is scored by the sub-network
that holds its op on edge e.

Layout: every array of the few-shot train state has a leading sub-network axis
after the seed axis, [seeds, J, ...]; sub-network j's variables are an ordinary
super-network tree (the unused ops of its split edge included, inert but for
weight decay, as in a super-network trained alone), so the optimizer, checkpoints
and scoring treat it as one more batch axis.

One step, one graph, no wasted FLOPs: inside a sub-network the split edge is not
a permutation over the group's members (all hold op j), so `model.Edge.group`
cannot run it; `model.Edge.same` runs op j on all K members at once. The J
sub-networks run one after another inside the step (`lax.map`), with j a loop
counter that no seed depends on, so the split edge is a real conditional that
computes only op j (its jaxpr keeps one `cond` per cell and pass). The other
designs, per average-path training image of the small net (C=32, N=2; 106 MMAC,
of which the split edge is 12.6 MMAC = 12%):
  * vmap over sub-networks (`sub_networks_in_parallel=True`, kept as an option):
    j becomes batched and the split edge a select that computes all 5 ops (63
    MMAC): 156 MMAC per image, +48% FLOPs; parallel, which may still win on an
    underused GPU (not measured).
  * J separately compiled steps with op j static: no waste, J x the compile time
    (5 x the one-shot step's; 64 s on the H200 today).
  * the sub-network axis inside the model, the split edge running op j on
    sub-network j's members with sub-network j's weights and every other layer
    batched over J: no waste and parallel, but every module of model.py lifted
    over J (nn.vmap) with the BN group semantics checked again; left for later.

The phase in a run (run.py calls these after train.train):
  * `train_fewshot` warm-starts the sub-networks from the finished one-shot states
    (only while no few-shot checkpoint exists; else it resumes from the newest one)
    and trains them with train.train_loop, the loop of the one-shot phase: its
    checkpoints live in WORKDIR/checkpoints_fewshot (unreadable ones set aside in
    checkpoints_fewshot_unreadable), FEWSHOT_TRAINED names its final step, and
    SIGTERM/SIGUSR1, divergence and resume behave as in the one-shot phase.
  * `restore_fewshot_states` restores exactly the step FEWSHOT_TRAINED names, for
    (re-)scoring; `score_archs` scores archs, each with its own sub-network.
"""
from __future__ import annotations

import functools
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import sampling
from spos_jax import scoring
from spos_jax import space
from spos_jax import train
from spos_jax import workdir as workdir_lib

# Streams of each seed: train.py uses 0..3; few-shot sub-network j uses
# fold_in(fold_in(seed key, _FEWSHOT), j), split into these.
_FEWSHOT = 11
_DATA, _PATH, _AUGMENT = range(3)


class FewShotError(RuntimeError):
  """The few-shot phase cannot start or be scored (no finished one-shot or few-shot run)."""


def split_edge(config) -> int:
  """The edge the super-network is split on; ConfigError when few-shot is off."""
  if not config_lib.fewshot_enabled(config):
    raise config_lib.ConfigError(
        f'fewshot.split_edge={config.fewshot.split_edge} turns few-shot off; set an edge '
        f'index in 0..{space.NUM_EDGES - 1}')
  return config.fewshot.split_edge


def split_ops(config) -> tuple[int, ...]:
  """Op of the split edge in each sub-network: sub-network j holds allowed[j]."""
  return config_lib.allowed_ops(config)


def train_config(config) -> ml_collections.ConfigDict:
  """The config of the few-shot phase: train.epochs = fewshot.epochs, no warm-up
  (the sub-networks start trained); everything else as the one-shot run."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.train.epochs = config.fewshot.epochs
  out.train.warmup_epochs = 0.0
  return out


def create_model(config, **overrides):
  """The super-network whose split edge runs one op for a whole fair group."""
  return train.create_model(config, split_edge=split_edge(config), **overrides)


def create_optimizer(config, num_train: int) -> optax.GradientTransformation:
  """The run's SGD, with its cosine schedule restarted over fewshot.epochs."""
  return train.create_optimizer(train_config(config), num_train)


def total_steps(config, num_train: int) -> int:
  """Optimizer steps of each sub-network (all sub-networks step together)."""
  return train.total_steps(train_config(config), num_train)


def warm_start(states: train.TrainState, tx, config) -> train.TrainState:
  """One-shot states [seeds, ...] -> few-shot states [seeds, J, ...].

  Each sub-network copies its seed's weights and BN statistics; step restarts at
  0 and the optimizer state is fresh (zero momentum, the schedule at its start):
  the sub-networks optimise new objectives on a new schedule, and the one-shot
  momentum is the gradient history of the whole space, mostly other sub-networks'.
  """
  j = len(split_ops(config))
  copy = lambda a: jnp.repeat(jnp.asarray(a)[:, None], j, axis=1)
  params = jax.tree.map(copy, states.params)
  return train.TrainState(
      seed=copy(states.seed), step=jnp.zeros_like(copy(states.step)), params=params,
      batch_stats=jax.tree.map(copy, states.batch_stats),
      opt_state=jax.vmap(jax.vmap(tx.init))(params))


def group_inputs(config, data: data_lib.DeviceData, seed, sub, step):
  """Micro-batches, labels, paths and augmentation keys of sub-network `sub`'s step.

  As train.group_inputs, from the sub-network's own key streams; the paths'
  split-edge column holds the sub-network's op (in every cell when unshared).
  """
  k = config_lib.group_size(config)
  allowed = config_lib.allowed_ops(config)
  num_cells = 3 * config.model.cells_per_stage if config.sampling.topology == 'unshared' else None
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), _FEWSHOT), sub)
  stream = functools.partial(jax.random.fold_in, key)
  micro_steps = step * k + jnp.arange(k)
  index_fn = functools.partial(data_lib.micro_batch_indices, num_train=data.num_train,
                               batch_size=config.train.batch_size)
  indices = jax.vmap(index_fn, in_axes=(None, 0))(stream(_DATA), micro_steps)
  path_key = jax.random.fold_in(stream(_PATH), step)
  if config.sampling.method == 'fair':
    paths = sampling.fair_group(path_key, allowed, num_cells)
  else:
    paths = sampling.uniform_path(path_key, allowed, num_cells)[None]
  paths = paths.at[..., split_edge(config)].set(jnp.asarray(split_ops(config))[sub])
  aug_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(stream(_AUGMENT), micro_steps)
  return data.train_images[indices], data.train_labels[indices], paths, aug_keys


def sub_network_step(config, model, tx, state: train.TrainState, data, sub):
  """One optimizer step of sub-network `sub` (one seed): its whole group in one graph.

  model: `create_model(config)`. The split edge runs op split_ops[sub] on every
  member (model.Edge.same); the other edges run the fair group as in
  train.fair_group_step. Loss = sum of the micro-batch mean losses.
  """
  images, labels, paths, aug_keys = group_inputs(config, data, state.seed, sub, state.step)
  x = train.augment_members(config, aug_keys, images)
  op = jnp.asarray(split_ops(config))[sub]
  grouped = config.sampling.method == 'fair'

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    inputs = (x, paths) if grouped else (x[0], paths[0])
    logits, new_vars = model.apply(variables, *inputs, train=True, split_op=op,
                                   mutable=['batch_stats'])
    logits = logits if grouped else logits[None]
    per_member = train.cross_entropy(logits, labels, config.train.label_smoothing).mean(-1)
    return per_member.sum(), (new_vars['batch_stats'], logits, per_member)

  grads, (new_stats, logits, per_member) = jax.grad(loss_fn, has_aux=True)(state.params)
  correct = (logits.argmax(-1) == labels).sum()
  return train.finish_step(state, tx, grads, new_stats, per_member.mean(), correct, labels.size)


def reference_micro_step(config, model, tx_multi, state: train.TrainState, data, sub, member):
  """Micro-step `member` of sub-network `sub`'s current group, single path (reference).

  model: the plain super-network (train.create_model); the path's split-edge
  column holds op j, so it runs through nn.switch like every other edge.
  tx_multi = optax.MultiSteps(tx, K, use_grad_mean=False); state.step counts
  micro-steps, as in train.reference_micro_step.
  """
  k = config_lib.group_size(config)
  images, labels, paths, aug_keys = group_inputs(config, data, state.seed, sub, state.step // k)
  x = train.augment_micro_batch(config, aug_keys[member], images[member])

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    logits, new_vars = model.apply(variables, x, paths[member], train=True,
                                   mutable=['batch_stats'])
    loss = train.cross_entropy(logits, labels[member], config.train.label_smoothing).mean()
    return loss, (new_vars['batch_stats'], logits)

  (loss, (new_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = (logits.argmax(-1) == labels[member]).sum()
  return train.finish_step(state, tx_multi, grads, new_stats, loss, correct, labels[member].size)


def make_train_chunk(config, model, tx, num_steps: int, chunk: int, *,
                     sub_networks_in_parallel: bool = False,
                     seeds_in_parallel: bool = True) -> Callable:
  """jit(states [seeds, J, ...], data) -> (states, metrics [chunk, seeds, J]).

  As train.make_train_chunk (train.chunked: chunk > 1 scans steps, those past
  num_steps skipped and marked invalid). The sub-networks of a seed step one after another
  (lax.map: the split edge computes only its op) or, with
  sub_networks_in_parallel, together (vmap: the split edge computes every op).
  """
  j = len(split_ops(config))
  step = functools.partial(sub_network_step, config, model, tx)

  def one_seed(sub_states, data):
    subs = jnp.arange(j)
    if sub_networks_in_parallel:
      return jax.vmap(step, in_axes=(0, None, 0))(sub_states, data, subs)
    return jax.lax.map(lambda args: step(args[0], data, args[1]), (sub_states, subs))

  return train.chunked(train.over_seeds(one_seed, seeds_in_parallel, config.train.seed_loop),
                       num_steps, chunk)


def sub_network_of(config, archs: np.ndarray) -> np.ndarray:
  """Index j of the sub-network that holds each arch [m, 6] (its op on the split edge).

  An arch whose split-edge op is masked exists in no sub-network: ArchError.
  """
  archs = np.asarray(archs, np.int32).reshape(-1, space.NUM_EDGES)
  ops = np.asarray(split_ops(config))
  if not space.uses_only(archs, ops).all():
    raise space.ArchError('an arch to score uses a masked op')
  return np.searchsorted(ops, archs[:, split_edge(config)])


def packing_archs(config, archs: np.ndarray) -> np.ndarray:
  """Archs of one sub-network as space.pack_fair_groups should see them.

  They all hold one op on the split edge, so fair groups over all six edges would
  hold one of them each; with that column replaced by another edge's, a group is a
  permutation there wherever it is at that edge, distinct archs stay distinct, and
  the split model ignores the column (it runs its split_op).
  """
  edge = split_edge(config)
  out = np.array(archs, np.int32).reshape(-1, space.NUM_EDGES)
  out[:, edge] = out[:, (edge + 1) % space.NUM_EDGES]
  return out


def seed_variables(sub_states: train.TrainState, i: int):
  """(params, batch_stats) [J, ...] of the i-th seed of few-shot states."""
  return scoring.seed_variables(sub_states, i)


def _report_over_sub_networks(config, archs, owner, report):
  """report(done, total) per sub-network -> one callback per sub-network that reports
  the scoring calls of all sub-networks together (scoring.scoring_calls)."""
  counts = [scoring.scoring_calls(config, packing_archs(config, archs[owner == j]))
            if (owner == j).any() else 0 for j in range(len(split_ops(config)))]
  before = np.cumsum([0] + counts[:-1])
  return [lambda done, _, b=b: report(int(b) + done, sum(counts)) for b in before]


def score_archs(config, model, sub_params, sub_batch_stats, archs: np.ndarray,
                data: data_lib.DeviceData, recal_images=None, *, report=None,
                report_every_s: float = 30.0) -> np.ndarray:
  """Validation accuracy (%) of each arch [m, 6], each by its own sub-network (one seed).

  sub_params, sub_batch_stats: [J, ...] (seed_variables). Sub-network j scores its
  archs with scoring.score_archs on a copy of `model` whose split edge runs op j
  (static), packed by `packing_archs`. One scorer is compiled per sub-network.
  report(done, total), as in scoring.score_archs, counts the scoring calls of all
  sub-networks together.
  """
  archs = np.asarray(archs, np.int32).reshape(-1, space.NUM_EDGES)
  owner = sub_network_of(config, archs)
  edge = split_edge(config)
  reports = (_report_over_sub_networks(config, archs, owner, report) if report is not None
             else [None] * len(split_ops(config)))
  accuracy = np.zeros(len(archs))
  for j, op in enumerate(split_ops(config)):
    rows = np.nonzero(owner == j)[0]
    if not len(rows):
      continue
    sub_model = model.clone(split_edge=edge, split_op=op)
    take = functools.partial(jax.tree.map, lambda a: a[j])
    accuracy[rows] = scoring.score_archs(
        config, sub_model, take(sub_params), take(sub_batch_stats),
        packing_archs(config, archs[rows]), data, recal_images, report=reports[j],
        report_every_s=report_every_s)
  return accuracy


# ------------------------------------------------------------------------ the phase


def sub_network_names(config) -> tuple[str, ...]:
  """What each sub-network is, for messages: 'sub-network 1 (nor_conv_1x1 on edge 0)'."""
  edge = split_edge(config)
  return tuple(f'sub-network {j} ({space.OPS[op]} on edge {edge})'
               for j, op in enumerate(split_ops(config)))


def checkpointer(config, workdir: str) -> checkpoint.Checkpointer:
  """The few-shot phase's checkpoints (checkpoints_fewshot/) and marker (FEWSHOT_TRAINED)."""
  return checkpoint.Checkpointer(workdir, config.train.keep_checkpoints,
                                 folder=workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER,
                                 marker=workdir_lib.FEWSHOT_TRAINED_MARKER)


def compile_train_chunk(config, model, tx, num_steps: int, states, data):
  """(compiled few-shot chunk, seeds_in_parallel): train.compile_fitting's memory rule."""
  chunk = min(config.train.steps_per_dispatch, num_steps)

  def make_chunk(seeds_in_parallel):
    return make_train_chunk(config, model, tx, num_steps, chunk,
                            sub_networks_in_parallel=config.fewshot.sub_networks_in_parallel,
                            seeds_in_parallel=seeds_in_parallel)
  what = f'{train.training_description(config)}, {len(split_ops(config))} sub-networks each'
  return train.compile_fitting(make_chunk, states, data, what, len(config.seeds),
                               train.program_key('fewshot', config, num_steps, states, data))


def _check_one_shot_finished(oneshot_states, workdir: str) -> None:
  """The warm start copies the finished one-shot super-network, nothing earlier."""
  step = train.step_of(oneshot_states)
  final = workdir_lib.trained_step(workdir)
  if final is None or step != final:
    raise FewShotError(
        f'the few-shot sub-networks start from the finished one-shot super-network, but '
        f'the one-shot states are at step {step} and {workdir_lib.TRAINED_MARKER} in '
        f'{workdir} names {final}; finish the one-shot training (train.train) first')


def train_fewshot(config, workdir: str, data: data_lib.DeviceData, oneshot_states, *,
                  stop_after_steps: int | None = None, on_steps=None) -> train.TrainState:
  """Train the sub-networks of every seed; states [seeds, J, ...] at the step reached.

  oneshot_states: the finished one-shot states (train.train's return). While
  checkpoints_fewshot/ holds no checkpoint the sub-networks warm-start from them;
  afterwards the newest readable few-shot checkpoint is resumed (an unreadable one
  is set aside, FEWSHOT_TRAINED withdrawn if it named it). stop_after_steps,
  SIGTERM/SIGUSR1 (Preempted) and divergence (DivergenceError) as in train.train;
  on_steps as train.train_loop's (the ranking trajectory of the sub-networks).
  """
  config_lib.validate(config)
  phase = train_config(config)
  names = sub_network_names(config)
  model = create_model(config)
  tx = create_optimizer(config, data.num_train)
  num_steps = total_steps(config, data.num_train)
  ckpt = checkpointer(config, workdir)
  if ckpt.latest_step() is None:
    _check_one_shot_finished(oneshot_states, workdir)
    logging.info('few-shot: %d sub-networks per seed split on edge %d, warm-started from '
                 'the one-shot step %d', len(names), split_edge(config),
                 train.step_of(oneshot_states))
  states = ckpt.restore_latest(warm_start(oneshot_states, tx, config))

  def compile_chunk(states, data):
    return compile_train_chunk(config, model, tx, num_steps, states, data)[0]
  return train.train_loop(
      phase, workdir, states, data, compile_chunk, ckpt, stop_after_steps=stop_after_steps,
      what=f'the few-shot step ({len(config.seeds)} seeds x {len(names)} sub-networks)',
      member_names=names, tb_prefix='fewshot', log_prefix='few-shot: ', on_steps=on_steps)


def states_template(config, tx, image_shape=data_lib.IMAGE_SHAPE) -> train.TrainState:
  """Shapes and dtypes of few-shot states [seeds, J, ...], computed without running init."""
  model = train.create_model(config)
  return jax.eval_shape(lambda: warm_start(
      train.init_states(model, tx, tuple(config.seeds), image_shape), tx, config))


def restore_fewshot_states(config, workdir: str, data: data_lib.DeviceData) -> train.TrainState:
  """The few-shot states of exactly the step FEWSHOT_TRAINED names (verified), for scoring.

  FewShotError when the phase has not finished; CheckpointError, in one line, when
  that step's checkpoint is missing or damaged (an older one would be another run).
  """
  marker = workdir_lib.FEWSHOT_TRAINED_MARKER
  step = workdir_lib.trained_step(workdir, marker)
  if step is None:
    raise FewShotError(f'{workdir} holds no finished few-shot training (no {marker} marker); '
                       f'run spos_jax.main first')
  tx = create_optimizer(config, data.num_train)
  ckpt = checkpointer(config, workdir)
  try:
    return ckpt.restore(step, states_template(config, tx, data.train_images.shape[1:]))
  except checkpoint.CheckpointError as e:
    raise checkpoint.CheckpointError(
        f'{e}: it is the final few-shot checkpoint, which {marker} names; rerun '
        f'spos_jax.main on this workdir to retrain its last steps, then evaluate again'
    ) from None
  finally:
    ckpt.close()
