"""ClassifierEvaluator: linear probe, fine-tuned, distilled and supervised models on the same
eval images; blesses the served classifier or not."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import Embeddings
from components.classifier_evaluator import executor
from components.classifier_evaluator.params import ClassifierEvaluatorParams


class ClassifierEvaluatorSpec(types.ComponentSpec):
  PARAMETERS = {
      'params': ExecutionParameter(type=str),  # ClassifierEvaluatorParams as JSON
  }
  INPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'classifier': ChannelParameter(type=standard_artifacts.Model),
      'finetune_run': ChannelParameter(type=standard_artifacts.ModelRun),
      # The pretrained encoder's embeddings (the Embedder's): the linear probe's features.
      'embeddings': ChannelParameter(type=Embeddings),
  }
  OUTPUTS = {
      'evaluation': ChannelParameter(type=standard_artifacts.ModelEvaluation),
      'blessing': ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class ClassifierEvaluator(base_component.BaseComponent):
  SPEC_CLASS = ClassifierEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, classifier: types.BaseChannel,
               finetune_run: types.BaseChannel, embeddings: types.BaseChannel,
               params: ClassifierEvaluatorParams):
    spec = ClassifierEvaluatorSpec(
        examples=examples, classifier=classifier, finetune_run=finetune_run,
        embeddings=embeddings, params=params.to_json(),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
