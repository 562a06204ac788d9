"""spos_jax.run: the orchestration of a run and of re-scoring (issue 13 items 3-6, 8;
issue 12's "decide from the files first" and the end-of-run summary).

One finished tiny run (C=4, N=1, fp32, 1 seed, a few optimizer steps on synthetic
data, ranked against the packaged NB201 table on 20 + 25 archs) is copied for every
test that changes it.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from spos_jax import bench as bench_lib
from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import results
from spos_jax import run as run_lib
from spos_jax import train
from spos_jax import workdir as workdir_lib

from conftest import make_tiny_config

FIELDS = {
    'data.synthetic_size': 120,
    'data.val_size': 24,
    'train.epochs': 2,  # 96 images in batches of 8: 12 micro-batches, 2 fair groups an epoch
    'train.checkpoint_every_steps': 2,
    'eval.batch_size': 24,
    'eval.groups_per_call': 4,
    'eval.top_ns': (10, 25),
    'eval.random_size': 20,
    'bench.path': 'builtin',
}


def run_config(**fields):
  config = make_tiny_config(**FIELDS)
  for key, value in fields.items():
    config_lib.set_flat(config, key, value)
  return config


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished run folder, its config and the summary train_and_evaluate returned."""
  workdir = str(tmp_path_factory.mktemp('finished') / 'run')
  config = run_config()
  summary = run_lib.train_and_evaluate(config, workdir)
  return dict(workdir=workdir, config=config, summary=summary)


@pytest.fixture
def copy(finished, tmp_path):
  """A copy of the finished run folder that a test may change."""
  target = str(tmp_path / 'run')
  shutil.copytree(finished['workdir'], target)
  return target


def _forbid_work(monkeypatch):
  """Fail the test if data is loaded, weights restored or anything is scored."""
  def fail(*args, **kwargs):
    raise AssertionError('work started')
  monkeypatch.setattr(train, 'load_device_data', fail)
  monkeypatch.setattr(run_lib, 'restore_trained_states', fail)
  monkeypatch.setattr(run_lib, 'evaluate_run', fail)


def _metrics(workdir, config):
  with open(os.path.join(run_lib.results_folder(config, workdir), results.METRICS_FILE)) as f:
    return json.load(f)


def test_results_record_the_scored_step_and_the_summary_is_printed(finished, capsys):
  step = workdir_lib.trained_step(finished['workdir'])
  assert step == 4
  assert finished['summary']['scored_step'] == step
  assert _metrics(finished['workdir'], finished['config'])['scored_step'] == step


def test_rerun_of_a_finished_run_decides_from_the_files(copy, monkeypatch, capsys):
  """No data loading, restore or compile: it prints the stored results and stops."""
  _forbid_work(monkeypatch)
  assert run_lib.train_and_evaluate(run_config(), copy) is None
  out = capsys.readouterr().out
  assert 'Kendall' in out and results.METRICS_FILE in out


@pytest.mark.parametrize('key,value', [
    ('bench.metric', 'cifar10_valid_12ep'),
    ('eval.top_ns', (10,)),
    ('eval.random_size', 21),
    ('eval.random_seed', 3),
    ('eval.bn_mode', 'batch'),
])
def test_changed_evaluation_setting_is_refused_naming_it(copy, monkeypatch, key, value):
  """Issue 13 item 4: no 'results exist already' over results of other settings, and
  config.json keeps claiming what the results hold."""
  _forbid_work(monkeypatch)
  if key == 'eval.bn_mode':  # another bn_mode is another folder: name it as the old one
    value_fields = {key: value, 'eval.name': 'running-groups'}
  else:
    value_fields = {key: value}
  record = open(os.path.join(copy, workdir_lib.CONFIG_FILE)).read()
  with pytest.raises(run_lib.EvaluationError, match=rf'other settings \(.*{key}: '):
    run_lib.train_and_evaluate(run_config(**value_fields), copy)
  assert open(os.path.join(copy, workdir_lib.CONFIG_FILE)).read() == record


def test_changed_training_setting_is_refused_before_anything_is_written(copy, monkeypatch):
  _forbid_work(monkeypatch)
  record = open(os.path.join(copy, workdir_lib.CONFIG_FILE)).read()
  with pytest.raises(workdir_lib.WorkdirError, match='train.lr'):
    run_lib.train_and_evaluate(run_config(**{'train.lr': 0.5}), copy)
  assert open(os.path.join(copy, workdir_lib.CONFIG_FILE)).read() == record


def test_rescore_scores_exactly_the_step_trained_names(copy):
  """Issue 13 item 3: with the final checkpoint gone, evaluate refuses instead of
  scoring the newest remaining one."""
  final = workdir_lib.trained_step(copy)
  shutil.move(os.path.join(copy, 'checkpoints', str(final)), os.path.join(copy, 'elsewhere'))
  assert os.path.isdir(os.path.join(copy, 'checkpoints', '2'))
  with pytest.raises(checkpoint.CheckpointError, match=rf'step {final}.*TRAINED'):
    run_lib.rescore(copy, {'eval.name': 'again'})
  assert not os.path.exists(os.path.join(copy, 'results', 'again'))


def test_rescore_writes_its_own_folder_with_the_scored_step(copy, finished):
  summary = run_lib.rescore(copy, {'eval.name': 'again', 'eval.random_seed': 1})
  assert summary['scored_step'] == workdir_lib.trained_step(copy)
  assert summary['evaluation']['eval.random_seed'] == 1
  # the first evaluation is untouched
  assert _metrics(copy, finished['config']) == _metrics(finished['workdir'], finished['config'])


