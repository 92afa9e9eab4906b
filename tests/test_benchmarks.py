"""The performance harness runs and reports the figures its users read (not their values: speed
targets live in docs/benchmarks.md, measured by `make bench`, never in a test)."""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_bench_perf_quick_prints_the_summary_json(mnist_subset):
  doc = os.path.join(REPO, 'docs', 'benchmarks.md')
  with open(doc, encoding='utf-8') as f:
    before = f.read()
  result = subprocess.run([sys.executable, '-m', 'benchmarks.bench_perf', '--quick',
                           '--data-dir', mnist_subset], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])  # the last output is the JSON
  for key in ('images_per_sec', 'mfu', 'speedup_vs_baseline', 'input_ratio'):
    assert math.isfinite(summary[key]) and summary[key] > 0, key
  assert 0 < summary['mfu'] < 1.5  # a FLOP count or a peak off by 10x would show here
  assert summary['peak_gflops']['float32'] > 0 and summary['peak_gflops']['bfloat16'] > 0
  assert 'overhead_share' in summary  # NaN in --quick: it skips the make run measurement
  with open(doc, encoding='utf-8') as f:
    assert f.read() == before  # --quick never rewrites the published figures


def test_analytic_flops_of_resnet18_cifar_match_the_published_count():
  """ResNet-18 with the CIFAR stem at 32 px: about 0.56 G multiply-adds = 1.11 GFLOP forward."""
  from benchmarks import bench_perf
  from components.simclr_trainer import model as model_lib
  encoder = model_lib.build_encoder('resnet18', 32)
  assert abs(bench_perf.forward_flops(encoder) / 1.11e9 - 1) < 0.03
  head = model_lib.build_projection_head(encoder.output_shape[-1], 128, 2)
  per_image = bench_perf.train_flops_per_image(encoder, head)
  assert abs(per_image / 6.7e9 - 1) < 0.03  # x3 forward+backward, x2 views


@pytest.mark.slow
def test_bench_quality_smoke_on_a_cifar_subset(tmp_path):
  """The quality benchmark end to end on 30 CIFAR-10 images per class (symlinked, not copied):
  the preset runs, every kept checkpoint is probed, and the final checkpoint's probe equals the
  pushed model's (the checkpoint path and the serving path preprocess alike)."""
  import pytest
  from tests.conftest import SHARED_DATASETS
  source = os.path.join(SHARED_DATASETS, 'cifar10', 'train')
  if not os.path.isdir(source):
    pytest.skip(f'{source} is absent: the shared CIFAR-10 data set is needed')
  subset = tmp_path / 'cifar_subset'
  for name in sorted(os.listdir(source)):
    (subset / name).mkdir(parents=True)
    for file in sorted(os.listdir(os.path.join(source, name)))[:30]:
      os.symlink(os.path.join(source, name, file), subset / name / file)
  result = subprocess.run([sys.executable, '-m', 'benchmarks.bench_quality', '--smoke',
                           '--train-dir', str(subset), '--output', str(tmp_path / 'run')],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary['preset'] == 'cifar' and summary['backbone'] == 'resnet18'
  assert summary['labels_per_class'] == 20 and summary['num_test'] == 1000
  steps = [point['step'] for point in summary['curve']]
  assert steps == [0, 2, 4]  # random init, then every kept checkpoint of the 4 smoke steps
  # The checkpoint restored into Keras and the pushed SavedModel agree to float rounding (the
  # min cosine below pins that). The probe on a 4-step model is fragile: embeddings equal to
  # rounding (batched differently: the served signature takes requests of limits.plan_batches)
  # can choose another regularisation on the validation split and move top-1 by a point or so.
  # Two points is far below what a wrong checkpoint or preprocessing path costs.
  assert abs(summary['curve'][-1]['probe_top1'] - summary['plain_probe_top1']) <= 0.02 + 1e-9
  protocol = summary['protocol_probe']  # crops and flips of the final checkpoint = pushed model
  assert protocol['checkpoint'] == 'ckpt-4' and protocol['min_cosine_to_pushed'] >= 0.999
  assert protocol['train_views'] == 10 and protocol['eval_views'] == 2  # plain, mirror, 8 crops
  assert summary['probe_top1'] == round(protocol['top1'], 4)
  for key in ('probe_top1', 'plain_probe_top1', 'knn_top1', 'raw_pixels_top1',
              'random_init_top1'):
    assert 0.0 <= summary[key] <= 1.0


def test_embedding_choice_probe_picks_c_on_validation_and_scores_test():
  """benchmarks.probe_embeddings: the protocol probe fitted on the non-validation images' views
  finds separable classes, and reports chance on labels that carry no signal."""
  import numpy as np
  from benchmarks.probe_embeddings import GRID, validated_protocol_probe
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(4, 16)) * 3
  train_y, test_y = np.repeat(np.arange(4), 50), np.repeat(np.arange(4), 100)
  views = lambda y: [centers[y] + rng.normal(size=(len(y), 16)) for _ in range(3)]
  is_val = np.isin(np.arange(200), rng.permutation(200)[:40])
  result = validated_protocol_probe(views(train_y), train_y, views(test_y)[:2], test_y, is_val)
  assert result['C'] in GRID and result['validation_top1'] > 0.95 and result['test_top1'] > 0.95
  noise = lambda n: [rng.normal(size=(n, 16)) for _ in range(3)]
  shuffled = validated_protocol_probe(noise(200), train_y, noise(400)[:2], test_y, is_val)
  assert shuffled['test_top1'] < 0.4  # 4 classes: chance is 0.25


def test_batch_norm_recalibration_averages_the_statistics_of_the_given_images():
  """benchmarks.probe_embeddings.recalibrate_batch_norm: moving statistics become the average
  over all batches (not an exponential average dominated by the last), and the layer's
  momentum is restored for training."""
  import keras
  import numpy as np
  from benchmarks.probe_embeddings import recalibrate_batch_norm
  inputs = keras.Input((4, 4, 3))
  model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9)(inputs))
  rng = np.random.default_rng(0)
  # Batch k has channel means 2k, 2k+1, 2k+2: the last batch alone would give 8, 9, 10.
  images = np.concatenate([rng.normal(size=(100, 4, 4, 3)) * 0.5 + np.arange(3) + 2 * k
                           for k in range(5)]).astype('float32')
  assert recalibrate_batch_norm(model, images, batch_size=100) == 5
  norm = model.layers[-1]
  np.testing.assert_allclose(norm.moving_mean.numpy(), images.mean(axis=(0, 1, 2)), atol=1e-4)
  within = np.mean([images[k * 100:(k + 1) * 100].var(axis=(0, 1, 2)) for k in range(5)], 0)
  np.testing.assert_allclose(norm.moving_variance.numpy(), within, rtol=0.02)
  assert norm.momentum == 0.9


def test_bench_finetune_targets_read_both_the_eval_metrics_and_the_test_top1():
  from benchmarks import bench_finetune
  result = {'eval': {'linear_probe': {'top1': 0.50, 'ece': 0.1},
                     'finetuned': {'top1': 0.54, 'ece': 0.1},
                     'supervised': {'top1': 0.30, 'ece': 0.1}},
            'test': {'linear_probe': 0.50, 'distilled': 0.52, 'supervised': 0.30}}
  assert bench_finetune.targets_met(result, 'eval') == {
      'over_probe': 0.04, 'over_supervised': 0.24, 'met': True}
  assert bench_finetune.targets_met(result, 'test')['met'] is False  # 2 points over the probe
