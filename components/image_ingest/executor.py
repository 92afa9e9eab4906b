"""ImageIngest executor: a Beam pipeline from a folder of images to split tf.Example records.

list files -> read + decode each (quarantine the bad, with a reason) -> group by sha256 (keep
the smallest path, record the others as duplicates) -> split by hash -> gzip TFRecords per
split. The small side outputs (manifest, quarantine, duplicates, downscaled) are JSON lines
that the executor folds into report.json after the pipeline finishes.

Memory does not grow with the image bytes of the data set: no GroupByKey, Reshuffle or
combiner carries them. In the stage that reads and decodes, each valid image's stored bytes
go straight to temporary TFRecord shards (WriteToTFRecord with default sharding writes a file
per bundle; a fixed num_shards would insert a GroupByKey over the elements) under the report
artifact's folder, and only small metadata (path, sha256, class, size: tens of bytes per
image, some KB as Python objects) goes on to the de-duplication GroupByKey and the class
and label selection. A last stage reads each staged shard back, streaming, and writes the kept
records as Examples, with the per-sha256 decisions (kept record, split, label, labelled) as a
side input. That metadata and the side input still grow with the number of images; image
bytes do not (`make bench-ingest` measures it). The staged shards are deleted when the
pipeline ends (they live inside the output artifact; nothing outside it is touched).

Settings are read as they are: the pipeline passes each one from PipelineConfig, the only
place a default is written (run_standalone fills them from a default PipelineConfig).
"""
from __future__ import annotations

import collections
import dataclasses
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
from components import beam_executor, failpoints, io_utils
from components.image_ingest import contract, images
from components.image_ingest.contract import SPLITS
from components.image_ingest.params import IngestParams
from components.params import EXEC_PROPERTY

_META_KEYS = ('id', 'relpath', 'class_name', 'sha256', 'height', 'width', 'original_size')


def _image_record(raw: bytes, relpath: str, class_name: str, record_id, limits
                  ) -> Dict[str, Any]:
  decoded = images.decode_image(raw, limits['min_side'], limits['max_pixels'])
  if decoded.stored is None:
    return {'relpath': relpath, 'error': decoded.reason}
  return {'id': record_id, 'relpath': relpath, 'class_name': class_name,
          'sha256': hashlib.sha256(raw).hexdigest(), 'bytes': decoded.stored,
          'height': decoded.height, 'width': decoded.width,
          'original_size': decoded.original_size}


def _load(source: Dict[str, Any], data_dir: str, limits: Dict[str, int]):
  """One source file -> records (an image file gives one; a TFRecord file one per example).

  A record's id, (source index, record index), tells apart records of the same path (a
  manifest may list a path twice)."""
  path = os.path.join(os.fsencode(data_dir), source['raw_relpath'])
  if source['kind'] == 'image':
    raw, reason = images.read_image_file(path, limits['max_file_bytes'])
    if raw is None:
      yield {'relpath': source['relpath'], 'error': reason}
      return
    yield _image_record(raw, source['relpath'], source['class_name'], (source['index'], 0),
                        limits)
    return
  reason = images.container_refusal(path)
  if reason:
    yield {'relpath': source['relpath'], 'error': reason}
    return
  yield from _load_tfrecord(path, source, limits)


def _load_tfrecord(path: bytes, source: Dict[str, Any], limits: Dict[str, int]):
  compression = 'GZIP' if path.lower().endswith(b'.gz') else ''
  index = -1
  try:
    for index, serialized in enumerate(
        tf.data.TFRecordDataset(os.fsdecode(path),
                                compression_type=compression).as_numpy_iterator()):
      relpath = f"{source['relpath']}#{index}"
      try:
        features = tf.train.Example.FromString(serialized).features.feature
      except Exception:  # pylint: disable=broad-except
        yield {'relpath': relpath, 'error': 'record is not a tf.Example'}
        continue
      encoded = features.get(schemas.IMAGE_KEY)
      if encoded is None or not encoded.bytes_list.value:
        yield {'relpath': relpath, 'error': f'tf.Example has no {schemas.IMAGE_KEY} bytes'}
        continue
      raw = encoded.bytes_list.value[0]
      if len(raw) > limits['max_file_bytes']:
        yield {'relpath': relpath, 'error': f'encoded image of {len(raw)} bytes exceeds '
               f"max_file_bytes {limits['max_file_bytes']}"}
        continue
      class_name = source['class_name'] or images.class_of_record(features)
      yield _image_record(raw, relpath, class_name, (source['index'], index), limits)
  except (tf.errors.OpError, OSError) as e:
    yield {'relpath': f"{source['relpath']}#{index + 1}",
           'error': f'unreadable TFRecord after {index + 1} records: {type(e).__name__}'}


