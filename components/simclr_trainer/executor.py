"""SimCLRTrainer executor: encoder + projection head trained with NT-Xent on two random views.

Checkpoints live outside the execution's own output folder, under
<checkpoint_root>/<fingerprint of the inputs and the parameters>, because TFX gives every
execution a fresh output URI: a rerun of the same step finds them again and resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import tensorflow as tf
import tensorflow_transform as tft
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import io_utils
from components.dual_view_transform import augment, dataset as dv_dataset
from components.linear_evaluator import probe
from components.params import EXEC_PROPERTY
from components.simclr_trainer import contract, export, hardware, training
from components.simclr_trainer.params import TrainerParams
from components.simclr_trainer.time_budget import TimeBudget

_KNN_BANK, _KNN_QUERIES = 5000, 2000


def run_fingerprint(input_uris, hparams) -> str:
  payload = json.dumps({'inputs': sorted(input_uris), 'hparams': hparams}, sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    params = TrainerParams.from_json(exec_properties[EXEC_PROPERTY])
    inputs = _Inputs.read(input_dict, params.batch_size)
    # The configured precision ('auto' included) is what the fingerprint hashes: a resume on
    # another machine finds the same checkpoints, which load under any policy.
    precision = hardware.training_precision(params.precision)
    strategy = training.choose_strategy(params.distribution_strategy)
    if params.negatives_queue_size and strategy.num_replicas_in_sync > 1:
      raise ValueError('negatives_queue_size > 0 is supported on one replica only; with several '
                       'replicas the cross-replica negatives already enlarge the batch')
    max_steps = params.train_steps or params.epochs * inputs.steps_per_epoch
    state = training.build_training_state(
        params, inputs.image_size, max_steps, strategy=strategy, precision=precision,
        any_input_size=inputs.any_input_size, local_crops=inputs.local_crops)
    fingerprint = run_fingerprint(inputs.uris, params.fingerprint())
    checkpoints = _Checkpoints(state, os.path.join(exec_properties['checkpoint_root'],
                                                   fingerprint), params)
    start_step, warm_from = checkpoints.restore_or_warm_start(inputs.base_models)
    model_run = artifact_utils.get_single_instance(output_dict['model_run'])
    data = iter(strategy.experimental_distribute_dataset(dv_dataset.dual_view_dataset(
        inputs.train_uri, inputs.policy, params.batch_size, params.seed, start_step=start_step)))
    monitor = _KnnMonitor.create(params, inputs, state.embedder)
    budget = TimeBudget(params.train_minutes, max_steps, params.warmup_fraction, start_step,
                        checkpoints.train_seconds(), checkpoints.saved_plan())
    state.set_schedule(budget.warmup_steps, budget.total_steps)
    _log_start(inputs, params, budget.total_steps, strategy, precision, state.schedule.peak,
               checkpoints.directory)
    outcome = _train(state, data, budget, checkpoints, _Progress(model_run.uri, params),
                     monitor)
    model_artifact = artifact_utils.get_single_instance(output_dict['model'])
    embedder = _export(state, params, inputs, precision,
                       path_utils.serving_model_path(model_artifact.uri))
    _record(model_artifact, model_run, params, inputs, embedder, dict(
        outcome, fingerprint=fingerprint, start_step=start_step, warm_from=warm_from,
        precision=precision))


def _train(state, data, budget, checkpoints, progress, monitor) -> dict:
  """The loop: steps until the budget's step count, with its plans, progress, the kNN monitor
  and checkpoints along the way. Returns the last step's numbers."""
  start_step = done = int(state.step)
  loss = acc = gnorm = tf.constant(float('nan'))
  knn = None
  while done < budget.total_steps:
    loss, acc, gnorm = state.train_step(next(data))
    done += 1
    state.step.assign(done)
    if budget.after_step(done):
      state.set_schedule(budget.warmup_steps, budget.total_steps)
      checkpoints.record_plan(budget, done)
    if budget.out_of_time(done):  # slower than planned (a busy machine): stop, as promised
      logging.warning('SimCLRTrainer: time budget of %.1f min spent at step %d; stopping there '
                      '(the learning rate had not decayed to 0)', budget.seconds / 60, done)
    progress.step(done, budget.total_steps, loss, acc, gnorm, state.schedule)
    if monitor and monitor.due(done, budget.total_steps):
      knn = progress.paused(monitor.measure, done)
    if done % checkpoints.every == 0 or done == budget.total_steps:
      checkpoints.save(done, budget.spent())
  trained = start_step < budget.total_steps
  if trained:
    checkpoints.finish(budget.spent())
  progress.close()
  return {'train_steps': budget.total_steps, 'final_loss': float(loss) if trained else float('nan'),
          'knn': knn, 'seconds': progress.seconds()}


