"""The SimCLR augmentation policy as pure, batched TensorFlow functions.

Every op takes a float32 batch [B, H, W, 3] in [0, 1] and draws its randomness per image, but
runs as whole-batch tensor ops (masks and tf.where, never a Python branch per image), so one
call augments a whole batch. Colour ops clip back to [0, 1]; normalisation happens after
augmenting (see `normalize`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

# Plain numbers, not a tensor: importing this module must not start TensorFlow's runtime (a
# multi-worker trainer sets up its collectives first).
_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def _uniform(batch: tf.Tensor, low: float, high: float, seed: tf.Tensor) -> tf.Tensor:
  return tf.random.stateless_uniform([batch], seed, minval=low, maxval=high)


def _bernoulli(batch: tf.Tensor, prob: float, seed: tf.Tensor) -> tf.Tensor:
  return tf.random.stateless_uniform([batch], seed) < prob


def _per_image(mask: tf.Tensor) -> tf.Tensor:
  return tf.reshape(mask, [-1, 1, 1, 1])


def _seeds(seed: tf.Tensor, n: int) -> tf.Tensor:
  return tf.random.experimental.stateless_split(seed, n)


def crop_boxes(batch: tf.Tensor, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *,
               seed: tf.Tensor) -> tf.Tensor:
  """Random crop boxes [B, 4] (y0, x0, y1, x1 in [0, 1]) of area fraction in `scale` and
  aspect ratio in `ratio`. Area and log-aspect are sampled per image; a box that does not fit
  is shrunk to fit (the usual fallback), so the area is never below min(scale[0], 1/ratio[1])."""
  s_area, s_ratio, s_y, s_x = tf.unstack(_seeds(seed, 4))
  area = _uniform(batch, scale[0], scale[1], s_area)
  log_ratio = _uniform(batch, float(tf.math.log(ratio[0])), float(tf.math.log(ratio[1])),
                       s_ratio)
  aspect = tf.exp(log_ratio)  # width / height, in units of the image's own sides
  h = tf.minimum(tf.sqrt(area / aspect), 1.0)
  w = tf.minimum(tf.sqrt(area * aspect), 1.0)
  y0 = tf.random.stateless_uniform([batch], s_y) * (1.0 - h)
  x0 = tf.random.stateless_uniform([batch], s_x) * (1.0 - w)
  return tf.stack([y0, x0, y0 + h, x0 + w], axis=1)


def random_resized_crop(images: tf.Tensor, size: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), *, seed: tf.Tensor) -> tf.Tensor:
  """Crops a random box (see crop_boxes) of every image and resizes it to size x size, in one
  crop_and_resize call for the whole batch."""
  batch = tf.shape(images)[0]
  boxes = crop_boxes(batch, scale, ratio, seed=seed)
  return tf.image.crop_and_resize(images, boxes, tf.range(batch), [size, size])


def random_flip(images: tf.Tensor, *, seed: tf.Tensor) -> tf.Tensor:
  flip = _bernoulli(tf.shape(images)[0], 0.5, seed)
  return tf.where(_per_image(flip), tf.reverse(images, axis=[2]), images)


def to_grayscale(images: tf.Tensor) -> tf.Tensor:
  gray = tf.tensordot(images, tf.constant(_GRAY_WEIGHTS, images.dtype), axes=[[3], [0]])[
      ..., tf.newaxis]
  return tf.tile(gray, [1, 1, 1, 3])


def _brightness(x, f):
  return x * f


def _contrast(x, f):
  mean = tf.reduce_mean(to_grayscale(x), axis=[1, 2, 3], keepdims=True)
  return (x - mean) * f + mean


def _saturation(x, f):
  gray = to_grayscale(x)
  return (x - gray) * f + gray


def _hue(x, delta):
  hsv = tf.image.rgb_to_hsv(x)
  hue = tf.math.floormod(hsv[..., 0:1] + delta, 1.0)
  return tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))


def color_jitter(images: tf.Tensor, strength: float, *, seed: tf.Tensor) -> tf.Tensor:
  """SimCLR colour distortion: brightness, contrast, saturation (0.8 s), hue (0.2 s).

  The four ops run in a random order drawn per image: at each of four positions every image
  applies the op its own permutation names there (all four are computed, a mask picks one).
  """
  batch = tf.shape(images)[0]
  seeds = _seeds(seed, 5)
  b, c, s, h = 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength
  factors = [
      _per_image(_uniform(batch, max(0.0, 1 - b), 1 + b, seeds[0])),
      _per_image(_uniform(batch, max(0.0, 1 - c), 1 + c, seeds[1])),
      _per_image(_uniform(batch, max(0.0, 1 - s), 1 + s, seeds[2])),
      _per_image(_uniform(batch, -h, h, seeds[3])),
  ]
  ops = [_brightness, _contrast, _saturation, _hue]
  # A random permutation of the 4 ops per image: argsort of uniform noise.
  order = tf.argsort(tf.random.stateless_uniform([batch, 4], seeds[4]), axis=1)
  x = images
  for position in range(4):
    op_here = order[:, position]
    out = x
    for op_index, (op, factor) in enumerate(zip(ops, factors)):
      candidate = tf.clip_by_value(op(x, factor), 0.0, 1.0)
      out = tf.where(_per_image(tf.equal(op_here, op_index)), candidate, out)
    x = out
  return x


def random_apply(fn, images: tf.Tensor, prob: float, *, seed: tf.Tensor) -> tf.Tensor:
  """Applies `fn` (a whole-batch op) and keeps its result for a `prob` share of images."""
  s_mask, s_fn = tf.unstack(_seeds(seed, 2))
  mask = _bernoulli(tf.shape(images)[0], prob, s_mask)
  return tf.where(_per_image(mask), fn(images, s_fn), images)


def gaussian_blur(images: tf.Tensor, sigma_range=(0.1, 2.0), kernel_fraction: float = 0.1,
                  *, seed: tf.Tensor) -> tf.Tensor:
  """Separable Gaussian blur with a per-image sigma, as one depthwise convolution.

  The batch is folded into channels ([1, H, W, B*3]) so each image gets its own kernel.
  Kernel size is about `kernel_fraction` of the image side (odd, at least 3).
  """
  size = images.shape[1]
  radius = max(1, int(size * kernel_fraction) // 2)
  batch = tf.shape(images)[0]
  sigma = _uniform(batch, sigma_range[0], sigma_range[1], seed)
  taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  kernel = tf.exp(-tf.square(taps)[tf.newaxis, :] / (2.0 * tf.square(sigma)[:, tf.newaxis]))
  kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, K]
  kernel = tf.repeat(kernel, 3, axis=0)  # [B*3, K], channel order matches the fold below
  folded = tf.transpose(images, [1, 2, 0, 3])  # [H, W, B, 3]
  folded = tf.reshape(folded, [1, tf.shape(images)[1], tf.shape(images)[2], batch * 3])
  k_t = tf.transpose(kernel)  # [K, B*3]
  vertical = k_t[:, tf.newaxis, :, tf.newaxis]
  horizontal = k_t[tf.newaxis, :, :, tf.newaxis]
  out = tf.nn.depthwise_conv2d(folded, vertical, [1, 1, 1, 1], 'SAME')
  out = tf.nn.depthwise_conv2d(out, horizontal, [1, 1, 1, 1], 'SAME')
  out = tf.reshape(out, [tf.shape(images)[1], tf.shape(images)[2], batch, 3])
  return tf.transpose(out, [2, 0, 1, 3])


def solarize(images: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
  """Inverts pixels at or above the threshold (BYOL's solarization)."""
  return tf.where(images < threshold, images, 1.0 - images)


def simclr_view(images: tf.Tensor, policy: Dict[str, Any], seed: tf.Tensor) -> tf.Tensor:
  """One random SimCLR view of every image in the batch, in [0, 1].

  Order as in SimCLR: crop, flip, colour jitter (p), greyscale (p), blur (p); then the optional
  solarize (p).
  """
  seeds = _seeds(seed, 6)
  size = int(policy.get('crop_size') or policy['image_size'])  # the trainer's crop side
  crop = policy['random_resized_crop']
  x = random_resized_crop(images, size, tuple(crop['scale']), tuple(crop['ratio']),
                          seed=seeds[0])
  if policy.get('horizontal_flip'):
    x = random_flip(x, seed=seeds[1])
  jitter = policy['color_jitter']
  if jitter['prob'] > 0 and jitter['strength'] > 0:
    x = random_apply(lambda t, s: color_jitter(t, jitter['strength'], seed=s), x,
                     jitter['prob'], seed=seeds[2])
  if policy['grayscale_prob'] > 0:
    x = random_apply(lambda t, s: to_grayscale(t), x, policy['grayscale_prob'], seed=seeds[3])
  blur = policy['gaussian_blur']
  if blur['prob'] > 0:
    x = random_apply(
        lambda t, s: gaussian_blur(t, tuple(blur['sigma']), blur['kernel_fraction'], seed=s),
        x, blur['prob'], seed=seeds[4])
  sol = policy.get('solarize') or {'prob': 0.0}
  if sol['prob'] > 0:
    x = random_apply(lambda t, s: solarize(t, sol['threshold']), x, sol['prob'], seed=seeds[5])
  return tf.clip_by_value(x, 0.0, 1.0)


def normalize(images: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
  """Per-channel standardisation with the TFT analyzer statistics (training and serving)."""
  return (images - mean) / std


def two_views(images: tf.Tensor, policy: Dict[str, Any], seed: tf.Tensor,
              mean: Optional[tf.Tensor] = None, std: Optional[tf.Tensor] = None):
  s_a, s_b = tf.unstack(_seeds(seed, 2))
  view_a = simclr_view(images, policy, s_a)
  view_b = simclr_view(images, policy, s_b)
  if mean is not None:
    view_a, view_b = normalize(view_a, mean, std), normalize(view_b, mean, std)
  return view_a, view_b


def local_crop_count(policy: Dict[str, Any]) -> int:
  """How many small multi-crop views the policy adds per image (0: plain SimCLR)."""
  return int((policy.get('local_crops') or {}).get('count', 0))


def local_views(images: tf.Tensor, policy: Dict[str, Any], seed: tf.Tensor,
                mean: Optional[tf.Tensor] = None, std: Optional[tf.Tensor] = None) -> tf.Tensor:
  """The policy's local crops: [B, count, size, size, 3], image-major so that splitting the
  batch (tf.distribute) keeps each image's crops with it. Each is a full SimCLR view (flip and
  colour as for the two views) of a smaller box, at the smaller size."""
  local = policy['local_crops']
  small = dict(policy, crop_size=int(local['size']),
               random_resized_crop=dict(policy['random_resized_crop'], scale=local['scale']))
  crops = [simclr_view(images, small, s) for s in tf.unstack(_seeds(seed, int(local['count'])))]
  if mean is not None:
    crops = [normalize(c, mean, std) for c in crops]
  return tf.stack(crops, axis=1)


def training_views(images: tf.Tensor, policy: Dict[str, Any], seed: tf.Tensor,
                   mean: Optional[tf.Tensor] = None, std: Optional[tf.Tensor] = None):
  """(view_a, view_b), plus the local crops as a third element when the policy has them. The
  two views are those of two_views for the same seed, with or without local crops."""
  views = two_views(images, policy, seed, mean, std)
  if not local_crop_count(policy):
    return views
  local_seed = tf.random.experimental.stateless_fold_in(seed, 1)
  return views + (local_views(images, policy, local_seed, mean, std),)
