"""Run as a script (tests/test_distributed.py starts it in a fresh process): splits the CPU
into two logical devices, then compares two replicas against one on the same global batch."""
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from components.simclr_trainer import losses, model, training  # noqa: E402

strategy = training.choose_strategy()
replicas = strategy.num_replicas_in_sync
rng = np.random.default_rng(0)
n, d = 8, 6
x_a = tf.constant(rng.normal(size=(n, d)), tf.float32)
# Two views of the same images are close: then the number of negatives visibly moves the loss.
x_b = x_a + tf.constant(0.3 * rng.normal(size=(n, d)), tf.float32)
w_init = rng.normal(size=(d, 4)).astype(np.float32)


def loss_and_grad(xa, xb, w, scale):
  with tf.GradientTape() as tape:
    loss = losses.nt_xent_loss(xa @ w, xb @ w, 0.3)
    scaled = loss / scale
  return loss, tape.gradient(scaled, w)


w_single = tf.Variable(w_init)
single_loss, single_grad = loss_and_grad(x_a, x_b, w_single, 1)

with strategy.scope():
  w_dist = tf.Variable(w_init)
half = n // replicas
shard = lambda t: strategy.experimental_distribute_values_from_function(
    lambda ctx: t[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half])


@tf.function
def distributed():
  loss, grad = strategy.run(lambda a, b: loss_and_grad(a, b, w_dist, replicas),
                            args=(shard(x_a), shard(x_b)))
  return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
          strategy.reduce(tf.distribute.ReduceOp.SUM, grad, axis=None))


dist_loss, dist_grad = distributed()
# What a replica would compute if negatives were not gathered across replicas.
local_only = float(np.mean([losses.nt_xent_loss(x_a[i:i + half] @ w_init,
                                                 x_b[i:i + half] @ w_init, 0.3)
                            for i in range(0, n, half)]))

# Global batch norm: two replicas' synchronized BN equals one BN over the whole batch.
images = tf.constant(rng.normal(size=(n, 8)), tf.float32)
head_single = model.build_projection_head(8, 4, 2, sync_batch_norm=False)
with strategy.scope():
  head_sync = model.build_projection_head(8, 4, 2, sync_batch_norm=True)
head_sync.set_weights(head_single.get_weights())
out_single = head_single(images, training=True).numpy()


@tf.function
def sync_forward():
  return strategy.run(lambda x: head_sync(x, training=True), args=(shard(images),))


per_replica = strategy.experimental_local_results(sync_forward())
out_sync = np.concatenate([t.numpy() for t in per_replica])

# Multi-crop through the trainer's own step: the dataset's image-major local crops
# [n, count, s, s, 3] split with their images, so two replicas give the one-replica loss.
import keras  # noqa: E402
from components.simclr_trainer import step as step_lib  # noqa: E402

crops_data = (tf.constant(rng.normal(size=(n, 8, 8, 3)), tf.float32),
              tf.constant(rng.normal(size=(n, 8, 8, 3)), tf.float32),
              tf.constant(rng.normal(size=(n, 2, 4, 4, 3)), tf.float32))


def multi_crop_loss(strategy_):
  with strategy_.scope():
    encoder = keras.Sequential([keras.Input((None, None, 3)),
                                keras.layers.Conv2D(6, 3, padding='same', activation='relu',
                                                    kernel_initializer=keras.initializers.
                                                    GlorotUniform(seed=1)),
                                keras.layers.GlobalAveragePooling2D()])
    head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        4, kernel_initializer=keras.initializers.GlorotUniform(seed=2))])
    variables = encoder.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.SGD(0.0)
    optimizer.build(variables)
  train_step = step_lib.make_train_step(strategy_, encoder, head, optimizer, variables, 0.3,
                                        local_crops=2)
  data = tf.data.Dataset.from_tensor_slices(crops_data).batch(n)
  loss = float(train_step(next(iter(strategy_.experimental_distribute_dataset(data))))[0])
  return loss, lambda x: head(encoder(x))


multi_crop_single, project = multi_crop_loss(tf.distribute.get_strategy())
multi_crop_distributed, _ = multi_crop_loss(strategy)
# The loss on crop j of every image, paired with that image's views (no batch norm in these
# models, so the crops may go through one at a time).
multi_crop_reference = float(losses.multi_crop_loss(
    project(crops_data[0]), project(crops_data[1]),
    tf.concat([project(crops_data[2][:, j]) for j in range(2)], axis=0), 2, 0.3))

# Gradient caching on two replicas: micro-batches of 2 per replica, with cross-replica negatives
# and synchronised batch norm (each micro-batch's statistics over both replicas' rows), equal one
# replica's cached step in micro-batches of 4 holding the same rows (NT-Xent and the gradients
# do not depend on the order of the images).
gc_a = tf.constant(rng.normal(size=(n, 8)), tf.float32)
gc_b = gc_a + tf.constant(0.3 * rng.normal(size=(n, 8)), tf.float32)
gc_single = model.build_projection_head(8, 4, 2, sync_batch_norm=False)
with strategy.scope():
  gc_sync = model.build_projection_head(8, 4, 2, sync_batch_norm=True)
gc_sync.set_weights(gc_single.get_weights())


def cached_step(head_, micro, replicas_):
  def fn(a, b):
    loss, _, _, grads = step_lib.cached_contrastive_gradients(
        lambda x: head_(x, training=True), head_.trainable_variables,
        head_.non_trainable_variables, a, b, micro,
        lambda z_a, z_b: losses.nt_xent_loss(z_a, z_b, 0.3), lambda loss: loss / replicas_)
    return loss, grads
  return fn


@tf.function
def gc_distributed():
  loss, grads = strategy.run(cached_step(gc_sync, 2, replicas), args=(shard(gc_a), shard(gc_b)))
  return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
          [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads])


order = [0, 1, 4, 5, 2, 3, 6, 7]  # micro-batch i of one replica = micro-batch i of each of two
gc_loss_1, gc_grads_1 = tf.function(cached_step(gc_single, 4, 1))(tf.gather(gc_a, order),
                                                                   tf.gather(gc_b, order))
gc_loss_2, gc_grads_2 = gc_distributed()
gc_grad_diff = max(float(tf.reduce_max(tf.abs(g1 - g2))) for g1, g2 in zip(gc_grads_1, gc_grads_2))
gc_grad_max = max(float(tf.reduce_max(tf.abs(g))) for g in gc_grads_1)
print(json.dumps({
    'replicas': replicas, 'strategy': type(strategy).__name__,
    'single_loss': float(single_loss), 'distributed_loss': float(dist_loss),
    'local_negatives_only_loss': local_only,
    'grad_max_abs_diff': float(np.abs(single_grad.numpy() - dist_grad.numpy()).max()),
    'grad_max_abs': float(np.abs(single_grad.numpy()).max()),
    'sync_bn_max_abs_diff': float(np.abs(out_single - out_sync).max()),
    'multi_crop_single_loss': multi_crop_single,
    'multi_crop_distributed_loss': multi_crop_distributed,
    'multi_crop_reference_loss': multi_crop_reference,
    'cached_single_loss': float(gc_loss_1), 'cached_distributed_loss': float(gc_loss_2),
    'cached_grad_max_abs_diff': gc_grad_diff, 'cached_grad_max_abs': gc_grad_max,
    'sync_bn_layers': sum(1 for layer in head_sync.layers if getattr(layer, 'synchronized', False)),
}))
