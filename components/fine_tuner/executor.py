"""FineTuner executor: reads the pretrained encoder and the transformed data, runs the stages
(finetune.py) and records the classifier it serves and the run.

Checkpoints live under <checkpoint_root>/finetune-<fingerprint of the inputs and the
parameters>/<stage>/, beside the trainer's, so a rerun of a killed step resumes.
"""
from __future__ import annotations

import hashlib
import json
import logging

import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import io_utils
from components.dual_view_transform import dataset as dv_dataset
from components.fine_tuner import contract, finetune
from components.fine_tuner.params import FineTunerParams
from components.image_ingest import contract as ingest_contract
from components.params import EXEC_PROPERTY
from components.simclr_trainer import contract as trainer_contract


def _fingerprint(uris, params: FineTunerParams) -> str:
  payload = json.dumps({'inputs': sorted(uris), 'params': params.fingerprint(),
                       'architecture': finetune.ARCHITECTURE}, sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_job(input_dict, run_dir: str, checkpoint_root: str, params: FineTunerParams):
  """The FineTuneJob of this execution's inputs."""
  encoder = artifact_utils.get_single_instance(input_dict['model'])
  examples = artifact_utils.get_single_instance(input_dict['examples'])
  transformed = artifact_utils.get_single_instance(input_dict['transformed_examples'])
  graph_uri = artifact_utils.get_single_uri(input_dict['transform_graph'])
  class_names = json.loads(examples.get_string_custom_property(ingest_contract.CLASSES) or '[]')
  prop = encoder.get_int_custom_property
  fingerprint = _fingerprint([encoder.uri, transformed.uri, graph_uri], params)
  return finetune.FineTuneJob(
      train_uri=artifact_utils.get_split_uri([transformed], 'train'),
      transform_graph_uri=graph_uri, policy=dv_dataset.read_policy(graph_uri),
      encoder_saved_model=path_utils.serving_model_path(encoder.uri),
      backbone=encoder.get_string_custom_property(trainer_contract.BACKBONE),
      width_multiplier=encoder.get_float_custom_property(trainer_contract.WIDTH_MULTIPLIER),
      head_layers=int(prop(trainer_contract.HEAD_LAYERS)),
      projection_dim=int(prop(trainer_contract.PROJECTION_DIM)),
      embedding_stages=int(prop(trainer_contract.EMBEDDING_STAGES)),
      embedding_pool=encoder.get_string_custom_property(trainer_contract.EMBEDDING_POOL),
      class_names=class_names,
      checkpoint_dir=f'{checkpoint_root}/{contract.CHECKPOINTS_PREFIX}{fingerprint}',
      run_dir=run_dir)


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    params = FineTunerParams.from_json(exec_properties[EXEC_PROPERTY])
    classifier = artifact_utils.get_single_instance(output_dict['classifier'])
    run = artifact_utils.get_single_instance(output_dict['finetune_run'])
    encoder = artifact_utils.get_single_instance(input_dict['model'])
    if not encoder.get_int_custom_property(trainer_contract.HEAD_LAYERS):
      raise ValueError(f'the Model at {encoder.uri} does not record head_layers (trained by an '
                       'older SimCLRTrainer); rerun the trainer with enable_cache=false')
    job = read_job(input_dict, run.uri, exec_properties['checkpoint_root'], params)
    outcome = finetune.run(job, params)
    served = params.served()
    serving_dir = path_utils.serving_model_path(classifier.uri)
    tf.io.gfile.makedirs(classifier.uri)
    _copy_tree(contract.stage_dir(run.uri, served), serving_dir)
    with tf.io.gfile.GFile(f'{run.uri}/{contract.LABELS_FILE}', 'w') as f:
      f.write(''.join(f'{name}\n' for name in job.class_names))
    outcome.update(served=served, checkpoint_dir=job.checkpoint_dir)
    io_utils.write_json(f'{run.uri}/{contract.OUTCOME_FILE}', outcome)
    _record(classifier, run, encoder, job, params, outcome)
    logging.info('FineTuner: %d labels; %s; serving the %s model from %s (%.0fs)',
                 outcome['num_labels'], '; '.join(
                     f'{s} {outcome[s]["steps"]} steps' for s in contract.STAGES if s in outcome),
                 served, serving_dir, outcome['seconds'])


def _copy_tree(source: str, destination: str) -> None:
  for folder, _, files in tf.io.gfile.walk(source):
    target = destination + folder[len(source):]
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(f'{folder}/{name}', f'{target}/{name}', overwrite=True)


def _record(classifier, run, encoder, job, params, outcome) -> None:
  """Every property of the FineTuner's artifacts, in one place (names: contract.py)."""
  classifier.set_string_custom_property(contract.KIND, contract.CLASSIFIER_KIND)
  classifier.set_string_custom_property(contract.ENCODER_MODEL_URI, encoder.uri)
  classifier.set_int_custom_property(contract.ENCODER_MODEL_ID, encoder.id)
  classifier.set_string_custom_property(contract.CLASS_NAMES, json.dumps(job.class_names))
  classifier.set_int_custom_property(contract.NUM_CLASSES, len(job.class_names))
  classifier.set_string_custom_property(contract.SERVED_STAGE, outcome['served'])
  classifier.set_int_custom_property(contract.TOP_K, params.classifier_top_k)
  classifier.set_int_custom_property(contract.IMAGE_SIZE, job.image_size)
  backbone, width = finetune.architecture(job, params, outcome['served'])
  classifier.set_string_custom_property(contract.BACKBONE, backbone)
  classifier.set_float_custom_property(contract.WIDTH_MULTIPLIER, width)
  for artifact in (classifier, run):
    artifact.set_int_custom_property(contract.NUM_LABELS, outcome['num_labels'])
    artifact.set_float_custom_property(contract.LABEL_FRACTION, params.finetune_label_fraction)
  for stage in contract.STAGES:
    if stage in outcome:
      run.set_int_custom_property(f'{stage}_steps', outcome[stage]['steps'])
      run.set_float_custom_property(f'{stage}_train_seconds', outcome[stage]['train_seconds'])
  run.set_string_custom_property(trainer_contract.TENSORBOARD_LOGDIR, f'{run.uri}/events')
