"""The SimCLR augmentation policy: shapes, value ranges, per-image randomness, determinism."""
import numpy as np
import pytest
import tensorflow as tf

from components.dual_view_transform import augment
from pipeline.config import PipelineConfig


def policy(**changes):
  settings = {'image_size': 24, 'hflip': True, 'blur_prob': 0.5, **changes}
  return PipelineConfig(**settings).augmentation_policy()


def images(batch=16, size=24, seed=0):
  return tf.constant(np.random.default_rng(seed).uniform(size=(batch, size, size, 3)),
                     tf.float32)


def test_two_views_shapes_range_and_difference():
  x = images()
  view_a, view_b = augment.two_views(x, policy(), tf.constant([1, 2]))
  assert view_a.shape == view_b.shape == (16, 24, 24, 3)
  for view in (view_a, view_b):
    assert float(tf.reduce_min(view)) >= 0.0 and float(tf.reduce_max(view)) <= 1.0
  assert float(tf.reduce_mean(tf.abs(view_a - view_b))) > 0.01  # two different random views


def test_output_size_can_differ_from_input():
  view = augment.simclr_view(images(size=40), policy(), tf.constant([0, 1]))
  assert view.shape == (16, 24, 24, 3)


def test_training_crops_can_be_smaller_than_the_served_size():
  config = PipelineConfig(image_size=24, train_crop_size=16)
  assert config.augmentation_policy()['crop_size'] == 16
  view_a, view_b = augment.two_views(images(), config.augmentation_policy(), tf.constant([1, 2]))
  assert view_a.shape == view_b.shape == (16, 16, 16, 3)
  assert PipelineConfig(image_size=24).augmentation_policy()['crop_size'] == 24


def test_deterministic_under_seed_and_varies_with_seed():
  x = images()
  first = augment.simclr_view(x, policy(), tf.constant([5, 6]))
  again = augment.simclr_view(x, policy(), tf.constant([5, 6]))
  other = augment.simclr_view(x, policy(), tf.constant([5, 7]))
  np.testing.assert_array_equal(first.numpy(), again.numpy())
  assert not np.allclose(first.numpy(), other.numpy())


def test_normalize_after_augment_uses_statistics():
  mean, std = tf.constant([0.5, 0.4, 0.3]), tf.constant([0.2, 0.2, 0.25])
  view_a, _ = augment.two_views(images(), policy(), tf.constant([1, 2]), mean, std)
  assert float(tf.reduce_min(view_a)) < 0.0  # standardised, no longer in [0, 1]


def test_random_resized_crop_area_follows_scale():
  # A horizontal ramp: the crop's value spread tells how wide the crop was.
  ramp = tf.tile(tf.linspace(0.0, 1.0, 64)[tf.newaxis, tf.newaxis, :, tf.newaxis], [256, 64, 1, 3])
  small = augment.random_resized_crop(ramp, 16, scale=(0.05, 0.06), seed=tf.constant([0, 1]))
  full = augment.random_resized_crop(ramp, 16, scale=(1.0, 1.0), seed=tf.constant([0, 1]))
  width_small = tf.reduce_max(small, [1, 2, 3]) - tf.reduce_min(small, [1, 2, 3])
  width_full = tf.reduce_max(full, [1, 2, 3]) - tf.reduce_min(full, [1, 2, 3])
  assert float(tf.reduce_max(width_small)) < 0.5
  # Full area with aspect ratio r in [3/4, 4/3]: the box is at least sqrt(3/4) wide.
  assert float(tf.reduce_min(width_full)) > np.sqrt(3 / 4) - 0.02
  # Crops land at different places for different images.
  assert float(tf.math.reduce_std(tf.reduce_mean(small, [1, 2, 3]))) > 0.05


def test_grayscale_probability_and_equal_channels():
  x = images(batch=400)
  p = policy(color_jitter_prob=0.0, grayscale_prob=0.2, blur_prob=0.0)
  p['random_resized_crop']['scale'] = [1.0, 1.0]
  view = augment.simclr_view(x, p, tf.constant([3, 4]))
  channel_spread = tf.reduce_max(tf.math.reduce_std(view, axis=3), axis=[1, 2])
  gray_share = float(tf.reduce_mean(tf.cast(channel_spread < 1e-6, tf.float32)))
  assert 0.12 < gray_share < 0.28


