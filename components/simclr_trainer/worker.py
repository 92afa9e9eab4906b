"""SimCLRTrainer's training program: from the job's inputs to checkpoints, TensorBoard events and
the exported SavedModel; the outcome goes back to the executor as JSON.

One process runs it inside the executor (trainer_workers=1). A multi-worker job runs it in N
processes, each with its own TF_CONFIG (`python -m components.simclr_trainer.worker JOB.json`):
MultiWorkerMirroredStrategy then splits each global batch across the workers, gathers the
negatives and the batch-norm statistics across them, and keeps the weights in step. Every
worker runs the same collective steps (train, save, export), but only the chief writes where
others read: the checkpoints and their timeline, the TensorBoard events, the SavedModel and the
outcome. The others write to a scratch folder they delete, as TFX's Trainer does. Every worker
resumes from the chief's latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import tensorflow as tf
import tensorflow_transform as tft

from components import io_utils
from components.dual_view_transform import dataset as dv_dataset
from components.linear_evaluator import probe
from components.simclr_trainer import contract, export, hardware, training
from components.simclr_trainer.params import TrainerParams
from components.simclr_trainer.time_budget import TimeBudget

_KNN_BANK, _KNN_QUERIES = 5000, 2000


@dataclasses.dataclass
class JobInputs:
  """What the trainer reads from its input artifacts (executor._read_inputs)."""
  train_uri: str
  eval_uri: str
  transform_graph_uri: str
  policy: dict  # the transform's augmentation policy
  image_size: int  # served and evaluated at this size
  crop_size: int  # trained on crops of this size
  local_crops: int  # multi-crop views per image, from the policy
  num_train: int
  steps_per_epoch: int
  base_saved_model: str  # the latest blessed model's SavedModel to warm start from, or ''
  base_model: str  # what it is, as recorded: its Model's uri or its pushed version's folder

  @property
  def any_input_size(self) -> bool:
    """Training inputs of another size than the served one need an encoder of any input size
    (re-exported at image_size)."""
    return self.crop_size != self.image_size or bool(self.local_crops)


@dataclasses.dataclass
class TrainJob:
  """One training run, as every worker of it reads it (JSON: a file beside the ModelRun)."""
  params: TrainerParams
  inputs: JobInputs
  checkpoint_dir: str  # the run's checkpoints: <checkpoint_root>/<run fingerprint>
  serving_dir: str  # where the SavedModel goes (the Model artifact's Format-Serving)
  logdir: str  # TensorBoard events (the ModelRun artifact)
  outcome_path: str  # the chief's outcome JSON

  def to_json(self) -> str:
    return json.dumps({**dataclasses.asdict(self), 'params': self.params.to_json()}, indent=1)

  @classmethod
  def from_json(cls, text: str) -> 'TrainJob':
    values = json.loads(text)
    return cls(**{**values, 'params': TrainerParams.from_json(values['params']),
                  'inputs': JobInputs(**values['inputs'])})


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """The chief of a multi-worker job: the `chief` task, else worker 0 (TF's convention);
  a single process is its own chief."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  kind, index = resolver.task_type, resolver.task_id
  return kind == 'chief' or (kind == 'worker' and index == 0 and
                             'chief' not in resolver.cluster_spec().as_dict())


def run(job: TrainJob, strategy: tf.distribute.Strategy | None = None) -> dict:
  """Trains, saves and exports; returns the outcome (on the chief also written to
  job.outcome_path). strategy: from the job's distribution_strategy unless given (a worker
  process makes it first, before TensorFlow runs anything)."""
  strategy = strategy or training.choose_strategy(job.params.distribution_strategy)
  chief = is_chief(strategy)
  scratch = '' if chief else tempfile.mkdtemp(prefix='simclr_worker_')
  try:
    outcome = _run(job, strategy, scratch)
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)
  if chief:
    io_utils.write_json(job.outcome_path, outcome)
  return outcome


def _run(job: TrainJob, strategy, scratch: str) -> dict:
  params, inputs = job.params, job.inputs
  # The configured precision ('auto' included) is what the fingerprint hashes: a resume on
  # another machine finds the same checkpoints, which load under any policy.
  precision = hardware.training_precision(params.precision)
  if params.negatives_queue_size and strategy.num_replicas_in_sync > 1:
    raise ValueError('negatives_queue_size > 0 is supported on one replica only; with several '
                     'replicas the cross-replica negatives already enlarge the batch')
  max_steps = params.train_steps or params.epochs * inputs.steps_per_epoch
  state = training.build_training_state(
      params, inputs.image_size, max_steps, strategy=strategy, precision=precision,
      any_input_size=inputs.any_input_size, local_crops=inputs.local_crops)
  paths = output_paths(job, scratch)
  checkpoints = _Checkpoints(state, job.checkpoint_dir, params,
                             write_to='' if paths['checkpoints'] == job.checkpoint_dir
                             else paths['checkpoints'])
  start_step, warm_from = checkpoints.restore_or_warm_start(inputs)
  data = iter(strategy.experimental_distribute_dataset(_sharded(dv_dataset.dual_view_dataset(
      inputs.train_uri, inputs.policy, params.batch_size, params.seed, start_step=start_step))))
  monitor = None if scratch else _KnnMonitor.create(params, inputs, state.embedder)
  budget = TimeBudget(params.train_minutes, max_steps, params.warmup_fraction, start_step,
                      checkpoints.train_seconds(), checkpoints.saved_plan())
  state.set_schedule(budget.warmup_steps, budget.total_steps)
  _log_start(inputs, params, budget.total_steps, strategy, precision, state.schedule.peak,
             checkpoints.directory)
  outcome = _train(state, data, budget, checkpoints, _Progress(paths['events'], params),
                   monitor)
  embedder = _export(state, params, inputs, precision, paths['model'])
  return dict(outcome, start_step=start_step, warm_from=warm_from, precision=precision,
              embedding_dim=int(embedder.output_shape[0][-1]),
              replicas=strategy.num_replicas_in_sync)


