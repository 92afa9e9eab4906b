"""LinearEvaluator: frozen-encoder linear probe and kNN on labelled images; blesses or rejects."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.linear_evaluator import executor


class LinearEvaluatorSpec(types.ComponentSpec):
  PARAMETERS = {
      'min_linear_top1': ExecutionParameter(type=float),
      'knn_k': ExecutionParameter(type=int),
  }
  INPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'model': ChannelParameter(type=standard_artifacts.Model),
  }
  OUTPUTS = {
      'evaluation': ChannelParameter(type=standard_artifacts.ModelEvaluation),
      'blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class LinearEvaluator(base_component.BaseComponent):
  SPEC_CLASS = LinearEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
               min_linear_top1: float, knn_k: int):
    spec = LinearEvaluatorSpec(
        examples=examples, model=model, min_linear_top1=min_linear_top1, knn_k=knn_k,
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
