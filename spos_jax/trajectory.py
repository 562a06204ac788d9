"""The ranking trajectory of a run: how the super-network ranks archs during training.

Every `eval.every_epochs` epochs the current weights of every seed score a fixed set
of archs on the validation split, as the final evaluation does (scoring.py), and the
run keeps
  trajectory/step_<step>.csv   each evaluation's per-arch accuracies (predictions.csv
                               columns), from which every number below is recomputed;
  trajectory.csv               one row per evaluation x seed x group: epoch, step,
                               seed, group, n, Kendall tau, Spearman, tau_a,
                               precision@10 and the mean super-net accuracy;
  tb/                          trajectory/<group>/kendall_tau etc., mean over seeds.
The archs are the run's evaluation groups (eval.trajectory_size=0) or a sample of
eval.trajectory_size archs of the allowed subset drawn once with eval.random_seed
(group 'sample'). An evaluation falls on the first step at or past each multiple of
eval.every_epochs epochs (every step when train.steps_per_dispatch=1), its epoch is
that step's.

Crash safety: the hook runs before the step's checkpoint is saved, and an evaluation
at step S replaces every row of step S or later, so a run killed and resumed from an
older checkpoint (which retrains and re-evaluates the same steps) has neither
duplicate nor missing rows.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from typing import Callable

from absl import logging
import numpy as np

from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import results
from spos_jax import workdir as workdir_lib

TRAJECTORY_FILE = 'trajectory.csv'
TRAJECTORY_DIR = 'trajectory'
COLUMNS = ('epoch', 'step', 'seed', 'group', 'n', 'kendall_tau', 'spearman', 'tau_a',
           'precision_at_10', 'mean_supernet_acc')
SAMPLE_GROUP = 'sample'
_PRECISION_K = '10'


def enabled(config) -> bool:
  return config.eval.every_epochs > 0


def evaluation_steps(every_epochs: int, epochs: int, micro_per_epoch: int,
                     group_size: int) -> list[int]:
  """Optimizer steps that end epochs every_epochs, 2 every_epochs, ..., up to `epochs`."""
  return sorted({(e * micro_per_epoch) // group_size
                 for e in range(every_epochs, epochs + 1, every_epochs)} - {0})


def epoch_of(step: int, micro_per_epoch: int, group_size: int) -> float:
  return step * group_size / micro_per_epoch


def sample_rows(num_archs: int, size: int, seed: int) -> np.ndarray:
  """Sorted positions of `size` archs of a subset of num_archs, a pure function of seed."""
  if size >= num_archs:
    return np.arange(num_archs)
  return np.sort(np.random.default_rng(seed).choice(num_archs, size, replace=False))


def file_of_step(workdir: str, step: int) -> str:
  return os.path.join(workdir, TRAJECTORY_DIR, f'step_{step:08d}.csv')


def _number(value) -> str:
  return '' if value is None or not math.isfinite(value) else f'{value:.6f}'


def rows_of_evaluation(summary: dict, seeds, epoch: float, step: int,
                       sample: bool) -> list[list]:
  """trajectory.csv rows of one evaluation from results.summarize's metrics."""
  rows = []
  for seed in seeds:
    key = str(seed)
    tau_a = summary['tau_a']['per_seed'][key]
    precision = summary['precision_at_k'].get(_PRECISION_K, {}).get('per_seed', {}).get(key)
    for name, group in summary['groups'].items():
      stats = group['per_seed'][key]
      rows.append([f'{epoch:.4f}', step, seed, SAMPLE_GROUP if sample else name,
                   stats['n'], _number(stats['kendall_tau']), _number(stats['spearman']),
                   _number(tau_a), _number(precision), _number(stats['mean_supernet_acc'])])
  return rows


def read_rows(path: str) -> list[list[str]]:
  """The data rows of a trajectory.csv ([] when absent)."""
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is not None and tuple(header) != COLUMNS:
      raise workdir_lib.WorkdirError(
          f'{path} has the columns {header}, not {list(COLUMNS)}; move it away to start '
          f'the trajectory anew')
    return list(reader)


