"""The SimCLR train step: both views (and any multi-crop local crops) through f and g, NT-Xent
(or its decoupled form), one optimiser update.

With micro_batch_size > 0 the step is gradient-cached (Gao et al. 2021, "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup"): the exact loss and gradients of
the whole batch, holding the activations of one micro-batch at a time
(cached_contrastive_gradients). Batch norm then normalises each micro-batch of each view by its
own statistics (across replicas when they are synchronised), and its moving averages take one
update per micro-batch.

Built here, outside the executor, so the benchmark times exactly the step the trainer runs.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from components.simclr_trainer import losses


def make_train_step(strategy: tf.distribute.Strategy, encoder, head, optimizer, variables,
                    temperature: float, *, queue=None, queue_filled=None, queue_size: int = 0,
                    float16: bool = False, jit_compile: bool = False,
                    contrastive_loss: str = 'nt_xent', local_crops: int = 0,
                    micro_batch_size: int = 0):
  """Returns train_step(views) -> (mean loss, mean contrastive accuracy, gradient norm), a
  tf.function over a distributed batch of (view_a, view_b), or of (view_a, view_b, local
  crops) when local_crops > 0 (augment.training_views)."""
  _check_options(contrastive_loss, local_crops, queue_size, micro_batch_size)
  replicas = strategy.num_replicas_in_sync
  decoupled = contrastive_loss == 'dcl'

  def scale(loss):  # gradients are summed over replicas
    scaled = loss / replicas
    return optimizer.scale_loss(scaled) if float16 else scaled

  def projections_loss(z_a, z_b):
    negatives = queue[:queue_filled] if queue_size else None
    return losses.nt_xent_loss(z_a, z_b, temperature, negatives=negatives, decoupled=decoupled)

  def multi_crop_loss(z_a, z_b, z_local):
    return losses.multi_crop_loss(z_a, z_b, z_local, local_crops, temperature,
                                  decoupled=decoupled)

  project = lambda x: head(encoder(x, training=True), training=True)

  def replica_step(*views):
    if micro_batch_size:
      stats = encoder.non_trainable_variables + head.non_trainable_variables
      loss, z_a, z_b, grads = cached_contrastive_gradients(
          project, variables, stats, *views, micro_batch_size, projections_loss, scale)
    else:
      loss, z_a, z_b, grads = full_batch_gradients(
          project, variables, views, local_crops, projections_loss, multi_crop_loss, scale)
    norm = tf.linalg.global_norm(grads)
    if float16:  # for the logged norm only; apply_gradients unscales by itself
      norm = norm / optimizer.dynamic_scale
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


def _check_options(contrastive_loss: str, local_crops: int, queue_size: int,
                   micro_batch_size: int) -> None:
  if contrastive_loss not in losses.CONTRASTIVE_LOSSES:
    raise ValueError(f'contrastive_loss must be one of {losses.CONTRASTIVE_LOSSES}, '
                     f'got {contrastive_loss!r}')
  if local_crops and queue_size:
    raise ValueError('negatives_queue_size > 0 cannot be combined with the transform\'s local '
                     'crops (multi-crop); set one of them to 0')
  if local_crops and micro_batch_size:
    raise ValueError('micro_batch_size > 0 (gradient caching) cannot be combined with the '
                     'transform\'s local crops (multi-crop); set one of them to 0')


def full_batch_gradients(project: Callable, variables: Sequence[tf.Variable], views,
                         local_crops: int, loss_fn: Callable, multi_crop_loss_fn: Callable,
                         scale_fn: Callable):
  """(loss, z_a, z_b, gradients) with one tape over the replica batch: both views, and any
  local crops in one encoder call (their own batch-norm batch)."""
  view_a, view_b, *local = views
  if bool(local) != bool(local_crops):
    raise ValueError(f'the step expects {local_crops} local crops per image, but the data '
                     f'{"has" if local else "has none"}; build both from the same policy')
  with tf.GradientTape() as tape:
    z_a, z_b = project(view_a), project(view_b)
    if local_crops:
      crops = local[0]  # [n, count, s, s, 3] -> crop-major [count * n, s, s, 3]
      crops = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4]),
                         tf.concat([[-1], tf.shape(crops)[2:]], axis=0))
      loss = multi_crop_loss_fn(z_a, z_b, project(crops))
    else:
      loss = loss_fn(z_a, z_b)
    scaled = scale_fn(loss)
  return loss, z_a, z_b, tape.gradient(scaled, variables)


def cached_contrastive_gradients(project: Callable, variables: Sequence[tf.Variable],
                                 stats: Sequence[tf.Variable], view_a, view_b, micro: int,
                                 loss_fn: Callable, scale_fn: Callable):
  """(loss, z_a, z_b, gradients) of loss_fn(project(view_a), project(view_b)) over the whole
  replica batch, projecting `micro` images of a view at a time:

  1. every micro-batch is projected without a tape, so no activation outlives its micro-batch;
     `stats` (batch norm's moving averages) are put back after, so that step 3 alone moves them;
  2. the loss (with cross-replica negatives) and its gradients d loss / d z on the whole batch;
  3. every micro-batch again, under a tape, back-propagating its rows of d loss / d z into the
     variables: sum_i <d loss / d z_i, z_i> has the gradient of the loss through z_i.

  The views are tensors fixed before the step, so both passes see the same crops; in float32
  the result equals one tape over the same micro-batch projections (tests/test_gradient_cache).
  The micro-batches run one after the other (_loop), never side by side.
  """
  n = view_a.shape[0]
  if n is None or n % micro:
    raise ValueError(f'gradient caching needs a replica batch that is a known multiple of '
                     f'micro_batch_size ({micro}); got {n}')
  rows = lambda x, i: x[i * micro:(i + 1) * micro]
  saved = [tf.identity(v) for v in stats]

  def embed(i, z_a, z_b):
    return (z_a.write(i, tf.cast(project(rows(view_a, i)), tf.float32)),
            z_b.write(i, tf.cast(project(rows(view_b, i)), tf.float32)))

  arrays = [tf.TensorArray(tf.float32, size=n // micro, infer_shape=False) for _ in range(2)]
  z_a, z_b = (array.concat() for array in _loop(n // micro, embed, arrays))
  for variable, value in zip(stats, saved):
    variable.assign(value)
  with tf.GradientTape() as tape:
    tape.watch([z_a, z_b])
    loss = loss_fn(z_a, z_b)
    scaled = scale_fn(loss)
  d_a, d_b = tape.gradient(scaled, [z_a, z_b])

  def backprop(i, *summed):
    with tf.GradientTape() as tape:
      surrogate = (tf.reduce_sum(tf.cast(project(rows(view_a, i)), tf.float32) * rows(d_a, i))
                   + tf.reduce_sum(tf.cast(project(rows(view_b, i)), tf.float32) * rows(d_b, i)))
    grads = tape.gradient(surrogate, variables)
    return [s + tf.cast(g, s.dtype) for s, g in zip(summed, grads)]

  grads = _loop(n // micro, backprop, [tf.zeros_like(v) for v in variables])
  return loss, z_a, z_b, list(grads)


def _loop(count: int, body: Callable, state: list) -> list:
  """state = body(i, *state) for i in 0..count-1, one iteration at a time. On one replica a
  tf.while_loop (a graph of one iteration); with several, the iterations are unrolled in
  sequence, because batch norm's cross-replica statistics cannot synchronise inside a while
  loop under tf.distribute."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return tf.while_loop(lambda i, *_: i < count, lambda i, *s: (i + 1, *body(i, *s)),
                         [tf.constant(0), *state], parallel_iterations=1)[1:]
  for i in range(count):
    done = [getattr(s, 'flow', s) for s in state]  # a TensorArray's tensor is its flow
    with tf.control_dependencies(done):  # after the previous iteration
      state = body(i, *state)
  return state
