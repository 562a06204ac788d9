"""CIFAR-10 sources, the fixed train/validation split, on-device batch indices.

The whole data set lives on the accelerator as uint8 (`DeviceData`, a pytree that
jitted steps take as an argument); a step gathers its batch by index with
`micro_batch_indices`, so no host input pipeline runs during training (SPEC 5, 10).
"""
from __future__ import annotations

import itertools
import os
import zipfile

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

SOURCES = ('tfds', 'npz', 'synthetic')
SPLITS = ('train', 'test')
KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10

# Per-class RGB offsets of the synthetic images: ten distinct corners of the grid
# {0, 64, 127}^3, at least 63 apart in some channel, so that a channel mean tells
# the class apart from the uniform [0, 128) noise they are added to.
_SYNTHETIC_COLOURS = np.array(
    list(itertools.product((0, 64, 127), repeat=3))[:NUM_CLASSES], np.uint8)


class DataError(ValueError):
  """A data source, file, array or split size that cannot be used."""


def load_arrays(source: str, path: str = '', tfds_data_dir: str = '',
                synthetic_size: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
  """CIFAR-10 as host arrays: x_* uint8 [n, 32, 32, 3], y_* int32 [n].

  source: 'tfds' (tfds `cifar10`, in `tfds_data_dir` or tfds' default), 'npz'
  (a local file at `path` with keys x_train, y_train, x_test, y_test) or
  'synthetic' (`synthetic_size` random train images, deterministic from `seed`).
  """
  if source == 'tfds':
    return _load_tfds(tfds_data_dir)
  if source == 'npz':
    return _load_npz(path)
  if source == 'synthetic':
    return synthetic_arrays(synthetic_size, seed)
  raise DataError(
      f'unknown data source {source!r}; valid sources: {", ".join(SOURCES)}')


def _load_tfds(data_dir: str) -> dict[str, np.ndarray]:
  """CIFAR-10 train and test splits read through `tfds.data_source`.

  `tfds.data_source` reads the ArrayRecord files of a prepared data set with NumPy
  and PIL only, while `tfds.load(..., batch_size=-1)` goes through tf.data and needs
  TensorFlow. The file format is named explicitly because tfds only defaults to
  ArrayRecord when no data_dir is given. Preparing cifar10 the first time
  (download_and_prepare) still needs network and TensorFlow in tfds 4.9 (the
  builder reads the raw files with tf.io.gfile and encodes PNGs with tf.image),
  and tfds 4.9.10 also imports `importlib_resources` there; reading a prepared copy
  needs neither.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(
        f'data.source=tfds needs tensorflow_datasets ({e}); '
        'use data.source=npz with a local CIFAR-10 .npz instead') from e
  try:
    train, test = tfds.data_source(
        'cifar10', split=list(SPLITS), data_dir=data_dir or None,
        builder_kwargs={'file_format': 'array_record'})
    arrays = {}
    for split, ds in zip(SPLITS, (train, test)):
      arrays[f'x_{split}'], arrays[f'y_{split}'] = _stack_examples(ds)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(
        f'tfds could not load cifar10 (data_dir={data_dir or "tfds default"}): '
        f'{type(e).__name__}: {e}. Preparing cifar10 the first time needs network, '
        'tensorflow and importlib_resources; without them use data.source=npz '
        'with data.path=FILE.npz (shared/tools/cifar10_q75.py writes one)') from e
  return check_arrays(arrays, 'tfds cifar10')


def _stack_examples(ds) -> tuple[np.ndarray, np.ndarray]:
  """Random-access tfds source of {'image', 'label'} -> (uint8 images, labels).

  Reads one example at a time: tfds' mock source breaks `__getitems__`, and the PNG
  decoding dominates the cost either way.
  """
  n = len(ds)
  images = np.empty((n,) + IMAGE_SHAPE, np.uint8)
  labels = np.empty((n,), np.int64)
  for i in range(n):
    example = ds[i]
    images[i] = example['image']
    labels[i] = example['label']
  return images, labels


def _load_npz(path: str) -> dict[str, np.ndarray]:
  """Reads and checks a .npz with keys x_train, y_train, x_test, y_test."""
  if not path:
    raise DataError('data.source=npz needs data.path, the .npz file to read')
  if not os.path.isfile(path):
    raise DataError(f'npz file not found: {path!r}')
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f'cannot read npz file {path!r}: {type(e).__name__}: {e}') from e
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise DataError(f'{path!r} holds a single .npy array, not an .npz archive '
                    f'with keys {", ".join(KEYS)}')
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
  return check_arrays(arrays, f'npz file {path!r}')


def check_arrays(arrays: dict[str, np.ndarray],
                 origin: str = 'arrays') -> dict[str, np.ndarray]:
  """Checks both splits; returns x_* as uint8 and y_* as int32 arrays."""
  out = {}
  for split in SPLITS:
    out[f'x_{split}'], out[f'y_{split}'] = _check_split(arrays, split, origin)
  return out


def _check_split(arrays: dict[str, np.ndarray], split: str,
                 origin: str) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) of one split checked: uint8 [n, 32, 32, 3], integer [n] in 0..9."""
  x_key, y_key = f'x_{split}', f'y_{split}'
  missing = [k for k in (x_key, y_key) if k not in arrays]
  if missing:
    raise DataError(f'{origin}: missing {missing}; found {sorted(arrays)}')
  x, y = np.asarray(arrays[x_key]), np.asarray(arrays[y_key])
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
    raise DataError(
        f'{origin}: {x_key} has shape {x.shape} dtype {x.dtype}; expected uint8 '
        f'[n, {", ".join(map(str, IMAGE_SHAPE))}] (NHWC)')
  if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
    raise DataError(
        f'{origin}: {y_key} has shape {y.shape} dtype {y.dtype}; expected an '
        f'integer array of shape ({x.shape[0]},) matching {x_key}')
  if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
    raise DataError(
        f'{origin}: {y_key} has labels outside 0..{NUM_CLASSES - 1} '
        f'(min {y.min()}, max {y.max()})')
  return np.ascontiguousarray(x), y.astype(np.int32)


def synthetic_arrays(size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """`size` train and max(10, size // 5) test images, deterministic from `seed`.

  Balanced random labels; each image is uniform noise in [0, 128) plus a per-class
  RGB offset, so the class can be read off the channel means and a short training
  run lowers the loss.
  """
  if size < 1:
    raise DataError(
        f'data.source=synthetic needs synthetic_size >= 1, got {size}')
  out = {}
  for i, (split, n) in enumerate(zip(SPLITS, (size, max(10, size // 5)))):
    rng = np.random.default_rng((seed, i))
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
    noise = rng.integers(0, 128, (n,) + IMAGE_SHAPE, dtype=np.uint8)
    out[f'x_{split}'] = noise + _SYNTHETIC_COLOURS[labels][:, None, None, :]
    out[f'y_{split}'] = labels
  return out


def train_val_split(num_examples: int, val_size: int,
                    split_seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train_idx, val_idx), int32, from one permutation fixed by `split_seed`.

  The first `val_size` entries of the permutation are the validation indices, the
  rest the train indices; both stay in permutation order (not sorted). The seed is
  the study-level data.split_seed, so every run of a study holds out the same images.
  """
  if not 1 <= val_size <= num_examples - 1:
    raise DataError(
        f'val_size must be in 1..{num_examples - 1} for {num_examples} examples, '
        f'got {val_size}')
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


def to_device(arrays: dict[str, np.ndarray], val_size: int,
              split_seed: int) -> DeviceData:
  """Splits x_train/y_train (`train_val_split`) and puts both parts on device once."""
  x, y = _check_split(arrays, 'train', 'to_device')
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
