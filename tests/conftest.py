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
