"""Corpus embedding throughput: the Embedder's Beam RunInference against the in-process path
(the served signature called in a loop, what the LinearEvaluator did before the Embedder).

  make bench-embed      (or: .venv/bin/python -m benchmarks.bench_embed [--output OUT])

Uses the newest ImageIngest examples and SimCLRTrainer model recorded in OUT/metadata.sqlite
(run `make run` first). Every record of both splits, each path timed from start (model load and
pipeline start-up included) to the last embedding written or returned. Writes a table between
the bench-embed markers of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from tfx.utils import path_utils

from benchmarks import docs_section
from components import io_utils, limits
from components.embedder import inference
from components.image_ingest.contract import SPLITS
from components.simclr_trainer import hardware
from pipeline import run_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNERS = {
    'RunInference, DirectRunner in_memory (the default)':
        ['--runner=DirectRunner', '--direct_running_mode=in_memory'],
    'RunInference, DirectRunner multi_processing, 2 workers':
        ['--runner=DirectRunner', '--direct_running_mode=multi_processing',
         '--direct_num_workers=2'],
}


def newest_inputs(output: str):
  """(examples uri, split counts, model uri) of the newest run in OUT/metadata.sqlite."""
  executions = run_record.executions_by_component(os.path.join(output, 'metadata.sqlite'))
  if 'SimCLRTrainer' not in executions:
    raise SystemExit(f'no trained model recorded in {output}: run `make run` first')
  examples = executions['ImageIngest']['outputs']['examples'][0]
  counts = {s: int(examples['properties'][f'num_{s}']) for s in SPLITS}
  return examples['uri'], counts, executions['SimCLRTrainer']['outputs']['model'][0]['uri']


def in_process(examples_uri: str, model_uri: str) -> int:
  """The served signature in a loop over every record, in served-size requests."""
  serve = io_utils.load_serving_signature(path_utils.serving_model_path(model_uri))
  count = 0
  for split in SPLITS:
    files = io_utils.split_files(os.path.join(examples_uri, f'Split-{split}'))
    for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(
        limits.MAX_REQUEST_IMAGES):
      records = [inference.parse_record(r) for r in batch.numpy()]
      requests = [tf.constant([records[i]['image'] for i in request])
                  for request in limits.plan_batches([r['pixels'] for r in records])]
      count += len(io_utils.embed_batches(serve, requests))
  return count


def run_inference(examples_uri: str, model_uri: str, args: list, work: str,
                  counts: dict) -> int:
  """The Embedder's Beam transform, as the component builds it, with these Beam options."""
  saved_model = path_utils.serving_model_path(model_uri)
  with beam.Pipeline(options=PipelineOptions(args)) as p:
    for split in SPLITS:
      files = io_utils.split_files(os.path.join(examples_uri, f'Split-{split}'))
      _ = p | f'Embed[{split}]' >> inference.EmbedSplit(
          files, saved_model, os.path.join(work, split, 'embeddings'), split, counts[split])
  return sum(io_utils.count_embeddings(os.path.join(work, s))[0] for s in SPLITS)


def timed(fn, *args) -> tuple:
  started = time.time()
  count = fn(*args)
  return count, time.time() - started


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', default=os.path.join(REPO, 'out'),
                      help='the output folder of a run (default: make run\'s out/)')
  args = parser.parse_args()
  examples_uri, counts, model_uri = newest_inputs(args.output)
  total = sum(counts.values())
  print(f'{total} images ({counts}); model {model_uri}', flush=True)
  rows = []
  count, seconds = timed(in_process, examples_uri, model_uri)
  assert count == total, (count, total)
  rows.append(('in-process: `serving_default` in a loop (one process)', seconds))
  print(f'{rows[-1][0]}: {total / seconds:.0f} images/s', flush=True)
  for name, beam_args in RUNNERS.items():
    work = tempfile.mkdtemp(prefix='bench_embed_')
    try:
      count, seconds = timed(run_inference, examples_uri, model_uri, beam_args, work, counts)
    finally:
      shutil.rmtree(work, ignore_errors=True)
    assert count == total, (name, count, total)
    rows.append((name, seconds))
    print(f'{name}: {total / seconds:.0f} images/s', flush=True)
  write_doc(rows, total, model_uri)


def write_doc(rows, total: int, model_uri: str) -> None:
  lines = [f'Measured {datetime.date.today()} on {hardware.describe_cpu()}; {total} images of '
           f'the newest run (model `{os.path.basename(os.path.dirname(model_uri))}/'
           f'{os.path.basename(model_uri)}`); command: `make bench-embed`; start to last '
           'embedding, model load and pipeline start-up included.', '',
           '| path | seconds | images/s |', '|---|---|---|']
  lines += [f'| {name} | {seconds:.1f} | {total / seconds:,.0f} |' for name, seconds in rows]
  print(docs_section.write_section('bench-embed', 'make bench-embed', lines))


if __name__ == '__main__':
  main()
