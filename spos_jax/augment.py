"""On-device CIFAR augmentation: random crop and flip, AutoAugment, normalisation.

Everything is pure jax.numpy on uint8 images [B, H, W, 3] (CIFAR-10: H = W = 32),
driven by explicit PRNG keys, with static shapes, so it runs inside a jitted training
step (docs/method.md, 'Training'). The AutoAugment ops reproduce the PIL calls of the reference
implementation (DeepVoltaire/AutoAugment, CIFAR10Policy) on single images [H, W, 3].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

POLICIES = ('standard', 'autoaugment')

# Grey that geometric ops show where they read outside the image (fillcolor=(128,) * 3).
FILL = 128


# ---------------------------------------------------------------- crop, flip, normalise


def _crop_flip(padded, offset, flip, height, width):
  """One image: the [height, width] window at `offset` of `padded`, mirrored if `flip`."""
  crop = jax.lax.dynamic_slice(
      padded, (offset[0], offset[1], 0), (height, width, padded.shape[-1]))
  return jnp.where(flip, crop[:, ::-1], crop)


def random_crop_flip(key, images, pad=4):
  """Zero-pads each image by `pad`, takes a random crop of the original size, flips half.

  Crop offsets are uniform in 0..2*pad per axis and image; each image is mirrored
  horizontally with probability 0.5. uint8 [B, H, W, C] in and out.
  """
  batch, height, width, _ = images.shape
  offset_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(offset_key, (batch, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crop_flip = jax.vmap(_crop_flip, in_axes=(0, 0, 0, None, None))
  return crop_flip(padded, offsets, flips, height, width)


def normalize(images, dtype=jnp.float32, stats=(CIFAR10_MEAN, CIFAR10_STD)):
  """uint8 images -> (x / 255 - mean) / std per channel, in `dtype`.

  stats: the data set's (mean, std) per channel (data.channel_stats); CIFAR-10's default.
  """
  mean = jnp.asarray(stats[0], jnp.float32)
  std = jnp.asarray(stats[1], jnp.float32)
  return ((images.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)


def eval_images(images, dtype=jnp.float32, stats=(CIFAR10_MEAN, CIFAR10_STD)):
  """Evaluation input: normalisation only, no augmentation."""
  return normalize(images, dtype, stats)


# ---------------------------------------------------------------- pixel helpers


def _to_uint8(values):
  """Float pixel values -> uint8 the way PIL's C code stores them: clip, truncate."""
  return jnp.floor(jnp.clip(values, 0.0, 255.0)).astype(jnp.uint8)


def _blend(degenerate, image, factor):
  """PIL Image.blend(degenerate, image, factor): a float32 lerp, clipped and truncated."""
  base = degenerate.astype(jnp.float32)
  # Clipping the change cannot alter the clipped result, but it stops XLA fusing the
  # multiply and add into one FMA: PIL rounds the product first, and so do we.
  change = jnp.clip(factor * (image.astype(jnp.float32) - base), -255.0, 255.0)
  return _to_uint8(base + change)


def _grayscale(image):
  """PIL's RGB -> L (R*299/1000 + G*587/1000 + B*114/1000) in its 16-bit fixed point."""
  rgb = image.astype(jnp.int32)
  weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471
  return (weighted + 0x8000) >> 16


def _pixel_centres(height, width):
  """x and y of each output pixel centre, as PIL's transforms see them ([H, W] each)."""
  y = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
  x = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
  return jnp.broadcast_to(x, (height, width)), jnp.broadcast_to(y, (height, width))


def _read_pixels(image, row, col):
  """image[row, col] for integer index maps [H, W]; FILL where they leave the image."""
  height, width = image.shape[:2]
  inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
  pixels = image[jnp.clip(row, 0, height - 1), jnp.clip(col, 0, width - 1)]
  return jnp.where(inside[..., None], pixels, jnp.uint8(FILL))


def _sample_nearest(image, src_x, src_y):
  """Nearest-neighbour read at (src_x, src_y) (pixel (i, j) covers [j, j+1) x [i, i+1))."""
  col = jnp.floor(src_x).astype(jnp.int32)
  row = jnp.floor(src_y).astype(jnp.int32)
  return _read_pixels(image, row, col)


def _cubic(v1, v2, v3, v4, d):
  """PIL's cubic (a = -1) through v2 at d = 0 and v3 at d = 1, in its evaluation order."""
  p2 = -v1 + v3
  p3 = 2 * (v1 - v2) + v3 - v4
  p4 = -v1 + v2 - v3 + v4
  return v2 + d * (p2 + d * (p3 + d * p4))