def _stage(record: Dict[str, Any]) -> bytes:
  """A valid record as one staged TFRecord: 4-byte header length, JSON header, stored bytes."""
  header = json.dumps({k: record[k] for k in ('id', 'relpath', 'class_name', 'sha256',
                                              'height', 'width')}).encode('utf-8')
  return len(header).to_bytes(4, 'big') + header + record['bytes']


def _unstage(path: str, decisions):
  """Reads one staged shard back, streaming; yields each kept record's Example, tagged with
  its split. decisions: sha256 -> (kept record id, split, label, labelled)."""
  for staged in tf.data.TFRecordDataset(path).as_numpy_iterator():
    size = int.from_bytes(staged[:4], 'big')
    record = json.loads(staged[4:4 + size])
    kept_id, split, label, labelled = decisions[record['sha256']]
    if tuple(record['id']) != tuple(kept_id):
      continue  # a duplicate: its bytes are not written
    record.update(bytes=staged[4 + size:], label=label, labelled=labelled)
    yield beam.pvalue.TaggedOutput(split, _to_example(record))


def _dedup(item):
  """(sha256, [metadata]) -> the record with the smallest path, plus the others as duplicates."""
  sha, records = item
  records = sorted(records, key=lambda r: (r['relpath'], tuple(r['id'])))
  kept = records[0]
  yield beam.pvalue.TaggedOutput('kept', kept)
  for dup in records[1:]:
    yield beam.pvalue.TaggedOutput(
        'duplicates', json.dumps({'path': dup['relpath'], 'duplicate_of': kept['relpath'],
                                  'sha256': sha}))


def _finalise(record, classes, selected) -> Dict[str, Any]:
  """Adds the label (index in the sorted class list) and the labelled-for-probe flag."""
  label = classes.index(record['class_name']) if record['class_name'] else schemas.UNLABELLED
  if label < 0:
    labelled = 0
  elif record['split'] == 'eval':
    labelled = 1  # every eval label is used to measure
  else:
    labelled = int(record['sha256'] in selected)  # within the configured labelled fraction
  return {**record, 'label': label, 'labelled': labelled}


def _to_example(record: Dict[str, Any]) -> bytes:
  def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

  def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

  features = {
      schemas.IMAGE_KEY: _bytes(record['bytes']),
      schemas.SHA256_KEY: _bytes(record['sha256'].encode()),
      schemas.FILENAME_KEY: _bytes(record['relpath'].encode('utf-8')),
      schemas.HEIGHT_KEY: _int(record['height']),
      schemas.WIDTH_KEY: _int(record['width']),
      schemas.LABEL_KEY: _int(record['label']),
      schemas.CLASS_TEXT_KEY: _bytes(record['class_name'].encode('utf-8')),
      schemas.LABELLED_KEY: _int(record['labelled']),
  }
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _manifest_line(record: Dict[str, Any]) -> str:
  return json.dumps({'path': record['relpath'], 'sha256': record['sha256'],
                     'class': record['class_name'], 'label': record['label'],
                     'labelled': record['labelled'], 'split': record['split']})


def _downscaled_line(record: Dict[str, Any]) -> str:
  width, height = record['original_size']
  return json.dumps({'path': record['relpath'], 'original_width': width,
                     'original_height': height, 'width': record['width'],
                     'height': record['height']})


def _select(items, fraction):
  """(class, [sha256, ...]) -> the selected sha256s of that class."""
  class_name, shas = items
  yield from images.select_labelled({class_name: list(shas)}, fraction)


def _read_lines(pattern: str) -> List[Dict[str, Any]]:
  rows = []
  for path in sorted(tf.io.gfile.glob(pattern)):
    with tf.io.gfile.GFile(path) as f:
      rows.extend(json.loads(line) for line in f if line.strip())
  return rows


