"""Input-pipeline benchmark: ImageIngest and the augmentation on CIFAR-10 train (20,000 JPEGs).

  make bench-input      (or: .venv/bin/python -m benchmarks.bench_input [--data-dir DIR])

Measures
  - ingest images/s: the real ImageIngest Beam executor (list, read, decode-validate, sha256
    de-dup, split, gzip TFRecords), single process (DirectRunner in_memory) vs
    multi_processing with one worker per core;
  - augmentation images/s (an image = both of its views, normalised): augment.two_views on
    in-memory batches, and the whole dual_view_dataset() pipeline (parse cached transformed
    records, shuffle, batch, augment, prefetch).
Writes a table between the bench-input markers of docs/benchmarks.md and prints a JSON line.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from benchmarks import docs_section
from components.dual_view_transform import augment, dataset, preprocessing
from components.image_ingest import executor as ingest_executor
from pipeline.config import PipelineConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'datasets', 'cifar10', 'train')
BATCH = 256


def bench_ingest(data_dir: str, beam_args, work: str) -> dict:
  out = tempfile.mkdtemp(dir=work)
  started = time.perf_counter()
  report, examples = ingest_executor.run_standalone(data_dir, out, beam_pipeline_args=beam_args)
  seconds = time.perf_counter() - started
  return {'seconds': seconds, 'images_per_sec': report['num_records'] / seconds,
          'num_examples': report['num_examples'], 'examples': examples}


def decoded_train_images(examples, size: int) -> np.ndarray:
  """uint8 [N, S, S, 3] through the real TFT decode/resize graph (no analyzers needed)."""
  files = tf.io.gfile.glob(os.path.join(examples.uri, 'Split-train', '*.gz'))
  spec = {'image/encoded': tf.io.FixedLenFeature([], tf.string)}
  data = (tf.data.TFRecordDataset(files, compression_type='GZIP')
          .map(lambda r: tf.io.parse_single_example(r, spec)['image/encoded'])
          .batch(512)
          .map(lambda b: tf.cast(tf.round(preprocessing.decode_and_resize(b, size) * 255), tf.uint8)))
  return np.concatenate([b.numpy() for b in data])


def write_transformed(pixels: np.ndarray, split_dir: str) -> None:
  os.makedirs(split_dir, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(split_dir, 'transformed-00000.gz'), 'GZIP') as writer:
    for image in pixels:
      feature = {
          preprocessing.IMAGE: tf.train.Feature(
              int64_list=tf.train.Int64List(value=image.reshape(-1).astype(np.int64))),
          preprocessing.CHANNEL_MEAN: tf.train.Feature(
              float_list=tf.train.FloatList(value=[0.49, 0.48, 0.45])),
          preprocessing.CHANNEL_STD: tf.train.Feature(
              float_list=tf.train.FloatList(value=[0.25, 0.24, 0.26])),
      }
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())


def bench_augment(pixels: np.ndarray, policy: dict, batches: int = 30) -> float:
  mean, std = tf.constant([0.49, 0.48, 0.45]), tf.constant([0.25, 0.24, 0.26])
  step = tf.function(lambda x, s: augment.two_views(x, policy, s, mean, std))
  x = tf.constant(pixels[:BATCH].astype(np.float32) / 255.0)
  step(x, tf.constant([0, 0], tf.int64))  # trace
  started = time.perf_counter()
  for i in range(batches):
    view_a, _ = step(x, tf.constant([0, i], tf.int64))
  _ = view_a.numpy()
  return batches * BATCH / (time.perf_counter() - started)


def bench_dataset(split_dir: str, policy: dict, num_records: int, batches: int = 60) -> float:
  data = iter(dataset.dual_view_dataset(split_dir, policy, BATCH, seed=0))
  for _ in range(num_records // BATCH + 4):
    next(data)  # one full pass fills the cache; a few more warm up
  started = time.perf_counter()
  for _ in range(batches):
    next(data)
  return batches * BATCH / (time.perf_counter() - started)


def write_doc(results: dict, command: str) -> None:
  ingest, aug = results['ingest'], results['augmentation']
  lines = [
      f'Measured {results["date"]} on {results["machine"]}; command: `{command}`.',
      f'Data: {results["data_dir_name"]} ({ingest["single_process"]["num_examples"]} images '
      'after de-duplication).',
      '',
      '| what | setting | seconds | images/s |',
      '|---|---|---|---|',
  ]
  for name, row in ingest.items():
    lines.append(f'| ImageIngest (Beam DirectRunner) | {name} ({row["args"]}) | '
                 f'{row["seconds"]:.1f} | {row["images_per_sec"]:.0f} |')
  for size, row in aug.items():
    lines.append(f'| augment.two_views, batch {BATCH} | {size} px, policy of that size | | '
                 f'{row["two_views"]:.0f} |')
    lines.append(f'| dual_view_dataset() end to end, batch {BATCH} | {size} px | | '
                 f'{row["dataset"]:.0f} |')
  lines += ['', 'An image = both of its views. Augmentation runs on the same 2 cores the '
            'trainer uses; compare with the trainer\'s images/s.']
  docs_section.write_section('bench-input', 'Input pipeline (issue: ingest and transform)',
                             lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data-dir', default=DEFAULT_DATA)
  parser.add_argument('--no-doc', action='store_true', help='do not update docs/benchmarks.md')
  args = parser.parse_args()
  if not os.path.isdir(args.data_dir):
    raise SystemExit(f'benchmark data not found: {args.data_dir} (see ../shared/datasets)')
  work = tempfile.mkdtemp(prefix='bench_input_')
  try:
    settings = {
        'single_process': ['--runner=DirectRunner', '--direct_running_mode=in_memory'],
        'multi_processing': ['--runner=DirectRunner', '--direct_running_mode=multi_processing',
                             f'--direct_num_workers={os.cpu_count()}'],
    }
    ingest = {}
    for name, beam_args in settings.items():
      row = bench_ingest(args.data_dir, beam_args, work)
      ingest[name] = {'args': ' '.join(beam_args[1:]), 'seconds': row['seconds'],
                      'images_per_sec': row['images_per_sec'],
                      'num_examples': row['num_examples']}
      examples = row['examples']
      print(f'ingest {name}: {row["images_per_sec"]:.0f} images/s ({row["seconds"]:.1f}s)',
            flush=True)
    augmentation = {}
    for size in (32, 96):
      pixels = decoded_train_images(examples, size)
      policy = PipelineConfig(image_size=size, hflip=True).augmentation_policy()
      split_dir = os.path.join(work, f'transformed_{size}', 'Split-train')
      records = pixels[:4096]
      write_transformed(records, split_dir)
      augmentation[size] = {'two_views': bench_augment(pixels, policy),
                            'dataset': bench_dataset(split_dir, policy, len(records))}
      print(f'augmentation {size}px: {augmentation[size]}', flush=True)
    results = {
        'date': datetime.date.today().isoformat(),
        'machine': f'{os.cpu_count()} cores, {platform.processor() or platform.machine()}, '
                   f'TF {tf.__version__}',
        'data_dir_name': os.path.relpath(args.data_dir, os.path.dirname(REPO)),
        'ingest': ingest, 'augmentation': augmentation,
    }
    if not args.no_doc:
      write_doc(results, 'make bench-input')
    print(json.dumps({'ingest_images_per_sec': {k: round(v['images_per_sec'], 1)
                                                for k, v in ingest.items()},
                      'augment_images_per_sec': {k: {m: round(x, 1) for m, x in v.items()}
                                                 for k, v in augmentation.items()}}))
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  main()
