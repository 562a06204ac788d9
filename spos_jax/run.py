"""One run, start to end: train the super-network, then rank the bench's archs with it.

Training (train.py) and scoring (scoring.py) do not know each other; this module
uses both. In order, `train_and_evaluate`:
  1. checks what would otherwise fail late: the config, the bench file and metric,
     and results on disk that another evaluation wrote (refused, naming the
     difference: config.json never claims what the results do not hold);
  2. decides from the files whether anything is left to do: a finished run with
     its results only prints them, without loading data or compiling;
  3. takes the workdir's lock (one process per run folder), trains every seed
     (resuming from checkpoints), scores the archs the evaluation asks for with
     the exact step TRAINED names and writes the results (results.py);
  4. prints the summary table and where the files are.
A few-shot run (fewshot.split_edge) trains its sub-networks after the one-shot
phase (fewshot.py) and scores each arch with the sub-network that holds it;
method='proxies' scores zero-cost proxies at initialisation instead of training
(proxies.py, `score_proxies`). `python -m spos_jax.main` runs `train_and_evaluate`;
`python -m spos_jax.evaluate` re-scores a finished run through `rescore`;
`is_finished` is what the sweep launcher skips.
"""
from __future__ import annotations

import functools
import json
import os
import time

from absl import logging
import jax
import numpy as np

from spos_jax import augment
from spos_jax import bench as bench_lib
from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import fewshot
from spos_jax import preemption
from spos_jax import proxies
from spos_jax import results
from spos_jax import scoring
from spos_jax import train as train_lib
from spos_jax import trajectory
from spos_jax import workdir as workdir_lib

# Bytes per predictions.csv row (seed, index, arch string, two accuracies) and the
# rest of a results folder: what must be free before scoring starts.
_PREDICTION_ROW_BYTES = 128
_RESULTS_OVERHEAD_BYTES = 1 << 20


class EvaluationError(RuntimeError):
  """No finished checkpoint to score, or results that would be overwritten."""


def ranking_bench_path(config) -> str | None:
  """The bench file a run ranks against (None: ranking off); a bad path fails here."""
  return bench_lib.check_path(config.bench.path)


@functools.lru_cache(maxsize=4)  # the launcher asks once per run of a sweep
def _load_table(path: str) -> bench_lib.Bench:
  return bench_lib.load_bench(path)


def load_ranking_bench(config) -> bench_lib.Bench:
  """The bench restricted to the allowed ops, with eval.scope=unique their isomorphism
  classes (bench.unique_classes); fails fast on a bad file or metric."""
  bench = _load_table(ranking_bench_path(config))
  bench.metric(config_lib.bench_metric(config))
  return bench_lib.ranked_subset(bench, config_lib.allowed_ops(config),
                                 unique=config.eval.scope == 'unique')


def scored_rows(config, bench) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, ...]]:
  """Rows of the bench to score, each group's positions into them, and the top-Ns.

  Top-N groups larger than the subset are dropped; 'all' is every scored arch.
  Scopes 'all' and 'unique' score every row (of a bench of classes for 'unique').
  """
  top_ns = tuple(n for n in config.eval.top_ns if n <= len(bench))
  groups = bench_lib.arch_groups(bench, config_lib.bench_metric(config), top_ns,
                                 config.eval.random_size, config.eval.random_seed)
  if config.eval.scope in ('all', 'unique'):
    rows = np.arange(len(bench))
  else:
    rows = np.unique(np.concatenate([g for name, g in groups.items() if name != 'all']))
  positions = {name: np.searchsorted(rows, g) for name, g in groups.items() if name != 'all'}
  positions['all'] = np.arange(len(rows))
  return rows, positions, top_ns


def results_folder(config, workdir: str) -> str:
  return results.evaluation_folder(workdir, results.results_name(config.eval))


def results_complete(config, workdir: str) -> bool:
  return os.path.exists(os.path.join(results_folder(config, workdir), results.METRICS_FILE))


