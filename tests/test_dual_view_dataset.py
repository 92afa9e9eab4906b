"""dual_view_dataset(): batched two-view input pipeline, deterministic under a seed."""
import os

import numpy as np
import tensorflow as tf

from components.dual_view_transform import dataset, preprocessing
from pipeline.config import PipelineConfig

SIZE = 16


def write_transformed(split_dir, count=40):
  os.makedirs(split_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  path = os.path.join(split_dir, 'transformed_examples-00000-of-00001.gz')
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for i in range(count):
      pixels = rng.integers(0, 256, SIZE * SIZE * 3)
      feature = {
          preprocessing.IMAGE: tf.train.Feature(int64_list=tf.train.Int64List(value=pixels)),
          preprocessing.CHANNEL_MEAN: tf.train.Feature(
              float_list=tf.train.FloatList(value=[0.5, 0.5, 0.5])),
          preprocessing.CHANNEL_STD: tf.train.Feature(
              float_list=tf.train.FloatList(value=[0.25, 0.25, 0.25])),
          preprocessing.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3])),
      }
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())
  return split_dir


def first_batches(split_dir, seed, n=2, start_step=0):
  policy = PipelineConfig(image_size=SIZE).augmentation_policy()
  data = dataset.dual_view_dataset(split_dir, policy, batch_size=8, seed=seed,
                                   start_step=start_step)
  return [tuple(v.numpy() for v in views) for views in data.take(n)]


def test_shapes_normalisation_and_determinism(tmp_path):
  split_dir = write_transformed(str(tmp_path / 'Split-train'))
  assert dataset.count_records(split_dir) == 40
  run_1, run_2 = first_batches(split_dir, seed=1), first_batches(split_dir, seed=1)
  other = first_batches(split_dir, seed=2)
  view_a, view_b = run_1[0]
  assert view_a.shape == view_b.shape == (8, SIZE, SIZE, 3) and view_a.dtype == np.float32
  # Normalised with the stored statistics: (x - 0.5) / 0.25 maps [0, 1] to [-2, 2].
  assert view_a.min() >= -2.0 - 1e-5 and view_a.max() <= 2.0 + 1e-5 and view_a.min() < -0.5
  assert not np.allclose(view_a, view_b)
  for (a1, b1), (a2, b2) in zip(run_1, run_2):
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
  assert not np.allclose(run_1[0][0], other[0][0])


def test_resumed_stream_does_not_repeat_the_first_views(tmp_path):
  split_dir = write_transformed(str(tmp_path / 'Split-train'))
  fresh = first_batches(split_dir, seed=1, n=1)[0][0]
  resumed = first_batches(split_dir, seed=1, n=1, start_step=5)[0][0]
  assert not np.allclose(fresh, resumed)


def test_local_crops_come_with_the_views_when_the_policy_has_them(tmp_path):
  split_dir = write_transformed(str(tmp_path / 'Split-train'))
  policy = PipelineConfig(image_size=SIZE, local_crops=2, local_crop_size=8).augmentation_policy()
  view_a, view_b, local = next(iter(dataset.dual_view_dataset(split_dir, policy, batch_size=8,
                                                              seed=1)))
  assert view_a.shape == view_b.shape == (8, SIZE, SIZE, 3)
  assert local.shape == (8, 2, 8, 8, 3)  # [batch, count, s, s, 3]
  # Normalised like the views: (x - 0.5) / 0.25 maps [0, 1] to [-2, 2].
  assert -2.0 - 1e-5 <= float(tf.reduce_min(local)) < -0.5
  assert float(tf.reduce_max(local)) <= 2.0 + 1e-5
  # The same seed gives the same two views as without local crops.
  plain = first_batches(split_dir, seed=1, n=1)[0]
  np.testing.assert_array_equal(view_a.numpy(), plain[0])
