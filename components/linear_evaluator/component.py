"""LinearEvaluator: frozen-encoder linear probe and kNN on labelled images; blesses or rejects."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import Embeddings
from components.linear_evaluator import executor
from components.linear_evaluator.params import EvaluatorParams


class LinearEvaluatorSpec(types.ComponentSpec):
  PARAMETERS = {
      'params': ExecutionParameter(type=str),  # EvaluatorParams as JSON
      # <serving_dir>/<model_name>: compare with its newest pushed version when the DAG has no
      # resolver (components/baseline.py); '' = no such folder.
      'baseline_model_dir': ExecutionParameter(type=str),
  }
  INPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'model': ChannelParameter(type=standard_artifacts.Model),
      # The model's embeddings of every ingested image (the Embedder's).
      'embeddings': ChannelParameter(type=Embeddings),
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
               embeddings: types.BaseChannel, params: EvaluatorParams,
               baseline_model: types.BaseChannel | None = None, baseline_model_dir: str = ''):
    spec = LinearEvaluatorSpec(
        examples=examples, model=model, embeddings=embeddings, baseline_model=baseline_model,
        params=params.to_json(), baseline_model_dir=baseline_model_dir,
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