def evaluation_differences(config, workdir: str, bench: bench_lib.Bench) -> list[str]:
  """How the results on disk differ from the evaluation config asks for ([] if equal)."""
  top_ns = tuple(n for n in config.eval.top_ns if n <= len(bench))
  return results.identity_differences(results_folder(config, workdir), config, bench.sha256,
                                      top_ns)


def refuse_other_evaluation(config, workdir: str, bench: bench_lib.Bench) -> None:
  """EvaluationError when results/<name> holds an evaluation of other settings."""
  differences = evaluation_differences(config, workdir, bench)
  if differences:
    raise EvaluationError(
        f'{results_folder(config, workdir)} holds an evaluation with other settings '
        f'({"; ".join(differences)}); to score with the new ones, re-score into another '
        f'folder: python -m spos_jax.evaluate --workdir={workdir} --config.eval.name=NEW '
        f'(with the same --config.eval.* / bench.* flags), or pass --overwrite there')


def refuse_existing_results(config, workdir: str, overwrite: bool) -> None:
  if results_complete(config, workdir) and not overwrite:
    raise EvaluationError(f'{results_folder(config, workdir)} holds results already; pass '
                          f'--overwrite or set --config.eval.name=OTHER to keep both')


def _check_space_for_results(config, workdir: str, num_rows: int) -> None:
  """Refuse to start scoring when its results could not be written (a full disk)."""
  need = len(config.seeds) * num_rows * _PREDICTION_ROW_BYTES + _RESULTS_OVERHEAD_BYTES
  workdir_lib.check_free_space(workdir, need, f'the results of {num_rows} archs x '
                                              f'{len(config.seeds)} seeds')


def _scoring_progress(seed, seed_index: int, num_seeds: int, start: float,
                      unit: str):
  """A score_archs report callback (scoring.py, proxies.py: done and total in `unit`):
  a log line with the share done and an ETA."""
  def report(done: int, total: int) -> None:
    fraction = (seed_index + done / total) / num_seeds
    elapsed = time.time() - start
    eta = elapsed * (1 - fraction) / max(fraction, 1e-9)
    logging.info('scoring seed %s: %d/%d %s, %.0f%% of all seeds, ETA %s', seed,
                 done, total, unit, 100 * fraction, train_lib.format_eta(eta))
  return report


def _scoring_unit(config) -> str:
  """What one scoring call of eval.packing scores, for the progress line."""
  return 'archs' if config.eval.packing == 'single_path' else 'calls of fair groups'


def _write_results(workdir: str, folder: str, config, bench, rows, groups, scores, rate,
                   **score) -> dict:
  """results.write of the scored bench rows (scores [seeds, rows]); a full disk also
  writes FAILED, which the writer cannot (it does not know the run folder)."""
  try:
    return results.write(
        folder, config=config, bench=bench, seeds=tuple(config.seeds),
        indices=bench.indices[rows], arch_strings=bench.arch_strings[rows], scores=scores,
        truth=bench.metric(config_lib.bench_metric(config))[rows], groups=groups,
        evaluated_archs_per_second=rate, **score)
  except workdir_lib.DiskFullError as e:
    workdir_lib.record_failure(workdir, e)
    raise


