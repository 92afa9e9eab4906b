"""Representation quality: linear-probe top-1 on CIFAR-10 test against minutes of pretraining.

  make bench-quality     (about 42 min: the whole `--preset cifar` run, then the probes)
  .venv/bin/python -m benchmarks.bench_quality --smoke    (a 2-minute version, for CI)

1. Runs `simclr-tfx run --preset cifar --data-dir ../shared/datasets/cifar10/train` (labels
   are not used by pretraining) into a fresh output folder and times it.
2. Probe, as the target is stated: 200 labelled images per class from the train folder (10% of
   its labels; per class the first 200 in sha256 order, so every machine picks the same ones),
   a multinomial logistic regression on the model's embedding (the encoder output h, or with
   embedding_stages > 1 the last stages' pools side by side, with embedding_pool=avg_max their
   max pools too, as served; L2 strength chosen on a held-out 20% of those labels), top-1 on
   the 5,000 images of ../shared/datasets/cifar10/test.
   Two probes on the final model: `plain` (one view per image) and `protocol`, SimCLR's linear
   evaluation protocol: the classifier is trained with random crops and flips of the labelled
   images (here the mirror image plus 8 padded random crops) and scored on the mean of the
   plain and mirrored test image. The headline number is the protocol probe; both are written,
   and with a multi-stage embedding also the protocol probe on h alone (SimCLR's own reading).
3. The same probe on every kept checkpoint (restored into the encoder, fed the same
   preprocessing as serving), against its minutes of pretraining; on raw pixels and on a
   random-init encoder for context.
Writes docs/benchmarks_quality.png and a table between the bench-quality markers of
docs/benchmarks.md; the last output line is a JSON object.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from benchmarks import docs_section
from components import limits
from components.dual_view_transform import augment
from components.linear_evaluator import baselines, probe
from components.simclr_trainer import hardware, model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = os.path.join(os.path.dirname(REPO), 'shared', 'datasets', 'cifar10')
CURVE_PNG = os.path.join(REPO, 'docs', 'benchmarks_quality.png')
WALL_FILE = 'bench_quality_wall.json'  # the timed run's wall clock, read back by --reuse
ANCHORS = [
    ('SimCLR ResNet-18 on CIFAR-10, 1000 GPU epochs (linear)', 0.91),
    ('lightly SimCLR kNN after 200 GPU epochs', 0.85),
    ('lightly on this machine, same 30-min budget, same probe', 0.454),
]


def labelled_files(folder: str, per_class: int):
  """[(path, class index)]: per class (sorted sub-folder names), the first `per_class` files in
  sha256 order of their bytes; all of them when per_class is 0."""
  classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  chosen = []
  for index, name in enumerate(classes):
    paths = sorted(glob.glob(os.path.join(folder, name, '*')))
    if per_class:
      digests = [(hashlib.sha256(open(p, 'rb').read()).hexdigest(), p) for p in paths]
      paths = [p for _, p in sorted(digests)[:per_class]]
    chosen += [(p, index) for p in paths]
  return chosen, classes


def read_bytes(files):
  return [open(path, 'rb').read() for path, _ in files]


def batches(items, size=500):
  return [tf.constant(items[i:i + size]) for i in range(0, len(items), size)]


def serving_embeddings(version_dir: str, images) -> np.ndarray:
  """In requests that the signature accepts (limits.plan_batches over the header sizes)."""
  serve = tf.saved_model.load(version_dir).signatures['serving_default']
  return np.concatenate([serve(images=tf.constant([images[i] for i in request]))[
      'embedding'].numpy() for request in limits.plan_batches(limits.header_pixels(images))])


def checkpoint_embeddings(checkpoint: str, backbone: str, width: float, image_size: int,
                          pixel_sets, mean, std, embedding_stages: int = 1,
                          with_h: bool = False, embedding_pool: str = 'avg') -> list:
  """The embedding (model.build_embedder) of a training checkpoint for each array in
  `pixel_sets`, with serving's preprocessing (decode, resize, normalise); the checkpoint is
  restored once for all of them. with_h: (embedding, h) pairs instead."""
  encoder = model_lib.build_encoder(backbone, image_size, width)
  tf.train.Checkpoint(encoder=encoder).restore(checkpoint).expect_partial()
  embedder = model_lib.build_embedder(encoder, backbone, embedding_stages, embedding_pool)
  results = []
  for pixels in pixel_sets:
    x = augment.normalize(tf.constant(pixels), tf.reshape(mean, [1, 1, 1, 3]),
                          tf.reshape(std, [1, 1, 1, 3]))
    parts = [embedder(x[i:i + 500], training=False) for i in range(0, len(pixels), 500)]
    embedding = np.concatenate([p[0].numpy() for p in parts])
    results.append((embedding, np.concatenate([p[1].numpy() for p in parts])) if with_h
                   else embedding)
  return results


def protocol_probe(out, props, image_size, mean, std, train_px, train_y, test_px, test_y,
                   serving_train, embedding_stages: int, embedding_pool: str = 'avg'):
  """SimCLR's linear evaluation protocol on the final model (see the module docstring): the
  encoder restored from the trainer's last checkpoint, checked against the pushed SavedModel's
  embeddings of the same images. Returns (the result on the served embedding, the same probe
  on h alone: SimCLR's own reading; the same result when the embedding is h)."""
  ckpt_dir = os.path.join(out, 'pipeline_root', '_checkpoints', props['run_fingerprint'])
  last = tf.train.latest_checkpoint(ckpt_dir)
  if last is None:
    raise SystemExit(f'no trainer checkpoint in {ckpt_dir}: keep_checkpoints must keep the last')
  views = probe.augmented_views(train_px, copies=8)
  pairs = checkpoint_embeddings(last, props['backbone'], float(props['width_multiplier']),
                                image_size, [train_px, *views, test_px, test_px[:, :, ::-1]],
                                mean, std, embedding_stages, with_h=True,
                                embedding_pool=embedding_pool)
  embeddings = [embedding for embedding, _ in pairs]
  train_views, eval_views = embeddings[:len(views) + 1], embeddings[len(views) + 1:]
  cosine = np.sum(train_views[0] * serving_train, 1) / (
      np.linalg.norm(train_views[0], axis=1) * np.linalg.norm(serving_train, axis=1) + 1e-12)
  if float(cosine.min()) < 0.999:  # the checkpoint must be the model that was pushed
    raise SystemExit(f'checkpoint {last} does not match the pushed model (min cosine '
                     f'{cosine.min():.5f})')
  result = probe.augmented_linear_probe(train_views, train_y, eval_views, test_y)
  result.update(checkpoint=os.path.basename(last), embedding_stages=embedding_stages,
                embedding_pool=embedding_pool,
                embedding_dim=int(train_views[0].shape[1]),
                min_cosine_to_pushed=round(float(cosine.min()), 6))
  if embedding_stages == 1 and embedding_pool == 'avg':
    return result, result
  hs = [h for _, h in pairs]
  return result, probe.augmented_linear_probe(hs[:len(views) + 1], train_y, hs[len(views) + 1:],
                                              test_y)


def run_pipeline(data_dir: str, out: str, preset: str, extra_sets) -> float:
  command = [sys.executable, '-m', 'simclr_tools.cli', 'run', '--preset', preset, '--data-dir',
             data_dir, '--output', out, '--summary-json', os.path.join(out, 'summary.json')]
  for item in extra_sets:
    command += ['--set', item]
  print('running:', ' '.join(command), flush=True)
  started = time.perf_counter()
  subprocess.run(command, cwd=REPO, check=True)
  wall = time.perf_counter() - started
  with open(os.path.join(out, WALL_FILE), 'w', encoding='utf-8') as f:
    json.dump({'run_seconds': wall}, f)
  return wall


def recorded_wall(out: str) -> float:
  """The whole-run seconds a previous bench run recorded in `out` (for --reuse)."""
  path = os.path.join(out, WALL_FILE)
  if not os.path.isfile(path):
    return float('nan')
  with open(path, encoding='utf-8') as f:
    return float(json.load(f)['run_seconds'])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='cifar')
  parser.add_argument('--train-dir', default=os.path.join(DATASETS, 'train'))
  parser.add_argument('--test-dir', default=os.path.join(DATASETS, 'test'))
  parser.add_argument('--per-class', type=int, default=200, help='labelled images per class')
  parser.add_argument('--output', default='', help='run folder (default: a fresh temp folder)')
  parser.add_argument('--reuse', action='store_true', help='probe an existing --output run')
  parser.add_argument('--smoke', action='store_true',
                      help='CI version: a few steps, 20 labels and 100 test images per class')
  parser.add_argument('--set', dest='set_args', action='append', default=[])
  parser.add_argument('--no-doc', action='store_true')
  args = parser.parse_args()
  for folder in (args.train_dir, args.test_dir):
    if not os.path.isdir(folder):
      raise SystemExit(f'benchmark data not found: {folder} (see ../shared/datasets)')
  out = args.output or tempfile.mkdtemp(prefix='bench_quality_')
  # Pretraining quality only: the classifier stages (10 more minutes) are bench-finetune's.
  extra = ['finetune=false'] + list(args.set_args)
  per_class, test_per_class = args.per_class, 0
  if args.smoke:
    # The probes read the SavedModel and the checkpoints, never the TFLite files.
    extra += ['train_steps=4', 'checkpoint_every_steps=2', 'knn_monitor_every_epochs=0',
              'edge_export=false', 'max_bad_fraction=1']
    per_class, test_per_class = 20, 100
  wall = recorded_wall(out) if args.reuse else run_pipeline(args.train_dir, out, args.preset,
                                                              extra)

  from pipeline import run_record  # pylint: disable=g-import-not-at-top
  metadata_path = os.path.join(out, 'metadata.sqlite')
  summary = run_record.run_summary(metadata_path)
  store = run_record.open_store(metadata_path)
  executions = {e['component']: e
                for e in run_record.run_executions(store, run_record.latest_run(store))}
  model = executions['SimCLRTrainer']['outputs']['model'][0]
  graph = executions['DualViewTransform']['outputs']['transform_graph'][0]
  props = model['properties']
  image_size = int(props['image_size'])
  mean = np.array(json.loads(graph['properties']['channel_mean']), np.float32)
  std = np.array(json.loads(graph['properties']['channel_std']), np.float32)

  train_files, classes = labelled_files(args.train_dir, per_class)
  test_files, _ = labelled_files(args.test_dir, test_per_class)
  train_y = np.array([c for _, c in train_files])
  test_y = np.array([c for _, c in test_files])
  train_bytes, test_bytes = read_bytes(train_files), read_bytes(test_files)
  train_px = baselines.decoded_pixels(batches(train_bytes), image_size)
  test_px = baselines.decoded_pixels(batches(test_bytes), image_size)

  version_dir = summary['pushed_destination'] or os.path.join(
      model['uri'], 'Format-Serving')
  final_train = serving_embeddings(version_dir, train_bytes)
  final_test = serving_embeddings(version_dir, test_bytes)
  final = probe.linear_probe(final_train, train_y, final_test, test_y)
  stages = int(props.get('embedding_stages') or 1)
  pool = props.get('embedding_pool') or 'avg'
  protocol, protocol_h = protocol_probe(out, props, image_size, mean, std, train_px, train_y,
                                        test_px, test_y, final_train, stages, pool)
  knn = probe.knn_top1(final_train, train_y, final_test, test_y, k=200)
  raw = probe.linear_probe(train_px.reshape(len(train_px), -1), train_y,
                           test_px.reshape(len(test_px), -1), test_y)
  rand_train, rand_test = baselines.random_encoder_features(
      [train_px, test_px], props['backbone'], image_size, float(props['width_multiplier']),
      embedding_stages=stages, embedding_pool=pool)
  random_init = probe.linear_probe(rand_train, train_y, rand_test, test_y)

  # The curve: every kept checkpoint, at its minutes since the trainer execution started.
  ckpt_dir = os.path.join(out, 'pipeline_root', '_checkpoints', props['run_fingerprint'])
  trainer_log = os.path.join(ckpt_dir, 'timeline.json')
  timeline = json.load(open(trainer_log)) if os.path.isfile(trainer_log) else {}
  curve = [(0.0, random_init['top1'], 0)]
  for index in sorted(int(k) for k in timeline.get('checkpoints', {})):
    path = os.path.join(ckpt_dir, f'ckpt-{index}')
    if not tf.io.gfile.glob(path + '.index'):
      continue
    minutes = timeline['checkpoints'][str(index)] / 60
    emb_train, emb_test = checkpoint_embeddings(
        path, props['backbone'], float(props['width_multiplier']), image_size,
        [train_px, test_px], mean, std, stages, embedding_pool=pool)
    top1 = probe.linear_probe(emb_train, train_y, emb_test, test_y)['top1']
    curve.append((minutes, top1, index))
    print(f'checkpoint step {index} at {minutes:.1f} min: probe top-1 {top1:.4f}', flush=True)

  train_minutes = timeline.get('train_seconds', float('nan')) / 60
  result = {
      'probe_top1': round(protocol['top1'], 4), 'plain_probe_top1': round(final['top1'], 4),
      'protocol_probe': protocol, 'protocol_probe_h_top1': round(protocol_h['top1'], 4),
      'embedding_stages': stages, 'embedding_pool': pool,
      'contrastive_loss': props.get('contrastive_loss') or 'nt_xent',
      'local_crops': int(props.get('local_crops') or 0),
      'embedding_dim': protocol['embedding_dim'],
      'knn_top1': round(knn, 4),
      'raw_pixels_top1': round(raw['top1'], 4), 'random_init_top1': round(random_init['top1'], 4),
      'pretrain_minutes': round(train_minutes, 1), 'run_minutes': round(wall / 60, 1),
      'precision': props.get('precision', ''), 'cpu': hardware.describe_cpu(),
      'labels_per_class': per_class, 'num_test': int(len(test_y)), 'preset': args.preset,
      'backbone': props['backbone'], 'width_multiplier': float(props['width_multiplier']),
      'train_steps': int(props['train_steps']), 'output': out,
      'curve': [{'minutes': round(m, 2), 'step': s, 'probe_top1': round(t, 4)}
                for m, t, s in curve],
  }
  if not (args.no_doc or args.smoke):
    write_doc(result)
  print(json.dumps(result))


