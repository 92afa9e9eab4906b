"""SimCLRTrainer executor: encoder + projection head trained with NT-Xent on two random views.

Checkpoints live outside the execution's own output folder, under
<checkpoint_root>/<fingerprint of the inputs and the parameters>, because TFX gives every
execution a fresh output URI: a rerun of the same step finds them again and resumes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import io_utils
from components.dual_view_transform import augment
from components.dual_view_transform import dataset as dv_dataset
from components.linear_evaluator import probe
from components.simclr_trainer import contract, export, hardware, model as model_lib, optim, step as step_lib

# Parameters that change what is trained (everything but where checkpoints go and monitoring).
HYPERPARAMETERS = ('backbone', 'width_multiplier', 'head_layers', 'projection_dim', 'batch_size',
                   'epochs', 'train_steps', 'temperature', 'optimizer', 'learning_rate',
                   'lr_scaling', 'weight_decay', 'warmup_fraction', 'seed',
                   'negatives_queue_size', 'precision', 'jit_compile', 'train_minutes')
_KNN_BANK, _KNN_QUERIES = 5000, 2000
# A time budget measures the pace over these steps (after the first, which traces the step)
# and then fixes the step count, so the schedule still warms up and decays to 0 in the budget.
_PACE_FROM_STEP, _PACE_STEPS = 3, 20
# ... and plans once more from the pace of the next steps, while the rate is still near its
# peak: the first steps run slower than the rest (the shuffle buffer and the cache filling),
# and a plan from them alone leaves minutes of the budget unused.
_REPLAN_STEPS = 100


STRATEGIES = ('auto', 'default', 'mirrored', 'multi_worker_mirrored')


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


def run_fingerprint(input_uris, hparams) -> str:
  payload = json.dumps({'inputs': sorted(input_uris), 'hparams': hparams}, sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


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


def warm_start(encoder, head, base_model_uri: str) -> str:
  """Loads encoder and head weights from a pushed/blessed Model's SavedModel variables."""
  variables = os.path.join(path_utils.serving_model_path(base_model_uri), 'variables',
                           'variables')
  status = tf.train.Checkpoint(encoder=encoder, head=head).read(variables)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(f'cannot warm start from {base_model_uri}: its encoder does not match this '
                     f'configuration (backbone, width, head); train from scratch or keep the '
                     f'architecture. Detail: {str(e)[:300]}') from None
  status.expect_partial()  # the base model's TFT layer and optimiser are not needed
  return variables


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    hp = {k: exec_properties[k] for k in HYPERPARAMETERS}
    # Added after the others: in the fingerprint only when not the default, so runs started
    # before it existed still find their checkpoints.
    contrastive_loss = exec_properties.get('contrastive_loss') or 'nt_xent'
    if contrastive_loss != 'nt_xent':
      hp['contrastive_loss'] = contrastive_loss
    # hp keeps the configured value ('auto' included) for the fingerprint: a resume on another
    # machine finds the same checkpoints, which load under any policy (variables are float32).
    precision = hardware.training_precision(hp['precision'])
    with precision_policy(precision):
      self._train(input_dict, output_dict, exec_properties, hp, precision)

  def _train(self, input_dict, output_dict, exec_properties, hp, precision):
    transform_graph_uri = artifact_utils.get_single_uri(input_dict['transform_graph'])
    examples = artifact_utils.get_single_instance(input_dict['transformed_examples'])
    train_uri = artifact_utils.get_split_uri([examples], 'train')
    eval_uri = artifact_utils.get_split_uri([examples], 'eval')
    base_models = input_dict.get('base_model') or []
    model_artifact = artifact_utils.get_single_instance(output_dict['model'])
    model_run = artifact_utils.get_single_instance(output_dict['model_run'])

    policy = dv_dataset.read_policy(transform_graph_uri)
    image_size = int(policy['image_size'])
    crop_size = int(policy.get('crop_size') or image_size)
    local_crops = augment.local_crop_count(policy)  # multi-crop views, from the transform
    # Training inputs of another size than the served one need an encoder of any input size
    # (re-exported at image_size below).
    any_input_size = crop_size != image_size or bool(local_crops)
    batch_size = int(hp['batch_size'])
    num_train = dv_dataset.count_records(train_uri)
    steps_per_epoch = num_train // batch_size
    if steps_per_epoch < 1:
      raise ValueError(f'batch_size {batch_size} is larger than the {num_train} training '
                       'images; lower batch_size or add images')
    total_steps = int(hp['train_steps']) or int(hp['epochs']) * steps_per_epoch
    queue_size = int(hp['negatives_queue_size'])

    strategy = choose_strategy(exec_properties.get('distribution_strategy') or 'auto')
    replicas = strategy.num_replicas_in_sync
    if queue_size and replicas > 1:
      raise ValueError('negatives_queue_size > 0 is supported on one replica only; with several '
                       'replicas the cross-replica negatives already enlarge the batch')
    peak_lr = optim.scaled_learning_rate(float(hp['learning_rate']), batch_size,
                                         hp['lr_scaling'])
    warmup_steps = int(round(float(hp['warmup_fraction']) * total_steps))
    float16 = precision == 'mixed_float16'
    # Not hyper-parameters of training (not in the fingerprint): they only choose what the
    # exported embedding reads, so changing them reuses the checkpoints.
    embedding_stages = int(exec_properties.get('embedding_stages') or 1)
    embedding_pool = str(exec_properties.get('embedding_pool') or 'avg')
    with strategy.scope():
      encoder = model_lib.build_encoder(hp['backbone'], image_size, float(hp['width_multiplier']),
                                        sync_batch_norm=replicas > 1,
                                        any_input_size=any_input_size)
      head = model_lib.build_projection_head(encoder.output_shape[-1], int(hp['projection_dim']),
                                             int(hp['head_layers']), sync_batch_norm=replicas > 1)
      embedder = model_lib.build_embedder(encoder, hp['backbone'], embedding_stages,
                                          embedding_pool)
      # Variables: a time budget (train_minutes) shortens the schedule once the pace is known.
      schedule_warmup = tf.Variable(float(warmup_steps), trainable=False, name='warmup_steps')
      schedule_total = tf.Variable(float(total_steps), trainable=False, name='total_steps')
      schedule = optim.WarmupCosine(peak_lr, schedule_warmup, schedule_total)
      optimizer = optim.build_optimizer(hp['optimizer'], schedule, float(hp['weight_decay']),
                                        loss_scale=float16)
      variables = encoder.trainable_variables + head.trainable_variables
      optimizer.build(variables)
      step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
      queue = tf.Variable(tf.zeros([max(queue_size, 1), int(hp['projection_dim'])]),
                          trainable=False, name='negatives_queue')
      queue_filled = tf.Variable(0, dtype=tf.int32, trainable=False, name='queue_filled')

    fingerprint = run_fingerprint([transform_graph_uri, examples.uri] +
                                  [m.uri for m in base_models], hp)
    ckpt_dir = os.path.join(exec_properties['checkpoint_root'], fingerprint)
    checkpoint = tf.train.Checkpoint(encoder=encoder, head=head, optimizer=optimizer,
                                     step=step_var, queue=queue, queue_filled=queue_filled)
    keep = exec_properties.get('keep_checkpoints')
    keep = 2 if keep is None else int(keep)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=keep or None)
    # Seconds of training at each checkpoint, kept across resumes: the quality benchmark plots
    # probe accuracy against minutes of pretraining from it.
    timeline_path = os.path.join(ckpt_dir, contract.TIMELINE_FILE)
    timeline = (io_utils.read_json(timeline_path) if tf.io.gfile.exists(timeline_path)
                else {'checkpoints': {}, 'train_seconds': 0.0})
    warm_from = ''
    if manager.latest_checkpoint:
      checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
      logging.info('SimCLRTrainer: resuming from step %d (checkpoint %s)', int(step_var),
                   manager.latest_checkpoint)
    elif base_models:
      warm_from = base_models[0].uri
      warm_start(encoder, head, warm_from)
      logging.info('SimCLRTrainer: warm start from the latest blessed model %s', warm_from)
    start_step = int(step_var)
    temperature = float(hp['temperature'])
    contrastive_loss = hp.get('contrastive_loss', 'nt_xent')  # only non-defaults are in hp
    budget_seconds = float(hp['train_minutes']) * 60
    if budget_seconds and timeline.get('planned_steps'):  # a resumed time-budget run keeps its plan
      total_steps = int(timeline['planned_steps'])
      schedule_total.assign(float(total_steps))
      schedule_warmup.assign(float(timeline['planned_warmup_steps']))
    plan_at = (start_step + _PACE_FROM_STEP + _PACE_STEPS
               if budget_seconds and not timeline.get('planned_steps') else None)
    replan_at = plan_at + _REPLAN_STEPS if plan_at else None
    max_steps = total_steps  # the configured epochs: no plan goes beyond them

    data = dv_dataset.dual_view_dataset(train_uri, policy, batch_size, int(hp['seed']),
                                        start_step=start_step)
    dist_data = iter(strategy.experimental_distribute_dataset(data))

    train_step = step_lib.make_train_step(
        strategy, encoder, head, optimizer, variables, temperature, queue=queue,
        queue_filled=queue_filled, queue_size=queue_size, float16=float16,
        jit_compile=bool(hp['jit_compile']),
        contrastive_loss=contrastive_loss, local_crops=local_crops)

    monitor_every = int(exec_properties.get('knn_monitor_every_epochs') or 0) * steps_per_epoch
    knn_data = self._knn_data(train_uri, eval_uri, image_size) if monitor_every else None

    writer = tf.summary.create_file_writer(model_run.uri)
    log_every = max(1, min(50, total_steps // 20))
    logging.info('SimCLRTrainer: %d train images, batch %d, %d steps (%.1f epochs) on %d '
                 'replica(s), %s, %d px crops%s (served at %d px), peak lr %.4g, %s loss at '
                 'temperature %g, checkpoints in %s',
                 num_train, batch_size, total_steps, total_steps / steps_per_epoch, replicas,
                 precision, crop_size,
                 (f' + {local_crops} local crops of {policy["local_crops"]["size"]} px'
                  if local_crops else ''),
                 image_size, peak_lr, contrastive_loss, temperature, ckpt_dir)
    window_start, window_steps, started = time.time(), 0, time.time()
    loss = acc = gnorm = tf.constant(float('nan'))
    knn = None
    pace_started = None
    done = start_step
    while done < total_steps:
      loss, acc, gnorm = train_step(next(dist_data))
      done += 1
      step_var.assign(done)
      window_steps += 1
      spent = timeline['train_seconds'] + time.time() - started
      if done == start_step + _PACE_FROM_STEP:
        pace_started = time.time()
      if done in (plan_at, replan_at) and done < total_steps:
        paced = _PACE_STEPS if done == plan_at else _REPLAN_STEPS
        total_steps = self._plan_time_budget(
            done, max_steps, budget_seconds - spent, (time.time() - pace_started) / paced,
            paced, float(hp['warmup_fraction']), schedule_warmup, schedule_total,
            steps_per_epoch, timeline, timeline_path)
        pace_started = time.time()  # the re-plan's window starts here
        log_every = max(1, min(50, total_steps // 20))
      out_of_time = bool(budget_seconds) and spent >= budget_seconds and done < total_steps
      if out_of_time:  # slower than planned (a busy machine): stop at the budget, as promised
        logging.warning('SimCLRTrainer: time budget of %.1f min spent at step %d of %d; '
                        'stopping there (the learning rate had not decayed to 0)',
                        budget_seconds / 60, done, total_steps)
        total_steps = done
      if done % log_every == 0 or done == total_steps:
        elapsed = time.time() - window_start
        rate = window_steps * batch_size / max(elapsed, 1e-9)
        lr = float(schedule(done))
        with writer.as_default(step=done):
          tf.summary.scalar('loss', loss)
          tf.summary.scalar('contrastive_accuracy', acc)
          tf.summary.scalar('learning_rate', lr)
          tf.summary.scalar('gradient_norm', gnorm)
          tf.summary.scalar('images_per_second', rate)
        logging.info('step %d/%d (%.0f%%) loss %.4f acc %.3f lr %.4g | %.1f img/s | ETA %s',
                     done, total_steps, 100 * done / total_steps, float(loss), float(acc), lr,
                     rate, _format_eta((total_steps - done) * batch_size / max(rate, 1e-9)))
        window_start, window_steps = time.time(), 0
      if knn_data and (done % monitor_every == 0 or done == total_steps):
        monitor_started = time.time()
        knn = self._knn_monitor(embedder, knn_data)
        with writer.as_default(step=done):
          tf.summary.scalar('knn_top1', knn)
        logging.info('step %d: kNN monitor top-1 %.4f on %d labelled eval images', done, knn,
                     len(knn_data[3]))
        window_start += time.time() - monitor_started  # keep the monitor out of images/s
      if done % int(exec_properties['checkpoint_every_steps']) == 0 or done == total_steps:
        manager.save(checkpoint_number=done)
        timeline['checkpoints'][str(done)] = timeline['train_seconds'] + time.time() - started
        io_utils.write_json(timeline_path, timeline)
    writer.flush()
    train_seconds = time.time() - started
    if start_step < total_steps:
      timeline['train_seconds'] += train_seconds
      io_utils.write_json(timeline_path, timeline)

    serving_dir = path_utils.serving_model_path(model_artifact.uri)
    if precision != 'float32' or any_input_size:
      # float32 compute, and the fixed image_size input that serving and TFLite expect.
      encoder, head = self._float32_copies(encoder, head, hp, image_size)
      embedder = model_lib.build_embedder(encoder, hp['backbone'], embedding_stages,
                                          embedding_pool)
    module = export.EncoderServingModule(encoder, head, tft.TFTransformOutput(transform_graph_uri),
                                         image_size, embedder=embedder)
    export.export_serving_model(module, serving_dir)

    final_loss = float(loss) if start_step < total_steps else float('nan')
    for artifact in (model_artifact, model_run):
      artifact.set_string_custom_property('run_fingerprint', fingerprint)
      artifact.set_int_custom_property('train_steps', total_steps)
      artifact.set_int_custom_property('resumed_from_step', start_step)
      artifact.set_string_custom_property('warm_started_from', warm_from)
      artifact.set_string_custom_property('precision', precision)
    model_artifact.set_int_custom_property('embedding_dim', int(embedder.output_shape[0][-1]))
    model_artifact.set_int_custom_property('embedding_stages', embedding_stages)
    model_artifact.set_string_custom_property('embedding_pool', embedding_pool)
    model_artifact.set_int_custom_property('projection_dim', int(hp['projection_dim']))
    model_artifact.set_int_custom_property('image_size', image_size)
    model_artifact.set_string_custom_property('backbone', hp['backbone'])
    model_artifact.set_string_custom_property('contrastive_loss', contrastive_loss)
    model_artifact.set_int_custom_property('local_crops', local_crops)
    model_artifact.set_float_custom_property('width_multiplier', float(hp['width_multiplier']))
    model_artifact.set_float_custom_property('final_loss', final_loss)
    if knn is not None:
      model_artifact.set_float_custom_property('knn_monitor_top1', knn)
    model_run.set_string_custom_property('tensorboard_logdir', model_run.uri)
    logging.info('SimCLRTrainer: done in %.1fs, final loss %.4f; SavedModel at %s; TensorBoard: '
                 'tensorboard --logdir %s', train_seconds, final_loss, serving_dir, model_run.uri)

  @staticmethod
  def _plan_time_budget(done, max_steps, seconds_left, seconds_per_step, paced_steps,
                        warmup_fraction, schedule_warmup, schedule_total, steps_per_epoch,
                        timeline, timeline_path) -> int:
    """Fits the step count (and the schedule) to the time budget at the measured pace, and
    records the plan so that a resume keeps it."""
    planned = optim.steps_within_budget(done, max_steps, seconds_left, seconds_per_step)
    warmup = float(round(warmup_fraction * planned))
    schedule_total.assign(float(planned))
    schedule_warmup.assign(warmup)
    timeline.update(planned_steps=planned, planned_warmup_steps=warmup)
    tf.io.gfile.makedirs(os.path.dirname(timeline_path))  # before the first checkpoint
    io_utils.write_json(timeline_path, timeline)
    logging.info('SimCLRTrainer: time budget: %.2f s/step measured over %d steps, %.1f min '
                 'left: %d steps (%.1f epochs)%s', seconds_per_step, paced_steps,
                 seconds_left / 60, planned, planned / steps_per_epoch,
                 '' if planned < max_steps else ' = all the configured epochs')
    return planned

  @staticmethod
  def _float32_copies(encoder, head, hp, image_size):
    """The trained weights (float32 variables under any policy) in float32-compute models:
    the export then gives the same numbers on every CPU and converts to TFLite."""
    with precision_policy('float32'):
      encoder32 = model_lib.build_encoder(hp['backbone'], image_size,
                                          float(hp['width_multiplier']))
      head32 = model_lib.build_projection_head(encoder32.output_shape[-1],
                                               int(hp['projection_dim']), int(hp['head_layers']))
    encoder32.set_weights(encoder.get_weights())
    head32.set_weights(head.get_weights())
    return encoder32, head32

  @staticmethod
  def _knn_data(train_uri, eval_uri, image_size):
    bank_x, bank_y = dv_dataset.labelled_images(train_uri, image_size, _KNN_BANK)
    query_x, query_y = dv_dataset.labelled_images(eval_uri, image_size, _KNN_QUERIES)
    if bank_x is None or query_x is None or len(set(bank_y)) < 2:
      logging.info('SimCLRTrainer: kNN monitor off (needs labelled images of 2+ classes)')
      return None
    return bank_x, bank_y, query_x, query_y

  @staticmethod
  def _knn_monitor(embedder, knn_data) -> float:
    bank_x, bank_y, query_x, query_y = knn_data
    embed = lambda x: tf.concat([embedder(x[i:i + 512], training=False)[0]
                                 for i in range(0, len(x), 512)], 0).numpy()
    return probe.knn_top1(embed(bank_x), bank_y, embed(query_x), query_y, k=20)
