"""FineTuner: SimCLRv2's fine-tune and distil stages, from the pretrained encoder to a
classifier (and the supervised-from-scratch comparison)."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.fine_tuner import executor
from components.fine_tuner.params import FineTunerParams


class FineTunerSpec(types.ComponentSpec):
  PARAMETERS = {
      'params': ExecutionParameter(type=str),  # FineTunerParams as JSON
      'checkpoint_root': ExecutionParameter(type=str),  # the trainer's: finetune-<fp>/ inside
  }
  INPUTS = {
      'transformed_examples': ChannelParameter(type=standard_artifacts.Examples),
      'transform_graph': ChannelParameter(type=standard_artifacts.TransformGraph),
      'model': ChannelParameter(type=standard_artifacts.Model),  # the pretrained encoder
      'examples': ChannelParameter(type=standard_artifacts.Examples),  # the class names
  }
  OUTPUTS = {
      'classifier': ChannelParameter(type=standard_artifacts.Model),
      'finetune_run': ChannelParameter(type=standard_artifacts.ModelRun),
  }


class FineTuner(base_component.BaseComponent):
  SPEC_CLASS = FineTunerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, transformed_examples: types.BaseChannel, transform_graph: types.BaseChannel,
               model: types.BaseChannel, examples: types.BaseChannel, params: FineTunerParams,
               checkpoint_root: str):
    spec = FineTunerSpec(
        transformed_examples=transformed_examples, transform_graph=transform_graph, model=model,
        examples=examples, params=params.to_json(), checkpoint_root=checkpoint_root,
        classifier=types.Channel(type=standard_artifacts.Model),
        finetune_run=types.Channel(type=standard_artifacts.ModelRun))
    super().__init__(spec=spec)
