"""dual_view_dataset(): transformed examples -> batches of two normalised SimCLR views.

Decoded images are cached once as uint8; each epoch shuffles, batches, and augments whole
batches at once (augment.two_views is vectorised), with tf.data AUTOTUNE and prefetch. Seeds are
stateless and derived from (seed, batch index), so the same seed and start step give the same
views on every run, including a resumed one.
"""
from __future__ import annotations

import os
from typing import Any, Dict

import tensorflow as tf

from components import io_utils
from components.dual_view_transform import augment, contract, preprocessing


def _parse_fn(image_size: int, with_sha256: bool):
  spec = {
      preprocessing.IMAGE: tf.io.FixedLenFeature([image_size * image_size * 3], tf.int64),
      preprocessing.CHANNEL_MEAN: tf.io.FixedLenFeature([3], tf.float32),
      preprocessing.CHANNEL_STD: tf.io.FixedLenFeature([3], tf.float32),
      preprocessing.LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
      preprocessing.LABELLED: tf.io.FixedLenFeature([], tf.int64, default_value=0),
  }
  if with_sha256:  # '' in records of a transform older than the pass-through
    spec[preprocessing.SHA256] = tf.io.FixedLenFeature([], tf.string, default_value='')

  def parse(record):
    features = tf.io.parse_single_example(record, spec)
    image = tf.reshape(tf.cast(features[preprocessing.IMAGE], tf.uint8),
                       [image_size, image_size, 3])
    parsed = {'image': image, 'mean': features[preprocessing.CHANNEL_MEAN],
              'std': features[preprocessing.CHANNEL_STD], 'label': features[preprocessing.LABEL],
              'labelled': features[preprocessing.LABELLED]}
    if with_sha256:
      parsed['sha256'] = features[preprocessing.SHA256]
    return parsed

  return parse


def load_transformed(split_uri: str, image_size: int,
                     with_sha256: bool = False) -> tf.data.Dataset:
  """Unbatched, decoded records of one split of the transformed examples (with each image's
  content hash as `sha256` when asked)."""
  files = io_utils.split_files(split_uri)
  return (tf.data.TFRecordDataset(files, compression_type='GZIP')
          .map(_parse_fn(image_size, with_sha256), num_parallel_calls=tf.data.AUTOTUNE))


def count_records(split_uri: str) -> int:
  files = io_utils.split_files(split_uri)
  return int(tf.data.TFRecordDataset(files, compression_type='GZIP').reduce(
      tf.constant(0, tf.int64), lambda n, _: n + 1))


def dual_view_dataset(split_uri: str, policy: Dict[str, Any], batch_size: int, seed: int,
                      start_step: int = 0) -> tf.data.Dataset:
  """Endless dataset of (view_a, view_b), each float32 [batch, S, S, 3], normalised; with the
  policy's local crops, (view_a, view_b, local crops [batch, count, s, s, 3])."""
  image_size = int(policy['image_size'])
  records = load_transformed(split_uri, image_size).cache()
  batches = (records
             .repeat()
             .shuffle(10_000, seed=seed + start_step, reshuffle_each_iteration=True)
             .batch(batch_size, drop_remainder=True))
  indexed = tf.data.Dataset.zip((batches, tf.data.Dataset.counter(start=start_step)))

  def make_views(batch, index):
    images = tf.cast(batch['image'], tf.float32) / 255.0
    mean = tf.reshape(batch['mean'], [-1, 1, 1, 3])
    std = tf.reshape(batch['std'], [-1, 1, 1, 3])
    step_seed = tf.stack([tf.constant(seed, tf.int64), index])
    return augment.training_views(images, policy, step_seed, mean, std)

  return (indexed.map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


def labelled_images(split_uri: str, image_size: int, limit: int):
  """(normalised images float32 [n, S, S, 3], labels [n]) of up to `limit` records whose label
  may be used, un-augmented: the kNN monitor's bank and queries."""
  data = (load_transformed(split_uri, image_size)
          .filter(lambda r: (r['label'] >= 0) & (r['labelled'] == 1))
          .take(limit)
          .batch(512)
          .map(lambda b: (augment.normalize(tf.cast(b['image'], tf.float32) / 255.0,
                                            tf.reshape(b['mean'], [-1, 1, 1, 3]),
                                            tf.reshape(b['std'], [-1, 1, 1, 3])), b['label'])))
  images, labels = [], []
  for x, y in data:
    images.append(x)
    labels.append(y)
  if not images:
    return None, None
  return tf.concat(images, 0), tf.concat(labels, 0).numpy()


def read_policy(transform_graph_uri: str) -> dict:
  return io_utils.read_json(os.path.join(transform_graph_uri, contract.POLICY_FILE))
