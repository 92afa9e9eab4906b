"""Pusher: a blessed model (the encoder, or the classifier) -> <serving_base_dir>/<model_name>/<version>/,
atomically."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import EdgeModel
from components.pusher import executor
from components.pusher.params import PusherParams


class PusherSpec(types.ComponentSpec):
  PARAMETERS = {
      'serving_base_dir': ExecutionParameter(type=str),  # TF Serving's model base folder
      'params': ExecutionParameter(type=str),  # PusherParams as JSON
  }
  INPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'model_blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
      'edge_model': ChannelParameter(type=EdgeModel, optional=True),
      # Real images for the warmup requests.
      'examples': ChannelParameter(type=standard_artifacts.Examples, optional=True),
      # A classifier's push: the push of the encoder it was fine-tuned from, whose version its
      # source record names (lineage from classifier version to encoder version).
      'encoder_push': ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
  }
  OUTPUTS = {
      'pushed_model': ChannelParameter(type=standard_artifacts.PushedModel),
  }


class Pusher(base_component.BaseComponent):
  SPEC_CLASS = PusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               serving_base_dir: str, params: PusherParams,
               edge_model: types.BaseChannel | None = None,
               examples: types.BaseChannel | None = None,
               encoder_push: types.BaseChannel | None = None):
    spec = PusherSpec(model=model, model_blessing=model_blessing, edge_model=edge_model,
                      examples=examples, encoder_push=encoder_push,
                      serving_base_dir=serving_base_dir,
                      params=params.to_json(),
                      pushed_model=types.Channel(type=standard_artifacts.PushedModel))
    super().__init__(spec=spec)
