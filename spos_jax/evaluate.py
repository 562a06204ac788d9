"""Score many archs with one set of super-network weights (SPEC 6).

Fast path: archs are packed into fair groups of |O| paths that use every allowed op
exactly once per edge (space.pack_fair_groups: whole cosets {a + t*(1,..,1) mod |O|}
where all members are wanted, which partition the full space exactly, and greedy
packing of the rest), so one fair-group forward (model.py) scores a whole group on
the same images; `jax.vmap` over a chunk of groups puts thousands of arch-images in
one call.

Reference: `score_archs_one_by_one` runs each arch alone on the single-path forward.
BN modes: 'running' (training's running statistics, the paper), 'batch' (statistics
of each evaluated batch), 'recalibrate' (per arch, statistics averaged over
`eval.recalibrate_batches` training batches, then used as running statistics).

CLI, re-scoring a finished run into its own results folder:
  python -m spos_jax.evaluate --workdir=DIR [--config.eval.bn_mode=batch] [--overwrite]
"""
from __future__ import annotations

import functools
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from spos_jax import augment
from spos_jax import bench as bench_lib
from spos_jax import checkpoint
from spos_jax import cli
from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import memory
from spos_jax import results
from spos_jax import space
from spos_jax import train as train_lib
from spos_jax import workdir as workdir_lib

# Key stream of the recalibration batches: the same batches for every arch and seed.
_RECALIBRATE_STREAM = 7


def recalibration_images(config, data: data_lib.DeviceData) -> jax.Array:
  """[R, B, 32, 32, 3] training batches with the run's augmentation, fixed by eval.random_seed."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.eval.random_seed), _RECALIBRATE_STREAM)
  batches = []
  for r in range(config.eval.recalibrate_batches):
    idx = data_lib.micro_batch_indices(key, r, data.num_train, config.train.batch_size)
    batches.append(augment.augment_batch(jax.random.fold_in(key, r), data.train_images[idx],
                                         config.train.augment))
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


def _eval_batches(images, labels, batch_size):
  n = images.shape[0]
  for start in range(0, n, batch_size):
    yield (augment.eval_images(images[start:start + batch_size]),
           labels[start:start + batch_size])


def score_archs(config, model, params, batch_stats, archs: np.ndarray,
                data: data_lib.DeviceData, recal_images=None) -> np.ndarray:
  """Validation accuracy (%) of each arch [m, 6] with one seed's weights (fast path)."""
  allowed = config_lib.allowed_ops(config)
  archs, arch_of_row = np.unique(np.asarray(archs, np.int32), axis=0, return_inverse=True)
  paths, owner = space.pack_fair_groups(archs, allowed)
  bn_mode = config.eval.bn_mode
  scorer = make_group_scorer(model, bn_mode)
  recalibrate = make_group_recalibrator(model) if bn_mode == 'recalibrate' else None
  chunk = config.eval.groups_per_call
  batches = list(_eval_batches(data.val_images, data.val_labels, config.eval.batch_size))
  counts_per_chunk = []  # on the device until the end: no sync between chunks
  for start in range(0, len(paths), chunk):
    part = paths[start:start + chunk]
    # Pad the last chunk so that one compiled shape serves every call.
    part = jnp.asarray(np.concatenate([part, part[:1].repeat(chunk - len(part), 0)]))
    stats = batch_stats
    if recalibrate is not None:
      stats = recalibrate(params, batch_stats, part, recal_images)
    counts = 0
    for x, labels in batches:
      counts = counts + scorer(params, stats, part, x, labels)
    counts_per_chunk.append(counts)
  correct = np.concatenate(jax.device_get(counts_per_chunk))[:len(owner)]
  accuracy = np.zeros(len(archs))
  accuracy[owner[owner >= 0]] = 100.0 * correct[owner >= 0] / data.num_val
  return accuracy[arch_of_row.reshape(-1)]


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
  batches = list(_eval_batches(data.val_images, data.val_labels, config.eval.batch_size))
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


class EvaluationError(RuntimeError):
  """No finished checkpoint to score, or results that would be overwritten."""


def load_ranking_bench(config):
  """The bench restricted to the allowed ops; fails fast on a bad file or metric."""
  bench = bench_lib.load_bench(config.bench.path)
  bench.metric(config.bench.metric)
  return bench_lib.restrict(bench, config_lib.allowed_ops(config))


def scored_rows(config, bench) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, ...]]:
  """Rows of the bench to score, each group's positions into them, and the top-Ns.

  Top-N groups larger than the subset are dropped; 'all' is every scored arch.
  """
  top_ns = tuple(n for n in config.eval.top_ns if n <= len(bench))
  groups = bench_lib.arch_groups(bench, config.bench.metric, top_ns,
                                 config.eval.random_size, config.eval.random_seed)
  if config.eval.scope == 'all':
    rows = np.arange(len(bench))
  else:
    rows = np.unique(np.concatenate([g for name, g in groups.items() if name != 'all']))
  positions = {name: np.searchsorted(rows, g) for name, g in groups.items() if name != 'all'}
  positions['all'] = np.arange(len(rows))
  return rows, positions, top_ns


