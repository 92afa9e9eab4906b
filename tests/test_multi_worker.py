"""Multi-worker training for real: worker processes on this machine, each with its own
TF_CONFIG, MultiWorkerMirroredStrategy over gRPC on localhost (the way pods of a training job
talk), against one process on the same global batch. A two-worker job in the DAG, killed and
resumed: tests/test_trainer_resume.py; as a Kubeflow TFJob: tests/test_tfjob.py."""
import json
import os
import subprocess
import sys

import pytest

from components.simclr_trainer.launch import free_ports
from components.simclr_trainer.params import TrainerParams

# Starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  """The result of each of two workers of tests/multi_worker_check.py."""
  tmp = tmp_path_factory.mktemp('multi_worker')
  ports = ','.join(str(p) for p in free_ports(2))
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'multi_worker_check.py'),
                             str(i), ports, str(tmp / f'worker{i}.json')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  return [json.load(open(tmp / f'worker{i}.json')) for i in range(2)]


def test_two_worker_processes_form_one_multi_worker_strategy(results):
  assert [r['index'] for r in results] == [0, 1]
  assert all(r['workers'] == 2 and r['multi_worker']
             for r in results)
  assert all(r['sync_bn_layers'] > 0 for r in results)


def test_the_step_loss_is_the_global_batch_loss_of_one_process(results):
  for r in results:
    assert r['distributed_loss'] == pytest.approx(r['single_loss'], rel=1e-5)
    # Each worker's own negatives and batch statistics alone would give another loss:
    assert abs(r['single_loss'] - r['local_only_loss']) > 0.05


def test_the_step_moves_every_weight_as_one_process_does(results):
  """SGD's first step moves each weight by -lr x gradient: equal weights, equal gradients."""
  for r in results:
    assert r['update_max_abs'] > 1e-3  # the step did move the weights
    assert r['update_max_abs_diff'] <= 1e-5 * max(1.0, r['update_max_abs'])


def test_only_the_chief_writes_where_others_read(tmp_path):
  """worker.output_paths: the chief writes the job's folders, any other worker a scratch
  folder of its own."""
  from components.simclr_trainer import worker
  job = worker.TrainJob(params=TrainerParams(), inputs=None, checkpoint_dir='/c',
                        serving_dir='/m', logdir='/l', outcome_path='/l/o.json')
  assert worker.output_paths(job, '') == {'checkpoints': '/c', 'events': '/l', 'model': '/m'}
  scratch = str(tmp_path)
  assert all(path.startswith(scratch + os.sep)
             for path in worker.output_paths(job, scratch).values())

