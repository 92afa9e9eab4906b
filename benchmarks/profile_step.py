"""Where a ResNet-18 (CIFAR stem, 32 px, batch 128) SimCLR step spends its time, by precision.

  .venv/bin/python -m benchmarks.profile_step      (about 4 minutes; updates docs/benchmarks.md)

Times, on fixed in-memory views (no input pipeline), cumulative pieces of the product's step:
forward of both views; + loss and backward; + the LARS update (the whole step); the same step
with plain SGD; and the whole step fed by dual_view_dataset() as in training.
"""
from __future__ import annotations

import datetime
import os
import platform
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import keras
import tensorflow as tf

from benchmarks import bench_perf, docs_section
from components.simclr_trainer import losses, model as model_lib, training
from components.simclr_trainer.params import TrainerParams

BATCH, SIZE, STEPS, WARMUP = 128, 32, 6, 2


def timed(fn, *args) -> float:
  for _ in range(WARMUP):
    out = fn(*args)
  float(tf.reduce_sum(tf.nest.flatten(out)[0]))
  started = time.perf_counter()
  for _ in range(STEPS):
    out = fn(*args)
  float(tf.reduce_sum(tf.nest.flatten(out)[0]))
  return (time.perf_counter() - started) / STEPS


def profile(precision: str) -> dict:
  keras.utils.set_random_seed(0)
  view_a = tf.random.uniform([BATCH, SIZE, SIZE, 3])
  view_b = tf.random.uniform([BATCH, SIZE, SIZE, 3])
  rows = {}
  for optimizer_name in ('lars', 'sgd'):
    params = TrainerParams(backbone='resnet18', optimizer=optimizer_name, batch_size=BATCH,
                           learning_rate=0.5 * 256 / BATCH, warmup_fraction=0.01,
                           temperature=0.2)
    state = training.build_training_state(params, SIZE, 1000, precision=precision)
    encoder, head, variables, train_step = (state.encoder, state.head, state.variables,
                                            state.train_step)
    if optimizer_name == 'lars':
      forward = tf.function(lambda a, b: (head(encoder(a, training=True), training=True),
                                          head(encoder(b, training=True), training=True)))

      @tf.function
      def backward(a, b):
        with tf.GradientTape() as tape:
          loss = losses.nt_xent_loss(head(encoder(a, training=True), training=True),
                                     head(encoder(b, training=True), training=True), 0.2)
        return tape.gradient(loss, variables)

      rows['forward, both views'] = timed(forward, view_a, view_b)
      rows['+ loss and backward'] = timed(backward, view_a, view_b)
      rows['+ LARS update = the whole step'] = timed(train_step, (view_a, view_b))
    else:
      rows['the whole step with SGD instead of LARS'] = timed(train_step, (view_a, view_b))
  return rows


def main() -> None:
  results = {p: profile(p) for p in ('float32', 'mixed_bfloat16')}
  flops = None
  with training.precision_policy('float32'):
    encoder = model_lib.build_encoder('resnet18', SIZE)
    head = model_lib.build_projection_head(encoder.output_shape[-1], 128, 2)
    flops = bench_perf.train_flops_per_image(encoder, head)
  peak = {'float32': bench_perf.matmul_peak(tf.float32, 2048) / 1e9,
          'mixed_bfloat16': bench_perf.matmul_peak(tf.bfloat16, 2048) / 1e9}
  lines = [f'Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} cores, '
           f'{platform.processor() or platform.machine()}, TF {tf.__version__}; command: '
           '`.venv/bin/python -m benchmarks.profile_step`. ResNet-18 CIFAR stem, 32 px, batch '
           f'{BATCH}, fixed in-memory views; seconds per step, mean of {STEPS} after {WARMUP}.',
           '', '| piece (cumulative) | float32 s | bf16 s | float32 images/s | bf16 images/s |',
           '|---|---|---|---|---|']
  for piece in results['float32']:
    f32, bf16 = results['float32'][piece], results['mixed_bfloat16'][piece]
    lines.append(f'| {piece} | {f32:.3f} | {bf16:.3f} | {BATCH / f32:.1f} | {BATCH / bf16:.1f} |')
  whole = '+ LARS update = the whole step'
  mfu = {p: BATCH / results[p][whole] * flops / 1e9 / peak[p] for p in peak}
  lines += ['', f'Matmul peak in the same run: float32 {peak["float32"]:.0f}, bfloat16 '
            f'{peak["mixed_bfloat16"]:.0f} GFLOP/s; whole-step MFU float32 {mfu["float32"]:.2f}, '
            f'bf16 {mfu["mixed_bfloat16"]:.2f} ({flops / 1e9:.2f} GFLOP per image).']
  docs_section.write_section('profile-step', 'Profile of the ResNet-18 step (issue: performance)',
                             lines)
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
