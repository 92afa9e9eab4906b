"""DualViewTransform executor: runs the TFT graph with tft_beam over both splits.

Analyzers (per-channel mean/std) see the train split only; both splits are transformed with the
resulting graph. The augmentation policy that the trainer will apply is written next to the
transform graph (policy.json) and recorded on the TransformGraph artifact in MLMD.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time

import apache_beam as beam
import numpy as np
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tfx.types import artifact_utils
from tfx.utils import io_utils as tfx_io_utils
from tfx_bsl.public import tfxio
from tensorflow_metadata.proto.v0 import schema_pb2

from components import beam_executor, io_utils
from components.dual_view_transform import contract
from components.dual_view_transform.params import TransformParams
from components.params import EXEC_PROPERTY
from components.image_ingest.contract import SPLITS
from components.dual_view_transform import preprocessing



class Executor(beam_executor.BeamExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    started = time.time()
    params = TransformParams.from_json(exec_properties[EXEC_PROPERTY])
    image_size = params.image_size
    policy = params.augmentation_policy()

    examples = artifact_utils.get_single_instance(input_dict['examples'])
    schema_uri = artifact_utils.get_single_uri(input_dict['schema'])
    schema = tfx_io_utils.parse_pbtxt_file(os.path.join(schema_uri, 'schema.pbtxt'),
                                           schema_pb2.Schema())
    transform_graph = artifact_utils.get_single_instance(output_dict['transform_graph'])
    transformed = artifact_utils.get_single_instance(output_dict['transformed_examples'])
    transformed.split_names = artifact_utils.encode_split_names(list(SPLITS))

    def source(split):
      files = io_utils.split_files(artifact_utils.get_split_uri([examples], split))
      return tfxio.TFExampleRecord(file_pattern=files, schema=schema,
                                   telemetry_descriptors=['simclr_tfx', 'DualViewTransform'])

    fn = functools.partial(preprocessing.preprocessing_fn, image_size=image_size)
    with self._make_beam_pipeline() as p:
      with tft_beam.Context(temp_dir=self._get_tmp_dir(), force_tf_compat_v1=False):
        sources = {split: source(split) for split in SPLITS}
        raw = {split: p | f'Read[{split}]' >> sources[split].BeamSource() for split in SPLITS}
        adapter = sources['train'].TensorAdapterConfig()
        (train_out, out_metadata), transform_fn = (
            (raw['train'], adapter) | 'AnalyzeAndTransform' >> tft_beam.AnalyzeAndTransformDataset(fn))
        eval_out, _ = (((raw['eval'], adapter), transform_fn)
                       | 'TransformEval' >> tft_beam.TransformDataset())
        _ = transform_fn | 'WriteTransformFn' >> tft_beam.WriteTransformFn(transform_graph.uri)
        coder = tft.coders.ExampleProtoCoder(out_metadata.schema)
        for split, data in (('train', train_out), ('eval', eval_out)):
          out_dir = artifact_utils.get_split_uri([transformed], split)
          _ = (data
               | f'Encode[{split}]' >> beam.Map(coder.encode)
               | f'Write[{split}]' >> beam.io.WriteToTFRecord(
                   os.path.join(out_dir, 'transformed_examples'), file_name_suffix='.gz'))

    io_utils.write_json(os.path.join(transform_graph.uri, contract.POLICY_FILE), policy)
    stats = self._statistics(transform_graph.uri)
    self._write_preview(transformed, policy, transform_graph.uri)
    transform_graph.set_string_custom_property(contract.AUGMENTATION_POLICY,
                                               json.dumps(policy, sort_keys=True))
    transform_graph.set_int_custom_property(contract.IMAGE_SIZE, image_size)
    transform_graph.set_string_custom_property(contract.CHANNEL_MEAN, json.dumps(stats['mean']))
    transform_graph.set_string_custom_property(contract.CHANNEL_STD, json.dumps(stats['std']))
    logging.info('DualViewTransform: image_size %d, channel mean %s std %s, %.1fs',
                 image_size, stats['mean'], stats['std'], time.time() - started)

  @staticmethod
  def _write_preview(transformed, policy, transform_graph_uri, count: int = 8) -> None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from components.dual_view_transform import dataset, preview  # pylint: disable=g-import-not-at-top
    records = dataset.load_transformed(artifact_utils.get_split_uri([transformed], 'train'),
                                       int(policy['image_size'])).shuffle(2048, seed=0).take(count)
    unit = [r['image'].numpy() / 255.0 for r in records]
    if unit:
      with tf.io.gfile.GFile(os.path.join(transform_graph_uri, contract.PREVIEW_FILE), 'wb') as f:
        f.write(preview.preview_grid(np.stack(unit), policy))

  @staticmethod
  def _statistics(transform_graph_uri: str) -> dict:
    """Reads the analyzer results back by running the graph on one tiny image."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tft_output = tft.TFTransformOutput(transform_graph_uri)
    png = tf.io.encode_png(tf.zeros([2, 2, 3], tf.uint8))
    outputs = preprocessing.transform_raw_images(tft_output, tf.reshape(png, [1]))
    return {'mean': [round(float(v), 6) for v in outputs[preprocessing.CHANNEL_MEAN][0]],
            'std': [round(float(v), 6) for v in outputs[preprocessing.CHANNEL_STD][0]]}


