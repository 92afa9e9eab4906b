"""LARS against its formula, the learning-rate schedule and scaling rules."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.simclr_trainer import optim


@pytest.mark.parametrize('step,expected', [(0, 0.0), (5, 0.5), (10, 1.0), (55, 0.5), (100, 0.0),
                                           (32.5, 0.5 * (1 + math.cos(math.pi * 0.25)))])
def test_warmup_cosine_values(step, expected):
  assert float(optim.warmup_cosine(step, 1.0, 10, 100)) == pytest.approx(expected, abs=1e-6)


def test_scaling_rules():
  assert optim.scaled_learning_rate(0.3, 512) == pytest.approx(0.6)
  assert optim.scaled_learning_rate(0.075, 256, 'sqrt') == pytest.approx(1.2)
  with pytest.raises(ValueError):
    optim.scaled_learning_rate(1.0, 256, 'cubic')


def test_lars_step_matches_formula_and_skips_bias_and_bn():
  dense = keras.layers.Dense(3, name='fc')
  bn = keras.layers.BatchNormalization(name='bn')
  dense.build((None, 4))
  bn.build((None, 3))
  kernel, bias = dense.kernel, dense.bias
  kernel.assign(np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5)
  bias.assign([0.1, -0.2, 0.3])
  variables = [kernel, bias, bn.gamma]
  w0 = [v.numpy().copy() for v in variables]
  grads = [np.full(v.shape, 0.5, np.float32) for v in variables]
  lr, wd, eta, momentum = 0.1, 1e-2, 0.001, 0.9
  opt = optim.LARS(lr, momentum=momentum, weight_decay=wd, eta=eta)
  for _ in range(2):
    opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))

  # Reference: the SimCLR LARS update, two steps, velocity starting at zero.
  def reference(w, g, adapt):
    v = np.zeros_like(w)
    for _ in range(2):
      grad = g + wd * w if adapt else g
      trust = eta * np.linalg.norm(w) / np.linalg.norm(grad) if adapt else 1.0
      v = momentum * v + lr * trust * grad
      w = w - v
    return w

  np.testing.assert_allclose(kernel.numpy(), reference(w0[0], grads[0], True), rtol=1e-5)
  np.testing.assert_allclose(bias.numpy(), reference(w0[1], grads[1], False), rtol=1e-5)
  np.testing.assert_allclose(bn.gamma.numpy(), reference(w0[2], grads[2], False), rtol=1e-5)
  assert optim.is_excluded_from_decay(bias) and optim.is_excluded_from_decay(bn.beta)
  assert not optim.is_excluded_from_decay(kernel)


def test_every_optimizer_builds_and_float16_gets_loss_scaling():
  schedule = optim.WarmupCosine(0.1, 2, 10)
  for name in ('lars', 'sgd', 'adamw'):
    assert optim.build_optimizer(name, schedule, 1e-6) is not None
  scaled = optim.build_optimizer('lars', schedule, 1e-6, loss_scale=True)
  assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