def _sample_bicubic(image, src_x, src_y):
  """PIL's bicubic read at (src_x, src_y): 4x4 taps, edge pixels repeated, fill outside."""
  height, width = image.shape[:2]
  inside = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
  x = src_x - 0.5
  y = src_y - 0.5
  x0 = jnp.floor(x)
  y0 = jnp.floor(y)
  taps = jnp.arange(-1, 3)
  cols = jnp.clip(x0.astype(jnp.int32)[..., None] + taps, 0, width - 1)
  rows = jnp.clip(y0.astype(jnp.int32)[..., None] + taps, 0, height - 1)
  pixels = image[rows[..., :, None], cols[..., None, :]].astype(jnp.float32)
  dx = (x - x0)[..., None, None]
  dy = (y - y0)[..., None]
  # [H, W, row tap, col tap, C]: interpolate along x in each tap row, then along y.
  along_x = _cubic(*(pixels[..., k, :] for k in range(4)), dx)
  value = _cubic(*(along_x[..., k, :] for k in range(4)), dy)
  return jnp.where(inside[..., None], _to_uint8(value), jnp.uint8(FILL))


def _snap(coord):
  """Coordinates rounded to 2**-16, so that exact ones stay exact.

  PIL maps in float64, where products such as 22.5 * (1/15) come out exact; float32
  and fused multiply-adds leave them a few ulp off, enough to flip a floor or the
  inside test at an integer edge. Rounding restores them and moves none by more
  than 2**-17, about a float32 ulp at 32.
  """
  return jnp.round(coord * 65536.0) / 65536.0


def _affine(image, matrix, sampler):
  """PIL Image.transform(AFFINE, matrix): pixel centre (x, y) reads (ax+by+c, dx+ey+f)."""
  a, b, c, d, e, f = matrix
  x, y = _pixel_centres(*image.shape[:2])
  return sampler(image, _snap(a * x + b * y + c), _snap(d * x + e * y + f))


# ---------------------------------------------------------------- AutoAugment ops
# Each op maps one uint8 image [H, W, 3] and a float32 parameter (the signed magnitude,
# enhance factor, bit count or threshold the reference passes to PIL) to a uint8 image.


def shear_x(image, shear):
  """x += shear * y, bicubic (reference: transform AFFINE (1, s, 0, 0, 1, 0), BICUBIC)."""
  return _affine(image, (1.0, shear, 0.0, 0.0, 1.0, 0.0), _sample_bicubic)


def shear_y(image, shear):
  """y += shear * x, bicubic (reference: transform AFFINE (1, 0, 0, s, 1, 0), BICUBIC)."""
  return _affine(image, (1.0, 0.0, 0.0, shear, 1.0, 0.0), _sample_bicubic)


def translate_x(image, fraction):
  """Reads from x + fraction * width, nearest (content moves left for fraction > 0)."""
  shift = fraction * image.shape[1]
  return _affine(image, (1.0, 0.0, shift, 0.0, 1.0, 0.0), _sample_nearest)


def translate_y(image, fraction):
  """Reads from y + fraction * height, nearest (content moves up for fraction > 0)."""
  shift = fraction * image.shape[0]
  return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, shift), _sample_nearest)


def _fixed(value):
  """PIL's 16.16 fixed point: FLOOR(v * 65536 + 0.5)."""
  return jnp.floor(value * 65536.0 + 0.5).astype(jnp.int32)


def rotate(image, degrees):
  """PIL Image.rotate(degrees) about the centre, counter-clockwise, nearest, grey fill."""
  height, width = image.shape[:2]
  theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  cx, cy = width / 2, height / 2
  # Inverse map, destination -> source, as PIL builds it ...
  a, b, c = cos, -sin, cx - cos * cx + sin * cy
  d, e, f = sin, cos, cy - sin * cx - cos * cy
  # ... and runs it, for nearest sampling, in 16.16 fixed point from pixel corners.
  x = jnp.arange(width, dtype=jnp.int32)[None, :]
  y = jnp.arange(height, dtype=jnp.int32)[:, None]
  src_x = _fixed(c + 0.5 * (a + b)) + x * _fixed(a) + y * _fixed(b)
  src_y = _fixed(f + 0.5 * (d + e)) + x * _fixed(d) + y * _fixed(e)
  return _read_pixels(image, src_y >> 16, src_x >> 16)


def color(image, factor):
  """ImageEnhance.Color: blend with the image's grayscale (factor 1 is the identity)."""
  return _blend(_grayscale(image)[..., None], image, factor)


def contrast(image, factor):
  """ImageEnhance.Contrast: blend with the rounded mean of the grayscale image."""
  gray = _grayscale(image)
  mean = (2 * jnp.sum(gray) + gray.size) // (2 * gray.size)  # int(mean + 0.5)
  return _blend(mean, image, factor)


