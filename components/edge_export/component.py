"""EdgeExport: the trained encoder as TensorFlow Lite, float32 and int8, with a parity check."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import EdgeModel
from components.edge_export import executor
from components.edge_export.params import EdgeExportParams


class EdgeExportSpec(types.ComponentSpec):
  PARAMETERS = {
      'params': ExecutionParameter(type=str),  # EdgeExportParams as JSON
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

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
               params: EdgeExportParams):
    spec = EdgeExportSpec(model=model, examples=examples, params=params.to_json(),
                          edge_model=types.Channel(type=EdgeModel))
    super().__init__(spec=spec)
