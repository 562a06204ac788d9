"""Tests of spos_jax.fewshot: the few-shot step vs its reference, warm start, routing,
and the phase end to end (train, checkpoints and marker, resume, restore, fallback)."""
import functools
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import fewshot
from spos_jax import scoring
from spos_jax import space
from spos_jax import train
from spos_jax import workdir as workdir_lib

from conftest import fast_jit, make_tiny_config, random_variables, snapshot
from test_checkpoint import xor_middle
from test_train import (_assert_close, _assert_fp32_close, _assert_not_fp32_close, _max_change,
                        _summed_terms, _tb_scalars, _trace)


def _config(split_edge, **fields):
  return make_tiny_config(**{'fewshot.split_edge': split_edge, 'fewshot.epochs': 1, **fields})


def _one_shot_states(model, seeds=(0,)):
  """One-shot train states [seeds, ...] with random variables (a different draw per seed)."""
  draws = [random_variables(model, seed=s) for s in seeds]
  stack = lambda *leaves: jnp.stack(leaves)
  return train.TrainState(
      seed=jnp.asarray(seeds, jnp.int32), step=jnp.full(len(seeds), 7, jnp.int32),
      params=jax.tree.map(stack, *[d['params'] for d in draws]),
      batch_stats=jax.tree.map(stack, *[d['batch_stats'] for d in draws]), opt_state=None)


def _take(tree, *index):
  return jax.tree.map(lambda a: a[index], tree)


EQUIVALENCE_CASES = {
    # all five ops, shared topology: J = K = 5, split on the middle edge
    'shared': (2, {}),
    # unshared topology, a masked subset with Linear Transformers: J = K = 3
    'unshared_masked_lt': (5, {'sampling.topology': 'unshared',
                               'space.masked_ops': 'none,nor_conv_1x1',
                               'model.lt_skip': True, 'model.lt_pool': True}),
    # uniform sampling: one single-path micro-batch per step and sub-network, J = 3
    'uniform_masked': (0, {'sampling.method': 'uniform', 'space.masked_ops': 'none,avg_pool_3x3'}),
}


@pytest.mark.parametrize('case', list(EQUIVALENCE_CASES))
def test_fewshot_step_equals_each_sub_network_trained_alone(tiny_data, case):
  """Two few-shot steps (all sub-networks in one graph, lax.map over them) == each
  sub-network trained alone by 2|O| single-path micro-steps summed by MultiSteps:
  params, BN statistics and momentum of every sub-network (fp32, weight decay on)."""
  edge, fields = EQUIVALENCE_CASES[case]
  config = _config(edge, **fields)
  k = config_lib.group_size(config)
  ops = fewshot.split_ops(config)
  subs = len(ops)
  assert subs == (5 if case == 'shared' else 3) and k == (1 if 'uniform' in case else subs)
  plain = train.create_model(config)
  tx = fewshot.create_optimizer(config, tiny_data.num_train)
  sub_states = fewshot.warm_start(_one_shot_states(plain), tx, config)
  start = _take(sub_states, 0)

  # The inputs: sub-network j's split edge holds op j, the other edges permutations.
  paths = fewshot.group_inputs(config, tiny_data, 0, 1, 0)[2]
  assert paths.shape == ((k, 3, 6) if 'unshared' in case else (k, 6))
  assert (paths[..., edge] == ops[1]).all()
  for e in set(range(6)) - {edge} if k > 1 else ():
    assert (jnp.sort(paths[..., e], axis=0) == jnp.asarray(ops).reshape((k,) + (1,) * (
        paths.ndim - 2))).all()

  fast = fast_jit(fewshot.make_train_chunk(config, fewshot.create_model(config), tx, 100, 1))
  got = sub_states
  for _ in range(2):
    got, metrics = fast(got, tiny_data)
    assert metrics['loss'].shape == (1, 1, subs) and bool(metrics['finite'].all())
  got = _take(got, 0)
  assert (got.step == 2).all()

  tx_multi = optax.MultiSteps(tx, k, use_grad_mean=False)
  micro = fast_jit(functools.partial(fewshot.reference_micro_step, config, plain, tx_multi))
  refs = []
  for j in range(subs):
    ref = _take(start, j).replace(opt_state=tx_multi.init(_take(start.params, j)))
    for _ in range(2 * k):
      ref, _ = micro(ref, tiny_data, j, ref.step % k)
    assert int(ref.opt_state.gradient_step) == 2
    refs.append(ref)

  terms = _summed_terms(config, steps=2)
  for j in range(subs):
    mine, ref, other = _take(got, j), refs[j], refs[(j + 1) % subs]
    for name, (a, b, wrong, begin) in {
        'params': (mine.params, ref.params, other.params, _take(start.params, j)),
        'batch_stats': (mine.batch_stats, ref.batch_stats, other.batch_stats,
                        _take(start.batch_stats, j)),
        'momentum': (_trace(mine.opt_state), _trace(ref.opt_state.inner_opt_state),
                     _trace(other.opt_state.inner_opt_state), None),
    }.items():
      _assert_fp32_close(a, b, terms, begin, what=f'sub-network {j} {name}')
      # Another sub-network's training (a routing mix-up) is caught.
      _assert_not_fp32_close(a, wrong, terms, begin, what=f'sub-network {j} {name} (routed)')


