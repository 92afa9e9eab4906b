"""The SimCLR train step: both views (and any multi-crop local crops) through f and g, NT-Xent
(or its decoupled form), one optimiser update.

Built here, outside the executor, so the benchmark times exactly the step the trainer runs.
"""
from __future__ import annotations

import tensorflow as tf

from components.simclr_trainer import losses


def make_train_step(strategy: tf.distribute.Strategy, encoder, head, optimizer, variables,
                    temperature: float, *, queue=None, queue_filled=None, queue_size: int = 0,
                    float16: bool = False, jit_compile: bool = False,
                    contrastive_loss: str = 'nt_xent', local_crops: int = 0):
  """Returns train_step(views) -> (mean loss, mean contrastive accuracy, gradient norm), a
  tf.function over a distributed batch of (view_a, view_b), or of (view_a, view_b, local
  crops) when local_crops > 0 (augment.training_views)."""
  replicas = strategy.num_replicas_in_sync
  if contrastive_loss not in losses.CONTRASTIVE_LOSSES:
    raise ValueError(f'contrastive_loss must be one of {losses.CONTRASTIVE_LOSSES}, '
                     f'got {contrastive_loss!r}')
  if local_crops and queue_size:
    raise ValueError('negatives_queue_size > 0 cannot be combined with the transform\'s local '
                     'crops (multi-crop); set one of them to 0')
  decoupled = contrastive_loss == 'dcl'

  def replica_step(view_a, view_b, *local):
    if bool(local) != bool(local_crops):
      raise ValueError(f'the step expects {local_crops} local crops per image, but the data '
                       f'{"has" if local else "has none"}; build both from the same policy')
    with tf.GradientTape() as tape:
      z_a = head(encoder(view_a, training=True), training=True)
      z_b = head(encoder(view_b, training=True), training=True)
      negatives = queue[:queue_filled] if queue_size else None
      if local_crops:  # all small crops in one encoder call (their own batch-norm batch)
        crops = local[0]  # [n, count, s, s, 3] -> crop-major [count * n, s, s, 3]
        crops = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4]),
                           tf.concat([[-1], tf.shape(crops)[2:]], axis=0))
        z_local = head(encoder(crops, training=True), training=True)
        loss = losses.multi_crop_loss(z_a, z_b, z_local, local_crops, temperature,
                                      decoupled=decoupled)
      else:
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
  def compiled_step(*views):
    return replica_step(*views)

  @tf.function
  def train_step(views):
    loss, acc, gnorm = strategy.run(compiled_step, args=views)
    mean = lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
    return mean(loss), mean(acc), mean(gnorm)

  return train_step
