"""Score many archs with one set of super-network weights (docs/method.md, 'Evaluation').

Fast path: archs are packed into fair groups of |O| paths that use every allowed op
exactly once per edge (space.pack_fair_groups: whole cosets {a + t*(1,..,1) mod |O|}
where all members are wanted, which partition the full space exactly, and greedy
packing of the rest), so one fair-group forward (model.py) scores a whole group on
the same images; `jax.vmap` over a chunk of groups puts thousands of arch-images in
one call.

Single path (eval.packing='single_path'): each arch alone on the single-path forward,
one arch per call without a sync between calls; on a CPU the faster choice for archs
that pack poorly. Reference: `score_archs_one_by_one`, each arch alone, read one by
one.
BN modes: 'running' (training's running statistics, the paper), 'batch' (statistics
of each evaluated batch), 'recalibrate' (per arch, statistics averaged over
`eval.recalibrate_batches` training batches, then used as running statistics).

Every function here takes the model, the weights and the data as arguments; the run
orchestration (run.py) decides what to score and writes the results.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from spos_jax import augment
from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import memory
from spos_jax import preemption
from spos_jax import space

# Key stream of the recalibration batches: the same batches for every arch and seed.
_RECALIBRATE_STREAM = 7


def recalibration_images(config, data: data_lib.DeviceData) -> jax.Array:
  """[R, B, H, W, 3] training batches with the run's augmentation, fixed by eval.random_seed."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.eval.random_seed), _RECALIBRATE_STREAM)
  batches = []
  for r in range(config.eval.recalibrate_batches):
    idx = data_lib.micro_batch_indices(key, r, data.num_train, config.train.batch_size)
    batches.append(augment.augment_batch(jax.random.fold_in(key, r), data.train_images[idx],
                                         config.train.augment, stats=_stats(config)))
  return jnp.stack(batches)


def _average_stats(stats_per_batch):
  """Mean over the leading (batch) axis of a captured batch_stats tree."""
  return jax.tree.map(lambda s: s.mean(0), stats_per_batch)


def _broadcast_members(x, k):
  return jnp.broadcast_to(x, (k,) + x.shape)


def _correct(logits, labels):
  return (logits.argmax(-1) == labels).sum(-1)


@functools.lru_cache(maxsize=16)  # one compiled scorer per model and mode, across seeds
def make_group_scorer(model, bn_mode: str):
  """(params, batch_stats, paths [M, K, 6], images [B, ...], labels [B]) -> [M, K], jitted.

  Correct predictions of each member of M fair groups on the batch. With bn_mode
  'recalibrate', batch_stats carry a leading M axis (from `make_group_recalibrator`).
  """
  def one_group(params, batch_stats, paths, x, labels):
    variables = {'params': params, 'batch_stats': batch_stats}
    xk = _broadcast_members(x, paths.shape[0])
    if bn_mode == 'batch':
      logits, _ = model.apply(variables, xk, paths, train=True, mutable=['batch_stats'])
    else:
      logits = model.apply(variables, xk, paths, train=False)
    return _correct(logits, labels)

  stats_axis = 0 if bn_mode == 'recalibrate' else None
  return memory.CheckedJit(
      jax.vmap(one_group, in_axes=(None, stats_axis, 0, None, None)),
      lambda params, stats, paths, x, labels: (
          f'scoring {paths.shape[0]} fair groups of {paths.shape[1]} archs on '
          f'{x.shape[0]} images'),
      'lower eval.groups_per_call or eval.batch_size')


@functools.lru_cache(maxsize=16)
def make_group_recalibrator(model):
  """(params, batch_stats, paths [M, K, 6], recal [R, B, ...]) -> stats with axis M, jitted.

  Shared BNs (stem, reductions, head) get statistics per member, [K, C].
  """
  capture = model.clone(bn_capture=True)

  def one_group(params, batch_stats, paths, recal):
    def batch_stats_of(x):
      _, new = capture.apply({'params': params, 'batch_stats': batch_stats},
                             _broadcast_members(x, paths.shape[0]), paths, train=True,
                             mutable=['batch_stats'])
      return new['batch_stats']
    return _average_stats(jax.lax.map(batch_stats_of, recal))

  return memory.CheckedJit(
      jax.vmap(one_group, in_axes=(None, None, 0, None)),
      lambda params, stats, paths, recal: (
          f'recalibrating BN of {paths.shape[0]} fair groups of {paths.shape[1]} archs on '
          f'batches of {recal.shape[1]} images'),
      'lower eval.groups_per_call or train.batch_size')


def _stats(config):
  """The data set's normalisation (mean, std), as training used."""
  return data_lib.channel_stats(config.data.dataset)


def _eval_batches(config, data: data_lib.DeviceData):
  """The validation images, normalised, in batches of eval.batch_size, with labels."""
  size = config.eval.batch_size
  for start in range(0, data.num_val, size):
    yield (augment.eval_images(data.val_images[start:start + size], stats=_stats(config)),
           data.val_labels[start:start + size])


