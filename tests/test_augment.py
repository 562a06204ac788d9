"""Tests of spos_jax.augment: crop/flip, normalisation, and AutoAugment against PIL."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from spos_jax import augment as aug

# The CIFAR-10 policy as DeepVoltaire/AutoAugment writes it: SubPolicy(p1, op1, level1,
# p2, op2, level2). Transcribed separately from the module's table, to check it.
REFERENCE_POLICY = (
    (0.1, 'invert', 7, 0.2, 'contrast', 6),
    (0.7, 'rotate', 2, 0.3, 'translateX', 9),
    (0.8, 'sharpness', 1, 0.9, 'sharpness', 3),
    (0.5, 'shearY', 8, 0.7, 'translateY', 9),
    (0.5, 'autocontrast', 8, 0.9, 'equalize', 2),
    (0.2, 'shearY', 7, 0.3, 'posterize', 7),
    (0.4, 'color', 3, 0.6, 'brightness', 7),
    (0.3, 'sharpness', 9, 0.7, 'brightness', 9),
    (0.6, 'equalize', 5, 0.5, 'equalize', 1),
    (0.6, 'contrast', 7, 0.6, 'sharpness', 5),
    (0.7, 'color', 7, 0.5, 'translateX', 8),
    (0.3, 'equalize', 7, 0.4, 'autocontrast', 8),
    (0.4, 'translateY', 3, 0.2, 'sharpness', 6),
    (0.9, 'brightness', 6, 0.2, 'color', 8),
    (0.5, 'solarize', 2, 0.0, 'invert', 3),
    (0.2, 'equalize', 0, 0.6, 'autocontrast', 0),
    (0.2, 'equalize', 8, 0.6, 'equalize', 4),
    (0.9, 'color', 9, 0.6, 'equalize', 6),
    (0.8, 'autocontrast', 4, 0.2, 'solarize', 8),
    (0.1, 'brightness', 3, 0.7, 'color', 0),
    (0.4, 'solarize', 5, 0.9, 'autocontrast', 3),
    (0.9, 'translateY', 9, 0.7, 'translateY', 9),
    (0.9, 'autocontrast', 2, 0.8, 'solarize', 3),
    (0.8, 'equalize', 8, 0.1, 'invert', 3),
    (0.7, 'translateY', 9, 0.9, 'autocontrast', 1),
)
REFERENCE_RANGES = {
    'shearX': np.linspace(0, 0.3, 10),
    'shearY': np.linspace(0, 0.3, 10),
    'translateX': np.linspace(0, 150 / 331, 10),
    'translateY': np.linspace(0, 150 / 331, 10),
    'rotate': np.linspace(0, 30, 10),
    'color': np.linspace(0.0, 0.9, 10),
    'posterize': np.round(np.linspace(8, 4, 10), 0).astype(int),
    'solarize': np.linspace(256, 0, 10),
    'contrast': np.linspace(0.0, 0.9, 10),
    'sharpness': np.linspace(0.0, 0.9, 10),
    'brightness': np.linspace(0.0, 0.9, 10),
    'autocontrast': [0] * 10,
    'equalize': [0] * 10,
    'invert': [0] * 10,
}
GREY = (128, 128, 128)


def _rotate_with_fill(img, degrees):
  rot = img.convert('RGBA').rotate(degrees)
  grey = Image.new('RGBA', rot.size, (128,) * 4)
  return Image.composite(rot, grey, rot).convert(img.mode)


def pil_op(name, img, magnitude, sign):
  """The reference's PIL call for `name`, with its random sign given as `sign`."""
  m = magnitude
  if name == 'shearX':
    return img.transform(img.size, Image.AFFINE, (1, m * sign, 0, 0, 1, 0),
                         Image.BICUBIC, fillcolor=GREY)
  if name == 'shearY':
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, m * sign, 1, 0),
                         Image.BICUBIC, fillcolor=GREY)
  if name == 'translateX':
    return img.transform(img.size, Image.AFFINE,
                         (1, 0, m * img.size[0] * sign, 0, 1, 0), fillcolor=GREY)
  if name == 'translateY':
    return img.transform(img.size, Image.AFFINE,
                         (1, 0, 0, 0, 1, m * img.size[1] * sign), fillcolor=GREY)
  if name == 'rotate':  # the reference passes no sign here; the module flips it too
    return _rotate_with_fill(img, m * sign)
  enhance = {'color': ImageEnhance.Color, 'contrast': ImageEnhance.Contrast,
             'sharpness': ImageEnhance.Sharpness,
             'brightness': ImageEnhance.Brightness}
  if name in enhance:
    return enhance[name](img).enhance(1 + m * sign)
  if name == 'posterize':
    return ImageOps.posterize(img, int(m))
  if name == 'solarize':
    return ImageOps.solarize(img, m)
  return {'autocontrast': ImageOps.autocontrast, 'equalize': ImageOps.equalize,
          'invert': ImageOps.invert}[name](img)


