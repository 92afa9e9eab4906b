"""Performance harness: trainer, input pipeline and orchestration, side by side with a baseline.

  make bench                  (or: .venv/bin/python -m benchmarks.bench_perf [--quick])
  GPU: .venv/bin/python -m benchmarks.bench_perf --gpu   (bf16, XLA, batch 1024; see --help)

Measures, in one run on this machine:
  - the peak matmul FLOP/s at float32 and bfloat16 (square tf.matmul, best of several);
  - trainer images/s (an image = its two views) of the product's own train step
    (components/simclr_trainer/step.py, fed by dual_view_dataset()) for the default config and
    for ResNet-18 with the CIFAR stem at 32 px, batch 128 and 256, float32 and mixed_bfloat16;
    training FLOPs per image (analytic: conv and dense multiply-adds x 2, x 3 for forward +
    backward, x 2 views), achieved FLOP/s and `mfu` = achieved / peak at the precision used;
  - a seed-article baseline (benchmarks/baseline_simclr.py) on the same backbone, batch and data;
  - ingest images/s (the real ImageIngest Beam executor) and augmentation images/s
    (dual_view_dataset alone) on ../shared/datasets/cifar10/train; `input_ratio` = what the
    input pipeline delivers over what the trainer consumes;
  - `make run` wall time and `overhead_share`: the part of it outside the components' executions
    (process start-up, TF import, writing the demo PNGs, orchestration, MLMD), from MLMD's
    execution timestamps.
Writes a table between the bench-perf markers of docs/benchmarks.md; its last output line is one
JSON object with images_per_sec, mfu, speedup_vs_baseline, input_ratio, overhead_share.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # Keras 3, as the product's model (not tf.keras: see baseline_simclr.py)
import numpy as np
import tensorflow as tf

from benchmarks import baseline_simclr, bench_input, docs_section
from components.dual_view_transform import dataset
from components.simclr_trainer import training
from components.simclr_trainer.params import TrainerParams
from pipeline.config import PipelineConfig

REPO = bench_input.REPO
DEFAULT_DATA = bench_input.DEFAULT_DATA


# ---------------------------------------------------------------- FLOPs --------------------
QUICK_BATCH = 32  # --quick: a smoke run of the harness, not a measurement


def matmul_peak(dtype: tf.DType, n: int, seconds: float = 3.0, device: str = '') -> float:
  """Best achieved FLOP/s of an n x n x n matmul (2 n^3 FLOPs) over a few timed windows."""
  with tf.device(device or None):
    a = tf.cast(tf.random.normal([n, n]), dtype)
    b = tf.cast(tf.random.normal([n, n]), dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y), tf.float32)))
    matmul(a, b).numpy()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
      started = time.perf_counter()
      reps = 5
      for _ in range(reps):
        out = matmul(a, b)
      out.numpy()
      best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - started))
  return best


def forward_flops(model: keras.Model) -> int:
  """Multiply-adds x 2 of every Conv2D and Dense layer for one input (batch norm, ReLU, adds and
  pooling are under 1% for ResNets and left out)."""
  total = 0
  if not isinstance(model, keras.Model):
    raise TypeError(f'forward_flops counts Keras 3 models; got {type(model)} (a tf_keras model?)')
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      total += forward_flops(layer)
    elif isinstance(layer, keras.layers.Conv2D):
      out_h, out_w, out_c = layer.output.shape[1:]
      k_h, k_w, in_c, _ = layer.kernel.shape
      total += 2 * out_h * out_w * out_c * k_h * k_w * in_c
    elif isinstance(layer, keras.layers.Dense):
      in_dim, out_dim = layer.kernel.shape
      total += 2 * in_dim * out_dim
  return int(total)


def train_flops_per_image(encoder, head) -> int:
  """Forward + backward (about 2x forward) for both views of one image."""
  return 3 * 2 * (forward_flops(encoder) + forward_flops(head))


# ---------------------------------------------------------------- trainer ------------------
def time_steps(run_step, steps: int, warmup: int) -> float:
  """Seconds for `steps` calls after `warmup` (tracing, caches, allocator)."""
  for _ in range(warmup):
    out = run_step()
  float(out)
  started = time.perf_counter()
  for _ in range(steps):
    out = run_step()
  float(out)  # waits for the last step
  return time.perf_counter() - started


def bench_trainer(split_dir: str, num_records: int, backbone: str, width: float,
                  image_size: int, batch: int, precision: str, steps: int, warmup: int,
                  jit_compile: bool = False, device: str = '') -> dict:
  """The product's train step on the product's input pipeline; and the input pipeline alone."""
  policy = PipelineConfig(image_size=image_size, hflip=True).augmentation_policy()
  strategy = tf.distribute.OneDeviceStrategy(device) if device else tf.distribute.get_strategy()
  # Same initial weights and the same views for every precision of a model, so their losses
  # after the same steps can be compared (does bfloat16 cost accuracy per step?).
  keras.utils.set_random_seed(0)
  params = TrainerParams(backbone=backbone, width_multiplier=width, batch_size=batch,
                         warmup_fraction=0.001, temperature=0.2, jit_compile=jit_compile)
  state = training.build_training_state(params, image_size, 10_000, strategy=strategy,
                                        precision=precision)
  data = iter(strategy.experimental_distribute_dataset(
      dataset.dual_view_dataset(split_dir, policy, batch, seed=0)))
  for _ in range(num_records // batch + 1):
    next(data)  # one pass fills the decoded-image cache, as after the first epoch
  losses = []

  def run_step():
    loss, _, _ = state.train_step(next(data))
    losses.append(loss)
    return loss

  seconds = time_steps(run_step, steps, warmup)
  flops = train_flops_per_image(state.encoder, state.head)
  rate = steps * batch / seconds
  return {'backbone': backbone, 'width': width, 'image_size': image_size, 'batch': batch,
          'precision': precision, 'xla': jit_compile, 'steps': steps, 'seconds': seconds,
          'images_per_sec': rate, 'train_gflop_per_image': flops / 1e9,
          'achieved_gflops': rate * flops / 1e9,
          'loss_first': float(losses[0]), 'loss_last': float(losses[-1])}


def bench_input_only(split_dir: str, num_records: int, image_size: int, batch: int,
                     batches: int = 40) -> float:
  policy = PipelineConfig(image_size=image_size, hflip=True).augmentation_policy()
  data = iter(dataset.dual_view_dataset(split_dir, policy, batch, seed=1))
  for _ in range(num_records // batch + 2):
    next(data)
  started = time.perf_counter()
  for _ in range(batches):
    views = next(data)
  _ = views[0].numpy()
  return batches * batch / (time.perf_counter() - started)


def bench_baseline(pixels: np.ndarray, image_size: int, batch: int, steps: int,
                   warmup: int) -> dict:
  train_step, encoder, head = baseline_simclr.build(image_size)
  data = iter(baseline_simclr.dataset(pixels, batch))
  losses = []

  def run_step():
    view_a, view_b = next(data)
    loss = train_step(view_a, view_b)
    losses.append(loss)
    return loss

  seconds = time_steps(run_step, steps, warmup)
  flops = 3 * 2 * (forward_flops(encoder) + forward_flops(head))
  rate = steps * batch / seconds
  return {'images_per_sec': rate, 'seconds': seconds, 'steps': steps, 'batch': batch,
          'train_gflop_per_image': flops / 1e9, 'achieved_gflops': rate * flops / 1e9,
          'loss_first': float(losses[0]), 'loss_last': float(losses[-1])}


# ---------------------------------------------------------------- make run -----------------
def component_seconds(metadata_path: str) -> dict:
  """Seconds per component of the latest run in a store, from MLMD execution timestamps."""
  from pipeline import run_record
  store = run_record.open_store(metadata_path)
  run = run_record.latest_run(store)
  per_component = {}
  executions = store.get_executions_by_context(run.id)
  type_names = {t.id: t.name for t in store.get_execution_types_by_id(
      list({e.type_id for e in executions}))}
  for execution in executions:
    seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
    name = type_names[execution.type_id].split('.')[-1]
    per_component[name] = round(per_component.get(name, 0.0) + seconds, 2)
  return per_component


def bench_make_run(work: str) -> dict:
  """`make run` into a fresh output folder; component time from MLMD execution timestamps."""
  out = os.path.join(work, 'make_run_out')
  started = time.perf_counter()
  result = subprocess.run(['make', 'run', f'OUT={out}'], cwd=REPO, capture_output=True,
                          text=True)
  wall = time.perf_counter() - started
  if result.returncode != 0:
    raise RuntimeError(f'make run failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}')
  per_component = component_seconds(os.path.join(out, 'metadata.sqlite'))
  components = sum(per_component.values())
  return {'wall_seconds': wall, 'component_seconds': components,
          'overhead_seconds': wall - components, 'overhead_share': (wall - components) / wall,
          'per_component_seconds': per_component}


# ---------------------------------------------------------------- report -------------------
def write_doc(results: dict, command: str) -> None:
  peak = results['peak_gflops']
  lines = [
      f'Measured {results["date"]} on {results["machine"]}; command: `{command}`.',
      f'Peak matmul measured in the same run: float32 {peak["float32"]:.0f} GFLOP/s, bfloat16 '
      f'{peak["bfloat16"]:.0f} GFLOP/s. An image = both of its views. MFU = achieved training '
      'FLOP/s (analytic count) / the matmul peak at the precision used.',
      '',
      '| trainer | precision | batch | images/s | GFLOP/image | achieved GFLOP/s | MFU | '
      'loss first → last step |',
      '|---|---|---|---|---|---|---|---|',
  ]
  for row in results['trainer']:
    lines.append(
        f'| simclr-tfx {row["backbone"]} x{row["width"]:g} {row["image_size"]} px'
        f'{" XLA" if row["xla"] else ""} | {row["precision"]} | {row["batch"]} | '
        f'{row["images_per_sec"]:.1f} | {row["train_gflop_per_image"]:.2f} | '
        f'{row["achieved_gflops"]:.0f} | {row["mfu"]:.2f} | '
        f'{row["loss_first"]:.3f} → {row["loss_last"]:.3f} |')
  base = results['baseline']
  lines.append(f'| baseline (seed-article style) ResNet-18 32 px | float32 | {base["batch"]} | '
               f'{base["images_per_sec"]:.1f} | {base["train_gflop_per_image"]:.2f} | '
               f'{base["achieved_gflops"]:.0f} | {base["mfu"]:.2f} | '
               f'{base["loss_first"]:.3f} → {base["loss_last"]:.3f} |')
  run = results['make_run']
  inp = results['input']
  lines += [
      '',
      'Losses: every simclr-tfx row of one backbone starts from the same weights and sees the '
      'same views, so its precisions compare step for step. The baseline uses temperature 0.5, '
      'so its loss values are not comparable with the others.',
      '',
      '| input and orchestration | figure |',
      '|---|---|',
      f'| ImageIngest on cifar10/train (Beam DirectRunner, in-memory) | '
      f'{inp["ingest_images_per_sec"]:.0f} images/s |',
      f'| dual_view_dataset() alone, 32 px, batch 128 | '
      f'{inp["augment_images_per_sec"]:.0f} images/s |',
      f'| input_ratio (input pipeline / headline trainer) | {results["summary"]["input_ratio"]:.1f} |',
      f'| `make run` wall time (venv present, fresh output) | {run["wall_seconds"]:.0f} s |',
      f'| of which component executions (MLMD timestamps) | {run["component_seconds"]:.0f} s '
      f'({", ".join(f"{k} {v:.0f}" for k, v in run["per_component_seconds"].items())}) |',
      f'| overhead_share (start-up, TF import, demo PNGs, orchestration, MLMD) | '
      f'{run["overhead_share"]:.3f} |',
      '',
      'Summary (the JSON the command prints last): `' + json.dumps(results['summary']) + '`',
  ]
  docs_section.write_section('bench-perf', 'Performance harness (issue: performance)', lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data-dir', default=DEFAULT_DATA)
  parser.add_argument('--steps', type=int, default=8, help='timed steps per trainer config')
  parser.add_argument('--quick', action='store_true',
                      help='a smoke run: tiny steps, no make run, no docs update')
  parser.add_argument('--gpu', action='store_true',
                      help='GPU run: ResNet-18 CIFAR stem at batch 1024, bf16 and bf16+XLA, '
                      'peaks measured on the GPU; no make run')
  parser.add_argument('--no-doc', action='store_true', help='do not update docs/benchmarks.md')
  args = parser.parse_args()
  if not os.path.isdir(args.data_dir):
    raise SystemExit(f'benchmark data not found: {args.data_dir} (see ../shared/datasets)')
  steps, warmup = (2, 1) if args.quick else (args.steps, 3)
  device = '/GPU:0' if args.gpu else ''
  if args.gpu and not tf.config.list_physical_devices('GPU'):
    raise SystemExit('--gpu: TensorFlow sees no GPU here')
  work = tempfile.mkdtemp(prefix='bench_perf_')
  try:
    ingest = bench_input.bench_ingest(args.data_dir, ['--runner=DirectRunner',
                                                      '--direct_running_mode=in_memory'], work)
    print(f'ingest: {ingest["images_per_sec"]:.0f} images/s', flush=True)
    pixels = bench_input.decoded_train_images(ingest['examples'], 32)
    records = pixels if args.gpu else pixels[:4096]
    split_dir = os.path.join(work, 'transformed', 'Split-train')
    bench_input.write_transformed(records, split_dir)
    matmul_n = 8192 if args.gpu else 512 if args.quick else 2048
    peak = {'float32': matmul_peak(tf.float32, matmul_n, device=device) / 1e9,
            'bfloat16': matmul_peak(tf.bfloat16, matmul_n, device=device) / 1e9}
    print(f'peak matmul GFLOP/s: {peak}', flush=True)

    if args.gpu:
      configs = [('resnet18', 1.0, 1024, 'mixed_bfloat16', False),
                 ('resnet18', 1.0, 1024, 'mixed_bfloat16', True)]
    else:
      configs = [('resnet_small', 1.0, 128, 'float32', False),  # the product default
                 ('resnet_small', 1.0, 128, 'mixed_bfloat16', False),
                 ('resnet18', 1.0, 128, 'float32', False),
                 ('resnet18', 1.0, 128, 'mixed_bfloat16', False),
                 ('resnet18', 1.0, 128, 'mixed_bfloat16', True),
                 ('resnet18', 1.0, 256, 'mixed_bfloat16', False)]
      if args.quick:  # the default config, and a narrow bf16 ResNet-18 at a small batch:
        # bf16 is emulated on AVX2-only CPUs (minutes per full-width step)
        configs = configs[:1] + [('resnet18', 0.25, QUICK_BATCH, 'mixed_bfloat16', False)]
    trainer_rows = []
    for backbone, width, batch, precision, xla in configs:
      row = bench_trainer(split_dir, len(records), backbone, width, 32, batch, precision,
                          steps if backbone == 'resnet18' else steps * 4, warmup, xla, device)
      row['mfu'] = row['achieved_gflops'] / peak['bfloat16' if 'bfloat16' in precision
                                                  else 'float32']
      trainer_rows.append(row)
      print(f'trainer {backbone} b{batch} {precision}{" xla" if xla else ""}: '
            f'{row["images_per_sec"]:.1f} images/s, MFU {row["mfu"]:.2f}', flush=True)
    headline_batch = 1024 if args.gpu else QUICK_BATCH if args.quick else 128
    resnet18_rows = [r for r in trainer_rows
                     if r['backbone'] == 'resnet18' and r['batch'] == headline_batch]
    headline = max(resnet18_rows, key=lambda r: r['images_per_sec'])

    with tf.device(device or None):
      baseline = bench_baseline(records, 32, headline_batch, steps, warmup)
    baseline['mfu'] = baseline['achieved_gflops'] / peak['float32']
    print(f'baseline: {baseline["images_per_sec"]:.1f} images/s', flush=True)
    augment_rate = bench_input_only(split_dir, len(records), 32, 128)
    print(f'input pipeline alone: {augment_rate:.0f} images/s', flush=True)
    make_run = (bench_make_run(work) if not (args.quick or args.gpu) else
                {'wall_seconds': float('nan'), 'component_seconds': float('nan'),
                 'overhead_seconds': float('nan'), 'overhead_share': float('nan'),
                 'per_component_seconds': {}})
    print(f'make run: {make_run}', flush=True)

    summary = {
        'images_per_sec': round(headline['images_per_sec'], 2),
        'headline': f'{headline["backbone"]} CIFAR stem 32 px, batch {headline["batch"]}, '
                    f'{headline["precision"]}{", XLA" if headline["xla"] else ""}',
        'mfu': round(headline['mfu'], 3),
        'speedup_vs_baseline': round(headline['images_per_sec'] / baseline['images_per_sec'], 3),
        'input_ratio': round(augment_rate / headline['images_per_sec'], 2),
        'overhead_share': round(make_run['overhead_share'], 3),
        'default_config_images_per_sec': round(trainer_rows[0]['images_per_sec'], 1),
        'peak_gflops': {k: round(v, 1) for k, v in peak.items()},
        'ingest_images_per_sec': round(ingest['images_per_sec'], 1),
        'make_run_seconds': round(make_run['wall_seconds'], 1),
    }
    gpu_name = ''
    if args.gpu:
      details = tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0])
      gpu_name = f', GPU {details.get("device_name", "unknown")}'
    results = {
        'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
        'machine': f'{os.cpu_count()} cores, {platform.processor() or platform.machine()}, '
                   f'TF {tf.__version__}{gpu_name}',
        'peak_gflops': peak, 'trainer': trainer_rows, 'baseline': baseline,
        'input': {'ingest_images_per_sec': ingest['images_per_sec'],
                  'augment_images_per_sec': augment_rate},
        'make_run': make_run, 'summary': summary,
    }
    with open(os.path.join(work, '..', 'bench_perf_last.json'), 'w') as f:
      json.dump(results, f, indent=2, default=str)
    if not (args.no_doc or args.quick or args.gpu):
      write_doc(results, 'make bench')
    print(json.dumps(summary))
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  sys.exit(main())
