"""Tests of spos_jax.results: metrics.json numbers (summarize) and the files (write)."""
import csv
import json
import os

import numpy as np
import pytest

from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import metrics
from spos_jax import results
from spos_jax import space
from spos_jax import workdir as workdir_lib

SEEDS = (0, 1, 2)
NUM_ARCHS = 200
TOP_NS = (10, 25, 50)
RANDOM_SIZE = 60


def _synthetic(num_archs=NUM_ARCHS, seeds=SEEDS, seed=0):
  """Bench accuracies [m] and per-seed super-net accuracies [S, m] (noisy, with ties).

  Super-net accuracies are multiples of 100/48 (counts over 48 images), so that ties
  occur as they do in real runs.
  """
  rng = np.random.default_rng(seed)
  truth = np.round(rng.uniform(80, 95, num_archs), 2)
  raw = 0.6 * truth + rng.normal(0, 3, (len(seeds), num_archs))
  scores = np.round(raw / (100 / 48)) * (100 / 48)
  return scores, truth


def _groups(truth, top_ns=TOP_NS, random_size=RANDOM_SIZE, seed=1):
  order = np.lexsort((np.arange(len(truth)), -truth))
  groups = {f'top{n}': order[:n] for n in top_ns}
  groups['random'] = np.sort(np.random.default_rng(seed).choice(len(truth), random_size,
                                                                  replace=False))
  groups['all'] = np.arange(len(truth))
  return groups


def _assert_equal_or_both_nan(a, b, what):
  if a is None or b is None:
    assert a is b, what
  elif np.isnan(a) or np.isnan(b):
    assert np.isnan(a) and np.isnan(b), what
  else:
    assert a == pytest.approx(b, rel=1e-12, abs=1e-12), what


# --------------------------------------------------------------------- summarize


@pytest.fixture(scope='module')
def summary():
  scores, truth = _synthetic()
  groups = _groups(truth)
  return scores, truth, groups, results.summarize(SEEDS, scores, truth, groups, TOP_NS)


def test_summary_has_every_group_and_field(summary):
  _, _, groups, out = summary
  assert set(out['groups']) == set(groups) == {'top10', 'top25', 'top50', 'random', 'all'}
  for entry in out['groups'].values():
    assert set(entry) == set(results.GROUP_METRICS) | {'per_seed'}
    assert set(entry['per_seed']) == {str(s) for s in SEEDS}
    for field in results.GROUP_METRICS:
      assert set(entry[field]) == {'mean', 'std'}


def test_group_metrics_per_seed_and_mean_std_match_numpy(summary):
  """Per seed: metrics.correlations and plain means; over seeds: np.mean, np.std(ddof=1)."""
  scores, truth, groups, out = summary
  for name, pos in groups.items():
    entry = out['groups'][name]
    expected = {}
    for i, seed in enumerate(SEEDS):
      want = metrics.correlations(scores[i, pos], truth[pos])
      want['mean_supernet_acc'] = np.mean(scores[i, pos])
      want['mean_bench_acc'] = np.mean(truth[pos])
      for field in results.GROUP_METRICS:
        _assert_equal_or_both_nan(entry['per_seed'][str(seed)][field], want[field],
                                  f'{name} seed {seed} {field}')
        expected.setdefault(field, []).append(want[field])
    assert entry['per_seed']['0']['n'] == len(pos)
    for field, values in expected.items():
      assert entry[field]['mean'] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-12)
      assert entry[field]['std'] == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-12)
    # The correlations differ between seeds: a std that is 0 would hide a bug.
    assert entry['kendall_tau']['std'] > 0
    assert entry['n'] == {'mean': len(pos), 'std': 0.0}
    assert entry['mean_bench_acc']['std'] == 0.0


def test_kendall_tau_of_summary_is_the_paper_formula_not_tau_b(summary):
  """With ties (scores are counts), kendall_tau and kendall_tau_b differ; both are reported."""
  scores, truth, groups, out = summary
  pos = groups['all']
  tau_b = metrics.kendall_tau_b(scores[0, pos], truth[pos])
  tau = metrics.kendall_tau(scores[0, pos], truth[pos])
  assert tau != pytest.approx(tau_b)  # the data has ties
  assert out['groups']['all']['per_seed']['0']['kendall_tau'] == pytest.approx(tau)
  assert out['groups']['all']['per_seed']['0']['kendall_tau_b'] == pytest.approx(tau_b)


