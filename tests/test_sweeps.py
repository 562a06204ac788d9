"""The sweep files (configs/sweeps/) expand to the paper's grid (docs/method.md), valid configs."""
import glob
import os
import re

import pytest

from launch import grid
from launch import plan
from spos_jax import config as config_lib
from spos_jax.space import OPS

# ml_collections.config_flags loads config files through the deprecated load_module().
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = os.path.join(REPO, 'configs', 'sweeps')
ZERO, SKIP, CONV1, CONV3, POOL = OPS

# Fig. 4's left column: all ops and each op masked alone (1 + 5 = 6 subsets).
LEFT_COLUMN = {(), *((op,) for op in OPS)}

# Runs per sweep, derived from docs/method.md, 'Experiment grid' (each run trains all 5 seeds).
EXPECTED_RUNS = {
    # Fig. 2: all ops vs Zero masked; the paper's caption names small only: 2 x 1.
    'fig2': 2,
    # Fig. 4: all ops (1) + each op masked (5) + Zero+X (4) + Pool+X (3) = 13 subsets x 2 sizes.
    'fig4': 26,
    # Fig. 5: {all, Zero, Zero+Pool masked} x {no LT, LT skip, LT skip+pool} x 2 sizes = 3 x 3 x 2.
    'fig5': 18,
    # Fig. 6: left column (6) x {baseline + 5 variations} x 2 sizes = 6 x 6 x 2.
    'fig6': 72,
    # Fig. 7/9: left column (6) + 1x1+X (4) + Skip+X (4, one of them 1x1+skip again: 3 new)
    # + Zero+Pool+X (3) = 16 subsets x 2 sizes.
    'fig7': 32,
    # Fig. 11-13: left column (6) x {no LT, LT skip} x {small C=32, wide C=96} = 6 x 2 x 2.
    'fig11': 24,
    # Beyond the paper: {all, Zero, Zero+Pool masked} x {one-shot, few-shot e0, proxies}, small.
    'beyond': 9,
    # The shared layers: {all, Zero masked} x (2 sizes x {baseline, unshared, uniform,
    # shared_mean} + medium shared_every) = 2 x 9.
    'shared_layers': 18,
    # The reproduction queue: small {all, Zero, Pool, Skip, Zero+Pool, 3x3-conv masked}
    # + uniform {all, Zero masked} + medium {all, Zero masked} = 6 + 2 + 2.
    'queue': 10,
}


def sweep_files():
  return sorted(glob.glob(os.path.join(SWEEPS, '*.py')))


def load(name):
  return plan.load_sweep(os.path.join(SWEEPS, f'{name}.py'))


def subsets(runs, size='s', variant_keys=()):
  """The masked-op tuples of the runs of one size whose overrides hold only masks."""
  out = set()
  for run in runs:
    extra = set(run.overrides) - {'space.masked_ops'}
    if run.size == size and extra == set(variant_keys):
      masked = run.overrides.get('space.masked_ops', '')
      out.add(grid.masked(*filter(None, masked.split(','))))
  return out


def test_every_sweep_file_is_expected():
  names = {os.path.splitext(os.path.basename(p))[0] for p in sweep_files()}
  assert names == set(EXPECTED_RUNS)


@pytest.mark.parametrize('name', sorted(EXPECTED_RUNS))
def test_run_count_and_unique_readable_names(name):
  sweep = load(name)
  names = [run.name for run in sweep.runs]
  assert len(names) == EXPECTED_RUNS[name]
  assert len(set(names)) == len(names)
  for run in sweep.runs:
    assert re.fullmatch(r'[smw](-[a-z0-9_]+)?-(all|mask_[a-z0-9_+]+)', run.name), run.name
    assert run.name.startswith(run.size + '-')


@pytest.mark.parametrize('name', sorted(EXPECTED_RUNS))
def test_every_run_config_validates(name):
  """Keys exist in base_config(); the config validates; the flags main gets agree."""
  sweep = load(name)
  sizes = plan.size_configs(sweep)
  known = config_lib.flatten(config_lib.base_config())
  for run in sweep.runs:
    assert set(run.overrides) <= set(known), run
    config = plan.load_module(sizes[run.size], 'config').get_config()
    for key, value in run.overrides.items():
      config_lib.set_flat(config, key, value)
    config_lib.validate(config)
    # What main parses from the launcher's --config.KEY=VALUE flags is the same config.
    overrides = {k: plan.flag_value(v) for k, v in run.overrides.items()}
    assert config_lib.flatten(plan.resolve_config(sizes[run.size], overrides)) == \
        config_lib.flatten(config)


def test_size_configs_are_the_papers_sizes():
  sizes = {**plan.size_configs(load('fig4')), **plan.size_configs(load('fig11'))}
  channels = {size: plan.load_module(path, 'config').get_config().model.channels
              for size, path in sizes.items()}
  assert channels == {'s': 32, 'm': 64, 'w': 96}


def test_fig4_subsets():
  runs = load('fig4').runs
  expected = LEFT_COLUMN | {grid.masked(ZERO, x) for x in (SKIP, CONV1, CONV3, POOL)} | {
      grid.masked(POOL, x) for x in (SKIP, CONV1, CONV3)}
  assert len(expected) == 13
  assert subsets(runs, 's') == subsets(runs, 'm') == expected
  assert {'s-all', 's-mask_none', 's-mask_none+avg_pool_3x3', 'm-mask_skip_connect'} <= {
      r.name for r in runs}


