"""EdgeExport executor: a model (the encoder, or the fine-tuned classifier) as TensorFlow Lite
(float32 and int8), checked for parity.

Parity is measured on held-out eval images against the SavedModel on the very same decoded
pixels: mean cosine similarity of the outputs (embeddings, or class probabilities) per format,
and, for int8, the top-1 against the SavedModel's: for the encoder, a linear probe trained on
SavedModel embeddings and fed the int8 embeddings (the deployment case: a classifier trained on
the server, run on the device); for the classifier, its own top-1. A format that misses its
target is kept out of the push, with the reason recorded.
"""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import io_utils
from components.edge_export import contract, tflite
from components.edge_export.params import EdgeExportParams
from components.fine_tuner import contract as finetune_contract
from components.linear_evaluator import probe
from components.params import EXEC_PROPERTY
from components.simclr_trainer import export

_PROBE_TRAIN_IMAGES = 5000  # SavedModel embeddings the parity probe is trained on, at most


def _labelled_pixels(split_uri: str, image_size: int, limit: int):
  batches, labels = io_utils.read_labelled(split_uri, limit)  # at most `limit` images
  encoded = [x.numpy() for batch in batches for x in batch]
  if not encoded:
    return np.zeros([0, image_size, image_size, 3], np.float32), labels
  return tflite.decode_pixels(encoded, image_size), labels


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    started = time.time()
    params = EdgeExportParams.from_json(exec_properties[EXEC_PROPERTY])
    model = artifact_utils.get_single_instance(input_dict['model'])
    examples = artifact_utils.get_single_instance(input_dict['examples'])
    edge = artifact_utils.get_single_instance(output_dict['edge_model'])
    saved_model_dir = path_utils.serving_model_path(model.uri)
    kind = model.get_string_custom_property(finetune_contract.KIND) or 'encoder'
    names = contract.formats(kind)
    edge.set_string_custom_property(contract.KIND, kind)
    reference = _SavedModelEncoder(saved_model_dir)
    splits = {name: artifact_utils.get_split_uri([examples], name) for name in ('train', 'eval')}
    calibration = tflite.decode_pixels(
        io_utils.encoded_images(splits['train'], params.tflite_calibration_images),
        reference.image_size)
    models = self._convert(saved_model_dir, calibration, edge)
    if models is None:
      return
    for name, content in models.items():
      tflite.write_model(edge.uri, names[name], content)
    results = self._parity(models, reference, splits, params, names,
                           classifier=kind == finetune_contract.CLASSIFIER_KIND)
    results['num_calibration_images'] = int(len(calibration))
    self._decide(results, results['targets'])
    io_utils.write_json(os.path.join(edge.uri, contract.PARITY_FILE), results)
    io_utils.write_json(os.path.join(edge.uri, contract.PREPROCESSING_FILE),
                        _preprocessing_note(reference.image_size, reference.output))
    if kind == finetune_contract.CLASSIFIER_KIND:
      with tf.io.gfile.GFile(os.path.join(edge.uri, contract.LABELS_FILE), 'w') as f:
        f.write(''.join(f'{name}\n' for name in json.loads(
            model.get_string_custom_property(finetune_contract.CLASS_NAMES))))
    self._record(edge, model, results)
    logging.info('EdgeExport: float32 cosine %.5f (%s), int8 cosine %.5f (%s), %.1fs',
                 results['float32']['mean_cosine'], results['float32']['reason'],
                 results['int8']['mean_cosine'], results['int8']['reason'], time.time() - started)

  @staticmethod
  def _convert(saved_model_dir, calibration, edge):
    """{'float32': bytes, 'int8': bytes}; None after recording why, when conversion fails (the
    served SavedModel is still good: it is pushed without edge models)."""
    try:
      return {'float32': tflite.convert(saved_model_dir),
              'int8': tflite.convert(saved_model_dir, calibration)}
    except Exception as e:  # pylint: disable=broad-except
      reason = f'TFLite conversion failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}'
      logging.error('EdgeExport: %s', reason)
      for name in contract.FORMATS:  # the same keys for either kind
        edge.set_int_custom_property(contract.accepted(name), 0)
        edge.set_string_custom_property(contract.reason(name), reason)
      io_utils.write_json(os.path.join(edge.uri, contract.PARITY_FILE), {'error': reason})
      io_utils.write_json(os.path.join(edge.uri, contract.PREPROCESSING_FILE), {'error': reason})
      return None

  @staticmethod
  def _parity(models, reference, splits, params, names, classifier: bool):
    """Cosine of each TFLite model's outputs to the SavedModel's on held-out eval images, and
    the int8 model's top-1 against the SavedModel's where labels allow (the encoder's through a
    linear probe, the classifier's its own)."""
    size = reference.image_size
    eval_pixels, eval_y = _labelled_pixels(splits['eval'], size, params.tflite_parity_images)
    if len(eval_pixels) == 0:  # no labels at all: parity on unlabelled eval images
      eval_pixels = tflite.decode_pixels(
          io_utils.encoded_images(splits['eval'], params.tflite_parity_images), size)
    expected = reference.embed(eval_pixels)
    results = {'image_size': size, 'num_parity_images': int(len(eval_pixels)),
               'targets': {'min_cosine_float': params.tflite_min_cosine_float,
                           'min_cosine_int8': params.tflite_min_cosine_int8,
                           'max_top1_drop': params.tflite_max_top1_drop}}
    embeddings = {}
    for name, content in models.items():
      embeddings[name] = tflite.TFLiteEncoder(content).embed(eval_pixels)
      cos = tflite.cosine(embeddings[name], expected)
      results[name] = {'file': names[name], 'bytes': len(content),
                       'mean_cosine': float(cos.mean()), 'min_cosine': float(cos.min())}
    predict = _top1_reader(reference, splits['train'], size, classifier)
    if predict and len(eval_y):
      results['probe_top1_savedmodel'] = float(np.mean(predict(expected) == eval_y))
      results['probe_top1_int8'] = float(np.mean(predict(embeddings['int8']) == eval_y))
      results['probe_top1_drop'] = results['probe_top1_savedmodel'] - results['probe_top1_int8']
    return results

  @staticmethod
  def _record(edge, model, results) -> None:
    for name in contract.FORMATS:  # the format names; the files are per kind
      edge.set_int_custom_property(contract.accepted(name), int(results[name]['accepted']))
      edge.set_float_custom_property(contract.mean_cosine(name), results[name]['mean_cosine'])
      edge.set_string_custom_property(contract.reason(name), results[name]['reason'])
    for key in ('probe_top1_savedmodel', 'probe_top1_int8'):
      if key in results:
        edge.set_float_custom_property(key, results[key])
    edge.set_string_custom_property(contract.MODEL_URI, model.uri)

  @staticmethod
  def _decide(results, targets) -> None:
    f32 = results['float32']
    f32['accepted'] = f32['mean_cosine'] >= targets['min_cosine_float']
    f32['reason'] = (f"mean cosine {f32['mean_cosine']:.5f} "
                     f"{'>=' if f32['accepted'] else '<'} {targets['min_cosine_float']}")
    int8 = results['int8']
    problems = []
    if int8['mean_cosine'] < targets['min_cosine_int8']:
      problems.append(f"mean cosine {int8['mean_cosine']:.5f} < {targets['min_cosine_int8']}")
    if 'probe_top1_drop' in results:
      if results['probe_top1_drop'] > targets['max_top1_drop']:
        problems.append(f"probe top-1 drops {results['probe_top1_drop']:.4f} > "
                        f"{targets['max_top1_drop']}")
      detail = f", probe top-1 drop {results['probe_top1_drop']:+.4f}"
    else:
      detail = ', probe check skipped (no labelled images of 2+ classes)'
    int8['accepted'] = not problems
    int8['reason'] = ('; '.join(problems) if problems else
                      f"mean cosine {int8['mean_cosine']:.5f} >= {targets['min_cosine_int8']}"
                      + detail)


