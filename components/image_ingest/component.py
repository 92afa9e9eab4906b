"""ImageIngest: a folder of images -> validated, de-duplicated, split tf.Example records.

Every setting is a required parameter: the pipeline passes each from PipelineConfig, whose
defaults (pipeline/config.py) are the only ones, and the executor reads them as they are.
"""
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import IngestReport
from components.image_ingest import executor


class ImageIngestSpec(types.ComponentSpec):
  PARAMETERS = {
      'data_dir': ExecutionParameter(type=str),
      'eval_percent': ExecutionParameter(type=int),
      # Listing fingerprint of data_dir taken when the pipeline is built: a changed folder
      # changes this parameter, so TFX's cache never reuses an ingest of stale data.
      'source_fingerprint': ExecutionParameter(type=str),
      'min_side': ExecutionParameter(type=int),
      'max_pixels': ExecutionParameter(type=int),
      'max_file_bytes': ExecutionParameter(type=int),
      'max_bad_fraction': ExecutionParameter(type=float),
      'labelled_fraction': ExecutionParameter(type=float),
      'include_globs': ExecutionParameter(type=str),  # comma-separated; '' = every file
      'exclude_globs': ExecutionParameter(type=str),
      'manifest': ExecutionParameter(type=str),  # CSV path,label; '' = folder mode
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

  def __init__(self, data_dir: str, eval_percent: int, source_fingerprint: str, *,
               min_side: int, max_pixels: int, max_file_bytes: int, max_bad_fraction: float,
               labelled_fraction: float, include_globs: str, exclude_globs: str,
               manifest: str):
    spec = ImageIngestSpec(
        data_dir=data_dir, eval_percent=eval_percent, source_fingerprint=source_fingerprint,
        min_side=min_side, max_pixels=max_pixels, max_file_bytes=max_file_bytes,
        max_bad_fraction=max_bad_fraction, labelled_fraction=labelled_fraction,
        include_globs=include_globs, exclude_globs=exclude_globs, manifest=manifest,
        examples=types.Channel(type=standard_artifacts.Examples),
        schema=types.Channel(type=standard_artifacts.Schema),
        report=types.Channel(type=IngestReport))
    super().__init__(spec=spec)
