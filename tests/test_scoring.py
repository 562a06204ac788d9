"""Tests of spos_jax.scoring (fair-group packing, the batched scorer against the
single-path reference in every BN mode, stand-alone networks), of the main job end to
end (spos_jax.run) and of the `python -m spos_jax.evaluate` re-scoring program.

Everything is sized for a 2-core CPU: one tiny run (C=4, N=1, fp32, two seeds, 40
optimizer steps on synthetic data) trained once by `run.train_and_evaluate` serves
all tests; other spaces take its weights by name. Accuracies are counts over the same
48 validation images, so the batched and the single-path evaluator must agree exactly.
"""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from flax.traverse_util import flatten_dict, unflatten_dict
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spos_jax import augment
from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import metrics
from spos_jax import results
from spos_jax import run as run_lib
from spos_jax import scoring
from spos_jax import space
from spos_jax import train
from spos_jax import workdir as workdir_lib

from conftest import NB201_TABLE as TABLE, make_tiny_config, train_and_evaluate_capturing

REPO = Path(__file__).resolve().parents[1]
VAL = 48

# The run of the end-to-end test; its trained weights serve every scoring test.
RUN_FIELDS = {
    'seeds': (0, 1),
    'data.synthetic_size': 200 + VAL,  # 200 train images: 25 micro-batches an epoch
    'data.val_size': VAL,
    'train.epochs': 8,  # 5 fair groups an epoch: 40 optimizer steps
    'train.lr': 0.1,  # a few steps already tell the archs apart
    'train.log_every_steps': 10,
    'train.checkpoint_every_steps': 1000,
    'eval.batch_size': VAL,
    'eval.groups_per_call': 4,
    'eval.recalibrate_batches': 2,
    'eval.top_ns': (10, 25),
    'eval.random_size': 20,
}


def run_config(**fields):
  config = make_tiny_config(**RUN_FIELDS)
  config.bench.path = str(TABLE)
  for key, value in fields.items():
    config_lib.set_flat(config, key, value)
  config_lib.validate(config)
  return config


def _first_seed(states):
  return scoring.seed_variables(states, 0)


def _variable_shapes(model):
  path = None if model.fixed_arch is not None else jnp.zeros(6, jnp.int32)
  return jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32), path, train=True))


def _by_name(params, batch_stats, model):
  """The super-net's variables that `model` (masked or stand-alone) names, by name."""
  shapes = _variable_shapes(model)
  out = []
  for tree, collection in ((params, 'params'), (batch_stats, 'batch_stats')):
    flat = flatten_dict(tree)
    wanted = flatten_dict(shapes[collection])
    assert set(wanted) <= set(flat), set(wanted) - set(flat)
    for key, shape in wanted.items():  # a leading seed axis may come first
      assert flat[key].shape[flat[key].ndim - len(shape.shape):] == shape.shape, key
    out.append(unflatten_dict({k: flat[k] for k in wanted}))
  return out


def _counts(accuracy, atol=1e-6):
  """Accuracies (%) over VAL images -> integer counts (fails if not a count).

  predictions.csv rounds to 4 decimals: pass atol=1e-4 for values read from it.
  """
  counts = np.asarray(accuracy) * VAL / 100
  np.testing.assert_allclose(counts, np.round(counts), atol=atol)
  return np.round(counts).astype(int)


def _arch_sample(allowed, num_random, seed):
  """One complete coset (the constant archs: with 'none' allowed, one is dead) and
  `num_random` other distinct archs of the allowed subset, shuffled together."""
  rng = np.random.default_rng(seed)
  subset = space.all_archs()[space.uses_only(space.all_archs(), allowed)]
  coset = space.coset_members(np.full(6, allowed[0]), allowed)
  others = subset[~np.isin(space.arch_code(subset), space.arch_code(coset))]
  picked = others[rng.choice(len(others), num_random, replace=False)]
  archs = np.concatenate([coset, picked])
  return archs[rng.permutation(len(archs))].astype(np.int32)


# -------------------------------------------------------------- pack_fair_groups


