"""The Embedder's Beam transform: every record of an ingested split through the served
SavedModel with Beam's RunInference, so it runs wherever the Beam runner runs (one process, a
worker pool, Dataflow) with the model loaded once per worker process.

The model is called through `serving_default` on the stored encoded bytes, as TF Serving would
be, and within the served request bounds (components/limits.py): Beam's batches hold at most
MAX_REQUEST_IMAGES images and are split further by declared pixels before each call.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, RunInference

from components import io_utils, limits
from components.embedder import contract
import schemas

# The ingest's keys that an embedding record keeps: identity and label, not the image.
KEPT_INT_KEYS = (schemas.LABEL_KEY, schemas.LABELLED_KEY)
KEPT_BYTES_KEYS = (schemas.SHA256_KEY, schemas.FILENAME_KEY)
_MIN_BATCH = 16


def parse_record(serialized: bytes) -> Dict[str, Any]:
  """One ingested record -> the fields the model and the output record need."""
  feature = tf.train.Example.FromString(serialized).features.feature
  record = {key: feature[key].int64_list.value[0] for key in KEPT_INT_KEYS}
  record.update({key: feature[key].bytes_list.value[0] for key in KEPT_BYTES_KEYS})
  record['image'] = feature[schemas.IMAGE_KEY].bytes_list.value[0]
  record['pixels'] = (feature[schemas.HEIGHT_KEY].int64_list.value[0] *
                      feature[schemas.WIDTH_KEY].int64_list.value[0])
  return record


def to_example(record: Dict[str, Any]) -> bytes:
  """An embedded record as the tf.train.Example of contract.py."""
  feature = {key: tf.train.Feature(int64_list=tf.train.Int64List(value=[record[key]]))
             for key in KEPT_INT_KEYS}
  feature.update({key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[record[key]]))
                  for key in KEPT_BYTES_KEYS})
  feature[contract.EMBEDDING_KEY] = tf.train.Feature(
      float_list=tf.train.FloatList(value=record[contract.EMBEDDING_KEY]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class ServingModelHandler(ModelHandler[Dict[str, Any], Dict[str, Any], Any]):
  """RunInference's handler for the exported SavedModel's serving signature."""

  def __init__(self, saved_model_dir: str):
    super().__init__(min_batch_size=_MIN_BATCH, max_batch_size=limits.MAX_REQUEST_IMAGES)
    self._saved_model_dir = saved_model_dir

  def load_model(self):
    return io_utils.load_serving_signature(self._saved_model_dir)

  def run_inference(self, batch: Sequence[Dict[str, Any]], model,
                    inference_args: Optional[Dict[str, Any]] = None) -> Iterable[Dict[str, Any]]:
    requests = [tf.constant([batch[i]['image'] for i in request])
                for request in limits.plan_batches([r['pixels'] for r in batch])]
    embeddings = io_utils.embed_batches(model, requests).astype(np.float32)
    return [{**{k: v for k, v in record.items() if k not in ('image', 'pixels')},
             contract.EMBEDDING_KEY: embedding.tolist()}
            for record, embedding in zip(batch, embeddings)]

  def get_num_bytes(self, batch: Sequence[Dict[str, Any]]) -> int:
    return sum(len(record['image']) for record in batch)

  def get_metrics_namespace(self) -> str:
    return 'simclr_tfx.Embedder'


class LogProgress(beam.DoFn):
  """Passes records through; every LOG_SECONDS logs how many this worker process embedded,
  its rate and, against the split's total, an ETA (exact on one worker, per worker on many)."""
  LOG_SECONDS = 10.0

  def __init__(self, label: str, total: int):
    super().__init__()
    self._label, self._total = label, total

  def setup(self):
    self._count, self._started = 0, time.time()
    self._last = self._started

  def process(self, record):
    self._count += 1
    now = time.time()
    if now - self._last >= self.LOG_SECONDS:
      self._last = now
      rate = self._count / (now - self._started)
      if self._total:
        left = max(self._total - self._count, 0) / max(rate, 1e-9)
        logging.info('Embedder[%s]: %d/%d images, %.1f images/s, ETA %d s', self._label,
                     self._count, self._total, rate, left)
      else:
        logging.info('Embedder[%s]: %d images, %.1f images/s', self._label, self._count, rate)
    yield record


class EmbedSplit(beam.PTransform):
  """Ingested gzip TFRecords (file pattern) -> embedding records (contract.py) under prefix;
  total: the split's record count, for the progress log."""

  def __init__(self, files: Sequence[str], saved_model_dir: str, output_prefix: str,
               label: str = '', total: int = 0):
    super().__init__()
    self._files, self._model, self._prefix = list(files), saved_model_dir, output_prefix
    self._label, self._total = label, total

  def expand(self, pipeline):
    return (pipeline
            | 'Files' >> beam.Create(self._files)
            | 'Read' >> beam.io.ReadAllFromTFRecord(
                compression_type=beam.io.filesystem.CompressionTypes.GZIP)
            | 'Parse' >> beam.Map(parse_record)
            | 'Embed' >> RunInference(ServingModelHandler(self._model))
            | 'Progress' >> beam.ParDo(LogProgress(self._label, self._total))
            | 'Encode' >> beam.Map(to_example)
            | 'Write' >> beam.io.WriteToTFRecord(
                self._prefix, file_name_suffix='.gz',
                compression_type=beam.io.filesystem.CompressionTypes.GZIP))
