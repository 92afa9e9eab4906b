"""ImageIngest executor: a Beam pipeline from a folder of images to split tf.Example records.

list files -> read + decode each (quarantine the bad, with a reason) -> group by sha256 (keep
the first path, record the others as duplicates) -> split by hash -> gzip TFRecords per split.
The small side outputs (manifest, quarantine, duplicates) are JSON lines that the executor
folds into report.json after the pipeline finishes.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, List

import apache_beam as beam
import tensorflow as tf
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils as tfx_io_utils

import schemas
from components import io_utils
from components.image_ingest import images

SPLITS = ('train', 'eval')


def _read_one(source: Dict[str, Any], data_dir: str, min_side: int) -> Dict[str, Any]:
  path = os.path.join(data_dir, source['relpath'])
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    return {**source, 'error': f'cannot read file: {e.strerror or e}'}
  stored, height, width, reason = images.decode_and_validate(raw, min_side=min_side)
  if stored is None:
    return {**source, 'error': reason}
  return {**source, 'sha256': hashlib.sha256(raw).hexdigest(), 'bytes': stored,
          'height': height, 'width': width}


def _dedup(item):
  """(sha256, [records]) -> the record with the smallest path, plus the others as duplicates."""
  sha, records = item
  records = sorted(records, key=lambda r: r['relpath'])
  kept = records[0]
  yield beam.pvalue.TaggedOutput('kept', kept)
  for dup in records[1:]:
    yield beam.pvalue.TaggedOutput(
        'duplicates', json.dumps({'path': dup['relpath'], 'duplicate_of': kept['relpath'],
                                  'sha256': sha}))


def _to_example(record: Dict[str, Any]) -> bytes:
  def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

  def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

  features = {
      schemas.IMAGE_KEY: _bytes(record['bytes']),
      schemas.SHA256_KEY: _bytes(record['sha256'].encode()),
      schemas.FILENAME_KEY: _bytes(record['relpath'].encode('utf-8', 'surrogateescape')),
      schemas.HEIGHT_KEY: _int(record['height']),
      schemas.WIDTH_KEY: _int(record['width']),
      schemas.LABEL_KEY: _int(record['label']),
      schemas.CLASS_TEXT_KEY: _bytes(record['class_name'].encode('utf-8', 'surrogateescape')),
  }
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _manifest_line(record: Dict[str, Any]) -> str:
  return json.dumps({'path': record['relpath'], 'sha256': record['sha256'],
                     'class': record['class_name'], 'label': record['label'],
                     'split': record['split']})


def _read_lines(pattern: str) -> List[Dict[str, Any]]:
  rows = []
  for path in sorted(tf.io.gfile.glob(pattern)):
    with tf.io.gfile.GFile(path) as f:
      rows.extend(json.loads(line) for line in f if line.strip())
  return rows


class Executor(base_beam_executor.BaseBeamExecutor):
  """Reads, validates, de-duplicates and splits a folder of images."""

  def Do(self, input_dict, output_dict, exec_properties):
    started = time.time()
    data_dir = exec_properties['data_dir']
    eval_percent = int(exec_properties['eval_percent'])
    min_side = int(exec_properties.get('min_side') or 1)
    max_bad_fraction = float(exec_properties.get('max_bad_fraction') or 0.5)

    examples = artifact_utils.get_single_instance(output_dict['examples'])
    schema_artifact = artifact_utils.get_single_instance(output_dict['schema'])
    report_artifact = artifact_utils.get_single_instance(output_dict['report'])

    files = images.list_source_files(data_dir)
    classes = images.class_index(files)
    label_of = {name: i for i, name in enumerate(classes)}
    sources = [{'relpath': f.relpath, 'class_name': f.class_name,
                'label': label_of.get(f.class_name, schemas.UNLABELLED)} for f in files]
    logging.info('ImageIngest: %d files under %s, %d classes %s', len(files), data_dir,
                 len(classes), classes[:20])

    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    side_dir = os.path.join(report_artifact.uri, 'records')
    tf.io.gfile.makedirs(side_dir)

    with self._make_beam_pipeline() as p:
      decoded = (p
                 | 'ListFiles' >> beam.Create(sources, reshuffle=True)
                 | 'ReadAndDecode' >> beam.Map(_read_one, data_dir=data_dir, min_side=min_side))
      good, bad = decoded | 'Validate' >> beam.Partition(lambda r, _: 1 if 'error' in r else 0, 2)
      _ = (bad
           | 'QuarantineJson' >> beam.Map(
               lambda r: json.dumps({'path': r['relpath'], 'reason': r['error']}))
           | 'WriteQuarantine' >> beam.io.WriteToText(os.path.join(side_dir, 'quarantine'),
                                                      file_name_suffix='.jsonl'))
      deduped = (good
                 | 'KeyBySha' >> beam.Map(lambda r: (r['sha256'], r))
                 | 'GroupBySha' >> beam.GroupByKey()
                 | 'Dedup' >> beam.FlatMap(_dedup).with_outputs('kept', 'duplicates'))
      _ = deduped.duplicates | 'WriteDuplicates' >> beam.io.WriteToText(
          os.path.join(side_dir, 'duplicates'), file_name_suffix='.jsonl')
      kept = deduped.kept | 'AssignSplit' >> beam.Map(
          lambda r: {**r, 'split': images.split_for(r['sha256'], eval_percent)})
      _ = (kept | 'ManifestJson' >> beam.Map(_manifest_line)
           | 'WriteManifest' >> beam.io.WriteToText(os.path.join(side_dir, 'manifest'),
                                                    file_name_suffix='.jsonl'))
      by_split = kept | 'PartitionSplits' >> beam.Partition(
          lambda r, _: SPLITS.index(r['split']), len(SPLITS))
      for name, records in zip(SPLITS, by_split):
        split_uri = artifact_utils.get_split_uri([examples], name)
        _ = (records
             | f'ToExample[{name}]' >> beam.Map(_to_example)
             | f'Write[{name}]' >> beam.io.WriteToTFRecord(
                 os.path.join(split_uri, 'data_tfrecord'), file_name_suffix='.gz'))

    manifest = _read_lines(os.path.join(side_dir, 'manifest*.jsonl'))
    quarantined = sorted(_read_lines(os.path.join(side_dir, 'quarantine*.jsonl')),
                         key=lambda r: r['path'])
    duplicates = sorted(_read_lines(os.path.join(side_dir, 'duplicates*.jsonl')),
                        key=lambda r: r['path'])
    report = self._report(data_dir, exec_properties, files, classes, manifest, quarantined,
                          duplicates, time.time() - started)
    io_utils.write_json(os.path.join(report_artifact.uri, 'report.json'), report)
    tfx_io_utils.write_pbtxt_file(os.path.join(schema_artifact.uri, 'schema.pbtxt'),
                                  schemas.load_schema())

    for artifact in (examples, report_artifact):
      artifact.set_string_custom_property('data_fingerprint', report['data_fingerprint'])
      artifact.set_string_custom_property('source_dir', os.path.abspath(data_dir))
      artifact.set_int_custom_property('num_examples', report['num_examples'])
      artifact.set_int_custom_property('num_quarantined', report['num_quarantined'])
      artifact.set_int_custom_property('num_duplicates', report['num_duplicates'])
    for name in SPLITS:
      examples.set_int_custom_property(f'num_{name}', report['split_counts'][name])
    examples.set_string_custom_property('classes', json.dumps(classes))

    self._check_usable(report, max_bad_fraction, data_dir,
                       os.path.join(report_artifact.uri, 'report.json'))
    logging.info('ImageIngest: %d examples (train %d, eval %d), %d quarantined, %d duplicates, '
                 '%.1f files/s', report['num_examples'], report['split_counts']['train'],
                 report['split_counts']['eval'], report['num_quarantined'],
                 report['num_duplicates'], len(files) / max(report['seconds'], 1e-9))

  @staticmethod
  def _report(data_dir, exec_properties, files, classes, manifest, quarantined, duplicates,
              seconds) -> Dict[str, Any]:
    per_class_split = collections.defaultdict(lambda: {s: 0 for s in SPLITS})
    for row in manifest:
      per_class_split[row['class'] or '<unlabelled>'][row['split']] += 1
    # The content fingerprint: which bytes, with which labels, in which split.
    digest = hashlib.sha256()
    for row in sorted(manifest, key=lambda r: r['sha256']):
      digest.update(f"{row['sha256']} {row['label']} {row['split']}\n".encode())
    return {
        'source_dir': os.path.abspath(data_dir),
        'source_listing_fingerprint': exec_properties.get('source_fingerprint', ''),
        'data_fingerprint': digest.hexdigest(),
        'eval_percent': int(exec_properties['eval_percent']),
        'classes': classes,
        'num_files': len(files),
        'num_examples': len(manifest),
        'num_labelled': sum(1 for r in manifest if r['label'] >= 0),
        'num_quarantined': len(quarantined),
        'num_duplicates': len(duplicates),
        'split_counts': {s: sum(1 for r in manifest if r['split'] == s) for s in SPLITS},
        'per_class_split': dict(sorted(per_class_split.items())),
        'quarantined': quarantined,
        'duplicates': duplicates,
        'seconds': round(seconds, 3),
    }

  @staticmethod
  def _check_usable(report, max_bad_fraction, data_dir, report_path) -> None:
    if report['num_examples'] == 0:
      reasons = collections.Counter(r['reason'].split(':')[0] for r in report['quarantined'])
      raise images.IngestError(
          f'no valid image in {data_dir}: all {report["num_files"]} files were quarantined '
          f'({dict(reasons)}); see {report_path}')
    bad_fraction = report['num_quarantined'] / max(report['num_files'], 1)
    if bad_fraction > max_bad_fraction:
      raise images.IngestError(
          f'{report["num_quarantined"]} of {report["num_files"]} files in {data_dir} are not '
          f'usable images ({bad_fraction:.0%} > max_bad_fraction {max_bad_fraction:.0%}); '
          f'see {report_path} for each file and its reason')
    for split in SPLITS:
      if report['split_counts'][split] == 0:
        raise images.IngestError(
            f'the {split} split is empty ({report["num_examples"]} unique images, eval_percent='
            f'{report["eval_percent"]}); add images or change eval_percent')