def merged_text(existing: list[list[str]], new_rows: list[list], step: int) -> str:
  """trajectory.csv text: the rows of steps before `step`, then the new rows."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(COLUMNS)
  writer.writerows(row for row in existing if int(row[1]) < step)
  writer.writerows(new_rows)
  return buffer.getvalue()


class Recorder:
  """The train loop's hook (train.train_loop on_steps) that records the trajectory.

  score(params, batch_stats, archs, seed_index) -> accuracies [archs] scores with the
  weights of one seed; seed_variables(states, i) -> (params, batch_stats) picks them
  (scoring.seed_variables or fewshot.seed_variables). epoch_offset shifts the epochs
  of a later phase (few-shot sub-networks train after the one-shot epochs).
  """

  def __init__(self, config, workdir: str, *, bench, rows: np.ndarray, groups: dict,
               top_ns, num_train: int, seed_variables: Callable, score: Callable,
               epochs: int | None = None, epoch_offset: float = 0.0, writer=None):
    self.config, self.workdir, self.bench = config, workdir, bench
    self.rows, self.groups, self.top_ns = rows, groups, tuple(top_ns)
    self.sample = config.eval.trajectory_size > 0
    self.seed_variables, self.score, self.writer = seed_variables, score, writer
    self.micro_per_epoch = data_lib.steps_per_epoch(num_train, config.train.batch_size)
    self.group_size = config_lib.group_size(config)
    self.epoch_offset = epoch_offset
    self.steps = evaluation_steps(config.eval.every_epochs,
                                  config.train.epochs if epochs is None else epochs,
                                  self.micro_per_epoch, self.group_size)
    self.truth = bench.metric(config_lib.bench_metric(config))[rows]

  def due(self, step_before: int, step: int) -> bool:
    """Whether an evaluation step lies in (step_before, step]."""
    return any(step_before < s <= step for s in self.steps)

  def __call__(self, states, step_before: int, step: int) -> None:
    if not self.due(step_before, step):
      return
    seeds = tuple(self.config.seeds)
    start = time.time()
    scores = np.zeros((len(seeds), len(self.rows)))
    for i in range(len(seeds)):
      params, batch_stats = self.seed_variables(states, i)
      scores[i] = self.score(params, batch_stats, self.bench.archs[self.rows])
    epoch = self.epoch_offset + epoch_of(step, self.micro_per_epoch, self.group_size)
    summary = results.summarize(seeds, scores, self.truth, self.groups, self.top_ns)
    self._write(step, results.predictions_csv(
        seeds, self.bench.indices[self.rows], self.bench.arch_strings[self.rows], scores,
        self.truth), rows_of_evaluation(summary, seeds, epoch, step, self.sample))
    self._log(summary, epoch, step, time.time() - start)

  def _write(self, step: int, predictions: str, new_rows: list[list]) -> None:
    os.makedirs(os.path.join(self.workdir, TRAJECTORY_DIR), exist_ok=True)
    workdir_lib.write_text_atomic(file_of_step(self.workdir, step), predictions)
    path = os.path.join(self.workdir, TRAJECTORY_FILE)
    workdir_lib.write_text_atomic(path, merged_text(read_rows(path), new_rows, step))

  def _log(self, summary: dict, epoch: float, step: int, seconds: float) -> None:
    everything = summary['groups']['all']
    tau = everything['kendall_tau']['mean']
    logging.info('trajectory at epoch %.2f (step %d): Kendall tau %.3f over %d archs, '
                 'scored in %.0f s', epoch, step, tau, len(self.rows), seconds)
    if self.writer is None:
      return
    for name, group in summary['groups'].items():
      tag = SAMPLE_GROUP if self.sample else name
      for field in ('kendall_tau', 'spearman', 'mean_supernet_acc'):
        value = group[field]['mean']
        if value is not None and math.isfinite(value):
          self.writer.add_scalar(f'trajectory/{tag}/{field}', value, step)
    tau_a = summary['tau_a']['value']
    if math.isfinite(tau_a):
      self.writer.add_scalar('trajectory/tau_a', tau_a, step)
    self.writer.flush()
