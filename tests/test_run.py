"""spos_jax.run: the orchestration of a run and of re-scoring: what a rerun decides from
the files on disk before any work, the refusals, and the end-of-run summary.

One finished tiny run (C=4, N=1, fp32, 1 seed, a few optimizer steps on synthetic
data, ranked against the packaged NB201 table on 20 + 25 archs) is copied for every
test that changes it.
"""
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from spos_jax import bench as bench_lib
from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import results
from spos_jax import run as run_lib
from spos_jax import space
from spos_jax import train
from spos_jax import workdir as workdir_lib

from conftest import make_tiny_config, snapshot

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
  """Results of other evaluation settings are refused naming the setting (not reported
  as 'results exist already'), and config.json keeps claiming what the results hold."""
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
  """With the final checkpoint gone, evaluate refuses instead of scoring the newest
  remaining one."""
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
  """A bad bench metric or file is refused before any checkpoint is restored."""
  _forbid_work(monkeypatch)
  with pytest.raises(error, match=match):
    run_lib.rescore(copy, dict(override, **{'eval.name': 'again'}))


def test_rescore_refuses_a_full_disk_before_restoring(copy, monkeypatch):
  """Too little free disk space is refused before restoring, not after minutes of scoring."""
  _forbid_work(monkeypatch)
  monkeypatch.setattr(shutil, 'disk_usage', lambda path: shutil._ntuple_diskusage(10, 9, 1))
  with pytest.raises(workdir_lib.DiskFullError, match='needed'):
    run_lib.rescore(copy, {'eval.name': 'again'})


