"""Per-worker rates at 224 px, and what they mean for one million photos.

  make bench-scale      (or: .venv/bin/python -m benchmarks.bench_scale [--images N])

Measures on this machine, as one Beam worker / one training device:
  - the whole DAG (LocalDagRunner) on N photos: CIFAR-10 train JPEGs upscaled to 640x480 and
    re-encoded (JPEG quality 90), trained at image_size 224 with a ResNet-50 for a few steps;
    ImageIngest, DualViewTransform and Embedder images/s from their MLMD execution times
    (start-up included, as a worker pays it once);
  - the trainer's steady-state images/s: the product's train step on the run's transformed
    records (benchmarks/bench_perf.bench_trainer), ResNet-50 at 224 px.
Then a cost and time model for 1,000,000 such photos (ASSUMPTIONS below: linear scaling, the
price of a worker like this one) and writes both between the bench-scale markers of
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image

from benchmarks import bench_perf, docs_section
from components.dual_view_transform import dataset as dv_dataset
from components.embedder import contract as embedder_contract
from components.simclr_trainer import hardware
from pipeline import run_record, runner
from pipeline.config import build_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'datasets', 'cifar10', 'train')
PHOTO_SIZE = (640, 480)
TRAIN_BATCH = 16  # two 224 px views each: ResNet-50's activations stay within 24 GiB
# ASSUMPTIONS of the model (stated in the generated block):
CORPUS = 1_000_000
EPOCHS = 100  # SimCLR's shortest ImageNet schedule
WORKERS = 100  # Beam workers for the data steps
WORKER_PRICE = 0.10  # USD per hour of a 2-vCPU worker like this one (on-demand list price, ~)


def write_photos(source: str, target: str, count: int) -> int:
  """count CIFAR JPEGs, class-balanced, upscaled to PHOTO_SIZE, in class folders."""
  classes = sorted(os.listdir(source))
  per_class = max(1, count // len(classes))
  written = 0
  for name in classes:
    os.makedirs(os.path.join(target, name))
    files = sorted(os.listdir(os.path.join(source, name)))[:per_class]
    for file in files:
      with Image.open(os.path.join(source, name, file)) as image:
        big = image.convert('RGB').resize(PHOTO_SIZE, Image.BICUBIC)
      big.save(os.path.join(target, name, os.path.splitext(file)[0] + '.jpg'), quality=90)
      written += 1
  return written


def run_dag(data_dir: str, out: str, precision: str) -> dict:
  settings = dict(data_dir=data_dir, image_size=224, hflip='true', backbone='resnet50',
                  batch_size=16, train_steps=2, precision=precision, edge_export='false',
                  probe_context_baselines='false', knn_monitor_every_epochs=0,
                  enable_cache='false', bless_min_linear_top1=0.0, finetune='false')
  config = build_config(output_dir=out, data_dir=data_dir,
                        set_args=[f'{k}={v}' for k, v in settings.items() if k != 'data_dir'])
  runner.run_pipeline(config, engine='local')
  return run_record.executions_by_component(os.path.join(out, 'metadata.sqlite'))


def measure(photos: str, work: str, count: int) -> dict:
  precision = hardware.training_precision('auto')
  out = os.path.join(work, 'out')
  executions = run_dag(photos, out, precision)
  seconds = bench_perf.component_seconds(os.path.join(out, 'metadata.sqlite'))
  embeddings = executions['Embedder']['outputs']['embeddings'][0]['properties']
  transformed = executions['DualViewTransform']['outputs']['transformed_examples'][0]['uri']
  split = os.path.join(transformed, 'Split-train')
  trainer = bench_perf.bench_trainer(split, dv_dataset.count_records(split), 'resnet50', 1.0,
                                     224, TRAIN_BATCH, precision, steps=3, warmup=1)
  return {'images': count, 'precision': precision,
          'ingest': count / seconds['ImageIngest'],
          'transform': count / seconds['DualViewTransform'],
          'embed': float(embeddings[embedder_contract.IMAGES_PER_SECOND]),
          'embed_component': count / seconds['Embedder'],
          'train': trainer['images_per_sec'],
          'train_gflop_per_image': trainer['train_gflop_per_image']}


def model_rows(rates: dict) -> list:
  """(step, rate per worker, workers, hours, worker-hours, cost) for CORPUS photos."""
  rows = []
  for step, key, passes in (('ImageIngest', 'ingest', 1), ('DualViewTransform', 'transform', 1),
                            ('Embedder', 'embed_component', 1)):
    worker_hours = CORPUS * passes / rates[key] / 3600
    rows.append((step, rates[key], WORKERS, worker_hours / WORKERS, worker_hours,
                 worker_hours * WORKER_PRICE))
  worker_hours = CORPUS * EPOCHS / rates['train'] / 3600
  rows.append((f'SimCLRTrainer, {EPOCHS} epochs, on CPU workers', rates['train'], WORKERS,
               worker_hours / WORKERS, worker_hours, worker_hours * WORKER_PRICE))
  return rows


def _duration(hours: float) -> str:
  return f'{hours * 60:.0f} min' if hours < 2 else f'{hours:,.0f} h ({hours / 24:,.1f} days)'


def write_doc(rates: dict, command: str) -> None:
  lines = [
      f'Measured {datetime.date.today()} on {hardware.describe_cpu()} (2 cores, one worker); '
      f'{rates["images"]} photos (CIFAR-10 train JPEGs upscaled to {PHOTO_SIZE[0]}x'
      f'{PHOTO_SIZE[1]}, JPEG quality 90), image_size 224, ResNet-50, {rates["precision"]}; '
      f'command: `{command}`.', '',
      '| step | measured images/s per worker | workers | wall time | worker-hours | cost (USD) |',
      '|---|---|---|---|---|---|']
  lines += [f'| {step} | {rate:,.1f} | {workers} | {_duration(hours)} | {wh:,.1f} | {cost:,.2f} |'
            for step, rate, workers, hours, wh, cost in model_rows(rates)]
  lines += [
      '| SimCLRTrainer on GPUs | not measured: no GPU machine was lent | | | | |', '',
      f'For {CORPUS:,} photos. Assumptions: every step scales linearly with workers (Beam steps '
      'are element-parallel maps, except the transform\'s analyzer pass; the trainer\'s '
      'all-reduce was measured with 2 local processes only); a worker is a 2-vCPU machine like '
      f'this one at {WORKER_PRICE:.2f} USD per hour; {EPOCHS} epochs. The trainer\'s rate is '
      f'its steady state ({rates["train_gflop_per_image"]:.0f} GFLOP per image for both views, '
      'forward and backward); the data steps include their start-up. Embedder RunInference '
      f'inside its Beam pipeline alone: {rates["embed"]:,.1f} images/s. For GPU training, run '
      '`make bench ARGS=--gpu` on the target machine and divide '
      f'{CORPUS * EPOCHS:,} images by its images/s per device.']
  print(docs_section.write_section('bench-scale', 'make bench-scale', lines))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data-dir', default=DEFAULT_DATA)
  parser.add_argument('--images', type=int, default=1000)
  parser.add_argument('--no-doc', action='store_true')
  args = parser.parse_args()
  if not os.path.isdir(args.data_dir):
    raise SystemExit(f'benchmark data not found: {args.data_dir} (see ../shared/datasets)')
  work = tempfile.mkdtemp(prefix='bench_scale_')
  try:
    photos = os.path.join(work, 'photos')
    count = write_photos(args.data_dir, photos, args.images)
    rates = measure(photos, work, count)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  print(json.dumps(rates), flush=True)
  if not args.no_doc:
    write_doc(rates, 'make bench-scale' + (f' ARGS="--images {args.images}"'
                                           if args.images != 1000 else ''))


if __name__ == '__main__':
  main()
