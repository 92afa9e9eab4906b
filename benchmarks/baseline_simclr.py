"""The straightforward SimCLR that tutorials and the seed article write, as the speed baseline.

Per-image tf.image augmentation inside dataset.map, a plain Keras ResNet-18 (CIFAR stem), the
NT-Xent loss written directly, one @tf.function step, float32, SGD with momentum. Nothing here
is used by the product; it exists to be measured against it on the same data and batch.
"""
from __future__ import annotations

# Keras 3, the same Keras as the product's model: `tf.keras` turns into Keras 2 (tf_keras) in a
# process that has imported tensorflow_transform, which sets TF_USE_LEGACY_KERAS=1.
import keras
import numpy as np
import tensorflow as tf

layers = keras.layers


def augment_one(image):
  """One random view of one float32 [S, S, 3] image in [0, 1]."""
  size = tf.shape(image)[0]
  begin, extent, _ = tf.image.sample_distorted_bounding_box(
      tf.shape(image), tf.zeros([1, 0, 4]), min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.2, 1.0), max_attempts=20,
      use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, extent)
  image = tf.image.resize(image, [size, size])
  image = tf.image.random_flip_left_right(image)
  if tf.random.uniform([]) < 0.8:
    image = tf.image.random_brightness(image, 0.4)
    image = tf.image.random_contrast(image, 0.6, 1.4)
    image = tf.image.random_saturation(image, 0.6, 1.4)
    image = tf.image.random_hue(image, 0.1)
  if tf.random.uniform([]) < 0.2:
    image = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
  return tf.clip_by_value(image, 0.0, 1.0)


def dataset(pixels: np.ndarray, batch_size: int) -> tf.data.Dataset:
  images = tf.data.Dataset.from_tensor_slices(pixels).map(
      lambda x: tf.cast(x, tf.float32) / 255.0)
  return (images.repeat().shuffle(10_000)
          .map(lambda x: (augment_one(x), augment_one(x)), num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def _block(x, channels, stride):
  shortcut = x
  x = layers.Conv2D(channels, 3, stride, padding='same', use_bias=False)(x)
  x = layers.BatchNormalization()(x)
  x = layers.ReLU()(x)
  x = layers.Conv2D(channels, 3, 1, padding='same', use_bias=False)(x)
  x = layers.BatchNormalization()(x)
  if stride != 1 or shortcut.shape[-1] != channels:
    shortcut = layers.Conv2D(channels, 1, stride, use_bias=False)(shortcut)
    shortcut = layers.BatchNormalization()(shortcut)
  return layers.ReLU()(x + shortcut)


def resnet18(image_size: int, width: float = 1.0) -> keras.Model:
  channels = [int(c * width) for c in (64, 128, 256, 512)]
  inputs = keras.Input((image_size, image_size, 3))
  x = layers.Conv2D(channels[0], 3, 1, padding='same', use_bias=False)(inputs)
  x = layers.ReLU()(layers.BatchNormalization()(x))
  for stage, c in enumerate(channels):
    for block in range(2):
      x = _block(x, c, 2 if (stage > 0 and block == 0) else 1)
  return keras.Model(inputs, layers.GlobalAveragePooling2D()(x))


def nt_xent(z_a, z_b, temperature=0.5):
  z = tf.math.l2_normalize(tf.concat([z_a, z_b], 0), axis=1)
  n = tf.shape(z_a)[0]
  logits = tf.matmul(z, z, transpose_b=True) / temperature
  logits -= tf.eye(2 * n) * 1e9
  labels = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], 0)
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def build(image_size: int, width: float = 1.0):
  """(train_step(view_a, view_b) -> loss, encoder, head)."""
  encoder = resnet18(image_size, width)
  dim = encoder.output_shape[-1]
  head = keras.Sequential([keras.Input((dim,)), layers.Dense(dim, activation='relu'),
                           layers.Dense(128)])
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  variables = encoder.trainable_variables + head.trainable_variables

  @tf.function
  def train_step(view_a, view_b):
    with tf.GradientTape() as tape:
      loss = nt_xent(head(encoder(view_a, training=True)), head(encoder(view_b, training=True)))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  return train_step, encoder, head