def test_a_second_process_on_the_same_workdir_is_refused(tmp_path, monkeypatch):
  """The lock is taken before training; the refusal names the holder."""
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
  only prints them. (Each proxy's numbers, synflow's float64 included, are proven in
  tests/test_proxies.py; here the two cheapest to compile.)"""
  workdir = str(tmp_path / 'proxies')
  config = run_config(**{'method': 'proxies', 'seeds': (0, 1), 'eval.scope': 'all',
                         'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                         'proxies.names': 'snip,grad_norm', 'proxies.batch_size': 8})
  summaries = run_lib.train_and_evaluate(config, workdir)
  assert sorted(summaries) == ['grad_norm', 'snip']
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


# ------------------------------------------------------- the data a run was trained on


def _npz_config(path, **fields):
  """run_config reading a .npz file ('auto' source: what a user passes on the command line)."""
  return run_config(**{'data.source': 'auto', 'data.path': str(path), **fields})


@pytest.fixture(scope='module')
def npz_files(tmp_path_factory):
  """Three .npz files shaped as run_config's synthetic data: one, a byte-for-byte copy
  of it under another name, and one with the same images but shuffled labels."""
  folder = tmp_path_factory.mktemp('npz')
  arrays = data_lib.synthetic_arrays(FIELDS['data.synthetic_size'])
  shuffled = dict(arrays, y_train=np.random.default_rng(1).permutation(arrays['y_train']))
  files = {'data': folder / 'data.npz', 'copy': folder / 'copy.npz',
           'shuffled': folder / 'shuffled.npz'}
  np.savez(files['data'], **arrays)
  shutil.copyfile(files['data'], files['copy'])
  np.savez(files['shuffled'], **shuffled)
  return files


@pytest.fixture(scope='module')
def npz_finished(tmp_path_factory, npz_files):
  """A finished run on npz_files['data'], uninterrupted."""
  workdir = str(tmp_path_factory.mktemp('npz_run') / 'run')
  run_lib.train_and_evaluate(_npz_config(npz_files['data']), workdir)
  return workdir


def _stopped_after_step_2(finished_workdir, target) -> str:
  """A copy of a finished run as a kill after its checkpoint of step 2 leaves it."""
  shutil.copytree(finished_workdir, target)
  shutil.rmtree(os.path.join(target, 'results'))
  shutil.rmtree(os.path.join(target, 'checkpoints', '4'))
  os.remove(os.path.join(target, workdir_lib.TRAINED_MARKER))
  return str(target)


def _fingerprint(config) -> str:
  return data_lib.fingerprint(train.load_device_data(config))


def test_data_fingerprint_follows_the_contents_not_the_path(npz_files):
  fingerprints = {name: _fingerprint(_npz_config(path)) for name, path in npz_files.items()}
  assert fingerprints['data'] == fingerprints['copy'] != fingerprints['shuffled']


def test_resume_on_other_data_contents_is_refused_naming_both_fingerprints(
    npz_finished, npz_files, tmp_path, monkeypatch):
  """Killed after step 2, resumed with --config.data.path=<the same arrays with shuffled
  labels>: refused in one line before any step trains or a record changes."""
  workdir = _stopped_after_step_2(npz_finished, tmp_path / 'run')
  before = snapshot(workdir)
  monkeypatch.setattr(train, 'train', lambda *a, **k: pytest.fail('training started'))
  with pytest.raises(workdir_lib.WorkdirError) as info:
    run_lib.train_and_evaluate(_npz_config(npz_files['shuffled']), workdir)
  message = str(info.value)
  assert '\n' not in message
  assert _fingerprint(_npz_config(npz_files['data']))[:16] in message
  assert _fingerprint(_npz_config(npz_files['shuffled']))[:16] in message
  assert str(npz_files['data']) in message  # the data the run was trained on
  assert snapshot(workdir) == before


def test_resume_on_a_copy_of_the_data_ends_as_the_uninterrupted_run(
    npz_finished, npz_files, tmp_path):
  """Another path to the same arrays is the same data: the resumed run writes the
  uninterrupted run's predictions, and its metrics.json differs only in data.path
  (data.source is recorded as what 'auto' meant, resumed or not)."""
  workdir = _stopped_after_step_2(npz_finished, tmp_path / 'run')
  run_lib.train_and_evaluate(_npz_config(npz_files['copy']), workdir)
  config = _npz_config(npz_files['data'])
  folders = [run_lib.results_folder(config, w) for w in (npz_finished, workdir)]
  predictions = [open(os.path.join(f, results.PREDICTIONS_FILE)).read() for f in folders]
  assert predictions[0] == predictions[1]
  metrics = [json.load(open(os.path.join(f, results.METRICS_FILE))) for f in folders]
  for m in metrics:
    m.pop('evaluated_archs_per_second')
  assert metrics[0]['config'].pop('data.path') == str(npz_files['data'])
  assert metrics[1]['config'].pop('data.path') == str(npz_files['copy'])
  assert metrics[0] == metrics[1]
  assert metrics[0]['config']['data.source'] == 'npz'
  info = json.load(open(os.path.join(workdir, workdir_lib.RUN_INFO_FILE)))
  assert info['data_path'] == str(npz_files['copy'])
  assert info['data_sha256'] == _fingerprint(config)


def test_rescore_refuses_data_changed_in_place(npz_finished, npz_files, tmp_path):
  """The run's data file overwritten with other contents: evaluate refuses to score
  with it, naming both fingerprints, and writes no results."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(npz_finished, workdir)
  data_file = tmp_path / 'moved.npz'
  shutil.copyfile(npz_files['data'], data_file)
  record_path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  record = json.load(open(record_path))
  record['data.path'] = str(data_file)  # a run made with this file
  workdir_lib.write_json_atomic(record_path, record)
  shutil.copyfile(npz_files['shuffled'], data_file)
  with pytest.raises(workdir_lib.WorkdirError) as info:
    run_lib.rescore(workdir, {'eval.name': 'again'})
  assert _fingerprint(_npz_config(npz_files['shuffled']))[:16] in str(info.value)
  assert _fingerprint(_npz_config(npz_files['data']))[:16] in str(info.value)
  assert not os.path.exists(os.path.join(workdir, 'results', 'again'))


# ------------------------------------------------------- a finished marker that is wrong


@pytest.mark.parametrize('final_step_recorded', [True, False])
def test_marker_naming_an_earlier_step_is_not_taken_as_finished(
    copy, caplog, capsys, final_step_recorded):
  """TRAINED says 2, the final checkpoint is 4: not finished; the rerun says what is
  wrong and what it does, rewrites TRAINED with the final step and keeps the results,
  which scored that step."""
  info_path = os.path.join(copy, workdir_lib.RUN_INFO_FILE)
  info = json.load(open(info_path))
  assert info[workdir_lib.FINAL_STEP_KEY] == 4
  if not final_step_recorded:  # a run recorded before the final step was
    del info[workdir_lib.FINAL_STEP_KEY]
    workdir_lib.write_json_atomic(info_path, info)
  marker = os.path.join(copy, workdir_lib.TRAINED_MARKER)
  with open(marker, 'w') as f:
    f.write('2\n')
  assert not run_lib.is_finished(run_config(), copy)
  assert run_lib.marker_problem(run_config(), copy) == (
      f"{marker} names step 2, but the run's final step is 4" if final_step_recorded
      else f'{marker} names step 2, but the newest checkpoint in '
           f'{os.path.join(copy, "checkpoints")} is step 4')
  results_before = snapshot(os.path.join(copy, 'results'))
  with caplog.at_level(logging.WARNING):
    assert run_lib.train_and_evaluate(run_config(), copy) is None
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  # The rerun loads the data first, which records the final step.
  assert any(f"{marker} names step 2, but the run's final step is 4" in w and
             'this run resumes from the newest checkpoint, trains to the final step and '
             'scores that step' in w for w in warnings), warnings
  assert open(marker).read().strip() == '4'
  assert snapshot(os.path.join(copy, 'results')) == results_before
  assert 'Kendall' in capsys.readouterr().out
  assert run_lib.is_finished(run_config(), copy)