def evaluate_run(config, workdir: str, states, data=None, *, overwrite: bool = False,
                 bench: bench_lib.Bench | None = None) -> dict:
  """Score the bench's archs with every seed's weights; write the results folder.

  states are the final ones; with eval.average_checkpoints=K each score is the mean
  over them and the K-1 earlier checkpoints of averaged_steps, restored from workdir
  one at a time and scored the same way. SIGTERM, SIGUSR1 or Ctrl-C at any point
  before the results are written stop it with preemption.Stopped, writing nothing
  (the scoring at its next call, the rest before scoring starts).
  """
  name = results.results_name(config.eval)
  folder = results_folder(config, workdir)
  with preemption.PreemptionWatcher(kept=lambda: preemption.SCORE_AGAIN,
                                    inner_stops=True) as watcher:
    refuse_existing_results(config, workdir, overwrite)
    if bench is None:
      bench = load_ranking_bench(config)
    rows, groups, top_ns = scored_rows(config, bench)
    _check_space_for_results(config, workdir, len(rows))
    if data is None:
      data = train_lib.load_device_data(config)
    step = train_lib.step_of(states)
    steps = averaged_steps(config, workdir, step)
    watcher.stop_if_requested('preparing to score')
    start = time.time()
    scores = _scores_of_steps(config, workdir, states, data, bench.archs[rows], steps)
  rate = len(steps) * len(config.seeds) * len(rows) / (time.time() - start)
  eval_config = config.copy_and_resolve_references()
  with eval_config.unlocked():
    eval_config.eval.top_ns = top_ns
  summary = _write_results(workdir, folder, eval_config, bench, rows, groups, scores, rate,
                           step=step, averaged_steps=steps)
  writer = workdir_lib.summary_writer(workdir)
  results.write_tensorboard(writer, name, summary, step)
  writer.close()
  logging.info('%s: %d archs x %d seeds at %.1f archs/s', folder, len(rows),
               len(config.seeds), rate)
  print(results.format_summary(summary, folder), flush=True)
  return summary


def _scores_of_steps(config, workdir: str, states, data, archs: np.ndarray,
                     steps: list[int]) -> np.ndarray:
  """Accuracy [seeds, archs] of archs, the mean over the checkpoints of steps (the
  first is `states`; the others are restored from workdir one at a time)."""
  fewshot_run = config_lib.fewshot_enabled(config)
  # A few-shot run scores each arch with the sub-network that holds its split op.
  model = (fewshot.create_model if fewshot_run else train_lib.create_model)(config)
  seed_variables = fewshot.seed_variables if fewshot_run else scoring.seed_variables
  score_archs = fewshot.score_archs if fewshot_run else scoring.score_archs
  recal = (scoring.recalibration_images(config, data)
           if config.eval.bn_mode == 'recalibrate' else None)
  seeds = tuple(config.seeds)
  logging.info('scoring %d archs x %d seeds of step %s (%s)', len(archs), len(seeds),
               ' and '.join(map(str, steps)), results.results_name(config.eval))
  start = time.time()
  scores = np.zeros((len(steps), len(seeds), len(archs)))
  for k, scored_step in enumerate(steps):
    if k:  # the final states are given; earlier ones come from their checkpoints
      states = restore_step(config, workdir, scored_step, data,
                            f'eval.average_checkpoints={len(steps)} averages it')
    for i, seed in enumerate(seeds):
      params, batch_stats = seed_variables(states, i)
      scores[k, i] = score_archs(
          config, model, params, batch_stats, archs, data, recal,
          report=_scoring_progress(seed, k * len(seeds) + i, len(steps) * len(seeds), start,
                                   _scoring_unit(config)))
      logging.info('seed %d: scored %d archs at step %d', seed, len(archs), scored_step)
  return scores.mean(axis=0)


def final_marker(config) -> str:
  """The marker of a finished run: TRAINED, or FEWSHOT_TRAINED for a few-shot run."""
  return (workdir_lib.FEWSHOT_TRAINED_MARKER if config_lib.fewshot_enabled(config)
          else workdir_lib.TRAINED_MARKER)


def averaged_steps(config, workdir: str, final_step: int) -> list[int]:
  """The checkpoints whose scores evaluate_run averages, final_step first:
  checkpoint.averaged_steps over the run's checkpoints (few-shot: the sub-networks');
  EvaluationError when they are not there."""
  k = config.eval.average_checkpoints
  if k == 1:
    return [final_step]
  folder = os.path.join(workdir, _checkpoints_folder(config))
  try:
    return checkpoint.averaged_steps(final_step, checkpoint.saved_steps(folder),
                                     config.train.checkpoint_every_steps, k)
  except checkpoint.CheckpointError as e:
    raise EvaluationError(f'{folder}: {e}') from None


