"""Short recipe experiments for a preset: the trainer's own pieces, a few epochs, then the probe.

  .venv/bin/python -m benchmarks.recipe_proxy --run OUT --name t0.1 --epochs 5 --temperature 0.1
  (OUT: the output folder of a finished `simclr-tfx run`, e.g. a `make bench-quality` run,
  whose transformed train split and channel statistics are reused; the data is not re-ingested.)

It trains with the product's augmentation (augment.two_views), encoder and head
(model.build_encoder/build_projection_head), LARS and warmup-cosine (optim), and the trainer's
step (step.make_train_step) at the trainer's precision (auto: bf16 only where the CPU has it
natively) for --epochs or --steps, then scores the plain linear probe of
bench_quality (200 labels per class of cifar10/train, top-1 on cifar10/test). One JSON line per
experiment goes to stdout and to --results. A 5-epoch experiment takes about 8 minutes on 2 cores.

--final-crop-size S --final-steps N trains the last N steps on S px crops (progressive crop
sizes; the encoder takes any input size).

This is how the `cifar` preset's temperature and training crop size were chosen
(docs/benchmarks.md lists the runs). It compares recipes at a fraction of the budget; a winner
is confirmed by the full `make bench-quality` run, not by this.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from benchmarks import bench_quality as bq
from components.dual_view_transform import augment
from components.dual_view_transform import dataset as dv_dataset
from components.dual_view_transform import params as transform_params
from components.linear_evaluator import baselines, probe
from components.simclr_trainer import hardware
from components.simclr_trainer import training
from components.simclr_trainer.params import TrainerParams


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--run', required=True, help='output folder of a finished run')
  parser.add_argument('--name', required=True)
  parser.add_argument('--epochs', type=float, default=5)
  parser.add_argument('--steps', type=int, default=0, help='train steps; 0: from --epochs')
  parser.add_argument('--precision', default='auto',
                      help='auto (bf16 where the CPU has it natively), float32 or mixed_bfloat16')
  parser.add_argument('--save', default='', help='folder for the encoder checkpoint (optional)')
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--learning-rate', type=float, default=1.0)
  parser.add_argument('--temperature', type=float, default=0.2)
  parser.add_argument('--crop-scale-min', type=float, default=0.2)
  parser.add_argument('--color-jitter-strength', type=float, default=0.5)
  parser.add_argument('--head-layers', type=int, default=2)
  parser.add_argument('--width-multiplier', type=float, default=0.5)
  parser.add_argument('--backbone', default='resnet18')
  parser.add_argument('--train-crop-size', type=int, default=0, help='0: the image size')
  parser.add_argument('--final-crop-size', type=int, default=0,
                      help='progressive crops: the last --final-steps steps train on crops of '
                      'this size (0: off)')
  parser.add_argument('--final-steps', type=int, default=0)
  parser.add_argument('--warmup-fraction', type=float, default=0.05)
  parser.add_argument('--local-crops', type=int, default=0, help='multi-crop: small crops per '
                      'image besides the two views (0: off)')
  parser.add_argument('--local-crop-size', type=int, default=8)
  parser.add_argument('--local-crop-scale', default='0.1,0.4', help='min,max area fraction')
  parser.add_argument('--test-dir', default=os.path.join(bq.DATASETS, 'test'))
  parser.add_argument('--train-dir', default=os.path.join(bq.DATASETS, 'train'))
  parser.add_argument('--results', default='recipe_proxy.jsonl')
  args = parser.parse_args()
  if bool(args.final_crop_size) != bool(args.final_steps):
    parser.error('--final-crop-size and --final-steps go together (progressive crops)')
  return args


def run_artifacts(run: str):
  """(train split uri, augmentation policy, channel mean, channel std) of the run's transform."""
  from pipeline import run_record  # pylint: disable=g-import-not-at-top
  store = run_record.open_store(os.path.join(run, 'metadata.sqlite'))
  executions = {e['component']: e
                for e in run_record.run_executions(store, run_record.latest_run(store))}
  outputs = executions['DualViewTransform']['outputs']
  graph = outputs['transform_graph'][0]
  examples = outputs['transformed_examples'][0]
  policy = json.loads(graph['properties']['augmentation_policy'])
  mean = np.array(json.loads(graph['properties']['channel_mean']), np.float32)
  std = np.array(json.loads(graph['properties']['channel_std']), np.float32)
  return os.path.join(examples['uri'], 'Split-train'), policy, mean, std


