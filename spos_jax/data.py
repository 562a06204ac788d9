"""Data sets (CIFAR-10, CIFAR-100, ImageNet16-120), the fixed split, batch indices.

The whole data set lives on the accelerator as uint8 (`DeviceData`, a pytree that
jitted steps take as an argument); a step gathers its batch by index with
`micro_batch_indices`, so no host input pipeline runs during training. The split and
the batches: docs/method.md, 'Training'.

CIFAR comes from its official python archive: `load_arrays(source='download')`
fetches it once (md5-checked) into a cache folder and keeps it there as an .npz, with
no TensorFlow involved. Offline, fetch the archive by hand and convert it:

  python -m spos_jax.data convert --archive=cifar-10-python.tar.gz --out=cifar10.npz
  python -m spos_jax.data convert --archive=cifar-100-python.tar.gz --out=cifar100.npz

(the binary archives cifar-10-binary.tar.gz / cifar-100-binary.tar.gz work too), then
train with --config.data.path=cifar10.npz.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import itertools
import os
import pickle
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Sequence

from absl import logging
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

SOURCES = ('auto', 'download', 'tfds', 'npz', 'synthetic')
SPLITS = ('train', 'test')
KEYS = ('x_train', 'y_train', 'x_test', 'y_test')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """What a data set's arrays must look like, and how to normalise its images."""
  num_classes: int
  image_shape: tuple[int, int, int]  # HWC
  mean: tuple[float, float, float]  # per-channel mean of x / 255 over the train images
  std: tuple[float, float, float]


DATASETS = {
    'cifar10': Dataset(10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': Dataset(100, (32, 32, 3), (0.5071, 0.4865, 0.4409),
                        (0.2673, 0.2564, 0.2762)),
    # ImageNet16-120 (NB201's down-sampled ImageNet, classes 1..120); its statistics
    # are those of NB201's code (122.68, 116.66, 104.01) / 255, (63.22, 61.26, 65.09) / 255.
    'imagenet16': Dataset(120, (16, 16, 3), (0.4811, 0.4575, 0.4079),
                          (0.2479, 0.2402, 0.2553)),
}
DEFAULT_DATASET = 'cifar10'
IMAGE_SHAPE = DATASETS['cifar10'].image_shape  # CIFAR's; see image_shape(dataset)
NUM_CLASSES = DATASETS['cifar10'].num_classes


@dataclasses.dataclass(frozen=True)
class Archive:
  """An official CIFAR archive: its file name and md5 (from the CIFAR web page)."""
  filename: str
  md5: str


# The official python archives, downloaded by source='download'.
ARCHIVES = {
    'cifar10': Archive('cifar-10-python.tar.gz', 'c58f30108f718f92721af3b95e74349a'),
    'cifar100': Archive('cifar-100-python.tar.gz', 'eb9058c3a382ffc7106e4002c42a8d85'),
}
# Where the archives are fetched from; SPOS_JAX_CIFAR_URL names a mirror (or, in the
# tests, a local server).
CIFAR_URL = 'https://www.cs.toronto.edu/~kriz'
URL_ENV = 'SPOS_JAX_CIFAR_URL'
CACHE_ENV = 'SPOS_JAX_CACHE'
DOWNLOAD_TIMEOUT_S = 60

# Per-class RGB offsets of the synthetic images: distinct corners of the grid
# {0, 64, 127}^3 (27 of them; a 5-level grid for more classes), at least 63 (31)
# apart in some channel, so that a channel mean tells the class apart from the
# uniform [0, 128) noise they are added to.
_SYNTHETIC_COLOURS = np.array(list(itertools.product((0, 64, 127), repeat=3)), np.uint8)
_SYNTHETIC_COLOURS_FINE = np.array(
    list(itertools.product((0, 32, 64, 96, 127), repeat=3)), np.uint8)


class DataError(ValueError):
  """A data source, file, array or split size that cannot be used."""


def _dataset(name: str) -> Dataset:
  if name not in DATASETS:
    raise DataError(f'unknown data set {name!r}; choices: {", ".join(DATASETS)}')
  return DATASETS[name]


def num_classes(dataset: str) -> int:
  """Classes of a data set: cifar10 10, cifar100 100, imagenet16 120."""
  return _dataset(dataset).num_classes