def test_sub_networks_in_parallel_equal_one_after_another(tiny_data):
  """vmap over sub-networks (the split edge a select) == lax.map over them, one step."""
  config = _config(0, **{'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1'})
  plain, model = train.create_model(config), fewshot.create_model(config)
  tx = fewshot.create_optimizer(config, tiny_data.num_train)
  sub_states = fewshot.warm_start(_one_shot_states(plain, seeds=(0, 1)), tx, config)
  ends = {}
  for parallel in (False, True):
    chunk = fast_jit(fewshot.make_train_chunk(config, model, tx, 100, 1,
                                              sub_networks_in_parallel=parallel))
    ends[parallel] = chunk(sub_states, tiny_data)[0]
  terms = _summed_terms(config, steps=1)
  _assert_fp32_close(ends[True].params, ends[False].params, terms, sub_states.params, 'params')
  _assert_fp32_close(ends[True].batch_stats, ends[False].batch_stats, terms,
                     sub_states.batch_stats, 'batch_stats')


def test_warm_start_copies_the_one_shot_weights():
  """Every sub-network of every seed starts as its seed's one-shot weights and BN
  statistics, at step 0 with zero momentum."""
  config = _config(3, seeds=(0, 1))
  plain = train.create_model(config)
  states = _one_shot_states(plain, seeds=(0, 1))
  tx = fewshot.create_optimizer(config, 350)
  sub = fewshot.warm_start(states, tx, config)
  assert sub.step.shape == (2, 5) and not sub.step.any()
  np.testing.assert_array_equal(sub.seed, [[0] * 5, [1] * 5])
  for tree, one_shot in ((sub.params, states.params), (sub.batch_stats, states.batch_stats)):
    for leaf, want in zip(jax.tree.leaves(tree), jax.tree.leaves(one_shot)):
      assert leaf.shape == (2, 5) + want.shape[1:]
      for s in range(2):
        for j in range(5):
          np.testing.assert_array_equal(leaf[s, j], want[s])
  assert not any(bool(m.any()) for m in jax.tree.leaves(_trace(sub.opt_state)))
  counts = jax.tree.leaves(optax.tree_utils.tree_get(sub.opt_state, 'count'))
  assert counts and all(c.shape == (2, 5) and not c.any() for c in counts)


def test_every_arch_belongs_to_the_sub_network_of_its_split_op():
  config = _config(4, **{'space.masked_ops': 'none'})
  archs = np.array([[1, 2, 3, 4, 1, 2], [4, 4, 4, 4, 4, 4], [2, 1, 1, 1, 3, 1]])
  np.testing.assert_array_equal(fewshot.sub_network_of(config, archs), [0, 3, 2])
  with pytest.raises(space.ArchError, match='masked'):  # no sub-network holds op none
    fewshot.sub_network_of(config, np.array([[1, 2, 3, 4, 0, 2]]))


@pytest.mark.parametrize('bn_mode,packing', [
    ('running', 'fair_groups'), ('recalibrate', 'fair_groups'), ('running', 'single_path')])
