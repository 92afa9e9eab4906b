"""Learning-rate schedule and optimisers of the SimCLR recipe.

`warmup_cosine` is the pure schedule (linear warmup, then cosine decay to 0); `LARS` is the
layer-wise adaptive optimiser of You et al. as used by SimCLR: momentum 0.9, weight decay added
to the gradient, trust ratio eta * |w| / |g|; biases and batch-norm parameters are excluded from
both decay and adaptation.
"""
from __future__ import annotations

import math

import keras
from keras import ops


def scaled_learning_rate(base: float, batch_size: int, rule: str = 'linear') -> float:
  """SimCLR's scaling rules: linear = base x batch / 256; sqrt = base x sqrt(batch) (better for
  small batches and long training, per the SimCLR paper's appendix)."""
  if rule == 'linear':
    return base * batch_size / 256.0
  if rule == 'sqrt':
    return base * math.sqrt(batch_size)
  raise ValueError(f'unknown learning-rate scaling rule {rule!r}')


def warmup_cosine(step, peak: float, warmup_steps, total_steps):
  """Learning rate at `step` (a number or a tensor): 0 -> peak linearly, then cosine to 0.
  warmup_steps and total_steps may be variables: a time budget sets them after the first steps."""
  step = ops.cast(step, 'float32')
  warmup = ops.maximum(ops.cast(warmup_steps, 'float32'), 0.0)
  total = ops.maximum(ops.cast(total_steps, 'float32'), 1.0)
  warm = peak * step / ops.maximum(warmup, 1.0)
  progress = ops.clip((step - warmup) / ops.maximum(total - warmup, 1.0), 0.0, 1.0)
  cosine = 0.5 * peak * (1.0 + ops.cos(math.pi * progress))
  return ops.where(step < warmup, warm, cosine)


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):

  def __init__(self, peak: float, warmup_steps, total_steps):
    self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps

  def __call__(self, step):
    return warmup_cosine(step, self.peak, self.warmup_steps, self.total_steps)

  def get_config(self):
    return {'peak': self.peak, 'warmup_steps': int(ops.convert_to_numpy(self.warmup_steps)),
            'total_steps': int(ops.convert_to_numpy(self.total_steps))}


def is_excluded_from_decay(variable) -> bool:
  """Biases and batch-norm scale/offset get neither weight decay nor LARS adaptation."""
  name = variable.path if hasattr(variable, 'path') else variable.name
  leaf = name.split('/')[-1].split(':')[0]
  return leaf in ('bias', 'beta', 'gamma')


class LARS(keras.optimizers.Optimizer):
  """LARS with momentum, as in the SimCLR reference implementation (non-Nesterov)."""

  def __init__(self, learning_rate, momentum: float = 0.9, weight_decay: float = 1e-6,
               eta: float = 0.001, name: str = 'lars', **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.momentum = momentum
    self.lars_weight_decay = weight_decay
    self.eta = eta

  def build(self, var_list):
    if self.built:
      return
    super().build(var_list)
    self._momentums = [self.add_variable_from_reference(v, 'momentum') for v in var_list]

  def update_step(self, gradient, variable, learning_rate):
    lr = ops.cast(learning_rate, variable.dtype)
    grad = ops.cast(gradient, variable.dtype)
    velocity = self._momentums[self._get_variable_index(variable)]
    if is_excluded_from_decay(variable):
      scaled_lr = lr
    else:
      grad = grad + self.lars_weight_decay * variable
      w_norm = ops.sqrt(ops.sum(ops.square(variable)))
      g_norm = ops.sqrt(ops.sum(ops.square(grad)))
      trust = ops.where(w_norm > 0,
                        ops.where(g_norm > 0, self.eta * w_norm / g_norm, 1.0), 1.0)
      scaled_lr = lr * trust
    self.assign(velocity, self.momentum * velocity + scaled_lr * grad)
    self.assign_sub(variable, velocity)

  def get_config(self):
    config = super().get_config()
    config.update(momentum=self.momentum, weight_decay=self.lars_weight_decay, eta=self.eta)
    return config


def build_optimizer(name: str, schedule, weight_decay: float, loss_scale: bool = False):
  """`loss_scale` wraps it for float16 training (dynamic loss scaling against underflow)."""
  if name == 'lars':
    optimizer = LARS(schedule, weight_decay=weight_decay)
  elif name == 'sgd':
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
  elif name == 'adamw':
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
  else:
    raise ValueError(f'unknown optimizer {name!r}')
  return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scale else optimizer
