"""SimCLRTrainer: ResNet encoder + projection head, NT-Xent, exported with a raw-bytes signature."""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.simclr_trainer import executor


class SimCLRTrainerSpec(types.ComponentSpec):
  PARAMETERS = {
      'backbone': ExecutionParameter(type=str),
      'width_multiplier': ExecutionParameter(type=float),
      'head_layers': ExecutionParameter(type=int),
      'projection_dim': ExecutionParameter(type=int),
      'batch_size': ExecutionParameter(type=int),
      'epochs': ExecutionParameter(type=int),
      'train_steps': ExecutionParameter(type=int),
      # > 0: pretraining fits in this many minutes (the step count is set from the measured pace).
      'train_minutes': ExecutionParameter(type=float),
      'temperature': ExecutionParameter(type=float),
      # nt_xent (default) or dcl. Optional, so pipelines compiled before it still run.
      'contrastive_loss': ExecutionParameter(type=str, optional=True),
      'optimizer': ExecutionParameter(type=str),
      'learning_rate': ExecutionParameter(type=float),
      'lr_scaling': ExecutionParameter(type=str),
      'weight_decay': ExecutionParameter(type=float),
      'warmup_fraction': ExecutionParameter(type=float),
      'seed': ExecutionParameter(type=int),
      'checkpoint_every_steps': ExecutionParameter(type=int),
      'negatives_queue_size': ExecutionParameter(type=int),
      'precision': ExecutionParameter(type=str),
      'jit_compile': ExecutionParameter(type=int),  # 0/1 (MLMD has no bool)
      'knn_monitor_every_epochs': ExecutionParameter(type=int),
      # What the exported `embedding` reads: 1 = h (SimCLR's protocol); k = the pooled outputs of
      # the last k stages side by side. Not part of training.
      'embedding_stages': ExecutionParameter(type=int, optional=True),
      # How each of those stages is pooled: avg (default) or avg_max. Not part of training.
      'embedding_pool': ExecutionParameter(type=str, optional=True),
      # Stable folder (not the execution's output URI) so a rerun finds its checkpoints.
      'checkpoint_root': ExecutionParameter(type=str),
      # Checkpoints kept (newest first); 0 = all, e.g. to probe the encoder along training.
      'keep_checkpoints': ExecutionParameter(type=int, optional=True),
      # auto | default | mirrored | multi_worker_mirrored: how the step is replicated, a runtime
      # choice rather than a hyper-parameter (the loss is the same on any replica count).
      'distribution_strategy': ExecutionParameter(type=str, optional=True),
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
               base_model: types.BaseChannel | None = None, **params):
    spec = SimCLRTrainerSpec(
        transformed_examples=transformed_examples, transform_graph=transform_graph,
        base_model=base_model,
        model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun), **params)
    super().__init__(spec=spec)
