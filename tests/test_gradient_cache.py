"""Gradient caching (micro_batch_size): the exact whole-batch loss and gradients while projecting
one micro-batch at a time. Two replicas: tests/distributed_check.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from components.simclr_trainer import losses, step as step_lib

N, MICRO, TEMPERATURE = 16, 4, 0.3


def _models(seed=0):
  """A small encoder and head with batch norm (whose statistics make the micro-batches
  visible) and deterministic weights."""
  init = lambda s: keras.initializers.GlorotUniform(seed=seed + s)
  encoder = keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.Conv2D(6, 3, padding='same', use_bias=False,
                                                  kernel_initializer=init(1)),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.GlobalAveragePooling2D()])
  head = keras.Sequential([keras.Input((6,)),
                           keras.layers.Dense(8, use_bias=False, kernel_initializer=init(2)),
                           keras.layers.BatchNormalization(), keras.layers.ReLU(),
                           keras.layers.Dense(4, kernel_initializer=init(3))])
  return encoder, head


def _views(seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(N, 8, 8, 3)).astype(np.float32)
  return tf.constant(a), tf.constant(a + 0.3 * rng.normal(size=a.shape).astype(np.float32))


def _project(encoder, head):
  return lambda x: head(encoder(x, training=True), training=True)


def _reference(encoder, head, view_a, view_b):
  """One tape over the whole batch, each view projected in the same micro-batches, in the same
  order (batch norm normalises each by its own statistics, as the cached step does)."""
  project = _project(encoder, head)
  variables = encoder.trainable_variables + head.trainable_variables
  with tf.GradientTape() as tape:
    pairs = [(project(view_a[i:i + MICRO]), project(view_b[i:i + MICRO]))
             for i in range(0, N, MICRO)]  # a then b, micro-batch by micro-batch
    z_a, z_b = (tf.concat(z, 0) for z in zip(*pairs))
    loss = losses.nt_xent_loss(z_a, z_b, TEMPERATURE)
  return loss, tape.gradient(loss, variables)


def _cached(encoder, head, view_a, view_b):
  stats = encoder.non_trainable_variables + head.non_trainable_variables
  variables = encoder.trainable_variables + head.trainable_variables

  @tf.function
  def run():
    loss, _, _, grads = step_lib.cached_contrastive_gradients(
        _project(encoder, head), variables, stats, view_a, view_b, MICRO,
        lambda z_a, z_b: losses.nt_xent_loss(z_a, z_b, TEMPERATURE), lambda loss: loss)
    return loss, grads
  return run()


def test_cached_loss_gradients_and_batch_norm_statistics_equal_one_tape_over_the_batch():
  views = _views()
  reference_models, cached_models = _models(), _models()
  loss, grads = _reference(*reference_models, *views)
  cached_loss, cached_grads = _cached(*cached_models, *views)
  assert float(cached_loss) == pytest.approx(float(loss), rel=1e-5)
  scale = max(float(tf.reduce_max(tf.abs(g))) for g in grads)
  assert max(float(tf.reduce_max(tf.abs(g - c))) for g, c in zip(grads, cached_grads)) <= (
      1e-5 * scale)
  # One moving-average update per micro-batch of each view, as in the reference: the first
  # pass's updates were put back.
  for model, cached_model in zip(reference_models, cached_models):
    for expected, got in zip(model.non_trainable_variables, cached_model.non_trainable_variables):
      np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_without_batch_norm_the_cached_step_is_the_plain_whole_batch_step():
  """The micro-batches change only batch norm's statistics: with it frozen (every row seen on
  its own), the cached loss and gradients are those of one plain step on the whole batch."""
  view_a, view_b = _views(1)
  encoder, head = _models()
  for model in (encoder, head):
    for layer in model.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
  variables = encoder.trainable_variables + head.trainable_variables
  with tf.GradientTape() as tape:
    plain = losses.nt_xent_loss(head(encoder(view_a)), head(encoder(view_b)), TEMPERATURE)
  grads = tape.gradient(plain, variables)
  cached_loss, cached_grads = _cached(encoder, head, view_a, view_b)
  assert float(cached_loss) == pytest.approx(float(plain), rel=1e-5)
  scale = max(float(tf.reduce_max(tf.abs(g))) for g in grads)
  assert max(float(tf.reduce_max(tf.abs(g - c))) for g, c in zip(grads, cached_grads)) <= (
      1e-5 * scale)


@pytest.mark.parametrize('precision', ['mixed_bfloat16', 'mixed_float16'])
def test_the_train_step_with_micro_batches_trains_under_mixed_precision(precision):
  """The trainer's step under bf16, and float16 with dynamic loss scaling (the cached
  gradients are of the scaled loss, which apply_gradients unscales; a step whose gradients
  overflow is skipped and the scale halved): the float32 step's first loss, finite losses and
  weights that move."""
  from components.simclr_trainer import optim, training
  views = _views(2)
  first = {}
  for name in ('float32', precision):
    keras.utils.set_random_seed(0)
    with training.precision_policy(name):
      encoder, head = _models()
      variables = encoder.trainable_variables + head.trainable_variables
      optimizer = optim.build_optimizer('sgd', 0.1, 0.0, loss_scale=name == 'mixed_float16')
      optimizer.build(variables)
    train_step = step_lib.make_train_step(
        tf.distribute.get_strategy(), encoder, head, optimizer, variables, TEMPERATURE,
        float16=name == 'mixed_float16', micro_batch_size=MICRO)
    before = [v.numpy() for v in variables]
    step_losses = [float(train_step(views)[0]) for _ in range(6)]
    first[name] = step_losses[0]
    assert np.all(np.isfinite(step_losses)), (name, step_losses)
    moved = max(float(np.abs(v.numpy() - b).max()) for v, b in zip(variables, before))
    assert all(np.isfinite(v.numpy()).all() for v in variables) and moved > 0, name
  assert first[precision] == pytest.approx(first['float32'], rel=0.05)


def test_a_batch_that_is_not_a_multiple_of_the_micro_batch_is_refused():
  encoder, head = _models()
  view_a, view_b = _views()
  with pytest.raises(ValueError, match='micro_batch_size'):
    stats = encoder.non_trainable_variables + head.non_trainable_variables
    step_lib.cached_contrastive_gradients(
        _project(encoder, head), encoder.trainable_variables + head.trainable_variables, stats,
        view_a[:14], view_b[:14], MICRO, lambda a, b: losses.nt_xent_loss(a, b, 0.3),
        lambda loss: loss)