def pil_apply(name, images, magnitude, sign):
  return np.stack([np.asarray(pil_op(name, Image.fromarray(a), magnitude, sign))
                   for a in images])


def natural_images(rng, n):
  """Smooth random colour fields plus noise, each channel in its own random range."""
  out = []
  for _ in range(n):
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((32, 32), Image.BILINEAR), np.float64)
    img = img + rng.normal(0, 12, img.shape)
    low, high = rng.uniform(0, 100, 3), rng.uniform(150, 255, 3)
    img = low + (img - img.min()) / (np.ptp(img) + 1e-9) * (high - low)
    out.append(np.clip(img, 0, 255).astype(np.uint8))
  return out


def edge_case_images(rng):
  """Flat, two-level, few-level, nearly flat, mostly top-value: corners of the LUT ops."""
  flat = np.full((32, 32, 3), 77, np.uint8)
  two_level = np.where(rng.random((32, 32, 1)) < 0.3, 20, 200).astype(np.uint8)
  two_level = np.repeat(two_level, 3, axis=2)
  few_levels = (rng.integers(0, 5, (32, 32, 3)) * 60).astype(np.uint8)
  nearly_flat = np.full((32, 32, 3), 100, np.uint8)
  spots = rng.integers(0, 32, (30, 2))
  nearly_flat[spots[:, 0], spots[:, 1]] = rng.integers(0, 256, (30, 3))
  # 60% of pixels at the top value: PIL's equalize LUT overshoots 255 and is clipped.
  bright = rng.integers(0, 250, (32, 32, 3)).astype(np.uint8)
  bright[rng.random((32, 32)) < 0.6] = 250
  return [flat, two_level, few_levels, nearly_flat, bright]


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  return np.stack(natural_images(rng, 20) + edge_case_images(rng))


@pytest.fixture(scope='module')
def crop_flip_fn():
  return jax.jit(aug.random_crop_flip, static_argnames='pad')


@pytest.fixture(scope='module')
def autoaugment_fn():
  return jax.jit(aug.autoaugment_cifar10)


@pytest.fixture(scope='module')
def augment_fn():
  return jax.jit(aug.augment_batch, static_argnames=('policy', 'dtype'))


def crop_flip_reference(image, pad, oy, ox, flip):
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  crop = padded[oy:oy + image.shape[0], ox:ox + image.shape[1]]
  return crop[:, ::-1] if flip else crop


def recover_crop_flip(image, out, pad):
  """All (oy, ox, flip) under which `out` is a crop/flip of `image`."""
  return [(oy, ox, flip)
          for oy in range(2 * pad + 1) for ox in range(2 * pad + 1) for flip in (0, 1)
          if np.array_equal(crop_flip_reference(image, pad, oy, ox, flip), out)]


def position_coded(rng, n):
  """Images whose red/green channels hold row/column + 1, so crops are unambiguous."""
  rows, cols = np.meshgrid(np.arange(1, 33), np.arange(1, 33), indexing='ij')
  coded = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)
  coded = np.repeat(coded[None], n, axis=0)
  coded[..., 2] = rng.integers(0, 256, (n, 32, 32))
  return coded


