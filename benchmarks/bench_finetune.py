"""From a handful of labels to a classifier: SimCLRv2's fine-tune and distil on CIFAR-10.

  make bench-finetune    (the `cifar` pretraining, about 31 min, unless --output already holds
                          it; then about 10 min per label fraction)
  .venv/bin/python -m benchmarks.bench_finetune --smoke    (a few minutes, for CI)

1. `simclr-tfx run --preset cifar --data-dir ../shared/datasets/cifar10/train --output OUT`:
   pretraining, then the FineTuner on 10% of the labels (the preset's labelled_fraction 0.1).
2. The same run with finetune_label_fraction=0.1: 1% of the labels, a class-balanced tenth of
   the 10% chosen in content-hash order. Ingest, transform and pretraining are cached (with
   labelled_fraction=0.01 the ingest, and so the pretraining, would run again).
3. For each: the four models' top-1 and expected calibration error on the pipeline's eval split
   (ClassifierEvaluator's metrics.json), and the same four on the 5,000 images of
   ../shared/datasets/cifar10/test (the classifiers' served signature; the probe on the encoder's
   served embeddings, trained on the same labels); the minutes the classifier stages added.
Targets at 10% of the labels: the fine-tuned or distilled top-1 at least the linear probe's + 3
points and the supervised-from-scratch model's + 15 points. The table goes between the
bench-finetune markers of docs/benchmarks.md; the last output line is a JSON object.
"""
from __future__ import annotations

import argparse
import datetime
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
from components import io_utils
from components.classifier_evaluator import executor as classifier_evaluation
from components.embedder import contract as embedder_contract
from components.fine_tuner import contract as finetune_contract
from components.linear_evaluator import probe
from components.simclr_trainer import hardware
from pipeline import run_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = os.path.join(os.path.dirname(REPO), 'shared', 'datasets', 'cifar10')
CLASSIFIER_NODES = ('FineTuner', 'ClassifierEvaluator', 'ClassifierEdgeExport',
                    'ClassifierPusher')
TARGETS = {'over_probe': 0.03, 'over_supervised': 0.15}


def run_pipeline(out: str, extra) -> float:
  command = [sys.executable, '-m', 'simclr_tools.cli', 'run', '--preset', 'cifar', '--data-dir',
             os.path.join(DATASETS, 'train'), '--output', out]
  for item in extra:
    command += ['--set', item]
  print('running:', ' '.join(command), flush=True)
  started = time.perf_counter()
  subprocess.run(command, cwd=REPO, check=True)
  return time.perf_counter() - started


def node_seconds(metadata_path: str) -> dict:
  """Seconds per node of the latest run, from the MLMD execution timestamps."""
  store = run_record.open_store(metadata_path)
  run = run_record.latest_run(store)
  by_id = {e.id: e for e in store.get_executions_by_context(run.id)}
  return {e['component']: (by_id[e['id']].last_update_time_since_epoch -
                           by_id[e['id']].create_time_since_epoch) / 1e3
          for e in run_record.run_executions(store, run)}


def test_images(limit_per_class: int):
  """(encoded images, class names) of the CIFAR-10 test folder, class folders in name order."""
  images, names = [], []
  folder = os.path.join(DATASETS, 'test')
  for name in sorted(os.listdir(folder)):
    files = sorted(os.listdir(os.path.join(folder, name)))
    for file in files[:limit_per_class or None]:
      with open(os.path.join(folder, name, file), 'rb') as f:
        images.append(f.read())
      names.append(name)
  return images, np.array(names)


def _batches(images, size=256):
  return [tf.constant(images[i:i + size]) for i in range(0, len(images), size)]


def test_set_top1(executions, fraction: float, images, names) -> dict:
  """Top-1 of the four models on the test images."""
  classifier = executions['FineTuner']['outputs']['classifier'][0]
  run_uri = executions['FineTuner']['outputs']['finetune_run'][0]['uri']
  class_names = np.array(json.loads(classifier['properties']['class_names']))
  result = {}
  for stage in finetune_contract.STAGES:
    saved = finetune_contract.stage_dir(run_uri, stage)
    if os.path.isdir(saved):
      ids, _ = classifier_evaluation.served_predictions(saved, _batches(images))
      result[stage] = float(np.mean(class_names[ids] == names))
  embeddings = executions['Embedder']['outputs']['embeddings'][0]['uri']
  train_x, train_y = io_utils.read_labelled_embeddings(
      embedder_contract.split_dir(embeddings, 'train'))
  keep = probe.balanced_subset(train_y, fraction)
  encoder = executions['SimCLRTrainer']['outputs']['model'][0]['uri']
  serve = io_utils.load_serving_signature(os.path.join(encoder, 'Format-Serving'))
  test_x = io_utils.embed_batches(serve, _batches(images))
  fitted = probe.LinearProbe(train_x[keep], train_y[keep])
  result['linear_probe'] = float(np.mean(class_names[fitted.predict(test_x)] == names))
  return result


