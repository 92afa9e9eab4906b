"""Pusher executor: a blessed model goes to the TF Serving base path; anything else, nowhere.

A push is: the SavedModel, its warmup requests and the accepted TFLite files staged together;
then, under the serving folder's lock, renamed into a new integer version and models.config
updated (or the version rolled back); then versions beyond the newest `keep_versions` that the
Pusher wrote are retired (never one pinned in models.config). components/pusher/push.py.
"""
from __future__ import annotations

import logging
import os

import tensorflow as tf

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import io_utils
from components.edge_export import contract as edge_contract
from components.fine_tuner import contract as finetune_contract
from components.linear_evaluator import contract as evaluator_contract
from components.pusher import contract, push, serving_files
from components.params import EXEC_PROPERTY
from components.pusher.contract import EDGE_DIR
from components.pusher.params import PusherParams



def is_blessed(blessing) -> bool:
  return blessing.get_int_custom_property(evaluator_contract.BLESSED) == 1


def sample_images(examples, count: int) -> list:
  """Up to `count` encoded images from the eval split (the train split if eval is empty)."""
  images = []
  for split in ('eval', 'train'):
    if len(images) >= count:
      break
    try:
      images += io_utils.encoded_images(artifact_utils.get_split_uri([examples], split),
                                        count - len(images))
    except (FileNotFoundError, ValueError):
      continue
  return images


def _source_metadata(model, blessing, encoder_pushes) -> dict:
  """What the version's source record says besides the model's uri: the artifacts, and for a
  classifier the encoder it came from (its Model, and its version when that was pushed)."""
  metadata = {'model_artifact_id': model.id, 'blessing_artifact_id': blessing.id}
  kind = model.get_string_custom_property(finetune_contract.KIND)
  if kind != finetune_contract.CLASSIFIER_KIND:
    return metadata
  metadata.update(kind=kind, encoder_model_uri=model.get_string_custom_property(
      finetune_contract.ENCODER_MODEL_URI), encoder_model_id=model.get_int_custom_property(
          finetune_contract.ENCODER_MODEL_ID))
  for encoder_push in encoder_pushes:
    if encoder_push.get_int_custom_property(contract.PUSHED) == 1:
      metadata.update(
          encoder_model_name=encoder_push.get_string_custom_property(contract.MODEL_NAME),
          encoder_version=encoder_push.get_int_custom_property(contract.PUSHED_VERSION))
  return metadata


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    model = artifact_utils.get_single_instance(input_dict['model'])
    blessing = artifact_utils.get_single_instance(input_dict['model_blessing'])
    pushed = artifact_utils.get_single_instance(output_dict['pushed_model'])
    serving_base = exec_properties['serving_base_dir']
    params = PusherParams.from_json(exec_properties[EXEC_PROPERTY])
    model_name, keep = params.model_name, params.serving_keep_versions
    warmup_count = params.serving_warmup_images
    # '' means: TF Serving sees the serving folder where the Pusher writes it.
    config_base = params.serving_config_base_path or serving_base

    if not is_blessed(blessing):
      reason = (blessing.get_string_custom_property(evaluator_contract.REASON)
                or 'model was not blessed')
      pushed.set_int_custom_property(contract.PUSHED, 0)
      pushed.set_string_custom_property(contract.REASON, f'not pushed: {reason}')
      logging.warning('Pusher: model %s NOT pushed: %s', model.uri, reason)
      return

    extra, edge_note = self._edge_files(input_dict.get('edge_model') or [])
    warmup_note = 'no warmup requests'
    if warmup_count and input_dict.get('examples'):
      images = sample_images(input_dict['examples'][0], warmup_count)
      if images:
        local = os.path.join(pushed.uri, 'tf_serving_warmup_requests')
        serving_files.write_warmup_requests(local, model_name, images)
        extra[serving_files.WARMUP_FILE] = local
        warmup_note = f'{len(images)} warmup requests'
    metadata = _source_metadata(model, blessing, input_dict.get('encoder_push') or [])
    result = push.push_model(
        path_utils.serving_model_path(model.uri), serving_base, model_name,
        source_uri=model.uri, metadata=metadata, extra_files=extra, keep=keep,
        config=serving_files.ModelsConfigUpdate(serving_base, model_name,
                                                os.path.join(config_base, model_name)))
    pinned, retired = result['pinned_versions'], result['retired']
    if pinned and result['version'] not in pinned:
      logging.warning('Pusher: models.config pins %s to version(s) %s (a rollback?): version %d '
                      'is on disk but will not serve until the pin is removed', model_name,
                      pinned, result['version'])
    self._record(pushed, result, metadata, model_name, edge_note, warmup_note)
    logging.info('Pusher: %s version %d at %s (%s; %s; models.config %s%s)',
                 'kept' if result['already_pushed'] else 'pushed', result['version'],
                 result['destination'], warmup_note, edge_note, result['path'],
                 f'; retired {retired}' if retired else '')

  @staticmethod
  def _record(pushed, result, source, model_name, edge_note, warmup_note) -> None:
    """Every property of a push's PushedModel, in one place (names: contract.py)."""
    pushed.set_string_custom_property(contract.KIND, source.get('kind', 'encoder'))
    if source.get('kind') == finetune_contract.CLASSIFIER_KIND:
      pushed.set_int_custom_property(contract.ENCODER_VERSION, source.get('encoder_version', -1))
      pushed.set_string_custom_property(contract.ENCODER_MODEL_URI, source['encoder_model_uri'])
    pushed.set_string_custom_property(contract.EDGE_MODELS, edge_note)
    pushed.set_int_custom_property(contract.PUSHED, 1)
    pushed.set_string_custom_property(contract.PUSHED_DESTINATION, result['destination'])
    pushed.set_int_custom_property(contract.PUSHED_VERSION, result['version'])
    pushed.set_string_custom_property(contract.MODEL_NAME, model_name)
    pushed.set_string_custom_property(contract.MODELS_CONFIG_PATH, result['path'])
    pushed.set_string_custom_property(contract.RETIRED_VERSIONS,
                                      ','.join(map(str, result['retired'])))
    pushed.set_string_custom_property(contract.WARMUP, warmup_note)
    pushed.set_string_custom_property(
        contract.REASON, 'already pushed as this version' if result['already_pushed'] else 'blessed')

  @staticmethod
  def _edge_files(edge_models):
    """The accepted TFLite files of the EdgeModel (plus its preprocessing and parity notes),
    to travel inside the version folder under tflite/; and a note of what went and why."""
    if not edge_models:
      return {}, 'no edge export'
    edge = edge_models[0]
    files = {f'{EDGE_DIR}/{name}': os.path.join(edge.uri, name)
             for name in (edge_contract.PREPROCESSING_FILE, edge_contract.PARITY_FILE,
                          edge_contract.LABELS_FILE)
             if name != edge_contract.LABELS_FILE or
             tf.io.gfile.exists(os.path.join(edge.uri, name))}
    notes = []
    kind = edge.get_string_custom_property(edge_contract.KIND) or 'encoder'
    for fmt, name in edge_contract.formats(kind).items():
      reason = edge.get_string_custom_property(edge_contract.reason(fmt))
      if edge.get_int_custom_property(edge_contract.accepted(fmt)) == 1:
        files[f'{EDGE_DIR}/{name}'] = os.path.join(edge.uri, name)
        notes.append(f'{name} pushed')
      else:
        notes.append(f'{name} NOT pushed: {reason}')
    return files, '; '.join(notes)