def _check_packing(archs, allowed, paths, owner):
  """The invariants of space.pack_fair_groups' result."""
  k = len(allowed)
  assert paths.shape == (len(owner), k, 6) and owner.shape == (len(owner), k)
  owned = owner[owner >= 0]
  assert sorted(owned.tolist()) == list(range(len(archs)))  # each arch exactly once
  for g in range(len(paths)):
    for e in range(6):
      assert sorted(paths[g, :, e].tolist()) == list(allowed), (g, e)
    # Owners first, fillers after them.
    n_owned = int((owner[g] >= 0).sum())
    assert (owner[g, :n_owned] >= 0).all() and (owner[g, n_owned:] < 0).all()
  np.testing.assert_array_equal(paths[owner >= 0], archs[owned])
  # Complete cosets stay whole: their members make up one group on their own.
  codes = space.arch_code(archs)
  bases = space.arch_code(space.coset_base(archs, allowed))
  group_of = np.empty(len(archs), int)
  group_of[owned] = np.nonzero(owner >= 0)[0]
  for base in np.unique(bases):
    members = np.nonzero(bases == base)[0]
    if len(members) == k:
      (g,) = np.unique(group_of[members])
      assert sorted(owner[g].tolist()) == sorted(members.tolist())
  assert len(np.unique(codes)) == len(codes)


def test_pack_full_space_gives_the_3125_cosets():
  archs = space.all_archs()[np.random.default_rng(0).permutation(space.NUM_ARCHS)]
  paths, owner = space.pack_fair_groups(archs, range(5))
  assert paths.shape == (3125, 5, 6)
  assert (owner >= 0).all()  # no filler paths at all
  _check_packing(archs, tuple(range(5)), paths, owner)
  # Every group is a coset {a + t (1,..,1) mod 5}.
  bases = space.coset_base(paths, range(5))
  assert (bases == bases[:, :1]).all()


def test_pack_mixes_complete_cosets_and_greedy_groups():
  allowed = (1, 2, 3)
  coset = space.coset_members(np.array([1, 2, 3, 1, 2, 3]), allowed)
  loose = np.array([[1, 1, 1, 1, 1, 2], [2, 2, 2, 2, 2, 2], [3, 3, 1, 2, 2, 1],
                    [1, 3, 2, 1, 3, 2]], np.int32)
  archs = np.concatenate([loose[:2], coset, loose[2:]])
  paths, owner = space.pack_fair_groups(archs, allowed)
  _check_packing(archs, allowed, paths, owner)
  assert (owner < 0).any()  # the loose archs need fillers
  assert len(paths) >= 1 + int(np.ceil(len(loose) / 3))


def test_pack_rejects_archs_with_masked_ops():
  with pytest.raises(space.ArchError, match='outside the allowed'):
    space.pack_fair_groups(np.array([[0, 1, 2, 3, 4, 0]]), (1, 2, 3, 4))


@st.composite
def _subsets(draw):
  allowed = tuple(sorted(draw(st.sets(st.integers(0, 4), min_size=2, max_size=5))))
  subset = space.all_archs()[space.uses_only(space.all_archs(), allowed)]
  k = len(allowed)
  # Mix whole cosets (kept whole) with single archs (packed greedily).
  bases = np.unique(space.coset_base(subset, allowed), axis=0)
  n_cosets = draw(st.integers(0, min(8, len(bases))))
  chosen_bases = draw(st.lists(st.integers(0, len(bases) - 1), min_size=n_cosets,
                               max_size=n_cosets, unique=True))
  rows = list(space.coset_members(bases[chosen_bases], allowed).reshape(-1, 6)) \
      if chosen_bases else []
  singles = draw(st.lists(st.integers(0, len(subset) - 1), max_size=60, unique=True))
  codes = {int(space.arch_code(r)) for r in rows}
  rows += [subset[i] for i in singles if int(space.arch_code(subset[i])) not in codes]
  archs = np.asarray(rows, np.int32).reshape(-1, 6)
  order = draw(st.permutations(range(len(archs))))
  return allowed, archs[list(order)], k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_subsets())
def test_pack_property(case):
  allowed, archs, k = case
  paths, owner = space.pack_fair_groups(archs, allowed)
  _check_packing(archs, allowed, paths, owner)
  assert len(paths) >= np.ceil(len(archs) / k)