def test_scoring_routes_each_arch_to_its_sub_network(tiny_data, bn_mode, packing):
  """Each arch's few-shot score equals its one-by-one single-path score with the
  weights of the sub-network that holds its split-edge op (each sub-network's
  weights a different draw, so a wrong routing changes scores)."""
  config = _config(1, **{'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                         'eval.bn_mode': bn_mode, 'eval.recalibrate_batches': 2,
                         'eval.packing': packing})
  ops = fewshot.split_ops(config)
  plain = train.create_model(config)
  draws = _one_shot_states(plain, seeds=(0, 1))  # one draw per sub-network
  sub_params, sub_stats = draws.params, draws.batch_stats
  rng = np.random.default_rng(0)
  archs = np.unique(np.asarray(ops)[rng.integers(0, 2, (20, 6))], axis=0)
  owner = fewshot.sub_network_of(config, archs)
  assert set(owner) == {0, 1}
  recal = scoring.recalibration_images(config, tiny_data) if bn_mode == 'recalibrate' else None
  reports = []
  got = fewshot.score_archs(config, plain, sub_params, sub_stats, archs, tiny_data, recal,
                            report=lambda *done_total: reports.append(done_total),
                            report_every_s=0)
  # Progress counts the scoring calls of both sub-networks together, to the end.
  totals = {total for _, total in reports}
  assert len(totals) == 1 and reports[-1][0] == totals.pop() > reports[0][0]
  assert [done for done, _ in reports] == sorted(done for done, _ in reports)
  want = np.zeros(len(archs))
  wrong = np.zeros(len(archs))
  for j in (0, 1):
    rows = owner == j
    for out, source in ((want, j), (wrong, 1 - j)):
      out[rows] = scoring.score_archs_one_by_one(
          config, plain, _take(sub_params, source), _take(sub_stats, source), archs[rows],
          tiny_data, recal)
  np.testing.assert_allclose(got, want, atol=1e-9)
  assert (got != wrong).any()


def test_packing_ignores_the_split_edge():
  """The archs of one sub-network pack into full groups: the whole sub-space of
  |O|^5 archs into |O|^4 groups without fillers."""
  config = _config(3, **{'space.masked_ops': 'none,avg_pool_3x3'})
  ops = np.asarray(fewshot.split_ops(config))
  archs = space.all_archs()
  archs = archs[space.uses_only(archs, ops) & (archs[:, 3] == ops[1])]
  assert len(archs) == 3 ** 5
  paths, owner = space.pack_fair_groups(fewshot.packing_archs(config, archs), ops)
  assert paths.shape == (3 ** 4, 3, 6) and (owner >= 0).all()


# ------------------------------------------------------------------- the few-shot phase


# 100 training images in batches of 8: 12 micro-batches, 4 fair groups of |O| = 3 an
# epoch; one epoch each phase, so 4 one-shot and 4 few-shot steps (J = 3 sub-networks).
PHASE_FIELDS = {'space.masked_ops': 'none,avg_pool_3x3', 'data.synthetic_size': 150,
                'train.checkpoint_every_steps': 2}
PHASE_STEPS = 4
STOP_AT = 3


def _steps_in(workdir, folder):
  path = os.path.join(workdir, folder)
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []


def _steps_trained(call):
  """(call(), the steps it trained): train._check_finite sees every chunk's start step."""
  seen = []
  real = train._check_finite  # pylint: disable=protected-access

  def check_finite(metrics, step_before, *args, **kwargs):
    seen.append(step_before + 1)
    return real(metrics, step_before, *args, **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, '_check_finite', check_finite)
    return call(), seen


def _copy(source, target):
  shutil.copytree(source, target)
  return str(target)


@pytest.fixture(scope='module')
def phase(tmp_path_factory):
  """A finished one-shot run; from it, the few-shot phase uninterrupted, and stopped
  after STOP_AT steps then resumed.

  All few-shot training starts from a restored step-0 checkpoint (as test_train's
  runs do): restored arrays carry a committed sharding, part of XLA's cache key, so
  every call shares one compiled few-shot step.
  """
  config = _config(0, **PHASE_FIELDS)
  data = train.load_device_data(config)
  root = tmp_path_factory.mktemp('fewshot')
  one_shot_dir = str(root / 'one_shot')
  one_shot = train.train(config, one_shot_dir, data)
  started = _copy(one_shot_dir, root / 'started')
  start = fewshot.train_fewshot(config, started, data, one_shot, stop_after_steps=0)
  full_dir = _copy(started, root / 'full')
  full = fewshot.train_fewshot(config, full_dir, data, one_shot)
  split_dir = _copy(started, root / 'split')
  partial = fewshot.train_fewshot(config, split_dir, data, one_shot, stop_after_steps=STOP_AT)
  partial_marker = workdir_lib.is_trained(split_dir, workdir_lib.FEWSHOT_TRAINED_MARKER)
  resumed, resumed_steps = _steps_trained(
      lambda: fewshot.train_fewshot(config, split_dir, data, one_shot))
  return dict(config=config, data=data, one_shot_dir=one_shot_dir, one_shot=one_shot,
              start=start, full_dir=full_dir, full=full, split_dir=split_dir, partial=partial,
              partial_marker=partial_marker, resumed=resumed, resumed_steps=resumed_steps)


