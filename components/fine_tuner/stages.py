"""One stage of fine-tuning (fine-tune, distil, or the supervised comparison) as one loop:
resumable from its checkpoints, within its time budget, with progress and TensorBoard scalars.

Losses (logits s of the model being trained, t of the frozen teacher, temperature T, labels y,
m = 1 where the label may be used):
  fine-tune, supervised:  L = mean_i CE(y_i, softmax(s_i))
  distillation:           L = (1 - w) * T^2 * mean_i CE(softmax(t_i / T), softmax(s_i / T))
                              + w * sum_i m_i CE(y_i, softmax(s_i)) / max(1, sum_i m_i)
SimCLRv2's distillation loss is the first term; the second adds the labels where they exist
(weight w = distill_label_weight). T^2 keeps the soft term's gradients at the scale of the
hard one's (Hinton et al. 2015).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable

import tensorflow as tf

from components import io_utils
from components.simclr_trainer import optim
from components.simclr_trainer.time_budget import TimeBudget

WARMUP_FRACTION = 0.05
STATE_FILE = 'stage.json'  # in a stage's checkpoint folder: its plan and seconds so far


def cross_entropy(labels, logits):
  return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def distillation_loss(student_logits, teacher_logits, labels, label_mask, temperature: float,
                      label_weight: float):
  """The distillation loss above, in float32."""
  s = tf.cast(student_logits, tf.float32)
  targets = tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / temperature)
  soft = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(
      targets, s / temperature, from_logits=True)) * temperature ** 2
  hard = tf.reduce_sum(label_mask * cross_entropy(labels, s)) / tf.maximum(
      tf.reduce_sum(label_mask), 1.0)
  return (1.0 - label_weight) * soft + label_weight * hard


@dataclasses.dataclass
class Stage:
  name: str  # finetuned | distilled | supervised
  model: Any  # keras.Model: images -> logits
  make_data: Callable[[int], tf.data.Dataset]  # start step -> the batches loss_fn takes
  loss_fn: Callable  # (model, batch) -> (loss, number of correct top-1 answers in the batch)
  batch_size: int
  max_steps: int
  minutes: float
  learning_rate: float
  rate_setting: str  # the setting learning_rate came from, named when the loss diverges
  weight_decay: float
  checkpoint_dir: str
  events_dir: str
  checkpoint_every: int = 100
  optimizer: str = 'sgd'  # optim.build_optimizer: sgd (momentum 0.9) or lars


def run(stage: Stage) -> dict:
  """Trains the stage to its step count (or to its time budget), resuming from its
  checkpoints; a finished stage only restores. Returns its outcome."""
  schedule = optim.WarmupCosine(stage.learning_rate,
                                tf.Variable(WARMUP_FRACTION * stage.max_steps, trainable=False),
                                tf.Variable(float(stage.max_steps), trainable=False))
  optimizer = optim.build_optimizer(stage.optimizer, schedule, 0.0)
  optimizer.build(stage.model.trainable_variables)  # every slot, before a restore or a step
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(model=stage.model, optimizer=optimizer, step=step),
      stage.checkpoint_dir, max_to_keep=1)
  if manager.latest_checkpoint:
    manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logging.info('FineTuner: %s: resuming from step %d', stage.name, int(step.numpy()))
  state_path = os.path.join(stage.checkpoint_dir, STATE_FILE)
  saved = io_utils.read_json(state_path) if tf.io.gfile.exists(state_path) else {}
  start = int(step.numpy())
  budget = TimeBudget(stage.minutes, stage.max_steps, WARMUP_FRACTION, start,
                      saved.get('train_seconds', 0.0), saved if saved.get('planned_steps') else None)
  _set_schedule(schedule, budget)
  train_step = _train_step(stage, optimizer)
  data = iter(stage.make_data(start))
  progress = _Progress(stage, tf.summary.create_file_writer(stage.events_dir))
  loss = correct = seen = 0.0
  done = start
  while done < budget.total_steps:
    loss, right, count = train_step(next(data))
    done += 1
    _check_finite(stage, float(loss), done)
    step.assign(done)
    correct, seen = correct + float(right), seen + float(count)
    if budget.after_step(done):
      _set_schedule(schedule, budget)
      saved.update(budget.plan())
    if budget.out_of_time(done):  # stopped at the budget: a resume must not train on
      saved.update(budget.plan())
    progress.step(done, budget.total_steps, float(loss), schedule(done))
    if done % stage.checkpoint_every == 0 or done >= budget.total_steps:
      manager.save(checkpoint_number=done)
      saved['train_seconds'] = budget.spent()
      tf.io.gfile.makedirs(stage.checkpoint_dir)
      io_utils.write_json(state_path, saved)
  progress.close()
  return {'steps': int(done), 'resumed_from_step': start, 'final_loss': float(loss),
          'train_accuracy': correct / seen if seen else None,
          'train_seconds': round(float(saved.get('train_seconds', 0.0)), 1)}


def _check_finite(stage: Stage, loss: float, step: int) -> None:
  if not math.isfinite(loss):
    raise FloatingPointError(
        f'FineTuner: the {stage.name} stage\'s loss became {loss} at step {step} at a peak '
        f'learning rate of {stage.learning_rate}: lower '
        f'{stage.rate_setting} and run again')


def _set_schedule(schedule, budget) -> None:
  schedule.warmup_steps.assign(float(budget.warmup_steps))
  schedule.total_steps.assign(float(budget.total_steps))


def _train_step(stage: Stage, optimizer):
  variables = stage.model.trainable_variables
  decay = stage.weight_decay

  @tf.function
  def train_step(batch):
    with tf.GradientTape() as tape:
      loss, correct = stage.loss_fn(stage.model, batch)
      penalty = tf.add_n([tf.nn.l2_loss(v) for v in variables
                          if not optim.is_excluded_from_decay(v)]) if decay else 0.0
      total = loss + decay * penalty
    optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
    return loss, correct, tf.shape(batch[0])[0]

  return train_step


class _Progress:
  """A log line with the rate and ETA every few steps, and TensorBoard scalars."""

  def __init__(self, stage: Stage, writer):
    self._stage, self._writer = stage, writer
    self._window, self._steps = time.time(), 0

  def step(self, done: int, total: int, loss: float, lr) -> None:
    self._steps += 1
    if done % max(1, min(50, total // 10)) and done != total:
      return
    batch = self._stage.batch_size
    rate = self._steps * batch / max(time.time() - self._window, 1e-9)
    with self._writer.as_default(step=done):
      tf.summary.scalar(f'{self._stage.name}/loss', loss)
      tf.summary.scalar(f'{self._stage.name}/images_per_second', rate)
    eta = (total - done) * batch / max(rate, 1e-9)
    logging.info('FineTuner: %s step %d/%d loss %.4f lr %.4g | %.1f img/s | ETA %d:%02d',
                 self._stage.name, done, total, loss, float(lr), rate, eta // 60, eta % 60)
    self._window, self._steps = time.time(), 0

  def close(self) -> None:
    self._writer.flush()