def test_color_jitter_is_applied_per_image_with_probability():
  x = tf.fill([400, 8, 8, 3], 0.5) + tf.constant([0.1, -0.1, 0.0])
  jittered = augment.random_apply(
      lambda t, s: augment.color_jitter(t, 1.0, seed=s), x, 0.8, seed=tf.constant([7, 8]))
  changed = tf.reduce_max(tf.abs(jittered - x), axis=[1, 2, 3]) > 1e-4
  share = float(tf.reduce_mean(tf.cast(changed, tf.float32)))
  assert 0.7 < share < 0.9
  assert float(tf.reduce_min(jittered)) >= 0.0 and float(tf.reduce_max(jittered)) <= 1.0


def test_color_jitter_order_is_random_per_image():
  # Brightness then contrast differs from contrast then brightness on this image; with a
  # per-image random order, identical images with identical factors would still differ.
  x = tf.tile(tf.constant([[[[0.2, 0.6, 0.9]]]]), [64, 4, 4, 1])
  out = augment.color_jitter(x, 0.5, seed=tf.constant([1, 1]))
  assert out.shape == x.shape
  assert len(np.unique(np.round(out.numpy()[:, 0, 0, 0], 5))) > 32


def test_gaussian_blur_keeps_constant_images_and_smooths_noise():
  constant = tf.fill([4, 32, 32, 3], 0.3)
  blurred = augment.gaussian_blur(constant, seed=tf.constant([0, 0]))
  np.testing.assert_allclose(blurred.numpy()[:, 4:-4, 4:-4], 0.3, atol=1e-5)
  noise = images(batch=4, size=32)
  smooth = augment.gaussian_blur(noise, sigma_range=(1.5, 2.0), seed=tf.constant([0, 0]))
  assert float(tf.math.reduce_std(smooth)) < 0.6 * float(tf.math.reduce_std(noise))


def test_runs_inside_tf_function_with_unknown_batch():
  fn = tf.function(lambda x, s: augment.simclr_view(x, policy(), s),
                   input_signature=[tf.TensorSpec([None, 24, 24, 3]), tf.TensorSpec([2], tf.int32)])
  assert fn(images(batch=3), tf.constant([1, 1])).shape == (3, 24, 24, 3)


def test_crop_boxes_area_and_ratio_within_bounds():
  boxes = augment.crop_boxes(20000, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                             seed=tf.constant([9, 9])).numpy()
  h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  area = h * w
  assert (boxes >= 0).all() and (boxes <= 1.0 + 1e-6).all()
  assert area.min() >= 0.08 - 1e-6 and area.max() <= 1.0 + 1e-6
  unclipped = (h < 1.0) & (w < 1.0)
  ratio = w[unclipped] / h[unclipped]
  assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
  # Area is drawn uniformly in [0.08, 1]; the fit fallback only trims the largest boxes.
  assert 0.5 < float(np.median(area)) < 0.6
  assert np.mean(area < 0.3) == pytest.approx((0.3 - 0.08) / 0.92, abs=0.02)


def test_color_jitter_changes_colour_not_geometry():
  # Jitter is a per-image colour map: pixels of the same colour stay identical to each other
  # (nothing moves, nothing blurs), while the colours themselves change.
  x = np.zeros([64, 16, 16, 3], np.float32)
  x[:, :, :8] = [0.8, 0.3, 0.2]  # left half one colour
  x[:, :, 8:] = [0.1, 0.5, 0.7]  # right half another
  out = augment.color_jitter(tf.constant(x), 0.5, seed=tf.constant([2, 3])).numpy()
  assert np.abs(out - x).mean() > 0.01
  left, right = out[:, :, :8].reshape(64, -1, 3), out[:, :, 8:].reshape(64, -1, 3)
  assert np.abs(left - left[:, :1]).max() < 1e-5 and np.abs(right - right[:, :1]).max() < 1e-5