def test_fig5_linear_transformers():
  runs = load('fig5').runs
  spaces = {(), (ZERO,), (ZERO, POOL)}
  for size in 'sm':
    assert subsets(runs, size) == spaces
    assert subsets(runs, size, ['model.lt_skip']) == spaces
    assert subsets(runs, size, ['model.lt_skip', 'model.lt_pool']) == spaces
  assert 'm-lt_skip-mask_none' in {r.name for r in runs}


def test_fig6_variations_on_the_left_column():
  runs = load('fig6').runs
  variations = [[], ['sampling.topology'], ['sampling.method'], ['train.warmup_epochs'],
                ['train.clip_norm'], ['train.augment', 'train.label_smoothing']]
  for size in 'sm':
    for keys in variations:
      assert subsets(runs, size, keys) == LEFT_COLUMN, keys
  overrides = {r.name: r.overrides for r in runs}
  assert overrides['s-uniform-mask_none'] == {'space.masked_ops': 'none',
                                              'sampling.method': 'uniform'}
  assert overrides['m-unshared-all'] == {'sampling.topology': 'unshared'}
  assert overrides['s-warmup-all'] == {'train.warmup_epochs': 5.0}
  assert overrides['s-clip-all'] == {'train.clip_norm': 5.0}
  assert overrides['s-autoaug_ls-all'] == {'train.augment': 'autoaugment',
                                           'train.label_smoothing': 0.1}


def test_fig7_more_subsets():
  runs = load('fig7').runs
  expected = LEFT_COLUMN | {grid.masked(CONV1, x) for x in (ZERO, SKIP, CONV3, POOL)} | {
      grid.masked(SKIP, x) for x in (ZERO, CONV1, CONV3, POOL)} | {
          grid.masked(ZERO, POOL, x) for x in (SKIP, CONV1, CONV3)}
  assert len(expected) == 16
  assert subsets(runs, 's') == subsets(runs, 'm') == expected


def test_fig11_small_and_wide_with_and_without_lt():
  sweep = load('fig11')
  assert set(sweep.config.metrics) >= {'spearman', 'pearson'}
  for size in 'sw':
    assert subsets(sweep.runs, size) == LEFT_COLUMN
    assert subsets(sweep.runs, size, ['model.lt_skip']) == LEFT_COLUMN


def test_shared_runs_have_the_same_overrides_in_every_sweep():
  """One --root serves all sweeps: a name means the same training everywhere (a sweep
  may score it differently: keys a resumed run may change, config.RESUMABLE_KEYS)."""
  seen = {}
  for path in sweep_files():
    for run in plan.load_sweep(path).runs:
      trained = {k: v for k, v in run.overrides.items() if not config_lib.is_resumable_key(k)}
      assert seen.setdefault(run.name, (run.size, trained)) == (run.size, trained), (path, run)
  # Fig. 4 (26; Fig. 2's 2 among them) + Fig. 5's LT runs (12) + Fig. 6's variations (60)
  # + Fig. 7's new subsets (6 x 2) + Fig. 11's wide runs (12) and small LT runs outside
  # Fig. 5's subsets (4) + the beyond sweep's few-shot and proxy runs (6; its one-shot
  # runs are Fig. 4's and Fig. 5's) + the shared-layers sweep's mean and every-micro-step
  # runs (6; the others are Fig. 4's and Fig. 6's).
  assert len(seen) == 26 + 12 + 60 + 12 + 12 + 4 + 6 + 6


def test_split_seeds():
  run = grid.run('s', (ZERO,), 'uniform')
  split = grid.split_seeds(run, (0, 3))
  assert [r.name for r in split] == ['s-uniform-mask_none-seed0', 's-uniform-mask_none-seed3']
  assert split[1].overrides == {**run.overrides, 'seeds': (3,)}


def test_names_use_nb201_op_names_in_index_order():
  assert grid.subset_name(grid.masked('avg_pool_3x3', 'none')) == 'mask_none+avg_pool_3x3'
  assert grid.subset_overrides((POOL, ZERO)) == {'space.masked_ops': 'none,avg_pool_3x3'}
  assert grid.run('m', (), 'lt_skip').name == 'm-lt_skip-all'


def test_beyond_runs_one_shot_few_shot_and_proxies_on_the_same_subsets():
  runs = {run.name: run for run in load('beyond').runs}
  assert runs['s-all'].overrides == {}  # Fig. 4's run, shared
  assert runs['s-fewshot_e0-mask_none'].overrides == {'space.masked_ops': 'none',
                                                      'fewshot.split_edge': 0}
  assert runs['s-proxies-mask_none+avg_pool_3x3'].overrides['method'] == 'proxies'


def test_shared_layers_sweep_beside_baseline_uniform_and_unshared():
  runs = {run.name: run for run in load('shared_layers').runs}
  new = {name for name in runs if '-shared_' in name}
  assert new == {f'{size}-shared_mean-{subset}' for size in 'sm' for subset in ('all', 'mask_none')
                 } | {f'm-shared_every-{subset}' for subset in ('all', 'mask_none')}
  assert runs['m-shared_mean-mask_none'].overrides == {'space.masked_ops': 'none',
                                                       'train.shared_layers': 'mean'}
  assert runs['m-shared_every-all'].overrides == {'train.shared_layers': 'every_micro_step'}
  fig6 = {run.name: run for run in load('fig6').runs}
  for name in set(runs) - new:  # the rest are the baseline and Fig. 6's runs, shared
    assert fig6[name] == runs[name]