def _write_lines(pcoll, label: str, prefix: str):
  return pcoll | f'Write{label}' >> beam.io.WriteToText(prefix, file_name_suffix='.jsonl')


def _decide(pipeline_input, settings: Dict[str, Any], side_dir: str):
  """Metadata of valid records -> (sha256, decision) pairs; writes the duplicates, manifest
  and downscaled side outputs. Nothing here carries image bytes."""
  deduped = (pipeline_input
             | 'KeyBySha' >> beam.Map(lambda r: (r['sha256'], r))
             | 'GroupBySha' >> beam.GroupByKey()
             | 'Dedup' >> beam.FlatMap(_dedup).with_outputs('kept', 'duplicates'))
  _write_lines(deduped.duplicates, 'Duplicates', os.path.join(side_dir, 'duplicates'))
  eval_percent = settings['eval_percent']
  kept = deduped.kept | 'AssignSplit' >> beam.Map(
      lambda r: {**r, 'split': images.split_for(r['sha256'], eval_percent)})
  classes = (kept
             | 'ClassNames' >> beam.Map(lambda r: r['class_name'])
             | 'Labelled' >> beam.Filter(bool)
             | 'DistinctClasses' >> beam.Distinct()
             | 'AllClasses' >> beam.combiners.ToList()
             | 'Sort' >> beam.Map(sorted))
  selected = (kept
              | 'TrainLabelled' >> beam.Filter(
                  lambda r: r['split'] == 'train' and r['class_name'])
              | 'ClassSha' >> beam.Map(lambda r: (r['class_name'], r['sha256']))
              | 'GroupByClass' >> beam.GroupByKey()
              | 'SelectFraction' >> beam.FlatMap(_select, fraction=settings['labelled_fraction'])
              | 'AsKeys' >> beam.Map(lambda sha: (sha, True)))
  final = kept | 'LabelAndFlag' >> beam.Map(
      _finalise, classes=beam.pvalue.AsSingleton(classes, default_value=[]),
      selected=beam.pvalue.AsDict(selected))
  _write_lines(final | 'ManifestJson' >> beam.Map(_manifest_line), 'Manifest',
               os.path.join(side_dir, 'manifest'))
  _write_lines(final
               | 'WasDownscaled' >> beam.Filter(lambda r: r['original_size'] is not None)
               | 'DownscaledJson' >> beam.Map(_downscaled_line), 'Downscaled',
               os.path.join(side_dir, 'downscaled'))
  return final | 'Decisions' >> beam.Map(
      lambda r: (r['sha256'], (tuple(r['id']), r['split'], r['label'], r['labelled'])))


def _build(p, sources, settings: Dict[str, Any], dirs: Dict[str, str]) -> None:
  """The ingest pipeline; see the module docstring for where image bytes go."""
  loaded = (p
            | 'ListInputs' >> beam.Create(sources, reshuffle=True)
            | 'ReadAndDecode' >> beam.FlatMap(_load, data_dir=settings['data_dir'],
                                              limits=settings['limits']))
  good, bad = loaded | 'Validate' >> beam.Partition(lambda r, _: 1 if 'error' in r else 0, 2)
  _write_lines(bad | 'QuarantineJson' >> beam.Map(
      lambda r: json.dumps({'path': r['relpath'], 'reason': r['error']})), 'Quarantine',
               os.path.join(dirs['side'], 'quarantine'))
  staged = (good
            | 'StageBytes' >> beam.Map(_stage)
            | 'WriteStaged' >> beam.io.WriteToTFRecord(os.path.join(dirs['staged'], 'images')))
  metadata = good | 'DropBytes' >> beam.Map(lambda r: {k: r[k] for k in _META_KEYS})
  decisions = _decide(metadata, settings, dirs['side'])
  examples = staged | 'ReadStaged' >> beam.FlatMap(
      _unstage, decisions=beam.pvalue.AsDict(decisions)).with_outputs(*SPLITS)
  for name in SPLITS:
    _ = examples[name] | f'Write[{name}]' >> beam.io.WriteToTFRecord(
        os.path.join(dirs[name], 'data_tfrecord'), file_name_suffix='.gz')


def _settings(data_dir: str, params: IngestParams) -> Dict[str, Any]:
  """What the Beam stages need of the settings, as a plain dict."""
  return {
      'data_dir': data_dir,
      'eval_percent': params.eval_percent,
      'labelled_fraction': params.labelled_fraction,
      'limits': {'min_side': params.min_side, 'max_pixels': params.max_pixels,
                 'max_file_bytes': params.max_file_bytes},
  }


