"""Tests of spos_jax.data: sources, npz checks, CIFAR archives, the split, batch indices."""
import hashlib
import http.server
import io
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import threading

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
  with pytest.raises(data.DataError, match='auto, download, tfds, npz, synthetic'):
    data.load_arrays('imagenet')


def test_unknown_dataset_lists_valid_ones():
  with pytest.raises(data.DataError, match="'cifar1000'; choices: cifar10, cifar100, imagenet16"):
    data.load_arrays('synthetic', synthetic_size=10, dataset='cifar1000')


@pytest.mark.parametrize('dataset, classes, shape', [
    ('cifar10', 10, (32, 32, 3)), ('cifar100', 100, (32, 32, 3)),
    ('imagenet16', 120, (16, 16, 3))])
def test_dataset_classes_shapes_and_synthetic_arrays(dataset, classes, shape):
  assert data.num_classes(dataset) == classes and data.image_shape(dataset) == shape
  mean, std = data.channel_stats(dataset)
  assert len(mean) == len(std) == 3
  arrays = data.load_arrays('synthetic', synthetic_size=2 * classes, dataset=dataset)
  assert arrays['x_train'].shape == (2 * classes,) + shape
  assert sorted(set(arrays['y_train'].tolist())) == list(range(classes))


def test_cifar10_synthetic_images_unchanged_by_the_dataset_argument():
  a = data.synthetic_arrays(40, seed=2)
  b = data.synthetic_arrays(40, seed=2, dataset='cifar10')
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_cifar100_npz_labels_checked_against_100_classes(tmp_path):
  labels = np.arange(100) % 100
  path = _write_npz(tmp_path, y_train=labels, x_train=np.zeros((100, 32, 32, 3), np.uint8))
  with pytest.raises(data.DataError, match='outside 0..9 of cifar10'):
    data.load_arrays('npz', path=path)
  arrays = data.load_arrays('npz', path=path, dataset='cifar100')
  assert arrays['y_train'].max() == 99
  bad = _write_npz(tmp_path, y_train=labels + 1, x_train=np.zeros((100, 32, 32, 3), np.uint8))
  with pytest.raises(data.DataError, match='outside 0..99 of cifar100'):
    data.load_arrays('npz', path=bad, dataset='cifar100')


def test_imagenet16_npz_holds_16x16_images(tmp_path):
  rng = np.random.default_rng(0)
  path = _write_npz(tmp_path, x_train=rng.integers(0, 256, (30, 16, 16, 3), np.uint8),
                    y_train=np.arange(30) * 4, x_test=np.zeros((5, 16, 16, 3), np.uint8),
                    y_test=np.full(5, 119))
  arrays = data.load_arrays('auto', path=path, dataset='imagenet16')
  assert arrays['x_train'].shape == (30, 16, 16, 3) and arrays['y_train'].max() == 116
  with pytest.raises(data.DataError, match=r'expected uint8 \[n, 16, 16, 3\].*imagenet16'):
    data.load_arrays('npz', path=_write_npz(tmp_path), dataset='imagenet16')
  with pytest.raises(data.DataError, match='loads only from a local .npz'):
    data.load_arrays('auto', dataset='imagenet16')
  d = data.to_device(arrays, val_size=5, split_seed=0, dataset='imagenet16')
  assert d.train_images.shape == (25, 16, 16, 3)


def test_auto_source_means_npz_when_a_path_is_given(tmp_path):
  assert data.resolved_source('auto', '') == 'download'
  assert data.resolved_source('auto', 'x.npz') == 'npz'
  assert data.resolved_source('tfds', '') == 'tfds'
  path = _write_npz(tmp_path)
  np.testing.assert_array_equal(data.load_arrays('auto', path=path)['x_train'],
                                _arrays()['x_train'])
  with pytest.raises(data.DataError, match="data.path=.* data.source='tfds' does not read it"):
    data.load_arrays('tfds', path=path)


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


def test_text_file_as_npz_says_it_is_not_an_npz(tmp_path):
  path = tmp_path / 'labels.txt'
  path.write_text('airplane\nautomobile\n')
  with pytest.raises(data.DataError) as e:
    data.load_arrays('npz', path=str(path))
  assert 'not an .npz archive' in str(e.value) and 'pickle' not in str(e.value)


def test_directory_as_npz_says_it_is_a_directory(tmp_path):
  with pytest.raises(data.DataError, match=f"data.path='{tmp_path}' is a directory"):
    data.load_arrays('npz', path=str(tmp_path))


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
  with pytest.raises(data.DataError, match='data.source=auto') as e:
    data.load_arrays('tfds')
  assert 'no network' in str(e.value) and 'convert --archive=cifar-10-python.tar.gz' in str(
      e.value)
  assert 'shared' not in str(e.value) and '\n' not in str(e.value)


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
  with pytest.raises(data.DataError, match=r'val_size must be in 1\.\.99') as e:
    data.train_val_split(100, val_size, split_seed=0)
  assert f'data.val_size={val_size} does not fit the 100 training images' in str(e.value)