def states_template(config, data: data_lib.DeviceData):
  """Shapes and dtypes of the states a run scores (a few-shot run: its sub-networks'),
  computed without running init."""
  image_shape = data.train_images.shape[1:]
  if config_lib.fewshot_enabled(config):
    return fewshot.states_template(
        config, fewshot.create_optimizer(config, data.num_train), image_shape)
  model = train_lib.create_model(config)
  tx = train_lib.create_optimizer(config, data.num_train)
  return jax.eval_shape(lambda: train_lib.init_states(model, tx, tuple(config.seeds),
                                                      image_shape))


def restore_step(config, workdir: str, step: int, data: data_lib.DeviceData, why: str):
  """The states of exactly checkpoint `step` of the run (few-shot: of its sub-networks),
  verified; CheckpointError in one line, saying `why` that step is needed."""
  ckpt = (fewshot.checkpointer(config, workdir) if config_lib.fewshot_enabled(config)
          else checkpoint.Checkpointer(workdir, config.train.keep_checkpoints))
  try:
    return ckpt.restore(step, states_template(config, data))
  except checkpoint.CheckpointError as e:
    raise checkpoint.CheckpointError(f'{e}: {why}') from None
  finally:
    ckpt.close()


def restore_trained_states(config, workdir: str):
  """The train states of exactly the step TRAINED (FEWSHOT_TRAINED) names, and the
  data; refuses otherwise."""
  if config_lib.fewshot_enabled(config):
    data = train_lib.load_device_data(config)
    return fewshot.restore_fewshot_states(config, workdir, data), data
  step = workdir_lib.trained_step(workdir)
  if step is None:
    raise EvaluationError(f'{workdir} holds no finished training run (no '
                          f'{workdir_lib.TRAINED_MARKER} marker); run spos_jax.main first')
  data = train_lib.load_device_data(config)
  # Only the final weights are scored: an older checkpoint would be another run.
  states = restore_step(
      config, workdir, step, data,
      f'it is the final checkpoint, which {workdir_lib.TRAINED_MARKER} names; rerun '
      f'spos_jax.main on this workdir to retrain its last steps, then evaluate again')
  return states, data


def _print_stored_summary(config, workdir: str) -> None:
  folder = results_folder(config, workdir)
  with open(os.path.join(folder, results.METRICS_FILE)) as f:
    print(results.format_summary(json.load(f), folder), flush=True)


def check_run_data(config, workdir: str, data: data_lib.DeviceData) -> None:
  """Refuse data whose contents differ from those the run recorded (a resume or a
  re-scoring on other data, workdir.record_data); record them and the final step
  they make."""
  final_step = (train_lib.total_steps(config, data.num_train)
                if config.method == 'supernet' else None)
  workdir_lib.record_data(workdir, data_lib.fingerprint(data), final_step)


def load_run_data(config, workdir: str) -> data_lib.DeviceData:
  """The run's data (train.load_device_data), checked by check_run_data."""
  data = train_lib.load_device_data(config)
  check_run_data(config, workdir, data)
  return data


def _checkpoints_folder(config) -> str:
  """The folder of the checkpoints final_marker names."""
  return (workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER if config_lib.fewshot_enabled(config)
          else workdir_lib.CHECKPOINTS_FOLDER)


def marker_problem(config, workdir: str) -> str | None:
  """Why the run's finished marker is wrong (workdir.marker_problem); None if it is not."""
  return workdir_lib.marker_problem(workdir, final_marker(config), _checkpoints_folder(config))


def _withdraw_wrong_marker(config, workdir: str) -> None:
  """Remove a finished marker that names another step than the run's final one, so
  that this run finishes training and scores the final step (under the lock)."""
  problem = marker_problem(config, workdir)
  if problem:
    workdir_lib.withdraw_trained(
        workdir, problem, final_marker(config),
        then='this run resumes from the newest checkpoint, trains to the final step and '
             'scores that step')