def results_folder(config, workdir: str) -> str:
  return os.path.join(workdir, 'results', results.results_name(config.eval))


def results_complete(config, workdir: str) -> bool:
  return os.path.exists(os.path.join(results_folder(config, workdir), results.METRICS_FILE))


def refuse_existing_results(config, workdir: str, overwrite: bool) -> None:
  if results_complete(config, workdir) and not overwrite:
    raise EvaluationError(f'{results_folder(config, workdir)} holds results already; pass '
                          f'--overwrite or set --config.eval.name=OTHER to keep both')


def evaluate_run(config, workdir: str, states, data=None, *, overwrite: bool = False) -> dict:
  """Score the bench's archs with every seed's weights; write the results folder."""
  name = results.results_name(config.eval)
  folder = results_folder(config, workdir)
  refuse_existing_results(config, workdir, overwrite)
  bench = load_ranking_bench(config)
  rows, groups, top_ns = scored_rows(config, bench)
  if data is None:
    data = train_lib.load_device_data(config)
  model = train_lib.create_model(config)
  recal = recalibration_images(config, data) if config.eval.bn_mode == 'recalibrate' else None
  seeds = tuple(config.seeds)
  scores = np.zeros((len(seeds), len(rows)))
  start = time.time()
  for i, seed in enumerate(seeds):
    params, batch_stats = seed_variables(states, i)
    scores[i] = score_archs(config, model, params, batch_stats, bench.archs[rows], data, recal)
    logging.info('seed %d: scored %d archs', seed, len(rows))
  rate = len(seeds) * len(rows) / (time.time() - start)
  eval_config = config.copy_and_resolve_references()
  with eval_config.unlocked():
    eval_config.eval.top_ns = top_ns
  summary = results.write(
      folder, config=eval_config, bench=bench, seeds=seeds, indices=bench.indices[rows],
      arch_strings=bench.arch_strings[rows], scores=scores,
      truth=bench.metric(config.bench.metric)[rows], groups=groups,
      evaluated_archs_per_second=rate)
  writer = workdir_lib.summary_writer(workdir)
  results.write_tensorboard(writer, name, summary, int(np.asarray(states.step)[0]))
  writer.close()
  logging.info('%s: %d archs x %d seeds at %.1f archs/s; tau_a %.3f, all-archs KT %.3f',
               folder, len(rows), len(seeds), rate, summary['tau_a']['value'],
               summary['groups']['all']['kendall_tau']['mean'])
  return summary


def restore_trained_states(config, workdir: str):
  """The final train states of a finished run in workdir."""
  if not workdir_lib.is_trained(workdir):
    raise EvaluationError(f'{workdir} holds no finished training run (no '
                          f'{workdir_lib.TRAINED_MARKER} marker); run spos_jax.main first')
  data = train_lib.load_device_data(config)
  model = train_lib.create_model(config)
  tx = train_lib.create_optimizer(config, data.num_train)
  template = train_lib.init_states(model, tx, tuple(config.seeds))
  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
  step = ckpt.latest_step()
  if step is None:
    raise EvaluationError(f'{ckpt.directory} holds no checkpoint')
  try:  # only the final weights are scored: an older checkpoint would be another run
    states = ckpt.restore(step, template)
  except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds
    raise checkpoint.CheckpointError(
        f'the final checkpoint {os.path.join(ckpt.directory, str(step))} is unreadable '
        f'({type(e).__name__}); rerun spos_jax.main on this workdir to retrain its last '
        f'steps, then evaluate again') from None
  finally:
    ckpt.close()
  return states, data


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f'unexpected arguments: {argv[1:]}')
  cli.apply_compilation_cache()
  workdir = flags.FLAGS.workdir
  saved = workdir_lib.load_config_record(workdir)
  if saved is None:
    raise EvaluationError(f'{workdir} holds no {workdir_lib.CONFIG_FILE}: not a run folder')
  config = config_lib.from_flat(saved)
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  for key, value in overrides.items():
    if not key.startswith(('eval.', 'bench.')):
      raise config_lib.ConfigError(
          f'--config.{key}: evaluate re-scores a finished run; only eval.* and bench.* '
          f'may change')
    config_lib.set_flat(config, key, value)
  config_lib.validate(config)
  if not config.bench.path:
    raise config_lib.ConfigError('bench.path is empty: pass --config.bench.path=TABLE.csv')
  refuse_existing_results(config, workdir, flags.FLAGS.overwrite)  # before the slow restore
  states, data = restore_trained_states(config, workdir)
  evaluate_run(config, workdir, states, data, overwrite=flags.FLAGS.overwrite)


if __name__ == '__main__':
  # Flags are defined only when run as a program: spos_jax.main defines its own.
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'Folder of a finished run (spos_jax.main).')
  flags.DEFINE_bool('overwrite', False, 'Replace results of the same name.')
  cli.define_compilation_cache_flag()
  config_flags.DEFINE_config_dict('config', config_lib.base_config(), lock_config=True)
  flags.mark_flags_as_required(['workdir'])
  app.run(cli.reporting_user_errors(main, (EvaluationError,)))
