"""Context for the probe's number: the same probe on raw pixels and on a randomly initialised
encoder of the same architecture. If SimCLR features do not beat these, the training did not
help, whatever the absolute accuracy says."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from components.dual_view_transform import preprocessing
from components.simclr_trainer import model as model_lib


def decoded_pixels(image_batches, image_size: int) -> np.ndarray:
  """Encoded image batches -> float32 [n, S, S, 3] in [0, 1], the serving graph's resize."""
  decode = tf.function(lambda batch: preprocessing.decode_and_resize(batch, image_size))
  out = [decode(batch).numpy() for batch in image_batches]  # graph mode: 10x faster than eager
  return np.concatenate(out) if out else np.zeros([0, image_size, image_size, 3], np.float32)


def raw_pixel_features(pixels: np.ndarray) -> np.ndarray:
  return pixels.reshape(len(pixels), -1)


def random_encoder_features(pixels_sets, backbone: str, image_size: int,
                            width_multiplier: float, seed: int = 0, embedding_stages: int = 1,
                            embedding_pool: str = 'avg'):
  """Embeddings of each array in `pixels_sets` by a freshly initialised encoder (seeded), with
  the inputs standardised per channel by the first set's statistics; the same embedding as the
  trained model's (embedding_stages, embedding_pool), so the comparison is like for like."""
  keras.utils.set_random_seed(seed)
  embedder = model_lib.build_embedder(model_lib.build_encoder(backbone, image_size,
                                                             width_multiplier),
                                     backbone, embedding_stages, embedding_pool)
  reference = pixels_sets[0]
  mean = reference.mean(axis=(0, 1, 2), keepdims=True)
  std = reference.std(axis=(0, 1, 2), keepdims=True) + 1e-6
  results = []
  for pixels in pixels_sets:
    x = (pixels - mean) / std
    parts = [embedder(x[i:i + 256], training=False)[0].numpy() for i in range(0, len(x), 256)]
    results.append(np.concatenate(parts) if parts else np.zeros([0, embedder.output_shape[0][-1]]))
  return results
