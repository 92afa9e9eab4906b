"""SimCLRTrainer executor: reads its inputs, runs the training job (worker.py) in this process
or as a multi-worker job (launch.py), and records the artifacts' properties.

Checkpoints live outside the execution's own output folder, under
<checkpoint_root>/<fingerprint of the inputs and the parameters>, because TFX gives every
execution a fresh output URI: a rerun of the same step finds them again and resumes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import baseline, io_utils
from components.dual_view_transform import augment, dataset as dv_dataset
from components.params import EXEC_PROPERTY
from components.simclr_trainer import contract, launch, worker
from components.simclr_trainer.params import TrainerParams


def run_fingerprint(input_uris, hparams) -> str:
  payload = json.dumps({'inputs': sorted(input_uris), 'hparams': hparams}, sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    params = TrainerParams.from_json(exec_properties[EXEC_PROPERTY])
    inputs, input_uris = _read_inputs(input_dict, params.batch_size,
                                      exec_properties['baseline_model_dir'])
    fingerprint = run_fingerprint(input_uris, params.fingerprint())
    model = artifact_utils.get_single_instance(output_dict['model'])
    model_run = artifact_utils.get_single_instance(output_dict['model_run'])
    job = worker.TrainJob(
        params, inputs, os.path.join(exec_properties['checkpoint_root'], fingerprint),
        path_utils.serving_model_path(model.uri), model_run.uri,
        os.path.join(model_run.uri, contract.OUTCOME_FILE))
    job_path = os.path.join(model_run.uri, contract.JOB_FILE)  # what every worker reads
    io_utils.write_json(job_path, json.loads(job.to_json()))
    if params.trainer_workers > 1:
      outcome = launch.run_job(job, job_path)
    else:
      outcome = dict(worker.run(job), job={'launcher': 'in-process', 'workers': 1})
    _record(model, model_run, params, inputs, dict(outcome, fingerprint=fingerprint))


def _read_inputs(input_dict, batch_size: int, baseline_model_dir: str):
  """(worker.JobInputs, the input URIs that enter the run fingerprint)."""
  graph_uri = artifact_utils.get_single_uri(input_dict['transform_graph'])
  examples = artifact_utils.get_single_instance(input_dict['transformed_examples'])
  base = baseline.find(input_dict.get('base_model'), baseline_model_dir,
                       path_utils.serving_model_path)
  train_uri = artifact_utils.get_split_uri([examples], 'train')
  policy = dv_dataset.read_policy(graph_uri)
  image_size = int(policy['image_size'])
  num_train = dv_dataset.count_records(train_uri)
  if num_train < batch_size:
    raise ValueError(f'batch_size {batch_size} is larger than the {num_train} training '
                     'images; lower batch_size or add images')
  inputs = worker.JobInputs(
      train_uri, artifact_utils.get_split_uri([examples], 'eval'), graph_uri, policy,
      image_size, int(policy.get('crop_size') or image_size), augment.local_crop_count(policy),
      num_train, num_train // batch_size, base.saved_model_dir if base else '',
      base.describe() if base else '')
  return inputs, [graph_uri, examples.uri] + ([base.describe()] if base else [])


def _record(model, model_run, params, inputs, outcome) -> None:
  """Every property of the trainer's artifacts, in one place (names: contract.py)."""
  for artifact in (model, model_run):
    artifact.set_string_custom_property(contract.RUN_FINGERPRINT, outcome['fingerprint'])
    artifact.set_int_custom_property(contract.TRAIN_STEPS, outcome['train_steps'])
    artifact.set_int_custom_property(contract.RESUMED_FROM_STEP, outcome['start_step'])
    artifact.set_string_custom_property(contract.WARM_STARTED_FROM, outcome['warm_from'])
    artifact.set_string_custom_property(contract.PRECISION, outcome['precision'])
  for name, value in ((contract.EMBEDDING_DIM, outcome['embedding_dim']),
                      (contract.EMBEDDING_STAGES, params.embedding_stages),
                      (contract.PROJECTION_DIM, params.projection_dim),
                      (contract.HEAD_LAYERS, params.head_layers),
                      (contract.IMAGE_SIZE, inputs.image_size),
                      (contract.LOCAL_CROPS, inputs.local_crops),
                      (contract.MICRO_BATCH_SIZE, params.micro_batch_size)):
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
  model_run.set_int_custom_property(contract.TRAINER_WORKERS, params.trainer_workers)
  model_run.set_string_custom_property(contract.TRAINER_JOB, json.dumps(outcome['job']))
  logging.info('SimCLRTrainer: done in %.1fs, final loss %.4f; SavedModel at %s; TensorBoard: '
               'tensorboard --logdir %s', outcome['seconds'], outcome['final_loss'],
               path_utils.serving_model_path(model.uri), model_run.uri)