def _results_of_another_step(config, workdir: str, states) -> bool:
  """Whether the results on disk scored another step than the final one of states
  (their marker was wrong): they are scored again, with a warning."""
  if not results_complete(config, workdir):
    return False
  with open(os.path.join(results_folder(config, workdir), results.METRICS_FILE)) as f:
    scored = json.load(f).get('scored_step')
  final = train_lib.step_of(states)
  if scored is None or scored == final:
    return False
  logging.warning('%s holds results of step %s, not of the final step %d: scoring the final '
                  'step into it again', results_folder(config, workdir), scored, final)
  return True


def _finished(config, workdir: str) -> bool:
  """Training finished (a finished marker that the checkpoints confirm) and the
  results of this evaluation are on disk."""
  return (workdir_lib.trained_step(workdir, final_marker(config)) is not None
          and marker_problem(config, workdir) is None
          and results_complete(config, workdir))


def is_finished(config, workdir: str) -> bool:
  """Nothing left to do for config in workdir: what the sweep launcher skips.

  The run folder holds this config's run (differing results-changing keys: not
  finished; main then refuses it, naming them), trained, and, when it ranks, the
  results of this very evaluation (other settings: not finished; main refuses them).
  """
  try:
    saved = workdir_lib.load_config_record(workdir)
  except workdir_lib.WorkdirError:
    return False
  if not isinstance(saved, dict):
    return False
  config = config_lib.adopt_recorded(config, saved)
  if config_lib.differing_keys(saved, config_lib.flatten(config)):
    return False
  if config.method == 'proxies':
    return not _pending_proxies(config, workdir, load_ranking_bench(config))
  if ranking_bench_path(config) is None:
    return workdir_lib.trained_step(workdir, final_marker(config)) is not None
  return (_finished(config, workdir)
          and not evaluation_differences(config, workdir, load_ranking_bench(config)))


def proxy_results_folder(workdir: str, name: str) -> str:
  return results.evaluation_folder(workdir, results.proxy_results_name(name))


def _pending_proxies(config, workdir: str, bench, refuse_others: bool = False) -> list[str]:
  """The proxies without results; results of other settings are pending too, or
  refused (EvaluationError naming the difference) with refuse_others."""
  top_ns = tuple(n for n in config.eval.top_ns if n <= len(bench))
  pending = []
  for name in config_lib.proxy_names(config):
    folder = proxy_results_folder(workdir, name)
    differences = results.identity_differences(folder, config, bench.sha256, top_ns)
    if differences and refuse_others:
      raise EvaluationError(f'{folder} holds scores of other settings '
                            f'({"; ".join(differences)}); use another --workdir')
    if differences or not os.path.exists(os.path.join(folder, results.METRICS_FILE)):
      pending.append(name)
  return pending


def score_proxies(config, workdir: str) -> dict[str, dict]:
  """method='proxies': score the archs with zero-cost proxies at initialisation.

  Every seed is one super-network init (proxies.initial_variables), every arch its
  stand-alone subset of it, every arch the same batch of proxies.batch_size training
  images drawn by eval.random_seed; eval.scope picks the archs (configs/proxies.py:
  the whole allowed space). One results folder per proxy, results/proxy-<name>/, with
  the files and metrics of a super-network run. Returns {name: metrics}.
  """
  config_lib.validate(config)
  if ranking_bench_path(config) is None:
    raise config_lib.ConfigError(f'method=proxies ranks archs: bench.path='
                                 f'{config.bench.path!r} turns ranking off')
  bench = load_ranking_bench(config)
  workdir_lib.check_same_run(workdir, config)
  rows, groups, top_ns = scored_rows(config, bench)
  top_config = config.copy_and_resolve_references()
  with top_config.unlocked():
    top_config.eval.top_ns = top_ns
  pending = _pending_proxies(config, workdir, bench, refuse_others=True)
  summaries = {}
  with workdir_lib.lock(workdir):
    workdir_lib.prepare(workdir, config)
    if pending:
      _check_space_for_results(config, workdir, len(rows) * len(pending))
      summaries = _write_proxy_results(config, top_config, workdir, bench, rows, groups,
                                       pending)
  for name in config_lib.proxy_names(config):
    if name not in summaries:
      folder = proxy_results_folder(workdir, name)
      with open(os.path.join(folder, results.METRICS_FILE)) as f:
        summaries[name] = json.load(f)
      print(results.format_summary(summaries[name], folder), flush=True)
  return summaries


