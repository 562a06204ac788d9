"""spos_jax.trajectory: the ranking trajectory a run records while it trains.

The end-to-end tests train a tiny run (C=4, N=1, 1 seed, synthetic data, 2 epochs of
2 fair groups) ranked against the packaged NB201 table, with an evaluation every
epoch, and recompute every trajectory number from the per-evaluation files.
"""
import csv
import os

import numpy as np
import pytest

from spos_jax import metrics
from spos_jax import results
from spos_jax import run as run_lib
from spos_jax import train
from spos_jax import trajectory

from test_run import run_config

TRAJECTORY = {'eval.every_epochs': 1, 'eval.trajectory_size': 0}


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_evaluation_steps_end_every_kth_epoch():
  # 12 micro-batches an epoch, fair groups of 5: epochs end at steps 2.4, 4.8, 7.2, 9.6.
  assert trajectory.evaluation_steps(1, 4, 12, 5) == [2, 4, 7, 9]
  assert trajectory.evaluation_steps(2, 4, 12, 5) == [4, 9]
  assert trajectory.evaluation_steps(5, 4, 12, 5) == []  # fewer epochs than the period
  assert trajectory.evaluation_steps(1, 2, 12, 1) == [12, 24]  # uniform: one per step


def test_sample_is_a_pure_function_of_its_seed():
  a = trajectory.sample_rows(15625, 200, 3)
  assert len(a) == 200 == len(np.unique(a)) and np.all(np.diff(a) > 0)
  np.testing.assert_array_equal(a, trajectory.sample_rows(15625, 200, 3))
  assert not np.array_equal(a, trajectory.sample_rows(15625, 200, 4))
  np.testing.assert_array_equal(trajectory.sample_rows(50, 200, 0), np.arange(50))


def test_an_evaluation_replaces_the_rows_of_its_step_and_later():
  existing = [['0.5', '2', '0', 'all'] + [''] * 6, ['1.0', '4', '0', 'all'] + [''] * 6]
  text = trajectory.merged_text(existing, [['1.0', 4, 0, 'all'] + ['x'] * 6], 4)
  lines = text.splitlines()
  assert lines[0] == ','.join(trajectory.COLUMNS)
  assert [line.split(',')[1] for line in lines[1:]] == ['2', '4'] and lines[2].endswith('x')


def test_a_foreign_trajectory_file_is_refused_naming_it(tmp_path):
  path = tmp_path / 'trajectory.csv'
  path.write_text('a,b\n1,2\n')
  with pytest.raises(Exception, match='move it away'):
    trajectory.read_rows(str(path))


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
  """A finished run that recorded its trajectory every epoch."""
  workdir = str(tmp_path_factory.mktemp('trajectory') / 'run')
  config = run_config(**TRAJECTORY)
  run_lib.train_and_evaluate(config, workdir)
  return workdir, config


def _recomputed(workdir, step, subset_truth_top):
  """trajectory.csv's numbers of one step, recomputed from its per-arch file alone."""
  rows = _read_csv(trajectory.file_of_step(workdir, step))
  pred = np.array([float(r['supernet_acc']) for r in rows])
  truth = np.array([float(r['bench_acc']) for r in rows])
  order = np.argsort(-truth, kind='stable')
  out = {'all': (metrics.kendall_tau(pred, truth), metrics.spearman(pred, truth), pred.mean())}
  for n in subset_truth_top:
    top = order[:n]
    out[f'top{n}'] = (metrics.kendall_tau(pred[top], truth[top]),
                      metrics.spearman(pred[top], truth[top]), pred[top].mean())
  tau_a = metrics.tau_a(subset_truth_top, [out[f'top{n}'][2] for n in subset_truth_top])
  return out, tau_a


def test_every_number_of_the_trajectory_is_recomputed_from_its_files(recorded):
  workdir, config = recorded
  rows = _read_csv(os.path.join(workdir, trajectory.TRAJECTORY_FILE))
  steps = sorted({int(r['step']) for r in rows})
  assert steps == [2, 4]  # two fair groups an epoch, 2 epochs
  assert {r['epoch'] for r in rows} == {'0.8333', '1.6667'}  # 2 x 5 of 12 micro-batches
  assert {r['group'] for r in rows} == {'top10', 'top25', 'random', 'all'}
  for step in steps:
    expected, tau_a = _recomputed(workdir, step, (10, 25))
    for r in (r for r in rows if int(r['step']) == step):
      if r['group'] in expected:
        tau, rho, acc = expected[r['group']]
        assert float(r['kendall_tau']) == pytest.approx(tau, abs=1e-6)
        assert float(r['spearman']) == pytest.approx(rho, abs=1e-6)
        # predictions.csv keeps 4 decimals of each accuracy: the mean is within 5e-5
        assert float(r['mean_supernet_acc']) == pytest.approx(acc, abs=1e-4)
      assert float(r['tau_a']) == pytest.approx(tau_a, abs=1e-6)  # A_N far apart here