def test_pack_with_duplicate_rows_keeps_groups_fair():
  allowed = tuple(range(5))
  coset = space.coset_members(np.array([0, 1, 2, 3, 4, 0]), allowed)
  archs = np.concatenate([coset[:4], coset[:1]])  # 4 of 5 members, one twice
  try:
    paths, owner = space.pack_fair_groups(archs, allowed)
  except ValueError:
    return  # rejecting duplicates is a fine answer too
  for g in range(len(paths)):
    for e in range(6):
      assert sorted(paths[g, :, e].tolist()) == list(allowed)
  assert sorted(owner[owner >= 0].tolist()) == list(range(len(archs)))


# -------------------------------------------------------------- failing early


def _forbid_training(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('training work started')
  monkeypatch.setattr(train, 'load_device_data', fail)
  monkeypatch.setattr(train, 'init_states', fail)


def test_unknown_bench_metric_fails_before_training(tmp_path, monkeypatch, nb201_table):
  del nb201_table  # for its skip where the table is absent; TABLE is its path
  _forbid_training(monkeypatch)
  wd = tmp_path / 'run'
  with pytest.raises(bench_lib.BenchError, match=r"no metric column 'nope'.*cifar10_test"):
    run_lib.train_and_evaluate(run_config(**{'bench.metric': 'nope'}), str(wd))
  assert not (wd / 'checkpoints').exists()
  assert not wd.exists() or not os.listdir(wd)


def test_missing_bench_file_fails_before_training(tmp_path, monkeypatch):
  _forbid_training(monkeypatch)
  wd = tmp_path / 'run'
  missing = tmp_path / 'no_table.csv'
  with pytest.raises(bench_lib.BenchError, match='no such bench file'):
    run_lib.train_and_evaluate(run_config(**{'bench.path': str(missing)}), str(wd))
  assert not (wd / 'checkpoints').exists()
  assert not wd.exists() or not os.listdir(wd)


# -------------------------------------------------------------- the trained run


@pytest.fixture(scope='module')
def run(tmp_path_factory, nb201_table):
  """train_and_evaluate ranked against TABLE; the states and data it ranked with."""
  del nb201_table  # for its skip where the table is absent; TABLE is its path
  config = run_config()
  wd = str(tmp_path_factory.mktemp('run'))
  states, data = train_and_evaluate_capturing(config, wd)
  return dict(config=config, workdir=wd, model=train.create_model(config), states=states,
              data=data)


def _with_eval(config, **fields):
  config = config.copy_and_resolve_references()
  for key, value in fields.items():
    config_lib.set_flat(config, key, value)
  return config


@pytest.mark.parametrize('packing', config_lib.EVAL_PACKINGS)
@pytest.mark.parametrize('bn_mode', ['running', 'batch', 'recalibrate'])
def test_batched_scores_equal_single_path(run, bn_mode, packing):
  """score_archs (fair groups vmapped, or single paths without a sync between them) ==
  score_archs_one_by_one, image for image; the scores of other archs would not be."""
  config = _with_eval(run['config'], **{'eval.bn_mode': bn_mode, 'eval.packing': packing})
  data, model = run['data'], run['model']
  params, stats = _first_seed(run['states'])
  archs = _arch_sample(tuple(range(5)), 25, seed=1)
  assert space.is_dead(archs).any()
  recal = scoring.recalibration_images(config, data) if bn_mode == 'recalibrate' else None
  if recal is not None:
    assert recal.shape == (2, config.train.batch_size, 32, 32, 3)
  fast = scoring.score_archs(config, model, params, stats, archs, data, recal)
  slow = scoring.score_archs_one_by_one(config, model, params, stats, archs, data, recal)
  np.testing.assert_array_equal(_counts(fast), _counts(slow))
  assert len(np.unique(fast)) >= 5  # the archs are told apart: the weights are trained
  assert not np.array_equal(_counts(np.roll(fast, 1)), _counts(slow))  # scores one arch off


def test_bn_modes_give_different_scores(run):
  """The three BN modes are not the same computation (each test above could fail)."""
  data, model = run['data'], run['model']
  params, stats = _first_seed(run['states'])
  archs = _arch_sample(tuple(range(5)), 7, seed=2)
  out = {}
  for mode in ('running', 'batch', 'recalibrate'):
    config = _with_eval(run['config'], **{'eval.bn_mode': mode})
    recal = scoring.recalibration_images(config, data) if mode == 'recalibrate' else None
    out[mode] = scoring.score_archs(config, model, params, stats, archs, data, recal)
  assert not np.array_equal(out['running'], out['batch'])
  assert not np.array_equal(out['batch'], out['recalibrate'])


@pytest.mark.parametrize('packing', config_lib.EVAL_PACKINGS)
def test_duplicate_archs_score_like_the_single_path(run, packing):
  """Duplicate rows (which pack into a non-fair group) still get the right scores."""
  config = _with_eval(run['config'], **{'eval.packing': packing})
  data, model = run['data'], run['model']
  params, stats = _first_seed(run['states'])
  coset = space.coset_members(np.array([3, 1, 2, 4, 0, 3]), range(5))
  archs = np.concatenate([coset[:4], coset[2:3], coset[:1]])
  fast = scoring.score_archs(config, model, params, stats, archs, data)
  slow = scoring.score_archs_one_by_one(config, model, params, stats, archs, data)
  np.testing.assert_array_equal(_counts(fast), _counts(slow))


@pytest.mark.parametrize('masked,k', [('none', 4), ('none,avg_pool_3x3', 3)])
def test_batched_scores_equal_single_path_on_masked_subsets(run, masked, k):
  config = _with_eval(run['config'], **{'space.masked_ops': masked})
  allowed = config_lib.allowed_ops(config)
  assert len(allowed) == k
  model = train.create_model(config)
  params, stats = _by_name(*_first_seed(run['states']), model)
  archs = _arch_sample(allowed, 26, seed=3)
  paths, _ = space.pack_fair_groups(archs, allowed)
  assert paths.shape[1] == k
  fast = scoring.score_archs(config, model, params, stats, archs, run['data'])
  slow = scoring.score_archs_one_by_one(config, model, params, stats, archs, run['data'])
  np.testing.assert_array_equal(_counts(fast), _counts(slow))
  assert len(np.unique(fast)) >= 4


def test_unshared_training_is_scored_with_one_path_for_all_cells(run):
  """A state trained with unshared topology ([K, cells, 6] paths) is scored from [6]
  archs: the batched scores equal the single-path ones and a forward with the arch
  repeated in every cell."""
  # Three ops: the masked test above has compiled this model's scorers already.
  config = _with_eval(run['config'], **{'space.masked_ops': 'none,avg_pool_3x3',
                                         'sampling.topology': 'unshared', 'seeds': (0,)})
  model = train.create_model(config)
  assert model == train.create_model(_with_eval(config, **{'sampling.topology': 'shared'}))
  data = run['data']
  params, stats = _by_name(*_first_seed(run['states']), model)
  tx = train.create_optimizer(config, data.num_train)
  add_seed_axis = lambda tree: jax.tree.map(lambda a: jnp.asarray(a)[None], tree)
  states = train.TrainState(
      seed=jnp.zeros(1, jnp.int32), step=jnp.zeros(1, jnp.int32),
      params=add_seed_axis(params), batch_stats=add_seed_axis(stats),
      opt_state=add_seed_axis(tx.init(params)))
  paths = train.group_inputs(config, data, 0, 0)[2]
  assert paths.shape == (3, 3, 6)  # K members x 3 cells x 6 edges: unshared
  steps = 6
  chunk = train.make_train_chunk(config, model, tx, steps, 1)
  for _ in range(steps):
    states, _ = chunk(states, data)
  params_u, stats_u = _first_seed(states)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), params, params_u)
  assert max(jax.tree.leaves(moved)) > 1e-3

  archs = _arch_sample(config_lib.allowed_ops(config), 9, seed=4)
  fast = scoring.score_archs(config, model, params_u, stats_u, archs, data)
  slow = scoring.score_archs_one_by_one(config, model, params_u, stats_u, archs, data)
  np.testing.assert_array_equal(_counts(fast), _counts(slow))

  forward = jax.jit(lambda p, s, x, path: model.apply(
      {'params': p, 'batch_stats': s}, x, path, train=False))
  x = augment.eval_images(data.val_images)
  for arch, acc in zip(archs[:4], fast[:4]):
    logits = forward(params_u, stats_u, x, jnp.asarray(np.tile(arch, (model.num_cells, 1))))
    assert int((logits.argmax(-1) == data.val_labels).sum()) == _counts(acc)