def _write_proxy_results(config, top_config, workdir, bench, rows, groups, names):
  """Score `names` with every seed's init; write and print each proxy's results."""
  data = load_run_data(config, workdir)
  # One layer per cell in grad_norm: the unrolled cells (proxies refuse scan_cells).
  model = train_lib.create_model(config, scan_cells=False)
  images, labels = proxies.proxy_batch(np.asarray(data.train_images),
                                       np.asarray(data.train_labels),
                                       config.proxies.batch_size, config.eval.random_seed)
  images = augment.eval_images(images, stats=data_lib.channel_stats(config.data.dataset))
  seeds = tuple(config.seeds)
  scores = {name: np.zeros((len(seeds), len(rows))) for name in names}
  logging.info('scoring %d archs x %d seeds with %s at initialisation', len(rows),
               len(seeds), ', '.join(names))
  start = time.time()
  for i, seed in enumerate(seeds):
    by_name = proxies.score_archs(model, bench.archs[rows], images, labels, names, seed,
                                  config.proxies.archs_per_call,
                                  report=_scoring_progress(seed, i, len(seeds), start, 'archs'))
    for name in names:
      scores[name][i] = by_name[name]
    logging.info('seed %d: %d archs scored', seed, len(rows))
  rate = len(seeds) * len(rows) / (time.time() - start)
  summaries = {}
  for name in names:
    folder = proxy_results_folder(workdir, name)
    summaries[name] = _write_results(workdir, folder, top_config, bench, rows, groups,
                                     scores[name], rate, score_column=results.PROXY_COLUMN,
                                     score_name=name)
    print(results.format_summary(summaries[name], folder), flush=True)
  return summaries


def trajectory_rows(config, bench) -> tuple[np.ndarray, dict, tuple[int, ...]]:
  """The archs the trajectory scores (as scored_rows): a sample of eval.trajectory_size
  archs of the subset, one group, or with 0 the run's evaluation groups."""
  if config.eval.trajectory_size:
    rows = trajectory.sample_rows(len(bench), config.eval.trajectory_size,
                                  config.eval.random_seed)
    return rows, {'all': np.arange(len(rows))}, ()
  return scored_rows(config, bench)


def trajectory_recorder(config, workdir: str, bench, data, writer, *, fewshot_phase=False):
  """The train loop's hook that records the ranking trajectory (trajectory.Recorder) of
  the one-shot phase or, with fewshot_phase, of the few-shot sub-networks."""
  rows, groups, top_ns = trajectory_rows(config, bench)
  model = (fewshot.create_model if fewshot_phase else train_lib.create_model)(config)
  score_archs = fewshot.score_archs if fewshot_phase else scoring.score_archs
  recal = (scoring.recalibration_images(config, data)
           if config.eval.bn_mode == 'recalibrate' else None)

  def score(params, batch_stats, archs):
    return score_archs(config, model, params, batch_stats, archs, data, recal)
  phase = fewshot.train_config(config) if fewshot_phase else config
  return trajectory.Recorder(
      phase, workdir, bench=bench, rows=rows, groups=groups, top_ns=top_ns,
      num_train=data.num_train, score=score,
      seed_variables=fewshot.seed_variables if fewshot_phase else scoring.seed_variables,
      epoch_offset=config.train.epochs if fewshot_phase else 0.0, writer=writer)


