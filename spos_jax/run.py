"""One run, start to end: train the super-network, then rank the bench's archs with it.

Training (train.py) and scoring (scoring.py) do not know each other; this module
uses both: it checks the inputs that would otherwise fail late (bench file and
metric), trains every seed (resuming from checkpoints), restores a finished run's
final weights, scores the archs the evaluation asks for and writes the results
(results.py). `python -m spos_jax.main` runs `train_and_evaluate`;
`python -m spos_jax.evaluate` re-scores a finished run through `rescore`.
"""
from __future__ import annotations

import os
import time

from absl import logging
import numpy as np

from spos_jax import bench as bench_lib
from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import results
from spos_jax import scoring
from spos_jax import train as train_lib
from spos_jax import workdir as workdir_lib


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
  recal = scoring.recalibration_images(config, data) if config.eval.bn_mode == 'recalibrate' else None
  seeds = tuple(config.seeds)
  scores = np.zeros((len(seeds), len(rows)))
  start = time.time()
  for i, seed in enumerate(seeds):
    params, batch_stats = scoring.seed_variables(states, i)
    scores[i] = scoring.score_archs(config, model, params, batch_stats, bench.archs[rows], data, recal)
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


def train_and_evaluate(config, workdir: str) -> None:
  """The main job: train all seeds, then rank the bench's archs with each."""
  config_lib.validate(config)
  if config.bench.path:
    load_ranking_bench(config)  # a bad bench file fails now, not after training
  data = train_lib.load_device_data(config)
  states = train_lib.train(config, workdir, data)
  if not config.bench.path:
    logging.info('bench.path is empty: training only, no ranking')
  elif results_complete(config, workdir):
    logging.info('results of this run exist already; nothing to evaluate')
  else:
    evaluate_run(config, workdir, states, data)


def rescore(workdir: str, overrides: dict, *, overwrite: bool = False) -> dict:
  """Score a finished run again with other eval.* / bench.* values (the evaluate CLI)."""
  saved = workdir_lib.load_config_record(workdir)
  if saved is None:
    raise EvaluationError(f'{workdir} holds no {workdir_lib.CONFIG_FILE}: not a run folder')
  config = config_lib.from_flat(saved)
  for key, value in overrides.items():
    if not key.startswith(('eval.', 'bench.')):
      raise config_lib.ConfigError(
          f'--config.{key}: evaluate re-scores a finished run; only eval.* and bench.* '
          f'may change')
    config_lib.set_flat(config, key, value)
  config_lib.validate(config)
  if not config.bench.path:
    raise config_lib.ConfigError('bench.path is empty: pass --config.bench.path=TABLE.csv')
  refuse_existing_results(config, workdir, overwrite)  # before the slow restore
  states, data = restore_trained_states(config, workdir)
  return evaluate_run(config, workdir, states, data, overwrite=overwrite)