def _top1_reader(reference, train_uri: str, size: int, classifier: bool):
  """outputs -> predicted classes: a classifier's argmax, or for an encoder a linear probe fit
  on the SavedModel's embeddings of labelled train images; None without labels of 2+ classes."""
  if classifier:
    return lambda outputs: np.argmax(outputs, axis=1)
  train_pixels, train_y = _labelled_pixels(train_uri, size, _PROBE_TRAIN_IMAGES)
  if len(np.unique(train_y)) < 2:
    return None
  predict, _ = probe.fit_linear_probe(reference.embed(train_pixels), train_y)
  return predict


class _SavedModelEncoder:
  """The exported model's pixels signature (one output: the encoder's `embedding`, the
  classifier's `all_probabilities`): the reference the TFLite models must match."""

  def __init__(self, saved_model_dir: str):
    self._fn = tf.saved_model.load(saved_model_dir).signatures[export.PIXELS_SIGNATURE]
    self.image_size = int(self._fn.structured_input_signature[1][export.PIXELS_INPUT].shape[1])
    (self.output,) = self._fn.structured_outputs

  def embed(self, pixels):
    return np.concatenate([self._fn(pixels=tf.constant(pixels[i:i + 256]))[self.output].numpy()
                           for i in range(0, len(pixels), 256)])


_OUTPUT_MEANING = {
    'embedding': 'encoder output h, the same as the SavedModel `embedding`',
    finetune_contract.ALL_PROBABILITIES_OUTPUT:
        f'the probability of each class, in the order of {contract.LABELS_FILE}',
}


def _preprocessing_note(image_size: int, output: str) -> dict:
  """preprocessing.json: how a device turns an image into the TFLite model's input."""
  return {
      'input': {'name': export.PIXELS_INPUT, 'dtype': 'float32',
                'shape': [1, image_size, image_size, 3],
                'values': 'RGB pixels 0..255 (decoded; greyscale repeated to 3 channels)'},
      'resize': f'whole image to {image_size}x{image_size}, bilinear with antialiasing, '
                'no crop (tf.image.resize(..., antialias=True)); round to integers',
      'normalisation': 'inside the model: (pixels / 255 - mean) / std with the training '
                       'set statistics of DualViewTransform',
      'output': {'name': output, 'dtype': 'float32', 'meaning': _OUTPUT_MEANING[output]},
  }