def test_the_last_evaluation_is_the_final_results(recorded):
  """Same weights, same archs: the trajectory's final accuracies are the results'."""
  workdir, config = recorded
  final = _read_csv(os.path.join(run_lib.results_folder(config, workdir),
                                 results.PREDICTIONS_FILE))
  last = _read_csv(trajectory.file_of_step(workdir, 4))
  assert [(r['nb201_index'], r['supernet_acc']) for r in last] == [
      (r['nb201_index'], r['supernet_acc']) for r in final]


class _Killed(Exception):
  pass


def test_a_kill_between_evaluation_and_checkpoint_leaves_no_duplicate(recorded, tmp_path):
  """The hook runs before the step's checkpoint: killed right after the evaluation of
  step 4, the run resumes from step 2, retrains, re-evaluates, and its trajectory is
  byte-identical to the uninterrupted run's."""
  workdir_done, _ = recorded
  workdir = str(tmp_path / 'run')
  config = run_config(**TRAJECTORY)
  data = train.load_device_data(config)
  bench = run_lib.load_ranking_bench(config)
  recorder = run_lib.trajectory_recorder(config, workdir, bench, data, writer=None)

  def record_then_die(states, step_before, step):
    recorder(states, step_before, step)
    if step == 4:
      raise _Killed
  with pytest.raises(_Killed):
    train.train(config, workdir, data, on_steps=record_then_die)
  assert sorted(int(r['step']) for r in _read_csv(os.path.join(workdir, 'trajectory.csv'))
                ) == [2] * 4 + [4] * 4
  run_lib.train_and_evaluate(config, workdir)  # resumes from the checkpoint of step 2
  for name in ('trajectory.csv', 'trajectory/step_00000002.csv', 'trajectory/step_00000004.csv'):
    with open(os.path.join(workdir, name)) as a, open(os.path.join(workdir_done, name)) as b:
      assert a.read() == b.read(), name


def test_a_sample_of_the_subset_is_one_group(tmp_path):
  workdir = str(tmp_path / 'run')
  config = run_config(**{'eval.every_epochs': 2, 'eval.trajectory_size': 30})
  data = train.load_device_data(config)
  bench = run_lib.load_ranking_bench(config)
  train.train(config, workdir, data,
              on_steps=run_lib.trajectory_recorder(config, workdir, bench, data, None))
  rows = _read_csv(os.path.join(workdir, trajectory.TRAJECTORY_FILE))
  assert [(r['step'], r['group'], r['n']) for r in rows] == [('4', 'sample', '30')]
  assert rows[0]['tau_a'] == ''  # no top-N groups in a sample
  scored = [int(r['nb201_index']) for r in _read_csv(trajectory.file_of_step(workdir, 4))]
  np.testing.assert_array_equal(
      scored, bench.indices[trajectory.sample_rows(len(bench), 30, config.eval.random_seed)])


def test_off_writes_nothing(tmp_path):
  workdir = str(tmp_path / 'run')
  run_lib.train_and_evaluate(run_config(**{'eval.every_epochs': 0}), workdir)
  assert not os.path.exists(os.path.join(workdir, trajectory.TRAJECTORY_FILE))
  assert not os.path.exists(os.path.join(workdir, trajectory.TRAJECTORY_DIR))


# The CPU-scale runs and the first protocol's runs (results/cpu_pilot/README.md).
COMMITTED_CPU_ROOTS = [
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results', name)
    for name in ('cpu', 'cpu_pilot')]


def _committed_trajectories():
  return sorted(os.path.join(root, name) for root in COMMITTED_CPU_ROOTS
                if os.path.isdir(root) for name in os.listdir(root)
                if os.path.exists(os.path.join(root, name, trajectory.TRAJECTORY_FILE)))


@pytest.mark.parametrize('run', _committed_trajectories() or [None])
def test_committed_trajectories_are_recomputed_from_their_files(run):
  """Every committed CPU-scale trajectory (real CIFAR-10) agrees with its per-arch files."""
  if run is None:
    pytest.skip('no committed run with a trajectory under results/cpu/ or results/cpu_pilot/')
  rows = _read_csv(os.path.join(run, trajectory.TRAJECTORY_FILE))
  assert rows
  for step in sorted({int(r['step']) for r in rows}):
    arch_rows = _read_csv(trajectory.file_of_step(run, step))
    for r in (r for r in rows if int(r['step']) == step and r['group'] == 'sample'):
      mine = [a for a in arch_rows if a['seed'] == r['seed']]
      pred = np.array([float(a['supernet_acc']) for a in mine])
      truth = np.array([float(a['bench_acc']) for a in mine])
      assert int(r['n']) == len(mine)
      assert float(r['kendall_tau']) == pytest.approx(metrics.kendall_tau(pred, truth), abs=1e-6)
      assert float(r['spearman']) == pytest.approx(metrics.spearman(pred, truth), abs=1e-6)
      assert float(r['mean_supernet_acc']) == pytest.approx(pred.mean(), abs=1e-4)