def test_tau_a_uses_group_sizes_and_seed_averaged_a_n(summary):
  scores, truth, groups, out = summary
  a_n = [np.mean([scores[i, groups[f'top{n}']].mean() for i in range(len(SEEDS))])
         for n in TOP_NS]
  assert out['tau_a']['group_sizes'] == list(TOP_NS)
  np.testing.assert_allclose(out['tau_a']['mean_supernet_acc'], a_n, rtol=1e-12)
  assert out['tau_a']['value'] == pytest.approx(metrics.tau_a(TOP_NS, a_n))
  for i, seed in enumerate(SEEDS):
    per_seed = [scores[i, groups[f'top{n}']].mean() for n in TOP_NS]
    _assert_equal_or_both_nan(out['tau_a']['per_seed'][str(seed)],
                              metrics.tau_a(TOP_NS, per_seed), f'tau_a seed {seed}')


@pytest.mark.parametrize('direction,expected', [(1, -1.0), (-1, 1.0)])
def test_tau_a_of_monotone_a_n(direction, expected):
  """A perfect predictor's A_N falls as N grows (tau_a = -1); an inverted one rises (+1)."""
  truth = np.linspace(95, 80, NUM_ARCHS)  # distinct, best first
  scores = np.stack([50 + direction * (truth - 80) + s for s in range(len(SEEDS))])
  top_ns = (10, 25, 50, 100)
  groups = _groups(truth, top_ns)
  out = results.summarize(SEEDS, scores, truth, groups, top_ns)
  a_n = out['tau_a']['mean_supernet_acc']
  assert np.all(np.diff(a_n) * direction < 0)
  assert out['tau_a']['value'] == expected
  assert all(v == expected for v in out['tau_a']['per_seed'].values())


def test_precision_at_k_and_top1_per_seed(summary):
  scores, truth, groups, out = summary
  everything = groups['all']
  assert set(out['precision_at_k']) == {str(k) for k in results.PRECISION_KS}
  for k in results.PRECISION_KS:
    entry = out['precision_at_k'][str(k)]
    values = [metrics.precision_at_k(scores[i, everything], truth[everything], k)
              for i in range(len(SEEDS))]
    assert [entry['per_seed'][str(s)] for s in SEEDS] == pytest.approx(values)
    assert entry['mean'] == pytest.approx(np.mean(values))
    assert entry['std'] == pytest.approx(np.std(values, ddof=1))
  for i, seed in enumerate(SEEDS):
    want = metrics.top1_regret(scores[i, everything], truth[everything])
    want['score'] = scores[i, everything][want.pop('index')]
    assert out['top1']['per_seed'][str(seed)] == pytest.approx(want)
  for field in ('bench_rank', 'bench_accuracy', 'regret'):
    values = [out['top1']['per_seed'][str(s)][field] for s in SEEDS]
    assert out['top1'][field]['mean'] == pytest.approx(np.mean(values))
    assert out['top1'][field]['std'] == pytest.approx(np.std(values, ddof=1))


def test_precision_at_k_skips_k_above_the_scored_archs():
  scores, truth = _synthetic(num_archs=60)
  out = results.summarize(SEEDS, scores, truth, _groups(truth, (10, 25), random_size=20),
                          (10, 25))
  assert set(out['precision_at_k']) == {'10', '50'}


def test_single_seed_gives_std_none():
  scores, truth = _synthetic(seeds=(7,))
  groups = _groups(truth)
  out = results.summarize((7,), scores, truth, groups, TOP_NS)
  for name, entry in out['groups'].items():
    for field in results.GROUP_METRICS:
      assert entry[field]['std'] is None, (name, field)
      _assert_equal_or_both_nan(entry[field]['mean'], entry['per_seed']['7'][field],
                                f'{name} {field}')
  for entry in out['precision_at_k'].values():
    assert entry['std'] is None and entry['mean'] == entry['per_seed']['7']
  for field in ('bench_rank', 'bench_accuracy', 'regret'):
    assert out['top1'][field]['std'] is None
  assert results.mean_std([3.5]) == {'mean': 3.5, 'std': None}
  assert results.mean_std([1.0, 2.0, 4.0])['std'] == pytest.approx(np.std([1, 2, 4], ddof=1))


# ------------------------------------------------------------------------- write


