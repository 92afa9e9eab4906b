"""The tfjob launcher (components/simclr_trainer/tfjob.py) against a TEST DOUBLE of the
Kubernetes API server and the training operator (tests/k8s_api_double.py): the manifest is
checked against the kubeflow-training SDK's models, and the pods it describes train for real,
as local processes with the TF_CONFIG the operator would give them."""
import dataclasses
import json
import os

import pytest
import yaml

from components.errors import TrainingJobFailed
from components.simclr_trainer import contract, launch, tfjob, worker
from components.simclr_trainer.params import TrainerParams
from tests.conftest import executions_by_component
from tests.k8s_api_double import TrainingOperatorDouble

IMAGE = 'registry.example.com/simclr-tfx:1'


def _round_trip(manifest: dict) -> dict:
  """The manifest read into the SDK's KubeflowOrgV1TFJob and written back: a field the models do
  not know is dropped, a wrong type fails."""
  from kubeflow.training.api_client import ApiClient
  response = type('Response', (), {'data': json.dumps(manifest)})()
  model = ApiClient().deserialize(response, 'KubeflowOrgV1TFJob')
  return ApiClient().sanitize_for_serialization(model)


def test_the_manifest_is_a_tfjob_of_the_sdk_models_with_volume_and_gpus():
  params = TrainerParams(trainer_workers=3, trainer_image=IMAGE, trainer_pvc='simclr:/mnt/simclr',
                         trainer_gpus=1)
  manifest = tfjob.manifest('simclr-train-x', 'team', '/mnt/simclr/run/train_job.json', params,
                            'fp')
  assert _round_trip(manifest) == manifest
  specs = manifest['spec']['tfReplicaSpecs']
  assert (specs['Chief']['replicas'], specs['Worker']['replicas']) == (1, 2)
  pod = specs['Worker']['template']['spec']
  container = pod['containers'][0]
  assert container['name'] == 'tensorflow' and container['image'] == IMAGE
  assert container['command'] == ['python', '-m', 'components.simclr_trainer.worker',
                                  '/mnt/simclr/run/train_job.json']
  assert container['volumeMounts'] == [{'name': 'simclr-data', 'mountPath': '/mnt/simclr'}]
  assert pod['volumes'][0]['persistentVolumeClaim'] == {'claimName': 'simclr'}
  assert container['resources']['limits'] == {'nvidia.com/gpu': '1'}
  assert manifest['metadata']['labels'] == {tfjob.RUN_LABEL: 'fp'}


@pytest.fixture()
def operator(tmp_path, monkeypatch):
  """The double, with KUBECONFIG pointing at it and a fast watch."""
  with TrainingOperatorDouble(launch.free_ports) as double:
    path = tmp_path / 'kubeconfig'
    path.write_text(yaml.safe_dump(double.kubeconfig()))
    monkeypatch.setenv('KUBECONFIG', str(path))
    monkeypatch.setattr(tfjob, 'POLL_SECONDS', 0.2)
    yield double


def _small_job(local_run, tmp_path):
  """The shared smoke run's training job, as 2 TFJob workers for 4 steps into tmp_path."""
  _, _, metadata = local_run
  run = executions_by_component(metadata)['SimCLRTrainer']['outputs']['model_run'][0]
  with open(os.path.join(run['uri'], contract.JOB_FILE)) as f:
    job = worker.TrainJob.from_json(f.read())
  params = dataclasses.replace(job.params, trainer_workers=2, trainer_launcher='tfjob',
                               trainer_image=IMAGE, train_steps=4, checkpoint_every_steps=2,
                               knn_monitor_every_epochs=0)
  (tmp_path / 'run').mkdir()
  job = dataclasses.replace(job, params=params, checkpoint_dir=str(tmp_path / 'ckpt' / 'fp1'),
                            serving_dir=str(tmp_path / 'model'), logdir=str(tmp_path / 'run'),
                            outcome_path=str(tmp_path / 'run' / contract.OUTCOME_FILE))
  job_path = str(tmp_path / 'run' / contract.JOB_FILE)
  with open(job_path, 'w') as f:
    f.write(job.to_json())
  return job, job_path


def test_a_tfjob_is_created_watched_and_its_pods_train(local_run, operator, tmp_path):
  job, job_path = _small_job(local_run, tmp_path)
  outcome = launch.run_job(job, job_path)
  assert len(operator.created) == 1
  manifest = operator.created[0]
  assert _round_trip(manifest) == manifest
  assert manifest['spec']['tfReplicaSpecs']['Chief']['template']['spec']['containers'][0][
      'command'][-1] == job_path
  where = outcome['job']
  assert where == {'launcher': 'tfjob', 'namespace': 'default',
                   'name': manifest['metadata']['name'], 'uid': 'uid-1', 'workers': 2,
                   'image': IMAGE}
  assert outcome['train_steps'] == 4 and outcome['replicas'] == 2
  assert os.path.isfile(os.path.join(job.serving_dir, 'saved_model.pb'))
  assert sorted(os.listdir(job.checkpoint_dir)) == sorted(
      ['checkpoint', 'timeline.json'] + [f'ckpt-{s}.{e}' for s in (2, 4)
                                         for e in ('index', 'data-00000-of-00001')])


def test_a_failed_tfjob_fails_the_step_with_its_name(local_run, operator, tmp_path):
  job, _ = _small_job(local_run, tmp_path)
  with pytest.raises(TrainingJobFailed, match=r'TFJob default/simclr-train-fp1-\w+ failed'):
    launch.run_job(job, str(tmp_path / 'no-such-job.json'))  # every pod fails to read it
