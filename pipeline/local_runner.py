"""Entry point for TFX's own CLI flow on this machine:

  tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
  tfx run create --engine local --pipeline_name simclr-tfx

The configuration comes from the environment so the same file serves any data set:
SIMCLR_TFX_CONFIG (a YAML/JSON config file), SIMCLR_TFX_PRESET, SIMCLR_TFX_DATA_DIR,
SIMCLR_TFX_OUTPUT and
SIMCLR_TFX_SET ("name=value;name=value"). Without them it runs the embedded demo into ./out.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from tfx.orchestration.local import local_dag_runner

from components import errors
from pipeline.pipeline import create_pipeline
from pipeline.runner import config_from_environment, locked_output

CONFIG = config_from_environment()
PIPELINE = create_pipeline(CONFIG)


def main() -> int:
  """Runs PIPELINE under the output folder's run lock, as `simclr-tfx run` does; an expected
  failure (a locked or unwritable folder, Ctrl-C) ends with one line, not a traceback."""
  try:
    with locked_output(CONFIG):
      local_dag_runner.LocalDagRunner().run(PIPELINE)
  except BaseException as e:  # pylint: disable=broad-except
    return errors.report_failure(e, verbose=False)
  return 0


if __name__ == '__main__':
  # Exit only on failure: `tfx pipeline create` executes this file in its own process, where a
  # SystemExit(0) would end the CLI before it saves the pipeline.
  if main():
    sys.exit(1)
