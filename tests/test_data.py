"""Tests of spos_jax.data: sources, npz checks, the fixed split, batch indices."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spos_jax import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(n_train=100, n_test=20, seed=0):
  rng = np.random.default_rng(seed)
  return {
      'x_train': rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
      'y_train': rng.integers(0, 10, n_train).astype(np.uint8),
      'x_test': rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
      'y_test': rng.integers(0, 10, n_test).astype(np.uint8),
  }


def _write_npz(tmp_path, **overrides):
  arrays = {**_arrays(), **overrides}
  arrays = {k: v for k, v in arrays.items() if v is not None}
  path = str(tmp_path / 'cifar.npz')
  np.savez(path, **arrays)
  return path


def _check_types(arrays):
  assert set(arrays) == {'x_train', 'y_train', 'x_test', 'y_test'}
  for split in ('train', 'test'):
    x, y = arrays[f'x_{split}'], arrays[f'y_{split}']
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
    assert y.dtype == np.int32 and y.shape == (x.shape[0],)
    assert y.min() >= 0 and y.max() <= 9


# --- sources -----------------------------------------------------------------


def test_unknown_source_lists_valid_ones():
  with pytest.raises(data.DataError, match='tfds, npz, synthetic'):
    data.load_arrays('imagenet')


def test_npz_round_trip(tmp_path):
  expected = _arrays()
  path = _write_npz(tmp_path)
  arrays = data.load_arrays('npz', path=path)
  _check_types(arrays)
  for k, v in expected.items():
    np.testing.assert_array_equal(arrays[k], v)


def test_npz_missing_key_names_missing_and_found(tmp_path):
  path = _write_npz(tmp_path, y_test=None)
  with pytest.raises(data.DataError, match=r"lacks keys \['y_test'\]") as e:
    data.load_arrays('npz', path=path)
  assert "found keys ['x_test', 'x_train', 'y_train']" in str(e.value)


@pytest.mark.parametrize('overrides, fragments', [
    (dict(x_train=np.zeros((100, 32, 32, 3), np.float32)),
     ['x_train', '(100, 32, 32, 3)', 'float32', 'expected uint8']),
    (dict(x_test=np.zeros((20, 3, 32, 32), np.uint8)),
     ['x_test', '(20, 3, 32, 32)', 'expected uint8 [n, 32, 32, 3]']),
    (dict(y_train=np.zeros((99,), np.int64)),
     ['y_train', '(99,)', 'shape (100,)', 'matching x_train']),
    (dict(y_test=np.zeros((20,), np.float32)),
     ['y_test', 'float32', 'integer']),
    (dict(y_train=np.full((100,), 10, np.int64)),
     ['y_train', 'outside 0..9', 'max 10']),
    (dict(y_test=np.full((20,), -1, np.int32)),
     ['y_test', 'outside 0..9', 'min -1']),
])
def test_npz_bad_arrays(tmp_path, overrides, fragments):
  path = _write_npz(tmp_path, **overrides)
  with pytest.raises(data.DataError) as e:
    data.load_arrays('npz', path=path)
  for fragment in fragments:
    assert fragment in str(e.value)


def test_npz_missing_file(tmp_path):
  with pytest.raises(data.DataError, match='not found'):
    data.load_arrays('npz', path=str(tmp_path / 'nope.npz'))
  with pytest.raises(data.DataError, match='needs data.path'):
    data.load_arrays('npz')


@pytest.mark.parametrize('content', [b'not a zip file at all', b'PK\x03\x04trunc'])
def test_npz_unreadable_file(tmp_path, content):
  path = tmp_path / 'bad.npz'
  path.write_bytes(content)
  with pytest.raises(data.DataError, match='cannot read npz file'):
    data.load_arrays('npz', path=str(path))


def test_npz_single_array_file(tmp_path):
  path = str(tmp_path / 'x.npy')
  np.save(path, np.zeros(3))
  with pytest.raises(data.DataError, match='not an .npz archive'):
    data.load_arrays('npz', path=path)


def test_synthetic_deterministic_and_sized():
  a = data.load_arrays('synthetic', synthetic_size=60, seed=3)
  b = data.load_arrays('synthetic', synthetic_size=60, seed=3)
  c = data.load_arrays('synthetic', synthetic_size=60, seed=4)
  _check_types(a)
  assert a['x_train'].shape[0] == 60 and a['x_test'].shape[0] == 12
  assert data.load_arrays('synthetic', synthetic_size=20)['x_test'].shape[0] == 10
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a['x_train'], c['x_train'])
  with pytest.raises(data.DataError, match='synthetic_size'):
    data.load_arrays('synthetic', synthetic_size=0)


def test_synthetic_labels_readable_from_channel_means():
  """Nearest class colour of the channel means recovers every label."""
  arrays = data.load_arrays('synthetic', synthetic_size=200, seed=1)
  x, y = arrays['x_train'].astype(np.float64), arrays['y_train']
  means = x.mean(axis=(1, 2)) - 63.5  # remove the mean of the [0, 128) noise
  colours = np.stack([means[y == c].mean(0) for c in range(10)])
  dist = ((means[:, None, :] - colours[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(dist.argmin(1), y)


# --- tfds ----------------------------------------------------------------------


def test_tfds_mock_end_to_end(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  pytest.importorskip('array_record')
  with tfds.testing.mock_data(num_examples=12):
    arrays = data.load_arrays('tfds', tfds_data_dir=str(tmp_path))
  _check_types(arrays)
  assert arrays['x_train'].shape[0] == 12 and arrays['x_test'].shape[0] == 12


def _write_prepared_cifar10(tfds, data_dir, sizes):
  """A prepared cifar10 ArrayRecord copy written by hand (tfds needs TF to prepare)."""
  # pylint: disable=g-import-not-at-top
  import io
  from PIL import Image
  from array_record.python import array_record_module
  from tensorflow_datasets.core import example_serializer
  from tensorflow_datasets.core import splits as splits_lib

  builder = tfds.builder('cifar10', data_dir=data_dir, file_format='array_record')
  info = builder.info
  serializer = example_serializer.ExampleSerializer(
      info.features.get_serialized_info())
  builder.data_path.mkdir(parents=True, exist_ok=True)
  truth, split_infos = {}, []
  for split, n in sizes.items():
    arrays = _arrays(n_train=n, seed=n)
    x, y = arrays['x_train'], arrays['y_train']
    truth[f'x_{split}'], truth[f'y_{split}'] = x, y
    template = tfds.core.naming.ShardedFileTemplate(
        data_dir=builder.data_path, dataset_name='cifar10', split=split,
        filetype_suffix='array_record')
    writer = array_record_module.ArrayRecordWriter(
        str(template.sharded_filepath(shard_index=0, num_shards=1)), 'group_size:1')
    num_bytes = 0
    for i in range(n):
      png = io.BytesIO()
      Image.fromarray(x[i]).save(png, format='PNG')
      record = serializer.serialize_example(
          {'id': f'{split}_{i}'.encode(), 'image': png.getvalue(), 'label': int(y[i])})
      num_bytes += len(record)
      writer.write(record)
    writer.close()
    split_infos.append(splits_lib.SplitInfo(
        name=split, shard_lengths=[n], num_bytes=num_bytes, filename_template=template))
  info.set_splits(splits_lib.SplitDict(split_infos))
  info.write_to_directory(builder.data_path)
  return truth


def test_tfds_reads_prepared_copy_without_tensorflow(tmp_path):
  """The real (unmocked) read path: ArrayRecord files, proto parsing, PNG decoding."""
  tfds = pytest.importorskip('tensorflow_datasets')
  pytest.importorskip('array_record')
  truth = _write_prepared_cifar10(tfds, str(tmp_path), {'train': 30, 'test': 12})
  arrays = data.load_arrays('tfds', tfds_data_dir=str(tmp_path))
  _check_types(arrays)
  for k, v in truth.items():
    np.testing.assert_array_equal(arrays[k], v)


def test_tfds_errors_become_data_error(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')

  def fail(*args, **kwargs):
    raise ConnectionError('no network')

  monkeypatch.setattr(tfds, 'data_source', fail)
  with pytest.raises(data.DataError, match='data.source=npz') as e:
    data.load_arrays('tfds')
  assert 'no network' in str(e.value)


def test_import_does_not_load_tfds():
  code = ('import sys, spos_jax.data; '
          'bad = [m for m in ("tensorflow_datasets", "tensorflow") '
          'if m in sys.modules]; assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


# --- train/val split -----------------------------------------------------------


def test_train_val_split_partition():
  train, val = data.train_val_split(100, 20, split_seed=0)
  assert train.dtype == np.int32 and val.dtype == np.int32
  assert len(train) == 80 and len(val) == 20
  assert not set(train) & set(val)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))


def test_train_val_split_reproducible_and_seeded():
  a = data.train_val_split(1000, 100, split_seed=7)
  b = data.train_val_split(1000, 100, split_seed=7)
  c = data.train_val_split(1000, 100, split_seed=8)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert set(a[1]) != set(c[1])


@pytest.mark.parametrize('val_size', [0, -1, 100, 101])
def test_train_val_split_bad_size(val_size):
  with pytest.raises(data.DataError, match=r'val_size must be in 1\.\.99'):
    data.train_val_split(100, val_size, split_seed=0)


def test_to_device():
  arrays = _arrays(n_train=50)
  d = data.to_device(arrays, val_size=10, split_seed=1)
  train, val = data.train_val_split(50, 10, split_seed=1)
  assert d.num_train == 40 and d.num_val == 10
  assert isinstance(d.train_images, jax.Array)
  assert d.train_images.dtype == jnp.uint8 and d.train_labels.dtype == jnp.int32
  np.testing.assert_array_equal(d.val_images, arrays['x_train'][val])
  np.testing.assert_array_equal(d.train_labels, arrays['y_train'][train])
  # A pytree that jitted functions take; num_train stays a static int inside.
  assert len(jax.tree_util.tree_leaves(d)) == 4
  total = jax.jit(lambda d: d.train_labels.sum() + d.num_train)(d)
  assert int(total) == int(arrays['y_train'][train].sum()) + 40


# --- batch indices -------------------------------------------------------------


def test_steps_per_epoch():
  assert data.steps_per_epoch(103, 10) == 10
  assert data.steps_per_epoch(10, 10) == 1
  with pytest.raises(data.DataError, match='batch_size'):
    data.steps_per_epoch(10, 11)
  with pytest.raises(data.DataError, match='batch_size'):
    data.steps_per_epoch(10, 0)


def test_micro_batch_indices_epochs():
  num_train, batch, key = 103, 10, jax.random.PRNGKey(0)
  spe = data.steps_per_epoch(num_train, batch)
  batch_at = jax.jit(data.micro_batch_indices, static_argnums=(2, 3))
  epochs = [np.stack([np.asarray(batch_at(key, e * spe + s, num_train, batch))
                      for s in range(spe)]) for e in range(2)]
  for idx in epochs:
    assert idx.dtype == np.int32 and idx.shape == (spe, batch)
    assert len(set(idx.ravel())) == spe * batch  # disjoint, no repeats
    assert idx.min() >= 0 and idx.max() < num_train
  assert not np.array_equal(epochs[0], epochs[1])
  # Unjitted with a Python int gives the same batch as the traced step.
  np.testing.assert_array_equal(
      data.micro_batch_indices(key, spe + 3, num_train, batch), epochs[1][3])
  expected = jax.random.permutation(jax.random.fold_in(key, 1), num_train)
  np.testing.assert_array_equal(epochs[1].ravel(), expected[:spe * batch])


def test_micro_batch_indices_in_scan_with_typed_key():
  """Traced steps from a lax.scan counter, new-style key, whole data set gathered."""
  num_train, batch = 40, 8
  key = jax.random.key(1)

  def body(carry, step):
    return carry, data.micro_batch_indices(key, step, num_train, batch)

  _, idx = jax.jit(lambda: jax.lax.scan(body, 0, jnp.arange(5)))()
  np.testing.assert_array_equal(np.sort(np.asarray(idx).ravel()), np.arange(40))