class Executor(beam_executor.BeamExecutor):
  """Reads, validates, de-duplicates and splits a folder of images."""

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    started = time.time()
    params = IngestParams.from_json(exec_properties[EXEC_PROPERTY])
    data_dir = exec_properties['data_dir']
    settings = _settings(data_dir, params)
    examples = artifact_utils.get_single_instance(output_dict['examples'])
    schema_artifact = artifact_utils.get_single_instance(output_dict['schema'])
    report_artifact = artifact_utils.get_single_instance(output_dict['report'])

    listing = images.list_sources(
        data_dir, include=images.split_globs(params.include_globs),
        exclude=images.split_globs(params.exclude_globs), manifest=params.manifest)
    sources = [{**dataclasses.asdict(f), 'index': i} for i, f in enumerate(listing.files)]
    logging.info('ImageIngest: %d inputs under %s (%d excluded by globs, %d TFRecord files)',
                 len(sources), data_dir, len(listing.excluded),
                 sum(1 for f in listing.files if f.kind == 'tfrecord'))

    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    dirs = {'side': os.path.join(report_artifact.uri, 'records'),
            'staged': os.path.join(report_artifact.uri, 'staged'),
            **{name: artifact_utils.get_split_uri([examples], name) for name in SPLITS}}
    tf.io.gfile.makedirs(dirs['side'])
    try:
      with self._make_beam_pipeline() as p:
        _build(p, sources, settings, dirs)
    finally:
      if tf.io.gfile.exists(dirs['staged']):
        tf.io.gfile.rmtree(dirs['staged'])

    failpoints.hit('ingest.after_write')  # records written, report not yet: a mid-step crash
    report = self._report(exec_properties, params, listing, dirs['side'],
                          time.time() - started)
    report_path = os.path.join(report_artifact.uri, contract.REPORT_FILE)
    io_utils.write_json(report_path, report)
    tfx_io_utils.write_pbtxt_file(os.path.join(schema_artifact.uri, 'schema.pbtxt'),
                                  schemas.load_schema())
    self._annotate(examples, report_artifact, report, data_dir)
    self._check_usable(report, params.max_bad_fraction, data_dir, report_path)
    logging.info('ImageIngest: %d examples (train %d, eval %d; %d train labels used by the '
                 'probe), %d quarantined, %d duplicates, %d downscaled, %d excluded, '
                 '%.1f inputs/s', report['num_examples'], report['split_counts']['train'],
                 report['split_counts']['eval'], report['num_labelled_for_probe'],
                 report['num_quarantined'], report['num_duplicates'],
                 report['num_downscaled'], report['num_excluded'],
                 report['num_records'] / max(report['seconds'], 1e-9))

  @staticmethod
  def _annotate(examples, report_artifact, report, data_dir) -> None:
    for artifact in (examples, report_artifact):
      artifact.set_string_custom_property(contract.DATA_FINGERPRINT, report['data_fingerprint'])
      artifact.set_string_custom_property(contract.SOURCE_DIR, os.path.abspath(data_dir))
      for key in contract.COUNTS:
        artifact.set_int_custom_property(key, report[key])
    for name in SPLITS:
      examples.set_int_custom_property(contract.split_count(name), report['split_counts'][name])
    examples.set_string_custom_property(contract.CLASSES, json.dumps(report['classes']))

  @staticmethod
  def _report(exec_properties, params, listing, side_dir, seconds) -> Dict[str, Any]:
    manifest = _read_lines(os.path.join(side_dir, 'manifest*.jsonl'))
    quarantined = sorted(_read_lines(os.path.join(side_dir, 'quarantine*.jsonl')) +
                         [{'path': p, 'reason': r} for p, r in listing.unreadable],
                         key=lambda r: r['path'])
    duplicates = sorted(_read_lines(os.path.join(side_dir, 'duplicates*.jsonl')),
                        key=lambda r: r['path'])
    downscaled = sorted(_read_lines(os.path.join(side_dir, 'downscaled*.jsonl')),
                        key=lambda r: r['path'])
    per_class = collections.defaultdict(lambda: {'train': 0, 'eval': 0, 'train_labelled': 0})
    for row in manifest:
      counts = per_class[row['class'] or '<unlabelled>']
      counts[row['split']] += 1
      if row['split'] == 'train' and row['labelled']:
        counts['train_labelled'] += 1
    # The content fingerprint: which bytes, with which labels, in which split.
    digest = hashlib.sha256()
    for row in sorted(manifest, key=lambda r: r['sha256']):
      digest.update(f"{row['sha256']} {row['label']} {row['labelled']} {row['split']}\n".encode())
    return {
        'source_dir': os.path.abspath(exec_properties['data_dir']),
        'manifest': params.manifest,
        'include_globs': params.include_globs,
        'exclude_globs': params.exclude_globs,
        'source_listing_fingerprint': exec_properties['source_fingerprint'],
        'data_fingerprint': digest.hexdigest(),
        'eval_percent': params.eval_percent,
        'labelled_fraction': params.labelled_fraction,
        'classes': images.class_index(row['class'] for row in manifest),
        'num_files': len(listing.files),
        # Images read: one per image file, one per record of a TFRecord file.
        'num_records': len(manifest) + len(duplicates) + len(quarantined),
        'num_examples': len(manifest),
        'num_labelled': sum(1 for r in manifest if r['label'] >= 0),
        'num_labelled_for_probe': sum(1 for r in manifest
                                      if r['split'] == 'train' and r['labelled']),
        'num_quarantined': len(quarantined),
        'num_duplicates': len(duplicates),
        # Kept, stored downscaled to fit limits.MAX_DECODE_PIXELS (original size listed).
        'num_downscaled': len(downscaled),
        'num_excluded': len(listing.excluded),
        'num_not_in_manifest': listing.not_in_manifest,
        'split_counts': {s: sum(1 for r in manifest if r['split'] == s) for s in SPLITS},
        'per_class': dict(sorted(per_class.items())),
        'quarantined': quarantined,
        'duplicates': duplicates,
        'excluded': listing.excluded,
        'downscaled': downscaled,
        'seconds': round(seconds, 3),
    }

  @staticmethod
  def _check_usable(report, max_bad_fraction, data_dir, report_path) -> None:
    if report['num_examples'] == 0:
      reasons = collections.Counter(r['reason'].split(':')[0] for r in report['quarantined'])
      raise images.IngestError(
          f'no valid image in {data_dir}: all {report["num_records"]} inputs were quarantined '
          f'({dict(reasons)}); see {report_path}')
    bad_fraction = report['num_quarantined'] / max(report['num_records'], 1)
    if bad_fraction > max_bad_fraction:
      raise images.IngestError(
          f'{report["num_quarantined"]} of {report["num_records"]} inputs in {data_dir} are not '
          f'usable images ({bad_fraction:.0%} > max_bad_fraction {max_bad_fraction:.0%}); '
          f'see {report_path} for each file and its reason')
    for split in SPLITS:
      if report['split_counts'][split] == 0:
        raise images.IngestError(
            f'the {split} split is empty ({report["num_examples"]} unique images, eval_percent='
            f'{report["eval_percent"]}); add images or change eval_percent')


def run_standalone(data_dir: str, out_dir: str, beam_pipeline_args=('--runner=DirectRunner',),
                   **params):
  """Runs the executor outside a pipeline, on fresh artifacts under out_dir (tests and
  benchmarks), with IngestParams' defaults for the settings not in params. Returns (report
  dict, Examples artifact)."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components.artifacts import IngestReport  # pylint: disable=g-import-not-at-top
  outputs = {'examples': standard_artifacts.Examples(), 'schema': standard_artifacts.Schema(),
             'report': IngestReport()}
  for name, artifact in outputs.items():
    artifact.uri = os.path.join(out_dir, name)
    tf.io.gfile.makedirs(artifact.uri)
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=list(beam_pipeline_args), tmp_dir=os.path.join(out_dir, 'tmp'))
  exec_properties = {'data_dir': str(data_dir), 'source_fingerprint': '',
                     EXEC_PROPERTY: IngestParams(**params).to_json()}
  Executor(context).Do({}, {k: [v] for k, v in outputs.items()}, exec_properties)
  report = io_utils.read_json(os.path.join(outputs['report'].uri, contract.REPORT_FILE))
  return report, outputs['examples']
