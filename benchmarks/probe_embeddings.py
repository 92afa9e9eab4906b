"""Which embedding to serve: the protocol probe on each `embedding_stages` of one trained model.

  .venv/bin/python -m benchmarks.probe_embeddings --run OUT
  .venv/bin/python -m benchmarks.probe_embeddings --run OUT --checkpoint DIR/encoder \\
      --backbone resnet18 --width 0.5      (an encoder saved by recipe_proxy.py --save)

OUT is the output folder of a finished cifar run (a `make bench-quality` run): its channel
statistics, image size and (by default) last trainer checkpoint are used. For each
embedding_stages from 1 (h, SimCLR's reading) to the backbone's stage count, it fits the
protocol probe of bench_quality (the labelled image, its mirror and 8 padded random crops;
200 labels per class) with the L2 strength chosen on a validation split: 20% of the labelled
images, drawn by image, so no view of a validation image is fitted on. The choice is made on
validation; the test top-1 (cifar10/test) is printed for the record. About 6 minutes on 2
cores. This is how the cifar preset's embedding_stages was chosen (docs/benchmarks.md).

Variants measured the same way (docs/benchmarks.md, "Measured on B after that run"):
  --stages 4               only that embedding_stages
  --views 24               24 padded crops per labelled image instead of 8
  --embed-size 40          decode and embed the images at 40 px instead of the run's size
  --recalibrate-bn 10000   re-estimate batch-norm statistics on that many train images first
  --pool avg_max           each stage's global max pool next to its average pool
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import keras
import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from benchmarks import bench_quality as bq
from components.dual_view_transform import augment
from components.linear_evaluator import baselines, probe
from components.simclr_trainer import model as model_lib

GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
VIEWS = 8  # padded random crops per labelled image, after the image and its mirror


def recalibrate_batch_norm(encoder, images, batch_size: int = 250) -> int:
  """Replaces every batch-norm layer's moving statistics by their average over `images`
  (normalised [n, S, S, 3]), run through the encoder in training mode with no weight update:
  the statistics of the size the probe reads, for a model trained on smaller crops. Returns
  the number of batches."""
  norms = [layer for layer in encoder.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
  momenta = [layer.momentum for layer in norms]
  count = 0
  for start in range(0, len(images), batch_size):
    count += 1
    for layer in norms:  # a running mean with equal weights: batch k weighs 1/k
      layer.momentum = 1.0 - 1.0 / count
    encoder(images[start:start + batch_size], training=True)
  for layer, momentum in zip(norms, momenta):
    layer.momentum = momentum
  return count


def run_properties(run: str):
  """(model properties, channel mean, channel std, last checkpoint) of a finished run."""
  from pipeline import run_record
  store = run_record.open_store(os.path.join(run, 'metadata.sqlite'))
  executions = {e['component']: e
                for e in run_record.run_executions(store, run_record.latest_run(store))}
  props = executions['SimCLRTrainer']['outputs']['model'][0]['properties']
  graph = executions['DualViewTransform']['outputs']['transform_graph'][0]
  mean = np.array(json.loads(graph['properties']['channel_mean']), np.float32)
  std = np.array(json.loads(graph['properties']['channel_std']), np.float32)
  last = tf.train.latest_checkpoint(os.path.join(run, 'pipeline_root', '_checkpoints',
                                                 props['run_fingerprint']))
  return props, mean, std, last


def validated_protocol_probe(train_views, train_y, test_views, test_y, is_val) -> dict:
  """Fits on the non-validation images' views for each C, scores validation on the mean of the
  plain and mirrored prediction, refits the best C on everything and scores test."""
  views = len(train_views)
  fit_x = np.concatenate([v[~is_val] for v in train_views])
  scaler = StandardScaler().fit(fit_x)
  validation = {}
  for c in GRID:
    classifier = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(fit_x),
                                                             np.tile(train_y[~is_val], views))
    proba = sum(classifier.predict_proba(scaler.transform(v[is_val])) for v in train_views[:2])
    validation[c] = float(np.mean(classifier.classes_[proba.argmax(1)] == train_y[is_val]))
  best = max(GRID, key=lambda c: (validation[c], -c))
  all_x = np.concatenate(train_views)
  scaler = StandardScaler().fit(all_x)
  classifier = LogisticRegression(C=best, max_iter=1000).fit(scaler.transform(all_x),
                                                             np.tile(train_y, views))
  proba = sum(classifier.predict_proba(scaler.transform(v)) for v in test_views)
  return {'C': best, 'validation_top1': round(validation[best], 4),
          'test_top1': round(float(np.mean(classifier.classes_[proba.argmax(1)] == test_y)), 4)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--run', required=True, help='output folder of a finished cifar run')
  parser.add_argument('--checkpoint', default='', help='an encoder checkpoint (default: the '
                      "run's last)")
  parser.add_argument('--backbone', default='')
  parser.add_argument('--width', type=float, default=0.0)
  parser.add_argument('--per-class', type=int, default=200)
  parser.add_argument('--stages', type=int, default=0, help='one embedding_stages (0: all)')
  parser.add_argument('--views', type=int, default=VIEWS, help='padded crops per labelled image')
  parser.add_argument('--embed-size', type=int, default=0, help="0: the run's image size")
  parser.add_argument('--pool', default='avg', choices=model_lib.POOLS,
                      help='embedding_pool: how each stage is pooled')
  parser.add_argument('--recalibrate-bn', type=int, default=0,
                      help='re-estimate batch-norm statistics on this many train images')
  parser.add_argument('--train-dir', default=os.path.join(bq.DATASETS, 'train'))
  parser.add_argument('--test-dir', default=os.path.join(bq.DATASETS, 'test'))
  args = parser.parse_args()
  props, mean, std, last = run_properties(args.run)
  checkpoint = args.checkpoint or last
  backbone = args.backbone or props['backbone']
  width = args.width or float(props['width_multiplier'])
  image_size = args.embed_size or int(props['image_size'])

  train_files, _ = bq.labelled_files(args.train_dir, args.per_class)
  test_files, _ = bq.labelled_files(args.test_dir, 0)
  train_y = np.array([c for _, c in train_files])
  test_y = np.array([c for _, c in test_files])
  train_px = baselines.decoded_pixels(bq.batches(bq.read_bytes(train_files)), image_size)
  test_px = baselines.decoded_pixels(bq.batches(bq.read_bytes(test_files)), image_size)
  pixel_sets = [train_px, *probe.augmented_views(train_px, copies=args.views), test_px,
                test_px[:, :, ::-1]]
  train_sets = args.views + 2
  held = np.random.default_rng(0).permutation(len(train_y))[:len(train_y) // 5]
  is_val = np.isin(np.arange(len(train_y)), held)

  encoder = model_lib.build_encoder(backbone, image_size, width)
  tf.train.Checkpoint(encoder=encoder).restore(checkpoint).expect_partial()
  normalize = lambda p: augment.normalize(tf.constant(p), tf.reshape(mean, [1, 1, 1, 3]),
                                          tf.reshape(std, [1, 1, 1, 3]))
  if args.recalibrate_bn:
    every, _ = bq.labelled_files(args.train_dir, 0)
    chosen = np.random.default_rng(1).permutation(len(every))[:args.recalibrate_bn]
    recalibrate_batch_norm(encoder, normalize(baselines.decoded_pixels(
        bq.batches(bq.read_bytes([every[i] for i in chosen])), image_size)))
  x_sets = [normalize(p) for p in pixel_sets]
  results = []
  for stages in [args.stages] if args.stages else range(1, model_lib.stage_count(backbone) + 1):
    started = time.time()
    embedder = model_lib.build_embedder(encoder, backbone, stages, args.pool)
    embedded = [np.concatenate([embedder(x[i:i + 500], training=False)[0].numpy()
                                for i in range(0, len(x), 500)]) for x in x_sets]
    result = validated_protocol_probe(embedded[:train_sets], train_y, embedded[train_sets:],
                                      test_y, is_val)
    result.update(embedding_stages=stages, embedding_pool=args.pool,
                  numbers=int(embedded[0].shape[1]), train_views=train_sets, embed_size=image_size,
                  recalibrated_bn_on=args.recalibrate_bn,
                  seconds=round(time.time() - started))
    results.append(result)
    print(json.dumps(result), flush=True)
  best = max(results, key=lambda r: (r['validation_top1'], -r['embedding_stages']))
  print(json.dumps({'checkpoint': checkpoint, 'chosen_on_validation': best['embedding_stages'],
                    'results': results}))


if __name__ == '__main__':
  main()
