"""DualViewTransform: the TFT decode/resize/normalise graph plus the SimCLR augmentation policy."""
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.dual_view_transform import executor
from components.dual_view_transform.params import TransformParams


class DualViewTransformSpec(types.ComponentSpec):
  PARAMETERS = {
      'params': ExecutionParameter(type=str),  # TransformParams as JSON: the policy's settings
  }
  INPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'schema': ChannelParameter(type=standard_artifacts.Schema),
  }
  OUTPUTS = {
      'transform_graph': ChannelParameter(type=standard_artifacts.TransformGraph),
      'transformed_examples': ChannelParameter(type=standard_artifacts.Examples),
  }


class DualViewTransform(base_beam_component.BaseBeamComponent):
  SPEC_CLASS = DualViewTransformSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, schema: types.BaseChannel,
               params: TransformParams):
    spec = DualViewTransformSpec(
        examples=examples, schema=schema, params=params.to_json(),
        transform_graph=types.Channel(type=standard_artifacts.TransformGraph),
        transformed_examples=types.Channel(type=standard_artifacts.Examples))
    super().__init__(spec=spec)