def test_solarize_inverts_bright_pixels_only():
  x = tf.constant([[[[0.2, 0.5, 0.9]]]])
  np.testing.assert_allclose(augment.solarize(x).numpy(), [[[[0.2, 0.5, 0.1]]]], atol=1e-6)
  p = policy(solarize_prob=1.0, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  assert p['solarize']['prob'] == 1.0


def test_blur_is_off_at_small_sizes_by_default():
  assert PipelineConfig(image_size=32).augmentation_policy()['gaussian_blur']['prob'] == 0.0
  assert PipelineConfig(image_size=96).augmentation_policy()['gaussian_blur']['prob'] == 0.5
  small_with_blur = PipelineConfig(image_size=32, blur_at_small_sizes=True)
  assert small_with_blur.augmentation_policy()['gaussian_blur']['prob'] == 0.5


def test_gaussian_kernel_is_about_a_tenth_of_the_side():
  # An impulse spreads over about 10% of the side (kernel radius = side * 0.1 // 2).
  impulse = np.zeros([1, 100, 100, 3], np.float32)
  impulse[0, 50, 50] = 1.0
  out = augment.gaussian_blur(tf.constant(impulse), sigma_range=(50.0, 50.0),
                              seed=tf.constant([0, 0])).numpy()
  support = np.nonzero(out[0, 50, :, 0] > 1e-6)[0]
  assert support.max() - support.min() + 1 == 11


def test_local_crops_are_small_views_of_each_image_and_leave_the_two_views_unchanged():
  config = PipelineConfig(image_size=24, train_crop_size=16, hflip=True, local_crops=3,
                          local_crop_size=8, local_crop_scale_min=0.1, local_crop_scale_max=0.4)
  with_local = config.augmentation_policy()
  assert with_local['local_crops'] == {'count': 3, 'size': 8, 'scale': [0.1, 0.4]}
  plain = PipelineConfig(image_size=24, train_crop_size=16, hflip=True).augmentation_policy()
  assert 'local_crops' not in plain  # earlier policies (and their run fingerprints) unchanged
  x, seed = images(), tf.constant([1, 2])
  view_a, view_b, local = augment.training_views(x, with_local, seed)
  assert local.shape == (16, 3, 8, 8, 3)  # image-major: a batch split keeps crops with images
  assert float(tf.reduce_min(local)) >= 0.0 and float(tf.reduce_max(local)) <= 1.0
  reference_a, reference_b = augment.two_views(x, plain, seed)
  np.testing.assert_array_equal(view_a.numpy(), reference_a.numpy())
  np.testing.assert_array_equal(view_b.numpy(), reference_b.numpy())
  assert len(augment.training_views(x, plain, seed)) == 2
  # Each image's crops come from that image: with the colour ops off, a crop of a constant
  # image is that image's constant.
  values = np.linspace(0.1, 0.9, 16)
  flat = tf.constant(values[:, None, None, None] * np.ones((16, 24, 24, 3)), tf.float32)
  colourless = dict(with_local, color_jitter={**with_local['color_jitter'], 'prob': 0.0},
                    grayscale_prob=0.0)
  crops = augment.training_views(flat, colourless, seed)[2].numpy()
  np.testing.assert_allclose(crops, np.broadcast_to(values[:, None, None, None, None],
                                                    crops.shape), atol=1e-5)
  # Three different crops per image, and normalised like the views when statistics are given.
  assert float(tf.reduce_mean(tf.abs(local[:, 0] - local[:, 1]))) > 0.01
  mean, std = tf.constant([0.5, 0.4, 0.3]), tf.constant([0.2, 0.2, 0.25])
  normalised = augment.training_views(x, with_local, seed, mean, std)[2]
  np.testing.assert_allclose(normalised.numpy(), ((local - mean) / std).numpy(), atol=1e-5)


def test_local_crops_cover_their_scale_of_the_image_and_the_views_theirs():
  config = PipelineConfig(image_size=24, train_crop_size=16, local_crops=2, local_crop_size=8,
                          local_crop_scale_min=0.1, local_crop_scale_max=0.4,
                          color_jitter_prob=0.0, grayscale_prob=0.0)
  # Pixel value = x / 23: a crop's range of values is its box's width as a share of the image.
  ramp = np.broadcast_to(np.linspace(0.0, 1.0, 24)[None, None, :, None], (300, 24, 24, 3))
  view_a, _, local = augment.training_views(tf.constant(ramp, tf.float32),
                                            config.augmentation_policy(), tf.constant([3, 4]))
  width = lambda v: v.max(axis=(-3, -2, -1)) - v.min(axis=(-3, -2, -1))
  local_width, view_width = width(local.numpy()), width(view_a.numpy())
  # Area in [0.1, 0.4] and aspect in [3/4, 4/3]: width = sqrt(area * aspect).
  assert local_width.min() >= np.sqrt(0.1 * 3 / 4) - 1e-4
  assert local_width.max() <= np.sqrt(0.4 * 4 / 3) + 1e-4
  assert view_width.max() > 0.9  # the two views keep their own scale [0.2, 1]
