"""The base of the project's Beam executors (ImageIngest, DualViewTransform, Embedder).

TFX's BaseBeamExecutor, given any beam_pipeline_args, copies the installed TFX into a new
`tempfile.mkdtemp()` folder, builds an sdist of it there (about 50 MB and 2-3 s) and adds it to
the args as `--extra_package`, so that a remote Beam worker could install TFX. The folder is
never deleted: every Beam step of every run left 50 MB in /tmp, outside the output folder, until
the disk was full. The package is of no use to this project on any runner: the DirectRunner and
a local job server run in this environment, and on Dataflow, Flink and Spark the workers run the
project's worker image (docs/scale-out.md), which has TFX, the project's code and the lock; a
bare TFX sdist would have neither the project's code nor the lock.

So these executors take the args as given. A user who does want a package staged passes
`--extra_package`, `--setup_file` or `--requirements_file` in beam_pipeline_args, as Beam
documents.

Beam itself makes folders in the system temp folder on every run (its embedded job server's
staging folders, its requirements cache) and leaves them behind, empty. While one of these
executors' pipelines is built and run, the process's temp folder is a new folder of its own,
deleted when the pipeline ends, whether it succeeded or not.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator, Optional

from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.components.base import base_executor


class BeamExecutor(base_beam_executor.BaseBeamExecutor):
  """BaseBeamExecutor that passes beam_pipeline_args through unchanged (no TFX sdist)."""

  def __init__(self, context: Optional[base_beam_executor.BaseBeamExecutor.Context] = None):
    # BaseBeamExecutor.__init__ is what builds the sdist, so it is skipped; its two attributes,
    # which _make_beam_pipeline reads, are set here as it would set them.
    base_executor.BaseExecutor.__init__(self, context)
    if context is not None and not isinstance(context, base_beam_executor.BaseBeamExecutor.Context):
      raise ValueError('a Beam executor needs a BaseBeamExecutor.Context (a BeamExecutorSpec)')
    self._beam_pipeline_args = list(getattr(context, 'beam_pipeline_args', None) or [])
    self._make_beam_pipeline_fn = getattr(context, 'make_beam_pipeline_fn', None)

  @contextlib.contextmanager
  def _make_beam_pipeline(self) -> Iterator:
    """`with self._make_beam_pipeline() as p:` as in TFX, with the temp folder of its own."""
    with _scoped_temp_dir():
      with super()._make_beam_pipeline() as pipeline:
        yield pipeline


@contextlib.contextmanager
def _scoped_temp_dir() -> Iterator[str]:
  """Points tempfile and TMPDIR (for worker processes) at a new folder, then deletes it. The
  orchestrators run one executor at a time per process, so nothing else sees the change."""
  saved = tempfile.tempdir, os.environ.get('TMPDIR')
  scoped = tempfile.mkdtemp(prefix='simclr-beam-')
  tempfile.tempdir, os.environ['TMPDIR'] = scoped, scoped
  try:
    yield scoped
  finally:
    tempfile.tempdir = saved[0]
    if saved[1] is None:
      os.environ.pop('TMPDIR', None)
    else:
      os.environ['TMPDIR'] = saved[1]
    shutil.rmtree(scoped, ignore_errors=True)
