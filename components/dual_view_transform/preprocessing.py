"""The TensorFlow Transform graph: encoded image bytes -> fixed-size image + dataset statistics.

This exact graph runs twice: over the training data in DualViewTransform (where its analyzers
compute the per-channel mean and std), and inside the serving signature of the pushed model,
so training and serving decode, resize and quantise images identically.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

import schemas

IMAGE = 'image'  # int64 [S*S*3]: resized RGB pixels 0..255, row-major HWC
LABEL = 'label'  # int64: class index, -1 = unlabelled
LABELLED = 'labelled'  # int64: 1 = the label may be used (ImageIngest's labelled fraction)
CHANNEL_MEAN = 'channel_mean'  # float32 [3]: dataset mean of [0, 1] pixels per channel
CHANNEL_STD = 'channel_std'  # float32 [3]


# Serving refuses images whose header declares more pixels than this, before decoding them: one
# request must not be able to exhaust the server's memory. (Ingest applies its own max_pixels.)
MAX_DECODE_PIXELS = 50_000_000


def declared_pixels(data: tf.Tensor) -> tf.Tensor:
  """width x height from the header of one PNG, GIF, BMP or JPEG (0 when not recognised)."""
  head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 32), '\0' * 32]), 0, 32)
  b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

  def be32(i):
    return b[i] * 16777216 + b[i + 1] * 65536 + b[i + 2] * 256 + b[i + 3]

  def le32(i):
    value = b[i] + b[i + 1] * 256 + b[i + 2] * 65536 + b[i + 3] * 16777216
    return tf.where(value >= 2**31, value - 2**32, value)

  is_png = tf.reduce_all(tf.equal(b[:4], [137, 80, 78, 71]))
  is_gif = tf.reduce_all(tf.equal(b[:3], [71, 73, 70]))
  is_bmp = tf.reduce_all(tf.equal(b[:2], [66, 77]))
  is_jpeg = tf.reduce_all(tf.equal(b[:2], [255, 216]))
  png = be32(16) * be32(20)
  gif = (b[6] + b[7] * 256) * (b[8] + b[9] * 256)
  bmp = tf.abs(le32(18)) * tf.abs(le32(22))
  jpeg = tf.cond(is_jpeg, lambda: tf.reduce_prod(tf.cast(
      tf.image.extract_jpeg_shape(data)[:2], tf.int64)), lambda: tf.constant(0, tf.int64))
  return tf.where(is_png, png, tf.where(is_gif, gif, tf.where(is_bmp, bmp, jpeg)))


def decode_and_resize(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """[B] encoded bytes -> float32 [B, S, S, 3] in [0, 1]; the whole frame is resized (kept,
  not cropped) so content at the borders, often where defects are, is never cut off.

  Bad input fails the call with a message naming the problem (empty bytes, a declared size
  over MAX_DECODE_PIXELS, or TF's "Unknown image file format") and leaves nothing behind: the
  next call is served as usual."""

  def one(data):
    checks = [
        tf.debugging.assert_positive(tf.strings.length(data),
                                     message='empty image bytes (0 bytes)'),
        tf.debugging.assert_less_equal(
            declared_pixels(data), tf.constant(MAX_DECODE_PIXELS, tf.int64),
            message=f'image too large: its header declares more than {MAX_DECODE_PIXELS} '
                    'pixels'),
    ]
    with tf.control_dependencies(checks):
      image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, [image_size, image_size],
                            method='bilinear', antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)

  return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec(
      [image_size, image_size, 3], tf.float32))


def preprocessing_fn(inputs, image_size: int):
  encoded = tf.reshape(inputs[schemas.IMAGE_KEY], [-1])
  images = decode_and_resize(encoded, image_size)
  # Quantise to 8 bits: stored views and served images see the same pixels.
  pixels = tf.round(images * 255.0)
  unit = pixels / 255.0
  # All images have the same size, so the mean of per-image means is the dataset mean.
  mean = tft.mean(tf.reduce_mean(unit, axis=[1, 2]), reduce_instance_dims=False)
  mean_sq = tft.mean(tf.reduce_mean(tf.square(unit), axis=[1, 2]), reduce_instance_dims=False)
  std = tf.sqrt(tf.maximum(mean_sq - tf.square(mean), 1e-6))
  batch = tf.shape(encoded)[0]
  outputs = {
      IMAGE: tf.reshape(tf.cast(pixels, tf.int64), [batch, image_size * image_size * 3]),
      CHANNEL_MEAN: tf.zeros([batch, 3]) + mean,
      CHANNEL_STD: tf.zeros([batch, 3]) + std,
  }
  if schemas.LABEL_KEY in inputs:
    outputs[LABEL] = tf.reshape(inputs[schemas.LABEL_KEY], [-1])
  if schemas.LABELLED_KEY in inputs:
    outputs[LABELLED] = tf.reshape(inputs[schemas.LABELLED_KEY], [-1])
  return outputs


def to_unit_images(flat_pixels: tf.Tensor, image_size: int) -> tf.Tensor:
  """Transformed `image` feature -> float32 [B, S, S, 3] in [0, 1]."""
  return tf.reshape(tf.cast(flat_pixels, tf.float32) / 255.0, [-1, image_size, image_size, 3])