def output_paths(job: TrainJob, scratch: str) -> dict:
  """Where this worker writes its checkpoints, TensorBoard events and SavedModel: the job's
  folders on the chief (scratch ''), its own scratch folder on any other worker."""
  if not scratch:
    return {'checkpoints': job.checkpoint_dir, 'events': job.logdir, 'model': job.serving_dir}
  return {name: os.path.join(scratch, name) for name in ('checkpoints', 'events', 'model')}


def _sharded(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Each worker of a multi-worker job reads every record and keeps its share of each global
  batch (DATA sharding: the transformed split may be one file, fewer than the workers)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return dataset.with_options(options)


def _train(state, data, budget, checkpoints, progress, monitor) -> dict:
  """The loop: steps until the budget's step count, with its plans, progress, the kNN monitor
  and checkpoints along the way. Returns the last step's numbers."""
  start_step = done = int(state.step.numpy())
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



class _Checkpoints:
  """The run's checkpoint folder: the checkpoints, and timeline.json with the seconds of
  training at each checkpoint (kept across resumes: `make bench-quality` plots accuracy against
  minutes from it) and the time budget's plans."""

  def __init__(self, state, directory: str, params: TrainerParams, write_to: str = ''):
    """directory: the run's checkpoint folder (the chief's). write_to: where this worker saves
    instead, when it is not the chief (every worker saves: the save is collective)."""
    self.directory, self.every = directory, params.checkpoint_every_steps
    self._state, self._chief = state, not write_to
    self._manager = tf.train.CheckpointManager(state.checkpoint(), write_to or directory,
                                               max_to_keep=params.keep_checkpoints or None)
    self._path = os.path.join(directory, contract.TIMELINE_FILE)
    self.timeline = (io_utils.read_json(self._path) if tf.io.gfile.exists(self._path)
                     else {'checkpoints': {}, 'train_seconds': 0.0})

  def restore_or_warm_start(self, inputs: JobInputs) -> tuple:
    """(step to start from, the model warm started from or '')."""
    latest = tf.train.latest_checkpoint(self.directory)  # every worker resumes the chief's
    if latest:
      self._state.checkpoint().restore(latest).assert_existing_objects_matched()
      logging.info('SimCLRTrainer: resuming from step %d (checkpoint %s)', int(self._state.step.numpy()),
                   latest)
      return int(self._state.step.numpy()), ''
    if inputs.base_saved_model:
      training.warm_start(self._state, inputs.base_saved_model)
      logging.info('SimCLRTrainer: warm start from the latest blessed model %s',
                   inputs.base_model)
      return 0, inputs.base_model
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
    if not self._chief:
      return
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
  def create(cls, params: TrainerParams, inputs: 'JobInputs', embedder):
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
  micro = (f' in gradient-cached micro-batches of {params.micro_batch_size}'
           if params.micro_batch_size else '')
  logging.info('SimCLRTrainer: %d train images, batch %d%s, %d steps (%.1f epochs) on %d '
               'replica(s), %s, %d px crops%s (served at %d px), peak lr %.4g, %s loss at '
               'temperature %g, checkpoints in %s', inputs.num_train, params.batch_size, micro,
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


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def main(argv) -> int:
  """`python -m components.simclr_trainer.worker JOB.json`: one worker of a multi-worker job
  (TF_CONFIG in the environment names the cluster and this task)."""
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                      datefmt='%H:%M:%S')
  # Before TensorFlow runs anything: MultiWorkerMirroredStrategy sets up the collectives.
  strategy = training.choose_strategy('multi_worker_mirrored')
  with tf.io.gfile.GFile(argv[1]) as f:
    job = TrainJob.from_json(f.read())
  try:
    run(job, strategy)
  except _PEER_LOST as e:
    logging.error('lost contact with another worker (%s); stopping', _first_lines(e))
    return contract.PEER_LOST_EXIT_CODE
  return 0


# What a collective raises on a worker whose peer died or was stopped.
_PEER_LOST = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)


def _first_lines(error: Exception) -> str:
  """The error's first line and the line that names the peer (TensorFlow appends the graph's
  Python stack to the message, which says nothing here)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  named = [line for line in lines if 'aborted by' in line or 'remote target' in line]
  return ' | '.join(dict.fromkeys(lines[:1] + named))


if __name__ == '__main__':
  sys.exit(main(sys.argv))