def score_archs(config, model, params, batch_stats, archs: np.ndarray,
                data: data_lib.DeviceData, recal_images=None, *,
                report=None, report_every_s: float = 30.0) -> np.ndarray:
  """Validation accuracy (%) of each arch [m, 6] with one seed's weights (fast path).

  eval.packing 'fair_groups' scores fair groups, eval.groups_per_call of them per call;
  'single_path' scores each arch alone on the single-path forward, one arch per call
  (the faster choice on a CPU for archs that pack poorly: there a fair group costs |O|
  single paths whether or not its members are wanted, and packing leaves slots empty).

  report(done, total), if given, is called at most every report_every_s seconds with
  the calls done, after waiting for the calls dispatched so far (the only syncs:
  without it, calls are dispatched back to back and read once at the end).
  SIGTERM, SIGUSR1 or Ctrl-C stop it after the current call with
  preemption.Stopped: its caller writes nothing, and the rerun scores again.
  """
  archs, arch_of_row = np.unique(np.asarray(archs, np.int32), axis=0, return_inverse=True)
  batches = list(_eval_batches(config, data))
  if config.eval.packing == 'single_path':
    calls, score_call = _single_path_calls(config, model, params, batch_stats, archs, batches,
                                           recal_images)
  else:
    calls, score_call, owner = _fair_group_calls(config, model, params, batch_stats, archs,
                                                 batches, recal_images)
  counts_per_call = []  # on the device until the end: no sync between calls
  last_report = time.monotonic()
  with preemption.PreemptionWatcher(kept=lambda: preemption.SCORE_AGAIN) as watcher:
    for done, call in enumerate(calls, 1):
      counts_per_call.append(score_call(call))
      if report is not None and time.monotonic() - last_report >= report_every_s:
        counts_per_call[-1].block_until_ready()
        report(done, len(calls))
        last_report = time.monotonic()
      watcher.stop_if_requested('scoring')
  if config.eval.packing == 'single_path':
    correct = np.asarray(jax.device_get(counts_per_call))
  else:  # slots [groups, |O|] -> archs; padding slots own no arch
    slots = np.concatenate(jax.device_get(counts_per_call))[:len(owner)]
    correct = np.zeros(len(archs))
    correct[owner[owner >= 0]] = slots[owner >= 0]
  accuracy = 100.0 * correct / data.num_val
  return accuracy[arch_of_row.reshape(-1)]


def scoring_calls(config, archs: np.ndarray) -> int:
  """The calls score_archs makes for these archs: the total its report counts to."""
  archs = np.unique(np.asarray(archs, np.int32), axis=0)
  if config.eval.packing == 'single_path':
    return len(archs)
  groups = len(space.pack_fair_groups(archs, config_lib.allowed_ops(config))[0])
  return -(-groups // config.eval.groups_per_call)


def _fair_group_calls(config, model, params, batch_stats, archs, batches, recal_images):
  """(chunks of eval.groups_per_call fair groups, chunk -> counts [M, K], slot owners)."""
  paths, owner = space.pack_fair_groups(archs, config_lib.allowed_ops(config))
  scorer = make_group_scorer(model, config.eval.bn_mode)
  recalibrate = (make_group_recalibrator(model) if config.eval.bn_mode == 'recalibrate'
                 else None)
  chunk = config.eval.groups_per_call
  # Pad the last chunk so that one compiled shape serves every call.
  chunks = [jnp.asarray(np.concatenate([part, part[:1].repeat(chunk - len(part), 0)]))
            for part in (paths[start:start + chunk] for start in range(0, len(paths), chunk))]

  def score_chunk(part):
    stats = batch_stats
    if recalibrate is not None:
      stats = recalibrate(params, batch_stats, part, recal_images)
    return sum(scorer(params, stats, part, x, labels) for x, labels in batches)
  return chunks, score_chunk, owner


def _single_path_calls(config, model, params, batch_stats, archs, batches, recal_images):
  """(one path per arch, path -> correct count)."""
  recalibrated, correct = _single_path_functions(model, config.eval.bn_mode)

  def score_path(path):
    stats = batch_stats
    if config.eval.bn_mode == 'recalibrate':
      stats = recalibrated(params, batch_stats, path, recal_images)
    return sum(correct(params, stats, path, x, labels) for x, labels in batches)
  return [jnp.asarray(arch) for arch in archs], score_path


@functools.lru_cache(maxsize=16)
def _single_path_functions(model, bn_mode: str):
  """jit(params, stats, path, recal) -> stats and jit(params, stats, path, x, labels) -> correct."""
  capture = model.clone(bn_capture=True)

  @jax.jit
  def recalibrated(params, batch_stats, path, recal):
    def batch_stats_of(x):
      _, new = capture.apply({'params': params, 'batch_stats': batch_stats}, x, path,
                             train=True, mutable=['batch_stats'])
      return new['batch_stats']
    return _average_stats(jax.lax.map(batch_stats_of, recal))

  @jax.jit
  def correct(params, batch_stats, path, x, labels):
    variables = {'params': params, 'batch_stats': batch_stats}
    if bn_mode == 'batch':
      logits, _ = model.apply(variables, x, path, train=True, mutable=['batch_stats'])
    else:
      logits = model.apply(variables, x, path, train=False)
    return _correct(logits, labels)
  return recalibrated, correct


def score_archs_one_by_one(config, model, params, batch_stats, archs, data,
                           recal_images=None) -> np.ndarray:
  """Reference: each arch alone through the single-path forward (same BN modes)."""
  recalibrated, correct = _single_path_functions(model, config.eval.bn_mode)
  batches = list(_eval_batches(config, data))
  out = []
  for arch in np.asarray(archs, np.int32):
    path = jnp.asarray(arch)
    stats = batch_stats
    if config.eval.bn_mode == 'recalibrate':
      stats = recalibrated(params, batch_stats, path, recal_images)
    total = sum(int(correct(params, stats, path, x, labels)) for x, labels in batches)
    out.append(100.0 * total / data.num_val)
  return np.asarray(out)


def seed_variables(states, i: int):
  """(params, batch_stats) of the i-th seed of stacked train states."""
  take = functools.partial(jax.tree.map, lambda a: a[i])
  return take(states.params), take(states.batch_stats)
