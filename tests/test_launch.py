"""The trainer's local launcher and worker program when a worker dies: the step fails naming the
worker that died, and its peers stop with their own exit code. Fast: the workers are a TEST
DOUBLE (tests/fake_worker.py) or the worker's main with its training replaced."""
import os
import tempfile

import pytest
import tensorflow as tf

from components.errors import TrainingJobFailed
from components.simclr_trainer import contract, launch, worker


def test_the_launcher_names_the_worker_that_died_not_the_peer_that_lost_it(tmp_path,
                                                                            monkeypatch):
  # Both have exited by the launcher's second look; the chief's exit is the consequence.
  monkeypatch.setattr(launch, 'WORKER_MODULE', 'tests.fake_worker')
  monkeypatch.setattr(launch, 'POLL_SECONDS', 1.0)
  system_tmp = tmp_path / 'system_tmp'
  system_tmp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(system_tmp))
  monkeypatch.setenv('TMPDIR', str(system_tmp))
  with pytest.raises(TrainingJobFailed, match=r'worker 1 exited with code -9'):
    launch.run_local(str(tmp_path / 'job.json'), 2, str(tmp_path))
  assert os.listdir(system_tmp) == []  # the killed worker's scratch went with the job


def test_a_worker_that_loses_its_peer_exits_with_its_own_code(tmp_path, monkeypatch):
  def lose_peer(job, strategy):
    raise tf.errors.UnavailableError(None, None, 'Collective ops is aborted by: reset\nstack')
  monkeypatch.setattr(worker.training, 'choose_strategy', lambda name: None)
  monkeypatch.setattr(worker.TrainJob, 'from_json', staticmethod(lambda text: None))
  monkeypatch.setattr(worker, 'run', lose_peer)
  (tmp_path / 'job.json').write_text('{}')
  assert worker.main(['worker', str(tmp_path / 'job.json')]) == contract.PEER_LOST_EXIT_CODE
