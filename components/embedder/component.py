"""Embedder: every ingested image through the trained SavedModel with Beam's RunInference."""
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter

from components.artifacts import Embeddings
from components.embedder import executor


class EmbedderSpec(types.ComponentSpec):
  PARAMETERS = {}
  INPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'model': ChannelParameter(type=standard_artifacts.Model),
  }
  OUTPUTS = {
      'embeddings': ChannelParameter(type=Embeddings),
  }


class Embedder(base_beam_component.BaseBeamComponent):
  SPEC_CLASS = EmbedderSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, model: types.BaseChannel):
    spec = EmbedderSpec(examples=examples, model=model,
                        embeddings=types.Channel(type=Embeddings))
    super().__init__(spec=spec)
