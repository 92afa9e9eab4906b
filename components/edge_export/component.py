"""EdgeExport: the trained encoder as TensorFlow Lite, float32 and int8, with a parity check."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import EdgeModel
from components.edge_export import executor


class EdgeExportSpec(types.ComponentSpec):
  PARAMETERS = {
      'calibration_images': ExecutionParameter(type=int),
      'parity_images': ExecutionParameter(type=int),
      'min_cosine_float': ExecutionParameter(type=float),
      'min_cosine_int8': ExecutionParameter(type=float),
      'max_top1_drop': ExecutionParameter(type=float),
  }
  INPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'examples': ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {
      'edge_model': ChannelParameter(type=EdgeModel),
  }


class EdgeExport(base_component.BaseComponent):
  SPEC_CLASS = EdgeExportSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel, **params):
    spec = EdgeExportSpec(model=model, examples=examples,
                          edge_model=types.Channel(type=EdgeModel), **params)
    super().__init__(spec=spec)