def image_shape(dataset: str) -> tuple[int, int, int]:
  """HWC shape of one image: (32, 32, 3) for CIFAR, (16, 16, 3) for imagenet16."""
  return _dataset(dataset).image_shape


def channel_stats(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per RGB channel of x / 255, for normalising the images."""
  d = _dataset(dataset)
  return d.mean, d.std


def resolved_source(source: str, path: str = '') -> str:
  """The source 'auto' stands for: 'npz' when a path is given, else 'download'."""
  if source == 'auto':
    return 'npz' if path else 'download'
  return source


def load_arrays(source: str, path: str = '', tfds_data_dir: str = '',
                synthetic_size: int = 0, seed: int = 0, *, dataset: str = DEFAULT_DATASET,
                cache_dir: str = '') -> dict[str, np.ndarray]:
  """A data set as host arrays: x_* uint8 [n, H, W, 3], y_* int32 [n].

  source: 'auto' ('npz' when `path` is given, else 'download'), 'download' (the
  official CIFAR archive, fetched once into `cache_dir` and read from there), 'tfds'
  (a tfds copy, in `tfds_data_dir` or tfds' default), 'npz' (a local file at `path`
  with keys x_train, y_train, x_test, y_test) or 'synthetic' (`synthetic_size`
  random train images, deterministic from `seed`). `dataset` is 'cifar10',
  'cifar100' or 'imagenet16' (only from an .npz: 16x16 images, 120 classes).
  """
  _dataset(dataset)
  source = resolved_source(source, path)
  if source in ('download', 'tfds') and dataset not in ARCHIVES:
    raise DataError(f'data.dataset={dataset!r} loads only from a local .npz (data.path='
                    f'FILE.npz, x_* uint8 [n, {", ".join(map(str, image_shape(dataset)))}]'
                    f'), not from data.source={source!r}')
  if path and source != 'npz':
    raise DataError(f'data.path={path!r} is given but data.source={source!r} does not '
                    "read it; use data.source='npz' or 'auto'")
  if source == 'download':
    return load_downloaded(dataset, cache_dir)
  if source == 'tfds':
    return _load_tfds(dataset, tfds_data_dir)
  if source == 'npz':
    return _load_npz(path, dataset)
  if source == 'synthetic':
    return synthetic_arrays(synthetic_size, seed, dataset)
  raise DataError(
      f'unknown data source {source!r}; valid sources: {", ".join(SOURCES)}')


# ---------------------------------------------------------------------------
# The official CIFAR archives


def cache_folder(cache_dir: str = '') -> str:
  """cache_dir, else $SPOS_JAX_CACHE, else $XDG_CACHE_HOME/spos_jax (~/.cache/spos_jax)."""
  if cache_dir:
    return cache_dir
  if os.environ.get(CACHE_ENV):
    return os.environ[CACHE_ENV]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'spos_jax')


def archive_url(dataset: str) -> str:
  base = os.environ.get(URL_ENV) or CIFAR_URL
  return f'{base.rstrip("/")}/{ARCHIVES[dataset].filename}'


def load_downloaded(dataset: str, cache_dir: str = '') -> dict[str, np.ndarray]:
  """CIFAR-10/100 from `<cache>/<dataset>.npz`, made from the official archive once."""
  folder = cache_folder(cache_dir)
  npz_path = os.path.join(folder, f'{dataset}.npz')
  if not os.path.isfile(npz_path):
    archive = download_archive(dataset, folder)
    logging.info('converting %s to %s', archive, npz_path)
    write_npz(npz_path, read_archive(archive, dataset))
    os.remove(archive)  # the .npz holds everything; the archive would double the space
  return _load_npz(npz_path, dataset)


def _offline_hint(dataset: str) -> str:
  archive = ARCHIVES[dataset]
  return (f'fetch {archive.filename} (md5 {archive.md5}) by hand, run `python -m '
          f'spos_jax.data convert --archive={archive.filename} --out={dataset}.npz` and '
          f'pass --config.data.path={dataset}.npz')


def download_archive(dataset: str, folder: str) -> str:
  """The official archive in `folder`, downloaded and md5-checked; its path.

  Writes to a '.part' file that is renamed only when complete and verified, so an
  interrupted download never looks finished.
  """
  archive = ARCHIVES[dataset]
  url = archive_url(dataset)
  target = os.path.join(folder, archive.filename)
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise DataError(f'cannot create the data cache folder {folder!r} ({e.strerror or e}); '
                    'set data.cache_dir to a writable folder') from e
  logging.info('downloading %s to %s', url, target)
  md5 = hashlib.md5()
  try:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
        open(target + '.part', 'wb') as out:
      total = int(response.headers.get('Content-Length') or 0)
      done, reported = 0, 0
      while chunk := response.read(1 << 20):
        out.write(chunk)
        md5.update(chunk)
        done += len(chunk)
        if total and done * 10 // total > reported:
          reported = done * 10 // total
          logging.info('%s: %d of %d MB', archive.filename, done >> 20, total >> 20)
  except (urllib.error.URLError, OSError, ValueError) as e:
    if os.path.exists(target + '.part'):
      os.remove(target + '.part')
    reason = getattr(e, 'reason', None) or e
    raise DataError(f'cannot download {url} ({reason}); without internet, '
                    f'{_offline_hint(dataset)}') from e
  if md5.hexdigest() != archive.md5:
    os.remove(target + '.part')
    raise DataError(f'{url}: downloaded file has md5 {md5.hexdigest()}, expected '
                    f'{archive.md5} (damaged or not the official archive); '
                    f'retry, or {_offline_hint(dataset)}')
  os.replace(target + '.part', target)
  return target


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles CIFAR's batches (dicts of lists, bytes and numpy arrays) and no code."""
  _ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
              ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')}

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
    if name == '_reconstruct':
      return np.ndarray.__reduce__(np.zeros(0))[0]
    return super().find_class(module, name)


def _unpickle_batch(blob: bytes) -> dict:
  batch = _ArrayUnpickler(io.BytesIO(blob), encoding='bytes').load()
  return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _python_batches(blobs: Sequence[bytes], label_key: str) -> tuple[np.ndarray, np.ndarray]:
  """Pickled batches {'data': uint8 [n, 3072] (R, G, B planes), label_key: [n]}."""
  images, labels = [], []
  for blob in blobs:
    batch = _unpickle_batch(blob)
    images.append(np.asarray(batch['data'], np.uint8).reshape(-1, 3, 32, 32))
    labels.append(np.asarray(batch[label_key], np.int64))
  return np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(labels)


def _binary_batches(blobs: Sequence[bytes], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
  """Records of `label_bytes` label bytes (the last one used) and 3072 image bytes."""
  records = np.concatenate([np.frombuffer(b, np.uint8).reshape(-1, label_bytes + 3072)
                            for b in blobs])
  images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), records[:, label_bytes - 1].astype(np.int64)


# Member files (under the archive's top folder) of each official layout:
# (dataset, folder, train files, test files, reader of the member contents).
_LAYOUTS = (
    ('cifar10', 'cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)],
     ['test_batch'], lambda blobs: _python_batches(blobs, 'labels')),
    ('cifar100', 'cifar-100-python', ['train'], ['test'],
     lambda blobs: _python_batches(blobs, 'fine_labels')),
    ('cifar10', 'cifar-10-batches-bin', [f'data_batch_{i}.bin' for i in range(1, 6)],
     ['test_batch.bin'], lambda blobs: _binary_batches(blobs, 1)),
    ('cifar100', 'cifar-100-binary', ['train.bin'], ['test.bin'],
     lambda blobs: _binary_batches(blobs, 2)),  # coarse label, then the fine one
)


def read_archive(path: str, dataset: str | None = None) -> dict[str, np.ndarray]:
  """x_train, y_train, x_test, y_test of an official CIFAR-10/100 archive (python or
  binary version), checked; `dataset` (if given) must match the archive's."""
  if os.path.isdir(path) or not os.path.isfile(path):
    raise DataError(f'{path!r}: no such archive file (cifar-10-python.tar.gz, '
                    'cifar-100-python.tar.gz or their -binary versions)')
  try:
    with tarfile.open(path, 'r:*') as tar:
      names = set(tar.getnames())
      layout = next((l for l in _LAYOUTS if f'{l[1]}/{l[2][0]}' in names), None)
      if layout is None:
        raise DataError(f'{path!r} is not an official CIFAR archive: it has none of the '
                        f'folders {", ".join(l[1] for l in _LAYOUTS)}')
      name, folder, train_files, test_files, reader = layout
      if dataset is not None and dataset != name:
        raise DataError(f'{path!r} holds {name}, but data.dataset={dataset!r}')
      missing = [f for f in train_files + test_files if f'{folder}/{f}' not in names]
      if missing:
        raise DataError(f'{path!r} lacks {", ".join(missing)} of {folder}/: incomplete archive')
      read = lambda files: [tar.extractfile(f'{folder}/{f}').read() for f in files]
      arrays = {}
      for split, files in zip(SPLITS, (train_files, test_files)):
        arrays[f'x_{split}'], arrays[f'y_{split}'] = reader(read(files))
  except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError, KeyError,
          ValueError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f'cannot read archive {path!r}: {type(e).__name__}: {e}') from e
  return check_arrays(arrays, f'archive {path!r}', name)


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """np.savez to a temporary file in the same folder, renamed into place when complete."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **{k: arrays[k] for k in KEYS})
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600, widened as open() would create it
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


# ---------------------------------------------------------------------------
# tfds, npz, synthetic


def _load_tfds(dataset: str, data_dir: str) -> dict[str, np.ndarray]:
  """A tfds-prepared cifar10/cifar100, train and test, read through `tfds.data_source`.

  `tfds.data_source` reads the ArrayRecord files of a prepared data set with NumPy
  and PIL only, while `tfds.load(..., batch_size=-1)` goes through tf.data and needs
  TensorFlow. The file format is named explicitly because tfds only defaults to
  ArrayRecord when no data_dir is given. Preparing a copy (download_and_prepare)
  needs TensorFlow in tfds 4.9 (the builder reads the raw files with tf.io.gfile);
  source='download' needs none. tfds stores the examples in its own (shuffled)
  order, so the split of a tfds run differs from that of a 'download' run.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(
        f'data.source=tfds needs tensorflow_datasets ({e}); pip install '
        "'spos_jax[tfds]', or use data.source=auto (the official archive)") from e
  try:
    train, test = tfds.data_source(
        dataset, split=list(SPLITS), data_dir=data_dir or None,
        builder_kwargs={'file_format': 'array_record'})
    arrays = {}
    for split, ds in zip(SPLITS, (train, test)):
      arrays[f'x_{split}'], arrays[f'y_{split}'] = _stack_examples(ds, dataset)
  except Exception as e:  # pylint: disable=broad-except
    first_line = f'{e}'.strip().splitlines()[0] if f'{e}'.strip() else ''
    raise DataError(
        f'tfds could not load {dataset} (data_dir={data_dir or "tfds default"}): '
        f'{type(e).__name__}: {first_line}; use data.source=auto (downloads the official '
        f'archive) or, offline, {_offline_hint(dataset)}') from e
  return check_arrays(arrays, f'tfds {dataset}', dataset)


