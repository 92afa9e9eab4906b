"""SimCLRv2's semi-supervised stages after pretraining, from a pretrained encoder to classifiers:

1. fine-tune: the encoder, the head's first layer and a new linear layer (started as the linear
   probe on the labelled images' features: linear_init.py) on the labelled images;
2. distil: a student (the teacher's architecture, starting from the teacher's weights; or
   another, from random weights) on every train image, learning the fine-tuned teacher's
   softened predictions plus the labels where they may be used;
3. the supervised comparison: the classifier's architecture from random weights, trained as in
   step 1 on the same labels, for the same epochs and minutes.

Each stage resumes from its own checkpoints (stages.py). Every trained model is exported with
the classifier's serving signatures to <run>/models/<stage>/. The executor and the benchmark
both call run().
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, List

import tensorflow as tf
import tensorflow_transform as tft

from components.dual_view_transform import dataset as dv_dataset
from components.fine_tuner import classifier as classifier_lib, contract, data, linear_init, stages
from components.fine_tuner.params import FineTunerParams
from components.simclr_trainer import export, hardware, training

# Each stage's peak learning rate setting.
RATE_SETTINGS = {'finetuned': 'finetune_learning_rate', 'distilled': 'distill_learning_rate',
                 'supervised': 'supervised_learning_rate'}

# In the stages' checkpoint fingerprint: raised when the classifier's layers change, so that a
# rerun after an upgrade trains anew instead of failing to restore an older checkpoint.
ARCHITECTURE = 2


@dataclasses.dataclass
class FineTuneJob:
  """What the stages read: the transformed train split, the pretrained encoder and where to
  keep checkpoints and write the models."""
  train_uri: str
  transform_graph_uri: str
  policy: dict  # the transform's augmentation policy
  encoder_saved_model: str
  backbone: str
  width_multiplier: float
  head_layers: int
  projection_dim: int
  embedding_stages: int  # the served embedding, which the new layer reads as the probe does
  embedding_pool: str
  class_names: List[str]
  checkpoint_dir: str  # <checkpoint_root>/finetune-<fingerprint>
  run_dir: str  # the ModelRun folder: models/<stage>/ and events/

  @property
  def image_size(self) -> int:
    return int(self.policy['image_size'])


def run(job: FineTuneJob, params: FineTunerParams) -> Dict:
  """Trains and exports every stage; returns the outcome (per stage, and the labels used)."""
  started = time.time()
  hashes, labels = data.chosen_labels(job.train_uri, job.image_size, params.finetune_label_fraction)
  if len(set(labels.tolist())) < 2:
    raise ValueError(f'fine-tuning needs labelled train images of at least 2 classes; found '
                     f'{len(labels)} in {len(set(labels.tolist()))} class(es). Put labelled '
                     'images in class sub-folders, or set finetune=false')
  precision = hardware.training_precision(params.finetune_precision, 'FineTuner')
  if precision == 'mixed_float16':  # no loss scaling here: float16 gradients would underflow
    precision = 'float32'
  view = data.view_policy(job.policy, params.finetune_augmentation)
  batch = params.finetune_batch_size
  labelled = lambda start: data.labelled_views(job.train_uri, view, hashes, batch,
                                               params.finetune_seed, start)
  steps = max(1, len(labels) // batch) * params.finetune_epochs
  models, outcome = {}, {'num_labels': int(len(labels)), 'precision': precision}
  with training.precision_policy(precision):
    models['finetuned'] = _classifier(job, job.backbone, job.width_multiplier, pretrained=True)
    stage = _stage(job, 'finetuned', models['finetuned'], labelled,
                   _supervised_loss(not params.finetune_freeze_bn_statistics), params, steps,
                   params.finetune_minutes)
    start = _start_from_probe(job, params, stage, hashes)
    outcome['finetuned'] = dict(stages.run(stage), start=start)
    if params.distill_epochs:
      outcome['distilled'] = _distil(job, params, hashes, view, models)
    if params.supervised_baseline:
      models['supervised'] = _classifier(job, job.backbone, job.width_multiplier, pretrained=False)
      outcome['supervised'] = stages.run(_stage(  # from random weights: no statistics to keep
          job, 'supervised', models['supervised'], labelled, _supervised_loss(True), params,
          steps, params.finetune_minutes))
  for name, model in models.items():
    _export(job, params, name, model)
  outcome['seconds'] = round(time.time() - started, 1)
  return outcome


def architecture(job: FineTuneJob, params: FineTunerParams, stage: str):
  """(backbone, width multiplier) of a stage's model: the student's may differ."""
  if stage == 'distilled':
    return (params.distill_backbone or job.backbone,
            params.distill_width_multiplier or job.width_multiplier)
  return job.backbone, job.width_multiplier


def _distil(job, params, hashes, view, models) -> Dict:
  backbone, width = architecture(job, params, 'distilled')
  teacher = models['finetuned']
  same = (backbone, width) == (job.backbone, job.width_multiplier)
  models['distilled'] = _classifier(job, backbone, width, pretrained=False)
  if same:  # a few minutes cannot train a student from scratch up to its teacher
    models['distilled'].set_weights(teacher.get_weights())
  logging.info('FineTuner: distilling into a %s x%g student (%s)', backbone, width,
               'starting from the teacher' if same else 'from random weights')
  temperature, weight = params.distill_temperature, params.distill_label_weight
  batch_statistics = not (same and params.finetune_freeze_bn_statistics)

  def loss_fn(model, batch):
    x, y, mask = batch
    teacher_logits = teacher(x, training=False)
    logits = model(x, training=batch_statistics)
    agree = tf.argmax(logits, -1) == tf.argmax(teacher_logits, -1)
    return (stages.distillation_loss(logits, teacher_logits, y, mask, temperature, weight),
            tf.reduce_sum(tf.cast(agree, tf.float32)))

  batch = params.finetune_batch_size
  every = lambda start: data.all_views(job.train_uri, view, hashes, batch, params.finetune_seed,
                                       start)
  steps = max(1, dv_dataset.count_records(job.train_uri) // batch) * params.distill_epochs
  return stages.run(_stage(job, 'distilled', models['distilled'], every, loss_fn, params, steps,
                           params.distill_minutes))


def _start_from_probe(job, params, stage, hashes) -> Dict:
  """LP-FT (linear_init.py): the new layer starts as the probe on the labelled images, unless
  finetune_init is 'random' or the stage already has a checkpoint (which restores it)."""
  if params.finetune_init != 'probe' or tf.train.latest_checkpoint(stage.checkpoint_dir):
    return {'init': params.finetune_init, 'restored': params.finetune_init == 'probe'}
  started = time.time()
  fitted = linear_init.init_from_probe(
      stage.model, data.labelled_images(job.train_uri, job.image_size, hashes),
      len(job.class_names))
  logging.info('FineTuner: the new layer starts as the linear probe on %d labelled images '
               '(%d features, C=%g, its train top-1 %.3f) in %.0f s', fitted['images'],
               fitted['features'], fitted['probe_C'], fitted['probe_train_top1'],
               time.time() - started)
  return {'init': 'probe', **fitted}


def _supervised_loss(batch_norm_statistics: bool):
  """Cross-entropy on the labels. batch_norm_statistics=False: batch norm uses (and keeps) the
  pretrained moving statistics, as served, instead of each batch's; its scale and offset still
  train. With a few labels and small batches the pretrained statistics are the better
  estimate, and the features the new layer's probe was fitted on stay the ones it sees."""
  def loss_fn(model, batch):
    x, y = batch
    logits = model(x, training=batch_norm_statistics)
    correct = tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == y, tf.float32))
    return tf.reduce_mean(stages.cross_entropy(y, logits)), correct
  return loss_fn