def test_results_of_another_step_than_the_final_one_are_scored_again(copy, caplog):
  """A wrong marker (2) whose step the results on disk scored: the rerun trains nothing,
  corrects the marker and scores the final step (4) into the same folder."""
  with open(os.path.join(copy, workdir_lib.TRAINED_MARKER), 'w') as f:
    f.write('2\n')
  metrics_path = os.path.join(run_lib.results_folder(run_config(), copy), results.METRICS_FILE)
  metrics = json.load(open(metrics_path))
  metrics['scored_step'] = 2
  workdir_lib.write_json_atomic(metrics_path, metrics)
  with caplog.at_level(logging.WARNING):
    summary = run_lib.train_and_evaluate(run_config(), copy)
  assert summary['scored_step'] == 4
  assert json.load(open(metrics_path))['scored_step'] == 4
  assert any('holds results of step 2, not of the final step 4' in r.getMessage()
             for r in caplog.records)


def test_rescore_refuses_a_marker_that_is_not_the_newest_checkpoint(copy, monkeypatch):
  _forbid_work(monkeypatch)
  marker = os.path.join(copy, workdir_lib.TRAINED_MARKER)
  with open(marker, 'w') as f:
    f.write('2\n')
  with pytest.raises(run_lib.EvaluationError,
                     match=rf"{marker} names step 2, but the run's final step is 4; rerun "
                           rf'spos_jax.main on this workdir'):
    run_lib.rescore(copy, {'eval.name': 'again'})


# ------------------------------------------- checkpoint-averaged scores, unique archs


def _spy_on_written_scores(monkeypatch) -> list:
  """The scores [seeds, archs] of every results.write call, in call order."""
  written = []
  real = results.write

  def spy(folder, **kwargs):
    written.append(np.array(kwargs['scores']))
    return real(folder, **kwargs)
  monkeypatch.setattr(results, 'write', spy)
  return written


def test_average_checkpoints_1_is_the_single_checkpoint_scoring(copy):
  """K=1 writes what the run itself wrote: the same predictions, byte for byte, and
  the same metrics besides the folder's name and the speed; its default folder name
  is today's."""
  run_lib.rescore(copy, {'eval.name': 'k1', 'eval.average_checkpoints': 1})
  assert results.results_name(run_config().eval) == 'running-groups'
  configs = [run_config(), run_config(**{'eval.name': 'k1'})]
  folders = [run_lib.results_folder(c, copy) for c in configs]
  predictions = [open(os.path.join(f, results.PREDICTIONS_FILE)).read() for f in folders]
  assert predictions[0] == predictions[1]
  stored, rescored = (_metrics(copy, c) for c in configs)
  for m in (stored, rescored):
    m.pop('evaluated_archs_per_second')
    m['config'].pop('eval.name')
  assert rescored == stored
  assert rescored['scored_steps'] == [4]
  assert rescored['evaluation']['eval.average_checkpoints'] == 1