def measure(out: str, fraction: float, images, names) -> dict:
  metadata = os.path.join(out, 'metadata.sqlite')
  executions = run_record.executions_by_component(metadata)
  evaluation = executions['ClassifierEvaluator']['outputs']['evaluation'][0]['uri']
  with open(os.path.join(evaluation, 'metrics.json'), encoding='utf-8') as f:
    metrics = json.load(f)
  run_uri = executions['FineTuner']['outputs']['finetune_run'][0]['uri']
  with open(os.path.join(run_uri, finetune_contract.OUTCOME_FILE), encoding='utf-8') as f:
    outcome = json.load(f)
  seconds = node_seconds(metadata)
  return {'num_labels': metrics['num_labels'], 'served': metrics['served_model'],
          'eval': {m: {'top1': round(v['top1'], 4), 'ece': round(v['ece'], 4)}
                   for m, v in metrics['models'].items()},
          'num_eval': next(iter(metrics['models'].values()))['num_eval'],
          'test': {m: round(v, 4) for m, v in test_set_top1(executions, fraction, images,
                                                            names).items()},
          'stages': {s: {'steps': outcome[s]['steps'], 'train_seconds': outcome[s]['train_seconds']}
                     for s in finetune_contract.STAGES if s in outcome},
          'blessed': metrics['blessed'], 'blessing_reason': metrics['blessing_reason'],
          'classifier_minutes': round(sum(seconds.get(n, 0.0) for n in CLASSIFIER_NODES) / 60, 1),
          'pretrain_steps': int(executions['SimCLRTrainer']['outputs']['model'][0]['properties'][
              'train_steps'])}


def targets_met(result: dict, where: str) -> dict:
  """where: 'eval' (metrics.json: top-1 and ECE per model) or 'test' (top-1 per model)."""
  top1 = {m: v['top1'] if isinstance(v, dict) else v for m, v in result[where].items()}
  best = max(top1.get('finetuned', 0.0), top1.get('distilled', 0.0))
  return {'over_probe': round(best - top1['linear_probe'], 4),
          'over_supervised': round(best - top1.get('supervised', float('nan')), 4),
          'met': (best >= top1['linear_probe'] + TARGETS['over_probe'] and
                  best >= top1.get('supervised', 1.0) + TARGETS['over_supervised'])}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', default='', help='run folder (default: a fresh temp folder); '
                      'one that holds the cifar pretraining reuses it')
  parser.add_argument('--smoke', action='store_true',
                      help='CI version: a few steps, 20 test images per class, no doc')
  parser.add_argument('--set', dest='set_args', action='append', default=[])
  args = parser.parse_args()
  out = args.output or tempfile.mkdtemp(prefix='bench_finetune_')
  extra = list(args.set_args)
  per_class = 0
  if args.smoke:
    extra += ['train_steps=4', 'knn_monitor_every_epochs=0', 'edge_export=false',
              'max_bad_fraction=1', 'finetune_minutes=0', 'distill_minutes=0',
              'finetune_epochs=1', 'distill_epochs=1', 'probe_context_baselines=false']
    per_class = 20
  images, names = test_images(per_class)
  results = {}
  for label, fraction in (('10%', 1.0), ('1%', 0.1)):
    wall = run_pipeline(out, extra + [f'finetune_label_fraction={fraction}'])
    results[label] = dict(measure(out, fraction, images, names), run_minutes=round(wall / 60, 1))
    for where in ('eval', 'test'):
      results[label][f'targets_{where}'] = targets_met(results[label], where)
    print(json.dumps({label: results[label]}), flush=True)
  result = {'results': results, 'cpu': hardware.describe_cpu(), 'output': out,
            'num_test': int(len(names)), 'targets': TARGETS}
  if not args.smoke:
    write_doc(result)
  print(json.dumps(result))


def write_doc(result: dict) -> None:
  rows = ['| labels | model | top-1, eval split | ECE, eval split | top-1, CIFAR-10 test |',
          '|---|---|---|---|---|']
  for label, r in result['results'].items():
    for model in ('linear_probe', 'finetuned', 'distilled', 'supervised'):
      if model in r['eval']:
        served = ' (served)' if model == r['served'] else ''
        rows.append(f"| {label} ({r['num_labels']} labels) | {model}{served} | "
                    f"{100 * r['eval'][model]['top1']:.1f}% | {r['eval'][model]['ece']:.3f} | "
                    f"{100 * r['test'][model]:.1f}% |")
  lines = [f"Measured {datetime.date.today()} on {result['cpu']}; eval split "
           f"{next(iter(result['results'].values()))['num_eval']} images, test "
           f"{result['num_test']} images.", '', *rows, '']
  for label, r in result['results'].items():
    lines.append(f"- {label}: best of fine-tuned/distilled minus probe {r['targets_test']['over_probe']:+.3f} "
                 f"(test), {r['targets_eval']['over_probe']:+.3f} (eval); minus supervised "
                 f"{r['targets_test']['over_supervised']:+.3f} (test); targets "
                 f"{'met' if r['targets_test']['met'] else 'not met'} on test; stages "
                 + ', '.join(f"{s} {v['steps']} steps in {v['train_seconds']:.0f} s"
                             for s, v in r['stages'].items())
                 + f"; classifier steps {r['classifier_minutes']} min; run {r['run_minutes']} min; "
                 f"pretraining {r['pretrain_steps']} steps; {r['blessing_reason']}")
  docs_section.write_section('bench-finetune', 'make bench-finetune', lines)


if __name__ == '__main__':
  main()