def _classifier(job: FineTuneJob, backbone: str, width: float, pretrained: bool):
  model, encoder, head = classifier_lib.build_classifier(
      backbone, job.image_size, width, len(job.class_names), job.head_layers, job.projection_dim,
      **_embedding(job, backbone))
  if pretrained:
    classifier_lib.load_pretrained(encoder, head, job.encoder_saved_model)
  return model


def _embedding(job: FineTuneJob, backbone: str) -> Dict:
  """The served embedding's stages and pool, for the teacher's backbone; a student of another
  backbone reads its last stage's average pool."""
  if backbone != job.backbone:
    return {'embedding_stages': 1, 'embedding_pool': 'avg'}
  return {'embedding_stages': job.embedding_stages, 'embedding_pool': job.embedding_pool}


def _stage(job, name, model, make_data, loss_fn, params, steps, minutes) -> stages.Stage:
  return stages.Stage(
      name=name, model=model, make_data=make_data, loss_fn=loss_fn,
      batch_size=params.finetune_batch_size, max_steps=steps, minutes=minutes,
      learning_rate=getattr(params, RATE_SETTINGS[name]), rate_setting=RATE_SETTINGS[name],
      weight_decay=params.finetune_weight_decay,
      checkpoint_dir=f'{job.checkpoint_dir}/{name}', events_dir=f'{job.run_dir}/events',
      checkpoint_every=params.finetune_checkpoint_every_steps,
      # From random weights, the supervised model takes plain SGD's fixed steps; the pretrained
      # ones the configured optimizer (LARS: steps in proportion to each layer's weights).
      optimizer='sgd' if name == 'supervised' else params.finetune_optimizer)


def _export(job: FineTuneJob, params: FineTunerParams, name: str, model) -> str:
  """The stage's model in float32 (the same numbers on every CPU, and TFLite-convertible) with
  the classifier's serving signatures, at <run>/models/<stage>/."""
  with training.precision_policy('float32'):
    backbone, width = architecture(job, params, name)
    copy, _, _ = classifier_lib.build_classifier(backbone, job.image_size, width,
                                                 len(job.class_names), job.head_layers,
                                                 job.projection_dim, **_embedding(job, backbone))
  copy.set_weights(model.get_weights())
  module = classifier_lib.ClassifierServingModule(
      copy, tft.TFTransformOutput(job.transform_graph_uri), job.image_size, job.class_names,
      params.classifier_top_k)
  return export.export_serving_model(module, contract.stage_dir(job.run_dir, name))