def _bench(num_archs):
  """A Bench of num_archs distinct archs with shuffled NB201 indices."""
  rng = np.random.default_rng(3)
  rows = np.sort(rng.choice(space.NUM_ARCHS, num_archs, replace=False))
  archs = space.all_archs()[rows]
  return bench_lib.Bench(
      path='/somewhere/table.csv', sha256='ab' * 32, archs=archs,
      indices=rng.permutation(space.NUM_ARCHS)[:num_archs].astype(np.int64),
      arch_strings=np.asarray([space.arch_to_string(a) for a in archs]),
      metrics={'cifar10_test': np.round(rng.uniform(80, 95, num_archs), 2)})


def _write(folder, seeds=SEEDS, **kwargs):
  scores, truth = _synthetic(seeds=seeds)
  bench = _bench(NUM_ARCHS)
  truth = bench.metric('cifar10_test')
  groups = _groups(truth)
  config = config_lib.base_config()
  config.seeds = seeds
  config.eval.top_ns = TOP_NS
  config.eval.random_size = RANDOM_SIZE
  config.bench.path = bench.path
  out = results.write(str(folder), config=config, bench=bench, seeds=seeds,
                      indices=bench.indices, arch_strings=bench.arch_strings,
                      scores=scores, truth=truth, groups=groups,
                      evaluated_archs_per_second=12.5, **kwargs)
  return dict(scores=scores, truth=truth, groups=groups, config=config, bench=bench,
              summary=out)


def test_write_predictions_csv(tmp_path):
  folder = tmp_path / 'results' / 'running-groups'
  w = _write(folder)
  with open(folder / results.PREDICTIONS_FILE, newline='') as f:
    rows = list(csv.reader(f))
  assert tuple(rows[0]) == results.PREDICTION_COLUMNS == (
      'seed', 'nb201_index', 'arch', 'supernet_acc', 'bench_acc')
  body = rows[1:]
  assert len(body) == len(SEEDS) * NUM_ARCHS
  bench = w['bench']
  for r, (seed, index, arch, pred, truth) in enumerate(body):
    i, j = divmod(r, NUM_ARCHS)
    assert int(seed) == SEEDS[i]
    assert int(index) == bench.indices[j]
    assert arch == bench.arch_strings[j]
    assert float(pred) == pytest.approx(w['scores'][i, j], abs=5e-5)
    assert float(truth) == pytest.approx(w['truth'][j], abs=5e-7)


def test_write_metrics_json_with_config_and_bench(tmp_path):
  folder = tmp_path / 'out'
  w = _write(folder)
  with open(folder / results.METRICS_FILE) as f:
    saved = json.load(f)
  assert saved['config'] == config_lib.flatten(config_lib.resolved(w['config']))
  assert saved['config']['data.source'] == 'download'  # 'auto' without a path
  assert saved['config']['eval.top_ns'] == list(TOP_NS)
  assert saved['bench'] == {'path': '/somewhere/table.csv', 'sha256': 'ab' * 32,
                            'metric': 'cifar10_test', 'archs_in_subset': NUM_ARCHS}
  assert saved['seeds'] == list(SEEDS)
  assert saved['evaluated_archs'] == NUM_ARCHS
  assert saved['evaluated_archs_per_second'] == 12.5
  # The numbers are summarize's, through a JSON round trip.
  expected = results.summarize(SEEDS, w['scores'], w['truth'], w['groups'], TOP_NS)
  assert saved['groups']['top25']['kendall_tau'] == pytest.approx(
      expected['groups']['top25']['kendall_tau'])
  assert saved['tau_a']['value'] == expected['tau_a']['value']
  assert saved['groups'].keys() == expected['groups'].keys()


def test_write_leaves_only_the_two_files(tmp_path):
  """Atomic writes through temporary files: none is left behind; rewriting replaces."""
  folder = tmp_path / 'r'
  _write(folder)
  assert sorted(os.listdir(folder)) == [results.METRICS_FILE, results.PREDICTIONS_FILE]
  first = (folder / results.METRICS_FILE).read_bytes()
  _write(folder, seeds=(0, 1))
  assert sorted(os.listdir(folder)) == [results.METRICS_FILE, results.PREDICTIONS_FILE]
  assert (folder / results.METRICS_FILE).read_bytes() != first
  with open(folder / results.PREDICTIONS_FILE) as f:
    assert len(f.readlines()) == 1 + 2 * NUM_ARCHS


