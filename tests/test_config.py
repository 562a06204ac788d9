"""Tests of spos_jax.config: validation errors, locked configs, the command line."""
import importlib.util
import math
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
import ml_collections
import pytest

from spos_jax import config as config_lib
from spos_jax import space

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config_file(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _with(fields, base=None):
  """A ConfigDict built from a dict, so any value (of any type) can be set."""
  d = (base or config_lib.base_config()).to_dict()
  for key, value in fields.items():
    *parents, leaf = key.split('.')
    node = d
    for p in parents:
      node = node[p]
    node[leaf] = value
  return ml_collections.ConfigDict(d)


def _error(fields):
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(_with(fields))
  return str(info.value)


@pytest.mark.parametrize('name', ['tiny', 'small', 'medium', 'wide', 'small_cifar100'])
def test_shipped_configs_validate(name):
  """The base config and every configs/*.py validate (the positive control)."""
  config_lib.validate(config_lib.base_config())
  config = _load_config_file(name)
  assert config_lib.validate(config) is None
  assert config.bench.path == 'builtin'


def test_small_cifar100_ranks_by_cifar100_test():
  config = _load_config_file('small_cifar100')
  assert config.data.dataset == 'cifar100'
  assert config_lib.bench_metric(config) == 'cifar100_test'


@pytest.mark.parametrize('dataset, metric', [
    ('cifar10', 'cifar10_test'), ('cifar100', 'cifar100_test'), ('imagenet16', 'imagenet16_test')])
def test_bench_metric_defaults_to_the_datasets_column(dataset, metric):
  config = _with({'data.dataset': dataset, 'data.path': 'x.npz'})
  config_lib.validate(config)
  assert config_lib.bench_metric(config) == metric
  assert config_lib.resolved(config).bench.metric == metric
  explicit = _with({'data.dataset': dataset, 'data.path': 'x.npz',
                    'bench.metric': f'{dataset}_valid_12ep'})
  assert config_lib.bench_metric(explicit) == f'{dataset}_valid_12ep'


def test_dataset_metric_mismatch_is_refused_naming_both_and_the_choices():
  message = _error({'data.dataset': 'cifar100', 'bench.metric': 'cifar10_test'})
  assert "bench.metric='cifar10_test'" in message and "data.dataset='cifar100'" in message
  assert 'cifar100_test, cifar100_valid_12ep' in message and '\n' not in message


def test_own_metric_columns_pass_with_any_dataset():
  config_lib.validate(_with({'data.dataset': 'cifar100', 'bench.path': 'mine.csv',
                             'bench.metric': 'acc'}))


def test_unknown_metric_of_the_builtin_table_is_refused_with_the_columns():
  message = _error({'bench.metric': 'cifar10_valid'})
  assert "bench.metric='cifar10_valid'" in message and 'builtin' in message
  assert 'cifar10_test, cifar100_test, imagenet16_test' in message
  # A user's table may hold that column (bench convert writes it).
  config_lib.validate(_with({'bench.path': 'mine.csv', 'bench.metric': 'cifar10_valid'}))


def test_unknown_dataset_lists_the_choices():
  message = _error({'data.dataset': 'imagenet'})
  assert "data.dataset='imagenet'" in message
  assert "'cifar10', 'cifar100', 'imagenet16'" in message


def test_data_path_means_the_npz_route():
  """`--config.data.path=X.npz` with configs/small.py reads X.npz instead of being ignored."""
  config = _load_config_file('small')
  config.data.path = '/data/cifar10.npz'
  config_lib.validate(config)
  assert config_lib.data_source(config) == 'npz'
  assert config_lib.data_source(config_lib.base_config()) == 'download'
  message = _error({'data.source': 'tfds', 'data.path': '/data/cifar10.npz'})
  assert "data.path='/data/cifar10.npz'" in message and "'tfds'" in message


def test_imagenet16_needs_a_local_npz():
  message = _error({'data.dataset': 'imagenet16'})
  assert 'loads only from a local .npz' in message and 'data.path' in message
  config_lib.validate(_with({'data.dataset': 'imagenet16', 'data.path': 'in16.npz'}))


def test_bench_path_defaults_to_the_builtin_table():
  assert config_lib.base_config().bench.path == 'builtin'
  assert 'bench.path' in _error({'bench.path': None})


def _old_record(**fields):
  """config.json of a run recorded before data.dataset, source='auto' and 'builtin'."""
  record = config_lib.flatten(config_lib.base_config())
  del record['data.dataset'], record['data.cache_dir']
  record.update({'data.source': 'tfds', 'bench.path': '', 'bench.metric': 'cifar10_test'})
  record.update(fields)
  return record


def test_an_old_tfds_record_resumes_under_the_new_defaults_with_its_source():
  """The new default ('auto') takes the recorded 'tfds', so the run reads the data it
  trained on; without adopting it, the change of source is reported, never ignored."""
  old = _old_record()
  current = config_lib.base_config()
  assert config_lib.differing_keys(old, config_lib.flatten(current)) == ['data.source']
  adopted = config_lib.adopt_recorded(current, old)
  assert adopted.data.source == 'tfds' and current.data.source == 'auto'
  assert config_lib.differing_keys(old, config_lib.flatten(adopted)) == []
  assert config_lib.differing_keys(old, config_lib.flatten(config_lib.resolved(adopted))) == []
  explicit = _with({'data.source': 'download'})
  assert config_lib.adopt_recorded(explicit, old).data.source == 'download'


def test_an_old_npz_record_resumes_with_auto_and_the_same_path():
  old = _old_record(**{'data.source': 'npz', 'data.path': '/d/c.npz'})
  current = _with({'data.path': '/d/c.npz'})
  assert config_lib.differing_keys(old, config_lib.flatten(current)) == []
  assert config_lib.adopt_recorded(current, old).data.source == 'npz'
  # Without a path the record's npz cannot be adopted: the change is reported.
  assert config_lib.adopt_recorded(config_lib.base_config(), old).data.source == 'auto'
  assert 'data.source' in config_lib.differing_keys(old, config_lib.flatten(
      config_lib.base_config()))


def test_a_different_dataset_is_a_different_run():
  record = config_lib.flatten(config_lib.base_config())
  cifar100 = _with({'data.dataset': 'cifar100'})
  assert config_lib.differing_keys(record, config_lib.flatten(cifar100)) == ['data.dataset']


@pytest.mark.parametrize('key,value', [
    ('model.channels', 0), ('model.channels', -4), ('model.cells_per_stage', 0),
    ('model.cells_per_stage', -1), ('model.channels', 2.0), ('model.channels', True)])
def test_channels_and_cells_must_be_positive_integers(key, value):
  """C < 1, N < 1 or non-integers are a ConfigError naming the field."""
  assert key in _error({key: value})


def test_channels_and_cells_of_one_validate():
  """C = N = 1 is the smallest valid network."""
  config_lib.validate(_with({'model.channels': 1, 'model.cells_per_stage': 1}))


@pytest.mark.parametrize('masked', ['conv5x5', 'none,sep_conv', 'pool+dil_conv'])
def test_unknown_masked_op_lists_valid_ops(masked):
  """An unknown op in space.masked_ops names the field and every valid op."""
  message = _error({'space.masked_ops': masked})
  assert 'space.masked_ops' in message
  for op in space.OPS:
    assert op in message


@pytest.mark.parametrize('masked', [','.join(space.OPS), 'zero,skip,1x1,pool',
                                    'none,skip_connect,nor_conv_3x3,avg_pool_3x3'])
def test_masking_all_but_one_op_is_refused(masked):
  """Every op masked, or all but one, leaves no choice: ConfigError."""
  message = _error({'space.masked_ops': masked})
  assert 'space.masked_ops' in message and 'at least two' in message


@pytest.mark.parametrize('masked,size', [('', 5), ('none', 4), ('none,avg_pool_3x3', 3),
                                         ('zero,pool,skip', 2)])
def test_group_size_is_number_of_allowed_ops(masked, size):
  """A fair group has |O| micro-batches; uniform sampling steps every micro-batch."""
  assert config_lib.group_size(_with({'space.masked_ops': masked})) == size
  uniform = _with({'space.masked_ops': masked, 'sampling.method': 'uniform'})
  assert config_lib.group_size(uniform) == 1


@pytest.mark.parametrize('key,value', [
    ('sampling.method', 'greedy'), ('sampling.method', 'Fair'), ('sampling.topology', 'cells'),
    ('model.node_reduction', 'max'), ('train.precision', 'fp16'), ('train.augment', 'mixup'),
    ('data.source', 'imagenet'), ('eval.bn_mode', 'frozen'), ('eval.scope', 'top'),
    ('sampling.method', None)])
def test_bad_choices(key, value):
  """A value outside a field's choices is a ConfigError naming the field and the choices."""
  message = _error({key: value})
  assert key in message and repr(value) in message


@pytest.mark.parametrize('fields,key', [
    ({'train.lr': 0.0}, 'train.lr'), ({'train.lr': -0.1}, 'train.lr'),
    ({'train.lr_min': 0.5}, 'train.lr_min'), ({'train.momentum': 1.5}, 'train.momentum'),
    ({'train.weight_decay': -1e-4}, 'train.weight_decay'),
    ({'train.warmup_epochs': 300}, 'train.warmup_epochs'),
    ({'train.label_smoothing': 1.5}, 'train.label_smoothing'),
    ({'train.batch_size': 0}, 'train.batch_size'), ({'train.epochs': 0}, 'train.epochs'),
    ({'train.lr': float('nan')}, 'train.lr'), ({'train.lr': '0.1'}, 'train.lr'),
    ({'seeds': ()}, 'seeds'), ({'seeds': (0, 0)}, 'seeds'), ({'seeds': (-1,)}, 'seeds'),
    ({'eval.top_ns': (10, 5)}, 'eval.top_ns'), ({'eval.top_ns': ()}, 'eval.top_ns'),
    ({'data.source': 'npz', 'data.path': ''}, 'data.path'),
    ({'data.val_size': 0}, 'data.val_size')])
def test_out_of_range_values(fields, key):
  """Out-of-range numbers, empty or repeated seeds, unsorted top-N: ConfigError naming them."""
  assert key in _error(fields)


# Tuple- and str-valued fields that validate() iterates.
_ITERATED = ('seeds', 'eval.top_ns', 'space.masked_ops')
_FIELDS = sorted(config_lib.flatten(config_lib.base_config()))
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(), st.floats(),
    st.text(max_size=12), st.sampled_from(['fair', 'uniform', 'shared', 'unshared', 'sum', 'mean',
                                           'fp32', 'bf16', 'synthetic', 'npz', 'running', 'none',
                                           'auto', 'tfds', 'download', 'cifar100', 'imagenet16',
                                           'builtin', 'cifar10_test', 'cifar100_test',
                                           'pool', 'groups', 'all']),
    st.lists(st.integers(-2, 600), max_size=4).map(tuple))