def experiment_policy(policy: dict, args) -> dict:
  policy = copy.deepcopy(policy)
  policy['random_resized_crop']['scale'] = [args.crop_scale_min, 1.0]
  s = args.color_jitter_strength
  policy['color_jitter'].update(strength=s, brightness=0.8 * s, contrast=0.8 * s,
                                saturation=0.8 * s, hue=0.2 * s)
  policy['crop_size'] = args.train_crop_size or int(policy['image_size'])
  return transform_params.with_local_crops(policy, args.local_crops, args.local_crop_size,
                                     args.local_crop_scale.split(','))


def views(train_uri: str, policy: dict, batch_size: int):
  records = dv_dataset.load_transformed(train_uri, int(policy['image_size'])).cache()
  batches = records.repeat().shuffle(10_000, seed=0).batch(batch_size, drop_remainder=True)

  def make_views(batch, index):
    images = tf.cast(batch['image'], tf.float32) / 255.0
    return augment.training_views(images, policy, tf.stack([tf.constant(0, tf.int64), index]),
                                  tf.reshape(batch['mean'], [-1, 1, 1, 3]),
                                  tf.reshape(batch['std'], [-1, 1, 1, 3]))

  indexed = tf.data.Dataset.zip((batches, tf.data.Dataset.counter()))
  return iter(indexed.map(make_views, num_parallel_calls=tf.data.AUTOTUNE).prefetch(4))


def make_trainer(params: TrainerParams, image_size: int, total_steps: int, precision: str,
                 local_crops: int = 0) -> training.TrainingState:
  """The trainer's own training state (training.build_training_state) with an encoder that
  takes crops of any size and `local_crops` multi-crop views per image."""
  return training.build_training_state(params, image_size, total_steps, precision=precision,
                                       any_input_size=True, local_crops=local_crops)


def main() -> None:
  args = parse_args()
  train_uri, policy, mean, std = run_artifacts(args.run)
  policy = experiment_policy(policy, args)
  image_size = int(policy['image_size'])
  total = args.steps or int(args.epochs * (dv_dataset.count_records(train_uri) // args.batch_size))
  if args.final_steps and args.final_steps >= total:
    raise SystemExit(f'--final-steps {args.final_steps} must be fewer than the {total} steps '
                     'that --steps or --epochs gives')
  precision = hardware.training_precision(args.precision)
  params = TrainerParams(backbone=args.backbone, width_multiplier=args.width_multiplier,
                         head_layers=args.head_layers, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, lr_scaling='linear',
                         warmup_fraction=args.warmup_fraction, temperature=args.temperature)
  state = make_trainer(params, image_size, total, precision, augment.local_crop_count(policy))
  data = views(train_uri, policy, args.batch_size)
  switch_at = total - args.final_steps if args.final_crop_size else total
  started = time.time()
  for index in range(total):
    if index == switch_at:  # a second input pipeline; the encoder takes any input size
      data = views(train_uri, dict(policy, crop_size=args.final_crop_size), args.batch_size)
    loss, acc, _ = state.train_step(next(data))
    if (index + 1) % 100 == 0 or index + 1 == total:
      rate = (index + 1) * args.batch_size / (time.time() - started)
      print(f'{args.name}: step {index + 1}/{total} loss {float(loss):.3f} '
            f'acc {float(acc):.3f} {rate:.0f} img/s', flush=True)
  train_seconds = time.time() - started
  if args.save:
    tf.train.Checkpoint(encoder=state.encoder).write(os.path.join(args.save, 'encoder'))

  encoder32, _, _ = training.float32_models(state, params, image_size)
  train_files, _ = bq.labelled_files(args.train_dir, 200)
  test_files, _ = bq.labelled_files(args.test_dir, 0)
  shape = (1, 1, 1, 3)

  def embed(files):
    pixels = baselines.decoded_pixels(bq.batches(bq.read_bytes(files)), image_size)
    x = (pixels - mean.reshape(shape)) / std.reshape(shape)
    return np.concatenate([encoder32(x[i:i + 500], training=False).numpy()
                           for i in range(0, len(x), 500)])

  result = probe.linear_probe(embed(train_files), np.array([c for _, c in train_files]),
                              embed(test_files), np.array([c for _, c in test_files]))
  line = dict(vars(args), probe_top1=round(result['top1'], 4), steps=total, precision=precision,
              train_minutes=round(train_seconds / 60, 2))
  print(json.dumps(line), flush=True)
  with open(args.results, 'a', encoding='utf-8') as f:
    f.write(json.dumps(line) + '\n')


if __name__ == '__main__':
  main()
