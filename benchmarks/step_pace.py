"""Images/s of the trainer's step for several batch sizes and training crop sizes.

  .venv/bin/python -m benchmarks.step_pace --run OUT --batch-sizes 128,256,512 --crop-sizes 16

OUT: the output folder of a finished cifar run (its transformed train split and augmentation
policy are reused, as in recipe_proxy.py). For each pair it builds the cifar preset's model
(its backbone, width, head, LARS peak rate and temperature, read from pipeline.config.PRESETS)
at the trainer's precision, runs 5
untimed steps (tracing) and then times steps covering about 4,096 images, augmentation
included. One JSON line per pair. This is how docs/benchmarks.md's "a larger batch buys no
speed" was measured; about a minute per pair on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import recipe_proxy
from components.dual_view_transform import params as transform_params
from components.simclr_trainer import hardware
from components.simclr_trainer.params import TrainerParams
from pipeline import config as config_lib


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--run', required=True, help='output folder of a finished cifar run')
  parser.add_argument('--batch-sizes', default='128,256,512')
  parser.add_argument('--crop-sizes', default='16')
  parser.add_argument('--images', type=int, default=4096, help='images timed per pair')
  parser.add_argument('--jit-compile', action='store_true', help='XLA for the step')
  parser.add_argument('--fixed-views', action='store_true',
                      help='time the step on one batch of views, without the input pipeline')
  parser.add_argument('--local-crops', type=int, default=0,
                      help='multi-crop: this many small crops per image besides the two views')
  parser.add_argument('--local-crop-size', type=int, default=8)
  args = parser.parse_args()
  train_uri, policy, _, _ = recipe_proxy.run_artifacts(args.run)
  preset = config_lib.build_config(preset='cifar')
  policy = transform_params.with_local_crops(
      policy, args.local_crops, args.local_crop_size,
      (preset.local_crop_scale_min, preset.local_crop_scale_max))
  precision = hardware.training_precision(preset.precision)
  for crop in (int(c) for c in args.crop_sizes.split(',')):
    for batch in (int(b) for b in args.batch_sizes.split(',')):
      params = dataclasses.replace(TrainerParams.of(preset), batch_size=batch,
                                   warmup_fraction=0.01, jit_compile=args.jit_compile)
      train_step = recipe_proxy.make_trainer(params, int(policy['image_size']), 1000, precision,
                                             args.local_crops).train_step
      data = recipe_proxy.views(train_uri, dict(policy, crop_size=crop), batch)
      if args.fixed_views:
        data = itertools.repeat(next(data))
      for _ in range(5):
        train_step(next(data))
      steps = max(8, args.images // batch)
      started = time.time()
      for _ in range(steps):
        loss, _, _ = train_step(next(data))
      float(loss)  # waits for the last step
      rate = steps * batch / (time.time() - started)
      print(json.dumps({'crop_size': crop, 'batch_size': batch, 'precision': precision,
                        'jit_compile': args.jit_compile, 'fixed_views': args.fixed_views,
                        'local_crops': args.local_crops,
                        'steps': steps, 'images_per_second': round(rate, 1)}), flush=True)


if __name__ == '__main__':
  main()
