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
      # Comma-separated fractions of the labelled train records to probe with, e.g.
      # '0.01,0.1,1'; 1 (all of them) is always included and gives the headline numbers.
      # Every parameter is required: its one default is in pipeline/config.py.
      'probe_fractions': ExecutionParameter(type=str),
      # Bless only if linear_top1 >= baseline's - this (negative: must improve by that much).
      'max_drop_vs_baseline': ExecutionParameter(type=float),
      # 1: also probe raw pixels and a random-init encoder, for context.
      'context_baselines': ExecutionParameter(type=int),
  }
  INPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'model': ChannelParameter(type=standard_artifacts.Model),
      # The latest blessed model (a resolver's output), compared on the same data.
      'baseline_model': ChannelParameter(type=standard_artifacts.Model, optional=True),
  }
  OUTPUTS = {
      'evaluation': ChannelParameter(type=standard_artifacts.ModelEvaluation),
      'blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class LinearEvaluator(base_component.BaseComponent):
  SPEC_CLASS = LinearEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
               min_linear_top1: float, knn_k: int, probe_fractions: str,
               max_drop_vs_baseline: float, context_baselines: bool,
               baseline_model: types.BaseChannel | None = None):
    spec = LinearEvaluatorSpec(
        examples=examples, model=model, baseline_model=baseline_model,
        min_linear_top1=min_linear_top1, knn_k=knn_k, probe_fractions=probe_fractions,
        max_drop_vs_baseline=max_drop_vs_baseline, context_baselines=int(context_baselines),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