@dataclasses.dataclass
class _Inputs:
  """What the trainer reads from its input artifacts."""
  uris: list  # the inputs that enter the run fingerprint
  train_uri: str
  eval_uri: str
  transform_graph_uri: str
  policy: dict  # the transform's augmentation policy
  image_size: int  # served and evaluated at this size
  crop_size: int  # trained on crops of this size
  local_crops: int  # multi-crop views per image, from the policy
  num_train: int
  steps_per_epoch: int
  base_models: list  # the latest blessed Model to warm start from, if wired

  @property
  def any_input_size(self) -> bool:
    """Training inputs of another size than the served one need an encoder of any input size
    (re-exported at image_size)."""
    return self.crop_size != self.image_size or bool(self.local_crops)

  @classmethod
  def read(cls, input_dict, batch_size: int) -> '_Inputs':
    graph_uri = artifact_utils.get_single_uri(input_dict['transform_graph'])
    examples = artifact_utils.get_single_instance(input_dict['transformed_examples'])
    base_models = list(input_dict.get('base_model') or [])
    train_uri = artifact_utils.get_split_uri([examples], 'train')
    policy = dv_dataset.read_policy(graph_uri)
    image_size = int(policy['image_size'])
    num_train = dv_dataset.count_records(train_uri)
    if num_train < batch_size:
      raise ValueError(f'batch_size {batch_size} is larger than the {num_train} training '
                       'images; lower batch_size or add images')
    return cls([graph_uri, examples.uri] + [m.uri for m in base_models], train_uri,
               artifact_utils.get_split_uri([examples], 'eval'), graph_uri, policy, image_size,
               int(policy.get('crop_size') or image_size), augment.local_crop_count(policy),
               num_train, num_train // batch_size, base_models)


class _Checkpoints:
  """The run's checkpoint folder: the checkpoints, and timeline.json with the seconds of
  training at each checkpoint (kept across resumes: `make bench-quality` plots accuracy against
  minutes from it) and the time budget's plans."""

  def __init__(self, state, directory: str, params: TrainerParams):
    self.directory, self.every = directory, params.checkpoint_every_steps
    self._state = state
    self._manager = tf.train.CheckpointManager(state.checkpoint(), directory,
                                               max_to_keep=params.keep_checkpoints or None)
    self._path = os.path.join(directory, contract.TIMELINE_FILE)
    self.timeline = (io_utils.read_json(self._path) if tf.io.gfile.exists(self._path)
                     else {'checkpoints': {}, 'train_seconds': 0.0})

  def restore_or_warm_start(self, base_models) -> tuple:
    """(step to start from, the Model warm started from or '')."""
    latest = self._manager.latest_checkpoint
    if latest:
      self._state.checkpoint().restore(latest).assert_existing_objects_matched()
      logging.info('SimCLRTrainer: resuming from step %d (checkpoint %s)', int(self._state.step),
                   latest)
      return int(self._state.step), ''
    if base_models:
      training.warm_start(self._state, base_models[0].uri)
      logging.info('SimCLRTrainer: warm start from the latest blessed model %s',
                   base_models[0].uri)
      return 0, base_models[0].uri
    return 0, ''

  def train_seconds(self) -> float:
    return float(self.timeline['train_seconds'])

  def saved_plan(self):
    return self.timeline if self.timeline.get('planned_steps') else None

  def record_plan(self, budget, done: int) -> None:
    self.timeline.update(budget.plan())
    self.timeline.setdefault('plans', []).append({
        'at_step': done, 'paced_steps': budget.paced_steps,
        'seconds_per_step': round(budget.seconds_per_step, 4),
        'planned_steps': budget.total_steps})
    self._write()  # before the first checkpoint: a resume keeps the plan
    logging.info('SimCLRTrainer: time budget: %.2f s/step measured over %d steps, %.1f min '
                 'left: %d steps%s', budget.seconds_per_step, budget.paced_steps,
                 (budget.seconds - budget.spent()) / 60, budget.total_steps,
                 '' if budget.total_steps < budget.max_steps else ' = all the configured epochs')

  def save(self, done: int, seconds: float) -> None:
    self._manager.save(checkpoint_number=done)
    self.timeline['checkpoints'][str(done)] = seconds
    self._write()

  def finish(self, seconds: float) -> None:
    self.timeline['train_seconds'] = seconds
    self._write()

  def _write(self) -> None:
    tf.io.gfile.makedirs(self.directory)
    io_utils.write_json(self._path, self.timeline)


class _Progress:
  """A log line and TensorBoard scalars every few steps, with images/s and the ETA."""

  def __init__(self, logdir: str, params: TrainerParams):
    self._writer = tf.summary.create_file_writer(logdir)
    self._batch = params.batch_size
    self._started = self._window_start = time.time()
    self._window_steps = 0

  def step(self, done, total, loss, acc, gnorm, schedule) -> None:
    self._window_steps += 1
    if done % max(1, min(50, total // 20)) and done != total:
      return
    rate = self._window_steps * self._batch / max(time.time() - self._window_start, 1e-9)
    lr = float(schedule(done))
    with self._writer.as_default(step=done):
      for name, value in (('loss', loss), ('contrastive_accuracy', acc), ('learning_rate', lr),
                          ('gradient_norm', gnorm), ('images_per_second', rate)):
        tf.summary.scalar(name, value)
    logging.info('step %d/%d (%.0f%%) loss %.4f acc %.3f lr %.4g | %.1f img/s | ETA %s',
                 done, total, 100 * done / total, float(loss), float(acc), lr, rate,
                 _format_eta((total - done) * self._batch / max(rate, 1e-9)))
    self._window_start, self._window_steps = time.time(), 0

  def paused(self, measure, done):
    """Runs measure(done) (a monitor) outside the images/s window, logging its scalar."""
    started = time.time()
    name, value = measure(done)
    with self._writer.as_default(step=done):
      tf.summary.scalar(name, value)
    self._window_start += time.time() - started
    return value

  def seconds(self) -> float:
    return time.time() - self._started

  def close(self) -> None:
    self._writer.flush()


class _KnnMonitor:
  """kNN top-1 of the encoder on labelled eval images, every few epochs, in TensorBoard."""

  def __init__(self, embedder, data, every: int):
    self._embedder, self._every = embedder, every
    self._bank_x, self._bank_y, self._query_x, self._query_y = data

  @classmethod
  def create(cls, params: TrainerParams, inputs: _Inputs, embedder):
    every = params.knn_monitor_every_epochs * inputs.steps_per_epoch
    if not every:
      return None
    bank_x, bank_y = dv_dataset.labelled_images(inputs.train_uri, inputs.image_size, _KNN_BANK)
    query_x, query_y = dv_dataset.labelled_images(inputs.eval_uri, inputs.image_size,
                                                  _KNN_QUERIES)
    if bank_x is None or query_x is None or len(set(bank_y)) < 2:
      logging.info('SimCLRTrainer: kNN monitor off (needs labelled images of 2+ classes)')
      return None
    return cls(embedder, (bank_x, bank_y, query_x, query_y), every)

  def due(self, done: int, total: int) -> bool:
    return done % self._every == 0 or done == total

  def measure(self, done: int):
    embed = lambda x: tf.concat([self._embedder(x[i:i + 512], training=False)[0]
                                 for i in range(0, len(x), 512)], 0).numpy()
    top1 = probe.knn_top1(embed(self._bank_x), self._bank_y, embed(self._query_x),
                          self._query_y, k=20)
    logging.info('step %d: kNN monitor top-1 %.4f on %d labelled eval images', done, top1,
                  len(self._query_y))
    return 'knn_top1', top1


def _log_start(inputs, params, total_steps, strategy, precision, peak_lr,
               checkpoint_dir) -> None:
  local = (f' + {inputs.local_crops} local crops of {inputs.policy["local_crops"]["size"]} px'
           if inputs.local_crops else '')
  logging.info('SimCLRTrainer: %d train images, batch %d, %d steps (%.1f epochs) on %d '
               'replica(s), %s, %d px crops%s (served at %d px), peak lr %.4g, %s loss at '
               'temperature %g, checkpoints in %s', inputs.num_train, params.batch_size,
               total_steps, total_steps / inputs.steps_per_epoch,
               strategy.num_replicas_in_sync, precision, inputs.crop_size, local,
               inputs.image_size, peak_lr, params.contrastive_loss, params.temperature,
               checkpoint_dir)


def _export(state, params, inputs, precision, serving_dir: str):
  """The SavedModel TF Serving loads, in float32 at the served image size. Returns the
  exported embedder."""
  encoder, head, embedder = state.encoder, state.head, state.embedder
  if precision != 'float32' or inputs.any_input_size:
    encoder, head, embedder = training.float32_models(state, params, inputs.image_size)
  module = export.EncoderServingModule(
      encoder, head, tft.TFTransformOutput(inputs.transform_graph_uri), inputs.image_size,
      embedder=embedder)
  export.export_serving_model(module, serving_dir)
  return embedder


def _record(model, model_run, params, inputs, embedder, outcome) -> None:
  """Every property of the trainer's artifacts, in one place (names: contract.py)."""
  for artifact in (model, model_run):
    artifact.set_string_custom_property(contract.RUN_FINGERPRINT, outcome['fingerprint'])
    artifact.set_int_custom_property(contract.TRAIN_STEPS, outcome['train_steps'])
    artifact.set_int_custom_property(contract.RESUMED_FROM_STEP, outcome['start_step'])
    artifact.set_string_custom_property(contract.WARM_STARTED_FROM, outcome['warm_from'])
    artifact.set_string_custom_property(contract.PRECISION, outcome['precision'])
  for name, value in ((contract.EMBEDDING_DIM, int(embedder.output_shape[0][-1])),
                      (contract.EMBEDDING_STAGES, params.embedding_stages),
                      (contract.PROJECTION_DIM, params.projection_dim),
                      (contract.IMAGE_SIZE, inputs.image_size),
                      (contract.LOCAL_CROPS, inputs.local_crops)):
    model.set_int_custom_property(name, value)
  for name, value in ((contract.EMBEDDING_POOL, params.embedding_pool),
                      (contract.BACKBONE, params.backbone),
                      (contract.CONTRASTIVE_LOSS, params.contrastive_loss)):
    model.set_string_custom_property(name, value)
  model.set_float_custom_property(contract.WIDTH_MULTIPLIER, params.width_multiplier)
  model.set_float_custom_property(contract.FINAL_LOSS, outcome['final_loss'])
  if outcome['knn'] is not None:
    model.set_float_custom_property(contract.KNN_MONITOR_TOP1, outcome['knn'])
  model_run.set_string_custom_property(contract.TENSORBOARD_LOGDIR, model_run.uri)
  logging.info('SimCLRTrainer: done in %.1fs, final loss %.4f; SavedModel at %s; TensorBoard: '
               'tensorboard --logdir %s', outcome['seconds'], outcome['final_loss'],
               path_utils.serving_model_path(model.uri), model_run.uri)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'
