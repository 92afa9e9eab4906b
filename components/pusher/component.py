"""Pusher: a blessed encoder -> <serving_base_dir>/<model_name>/<version>/, atomically."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import EdgeModel
from components.pusher import executor


class PusherSpec(types.ComponentSpec):
  PARAMETERS = {
      'serving_base_dir': ExecutionParameter(type=str),
      'model_name': ExecutionParameter(type=str),
      # Every parameter is required: its one default is in pipeline/config.py.
      'keep_versions': ExecutionParameter(type=int),  # 0 = keep all
      'warmup_images': ExecutionParameter(type=int),  # 0 = no warmup file
      # The base path as TF Serving sees it, for models.config; '' = serving_base_dir.
      'serving_config_base_path': ExecutionParameter(type=str),
  }
  INPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'model_blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
      'edge_model': ChannelParameter(type=EdgeModel, optional=True),
      # Real images for the warmup requests.
      'examples': ChannelParameter(type=standard_artifacts.Examples, optional=True),
  }
  OUTPUTS = {
      'pushed_model': ChannelParameter(type=standard_artifacts.PushedModel),
  }


class Pusher(base_component.BaseComponent):
  SPEC_CLASS = PusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               serving_base_dir: str, model_name: str, keep_versions: int,
               warmup_images: int, serving_config_base_path: str,
               edge_model: types.BaseChannel | None = None,
               examples: types.BaseChannel | None = None):
    spec = PusherSpec(model=model, model_blessing=model_blessing, edge_model=edge_model,
                      examples=examples, serving_base_dir=serving_base_dir,
                      model_name=model_name, keep_versions=keep_versions,
                      warmup_images=warmup_images,
                      serving_config_base_path=serving_config_base_path,
                      pushed_model=types.Channel(type=standard_artifacts.PushedModel))
    super().__init__(spec=spec)
