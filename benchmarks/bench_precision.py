"""Which precision trains fastest on this machine, and what `precision=auto` picks here.

  .venv/bin/python -m benchmarks.bench_precision     (2 to 4 minutes; updates docs/benchmarks.md)

Times the `cifar` preset's training step (half-width ResNet-18, CIFAR stem, batch 256, 24 px
crops, LARS, NT-Xent) on fixed in-memory views in float32 and in mixed_bfloat16, next to the
matmul peak of each, and reports the CPU's bf16 flags and hardware.resolve_precision('auto').
Written because bf16 is faster than float32 only on a CPU with native bf16 and several times
slower on one without, so the same preset's minutes differ widely between machines (the
bench-precision block of docs/benchmarks.md has the figures).
"""
from __future__ import annotations

import argparse
import datetime
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import keras
import tensorflow as tf

from benchmarks import bench_perf, docs_section
from components.simclr_trainer import hardware, training
from components.simclr_trainer.params import TrainerParams

BATCH, CROP, WIDTH, STEPS = 256, 24, 0.5, 3


def step_seconds(precision: str, steps: int) -> tuple:
  """(seconds of the first call, which traces, and mean seconds of the next `steps`)."""
  keras.utils.set_random_seed(0)
  views = (tf.random.uniform([BATCH, CROP, CROP, 3]), tf.random.uniform([BATCH, CROP, CROP, 3]))
  params = TrainerParams(backbone='resnet18', width_multiplier=WIDTH, batch_size=BATCH,
                         warmup_fraction=0.01, temperature=0.1)
  train_step = training.build_training_state(params, CROP, 1000, precision=precision).train_step
  started = time.perf_counter()
  float(train_step(views)[0])
  first = time.perf_counter() - started
  started = time.perf_counter()
  for _ in range(steps):
    out = train_step(views)
  float(out[0])
  return first, (time.perf_counter() - started) / steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=STEPS)
  parser.add_argument('--no-doc', action='store_true')
  args = parser.parse_args()
  flags = hardware.cpu_flags()
  auto, reason, _ = hardware.resolve_precision('auto', flags,
                                               hardware.gpu_compute_capabilities())
  rows = []
  for precision in ('float32', 'mixed_bfloat16'):
    dtype = tf.bfloat16 if precision == 'mixed_bfloat16' else tf.float32
    peak = bench_perf.matmul_peak(dtype, 1024) / 1e9
    first, seconds = step_seconds(precision, args.steps)
    rows.append((precision, peak, first, seconds))
    print(f'{precision}: matmul {peak:.0f} GFLOP/s, first step {first:.1f} s, then '
          f'{seconds:.2f} s/step = {BATCH / seconds:.0f} images/s', flush=True)
  lines = [f'Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} cores, '
           f'{hardware.describe_cpu()}, TF {tf.__version__}; command: `.venv/bin/python -m '
           f'benchmarks.bench_precision`. The `cifar` preset\'s step: ResNet-18 x{WIDTH:g} (CIFAR '
           f'stem), batch {BATCH}, {CROP} px crops, LARS; fixed in-memory views, mean of '
           f'{args.steps} steps after the first.', '',
           f'`precision=auto` picks **{auto}** here '
           f'({reason}).', '',
           '| precision | matmul peak GFLOP/s | first step (traces) s | s/step | images/s |',
           '|---|---|---|---|---|']
  lines += [f'| {p} | {peak:.0f} | {first:.1f} | {s:.2f} | {BATCH / s:.0f} |'
            for p, peak, first, s in rows]
  if not args.no_doc:
    docs_section.write_section('bench-precision', 'Precision on this CPU (precision=auto)',
                               lines)
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
