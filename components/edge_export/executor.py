"""EdgeExport executor: the encoder as TensorFlow Lite (float32 and int8), checked for parity.

Parity is measured on held-out eval images against the SavedModel on the very same decoded
pixels: mean cosine similarity of the embeddings per format, and, for int8, the top-1 of a
linear probe trained on SavedModel embeddings and fed the int8 embeddings (the deployment case:
a classifier trained on the server, run on the device). A format that misses its target is
kept out of the push, with the reason recorded.
"""
from __future__ import annotations

import itertools
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
from components.linear_evaluator import probe
from components.simclr_trainer import export



def _labelled_pixels(split_uri: str, image_size: int, limit: int):
  batches, labels = io_utils.read_labelled(split_uri)
  encoded = list(itertools.islice((x.numpy() for batch in batches for x in batch), limit))
  if not encoded:
    return np.zeros([0, image_size, image_size, 3], np.float32), labels[:0]
  return tflite.decode_pixels(encoded, image_size), labels[:len(encoded)]


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    started = time.time()
    model = artifact_utils.get_single_instance(input_dict['model'])
    examples = artifact_utils.get_single_instance(input_dict['examples'])
    edge = artifact_utils.get_single_instance(output_dict['edge_model'])
    targets = {k: float(exec_properties[k]) for k in
               ('min_cosine_float', 'min_cosine_int8', 'max_top1_drop')}
    saved_model_dir = path_utils.serving_model_path(model.uri)
    loaded = tf.saved_model.load(saved_model_dir)
    pixels_fn = loaded.signatures[export.PIXELS_SIGNATURE]
    image_size = int(pixels_fn.structured_input_signature[1][export.PIXELS_INPUT].shape[1])

    def saved_model_embed(pixels):
      return np.concatenate([pixels_fn(pixels=tf.constant(pixels[i:i + 256]))['embedding']
                             .numpy() for i in range(0, len(pixels), 256)])

    train_uri = artifact_utils.get_split_uri([examples], 'train')
    eval_uri = artifact_utils.get_split_uri([examples], 'eval')
    calibration = tflite.decode_pixels(
        io_utils.encoded_images(train_uri, int(exec_properties['calibration_images'])), image_size)
    try:
      models = {'float32': tflite.convert(saved_model_dir),
                'int8': tflite.convert(saved_model_dir, calibration)}
    except Exception as e:  # pylint: disable=broad-except
      # The served SavedModel is still good: push it without edge models, and say why.
      reason = f'TFLite conversion failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}'
      logging.error('EdgeExport: %s', reason)
      for name in ('float32', 'int8'):
        edge.set_int_custom_property(f'{name}_accepted', 0)
        edge.set_string_custom_property(f'{name}_reason', reason)
      io_utils.write_json(os.path.join(edge.uri, contract.PARITY_FILE), {'error': reason})
      io_utils.write_json(os.path.join(edge.uri, contract.PREPROCESSING_FILE), {'error': reason})
      return
    paths = {'float32': tflite.write_model(edge.uri, contract.FLOAT_FILE, models['float32']),
             'int8': tflite.write_model(edge.uri, contract.INT8_FILE, models['int8'])}

    parity_limit = int(exec_properties['parity_images'])
    eval_pixels, eval_y = _labelled_pixels(eval_uri, image_size, parity_limit)
    if len(eval_pixels) == 0:  # no labels at all: parity on unlabelled eval images
      eval_pixels = tflite.decode_pixels(io_utils.encoded_images(eval_uri, parity_limit),
                                         image_size)
    reference = saved_model_embed(eval_pixels)
    results = {'image_size': image_size, 'num_parity_images': int(len(eval_pixels)),
               'num_calibration_images': int(len(calibration)), 'targets': targets}
    embeddings = {}
    for name, content in models.items():
      embeddings[name] = tflite.TFLiteEncoder(content).embed(eval_pixels)
      cos = tflite.cosine(embeddings[name], reference)
      results[name] = {'file': os.path.basename(paths[name]), 'bytes': len(content),
                       'mean_cosine': float(cos.mean()), 'min_cosine': float(cos.min())}

    train_pixels, train_y = _labelled_pixels(train_uri, image_size, 5000)
    if len(train_y) and len(eval_y) and len(np.unique(train_y)) > 1:
      predict, _ = probe.fit_linear_probe(saved_model_embed(train_pixels), train_y)
      results['probe_top1_savedmodel'] = float(np.mean(predict(reference) == eval_y))
      results['probe_top1_int8'] = float(np.mean(predict(embeddings['int8']) == eval_y))
      results['probe_top1_drop'] = results['probe_top1_savedmodel'] - results['probe_top1_int8']

    self._decide(results, targets)
    io_utils.write_json(os.path.join(edge.uri, contract.PARITY_FILE), results)
    io_utils.write_json(os.path.join(edge.uri, contract.PREPROCESSING_FILE), {
        'input': {'name': export.PIXELS_INPUT, 'dtype': 'float32',
                  'shape': [1, image_size, image_size, 3],
                  'values': 'RGB pixels 0..255 (decoded; greyscale repeated to 3 channels)'},
        'resize': f'whole image to {image_size}x{image_size}, bilinear with antialiasing, '
                  'no crop (tf.image.resize(..., antialias=True)); round to integers',
        'normalisation': 'inside the model: (pixels / 255 - mean) / std with the training '
                         'set statistics of DualViewTransform',
        'output': {'name': 'embedding', 'dtype': 'float32',
                   'meaning': 'encoder output h, the same as the SavedModel `embedding`'},
    })
    for name in models:
      edge.set_int_custom_property(contract.accepted(name), int(results[name]['accepted']))
      edge.set_float_custom_property(contract.mean_cosine(name), results[name]['mean_cosine'])
      edge.set_string_custom_property(contract.reason(name), results[name]['reason'])
    for key in ('probe_top1_savedmodel', 'probe_top1_int8'):
      if key in results:
        edge.set_float_custom_property(key, results[key])
    edge.set_string_custom_property(contract.MODEL_URI, model.uri)
    logging.info('EdgeExport: float32 cosine %.5f (%s), int8 cosine %.5f (%s), %.1fs',
                 results['float32']['mean_cosine'], results['float32']['reason'],
                 results['int8']['mean_cosine'], results['int8']['reason'], time.time() - started)

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
