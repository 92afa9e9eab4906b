"""ImageIngest: a folder of images -> validated, de-duplicated, split tf.Example records."""
from typing import Optional

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
      'min_side': ExecutionParameter(type=int, optional=True),
      'max_pixels': ExecutionParameter(type=int, optional=True),
      'max_bad_fraction': ExecutionParameter(type=float, optional=True),
      'labelled_fraction': ExecutionParameter(type=float, optional=True),
      'include_globs': ExecutionParameter(type=str, optional=True),  # comma-separated
      'exclude_globs': ExecutionParameter(type=str, optional=True),
      'manifest': ExecutionParameter(type=str, optional=True),  # CSV path,label
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

  def __init__(self, data_dir: str, eval_percent: int, source_fingerprint: str,
               min_side: Optional[int] = None, max_pixels: Optional[int] = None,
               max_bad_fraction: Optional[float] = None,
               labelled_fraction: Optional[float] = None, include_globs: Optional[str] = None,
               exclude_globs: Optional[str] = None, manifest: Optional[str] = None):
    spec = ImageIngestSpec(
        data_dir=data_dir, eval_percent=eval_percent, source_fingerprint=source_fingerprint,
        min_side=min_side, max_pixels=max_pixels, max_bad_fraction=max_bad_fraction,
        labelled_fraction=labelled_fraction, include_globs=include_globs,
        exclude_globs=exclude_globs, manifest=manifest,
        examples=types.Channel(type=standard_artifacts.Examples),
        schema=types.Channel(type=standard_artifacts.Schema),
        report=types.Channel(type=IngestReport))
    super().__init__(spec=spec)