def _train_all_phases(config, workdir: str, data, bench):
  """train.train, then the few-shot sub-networks when the run has them, recording the
  ranking trajectory of each phase when it ranks and eval.every_epochs is set."""
  record = bench is not None and trajectory.enabled(config)
  writer = workdir_lib.summary_writer(workdir) if record else None
  try:
    states = train_lib.train(
        config, workdir, data,
        on_steps=trajectory_recorder(config, workdir, bench, data, writer) if record else None)
    if config_lib.fewshot_enabled(config):  # then split it and train the sub-networks
      states = fewshot.train_fewshot(
          config, workdir, data, states,
          on_steps=(trajectory_recorder(config, workdir, bench, data, writer,
                                        fewshot_phase=True) if record else None))
  finally:
    if writer is not None:
      writer.close()
  return states


def train_and_evaluate(config, workdir: str) -> dict | None:
  """The main job: train all seeds, then rank the bench's archs with each.

  Returns the results' metrics (None when ranking is off). method='proxies' scores
  zero-cost proxies instead (score_proxies).
  """
  if config.method == 'proxies':
    return score_proxies(config, workdir)
  saved = workdir_lib.load_config_record(workdir)
  if saved is not None:  # an 'auto' data source reads what the run read before
    config = config_lib.adopt_recorded(config, saved)
  config_lib.validate(config)
  ranking = ranking_bench_path(config) is not None
  bench = load_ranking_bench(config) if ranking else None  # a bad table fails now
  workdir_lib.check_same_run(workdir, config)  # before anything is written
  if ranking:
    refuse_other_evaluation(config, workdir, bench)
    if _finished(config, workdir):
      logging.info('%s is finished and holds these results; nothing to do',
                   results_folder(config, workdir))
      _print_stored_summary(config, workdir)
      return None
  with workdir_lib.lock(workdir):
    data = load_run_data(config, workdir)
    _withdraw_wrong_marker(config, workdir)
    states = _train_all_phases(config, workdir, data, bench)
    if not ranking:
      logging.info('bench.path=%r: training only, no ranking', config.bench.path)
      return None
    stale = _results_of_another_step(config, workdir, states)
    # Scored before, trained again after a bad checkpoint (or a marker that was wrong).
    if results_complete(config, workdir) and not stale:
      logging.info('results of this run exist already; nothing to evaluate')
      _print_stored_summary(config, workdir)
      return None
    return evaluate_run(config, workdir, states, data, bench=bench, overwrite=stale)


def rescore(workdir: str, overrides: dict, *, overwrite: bool = False) -> dict:
  """Score a finished run again with other eval.* / bench.* values (the evaluate CLI).

  Everything that can be refused is checked before the slow restore: the overrides,
  the bench file and metric, existing results and the free disk space.
  """
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
  if ranking_bench_path(config) is None:
    raise config_lib.ConfigError(f'bench.path={config.bench.path!r} turns ranking off: pass '
                                 f"--config.bench.path='builtin' or a table file")
  bench = load_ranking_bench(config)
  refuse_existing_results(config, workdir, overwrite)
  _check_space_for_results(config, workdir, len(scored_rows(config, bench)[0]))
  problem = marker_problem(config, workdir)
  if problem:
    raise EvaluationError(f'{problem}; rerun spos_jax.main on this workdir (it removes the '
                          f'marker, trains to the final step and scores it), then evaluate '
                          f'again')
  final_step = workdir_lib.trained_step(workdir, final_marker(config))
  if final_step is not None:  # the checkpoints to average are there (no marker: refused below)
    averaged_steps(config, workdir, final_step)
  # A stop while restoring is seen here; one while scoring, by the scoring inside.
  with workdir_lib.lock(workdir), preemption.PreemptionWatcher(
      kept=lambda: preemption.SCORE_AGAIN, inner_stops=True) as watcher:
    states, data = restore_trained_states(config, workdir)
    check_run_data(config, workdir, data)
    watcher.stop_if_requested('restoring the run')
    return evaluate_run(config, workdir, states, data, overwrite=overwrite, bench=bench)