def brightness(image, factor):
  """ImageEnhance.Brightness: blend with black."""
  return _blend(jnp.zeros((), jnp.uint8), image, factor)


def _smooth(image):
  """PIL ImageFilter.SMOOTH: kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, border pixels kept."""
  x = image.astype(jnp.int32)
  height, width = x.shape[:2]
  total = 4 * x[1:-1, 1:-1]
  for dy in range(3):
    for dx in range(3):
      total = total + x[dy:dy + height - 2, dx:dx + width - 2]
  # PIL rounds its float sum; s / 13 never lies within 1/26 of a half, so integer
  # rounding gives the same result.
  return x.at[1:-1, 1:-1].set((2 * total + 13) // 26)


def sharpness(image, factor):
  """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image."""
  return _blend(_smooth(image), image, factor)


def posterize(image, bits):
  """ImageOps.posterize: keep the top `bits` bits of every channel."""
  shift = (8 - jnp.asarray(bits)).astype(jnp.uint8)
  return (image >> shift) << shift


def solarize(image, threshold):
  """ImageOps.solarize: invert values >= threshold."""
  return jnp.where(image < threshold, image, 255 - image)


def autocontrast(image, unused=None):
  """ImageOps.autocontrast (cutoff 0): per channel, stretch [min, max] to [0, 255]."""
  del unused
  low = jnp.min(image, axis=(0, 1)).astype(jnp.int32)
  high = jnp.max(image, axis=(0, 1)).astype(jnp.int32)
  # Exact floor((x - low) * 255 / (high - low)); PIL's float64 version lands one
  # lower for 0.4% of (low, high, x) triples, where the exact value is an integer.
  stretched = (image - low) * 255 // jnp.maximum(high - low, 1)
  return jnp.where(high > low, stretched, image).astype(jnp.uint8)


def _equalize_channel(channel):
  """ImageOps.equalize on one channel [H, W] (PIL's histogram and step rule)."""
  pixels = channel.reshape(-1).astype(jnp.int32)
  histogram = jnp.zeros(256, jnp.int32).at[pixels].add(1)
  top_count = histogram[jnp.max(pixels)]
  step = (pixels.size - top_count) // 255
  below = jnp.cumsum(histogram) - histogram
  lut = jnp.minimum((step // 2 + below) // jnp.maximum(step, 1), 255)
  # step 0 (one grey level, or too few pixels) leaves the channel unchanged, as in PIL.
  equalized = jnp.where(step > 0, lut[pixels], pixels)
  return equalized.reshape(channel.shape).astype(jnp.uint8)


def equalize(image, unused=None):
  """ImageOps.equalize: per-channel histogram equalisation."""
  del unused
  return jax.vmap(_equalize_channel, in_axes=2, out_axes=2)(image)


def invert(image, unused=None):
  """ImageOps.invert."""
  del unused
  return 255 - image


# ---------------------------------------------------------------- the CIFAR-10 policy

# Name -> op, in the order of the reference's `ranges`; lax.switch branches by position.
OPS = {
    'shearX': shear_x, 'shearY': shear_y,
    'translateX': translate_x, 'translateY': translate_y, 'rotate': rotate,
    'color': color, 'posterize': posterize, 'solarize': solarize,
    'contrast': contrast, 'sharpness': sharpness, 'brightness': brightness,
    'autocontrast': autocontrast, 'equalize': equalize, 'invert': invert,
}
_OP_FNS = tuple(OPS.values())
_OP_INDEX = {name: i for i, name in enumerate(OPS)}

# Magnitude index 0..9 -> magnitude, the reference's `ranges`.
MAGNITUDES = {
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
    'autocontrast': np.zeros(10),
    'equalize': np.zeros(10),
    'invert': np.zeros(10),
}

# The 25 CIFAR-10 sub-policies of Cubuk et al. 2018, in the reference's order:
# two (probability, op, magnitude index) steps each.
CIFAR10_POLICY = (
    ((0.1, 'invert', 7), (0.2, 'contrast', 6)),
    ((0.7, 'rotate', 2), (0.3, 'translateX', 9)),
    ((0.8, 'sharpness', 1), (0.9, 'sharpness', 3)),
    ((0.5, 'shearY', 8), (0.7, 'translateY', 9)),
    ((0.5, 'autocontrast', 8), (0.9, 'equalize', 2)),
    ((0.2, 'shearY', 7), (0.3, 'posterize', 7)),
    ((0.4, 'color', 3), (0.6, 'brightness', 7)),
    ((0.3, 'sharpness', 9), (0.7, 'brightness', 9)),
    ((0.6, 'equalize', 5), (0.5, 'equalize', 1)),
    ((0.6, 'contrast', 7), (0.6, 'sharpness', 5)),
    ((0.7, 'color', 7), (0.5, 'translateX', 8)),
    ((0.3, 'equalize', 7), (0.4, 'autocontrast', 8)),
    ((0.4, 'translateY', 3), (0.2, 'sharpness', 6)),
    ((0.9, 'brightness', 6), (0.2, 'color', 8)),
    ((0.5, 'solarize', 2), (0.0, 'invert', 3)),
    ((0.2, 'equalize', 0), (0.6, 'autocontrast', 0)),
    ((0.2, 'equalize', 8), (0.6, 'equalize', 4)),
    ((0.9, 'color', 9), (0.6, 'equalize', 6)),
    ((0.8, 'autocontrast', 4), (0.2, 'solarize', 8)),
    ((0.1, 'brightness', 3), (0.7, 'color', 0)),
    ((0.4, 'solarize', 5), (0.9, 'autocontrast', 3)),
    ((0.9, 'translateY', 9), (0.7, 'translateY', 9)),
    ((0.9, 'autocontrast', 2), (0.8, 'solarize', 3)),
    ((0.8, 'equalize', 8), (0.1, 'invert', 3)),
    ((0.7, 'translateY', 9), (0.9, 'autocontrast', 1)),
)

# Ops whose magnitude the reference flips with probability 0.5. It leaves rotate
# unsigned; we flip it too, as Cubuk et al.'s released code does.
_SIGNED = ('shearX', 'shearY', 'translateX', 'translateY', 'rotate')
_ENHANCE = ('color', 'contrast', 'sharpness', 'brightness')


def op_parameter(name, magnitude, sign):
  """What the reference hands PIL for op `name` at `magnitude` and sign +1 / -1."""
  if name in _SIGNED:
    return sign * magnitude
  if name in _ENHANCE:
    return 1.0 + sign * magnitude
  return magnitude


def _policy_tables(policy):
  """Op index and probability [P, 2], float32 parameter [P, 2, 2] (last axis: +, -)."""
  ops = np.array([[_OP_INDEX[op] for _, op, _ in steps] for steps in policy], np.int32)
  probs = np.array([[p for p, _, _ in steps] for steps in policy], np.float32)
  # In float64 first, so factors such as 1 - 0.7 round once, as PIL's float alpha does.
  params = np.array(
      [[[op_parameter(op, float(MAGNITUDES[op][level]), sign) for sign in (1, -1)]
        for _, op, level in steps] for steps in policy], np.float64)
  return ops, probs, params.astype(np.float32)


_POLICY_OPS, _POLICY_PROBS, _POLICY_PARAMS = _policy_tables(CIFAR10_POLICY)


def _draw_sub_policies(key, batch):
  """Per image: a sub-policy index, whether each of its two steps fires, its signs."""
  policy_key, apply_key, sign_key = jax.random.split(key, 3)
  policy = jax.random.randint(policy_key, (batch,), 0, len(CIFAR10_POLICY))
  apply = jax.random.uniform(apply_key, (batch, 2)) < jnp.asarray(_POLICY_PROBS)[policy]
  negative = jax.random.bernoulli(sign_key, 0.5, (batch, 2)).astype(jnp.int32)
  return policy, apply, negative


def _apply_sub_policy(image, policy, apply, negative):
  """One image through the two steps of sub-policy `policy` (a traced index)."""
  ops = jnp.asarray(_POLICY_OPS)[policy]
  params = jnp.asarray(_POLICY_PARAMS)[policy, jnp.arange(2), negative]
  for step in range(2):
    # Under vmap the switch evaluates every op and selects: one static program.
    changed = jax.lax.switch(ops[step], _OP_FNS, image, params[step])
    image = jnp.where(apply[step], changed, image)
  return image


def autoaugment_cifar10(key, images):
  """The CIFAR-10 AutoAugment policy: one of 25 sub-policies per image, uint8 in and out."""
  policy, apply, negative = _draw_sub_policies(key, images.shape[0])
  return jax.vmap(_apply_sub_policy)(images, policy, apply, negative)


# ---------------------------------------------------------------- training input


def augment_batch(key, images, policy='standard', dtype=jnp.float32,
                  stats=(CIFAR10_MEAN, CIFAR10_STD)):
  """Training input from uint8 images: crop/flip (+ AutoAugment), then normalise.

  'standard': random crop with 4-pixel zero padding and horizontal flip.
  'autoaugment': the same, followed by the CIFAR-10 AutoAugment policy.
  """
  if policy not in POLICIES:
    raise ValueError(
        f'unknown augmentation policy {policy!r}; valid: {", ".join(POLICIES)}')
  crop_key, policy_key = jax.random.split(key)
  images = random_crop_flip(crop_key, images)
  if policy == 'autoaugment':
    images = autoaugment_cifar10(policy_key, images)
  return normalize(images, dtype, stats)