# ---------------------------------------------------------------- crop, flip, normalise


def test_constants():
  np.testing.assert_allclose(aug.CIFAR10_MEAN, (0.4914, 0.4822, 0.4465))
  np.testing.assert_allclose(aug.CIFAR10_STD, (0.2470, 0.2435, 0.2616))


def test_random_crop_flip_shape_dtype_and_keys(crop_flip_fn, images):
  x = jnp.asarray(images)
  a = crop_flip_fn(jax.random.key(0), x)
  assert a.shape == x.shape and a.dtype == jnp.uint8
  np.testing.assert_array_equal(a, crop_flip_fn(jax.random.key(0), x))
  assert not np.array_equal(a, crop_flip_fn(jax.random.key(1), x))


def test_random_crop_flip_is_pad_slice_flip(crop_flip_fn):
  pad = 4
  coded = position_coded(np.random.default_rng(1), 256)
  out = np.asarray(crop_flip_fn(jax.random.key(2), jnp.asarray(coded), pad=pad))
  found = [recover_crop_flip(image, o, pad) for image, o in zip(coded, out)]
  assert all(len(f) == 1 for f in found)  # every output is exactly one crop/flip
  oy, ox, flip = np.array([f[0] for f in found]).T
  assert set(oy) == set(ox) == set(range(2 * pad + 1))  # offsets cover 0..2*pad
  assert set(flip) == {0, 1}


def test_flip_frequency(crop_flip_fn):
  x = np.random.default_rng(3).integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
  out = np.asarray(crop_flip_fn(jax.random.key(4), jnp.asarray(x), pad=0))
  same = np.all(out == x, axis=(1, 2, 3))
  flipped = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same ^ flipped)  # pad 0: identity or mirror, nothing else
  assert 0.3 < flipped.mean() < 0.7


def numpy_normalize(x):
  return (x / 255.0 - np.array(aug.CIFAR10_MEAN)) / np.array(aug.CIFAR10_STD)


def test_normalize_matches_numpy(images):
  out = aug.normalize(jnp.asarray(images))
  assert out.dtype == jnp.float32 and out.shape == images.shape
  np.testing.assert_allclose(out, numpy_normalize(images), atol=1e-5)
  half = aug.normalize(jnp.asarray(images), jnp.bfloat16)
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(half.astype(np.float32), numpy_normalize(images),
                             atol=0.02, rtol=0.01)
  np.testing.assert_array_equal(aug.eval_images(jnp.asarray(images)), out)


def test_augment_batch_standard_is_normalised_crop_flip(augment_fn):
  coded = position_coded(np.random.default_rng(5), 32)
  out = augment_fn(jax.random.key(6), jnp.asarray(coded), policy='standard')
  assert out.shape == coded.shape and out.dtype == jnp.float32
  pixels = np.asarray(out, np.float64) * aug.CIFAR10_STD + aug.CIFAR10_MEAN
  pixels = np.round(pixels * 255).astype(np.uint8)
  assert all(len(recover_crop_flip(a, b, 4)) == 1 for a, b in zip(coded, pixels))


def test_augment_batch_autoaugment_and_dtype(augment_fn, images):
  x = jnp.asarray(images)
  out = augment_fn(jax.random.key(7), x, policy='autoaugment', dtype=jnp.bfloat16)
  assert out.shape == images.shape and out.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  standard = augment_fn(jax.random.key(7), x, policy='standard', dtype=jnp.bfloat16)
  assert not np.array_equal(out, standard)


def test_augment_batch_rejects_unknown_policy(images):
  with pytest.raises(ValueError, match='standard.*autoaugment'):
    aug.augment_batch(jax.random.key(0), jnp.asarray(images), policy='randaugment')


# ---------------------------------------------------------------- AutoAugment ops vs PIL