def write_doc(result: dict) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  minutes = [p['minutes'] for p in result['curve']]
  top1 = [100 * p['probe_top1'] for p in result['curve']]
  ax.plot(minutes, top1, 'o-', label=f'simclr-tfx --preset {result["preset"]} (plain probe)')
  ax.plot([minutes[-1]], [100 * result['probe_top1']], '*', markersize=14,
          label=f'final model, linear-eval protocol ({100 * result["probe_top1"]:.1f}%)')
  ax.axhline(45.4, color='grey', ls='--', label='lightly, same budget and probe (45.4%)')
  ax.axhline(100 * result['raw_pixels_top1'], color='grey', ls=':',
             label=f'raw pixels ({100 * result["raw_pixels_top1"]:.1f}%)')
  ax.set_xlabel('minutes of pretraining (2 CPU cores)')
  ax.set_ylabel('linear probe top-1 on CIFAR-10 test (%)')
  pool = result.get('embedding_pool', 'avg')
  kinds = 'average and max pools' if pool == 'avg_max' else 'pools'
  what = 'h' if result['embedding_stages'] == 1 and pool == 'avg' else (
      f'the last {result["embedding_stages"]} stages\' {kinds}')
  # Two lines: the four-stage description does not fit one line of a 7-inch figure.
  ax.set_title(f'200 labels per class; probe on the embedding\n({what}; {result["precision"] or "?"})',
               fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  fig.savefig(CURVE_PNG, dpi=100)
  plt.close(fig)
  lines = [
      f'Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} cores, '
      f'{result["cpu"]}, TF {tf.__version__}; command: '
      f'`make bench-quality`. Preset `{result["preset"]}`: {result["backbone"]} '
      f'x{result["width_multiplier"]:g} in {result["precision"] or "?"}, '
      f'{result["train_steps"]} steps, loss {result.get("contrastive_loss", "nt_xent")}'
      f'{", " + str(result["local_crops"]) + " local crops" if result.get("local_crops") else ""}; '
      f'pretraining '
      f'{result["pretrain_minutes"]} min, whole run {result["run_minutes"]} min. '
      f'Embedding: {result["embedding_dim"]} numbers (embedding_stages='
      f'{result["embedding_stages"]}, embedding_pool={pool}).',
      '',
      f'Probe: {result["labels_per_class"]} labelled train images per class, top-1 on the '
      f'{result["num_test"]} test images.',
      '',
      '| minutes of pretraining | step | linear probe top-1 |',
      '|---|---|---|',
  ]
  lines += [f'| {p["minutes"]:.1f} | {p["step"]} | {100 * p["probe_top1"]:.1f}% |'
            for p in result['curve']]
  lines += [
      '',
      '| encoder | linear probe top-1 |',
      '|---|---|',
      f'| simclr-tfx, final pushed model, SimCLR linear-eval protocol (probe trained with crops '
      f'and flips, mirrored test view averaged) | **{100 * result["probe_top1"]:.1f}%** |',
      f'| simclr-tfx, final pushed model, plain probe (one view per image, as in the curve) | '
      f'{100 * result["plain_probe_top1"]:.1f}% (weighted kNN k=200: '
      f'{100 * result["knn_top1"]:.1f}%) |',
  ]
  if result['embedding_stages'] > 1 or pool != 'avg':
    lines.append(f'| simclr-tfx, final model, SimCLR linear-eval protocol on h alone (the last '
                 f'stage\'s pool, as SimCLR reads it) | {100 * result["protocol_probe_h_top1"]:.1f}% |')
  lines += [
      f'| random-init encoder, same architecture | {100 * result["random_init_top1"]:.1f}% |',
      f'| raw pixels | {100 * result["raw_pixels_top1"]:.1f}% |',
  ]
  lines += [f'| anchor: {name} | {100 * value:.1f}% |' for name, value in ANCHORS]
  lines += ['', '![probe top-1 against minutes of pretraining](benchmarks_quality.png)']
  docs_section.write_section('bench-quality', 'Representation quality (issue: quality)', lines)


if __name__ == '__main__':
  main()