def test_average_checkpoints_2_is_the_mean_of_two_single_scorings(copy, monkeypatch):
  """K=2 on a run with checkpoints every 2 steps and final step 4: the mean of step 4's
  and step 2's scores, each scored alone, one after the other, the same way."""
  written = _spy_on_written_scores(monkeypatch)
  data = train.load_device_data(run_config())
  for step in (4, 2):
    config = run_config(**{'eval.name': f'step{step}'})
    states = run_lib.restore_step(config, copy, step, data, 'the test scores it')
    assert run_lib.evaluate_run(config, copy, states, data)['scored_step'] == step
  summary = run_lib.rescore(copy, {'eval.average_checkpoints': 2})
  step4, step2, averaged = written
  assert not np.array_equal(step4, step2)  # two different checkpoints
  np.testing.assert_array_equal(averaged, (step4 + step2) / 2)
  assert summary['scored_step'] == 4 and summary['scored_steps'] == [4, 2]
  assert summary['evaluation']['eval.average_checkpoints'] == 2
  folder = os.path.join(copy, 'results', 'running-groups-avg2')
  assert json.load(open(os.path.join(folder, results.METRICS_FILE)))['scored_steps'] == [4, 2]
  # The single-checkpoint results are untouched, and K=1 and K=2 are two evaluations.
  assert _metrics(copy, run_config())['evaluation']['eval.average_checkpoints'] == 1


def test_average_checkpoints_refused_in_one_line_before_restoring(copy, monkeypatch):
  """A grid step missing (checkpoint 2 gone): refused before any data or weights load,
  naming the settings; more than the run keeps: refused by the config check."""
  _forbid_work(monkeypatch)
  shutil.rmtree(os.path.join(copy, 'checkpoints', '2'))
  with pytest.raises(run_lib.EvaluationError) as info:
    run_lib.rescore(copy, {'eval.average_checkpoints': 2})
  message = str(info.value)
  assert '\n' not in message
  for name in ('train.checkpoint_every_steps=2', 'train.keep_checkpoints',
               'eval.average_checkpoints'):
    assert name in message, message
  with pytest.raises(config_lib.ConfigError, match='train.keep_checkpoints=3'):
    run_lib.rescore(copy, {'eval.average_checkpoints': 4})
  assert not os.path.exists(os.path.join(copy, 'results', 'running-groups-avg2'))


def test_unique_scope_of_a_masked_run_scores_one_arch_per_class(tmp_path):
  """A run on the 64 archs of {skip_connect, nor_conv_3x3}, re-scored with
  eval.scope=unique: one row per isomorphism class of the subset (35), the class's
  lowest NB201 index with the class's mean bench accuracy, class id and size in
  predictions.csv, sizes adding up to the subset."""
  workdir = str(tmp_path / 'masked')
  config = run_config(**{'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                         'train.epochs': 1})
  run_lib.train_and_evaluate(config, workdir)
  summary = run_lib.rescore(workdir, {'eval.scope': 'unique'})
  subset = bench_lib.restrict(bench_lib.load_bench(bench_lib.BUILTIN),
                              config_lib.allowed_ops(config))
  classes = space.isomorphism_class(subset.archs)
  assert summary['evaluated_archs'] == len(np.unique(classes)) == 35
  assert summary['bench'] == dict(summary['bench'], archs_in_subset=35, archs_in_classes=64)
  assert summary['evaluation']['eval.scope'] == 'unique'
  folder = os.path.join(workdir, 'results', 'running-unique')
  with open(os.path.join(folder, results.PREDICTIONS_FILE), newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 35
  assert sum(int(r['class_size']) for r in rows) == 64
  truth = subset.metric('cifar10_test')
  for r in rows:
    members = classes == int(r['class_id'])
    assert int(r['class_size']) == members.sum()
    assert int(r['nb201_index']) == subset.indices[members].min()
    assert float(r['bench_acc']) == pytest.approx(truth[members].mean(), abs=1e-6)


# --------------------------------------------------------------------- zero-cost proxies


def test_proxies_job_logs_progress_with_an_eta(tmp_path, monkeypatch, caplog):
  """The line of super-net scoring ('scoring seed S: done/total ..., ETA'), in archs."""
  from spos_jax import proxies  # pylint: disable=g-import-not-at-top
  real = proxies.score_archs
  monkeypatch.setattr(proxies, 'score_archs',
                      lambda *a, **k: real(*a, **dict(k, report_every_s=0.0)))
  config = run_config(**{'method': 'proxies', 'eval.scope': 'all', 'proxies.archs_per_call': 8,
                         'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                         'proxies.names': 'grad_norm', 'proxies.batch_size': 4})
  with caplog.at_level(logging.INFO):
    run_lib.train_and_evaluate(config, str(tmp_path / 'proxies'))
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('scoring seed')]
  assert lines, 'no progress line'
  assert all(' archs, ' in line and '% of all seeds, ETA ' in line for line in lines), lines
  assert lines[-1].startswith('scoring seed 0: ') and '/64 archs' in lines[-1]