def test_phase_warm_starts_trains_and_writes_its_own_checkpoints_and_marker(phase):
  """Step 0 holds each seed's one-shot weights in every sub-network; the phase trains
  4 steps into checkpoints_fewshot/ and FEWSHOT_TRAINED, logs under fewshot/, and
  leaves the one-shot checkpoints and TRAINED as they were."""
  config, wd = phase['config'], phase['full_dir']
  assert fewshot.total_steps(config, phase['data'].num_train) == PHASE_STEPS
  assert phase['start'].step.shape == (1, 3) and train.step_of(phase['start']) == 0
  for got, one_shot in zip(jax.tree.leaves(phase['start'].params),
                           jax.tree.leaves(phase['one_shot'].params)):
    for j in range(3):
      np.testing.assert_array_equal(got[0, j], one_shot[0])
  assert (np.asarray(phase['full'].step) == PHASE_STEPS).all()
  assert _max_change(phase['full'].params, phase['start'].params) > 1e-4
  assert _steps_in(wd, workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER) == [0, 2, 4]
  assert workdir_lib.trained_step(wd, workdir_lib.FEWSHOT_TRAINED_MARKER) == PHASE_STEPS
  assert workdir_lib.trained_step(wd) == PHASE_STEPS  # the one-shot run's, untouched
  assert _steps_in(wd, workdir_lib.CHECKPOINTS_FOLDER) == _steps_in(
      phase['one_shot_dir'], workdir_lib.CHECKPOINTS_FOLDER)
  losses = _tb_scalars(wd, 'fewshot/loss')
  assert sorted(losses) == list(range(1, PHASE_STEPS + 1)) and np.isfinite(
      list(losses.values())).all()


def test_interrupted_and_resumed_phase_equals_uninterrupted(phase):
  assert train.step_of(phase['partial']) == STOP_AT and not phase['partial_marker']
  assert _steps_in(phase['split_dir'], workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER) == [2, 3, 4]
  assert phase['resumed_steps'] == [STOP_AT + 1]  # resumed, not warm-started again
  full, resumed = phase['full'], phase['resumed']
  assert _max_change(full.params, phase['partial'].params) > 1e-5  # the stop was real
  for name in ('params', 'batch_stats', 'opt_state'):
    _assert_close(getattr(resumed, name), getattr(full, name), rtol=0, atol=1e-6, what=name)
  assert workdir_lib.trained_step(phase['split_dir'],
                                  workdir_lib.FEWSHOT_TRAINED_MARKER) == PHASE_STEPS


def test_restore_returns_exactly_the_step_the_marker_names(phase):
  restored = fewshot.restore_fewshot_states(phase['config'], phase['full_dir'], phase['data'])
  assert np.asarray(restored.step).shape == (1, 3) and train.step_of(restored) == PHASE_STEPS
  for name in ('params', 'batch_stats', 'opt_state'):
    _assert_close(getattr(restored, name), getattr(phase['full'], name), rtol=0, atol=0,
                  what=name)


def test_restore_without_a_finished_phase_is_refused(phase):
  wd = phase['one_shot_dir']  # one-shot finished, no few-shot phase
  with pytest.raises(fewshot.FewShotError, match=workdir_lib.FEWSHOT_TRAINED_MARKER):
    fewshot.restore_fewshot_states(phase['config'], wd, phase['data'])


def test_warm_start_needs_the_finished_one_shot_states(phase, tmp_path):
  wd = _copy(phase['one_shot_dir'], tmp_path / 'run')
  earlier = phase['one_shot'].replace(step=phase['one_shot'].step - 1)
  with pytest.raises(fewshot.FewShotError, match='step 3 and TRAINED .* names 4'):
    fewshot.train_fewshot(phase['config'], wd, phase['data'], earlier)
  assert _steps_in(wd, workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER) == []


