"""Exports the encoder as a SavedModel that TF Serving loads as it is.

`serving_default` takes `images`: a 1-D tf.string batch of encoded image bytes (JPEG, PNG,
BMP); it runs the TFT graph of DualViewTransform (decode, resize, quantise, dataset statistics),
normalises, and returns `embedding` (float32 [B, D]: the encoder's h, or with embedding_stages
> 1 the pooled outputs of its last stages side by side; model.build_embedder) and `projection`
(float32 [B, d], L2-normalised head output z). `serving_examples` takes `examples`, serialized
tf.Example records carrying `image/encoded`, and returns the same. `serving_pixels` takes
`pixels`, float32 [B, S, S, 3] RGB values 0..255 already decoded and resized (what a camera
pipeline or the TFLite export has), and returns `embedding`.

A request to `serving_default` or `serving_examples` holds at most limits.MAX_REQUEST_IMAGES
images whose headers declare at most limits.MAX_REQUEST_PIXELS pixels together; a larger one is
refused with INVALID_ARGUMENT before any image is decoded (check_request), so that a request of
a few small files declaring huge sizes cannot exhaust the model server's memory.

The SavedModel is written to a temporary sibling folder and renamed into place, so a crash
mid-export never leaves a directory that looks like a complete model.
"""
from __future__ import annotations

import os
import uuid

import tensorflow as tf

import schemas
from components import limits
from components.dual_view_transform import augment, preprocessing

SIGNATURE_INPUT = 'images'
EXAMPLES_SIGNATURE, EXAMPLES_INPUT = 'serving_examples', 'examples'
PIXELS_SIGNATURE, PIXELS_INPUT = 'serving_pixels', 'pixels'


class EncoderServingModule(tf.Module):

  def __init__(self, encoder, head, tft_output, image_size: int, embedder):
    """embedder: encoder input -> [embedding, h] (model.build_embedder). The encoder is tracked
    under its own name so that a warm start reads its variables from the SavedModel."""
    super().__init__(name='simclr_encoder')
    self.encoder = encoder
    self.embedder = embedder
    self.head = head
    self.tft_layer = tft_output.transform_features_layer()
    self.image_size = image_size
    self.channel_mean, self.channel_std = channel_statistics(self.tft_layer)
    self.serve_pixels = tf.function(
        self._serve_pixels,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                       name=PIXELS_INPUT)])

  def _serve_pixels(self, pixels):
    """Decoded RGB pixels 0..255, already resized to S x S -> {'embedding'}."""
    batch = tf.shape(pixels)[0]
    mean = tf.broadcast_to(self.channel_mean, [batch, 3])
    std = tf.broadcast_to(self.channel_std, [batch, 3])
    return {'embedding': self.embed_pixels(pixels / 255.0, mean, std)['embedding']}

  def embed_pixels(self, unit_images, mean, std):
    x = augment.normalize(unit_images, tf.reshape(mean, [-1, 1, 1, 3]),
                          tf.reshape(std, [-1, 1, 1, 3]))
    embedding, h = self.embedder(x, training=False)
    z = tf.math.l2_normalize(tf.cast(self.head(h, training=False), tf.float32), axis=1)
    return {'embedding': tf.cast(embedding, tf.float32), 'projection': z}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SIGNATURE_INPUT)])
  def serve(self, images):
    return self._serve_bytes(images)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
  def serve_examples(self, examples):
    """Serialized tf.Example records with `image/encoded` (the ingest schema's contract)."""
    parsed = tf.io.parse_example(examples, {schemas.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return self._serve_bytes(parsed[schemas.IMAGE_KEY])

  def _serve_bytes(self, images):
    features = self.tft_layer(preprocessing.raw_feature_stub(check_request(images)))
    unit = preprocessing.to_unit_images(features[preprocessing.IMAGE], self.image_size)
    return self.embed_pixels(unit, features[preprocessing.CHANNEL_MEAN],
                             features[preprocessing.CHANNEL_STD])


def channel_statistics(tft_layer):
  """(mean, std): the dataset statistics of the TFT graph as constants, for a decoded-pixels
  signature (TFLite has no image decoding, so an edge model starts from pixels)."""
  stats = tft_layer(preprocessing.raw_feature_stub(tf.reshape(
      tf.io.encode_png(tf.zeros([2, 2, 3], tf.uint8)), [1])))
  return (tf.constant(stats[preprocessing.CHANNEL_MEAN][0].numpy()),
          tf.constant(stats[preprocessing.CHANNEL_STD][0].numpy()))


def check_request(images: tf.Tensor) -> tf.Tensor:
  """[B] encoded images -> the same tensor, usable only once the request is within bounds.

  Fails with InvalidArgumentError, before anything is decoded, when the request holds more
  than MAX_REQUEST_IMAGES images or their headers declare more than MAX_REQUEST_PIXELS pixels
  together. Kept out of the TFT graph: a Beam batch of stored images there may be larger than
  one request. An image over MAX_DECODE_PIXELS is not counted here: decode_and_resize refuses
  it by itself, before decoding, with a message naming it that splitting could not cure. The
  other images of a request are then bounded in sum, so decode_and_resize's parallel map
  decodes at most MAX_REQUEST_PIXELS pixels at once, whatever its parallelism."""
  count_ok = tf.debugging.assert_less_equal(
      tf.size(images, out_type=tf.int64), tf.constant(limits.MAX_REQUEST_IMAGES, tf.int64),
      message=f'request too large: more than MAX_REQUEST_IMAGES={limits.MAX_REQUEST_IMAGES} '
              'images; split it into requests of at most that many images')
  with tf.control_dependencies([count_ok]):  # a huge request is refused before its headers
    counted = tf.identity(images)
  declared = tf.map_fn(preprocessing.declared_pixels, counted, fn_output_signature=tf.int64)
  declared = tf.where(declared > limits.MAX_DECODE_PIXELS, tf.zeros_like(declared),
                      declared)
  pixels_ok = tf.debugging.assert_less_equal(
      tf.reduce_sum(declared), tf.constant(limits.MAX_REQUEST_PIXELS, tf.int64),
      message=f'request too large: its images declare more than MAX_REQUEST_PIXELS='
              f'{limits.MAX_REQUEST_PIXELS} pixels together (width x height from their '
              'headers); split it into smaller requests')
  with tf.control_dependencies([pixels_ok]):
    return tf.identity(counted)


def export_serving_model(module, export_dir: str) -> str:
  """Saves a serving module (this encoder's, or the fine-tuned classifier's: each has serve,
  serve_examples and serve_pixels) at export_dir through a staging folder and a rename."""
  parent = os.path.dirname(export_dir.rstrip('/'))
  staging = os.path.join(parent, f'.staging-{uuid.uuid4().hex}')
  tf.saved_model.save(module, staging, signatures={'serving_default': module.serve,
                                                    EXAMPLES_SIGNATURE: module.serve_examples,
                                                    PIXELS_SIGNATURE: module.serve_pixels})
  if tf.io.gfile.exists(export_dir):
    tf.io.gfile.rmtree(export_dir)
  tf.io.gfile.rename(staging, export_dir)
  return export_dir
