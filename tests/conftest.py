import io
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(os.path.dirname(REPO), 'shared', 'datasets')


def png_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


@pytest.fixture(scope='session')
def mnist_subset(tmp_path_factory):
  """300 real MNIST digits (30 per class) from the embedded demo data, as PNG class folders."""
  from pipeline import demo_data
  return demo_data.write_demo_dataset(str(tmp_path_factory.mktemp('data') / 'mnist300'),
                                      limit=300)


def smoke_config(data_dir, out, **overrides):
  from pipeline.config import build_config
  return build_config(preset='smoke', data_dir=data_dir, output_dir=str(out),
                      set_args=[f'{k}={v}' for k, v in overrides.items()])


@pytest.fixture(scope='session')
def local_run(mnist_subset, tmp_path_factory):
  """One smoke run of the whole DAG with LocalDagRunner, shared by the tests that read what it
  wrote: (config, summary, metadata path)."""
  from pipeline import runner
  out = tmp_path_factory.mktemp('local_run')
  config = smoke_config(mnist_subset, out)
  summary = runner.run_pipeline(config, engine='local')
  return config, summary, os.path.join(str(out), 'metadata.sqlite')
