"""The TensorFlow Transform graph: encoded image bytes -> fixed-size image + dataset statistics.

This exact graph runs twice: over the training data in DualViewTransform (where its analyzers
compute the per-channel mean and std), and inside the serving signature of the pushed model,
so training and serving decode, resize and quantise images identically.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

import schemas
from components.limits import MAX_DECODE_PIXELS

IMAGE = 'image'  # int64 [S*S*3]: resized RGB pixels 0..255, row-major HWC
LABEL = 'label'  # int64: class index, -1 = unlabelled
LABELLED = 'labelled'  # int64: 1 = the label may be used (ImageIngest's labelled fraction)
CHANNEL_MEAN = 'channel_mean'  # float32 [3]: dataset mean of [0, 1] pixels per channel
CHANNEL_STD = 'channel_std'  # float32 [3]
SHA256 = 'sha256'  # string: the source image's content hash (ImageIngest), passed through so that
# a labelled subset chosen in content-hash order is the same set in every component


def declared_pixels(data: tf.Tensor) -> tf.Tensor:
  """width x height that decoding one image allocates, read from its header: PNG, BMP, JPEG.

  0 for every other input, so that decode_and_resize refuses it before decoding: the header of
  a GIF declares a logical screen, but TF decodes its frames at their own sizes, which can be
  far larger (and reads every frame); WebP and JPEG XL, which TF also decodes, are not parsed
  here. PNG sides count at most 2**31 each (the PNG maximum), so the product fits in int64."""
  head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 32), '\0' * 32]), 0, 32)
  b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

  def be32(i):
    return b[i] * 16777216 + b[i + 1] * 65536 + b[i + 2] * 256 + b[i + 3]

  def le32(i):
    value = b[i] + b[i + 1] * 256 + b[i + 2] * 65536 + b[i + 3] * 16777216
    return tf.where(value >= 2**31, value - 2**32, value)

  is_png = tf.reduce_all(tf.equal(b[:4], [137, 80, 78, 71]))
  is_bmp = tf.reduce_all(tf.equal(b[:2], [66, 77]))
  is_jpeg = tf.reduce_all(tf.equal(b[:2], [255, 216]))
  png = tf.minimum(be32(16), 2**31) * tf.minimum(be32(20), 2**31)
  bmp = tf.abs(le32(18)) * tf.abs(le32(22))
  jpeg = tf.cond(is_jpeg, lambda: tf.reduce_prod(tf.cast(
      tf.image.extract_jpeg_shape(data)[:2], tf.int64)), lambda: tf.constant(0, tf.int64))
  return tf.where(is_png, png, tf.where(is_bmp, bmp, jpeg))


def decode_and_resize(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """[B] encoded bytes -> float32 [B, S, S, 3] in [0, 1]; the whole frame is resized (kept,
  not cropped) so content at the borders, often where defects are, is never cut off.

  Bad input fails the call before anything is decoded, with a message naming the problem (empty
  bytes; an unknown format, i.e. not PNG, JPEG or BMP, whose header bounds what decoding
  allocates; a declared size over MAX_DECODE_PIXELS), or with TF's decoding error for corrupt
  data, and leaves nothing behind: the next call is served as usual. Stored images are PNG or
  JPEG (ingest re-encodes every other format), so only serving requests meet these refusals."""

  def one(data):
    not_empty = tf.debugging.assert_positive(tf.strings.length(data),
                                             message='empty image bytes (0 bytes)')
    with tf.control_dependencies([not_empty]):  # empty bytes get their own message
      pixels = declared_pixels(data)
    checks = [
        tf.debugging.assert_positive(
            pixels, message='Unknown image file format: send PNG, JPEG or BMP (GIF, WebP and '
                            'JPEG XL are refused: convert them to PNG)'),
        tf.debugging.assert_less_equal(
            pixels, tf.constant(MAX_DECODE_PIXELS, tf.int64),
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
  if schemas.SHA256_KEY in inputs:
    outputs[SHA256] = tf.reshape(inputs[schemas.SHA256_KEY], [-1])
  return outputs


def to_unit_images(flat_pixels: tf.Tensor, image_size: int) -> tf.Tensor:
  """Transformed `image` feature -> float32 [B, S, S, 3] in [0, 1]."""
  return tf.reshape(tf.cast(flat_pixels, tf.float32) / 255.0, [-1, image_size, image_size, 3])


def raw_feature_stub(encoded_images):
  """Raw features for the transform layer when only image bytes are known (serving)."""
  unlabelled = tf.fill(tf.shape(encoded_images), tf.constant(-1, tf.int64))
  return {schemas.IMAGE_KEY: encoded_images, schemas.LABEL_KEY: unlabelled,
          schemas.LABELLED_KEY: tf.zeros_like(unlabelled)}


def transform_raw_images(tft_output, encoded_images):
  layer = tft_output.transform_features_layer()
  return layer(raw_feature_stub(encoded_images))