# (share of pixels equal to PIL, share within +-1) that each op must reach.
EXACT = (1.0, 1.0)
ROUNDING = (0.99, 1.0)  # float32 vs PIL's float64 (or FMA) at truncation edges
GEOMETRIC = (0.98, 0.99)
TOLERANCE = {
    'shearX': GEOMETRIC, 'shearY': GEOMETRIC, 'rotate': GEOMETRIC,
    'translateX': EXACT, 'translateY': EXACT,
    'color': ROUNDING, 'contrast': ROUNDING, 'sharpness': ROUNDING,
    'brightness': ROUNDING, 'autocontrast': ROUNDING,
    'posterize': EXACT, 'solarize': EXACT, 'equalize': EXACT, 'invert': EXACT,
}


def test_policy_table_matches_reference():
  assert len(aug.CIFAR10_POLICY) == 25
  assert set(aug.OPS) == set(REFERENCE_RANGES) == set(TOLERANCE)
  flat = tuple(p + q for p, q in aug.CIFAR10_POLICY)
  assert flat == REFERENCE_POLICY
  for name, levels in REFERENCE_RANGES.items():
    np.testing.assert_allclose(aug.MAGNITUDES[name], levels)


@pytest.mark.parametrize('name', list(REFERENCE_RANGES))
def test_op_matches_pil(name, images):
  op = jax.jit(jax.vmap(aug.OPS[name], in_axes=(0, None)))
  for level in range(10):
    for sign in (1, -1):
      magnitude = float(REFERENCE_RANGES[name][level])
      param = np.float32(aug.op_parameter(name, magnitude, sign))
      got = np.asarray(op(jnp.asarray(images), param))
      want = pil_apply(name, images, magnitude, sign)
      assert got.dtype == np.uint8 and got.shape == want.shape
      diff = np.abs(got.astype(int) - want)
      equal, close = TOLERANCE[name]
      context = f'{name} level {level} sign {sign}'
      assert np.mean(diff == 0) >= equal, context
      assert np.mean(diff <= 1) >= close, context


# ---------------------------------------------------------------- the whole policy


def test_sub_policy_draws():
  policy, apply, negative = aug._draw_sub_policies(jax.random.key(8), 8192)
  policy, apply, negative = map(np.asarray, (policy, apply, negative))
  assert set(policy) == set(range(25))
  probs = np.array([[p[0], p[3]] for p in REFERENCE_POLICY])[policy]
  assert not apply[probs == 0].any() and apply[probs == 1].all()
  assert abs(apply.mean() - probs.mean()) < 0.02
  assert 0.45 < negative.mean() < 0.55


def test_autoaugment_runs_under_jit(autoaugment_fn, images):
  x = jnp.asarray(images)
  out = autoaugment_fn(jax.random.key(9), x)
  assert out.shape == x.shape and out.dtype == jnp.uint8
  np.testing.assert_array_equal(out, autoaugment_fn(jax.random.key(9), x))
  assert not np.array_equal(out, autoaugment_fn(jax.random.key(10), x))
  changed = np.any(np.asarray(out) != images, axis=(1, 2, 3))
  assert changed.mean() >= 0.3


def test_autoaugment_matches_pil_reference(autoaugment_fn):
  """Each image against the reference's sub-policy, with the module's own draws."""
  rng = np.random.default_rng(11)
  x = np.stack(natural_images(rng, 64))
  key = jax.random.key(12)
  out = np.asarray(autoaugment_fn(key, jnp.asarray(x)))
  policy, apply, negative = map(np.asarray, aug._draw_sub_policies(key, len(x)))
  want = []
  for image, index, fires, neg in zip(x, policy, apply, negative):
    p1, op1, level1, p2, op2, level2 = REFERENCE_POLICY[index]
    img = Image.fromarray(image)
    for step, (name, level) in enumerate(((op1, level1), (op2, level2))):
      if fires[step]:
        img = pil_op(name, img, float(REFERENCE_RANGES[name][level]), 1 - 2 * neg[step])
    want.append(np.asarray(img))
  diff = np.abs(out.astype(int) - np.stack(want))
  assert np.mean(diff == 0) >= 0.98
  assert np.mean(diff <= 1) >= 0.99