def test_failed_metrics_write_keeps_the_previous_file_whole(tmp_path, monkeypatch):
  """A crash while metrics.json is written never leaves a truncated metrics.json."""
  folder = tmp_path / 'r'
  _write(folder)
  before = (folder / results.METRICS_FILE).read_bytes()

  real_fdopen = os.fdopen

  class HalfWrite:
    """A file that takes half of what it is given, then fails."""

    def __init__(self, f):
      self._f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()
      return False

    def write(self, text):
      self._f.write(text[:len(text) // 2])
      raise OSError('disk full')

  monkeypatch.setattr(workdir_lib.os, 'fdopen', lambda fd, mode: HalfWrite(real_fdopen(fd, mode)))
  with pytest.raises(OSError, match='disk full'):
    _write(folder)
  assert (folder / results.METRICS_FILE).read_bytes() == before
  json.loads(before)
  assert not [p for p in os.listdir(folder) if p.startswith('.tmp-')], 'temporary file left'



def test_metrics_json_is_written_last(tmp_path, monkeypatch):
  """A failure while predictions.csv is written leaves no metrics.json (its presence
  means the evaluation completed)."""
  def crash(*args, **kwargs):
    raise OSError('disk full')
  monkeypatch.setattr(results, 'predictions_csv', crash)
  with pytest.raises(OSError, match='disk full'):
    _write(tmp_path / 'r')
  assert not (tmp_path / 'r' / results.METRICS_FILE).exists()


def test_results_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    _write(tmp_path / 'r')
  finally:
    os.umask(old)
  for name in (results.PREDICTIONS_FILE, results.METRICS_FILE):
    assert oct(os.stat(tmp_path / 'r' / name).st_mode & 0o777) == oct(0o644), name


@pytest.mark.parametrize('fields,name', [
    ({}, 'running-groups'),
    ({'bn_mode': 'batch'}, 'batch-groups'),
    ({'scope': 'all'}, 'running-all'),
    ({'bn_mode': 'batch', 'scope': 'all'}, 'batch-all'),
    ({'bn_mode': 'recalibrate'}, 'recalibrate10-groups'),
    ({'bn_mode': 'recalibrate', 'recalibrate_batches': 3, 'scope': 'all'},
     'recalibrate3-all'),
    ({'name': 'mine', 'bn_mode': 'batch'}, 'mine'),
    ({'scope': 'unique'}, 'running-unique'),
    ({'average_checkpoints': 1}, 'running-groups'),
    ({'average_checkpoints': 3, 'scope': 'all'}, 'running-all-avg3'),
    ({'average_checkpoints': 2, 'name': 'mine'}, 'mine'),
])
def test_results_name(fields, name):
  config = config_lib.base_config()
  for key, value in fields.items():
    config.eval[key] = value
  assert results.results_name(config.eval) == name


# ------------------------------------------------------- top-1 arch, identity, score


def test_top1_names_the_arch_and_counts_unscored_better_archs():
  """The top-1 entry carries the NB201 index and arch string of the arch the scores put
  first; its bench rank counts every better arch of the subset, scored or not."""
  scores, truth = _synthetic(num_archs=60)
  groups = _groups(truth, (10, 25), random_size=20)
  indices = np.arange(60) * 7 + 3
  arch_strings = np.asarray([f'arch{i}' for i in range(60)])
  unscored_better = np.full(5, truth.max() + 1.0)  # 5 archs of the subset, not scored
  out = results.summarize(SEEDS, scores, truth, groups, (10, 25), indices=indices,
                          arch_strings=arch_strings,
                          subset_truth=np.concatenate([truth, unscored_better]))
  for i, seed in enumerate(SEEDS):
    first = int(np.argmax(scores[i]))
    entry = out['top1']['per_seed'][str(seed)]
    assert entry['nb201_index'] == indices[first] and entry['arch'] == f'arch{first}'
    assert entry['bench_rank'] == 1 + 5 + np.count_nonzero(truth > truth[first])
    assert entry['regret'] == pytest.approx(truth.max() + 1.0 - truth[first])
  first = int(np.argmax(scores.mean(0)))
  assert out['top1']['of_mean_score']['nb201_index'] == indices[first]
  assert out['top1']['of_mean_score']['score'] == pytest.approx(scores.mean(0)[first])


def test_write_records_top1_arch_step_score_and_evaluation(tmp_path):
  w = _write(tmp_path / 'r', step=480)
  saved = json.loads((tmp_path / 'r' / results.METRICS_FILE).read_text())
  bench, scores = w['bench'], w['scores']
  for i, seed in enumerate(SEEDS):
    entry = saved['top1']['per_seed'][str(seed)]
    first = int(np.argmax(scores[i]))
    assert entry['nb201_index'] == int(bench.indices[first])
    assert entry['arch'] == bench.arch_strings[first]
  assert saved['scored_step'] == 480
  assert saved['score'] == {'column': 'supernet_acc', 'kind': 'supernet', 'name': 'supernet'}
  assert saved['evaluation'] == results.evaluation_identity(w['config'], bench.sha256, TOP_NS)
  assert saved['evaluation']['eval.top_ns'] == list(TOP_NS)
  assert saved['evaluation']['bench.metric'] == 'cifar10_test'


def test_proxy_scores_get_their_own_column_and_record(tmp_path):
  scale = 10.0 ** np.arange(-3, 3)  # proxies span orders of magnitude: kept exactly
  w = _write(tmp_path / 'p', score_column='proxy_score', score_name='synflow')
  with open(tmp_path / 'p' / results.PREDICTIONS_FILE, newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['seed', 'nb201_index', 'arch', 'proxy_score', 'bench_acc']
  assert [float(r[3]) for r in rows[1:NUM_ARCHS + 1]] == list(w['scores'][0])
  saved = json.loads((tmp_path / 'p' / results.METRICS_FILE).read_text())
  assert saved['score'] == {'column': 'proxy_score', 'kind': 'proxy', 'name': 'synflow'}
  assert saved['scored_step'] is None
  assert results.predictions_csv((0,), [1], ['a'], scale[None, 3:4] * 1.234567891,
                                 [90.0], 'proxy_score').splitlines()[1] == (
                                     '0,1,a,1.234567891,90.000000')
  with pytest.raises(ValueError, match='score_name'):
    _write(tmp_path / 'q', score_column='proxy_score')
  with pytest.raises(ValueError, match="'acc'.*supernet_acc, proxy_score"):
    _write(tmp_path / 'q', score_column='acc')


def _config(**fields):
  config = config_lib.base_config()
  config.bench.path = '/somewhere/table.csv'
  for key, value in fields.items():
    config_lib.set_flat(config, key, value)
  return config


def test_evaluation_identity_holds_what_changes_the_numbers():
  running = results.evaluation_identity(_config(), 'ab' * 32, (10, 25))
  assert running == {
      'bench.path': os.path.realpath('/somewhere/table.csv'), 'bench.sha256': 'ab' * 32,
      'bench.metric': 'cifar10_test', 'eval.top_ns': [10, 25], 'eval.random_size': 1000,
      'eval.random_seed': 0, 'eval.scope': 'groups', 'eval.bn_mode': 'running',
      'eval.average_checkpoints': 1, 'space.masked_ops': []}
  # Speed and naming only: the same identity.
  assert results.evaluation_identity(
      _config(**{'eval.groups_per_call': 3, 'eval.name': 'x', 'eval.batch_size': 7,
                 'eval.recalibrate_batches': 2}), 'ab' * 32, (10, 25)) == running
  recal = results.evaluation_identity(
      _config(**{'eval.bn_mode': 'recalibrate', 'eval.recalibrate_batches': 3}), 'x', ())
  assert recal['eval.recalibrate_batches'] == 3 and 'eval.batch_size' not in recal
  batch = results.evaluation_identity(
      _config(**{'eval.bn_mode': 'batch', 'eval.batch_size': 250}), 'x', ())
  assert batch['eval.batch_size'] == 250 and 'eval.recalibrate_batches' not in batch
  masked = results.evaluation_identity(
      _config(**{'space.masked_ops': 'avg_pool_3x3,none'}), 'x', ())
  assert masked['space.masked_ops'] == ['none', 'avg_pool_3x3']
  averaged = results.evaluation_identity(_config(**{'eval.average_checkpoints': 3}), 'x', ())
  assert averaged['eval.average_checkpoints'] == 3


def test_results_written_before_averaging_existed_scored_one_checkpoint(tmp_path):
  """A stored identity without eval.average_checkpoints is K=1: equal to K=1, not to K=2."""
  w = _write(tmp_path / 'r')
  path = tmp_path / 'r' / results.METRICS_FILE
  saved = json.loads(path.read_text())
  del saved['evaluation']['eval.average_checkpoints']
  path.write_text(json.dumps(saved))
  folder, config, sha = str(tmp_path / 'r'), w['config'], w['bench'].sha256
  assert results.identity_differences(folder, config, sha, TOP_NS) == []
  other = config.copy_and_resolve_references()
  other.eval.average_checkpoints = 2
  assert results.identity_differences(folder, other, sha, TOP_NS) == [
      'eval.average_checkpoints: 1 (stored) -> 2 (now)']
  del saved['evaluation']  # older still: the identity from the config, without the key
  del saved['config']['eval.average_checkpoints']
  path.write_text(json.dumps(saved))
  assert results.identity_differences(folder, config, sha, TOP_NS) == []


def test_identity_differences_name_each_changed_setting(tmp_path):
  w = _write(tmp_path / 'r')
  folder, config, sha = str(tmp_path / 'r'), w['config'], w['bench'].sha256
  assert results.identity_differences(folder, config, sha, TOP_NS) == []
  assert results.identity_differences(str(tmp_path / 'none'), config, sha, TOP_NS) == []
  other = config.copy_and_resolve_references()
  other.bench.metric = 'cifar100_test'
  other.eval.random_seed = 4
  assert results.identity_differences(folder, other, sha, TOP_NS) == [
      'bench.metric: cifar10_test (stored) -> cifar100_test (now)',
      'eval.random_seed: 0 (stored) -> 4 (now)']
  assert results.identity_differences(folder, config, sha, (10, 25)) == [
      'eval.top_ns: 10,25,50 (stored) -> 10,25 (now)']
  other = config.copy_and_resolve_references()
  other.eval.bn_mode = 'recalibrate'
  assert results.identity_differences(folder, other, sha, TOP_NS) == [
      'eval.bn_mode: running (stored) -> recalibrate (now)',
      'eval.recalibrate_batches: not used (stored) -> 10 (now)']
  # The same table moved elsewhere is the same evaluation; another table is not.
  other = config.copy_and_resolve_references()
  other.bench.path = '/elsewhere/table.csv'
  assert results.identity_differences(folder, other, sha, TOP_NS) == []
  assert results.identity_differences(folder, other, 'cd' * 32, TOP_NS) == [
      f'bench.path: {os.path.realpath("/somewhere/table.csv")} (stored) -> '
      f'{os.path.realpath("/elsewhere/table.csv")} (now)',
      'bench.sha256: abababababab (stored) -> cdcdcdcdcdcd (now)']


def test_identity_differences_of_a_metrics_json_without_evaluation_record(tmp_path):
  """Results written before the record existed: identity from their config and bench."""
  w = _write(tmp_path / 'r')
  path = tmp_path / 'r' / results.METRICS_FILE
  saved = json.loads(path.read_text())
  del saved['evaluation']
  path.write_text(json.dumps(saved))
  folder, config, sha = str(tmp_path / 'r'), w['config'], w['bench'].sha256
  assert results.identity_differences(folder, config, sha, TOP_NS) == []
  other = config.copy_and_resolve_references()
  other.eval.scope = 'all'
  assert results.identity_differences(folder, other, sha, TOP_NS) == [
      'eval.scope: groups (stored) -> all (now)']
  path.write_text('{"truncated')
  (item,) = results.identity_differences(folder, config, sha, TOP_NS)
  assert item.startswith(f'{path}: unreadable')


# ---------------------------------------------------------------- format_summary


def test_format_summary_of_several_seeds(tmp_path):
  folder = tmp_path / 'run' / 'results' / 'running-groups'
  _write(folder, step=77)
  summary = json.loads((folder / results.METRICS_FILE).read_text())
  text = results.format_summary(summary, str(folder))
  lines = text.splitlines()
  assert max(len(line) for line in lines[:lines.index('files:')]) <= 100  # paths may not
  assert 'checkpoint step 77' in lines[0] and '3 seeds' in lines[0]
  header = lines[1].split()
  assert header[:4] == ['group', 'n', 'Kendall', 'tau']
  top25 = next(line for line in lines if line.startswith('top25 '))
  entry = summary['groups']['top25']
  assert top25.split()[1] == '25'
  assert (f"{entry['kendall_tau']['mean']:+.3f} +- {entry['kendall_tau']['std']:.3f}"
          in top25)
  assert (f"{entry['mean_supernet_acc']['mean']:.2f} +- "
          f"{entry['mean_supernet_acc']['std']:.2f}") in top25
  assert [line.split()[0] for line in lines[2:7]] == ['top10', 'top25', 'top50', 'random',
                                                      'all']
  assert f"tau_a {summary['tau_a']['value']:+.3f}" in text
  best = summary['top1']['of_mean_score']
  assert f"NB201 index {best['nb201_index']}, bench rank {best['bench_rank']} of " in text
  assert f"  {best['arch']}" in lines and f"regret {best['regret']:.2f} points" in text
  for path in (folder / results.PREDICTIONS_FILE, folder / results.METRICS_FILE,
               tmp_path / 'run' / 'tb'):
    assert str(path) in text


def test_averaged_and_unique_results_say_so(tmp_path):
  """scored_steps lists the averaged checkpoints; a bench of classes adds class_id and
  class_size to predictions.csv and counts classes and archs in metrics.json."""
  full = _bench(NUM_ARCHS)
  bench = bench_lib.unique_classes(full)
  config = config_lib.base_config()
  config.seeds = (0,)
  config.eval.top_ns = (10,)
  config.eval.random_size = 20
  config.eval.scope = 'unique'
  config.eval.average_checkpoints = 2
  folder = tmp_path / 'run' / 'results' / 'running-unique-avg2'
  order = np.argsort(-bench.indices)  # rows in any order: classes follow their indices
  truth = bench.metric('cifar10_test')[order]
  groups = _groups(truth, top_ns=(10,), random_size=20)
  scores = np.linspace(50, 60, len(bench))[None]
  summary = results.write(str(folder), config=config, bench=bench, seeds=(0,),
                          indices=bench.indices[order], arch_strings=bench.arch_strings[order],
                          scores=scores, truth=truth, groups=groups,
                          evaluated_archs_per_second=1.0, step=9, averaged_steps=(9, 6))
  assert summary['scored_step'] == 9 and summary['scored_steps'] == [9, 6]
  assert summary['bench']['archs_in_subset'] == len(bench)
  assert summary['bench']['archs_in_classes'] == NUM_ARCHS
  assert summary['evaluation']['eval.scope'] == 'unique'
  assert summary['evaluation']['eval.average_checkpoints'] == 2
  with open(folder / results.PREDICTIONS_FILE, newline='') as f:
    rows = list(csv.reader(f))
  assert tuple(rows[0]) == results.PREDICTION_COLUMNS + ('class_id', 'class_size')
  for row, j in zip(rows[1:], order):
    assert (int(row[1]), int(row[5]), int(row[6])) == (
        bench.indices[j], bench.class_ids[j], bench.class_sizes[j])
  head = results.format_summary(summary, str(folder)).splitlines()[0]
  assert 'mean of checkpoint steps 9, 6' in head
  assert f'{len(bench)} isomorphism classes of {NUM_ARCHS} archs' in head


def test_format_summary_of_one_seed_and_of_a_proxy(tmp_path):
  """One seed: single values without '+-'; a proxy: its name and mean score, NaN read back."""
  scores, truth = _synthetic(seeds=(0,))
  scores[:, :] = 1.5e-7  # a constant proxy: every correlation is NaN (null in JSON)
  bench = _bench(NUM_ARCHS)
  config = config_lib.base_config()
  config.seeds = (0,)
  config.eval.top_ns = TOP_NS
  config.eval.random_size = RANDOM_SIZE
  folder = tmp_path / 'results' / 'proxy-snip'
  results.write(str(folder), config=config, bench=bench, seeds=(0,), indices=bench.indices,
                arch_strings=bench.arch_strings, scores=scores,
                truth=bench.metric('cifar10_test'), groups=_groups(bench.metric('cifar10_test')),
                evaluated_archs_per_second=1.0, score_column='proxy_score', score_name='snip')
  summary = json.loads((folder / results.METRICS_FILE).read_text())
  text = results.format_summary(summary, str(folder))
  assert '+-' not in text
  assert text.startswith('proxy snip ranking against cifar10_test, 1 seed (0)')
  assert 'mean proxy score' in text and 'mean proxy score of the top-N' in text
  top10 = next(line for line in text.splitlines() if line.startswith('top10 '))
  assert top10.split() == ['top10', '10', 'nan', 'nan', '1.5e-07']
  assert 'checkpoint step' not in text
