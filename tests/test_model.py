"""Encoder and head architectures: output widths, CIFAR stem vs ImageNet stem, head depth."""
import keras
import numpy as np
import pytest

from components.simclr_trainer import model


@pytest.mark.parametrize('backbone,width,expected_dim', [
    ('resnet_small', 1.0, 128), ('resnet18', 0.5, 256), ('resnet34', 0.25, 128),
    ('resnet50', 0.25, 512),  # bottleneck stages output 4x their base width
])
def test_embedding_width(backbone, width, expected_dim):
  encoder = model.build_encoder(backbone, 32, width)
  assert encoder.output_shape == (None, expected_dim)
  out = encoder(np.zeros([2, 32, 32, 3], np.float32), training=False)
  assert out.shape == (2, expected_dim)


def test_resnet_depths():
  convs = lambda m: sum(isinstance(l, keras.layers.Conv2D) and not l.name.endswith('_proj')
                        for l in m.layers)
  assert convs(model.build_encoder('resnet18', 32, 0.25)) == 17  # stem + 8 blocks x 2
  assert convs(model.build_encoder('resnet34', 32, 0.25)) == 33  # stem + 16 blocks x 2
  assert convs(model.build_encoder('resnet50', 32, 0.25)) == 49  # stem + 16 blocks x 3


def test_cifar_stem_for_small_images_imagenet_stem_for_large():
  small = model.build_encoder('resnet18', 32, 0.25)
  large = model.build_encoder('resnet18', 96, 0.25)
  assert small.get_layer('stem_conv').kernel_size == (3, 3)
  assert small.get_layer('stem_conv').strides == (1, 1)
  assert 'stem_pool' not in [l.name for l in small.layers]
  assert large.get_layer('stem_conv').kernel_size == (7, 7)
  assert 'stem_pool' in [l.name for l in large.layers]


@pytest.mark.parametrize('layers,dense', [(2, 2), (3, 3)])
def test_projection_head_depth_and_output(layers, dense):
  head = model.build_projection_head(64, 128, layers)
  assert sum(isinstance(l, keras.layers.Dense) for l in head.layers) == dense
  assert sum(isinstance(l, keras.layers.BatchNormalization) for l in head.layers) == dense
  assert head.output_shape == (None, 128)


def test_unknown_backbone_is_named():
  with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
    model.build_encoder('vgg', 32)


def test_an_encoder_trained_on_small_crops_serves_at_the_full_size():
  """train_crop_size: the trainer's encoder takes any input side; its weights, copied into the
  fixed-size model that is exported, give the same embeddings at image_size."""
  flexible = model.build_encoder('resnet_small', 32, 0.5, any_input_size=True)
  assert flexible(np.zeros((2, 24, 24, 3), np.float32)).shape == (2, 64)
  fixed = model.build_encoder('resnet_small', 32, 0.5)
  fixed.set_weights(flexible.get_weights())
  x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(fixed(x, training=False), flexible(x, training=False), atol=1e-5)
  with pytest.raises(ValueError):
    fixed(np.zeros((1, 24, 24, 3), np.float32))


def test_multi_stage_embedding_is_the_pooled_stages_side_by_side():
  """embedding_stages=k: the last k stages' global average pools, concatenated, with h (what
  the head trains on) last; k=1 is h itself. No new weights."""
  encoder = model.build_encoder('resnet18', 32, 0.25)
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  h = encoder(x, training=False).numpy()
  same, h1 = model.build_embedder(encoder, 'resnet18', 1)(x, training=False)
  np.testing.assert_allclose(same, h, atol=1e-6)
  np.testing.assert_allclose(h1, h, atol=1e-6)
  embedder = model.build_embedder(encoder, 'resnet18', 3)
  assert not embedder.weights[len(encoder.weights):]  # the encoder's weights, nothing new
  embedding, h3 = embedder(x, training=False)
  assert embedding.shape == (2, 32 + 64 + 128)  # stages 2, 3, 4 of resnet18 x0.25
  stage3 = keras.Model(encoder.input, encoder.get_layer('s3b2_out').output)(x, training=False)
  np.testing.assert_allclose(embedding[:, 32:96], np.mean(stage3, axis=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(embedding[:, 96:], h, atol=1e-6)
  np.testing.assert_allclose(h3, h, atol=1e-6)
  assert model.build_embedder(model.build_encoder('resnet_small', 32, 0.5), 'resnet_small',
                              3).output_shape[0] == (None, 16 + 32 + 64)
  with pytest.raises(ValueError, match='embedding_stages must be 1..3 for resnet_small'):
    model.build_embedder(model.build_encoder('resnet_small', 32), 'resnet_small', 4)


def test_avg_max_embedding_adds_each_stages_max_pool_after_the_average_pools():
  """embedding_pool=avg_max: the average pools as with avg (h last among them), then the same
  stages' global max pools; still no new weights, and h (what the head trains on) unchanged."""
  encoder = model.build_encoder('resnet18', 32, 0.25)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  h = encoder(x, training=False).numpy()
  embedder = model.build_embedder(encoder, 'resnet18', 2, 'avg_max')
  assert not embedder.weights[len(encoder.weights):]
  embedding, h2 = embedder(x, training=False)
  assert embedding.shape == (2, 2 * (64 + 128))
  stage3, stage4 = keras.Model(encoder.input, [encoder.get_layer('s3b2_out').output,
                                               encoder.get_layer('s4b2_out').output])(
                                                   x, training=False)
  np.testing.assert_allclose(embedding[:, :64], np.mean(stage3, axis=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(embedding[:, 64:192], h, atol=1e-6)
  np.testing.assert_allclose(embedding[:, 192:256], np.max(stage3, axis=(1, 2)), atol=1e-6)
  np.testing.assert_allclose(embedding[:, 256:], np.max(stage4, axis=(1, 2)), atol=1e-6)
  np.testing.assert_allclose(h2, h, atol=1e-6)
  # One stage: h, then the last stage's max pool.
  one, _ = model.build_embedder(encoder, 'resnet18', 1, 'avg_max')(x, training=False)
  np.testing.assert_allclose(one, np.concatenate([h, np.max(stage4, axis=(1, 2))], 1), atol=1e-6)
  with pytest.raises(ValueError, match="embedding pool must be one of"):
    model.build_embedder(encoder, 'resnet18', 2, 'sum')
