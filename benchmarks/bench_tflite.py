"""Size and latency of each encoder format on this CPU: SavedModel, TFLite float32, TFLite int8.

  make bench-tflite     (or: .venv/bin/python -m benchmarks.bench_tflite [--model VERSION_DIR])

Uses the newest pushed version under out/serving/simclr_encoder (run `make run` first, or pass
--model). One image per call (batch 1), median of many calls after a warm-up; the TFLite
interpreter's thread count is stated per row. Writes a table between the bench-tflite markers
of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

from benchmarks import docs_section
from components.edge_export import contract as edge_contract, tflite
from components.pusher import push

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_ms(fn, runs: int, warmup: int = 20) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(runs):
    started = time.perf_counter()
    fn()
    times.append(time.perf_counter() - started)
  return 1000 * statistics.median(times)


def folder_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
             for f in files)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='', help='a pushed version folder')
  parser.add_argument('--runs', type=int, default=300)
  args = parser.parse_args()
  model_dir = args.model
  if not model_dir:
    base = os.path.join(REPO, 'out', 'serving', 'simclr_encoder')
    versions = push.versions(base)
    if not versions:
      raise SystemExit(f'no pushed model under {base}: run `make run` first, or pass --model')
    model_dir = os.path.join(base, str(versions[-1]))
  tflite_dir = os.path.join(model_dir, 'tflite')
  image = sorted(glob.glob(os.path.join(REPO, 'out', 'demo_data', '*', '*.png')))[:1]
  encoded = open(image[0], 'rb').read() if image else tf.io.encode_png(
      tf.zeros([28, 28, 3], tf.uint8)).numpy()

  loaded = tf.saved_model.load(model_dir)
  serve = loaded.signatures['serving_default']
  serve_pixels = loaded.signatures['serving_pixels']
  size = int(serve_pixels.structured_input_signature[1]['pixels'].shape[1])
  pixels = tflite.decode_pixels([encoded], size)
  one_bytes, one_pixels = tf.constant([encoded]), tf.constant(pixels)
  saved_model_bytes = folder_bytes(model_dir) - folder_bytes(tflite_dir)
  rows = [
      ('SavedModel `serving_default` (PNG bytes in: decode + resize + encoder)', 'TF, 2 threads',
       saved_model_bytes, median_ms(lambda: serve(images=one_bytes), args.runs)),
      ('SavedModel `serving_pixels` (decoded pixels in)', 'TF, 2 threads', saved_model_bytes,
       median_ms(lambda: serve_pixels(pixels=one_pixels), args.runs)),
  ]
  for name, label in ((edge_contract.FLOAT_FILE, 'TFLite float32'), (edge_contract.INT8_FILE, 'TFLite int8')):
    path = os.path.join(tflite_dir, name)
    if not os.path.isfile(path):
      rows.append((label, 'not pushed (see tflite/parity.json)', 0, float('nan')))
      continue
    for threads in (1, 2):
      encoder = tflite.TFLiteEncoder(path, num_threads=threads)
      rows.append((f'{label} (decoded pixels in)', f'interpreter, {threads} thread(s)',
                   os.path.getsize(path),
                   median_ms(lambda e=encoder: e.embed_one(pixels[0]), args.runs)))

  shown = os.path.relpath(model_dir, REPO) if model_dir.startswith(REPO) else model_dir
  lines = [f'Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores; '
           f'model: `{shown}` ({size} px); command: '
           f'`make bench-tflite`; batch 1, median of {args.runs} calls after 20 warm-up calls.',
           '', '| format | runtime | size (bytes) | median latency (ms) |', '|---|---|---|---|']
  lines += [f'| {name} | {runtime} | {nbytes:,} | {ms:.3f} |' for name, runtime, nbytes, ms in rows]
  print(docs_section.write_section('bench-tflite', 'Edge export: size and latency per format',
                                   lines))


if __name__ == '__main__':
  main()
