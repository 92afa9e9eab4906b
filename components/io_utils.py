"""Small file helpers shared by the executors (all paths may be local or tf.io.gfile URIs)."""
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

import schemas
from components import limits
from components.embedder import contract as embedder_contract
from components.simclr_trainer import contract as trainer_contract

_READ_BATCH = 256  # records read at a time; requests to serving_default: limits.plan_batches


def make_output_dirs(output_dict) -> None:
  """Creates each output artifact's folder. LocalDagRunner does this before an executor runs;
  KFP's launcher does not (object stores have no folders), so on a cluster volume the executor
  must."""
  for artifacts in output_dict.values():
    for artifact in artifacts:
      tf.io.gfile.makedirs(artifact.uri)


def write_json(path: str, value: Any) -> None:
  """Writes JSON through a temporary name and a rename, so readers never see half a file."""
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(json.dumps(value, indent=2, sort_keys=True, default=str))
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read_json(path: str) -> Any:
  with tf.io.gfile.GFile(path, 'r') as f:
    return json.loads(f.read())


def split_files(split_uri: str) -> list:
  """The gzip TFRecord files of one split folder (Split-<name>)."""
  files = sorted(tf.io.gfile.glob(os.path.join(split_uri, '*.gz')))
  if not files:
    raise FileNotFoundError(f'no TFRecord files (*.gz) in {split_uri}')
  return files


def encoded_images(split_uri: str, limit: int) -> list:
  """The first `limit` encoded images (`image/encoded` bytes) of one split of raw Examples."""
  spec = {schemas.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
  data = (tf.data.TFRecordDataset(split_files(split_uri), compression_type='GZIP')
          .map(lambda r: tf.io.parse_single_example(r, spec)[schemas.IMAGE_KEY]).take(limit))
  return [x.numpy() for x in data]


def load_serving_signature(saved_model_dir: str):
  """An exported SavedModel's served signature, serving_default: encoded image bytes in; the
  encoder's embedding, or the classifier's top-k, out."""
  return tf.saved_model.load(saved_model_dir).signatures[trainer_contract.SERVING_SIGNATURE]


def embed_batches(serving_fn, image_batches) -> np.ndarray:
  """The served embeddings of batches of encoded images (each one request the signature
  accepts: limits.plan_batches), concatenated in order."""
  outputs = [serving_fn(**{trainer_contract.SERVING_INPUT: batch})[
      trainer_contract.SERVING_EMBEDDING].numpy() for batch in image_batches]
  return np.concatenate(outputs) if outputs else np.zeros([0, 0], np.float32)


def read_labelled(split_uri: str, limit: int = 0):
  """(encoded image batches, labels) of the records of one raw split whose label may be used:
  flagged by ImageIngest (train: within the labelled fraction; eval: every labelled record);
  the first `limit` of them when limit > 0.

  Each batch is one request that serving_default accepts (limits.plan_batches over the stored
  height x width), in record order: the served model refuses larger requests."""
  spec = {schemas.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
          schemas.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
          schemas.LABELLED_KEY: tf.io.FixedLenFeature([], tf.int64),
          schemas.HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
          schemas.WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64)}
  data = (tf.data.TFRecordDataset(split_files(split_uri), compression_type='GZIP')
          .map(lambda r: tf.io.parse_single_example(r, spec))
          .filter(lambda f: (f[schemas.LABEL_KEY] >= 0) & (f[schemas.LABELLED_KEY] == 1)))
  data = (data.take(limit) if limit > 0 else data).batch(_READ_BATCH)
  images, labels, pixels = [], [], []
  for batch in data:
    images.append(batch[schemas.IMAGE_KEY].numpy())
    labels.append(batch[schemas.LABEL_KEY].numpy())
    pixels.append(batch[schemas.HEIGHT_KEY].numpy() * batch[schemas.WIDTH_KEY].numpy())
  if not labels:
    return [], np.zeros([0], np.int64)
  images = np.concatenate(images)
  return ([tf.constant(images[batch]) for batch in limits.plan_batches(np.concatenate(pixels))],
          np.concatenate(labels))


def _embedding_records(split_uri: str, dim: int = 0) -> tf.data.Dataset:
  """The parsed records of one split of an Embeddings artifact (components/embedder/); the
  embedding as a [dim] vector when dim is given, else ragged."""
  vector = tf.io.FixedLenFeature([dim], tf.float32) if dim else tf.io.RaggedFeature(tf.float32)
  spec = {embedder_contract.EMBEDDING_KEY: vector,
          schemas.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
          schemas.LABELLED_KEY: tf.io.FixedLenFeature([], tf.int64),
          schemas.SHA256_KEY: tf.io.FixedLenFeature([], tf.string)}
  files = sorted(tf.io.gfile.glob(os.path.join(split_uri, '*.gz')))
  return (tf.data.TFRecordDataset(files, compression_type='GZIP')
          .map(lambda r: tf.io.parse_single_example(r, spec)))


def count_embeddings(split_uri: str):
  """(number of records, the set of embedding sizes among them) of one split, streamed."""
  sizes = (_embedding_records(split_uri)
           .map(lambda f: tf.size(f[embedder_contract.EMBEDDING_KEY], out_type=tf.int64)))
  count, found = 0, set()
  for batch in sizes.batch(4096).as_numpy_iterator():
    count += len(batch)
    found.update(int(v) for v in np.unique(batch))
  return count, found


def read_labelled_embeddings(split_uri: str):
  """(embeddings [N, D] float32, labels [N]) of the records of one split whose label may be
  used (the flags of read_labelled), ordered by image content hash: the Beam pipeline that wrote
  them sets no order, and the probe's labelled subsets must not change from run to run."""
  first = next(iter(_embedding_records(split_uri).take(1)), None)
  if first is None:
    return np.zeros([0, 0], np.float32), np.zeros([0], np.int64)
  dim = int(tf.size(first[embedder_contract.EMBEDDING_KEY]))
  data = (_embedding_records(split_uri, dim)
          .filter(lambda f: (f[schemas.LABEL_KEY] >= 0) & (f[schemas.LABELLED_KEY] == 1))
          .batch(_READ_BATCH))
  vectors, labels, hashes = [], [], []
  for batch in data.as_numpy_iterator():
    vectors.append(batch[embedder_contract.EMBEDDING_KEY])
    labels.append(batch[schemas.LABEL_KEY])
    hashes.append(batch[schemas.SHA256_KEY])
  if not labels:
    return np.zeros([0, dim], np.float32), np.zeros([0], np.int64)
  order = np.argsort(np.concatenate(hashes), kind='stable')
  return np.concatenate(vectors)[order], np.concatenate(labels)[order]
