"""LinearEvaluator executor: frozen-encoder embeddings -> linear probe + kNN -> blessing.

Embeddings are computed through the exported `serving_default` signature on the raw image bytes
of the ingested examples, i.e. exactly what TF Serving will return, so the number that blesses a
model is a number about the model that gets served.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

import schemas
from components import io_utils
from components.linear_evaluator import probe

METRICS_FILE = 'metrics.json'
_BATCH = 256


def read_labelled(split_uri: str):
  """(encoded image bytes, labels) of the records of one raw split whose label may be used:
  flagged by ImageIngest (train: within the labelled fraction; eval: every labelled record)."""
  spec = {schemas.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
          schemas.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
          schemas.LABELLED_KEY: tf.io.FixedLenFeature([], tf.int64)}
  data = (tf.data.TFRecordDataset(io_utils.split_files(split_uri), compression_type='GZIP')
          .map(lambda r: tf.io.parse_single_example(r, spec))
          .filter(lambda f: (f[schemas.LABEL_KEY] >= 0) & (f[schemas.LABELLED_KEY] == 1))
          .batch(_BATCH))
  images, labels = [], []
  for batch in data:
    images.append(batch[schemas.IMAGE_KEY])
    labels.append(batch[schemas.LABEL_KEY].numpy())
  return images, (np.concatenate(labels) if labels else np.zeros([0], np.int64))


def embed(serving_fn, image_batches) -> np.ndarray:
  outputs = [serving_fn(images=batch)['embedding'].numpy() for batch in image_batches]
  return np.concatenate(outputs) if outputs else np.zeros([0, 0], np.float32)


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    started = time.time()
    examples = artifact_utils.get_single_instance(input_dict['examples'])
    model = artifact_utils.get_single_instance(input_dict['model'])
    evaluation = artifact_utils.get_single_instance(output_dict['evaluation'])
    blessing = artifact_utils.get_single_instance(output_dict['blessing'])
    threshold = float(exec_properties['min_linear_top1'])
    knn_k = int(exec_properties['knn_k'])

    serving_dir = path_utils.serving_model_path(model.uri)
    serving_fn = tf.saved_model.load(serving_dir).signatures['serving_default']
    train_images, train_y = read_labelled(artifact_utils.get_split_uri([examples], 'train'))
    eval_images, eval_y = read_labelled(artifact_utils.get_split_uri([examples], 'eval'))
    metrics = {'num_labelled': int(len(train_y)), 'num_eval': int(len(eval_y)),
               'num_classes': int(len(np.unique(train_y))), 'min_linear_top1': threshold,
               'linear_top1': None, 'knn_top1': None, 'knn_k': knn_k}

    if len(train_y) == 0 or len(eval_y) == 0 or metrics['num_classes'] < 2:
      blessed = False
      reason = (f'cannot measure: {len(train_y)} labelled train and {len(eval_y)} labelled eval '
                f'images in {metrics["num_classes"]} class(es); put labelled images in '
                'class sub-folders (at least 2 classes)')
    else:
      train_x, eval_x = embed(serving_fn, train_images), embed(serving_fn, eval_images)
      linear = probe.linear_probe(train_x, train_y, eval_x, eval_y)
      metrics.update(linear_top1=linear['top1'], linear_probe_C=linear['C'],
                     knn_top1=probe.knn_top1(train_x, train_y, eval_x, eval_y, k=knn_k),
                     embedding_dim=int(train_x.shape[1]))
      blessed = metrics['linear_top1'] >= threshold
      comparison = '>=' if blessed else '<'
      reason = (f'linear_top1 {metrics["linear_top1"]:.4f} {comparison} threshold '
                f'{threshold:.4f}')
    metrics.update(blessed=blessed, blessing_reason=reason, model_uri=model.uri,
                   seconds=round(time.time() - started, 3))

    io_utils.write_json(os.path.join(evaluation.uri, METRICS_FILE), metrics)
    for key in ('linear_top1', 'knn_top1'):
      if metrics[key] is not None:
        evaluation.set_float_custom_property(key, metrics[key])
    evaluation.set_int_custom_property('num_labelled', metrics['num_labelled'])
    evaluation.set_int_custom_property('num_eval', metrics['num_eval'])

    # The same files and properties as TFX's Evaluator, so TFX resolvers and Pushers read it.
    with tf.io.gfile.GFile(os.path.join(blessing.uri, 'BLESSED' if blessed else 'NOT_BLESSED'),
                           'w') as f:
      f.write(reason + '\n')
    blessing.set_int_custom_property('blessed', int(blessed))
    blessing.set_string_custom_property('current_model', model.uri)
    blessing.set_int_custom_property('current_model_id', model.id)
    blessing.set_string_custom_property('reason', reason)
    logging.info('LinearEvaluator: linear_top1 %s knn_top1 %s on %d eval images -> %s (%s)',
                 metrics['linear_top1'], metrics['knn_top1'], metrics['num_eval'],
                 'BLESSED' if blessed else 'NOT BLESSED', reason)
