"""ImageIngest: a folder of images -> validated, de-duplicated, split tf.Example records.

Its settings are one IngestParams (params.py, where each default is written once), carried as
one JSON execution parameter; the data folder and its listing fingerprint come beside them.
"""
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import IngestReport
from components.image_ingest import executor
from components.image_ingest.params import IngestParams


class ImageIngestSpec(types.ComponentSpec):
  PARAMETERS = {
      'data_dir': ExecutionParameter(type=str),
      # Listing fingerprint of data_dir taken when the pipeline is built: a changed folder
      # changes this parameter, so TFX's cache never reuses an ingest of stale data.
      'source_fingerprint': ExecutionParameter(type=str),
      'params': ExecutionParameter(type=str),  # IngestParams as JSON
  }
  INPUTS = {}
  OUTPUTS = {
      'examples': ChannelParameter(type=standard_artifacts.Examples),
      'schema': ChannelParameter(type=standard_artifacts.Schema),
      'report': ChannelParameter(type=IngestReport),
  }


class ImageIngest(base_beam_component.BaseBeamComponent):
  SPEC_CLASS = ImageIngestSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, data_dir: str, source_fingerprint: str, params: IngestParams):
    spec = ImageIngestSpec(
        data_dir=data_dir, source_fingerprint=source_fingerprint, params=params.to_json(),
        examples=types.Channel(type=standard_artifacts.Examples),
        schema=types.Channel(type=standard_artifacts.Schema),
        report=types.Channel(type=IngestReport))
    super().__init__(spec=spec)
