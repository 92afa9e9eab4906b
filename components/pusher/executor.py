"""Pusher executor: a blessed model goes to the TF Serving base path; anything else, nowhere."""
from __future__ import annotations

import logging

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.pusher import push


def is_blessed(blessing) -> bool:
  return blessing.get_int_custom_property('blessed') == 1


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    model = artifact_utils.get_single_instance(input_dict['model'])
    blessing = artifact_utils.get_single_instance(input_dict['model_blessing'])
    pushed = artifact_utils.get_single_instance(output_dict['pushed_model'])
    serving_base = exec_properties['serving_base_dir']
    model_name = exec_properties['model_name']

    if not is_blessed(blessing):
      reason = blessing.get_string_custom_property('reason') or 'model was not blessed'
      pushed.set_int_custom_property('pushed', 0)
      pushed.set_string_custom_property('reason', f'not pushed: {reason}')
      logging.warning('Pusher: model %s NOT pushed: %s', model.uri, reason)
      return

    result = push.push_model(path_utils.serving_model_path(model.uri), serving_base, model_name,
                             source_uri=model.uri,
                             metadata={'model_artifact_id': model.id,
                                       'blessing_artifact_id': blessing.id})
    pushed.set_int_custom_property('pushed', 1)
    pushed.set_string_custom_property('pushed_destination', result['destination'])
    pushed.set_int_custom_property('pushed_version', result['version'])
    pushed.set_string_custom_property('model_name', model_name)
    pushed.set_string_custom_property(
        'reason', 'already pushed as this version' if result['already_pushed'] else 'blessed')
    logging.info('Pusher: %s version %d at %s', 'kept' if result['already_pushed'] else 'pushed',
                 result['version'], result['destination'])