@pytest.mark.parametrize('arch', [(3, 1, 4, 2, 0, 3), (2, 3, 3, 1, 4, 1)])
def test_stand_alone_network_with_super_net_weights_scores_the_same(run, arch):
  """create_model(fixed_arch=arch) with the super-net's weights taken by name (only that
  arch's ops) gives the same running-BN accuracy as score_archs."""
  config, data, model = run['config'], run['data'], run['model']
  params, stats = _first_seed(run['states'])
  alone = train.create_model(config, fixed_arch=arch)
  alone_params, alone_stats = _by_name(params, stats, alone)
  n_alone = len(flatten_dict(alone_params))
  assert n_alone < len(flatten_dict(params))  # only this arch's ops
  logits = jax.jit(lambda p, s, x: alone.apply({'params': p, 'batch_stats': s}, x,
                                               train=False))(
      alone_params, alone_stats, augment.eval_images(data.val_images))
  correct = int((logits.argmax(-1) == data.val_labels).sum())
  (score,) = scoring.score_archs(config, model, params, stats, np.array([arch]), data)
  assert correct == _counts(score)


# -------------------------------------------------------------- the results files


def _read_table():
  with open(TABLE, newline='') as f:
    return {int(r['index']): r for r in csv.DictReader(f)}


def _read_predictions(folder):
  with open(os.path.join(folder, results.PREDICTIONS_FILE), newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    return header, [dict(zip(header, r)) for r in reader]


def _expected_groups(config):
  """NB201 indices of each group, computed from the table without the library."""
  table = _read_table()
  rows = sorted(table.values(), key=lambda r: (-float(r['cifar10_test']), int(r['index'])))
  groups = {f'top{n}': {int(r['index']) for r in rows[:n]} for n in config.eval.top_ns}
  return table, groups


def test_main_job_writes_predictions(run):
  config, wd = run['config'], run['workdir']
  assert workdir_lib.is_trained(wd)
  folder = os.path.join(wd, 'results', 'running-groups')
  assert sorted(os.listdir(folder)) == ['metrics.json', 'predictions.csv']
  header, rows = _read_predictions(folder)
  assert header == ['seed', 'nb201_index', 'arch', 'supernet_acc', 'bench_acc']
  table, groups = _expected_groups(config)
  bench = bench_lib.load_bench(TABLE)
  random_rows = bench_lib.random_sample(bench, 20, 0)
  groups['random'] = set(bench.indices[random_rows].tolist())
  union = set().union(*groups.values())
  by_seed = {}
  for r in rows:
    by_seed.setdefault(int(r['seed']), []).append(r)
  assert sorted(by_seed) == [0, 1]
  assert len(rows) == 2 * len(union)
  for seed, seed_rows in by_seed.items():
    indices = [int(r['nb201_index']) for r in seed_rows]
    assert len(indices) == len(set(indices)) and set(indices) == union
    for r in seed_rows:
      truth = table[int(r['nb201_index'])]
      assert r['arch'] == truth['arch']
      assert float(r['bench_acc']) == pytest.approx(float(truth['cifar10_test']), abs=6e-7)
      _counts(float(r['supernet_acc']), atol=1e-4)  # a count over the 48 validation images

  # Seed 0's predictions are score_archs of seed 0's trained weights.
  seed0 = by_seed[0]
  archs = np.stack([space.string_to_arch(r['arch']) for r in seed0])
  params, stats = _first_seed(run['states'])
  want = scoring.score_archs(config, run['model'], params, stats, archs, run['data'])
  np.testing.assert_allclose([float(r['supernet_acc']) for r in seed0], want, atol=6e-5)
  assert [r['supernet_acc'] for r in seed0] != [r['supernet_acc'] for r in by_seed[1]]


def test_main_job_writes_metrics(run):
  config, wd = run['config'], run['workdir']
  folder = os.path.join(wd, 'results', 'running-groups')
  with open(os.path.join(folder, 'metrics.json')) as f:
    saved = json.load(f)
  _, rows = _read_predictions(folder)
  n_all = len(rows) // 2
  assert set(saved['groups']) == {'top10', 'top25', 'random', 'all'}
  for name, entry in saved['groups'].items():
    for field in ('n', 'kendall_tau', 'kendall_tau_b', 'spearman', 'pearson',
                  'mean_supernet_acc', 'mean_bench_acc'):
      assert set(entry[field]) == {'mean', 'std'}, (name, field)
      assert entry[field]['std'] is not None
      assert set(entry['per_seed']) == {'0', '1'}
      assert field in entry['per_seed']['0'] and field in entry['per_seed']['1']
  assert saved['groups']['top10']['n']['mean'] == 10
  assert saved['groups']['top25']['n']['mean'] == 25
  assert saved['groups']['random']['n']['mean'] == 20
  assert saved['groups']['all']['n']['mean'] == n_all
  assert saved['tau_a']['group_sizes'] == [10, 25]
  assert set(saved['tau_a']['per_seed']) == {'0', '1'}
  assert set(saved['precision_at_k']) == {str(k) for k in results.PRECISION_KS if k <= n_all}
  assert set(saved['top1']['per_seed']) == {'0', '1'}
  assert saved['bench']['sha256'] == hashlib.sha256(TABLE.read_bytes()).hexdigest()
  assert saved['bench']['metric'] == 'cifar10_test'
  assert saved['bench']['archs_in_subset'] == space.NUM_ARCHS
  assert saved['config'] == config_lib.flatten(config_lib.resolved(config))  # 'auto' resolved
  assert saved['seeds'] == [0, 1]


def test_metrics_json_kendall_tau_recomputes_from_predictions(run):
  config, wd = run['config'], run['workdir']
  folder = os.path.join(wd, 'results', 'running-groups')
  with open(os.path.join(folder, 'metrics.json')) as f:
    saved = json.load(f)
  _, rows = _read_predictions(folder)
  _, groups = _expected_groups(config)
  taus = []
  for seed in ('0', '1'):
    seed_rows = [r for r in rows if r['seed'] == seed]
    pred = np.array([float(r['supernet_acc']) for r in seed_rows])
    truth = np.array([float(r['bench_acc']) for r in seed_rows])
    index = np.array([int(r['nb201_index']) for r in seed_rows])
    for name, members in dict(groups, all=set(index.tolist())).items():
      sel = np.isin(index, list(members))
      tau = metrics.kendall_tau(pred[sel], truth[sel])
      assert saved['groups'][name]['per_seed'][seed]['kendall_tau'] == pytest.approx(
          tau, abs=1e-12), (seed, name)
      if name == 'all':
        taus.append(tau)
    a_n = [np.mean(pred[np.isin(index, list(groups[f'top{n}']))]) for n in (10, 25)]
    assert saved['tau_a']['per_seed'][seed] == pytest.approx(metrics.tau_a((10, 25), a_n))
  assert saved['groups']['all']['kendall_tau']['mean'] == pytest.approx(np.mean(taus))
  assert saved['groups']['all']['kendall_tau']['std'] == pytest.approx(np.std(taus, ddof=1))


# -------------------------------------------------------------- the CLI


def _evaluate_cli(*args):
  """python -m spos_jax.evaluate ARGS, sharing this test run's compilation cache."""
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  cache = jax.config.jax_compilation_cache_dir
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='1',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return subprocess.run([sys.executable, '-m', 'spos_jax.evaluate', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


def _files(folder):
  return {name: (Path(folder) / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_cli_rescores_into_its_own_folder(run):
  config, wd = run['config'], run['workdir']
  running = os.path.join(wd, 'results', 'running-groups')
  before = _files(running)
  out = _evaluate_cli(f'--workdir={wd}', '--config.eval.bn_mode=batch')
  assert out.returncode == 0, out.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(wd, 'results'))) == ['batch-groups', 'running-groups']
  assert _files(running) == before
  batch = os.path.join(wd, 'results', 'batch-groups')
  with open(os.path.join(batch, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['config']['eval.bn_mode'] == 'batch'
  assert saved['config']['train.lr'] == config.train.lr
  # The same archs as the running-BN results, scored with batch statistics.
  _, rows_batch = _read_predictions(batch)
  _, rows_running = _read_predictions(running)
  assert [(r['seed'], r['nb201_index']) for r in rows_batch] == [
      (r['seed'], r['nb201_index']) for r in rows_running]
  seed0 = [r for r in rows_batch if r['seed'] == '0']
  archs = np.stack([space.string_to_arch(r['arch']) for r in seed0])
  params, stats = _first_seed(run['states'])
  want = scoring.score_archs(_with_eval(config, **{'eval.bn_mode': 'batch'}), run['model'],
                              params, stats, archs, run['data'])
  np.testing.assert_allclose([float(r['supernet_acc']) for r in seed0], want, atol=6e-5)

  # Again without --overwrite: refused, nothing changes.
  batch_before = _files(batch)
  again = _evaluate_cli(f'--workdir={wd}', '--config.eval.bn_mode=batch')
  assert again.returncode != 0
  assert 'holds results already' in again.stderr and '--overwrite' in again.stderr
  assert _files(batch) == batch_before and _files(running) == before


def test_cli_refuses_to_change_training_keys(run):
  wd = run['workdir']
  before = _files(os.path.join(wd, 'results', 'running-groups'))
  out = _evaluate_cli(f'--workdir={wd}', '--config.train.lr=0.1')
  assert out.returncode != 0
  assert 'train.lr' in out.stderr and 'only eval.* and bench.* may change' in out.stderr
  assert 'Traceback' not in out.stderr
  assert _files(os.path.join(wd, 'results', 'running-groups')) == before


def test_cli_needs_a_finished_run(run, tmp_path):
  wd = tmp_path / 'unfinished'
  wd.mkdir()
  shutil.copy(os.path.join(run['workdir'], 'config.json'), wd / 'config.json')
  out = _evaluate_cli(f'--workdir={wd}')
  assert out.returncode != 0
  assert 'no finished training run' in out.stderr and 'TRAINED' in out.stderr
  assert 'Traceback' not in out.stderr
  assert not (wd / 'results').exists()


# -------------------------------------------------------------- scope='all'


def test_scope_all_scores_the_whole_allowed_subset(run, tmp_path):
  """masked none, avg_pool, conv1x1: 2 ops, 2^6 = 64 archs, all of them scored."""
  config = _with_eval(run['config'], **{'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                                         'eval.scope': 'all'})
  allowed = config_lib.allowed_ops(config)
  assert allowed == (space.SKIP, space.CONV3)
  model = train.create_model(config)
  states = run['states']
  params, stats = _by_name(states.params, states.batch_stats, model)
  masked_states = states.replace(params=params, batch_stats=stats)
  summary = run_lib.evaluate_run(config, str(tmp_path), masked_states, run['data'])
  folder = tmp_path / 'results' / 'running-all'
  assert sorted(os.listdir(folder)) == ['metrics.json', 'predictions.csv']
  _, rows = _read_predictions(folder)
  table = _read_table()
  subset = {i for i, r in table.items()
            if space.uses_only(space.string_to_arch(r['arch']), allowed)}
  assert len(subset) == 64
  for seed in ('0', '1'):
    assert sorted(int(r['nb201_index']) for r in rows if r['seed'] == seed) == sorted(subset)
  assert summary['groups']['all']['n']['mean'] == 64
  assert summary['evaluated_archs'] == 64
  assert summary['groups']['random']['n']['mean'] == 20
  assert summary['bench']['archs_in_subset'] == 64
  assert summary['tau_a']['group_sizes'] == [10, 25]
  assert set(summary['precision_at_k']) == {'10', '50'}
  # The top-N groups are the subset's best archs by the bench.
  best = sorted(subset, key=lambda i: (-float(table[i]['cifar10_test']), i))[:10]
  with open(folder / 'metrics.json') as f:
    saved = json.load(f)
  seed0 = {int(r['nb201_index']): float(r['supernet_acc']) for r in rows if r['seed'] == '0'}
  assert saved['groups']['top10']['per_seed']['0']['mean_supernet_acc'] == pytest.approx(
      np.mean([seed0[i] for i in best]), abs=1e-3)