def _stack_examples(ds, dataset: str) -> tuple[np.ndarray, np.ndarray]:
  """Random-access tfds source of {'image', 'label'} -> (uint8 images, labels).

  Reads one example at a time: tfds' mock source breaks `__getitems__`, and the PNG
  decoding dominates the cost either way.
  """
  n = len(ds)
  images = np.empty((n,) + image_shape(dataset), np.uint8)
  labels = np.empty((n,), np.int64)
  for i in range(n):
    example = ds[i]
    images[i] = example['image']
    labels[i] = example['label']
  return images, labels


_NPZ_MAGIC = b'PK'  # an .npz is a zip archive of .npy files
_NPY_MAGIC = b'\x93NUMPY'


def _load_npz(path: str, dataset: str = DEFAULT_DATASET) -> dict[str, np.ndarray]:
  """Reads and checks a .npz with keys x_train, y_train, x_test, y_test."""
  if not path:
    raise DataError('data.source=npz needs data.path, the .npz file to read')
  if os.path.isdir(path):
    raise DataError(f'data.path={path!r} is a directory; give the .npz file (keys '
                    f'{", ".join(KEYS)})')
  if not os.path.isfile(path):
    raise DataError(f'npz file not found: {path!r}')
  try:
    with open(path, 'rb') as f:
      start = f.read(len(_NPY_MAGIC))
  except OSError as e:
    raise DataError(f'cannot read npz file {path!r}: {e.strerror or e}') from e
  if start.startswith(_NPY_MAGIC):
    raise DataError(f'{path!r} holds a single .npy array, not an .npz archive '
                    f'with keys {", ".join(KEYS)}')
  if not start.startswith(_NPZ_MAGIC):
    raise DataError(f'cannot read npz file {path!r}: not an .npz archive (it starts with '
                    f'{start!r}); expected a zip of .npy arrays {", ".join(KEYS)}, as '
                    '`python -m spos_jax.data convert` writes')
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f'cannot read npz file {path!r}: {type(e).__name__}: {e}') from e
  with npz:
    found = sorted(npz.files)
    missing = [k for k in KEYS if k not in found]
    if missing:
      raise DataError(f'npz file {path!r} lacks keys {missing}; found keys '
                      f'{found}; expected {", ".join(KEYS)}')
    try:
      arrays = {k: npz[k] for k in KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise DataError(
          f'cannot read npz file {path!r}: {type(e).__name__}: {e}') from e
  return check_arrays(arrays, f'npz file {path!r}', dataset)


def check_arrays(arrays: dict[str, np.ndarray], origin: str = 'arrays',
                 dataset: str = DEFAULT_DATASET) -> dict[str, np.ndarray]:
  """Checks both splits against the data set; returns x_* uint8 and y_* int32 arrays."""
  out = {}
  for split in SPLITS:
    out[f'x_{split}'], out[f'y_{split}'] = _check_split(arrays, split, origin, dataset)
  return out


def _check_split(arrays: dict[str, np.ndarray], split: str, origin: str,
                 dataset: str = DEFAULT_DATASET) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) of one split checked: uint8 [n, H, W, 3], integer [n] in 0..classes-1."""
  shape, classes = image_shape(dataset), num_classes(dataset)
  x_key, y_key = f'x_{split}', f'y_{split}'
  missing = [k for k in (x_key, y_key) if k not in arrays]
  if missing:
    raise DataError(f'{origin}: missing {missing}; found {sorted(arrays)}')
  x, y = np.asarray(arrays[x_key]), np.asarray(arrays[y_key])
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != shape:
    raise DataError(
        f'{origin}: {x_key} has shape {x.shape} dtype {x.dtype}; expected uint8 '
        f'[n, {", ".join(map(str, shape))}] (NHWC) for {dataset}')
  if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
    raise DataError(
        f'{origin}: {y_key} has shape {y.shape} dtype {y.dtype}; expected an '
        f'integer array of shape ({x.shape[0]},) matching {x_key}')
  if y.size and (y.min() < 0 or y.max() >= classes):
    raise DataError(
        f'{origin}: {y_key} has labels outside 0..{classes - 1} of {dataset} '
        f'(min {y.min()}, max {y.max()})')
  return np.ascontiguousarray(x), y.astype(np.int32)


def synthetic_arrays(size: int, seed: int = 0,
                     dataset: str = DEFAULT_DATASET) -> dict[str, np.ndarray]:
  """`size` train and max(classes, size // 5) test images, deterministic from `seed`.

  Shaped as the data set's images, with its class count. Balanced random labels;
  each image is uniform noise in [0, 128) plus a per-class RGB offset, so the class
  can be read off the channel means and a short training run lowers the loss.
  """
  if size < 1:
    raise DataError(
        f'data.source=synthetic needs synthetic_size >= 1, got {size}')
  shape, classes = image_shape(dataset), num_classes(dataset)
  colours = _SYNTHETIC_COLOURS if classes <= len(_SYNTHETIC_COLOURS) else (
      _SYNTHETIC_COLOURS_FINE)
  out = {}
  for i, (split, n) in enumerate(zip(SPLITS, (size, max(classes, size // 5)))):
    rng = np.random.default_rng((seed, i))
    labels = rng.permutation(np.arange(n) % classes).astype(np.int32)
    noise = rng.integers(0, 128, (n,) + shape, dtype=np.uint8)
    out[f'x_{split}'] = noise + colours[labels][:, None, None, :]
    out[f'y_{split}'] = labels
  return out


def train_val_split(num_examples: int, val_size: int,
                    split_seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train_idx, val_idx), int32, from one permutation fixed by `split_seed`.

  The first `val_size` entries of the permutation are the validation indices, the
  rest the train indices; both stay in permutation order (not sorted). The seed is
  the study-level data.split_seed, so every run of a study holds out the same images.
  """
  if num_examples < 2:
    raise DataError(f'the training split holds {num_examples} image(s); holding out '
                    'validation images (data.val_size) needs at least 2')
  if not 1 <= val_size <= num_examples - 1:
    raise DataError(
        f'data.val_size={val_size} does not fit the {num_examples} training images: '
        f'val_size must be in 1..{num_examples - 1}')
  perm = np.random.default_rng(split_seed).permutation(num_examples)
  perm = perm.astype(np.int32)
  return perm[val_size:], perm[:val_size]


@struct.dataclass
class DeviceData:
  """The train and validation images (uint8 NHWC) and int32 labels, on device."""
  train_images: jax.Array
  train_labels: jax.Array
  val_images: jax.Array
  val_labels: jax.Array

  @property
  def num_train(self) -> int:
    return self.train_labels.shape[0]

  @property
  def num_val(self) -> int:
    return self.val_labels.shape[0]


def fingerprint(data: DeviceData) -> str:
  """sha256 of what a run reads: train and validation images and labels after the
  split (each array's name, dtype, shape and bytes).

  It names contents, not a file: two paths to the same arrays share it, and a file
  changed in place does not keep it.
  """
  digest = hashlib.sha256()
  for field in dataclasses.fields(data):
    array = np.ascontiguousarray(np.asarray(getattr(data, field.name)))
    digest.update(f'{field.name} {array.dtype.name} {array.shape};'.encode())
    digest.update(array)
  return digest.hexdigest()


def to_device(arrays: dict[str, np.ndarray], val_size: int, split_seed: int,
              dataset: str = DEFAULT_DATASET) -> DeviceData:
  """Splits x_train/y_train (`train_val_split`) and puts both parts on device once."""
  x, y = _check_split(arrays, 'train', 'to_device', dataset)
  train_idx, val_idx = train_val_split(len(y), val_size, split_seed)
  host = DeviceData(train_images=x[train_idx], train_labels=y[train_idx],
                    val_images=x[val_idx], val_labels=y[val_idx])
  return jax.device_put(host)


def steps_per_epoch(num_train: int, batch_size: int) -> int:
  """Full batches per epoch; the incomplete last batch is dropped."""
  if not 1 <= batch_size <= num_train:
    raise DataError(
        f'batch_size must be in 1..{num_train} (the number of train images), '
        f'got {batch_size}')
  return num_train // batch_size


def micro_batch_indices(key: jax.Array, micro_step, num_train: int,
                        batch_size: int) -> jax.Array:
  """Train indices, int32 [batch_size], of batch `micro_step` of an epoch stream.

  Epoch e = micro_step // steps_per_epoch visits the permutation
  `jax.random.permutation(jax.random.fold_in(key, e), num_train)` in consecutive
  slices. Pure and jit-able; `micro_step` may be traced, the sizes are static.
  """
  epoch, step = jnp.divmod(micro_step, steps_per_epoch(num_train, batch_size))
  perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_train)
  return jax.lax.dynamic_slice_in_dim(perm, step * batch_size,
                                      batch_size).astype(jnp.int32)


# ---------------------------------------------------------------------------
# Command line


def run_convert(args: argparse.Namespace) -> None:
  arrays = read_archive(args.archive, args.dataset)
  write_npz(args.out, arrays)
  sizes = ', '.join(f'{k} {arrays[k].shape}' for k in KEYS)
  classes = int(arrays['y_train'].max()) + 1
  print(f'wrote {args.out}: {sizes}, {classes} classes')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m spos_jax.data', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  convert = commands.add_parser(
      'convert', help='official CIFAR-10/100 archive -> .npz (x_train, y_train, x_test, y_test)')
  convert.add_argument('--archive', required=True,
                       help='cifar-10-python.tar.gz, cifar-100-python.tar.gz or a -binary one')
  convert.add_argument('--out', required=True, help='.npz file to write')
  convert.add_argument('--dataset', choices=tuple(ARCHIVES), default=None,
                       help='refuse an archive of another data set')
  convert.set_defaults(run=run_convert)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.run(args)
  except (DataError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
