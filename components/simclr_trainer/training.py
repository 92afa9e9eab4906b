"""The training state of SimCLR: encoder, projection head, optimizer on its schedule, step
counter, negatives queue and the train step, built in one place.

The executor and every benchmark call build_training_state, so a benchmark times exactly what
the trainer runs. Also here: the distribution strategy, the Keras precision policy, the warm
start from a blessed model and the float32 copies that are exported.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, List

import keras
import tensorflow as tf

from components.simclr_trainer import model as model_lib, optim, step as step_lib
from components.simclr_trainer.params import STRATEGIES, TrainerParams


@dataclasses.dataclass
class TrainingState:
  encoder: keras.Model
  head: keras.Model
  embedder: keras.Model  # what the probe, the kNN monitor and serving read
  optimizer: Any
  schedule: optim.WarmupCosine  # its warmup and total steps are variables: a budget moves them
  variables: List[tf.Variable]  # trainable: encoder's, then head's
  step: tf.Variable  # int64 global step
  queue: tf.Variable  # [max(queue_size, 1), projection_dim] negatives queue
  queue_filled: tf.Variable
  train_step: Any  # views -> (loss, contrastive accuracy, gradient norm)

  def checkpoint(self) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(encoder=self.encoder, head=self.head, optimizer=self.optimizer,
                               step=self.step, queue=self.queue, queue_filled=self.queue_filled)

  def set_schedule(self, warmup_steps: float, total_steps: float) -> None:
    self.schedule.warmup_steps.assign(float(warmup_steps))
    self.schedule.total_steps.assign(float(total_steps))


def build_training_state(params: TrainerParams, image_size: int, total_steps: int, *,
                         strategy: tf.distribute.Strategy | None = None,
                         precision: str = 'float32', any_input_size: bool = False,
                         local_crops: int = 0) -> TrainingState:
  """Everything one SimCLR run trains, under `precision` (a resolved Keras policy name) and in
  `strategy`'s scope (default: the current one). any_input_size: an encoder that takes crops of
  any size (training crops smaller than image_size, or local crops)."""
  strategy = strategy or tf.distribute.get_strategy()
  sync_bn = strategy.num_replicas_in_sync > 1
  peak_lr = optim.scaled_learning_rate(params.learning_rate, params.batch_size,
                                       params.lr_scaling)
  with precision_policy(precision), strategy.scope():
    encoder = model_lib.build_encoder(params.backbone, image_size, params.width_multiplier,
                                      sync_batch_norm=sync_bn, any_input_size=any_input_size)
    head = model_lib.build_projection_head(encoder.output_shape[-1], params.projection_dim,
                                           params.head_layers, sync_batch_norm=sync_bn)
    embedder = model_lib.build_embedder(encoder, params.backbone, params.embedding_stages,
                                        params.embedding_pool)
    schedule = optim.WarmupCosine(
        peak_lr, tf.Variable(float(round(params.warmup_fraction * total_steps)),
                             trainable=False, name='warmup_steps'),
        tf.Variable(float(total_steps), trainable=False, name='total_steps'))
    optimizer = optim.build_optimizer(params.optimizer, schedule, params.weight_decay,
                                      loss_scale=precision == 'mixed_float16')
    variables = encoder.trainable_variables + head.trainable_variables
    optimizer.build(variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
    queue = tf.Variable(tf.zeros([max(params.negatives_queue_size, 1), params.projection_dim]),
                        trainable=False, name='negatives_queue')
    queue_filled = tf.Variable(0, dtype=tf.int32, trainable=False, name='queue_filled')
  train_step = step_lib.make_train_step(
      strategy, encoder, head, optimizer, variables, params.temperature, queue=queue,
      queue_filled=queue_filled, queue_size=params.negatives_queue_size,
      float16=precision == 'mixed_float16', jit_compile=params.jit_compile,
      contrastive_loss=params.contrastive_loss, local_crops=local_crops,
      micro_batch_size=params.micro_batch_size)
  return TrainingState(encoder, head, embedder, optimizer, schedule, variables, step, queue,
                       queue_filled, train_step)


def choose_strategy(name: str = 'auto') -> tf.distribute.Strategy:
  """'auto': MultiWorkerMirrored when TF_CONFIG names a cluster (a Kubeflow TFJob/PyTorchJob
  style multi-worker pod set), Mirrored over several local GPUs/CPUs, else the default
  strategy. The other names force one choice, e.g. 'default' on a shared node."""
  if name not in STRATEGIES:
    raise ValueError(f'distribution_strategy must be one of {STRATEGIES}, got {name!r}')
  if name == 'multi_worker_mirrored' or (name == 'auto' and 'TF_CONFIG' in os.environ):
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'default':
    return tf.distribute.get_strategy()
  devices = tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('CPU')
  if name == 'mirrored' or len(devices) > 1:
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  return tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_policy(name: str):
  """Sets the Keras dtype policy for the models built inside, and restores it after: every
  component runs in one process under LocalDagRunner."""
  previous = keras.mixed_precision.dtype_policy()
  keras.mixed_precision.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_dtype_policy(previous)


def warm_start(state: TrainingState, saved_model_dir: str) -> str:
  """Loads encoder and head weights from a blessed model's SavedModel variables."""
  variables = os.path.join(saved_model_dir, 'variables', 'variables')
  status = tf.train.Checkpoint(encoder=state.encoder, head=state.head).read(variables)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(f'cannot warm start from {saved_model_dir}: its encoder does not match this '
                     f'configuration (backbone, width, head); train from scratch or keep the '
                     f'architecture. Detail: {str(e)[:300]}') from None
  status.expect_partial()  # the base model's TFT layer and optimiser are not needed
  return variables


def float32_models(state: TrainingState, params: TrainerParams, image_size: int):
  """(encoder, head, embedder) with the trained weights (float32 variables under any policy)
  in float32-compute models of the fixed image_size input: the export then gives the same
  numbers on every CPU and converts to TFLite."""
  with precision_policy('float32'):
    encoder = model_lib.build_encoder(params.backbone, image_size, params.width_multiplier)
    head = model_lib.build_projection_head(encoder.output_shape[-1], params.projection_dim,
                                           params.head_layers)
  encoder.set_weights(state.encoder.get_weights())
  head.set_weights(state.head.get_weights())
  embedder = model_lib.build_embedder(encoder, params.backbone, params.embedding_stages,
                                      params.embedding_pool)
  return encoder, head, embedder