@pytest.mark.parametrize('n', [0, 1])
def test_empty_or_single_image_train_split_says_so(n):
  arrays = _arrays(n_train=n)
  with pytest.raises(data.DataError) as e:
    data.to_device(arrays, val_size=1, split_seed=0)
  assert f'the training split holds {n} image(s)' in str(e.value)
  assert '1..-1' not in str(e.value) and '1..0' not in str(e.value)


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


# --- the official CIFAR archives: convert, download ------------------------------
# Tiny archives in the real layouts: python pickled batches (protocol 2 dicts with
# bytes keys, 'data' uint8 [n, 3072] as R, G, B planes) or binary records.


def _cifar_truth(dataset, n_train=10, n_test=4, seed=0):
  rng = np.random.default_rng(seed)
  classes = data.num_classes(dataset)
  return {'x_train': rng.integers(0, 256, (n_train, 32, 32, 3), np.uint8),
          'y_train': rng.integers(0, classes, n_train),
          'x_test': rng.integers(0, 256, (n_test, 32, 32, 3), np.uint8),
          'y_test': rng.integers(0, classes, n_test)}


def _planes(x):
  return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)


def _add(tar, name, blob):
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  tar.addfile(info, io.BytesIO(blob))


def _python_batch(x, y, label_key, coarse=None):
  batch = {b'batch_label': b'testing batch', label_key: [int(v) for v in y],
           b'data': _planes(x), b'filenames': [b'img_%d.png' % i for i in range(len(x))]}
  if coarse is not None:
    batch[b'coarse_labels'] = [int(v) // 5 for v in y]
  return pickle.dumps(batch, protocol=2)


def write_cifar_archive(path, dataset, kind='python', **sizes):
  """A tiny official-layout archive at `path`; returns the arrays it holds."""
  truth = _cifar_truth(dataset, **sizes)
  x_tr, y_tr, x_te, y_te = (truth[k] for k in data.KEYS)
  with tarfile.open(path, 'w:gz') as tar:
    if (dataset, kind) == ('cifar10', 'python'):
      for i, part in enumerate(np.array_split(np.arange(len(y_tr)), 5)):
        _add(tar, f'cifar-10-batches-py/data_batch_{i + 1}',
             _python_batch(x_tr[part], y_tr[part], b'labels'))
      _add(tar, 'cifar-10-batches-py/test_batch', _python_batch(x_te, y_te, b'labels'))
      _add(tar, 'cifar-10-batches-py/batches.meta', pickle.dumps({b'num_vis': 3072}, 2))
    elif (dataset, kind) == ('cifar100', 'python'):
      _add(tar, 'cifar-100-python/train', _python_batch(x_tr, y_tr, b'fine_labels', True))
      _add(tar, 'cifar-100-python/test', _python_batch(x_te, y_te, b'fine_labels', True))
      _add(tar, 'cifar-100-python/meta', pickle.dumps({b'fine_label_names': []}, 2))
    else:
      fine_only = dataset == 'cifar10'
      record = lambda x, y: np.concatenate(
          [(y[:, None] if fine_only else np.stack([y // 5, y], 1)).astype(np.uint8),
           _planes(x)], 1).tobytes()
      if fine_only:
        for i, part in enumerate(np.array_split(np.arange(len(y_tr)), 5)):
          _add(tar, f'cifar-10-batches-bin/data_batch_{i + 1}.bin',
               record(x_tr[part], y_tr[part]))
        _add(tar, 'cifar-10-batches-bin/test_batch.bin', record(x_te, y_te))
      else:
        _add(tar, 'cifar-100-binary/train.bin', record(x_tr, y_tr))
        _add(tar, 'cifar-100-binary/test.bin', record(x_te, y_te))
  return truth


def _assert_arrays_equal(arrays, truth):
  assert set(arrays) == set(data.KEYS)
  for k in data.KEYS:
    np.testing.assert_array_equal(arrays[k], truth[k])


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100'])
@pytest.mark.parametrize('kind', ['python', 'binary'])
def test_convert_cli_writes_the_npz_the_npz_route_reads(tmp_path, dataset, kind, capsys):
  archive = str(tmp_path / 'archive.tar.gz')
  truth = write_cifar_archive(archive, dataset, kind)
  out = str(tmp_path / f'{dataset}.npz')
  assert data.main(['convert', f'--archive={archive}', f'--out={out}']) == 0
  assert f'wrote {out}' in capsys.readouterr().out
  _assert_arrays_equal(data.load_arrays('auto', path=out, dataset=dataset), truth)
  with np.load(out) as npz:
    assert sorted(npz.files) == sorted(data.KEYS)
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # as a plain open() makes it


def test_convert_refuses_other_archives_in_one_line(tmp_path, capsys):
  archive = str(tmp_path / 'c100.tar.gz')
  write_cifar_archive(archive, 'cifar100')
  out = str(tmp_path / 'x.npz')
  assert data.main(['convert', f'--archive={archive}', f'--out={out}',
                    '--dataset=cifar10']) == 1
  assert "holds cifar100, but data.dataset='cifar10'" in capsys.readouterr().err
  other = tmp_path / 'other.tar.gz'
  with tarfile.open(other, 'w:gz') as tar:
    _add(tar, 'photos/a.png', b'x')
  assert data.main(['convert', f'--archive={other}', f'--out={out}']) == 1
  err = capsys.readouterr().err
  assert 'is not an official CIFAR archive' in err and err.count('\n') == 1
  assert data.main(['convert', f'--archive={tmp_path}', f'--out={out}']) == 1
  assert 'no such archive file' in capsys.readouterr().err
  assert not os.path.exists(out)


def test_archive_pickles_cannot_run_code(tmp_path):
  """The batches are unpickled with numpy arrays allowed and nothing else."""
  class Evil:
    def __reduce__(self):
      return (os.system, ('echo pwned',))

  archive = tmp_path / 'evil.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    _add(tar, 'cifar-100-python/train', pickle.dumps({b'data': Evil()}, 2))
    _add(tar, 'cifar-100-python/test', pickle.dumps({b'data': Evil()}, 2))
  with pytest.raises(data.DataError, match='refusing to load posix.system'):
    data.read_archive(str(archive))


class _Server:
  """Serves a folder over HTTP on 127.0.0.1 in a thread, counting the requests."""

  def __init__(self, folder):
    server = self

    class Handler(http.server.SimpleHTTPRequestHandler):
      def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(folder), **kwargs)

      def do_GET(self):
        server.requests.append(self.path)
        super().do_GET()

      def log_message(self, *args):
        pass

    self.requests = []
    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *exc):
    self.httpd.shutdown()
    self.httpd.server_close()


def _md5(path):
  return hashlib.md5(open(path, 'rb').read()).hexdigest()


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100'])
def test_download_route_fetches_checks_converts_and_caches(tmp_path, monkeypatch, dataset):
  """source=auto without a path: the official archive over HTTP (a local server with a
  tiny archive of the real layout), md5-checked, kept as <cache>/<dataset>.npz."""
  served = tmp_path / 'served'
  served.mkdir()
  archive = data.ARCHIVES[dataset]
  truth = write_cifar_archive(str(served / archive.filename), dataset)
  monkeypatch.setitem(data.ARCHIVES, dataset,
                      data.Archive(archive.filename, _md5(served / archive.filename)))
  cache = tmp_path / 'cache'
  with _Server(served) as server:
    monkeypatch.setenv(data.URL_ENV, server.url)
    arrays = data.load_arrays('auto', dataset=dataset, cache_dir=str(cache))
  assert server.requests == [f'/{archive.filename}']
  _assert_arrays_equal(arrays, truth)
  assert sorted(os.listdir(cache)) == [f'{dataset}.npz']  # archive and .part removed
  # The server is gone: the cached copy is read without any request.
  _assert_arrays_equal(data.load_arrays('download', dataset=dataset, cache_dir=str(cache)),
                       truth)


def test_download_with_wrong_md5_keeps_nothing(tmp_path, monkeypatch):
  served = tmp_path / 'served'
  served.mkdir()
  write_cifar_archive(str(served / 'cifar-10-python.tar.gz'), 'cifar10')
  cache = tmp_path / 'cache'
  with _Server(served) as server:
    monkeypatch.setenv(data.URL_ENV, server.url)
    with pytest.raises(data.DataError) as e:
      data.load_arrays('auto', cache_dir=str(cache))
  assert 'expected c58f30108f718f92721af3b95e74349a' in str(e.value)
  assert os.listdir(cache) == []


def test_download_offline_says_what_to_do_in_one_line(tmp_path, monkeypatch):
  """No server answers: one line naming the URL and the convert command, never shared/."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]  # closed again when the block ends: nothing listens
  monkeypatch.setenv(data.URL_ENV, f'http://127.0.0.1:{port}')
  with pytest.raises(data.DataError) as e:
    data.load_arrays('auto', dataset='cifar100', cache_dir=str(tmp_path))
  message = str(e.value)
  assert message.startswith(f'cannot download http://127.0.0.1:{port}/cifar-100-python.tar.gz')
  assert ('python -m spos_jax.data convert --archive=cifar-100-python.tar.gz '
          '--out=cifar100.npz') in message
  assert '--config.data.path=cifar100.npz' in message
  assert 'shared' not in message and '\n' not in message
  assert not os.path.exists(tmp_path / 'cifar100.npz')