def test_garbled_final_checkpoint_falls_back_withdraws_the_marker_and_retrains(
    phase, tmp_path, caplog):
  """Step 4's arrays XORed: restore refuses it by name; the rerun sets it aside into
  checkpoints_fewshot_unreadable/, withdraws FEWSHOT_TRAINED (not TRAINED), resumes
  from step 2 and ends with the uninterrupted phase's weights and the marker back."""
  config, data = phase['config'], phase['data']
  wd = _copy(phase['full_dir'], tmp_path / 'run')
  folder = os.path.join(wd, workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER, str(PHASE_STEPS),
                        'default', 'ocdbt.process_0', 'd')
  for name in os.listdir(folder):
    xor_middle(os.path.join(folder, name), 16, 0xA5)
  one_shot_before = snapshot(os.path.join(wd, workdir_lib.CHECKPOINTS_FOLDER))
  with pytest.raises(checkpoint.CheckpointError, match=r'final few-shot checkpoint.*FEWSHOT_'):
    fewshot.restore_fewshot_states(config, wd, data)
  with caplog.at_level(logging.WARNING):
    states, steps = _steps_trained(lambda: fewshot.train_fewshot(config, wd, data,
                                                                 phase['one_shot']))
  assert steps == [3, 4]  # from step 2
  assert 'checkpoints_fewshot/4 is unreadable' in caplog.text
  assert f'removed {os.path.join(wd, workdir_lib.FEWSHOT_TRAINED_MARKER)}' in caplog.text
  [moved] = os.listdir(os.path.join(wd, 'checkpoints_fewshot_unreadable'))
  assert moved.startswith(f'{PHASE_STEPS}-')
  assert workdir_lib.trained_step(wd, workdir_lib.FEWSHOT_TRAINED_MARKER) == PHASE_STEPS
  assert workdir_lib.trained_step(wd) == PHASE_STEPS
  assert snapshot(os.path.join(wd, workdir_lib.CHECKPOINTS_FOLDER)) == one_shot_before
  _assert_close(states.params, phase['full'].params, rtol=0, atol=1e-6, what='params')


def test_non_finite_sub_network_is_a_divergence_naming_seed_and_split_op(tmp_path):
  """metrics [steps, seeds, J]: a NaN in one sub-network stops the run, naming it."""
  config = _config(2, **{'space.masked_ops': 'none,avg_pool_3x3', 'seeds': (3, 7)})
  finite = np.ones((2, 2, 3), bool)
  finite[1, 1, 2] = False
  metrics = dict(valid=np.ones_like(finite), finite=finite)
  with pytest.raises(train.DivergenceError) as info:
    train._check_finite(metrics, 10, config, str(tmp_path),  # pylint: disable=protected-access
                        fewshot.sub_network_names(config))
  message = str(info.value)
  assert 'step 12, seed 7, sub-network 2 (nor_conv_3x3 on edge 2)' in message
  assert (tmp_path / workdir_lib.FAILED_MARKER).read_text().strip() == message


# ------------------------------------------------------------------------- config


@pytest.mark.parametrize('field,value', [
    ('fewshot.split_edge', 6), ('fewshot.split_edge', -2), ('fewshot.split_edge', True),
    ('fewshot.epochs', 0)])
def test_config_rejects_bad_fewshot_fields(field, value):
  with pytest.raises(config_lib.ConfigError, match=field.replace('.', r'\.')):
    config_lib.validate(make_tiny_config(**{field: value}))


def test_fewshot_is_off_by_default_and_split_edge_says_so():
  config = make_tiny_config()
  config_lib.validate(config)
  assert not config_lib.fewshot_enabled(config)
  with pytest.raises(config_lib.ConfigError, match='turns few-shot off'):
    fewshot.split_edge(config)
  assert config_lib.fewshot_enabled(_config(5)) and fewshot.split_edge(_config(5)) == 5


def test_run_records_without_fewshot_keys_resume_only_as_one_shot_runs():
  """A config.json written before the fewshot section existed matches today's
  defaults (few-shot off), and differs from a few-shot config."""
  old = {k: v for k, v in config_lib.flatten(make_tiny_config()).items()
         if not k.startswith('fewshot.')}
  assert config_lib.differing_keys(old, config_lib.flatten(make_tiny_config())) == []
  assert config_lib.differing_keys(old, config_lib.flatten(_config(1))) == [
      'fewshot.epochs', 'fewshot.split_edge']


def test_fewshot_checkpoints_make_a_workdir_a_run(tmp_path):
  """check_same_run counts checkpoints_fewshot/ as work (no config.json: refused)."""
  (tmp_path / workdir_lib.FEWSHOT_CHECKPOINTS_FOLDER / '4').mkdir(parents=True)
  with pytest.raises(workdir_lib.WorkdirError, match='refusing to mix runs'):
    workdir_lib.check_same_run(str(tmp_path), make_tiny_config())
