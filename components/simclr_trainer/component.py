"""SimCLRTrainer: ResNet encoder + projection head, NT-Xent, exported with a raw-bytes signature."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.simclr_trainer import executor
from components.simclr_trainer.params import TrainerParams


class SimCLRTrainerSpec(types.ComponentSpec):
  PARAMETERS = {
      'params': ExecutionParameter(type=str),  # TrainerParams as JSON
      # Stable folder (not the execution's output URI) so a rerun finds its checkpoints.
      'checkpoint_root': ExecutionParameter(type=str),
      # <serving_dir>/<model_name>: warm start from its newest pushed version when the DAG has
      # no resolver (components/baseline.py); '' = no such folder.
      'baseline_model_dir': ExecutionParameter(type=str),
  }
  INPUTS = {
      'transformed_examples': ChannelParameter(type=standard_artifacts.Examples),
      'transform_graph': ChannelParameter(type=standard_artifacts.TransformGraph),
      # Optional: the latest blessed Model (a resolver's output) to warm start from.
      'base_model': ChannelParameter(type=standard_artifacts.Model, optional=True),
  }
  OUTPUTS = {
      'model': ChannelParameter(type=standard_artifacts.Model),
      'model_run': ChannelParameter(type=standard_artifacts.ModelRun),
  }


class SimCLRTrainer(base_component.BaseComponent):
  SPEC_CLASS = SimCLRTrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, transformed_examples: types.BaseChannel, transform_graph: types.BaseChannel,
               params: TrainerParams, checkpoint_root: str,
               base_model: types.BaseChannel | None = None, baseline_model_dir: str = ''):
    spec = SimCLRTrainerSpec(
        transformed_examples=transformed_examples, transform_graph=transform_graph,
        base_model=base_model, params=params.to_json(), checkpoint_root=checkpoint_root,
        baseline_model_dir=baseline_model_dir,
        model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun))
    super().__init__(spec=spec)