@pytest.mark.parametrize('override,error,match', [
    ({'bench.metric': 'nope'}, config_lib.ConfigError, 'nope'),
    ({'bench.path': '/no/such/table.csv'}, bench_lib.BenchError, 'no such bench file'),
])
def test_rescore_checks_the_bench_before_restoring(copy, monkeypatch, override, error, match):
  """Issue 13 item 8."""
  _forbid_work(monkeypatch)
  with pytest.raises(error, match=match):
    run_lib.rescore(copy, dict(override, **{'eval.name': 'again'}))


def test_rescore_refuses_a_full_disk_before_restoring(copy, monkeypatch):
  """Issue 13 item 5: not after minutes of scoring."""
  _forbid_work(monkeypatch)
  monkeypatch.setattr(shutil, 'disk_usage', lambda path: shutil._ntuple_diskusage(10, 9, 1))
  with pytest.raises(workdir_lib.DiskFullError, match='needed'):
    run_lib.rescore(copy, {'eval.name': 'again'})


def test_a_second_process_on_the_same_workdir_is_refused(tmp_path, monkeypatch):
  """Issue 13 item 6: the lock is taken before training; the refusal names the holder."""
  workdir = str(tmp_path / 'run')
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\nfrom spos_jax import workdir\n'
       'with workdir.lock(sys.argv[1]):\n  print("held", flush=True)\n  time.sleep(120)\n',
       workdir], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'

    def fail(*args, **kwargs):
      raise AssertionError('training started')
    monkeypatch.setattr(train, 'load_device_data', fail)
    with pytest.raises(workdir_lib.WorkdirError, match=rf'in use by pid {holder.pid}'):
      run_lib.train_and_evaluate(run_config(**{'bench.path': 'none'}), workdir)
  finally:
    holder.kill()
    holder.wait()


def test_is_finished_only_for_the_same_config_and_evaluation(copy):
  """What the sweep launcher skips: not a run whose results hold other settings."""
  assert run_lib.is_finished(run_config(), copy)
  assert not run_lib.is_finished(run_config(**{'eval.random_size': 21}), copy)
  assert not run_lib.is_finished(run_config(**{'bench.metric': 'cifar10_valid_12ep'}), copy)
  assert not run_lib.is_finished(run_config(**{'train.lr': 0.5}), copy)
  assert run_lib.is_finished(run_config(**{'eval.groups_per_call': 2}), copy)  # speed only
  os.remove(os.path.join(copy, workdir_lib.TRAINED_MARKER))
  assert not run_lib.is_finished(run_config(), copy)


def test_proxies_job_scores_the_whole_masked_space_into_one_folder_per_proxy(tmp_path, capsys):
  """method='proxies' end to end: results/proxy-<name>/ with the usual files; a rerun
  only prints them."""
  workdir = str(tmp_path / 'proxies')
  config = run_config(**{'method': 'proxies', 'seeds': (0, 1), 'eval.scope': 'all',
                         'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                         'proxies.names': 'snip,synflow', 'proxies.batch_size': 8})
  summaries = run_lib.train_and_evaluate(config, workdir)
  assert sorted(summaries) == ['snip', 'synflow']
  for name, summary in summaries.items():
    folder = run_lib.proxy_results_folder(workdir, name)
    assert summary['score'] == {'column': results.PROXY_COLUMN, 'kind': 'proxy', 'name': name}
    assert summary['groups']['all']['n']['mean'] == 2 ** 6  # skip and 3x3 conv only
    assert summary['seeds'] == [0, 1]
    with open(os.path.join(folder, results.PREDICTIONS_FILE)) as f:
      assert len(f.read().splitlines()) == 1 + 2 * 2 ** 6
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
  capsys.readouterr()
  again = run_lib.train_and_evaluate(config, workdir)
  assert again['snip'] == summaries['snip']
  assert 'proxy' in capsys.readouterr().out


def test_config_knows_the_proxies_that_proxies_computes():
  from spos_jax import proxies  # pylint: disable=g-import-not-at-top
  assert config_lib.PROXY_NAMES == proxies.PROXY_NAMES


def test_proxies_run_is_finished_when_every_proxy_has_its_results(tmp_path):
  workdir = str(tmp_path / 'proxies')
  config = run_config(**{'method': 'proxies', 'eval.scope': 'all',
                         'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                         'proxies.names': 'grad_norm', 'proxies.batch_size': 4})
  assert not run_lib.is_finished(config, workdir)
  run_lib.train_and_evaluate(config, workdir)
  assert run_lib.is_finished(config, workdir)
  assert not run_lib.is_finished(run_config(**dict(config_lib.flatten(config),
                                                   **{'eval.random_seed': 5})), workdir)


def test_few_shot_run_end_to_end_scores_with_the_sub_networks(tmp_path, capsys):
  """The main job with fewshot.split_edge: one-shot training, the few-shot phase, then
  each arch scored by its sub-network; a rerun only prints the results."""
  workdir = str(tmp_path / 'fewshot')
  config = run_config(**{'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                         'fewshot.split_edge': 3, 'fewshot.epochs': 1, 'train.epochs': 1,
                         'eval.scope': 'all'})
  summary = run_lib.train_and_evaluate(config, workdir)
  final = workdir_lib.trained_step(workdir, workdir_lib.FEWSHOT_TRAINED_MARKER)
  assert final is not None and summary['scored_step'] == final
  assert os.listdir(os.path.join(workdir, workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER))
  assert summary['groups']['all']['n']['mean'] == 2 ** 6
  assert run_lib.is_finished(config, workdir)
  capsys.readouterr()
  assert run_lib.train_and_evaluate(config, workdir) is None
  assert 'Kendall' in capsys.readouterr().out
  with pytest.raises(config_lib.ConfigError, match='set fewshot.split_edge=-1'):
    config_lib.validate(run_config(**{'method': 'proxies', 'fewshot.split_edge': 3}))
