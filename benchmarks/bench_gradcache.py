"""Gradient caching: the memory and the speed of a large contrastive batch in micro-batches.

  make bench-gradcache    (or: .venv/bin/python -m benchmarks.bench_gradcache [--steps N])

The `cifar` preset's model, precision and augmentations (ResNet-18 x0.5, CIFAR stem, its crops)
on 4,096 images of ../shared/datasets/cifar10/train, one fresh process per configuration:

- batch 1024 in micro-batches of 128 (micro_batch_size=128: the exact batch-1024 loss);
- batch 1024 without caching, where it fits in memory;
- batch 128 without caching.

Per configuration: the trainer's own train step (training.build_training_state), images/s over
--steps steps after one warm-up step, and the process's peak resident memory, also less the
memory it held before the first step (the model, the optimiser and the decoded images), which
is what the step's activations add.

Then quality at equal minutes (--quality-minutes, default 10; 0 skips it): the `cifar` pipeline
on the whole train folder twice into one output folder (the ingest and transform run once),
pretraining for that many minutes at batch 1024 in micro-batches of 128, and at batch 256
without caching (the preset's batch), and the pipeline's linear probe and kNN top-1 on its eval
split. The classifier stages and the TFLite export are off: only the encoder is compared.

The tables go between the bench-gradcache markers of docs/benchmarks.md; the last output line
is a JSON object.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = os.path.join(os.path.dirname(REPO), 'shared', 'datasets', 'cifar10', 'train')
CONFIGS = ((1024, 128), (1024, 0), (128, 0))  # (batch, micro_batch_size)
IMAGES = 4096
QUALITY = ((1024, 128), (256, 0))  # (batch, micro_batch_size) at equal minutes


def _rss_mib() -> float:
  with open('/proc/self/status', encoding='ascii') as f:
    kib = next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))
  return kib / 1024


def write_split(folder: str, count: int) -> str:
  """The first count/10 images of each class folder, decoded, as a transformed train split."""
  import numpy as np
  from PIL import Image
  from benchmarks import bench_input
  classes = sorted(os.listdir(DATASET))
  pixels = []
  for name in classes:
    files = sorted(os.listdir(os.path.join(DATASET, name)))[:count // len(classes)]
    for file in files:
      with Image.open(os.path.join(DATASET, name, file)) as image:
        pixels.append(np.array(image.convert('RGB').resize((32, 32))))
  split = os.path.join(folder, 'Split-train')
  bench_input.write_transformed(np.stack(pixels), split)
  return split


def child(split: str, batch: int, micro: int, steps: int) -> dict:
  """One configuration in this process: the trainer's state and step on the split."""
  import tensorflow as tf
  from components.dual_view_transform import dataset
  from components.simclr_trainer import hardware, training
  from components.simclr_trainer.params import TrainerParams
  from pipeline.config import build_config
  config = build_config(preset='cifar', set_args=[f'batch_size={batch}',
                                                  f'micro_batch_size={micro}'])
  params = TrainerParams.of(config)
  precision = hardware.training_precision(params.precision, 'bench-gradcache')
  policy = config.augmentation_policy()
  state = training.build_training_state(params, config.image_size, 10_000, precision=precision,
                                        any_input_size=policy['crop_size'] != config.image_size)
  data = iter(dataset.dual_view_dataset(split, policy, batch, seed=0))
  for _ in range(IMAGES // batch + 1):
    next(data)  # one pass fills the decoded-image cache
  before = _rss_mib()
  state.train_step(next(data))  # warm-up: traces the step
  started = time.perf_counter()
  for _ in range(steps):
    loss, _, _ = state.train_step(next(data))
  float(loss)
  seconds = time.perf_counter() - started
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {'batch': batch, 'micro_batch_size': micro, 'precision': precision,
          'images_per_sec': round(steps * batch / seconds, 1), 'peak_rss_mib': round(peak),
          'step_rss_mib': round(peak - before), 'loss': round(float(loss), 4),
          'backbone': params.backbone, 'width_multiplier': params.width_multiplier,
          'crop_px': policy['crop_size'], 'tf': tf.__version__}


def run_config(split: str, batch: int, micro: int, steps: int) -> dict:
  command = [sys.executable, '-m', 'benchmarks.bench_gradcache', '--child', split, '--batch',
             str(batch), '--micro', str(micro), '--steps', str(steps)]
  print('running:', ' '.join(command[2:]), flush=True)
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  if result.returncode != 0:  # out of memory, typically: recorded, not fatal
    tail = (result.stderr or '').strip().splitlines()[-1:] or [f'exit {result.returncode}']
    return {'batch': batch, 'micro_batch_size': micro, 'failed': tail[0][:200]}
  return json.loads(result.stdout.strip().splitlines()[-1])


def quality_run(out: str, batch: int, micro: int, minutes: float) -> dict:
  """The cifar pipeline with this batch for `minutes` of pretraining: its probe and kNN. A
  result already in `out` (quality-BATCH-MICRO-MINUTES.json) is read, not run again."""
  done = os.path.join(out, f'quality-{batch}-{micro}-{minutes:g}.json')
  if os.path.isfile(done):
    with open(done, encoding='utf-8') as f:
      return json.load(f)
  summary = os.path.join(out, f'summary-{batch}-{micro}.json')
  command = [sys.executable, '-m', 'simclr_tools.cli', 'run', '--preset', 'cifar', '--data-dir',
             DATASET, '--output', out, '--summary-json', summary]
  for setting in (f'batch_size={batch}', f'micro_batch_size={micro}', f'train_minutes={minutes}',
                  'finetune=false', 'edge_export=false', 'knn_monitor_every_epochs=0'):
    command += ['--set', setting]
  print('running:', ' '.join(command[2:]), flush=True)
  subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  with open(summary, encoding='utf-8') as f:
    result = json.load(f)
  from pipeline import run_record
  trainer = run_record.executions_by_component(os.path.join(out, 'metadata.sqlite'))[
      'SimCLRTrainer']['outputs']['model'][0]['properties']
  measured = {'batch': batch, 'micro_batch_size': micro, 'minutes': minutes,
              'train_steps': int(trainer['train_steps']),
              'linear_top1': round(result['linear_top1'], 4),
              'knn_top1': round(result['knn_top1'], 4)}
  with open(done, 'w', encoding='utf-8') as f:
    json.dump(measured, f)
  return measured


def write_doc(rows, quality, cpu: str) -> None:
  from benchmarks import docs_section
  lines = [f'Measured {datetime.date.today()} on {cpu}: the `cifar` preset\'s model '
           f'({rows[0].get("backbone")} x{rows[0].get("width_multiplier")}, '
           f'{rows[0].get("crop_px")} px crops, {rows[0].get("precision")}), '
           '`make bench-gradcache`.',
           '', '| batch | micro-batch | images/s | peak memory (MiB) | added by the step (MiB) |',
           '|---|---|---|---|---|']
  for row in rows:
    micro = row['micro_batch_size'] or 'off'
    if 'failed' in row:
      lines.append(f'| {row["batch"]} | {micro} | failed: {row["failed"]} | | |')
    else:
      lines.append(f'| {row["batch"]} | {micro} | {row["images_per_sec"]} | '
                   f'{row["peak_rss_mib"]} | {row["step_rss_mib"]} |')
  if quality:
    lines += ['', f'Quality at equal minutes ({quality[0]["minutes"]} min of pretraining each, the '
              'whole CIFAR-10 train folder, the pipeline\'s probe on its eval split):', '',
              '| batch | micro-batch | steps | linear probe top-1 | kNN top-1 |',
              '|---|---|---|---|---|']
    lines += [f'| {q["batch"]} | {q["micro_batch_size"] or "off"} | {q["train_steps"]} | '
              f'{q["linear_top1"]:.1%} | {q["knn_top1"]:.1%} |' for q in quality]
  docs_section.write_section('bench-gradcache', 'make bench-gradcache', lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=6, help='timed steps per configuration')
  parser.add_argument('--quality-minutes', type=float, default=10.0,
                      help='pretraining minutes of each quality run (0: no quality runs)')
  parser.add_argument('--output', default='', help='quality runs\' folder (default: a temp one); '
                      'the runs already in it are read, not repeated')
  parser.add_argument('--no-doc', action='store_true')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  parser.add_argument('--batch', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--micro', type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.batch, args.micro, args.steps)))
    return
  if not os.path.isdir(DATASET):
    raise SystemExit(f'benchmark data not found: {DATASET} (see ../shared/datasets)')
  from components.simclr_trainer import hardware
  with tempfile.TemporaryDirectory(prefix='bench_gradcache_') as work:
    split = write_split(work, IMAGES)
    rows = [run_config(split, batch, micro, args.steps) for batch, micro in CONFIGS]
  for row in rows:
    print(json.dumps(row), flush=True)
  quality = []
  if args.quality_minutes > 0:
    out = args.output or tempfile.mkdtemp(prefix='bench_gradcache_quality_')
    quality = [quality_run(out, batch, micro, args.quality_minutes) for batch, micro in QUALITY]
  if not args.no_doc:
    write_doc(rows, quality, hardware.describe_cpu())
  print(json.dumps({'rows': rows, 'quality': quality, 'cpu': hardware.describe_cpu()}))


if __name__ == '__main__':
  main()