def _validates_or_config_error(fields):
  try:
    config_lib.validate(_with(fields))
  except config_lib.ConfigError as e:
    assert '\n' not in str(e), str(e)  # one line


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([f for f in _FIELDS if f not in _ITERATED]), _VALUES,
                       max_size=3))
def test_random_values_validate_or_raise_config_error(fields):
  """Random values in random (non-iterated) fields: validate passes or raises ConfigError."""
  _validates_or_config_error(fields)


_NUMBER_TUPLES = st.lists(st.integers(-1, 600), max_size=4).map(tuple)
_OP_NAMES = st.one_of(st.text(max_size=20),
                      st.lists(st.sampled_from(space.OPS + ('pool', 'zero', 'x', '')), max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    'seeds': st.one_of(_NUMBER_TUPLES, st.text(max_size=4)),
    'eval.top_ns': st.one_of(_NUMBER_TUPLES, st.text(max_size=4)),
    'space.masked_ops': _OP_NAMES}))
def test_random_iterables_validate_or_raise_config_error(fields):
  """Tuples or strings in seeds/top_ns, op-name text or lists in masked_ops: pass or ConfigError."""
  _validates_or_config_error(fields)


def test_any_field_any_value_validates_or_raises_config_error():
  """The full property: any value in any field either validates or is a ConfigError."""
  escaped = []  # collected rather than raised: a failing @given would write a patch file

  @settings(max_examples=300, deadline=None, derandomize=True, database=None)
  @given(st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=3))
  def check(fields):
    try:
      config_lib.validate(_with(fields))
    except config_lib.ConfigError as e:
      if '\n' in str(e):
        escaped.append((fields, f'two lines: {e}'))
    except Exception as e:  # pylint: disable=broad-except
      escaped.append((fields, f'{type(e).__name__}: {e}'))

  check()
  assert not escaped, escaped[:5]


