"""The SimCLR train step: both views through f and g, NT-Xent (or its decoupled form), one
optimiser update.

Built here, outside the executor, so the benchmark times exactly the step the trainer runs.
"""
from __future__ import annotations

import tensorflow as tf

from components.simclr_trainer import losses


def make_train_step(strategy: tf.distribute.Strategy, encoder, head, optimizer, variables,
                    temperature: float, *, queue=None, queue_filled=None, queue_size: int = 0,
                    float16: bool = False, jit_compile: bool = False,
                    contrastive_loss: str = 'nt_xent'):
  """Returns train_step(views) -> (mean loss, mean contrastive accuracy, gradient norm), a
  tf.function over a distributed batch of (view_a, view_b)."""
  replicas = strategy.num_replicas_in_sync
  if contrastive_loss not in losses.CONTRASTIVE_LOSSES:
    raise ValueError(f'contrastive_loss must be one of {losses.CONTRASTIVE_LOSSES}, '
                     f'got {contrastive_loss!r}')
  decoupled = contrastive_loss == 'dcl'

  def replica_step(view_a, view_b):
    with tf.GradientTape() as tape:
      z_a = head(encoder(view_a, training=True), training=True)
      z_b = head(encoder(view_b, training=True), training=True)
      negatives = queue[:queue_filled] if queue_size else None
      loss = losses.nt_xent_loss(z_a, z_b, temperature, negatives=negatives,
                                 decoupled=decoupled)
      scaled = loss / replicas  # gradients are summed over replicas
      if float16:
        scaled = optimizer.scale_loss(scaled)
    grads = tape.gradient(scaled, variables)
    if float16:  # for the logged norm only; apply_gradients unscales by itself
      norm = tf.linalg.global_norm(grads) / optimizer.dynamic_scale
    else:
      norm = tf.linalg.global_norm(grads)
    optimizer.apply_gradients(zip(grads, variables))
    if queue_size:  # newest first; the oldest fall off the end
      fresh = tf.math.l2_normalize(tf.stop_gradient(tf.cast(z_a, tf.float32)), axis=1)
      queue.assign(tf.concat([fresh, queue[:queue_size - tf.shape(fresh)[0]]], axis=0))
      queue_filled.assign(tf.minimum(queue_filled + tf.shape(fresh)[0], queue_size))
    return loss, losses.contrastive_accuracy(z_a, z_b), norm * replicas

  @tf.function(jit_compile=jit_compile)
  def compiled_step(view_a, view_b):
    return replica_step(view_a, view_b)

  @tf.function
  def train_step(views):
    loss, acc, gnorm = strategy.run(compiled_step, args=views)
    mean = lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
    return mean(loss), mean(acc), mean(gnorm)

  return train_step
