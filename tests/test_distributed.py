"""Multi-replica training path on the CPU: two logical devices, MirroredStrategy."""
import json
import os
import subprocess
import sys

import pytest

# Runs the pipeline, or starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def result():
  out = subprocess.run([sys.executable, os.path.join(HERE, 'distributed_check.py')],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_replicas_use_mirrored_strategy(result):
  assert result['replicas'] == 2 and result['strategy'] == 'MirroredStrategy'


def test_cross_replica_negatives_give_the_global_batch_loss(result):
  assert result['distributed_loss'] == pytest.approx(result['single_loss'], rel=1e-5)
  # Without the gather each replica would see only its own half as negatives (a lower loss):
  assert result['single_loss'] - result['local_negatives_only_loss'] > 0.1


def test_gradients_match_the_single_replica_gradient(result):
  assert result['grad_max_abs_diff'] <= 1e-5 * max(1.0, result['grad_max_abs'])


def test_synchronized_batch_norm_uses_global_statistics(result):
  assert result['sync_bn_layers'] == 2
  assert result['sync_bn_max_abs_diff'] < 1e-4


def test_multi_crop_step_pairs_each_crop_with_its_own_image_on_one_and_two_replicas(result):
  """The step's loss is the multi-crop loss with crop j of image i paired with image i's views;
  on two replicas the crops are split with their images, so the loss is the same."""
  assert result['multi_crop_single_loss'] == pytest.approx(result['multi_crop_reference_loss'],
                                                           rel=1e-5)
  assert result['multi_crop_distributed_loss'] == pytest.approx(result['multi_crop_single_loss'],
                                                                rel=1e-5)


def test_gradient_caching_on_two_replicas_equals_one_replica(result):
  """Micro-batches with cross-replica negatives and synchronised batch norm: the loss and the
  gradients of one replica holding the same micro-batches (tests/test_gradient_cache.py: one
  replica against one tape over the batch)."""
  assert result['cached_distributed_loss'] == pytest.approx(result['cached_single_loss'],
                                                            rel=1e-5)
  assert result['cached_grad_max_abs_diff'] <= 1e-5 * max(1e-6, result['cached_grad_max_abs'])