@pytest.mark.parametrize('key,value', [
    ('seeds', None), ('seeds', 3), ('eval.top_ns', 5), ('space.masked_ops', None),
    ('space.masked_ops', 5), ('space.masked_ops', ['none', 3])])
def test_non_iterable_values_raise_config_error(key, value):
  """Wrong types in iterated fields are a ConfigError naming the field."""
  assert key in _error({key: value})


def test_locked_tiny_config_rejects_typo():
  """configs/tiny.py locked (as --config locks it): a misspelt key raises, naming it."""
  config = _load_config_file('tiny')
  config.lock()
  config.train.epochs = 3  # existing keys still change
  assert config.train.epochs == 3
  with pytest.raises(AttributeError, match='epoch'):
    config.train.epoch = 3
  assert 'epoch' not in config.train


def test_fractional_warmup_can_be_set():
  """train.warmup_epochs takes a float, as its validation and the schedule allow."""
  config = config_lib.base_config()
  config.train.warmup_epochs = 2.5
  config_lib.validate(config)


def test_differing_keys_ignore_resumable_keys():
  """Results-changing keys are reported; logging/checkpoint/eval keys may differ."""
  a = config_lib.base_config()
  b = _with({'train.lr': 0.1, 'train.log_every_steps': 7, 'eval.batch_size': 10,
             'train.checkpoint_every_steps': 3, 'space.masked_ops': 'none'})
  assert config_lib.differing_keys(config_lib.flatten(a), config_lib.flatten(b)) == [
      'space.masked_ops', 'train.lr']
  flat = config_lib.flatten(a)
  assert flat['train.lr'] == 0.025 and flat['seeds'] == [0, 1, 2, 3, 4]
  assert not math.isnan(flat['train.lr_min'])


