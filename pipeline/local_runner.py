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

from pipeline.config import build_config
from pipeline.pipeline import create_pipeline
from pipeline.runner import resolve_data_dir


def config_from_environment():
  set_args = [p for p in os.environ.get('SIMCLR_TFX_SET', '').split(';') if p.strip()]
  return resolve_data_dir(build_config(
      preset=os.environ.get('SIMCLR_TFX_PRESET') or None,
      config_file=os.environ.get('SIMCLR_TFX_CONFIG') or None, set_args=set_args,
      data_dir=os.environ.get('SIMCLR_TFX_DATA_DIR') or None,
      output_dir=os.environ.get('SIMCLR_TFX_OUTPUT') or None))


PIPELINE = create_pipeline(config_from_environment())

if __name__ == '__main__':
  local_dag_runner.LocalDagRunner().run(PIPELINE)
