"""The performance harness runs and reports the figures its users read (not their values: speed
targets live in docs/benchmarks.md, measured by `make bench`, never in a test)."""
import json
import math
import os
import subprocess
import sys

from tests.conftest import REPO


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