def test_a_key_missing_from_an_older_record_holds_its_default():
  """A run recorded before model.scan_cells existed resumes under the default only."""
  old_record = config_lib.flatten(config_lib.base_config())
  del old_record['model.scan_cells']
  assert config_lib.differing_keys(old_record, config_lib.flatten(config_lib.base_config())) == []
  scanned = _with({'model.scan_cells': True})
  assert config_lib.differing_keys(old_record, config_lib.flatten(scanned)) == [
      'model.scan_cells']


def test_cli_rejects_unknown_override(tmp_path):
  """`main --config.train.epochz=3` exits non-zero naming the key; nothing is written."""
  workdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
             JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'spos_jax.main', '--config=configs/tiny.py',
       f'--workdir={workdir}', '--config.train.epochz=3'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert 'epochz' in result.stderr + result.stdout
  assert not workdir.exists()


@pytest.mark.parametrize('fields,match', [
    ({'eval.average_checkpoints': 0}, 'eval.average_checkpoints must be >= 1'),
    ({'eval.average_checkpoints': 4}, 'train.keep_checkpoints=3; keep at least 4'),
    ({'eval.average_checkpoints': 2, 'method': 'proxies'}, 'method=proxies'),
])
def test_average_checkpoints_refused_naming_the_fix(fields, match):
  assert match in _error(fields)


def test_unique_scope_and_averaging_within_the_kept_checkpoints_validate():
  config_lib.validate(_with({'eval.scope': 'unique', 'eval.average_checkpoints': 3}))


@pytest.mark.parametrize('name', ['../../elsewhere', '/tmp/elsewhere', 'a/b', '..', '.',
                                  '.hidden', 'a\x00b', ' padded'])
def test_eval_name_that_is_not_a_plain_folder_name_is_refused(name):
  """eval.name is joined to WORKDIR/results/: a path would write outside the run."""
  config = config_lib.base_config()
  config.eval.name = name
  with pytest.raises(config_lib.ConfigError, match='eval.name=.* must be a plain folder name'):
    config_lib.validate(config)


@pytest.mark.parametrize('name', ['', 'again', 'bn-batch_2', 'recalibrate10-all', 'v1.2'])
def test_plain_eval_names_validate(name):
  config = config_lib.base_config()
  config.eval.name = name
  config_lib.validate(config)
