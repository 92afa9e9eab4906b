"""TensorFlow Lite conversion and inference of the encoder, and the parity measures.

The edge model is the SavedModel's `serving_pixels` signature, variables frozen into constants:
input float32 [1, S, S, 3] RGB pixels 0..255, already decoded and resized exactly as
`preprocessing.decode_and_resize` does (bilinear, antialiased, whole frame); normalisation is
inside the model. Output: the embedding h, float32 [1, D].
"""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import

from components.dual_view_transform import preprocessing
from components.simclr_trainer import export



def _frozen_pixels_fn(saved_model_dir: str):
  loaded = tf.saved_model.load(saved_model_dir)
  signature = loaded.signatures[export.PIXELS_SIGNATURE]
  return convert_to_constants.convert_variables_to_constants_v2(signature), loaded


def convert(saved_model_dir: str, calibration_pixels: np.ndarray | None = None) -> bytes:
  """float32 TFLite model, or full-integer int8 when calibration pixels are given
  ([N, S, S, 3] float32 0..255; a few hundred real images). Input and output stay float32,
  so callers feed the same tensor to both formats."""
  frozen, _ = _frozen_pixels_fn(saved_model_dir)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
  if calibration_pixels is not None:
    def representative():
      for image in calibration_pixels:
        yield [image[np.newaxis].astype(np.float32)]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
  return converter.convert()


class TFLiteEncoder:
  """Runs a .tflite encoder one image at a time (batch 1, as on a device)."""

  def __init__(self, model: str | bytes, num_threads: int = 1):
    kwargs = {'model_content': model} if isinstance(model, bytes) else {'model_path': model}
    self.interpreter = tf.lite.Interpreter(num_threads=num_threads, **kwargs)
    self.interpreter.allocate_tensors()
    self.input = self.interpreter.get_input_details()[0]
    self.output = self.interpreter.get_output_details()[0]
    self.image_size = int(self.input['shape'][1])

  def embed_one(self, pixels: np.ndarray) -> np.ndarray:
    self.interpreter.set_tensor(self.input['index'], pixels[np.newaxis].astype(np.float32))
    self.interpreter.invoke()
    return self.interpreter.get_tensor(self.output['index'])[0].copy()

  def embed(self, pixels: Iterable[np.ndarray]) -> np.ndarray:
    return np.stack([self.embed_one(p) for p in pixels])


_DECODE_CHUNK = 256


def decode_pixels(encoded: Iterable[bytes], image_size: int) -> np.ndarray:
  """Encoded images -> float32 [N, S, S, 3] pixels 0..255, exactly as the TFT graph does.

  In graph mode, a chunk at a time: eagerly, map_fn re-traces its per-image function for every
  image (tens of milliseconds each, minutes for a few thousand images)."""
  encoded = list(encoded)
  decode = tf.function(lambda batch: tf.round(
      preprocessing.decode_and_resize(batch, image_size) * 255.0))
  chunks = [decode(tf.constant(encoded[i:i + _DECODE_CHUNK])).numpy()
            for i in range(0, len(encoded), _DECODE_CHUNK)]
  return (np.concatenate(chunks) if chunks
          else np.zeros([0, image_size, image_size, 3], np.float32))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise cosine similarity."""
  norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
  return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def write_model(directory: str, name: str, content: bytes) -> str:
  path = os.path.join(directory, name)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(content)
  return path
