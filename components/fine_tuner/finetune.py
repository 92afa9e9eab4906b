"""SimCLRv2's semi-supervised stages after pretraining, from a pretrained encoder to classifiers:

1. fine-tune: the encoder, the head's first layer and a new linear layer on the labelled images;
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
from components.fine_tuner import classifier as classifier_lib, contract, data, stages
from components.fine_tuner.params import FineTunerParams
from components.simclr_trainer import export, hardware, training


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
    outcome['finetuned'] = stages.run(_stage(
        job, 'finetuned', models['finetuned'], labelled, _supervised_loss, params, steps,
        params.finetune_minutes))
    if params.distill_epochs:
      outcome['distilled'] = _distil(job, params, hashes, view, models)
    if params.supervised_baseline:
      models['supervised'] = _classifier(job, job.backbone, job.width_multiplier, pretrained=False)
      outcome['supervised'] = stages.run(_stage(
          job, 'supervised', models['supervised'], labelled, _supervised_loss, params, steps,
          params.finetune_minutes))
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

  def loss_fn(model, batch):
    x, y, mask = batch
    teacher_logits = teacher(x, training=False)
    logits = model(x, training=True)
    agree = tf.argmax(logits, -1) == tf.argmax(teacher_logits, -1)
    return (stages.distillation_loss(logits, teacher_logits, y, mask, temperature, weight),
            tf.reduce_sum(tf.cast(agree, tf.float32)))

  batch = params.finetune_batch_size
  every = lambda start: data.all_views(job.train_uri, view, hashes, batch, params.finetune_seed,
                                       start)
  steps = max(1, dv_dataset.count_records(job.train_uri) // batch) * params.distill_epochs
  stage = _stage(job, 'distilled', models['distilled'], every, loss_fn, params, steps,
                 params.distill_minutes)
  stage.learning_rate = params.distill_learning_rate
  return stages.run(stage)


def _supervised_loss(model, batch):
  x, y = batch
  logits = model(x, training=True)
  correct = tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == y, tf.float32))
  return tf.reduce_mean(stages.cross_entropy(y, logits)), correct


def _classifier(job: FineTuneJob, backbone: str, width: float, pretrained: bool):
  crop = int(job.policy.get('crop_size') or job.image_size)
  model, encoder, head = classifier_lib.build_classifier(
      backbone, job.image_size, width, len(job.class_names), job.head_layers, job.projection_dim,
      any_input_size=crop != job.image_size)
  if pretrained:
    classifier_lib.load_pretrained(encoder, head, job.encoder_saved_model)
  return model


def _stage(job, name, model, make_data, loss_fn, params, steps, minutes) -> stages.Stage:
  return stages.Stage(
      name=name, model=model, make_data=make_data, loss_fn=loss_fn,
      batch_size=params.finetune_batch_size, max_steps=steps, minutes=minutes,
      learning_rate=params.finetune_learning_rate, weight_decay=params.finetune_weight_decay,
      checkpoint_dir=f'{job.checkpoint_dir}/{name}', events_dir=f'{job.run_dir}/events',
      checkpoint_every=params.finetune_checkpoint_every_steps)


def _export(job: FineTuneJob, params: FineTunerParams, name: str, model) -> str:
  """The stage's model in float32 (the same numbers on every CPU, and TFLite-convertible) with
  the classifier's serving signatures, at <run>/models/<stage>/."""
  with training.precision_policy('float32'):
    backbone, width = architecture(job, params, name)
    copy, _, _ = classifier_lib.build_classifier(backbone, job.image_size, width,
                                                 len(job.class_names), job.head_layers,
                                                 job.projection_dim)
  copy.set_weights(model.get_weights())
  module = classifier_lib.ClassifierServingModule(
      copy, tft.TFTransformOutput(job.transform_graph_uri), job.image_size, job.class_names,
      params.classifier_top_k)
  return export.export_serving_model(module, contract.stage_dir(job.run_dir, name))
