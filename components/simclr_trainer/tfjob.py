"""The tfjob launcher: a multi-worker training job as a Kubeflow TFJob, created in the cluster the
trainer's pod runs in and watched until it ends.

TFJob (kubeflow.org/v1) is the Kubeflow training operator's TensorFlow job; Kubeflow Trainer v2
(TrainJob) has no TensorFlow runtime (kubeflow/trainer#2699), so v1 it is. The manifest is built
from the kubeflow-training SDK's models: one Chief and trainer_workers - 1 Workers, each a pod of
the pipeline image running `python -m components.simclr_trainer.worker JOB.json`, with the
trainer's PersistentVolumeClaim mounted where the pipeline's tasks mount it (the job file, the
data and the checkpoints must be where every pod can read them: that volume or an object store).
The operator sets each pod's TF_CONFIG; worker.py makes the Chief the chief.

Pods restart on failure (restartPolicy OnFailure, up to BACKOFF_LIMIT times): a restarted worker
and its peers resume from the chief's last checkpoint. A rerun of the step finds a TFJob of the
same run fingerprint that is still running and waits for it instead of starting a second one.
"""
from __future__ import annotations

import logging
import os
import time
import uuid

from components.errors import TrainingJobFailed

GROUP, VERSION, PLURAL, KIND = 'kubeflow.org', 'v1', 'tfjobs', 'TFJob'
CONTAINER = 'tensorflow'  # the container name the training operator expects in a TFJob pod
RUN_LABEL = 'simclr-tfx/run-fingerprint'
BACKOFF_LIMIT = 3
POLL_SECONDS = 10.0
NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace'
WORKER_COMMAND = ['python', '-m', 'components.simclr_trainer.worker']


def manifest(name: str, namespace: str, job_uri: str, params, fingerprint: str) -> dict:
  """The TFJob as the Kubernetes API takes it (built from the SDK's models)."""
  from kubeflow.training import models as kf  # pylint: disable=g-import-not-at-top
  from kubernetes import client as k8s  # pylint: disable=g-import-not-at-top
  mounts, volumes = [], []
  if params.trainer_pvc:
    claim, path = params.trainer_pvc.split(':', 1)
    mounts.append(k8s.V1VolumeMount(name='simclr-data', mount_path=path))
    volumes.append(k8s.V1Volume(name='simclr-data', persistent_volume_claim=(
        k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim))))
  limits = {'nvidia.com/gpu': str(params.trainer_gpus)} if params.trainer_gpus else None
  pod = k8s.V1PodTemplateSpec(spec=k8s.V1PodSpec(
      containers=[k8s.V1Container(
          name=CONTAINER, image=params.trainer_image, command=WORKER_COMMAND + [job_uri],
          volume_mounts=mounts or None, resources=k8s.V1ResourceRequirements(limits=limits))],
      volumes=volumes or None))
  replicas = {'Chief': kf.KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy='OnFailure',
                                                   template=pod)}
  if params.trainer_workers > 1:
    replicas['Worker'] = kf.KubeflowOrgV1ReplicaSpec(
        replicas=params.trainer_workers - 1, restart_policy='OnFailure', template=pod)
  job = kf.KubeflowOrgV1TFJob(
      api_version=f'{GROUP}/{VERSION}', kind=KIND,
      metadata=k8s.V1ObjectMeta(name=name, namespace=namespace,
                                labels={RUN_LABEL: fingerprint}),
      spec=kf.KubeflowOrgV1TFJobSpec(
          run_policy=kf.KubeflowOrgV1RunPolicy(backoff_limit=BACKOFF_LIMIT,
                                              clean_pod_policy='Running'),
          tf_replica_specs=replicas))
  return k8s.ApiClient().sanitize_for_serialization(job)


def state(job: dict) -> str:
  """'Succeeded', 'Failed' or '' (still going), from the job's latest true condition."""
  conditions = [c for c in (job.get('status') or {}).get('conditions') or []
                if c.get('status') == 'True']
  last = conditions[-1]['type'] if conditions else ''
  return last if last in ('Succeeded', 'Failed') else ''


def _api():
  """CustomObjectsApi of the cluster this pod runs in (or of KUBECONFIG outside one)."""
  from kubernetes import client, config  # pylint: disable=g-import-not-at-top
  try:
    config.load_incluster_config()
  except config.ConfigException:
    config.load_kube_config(config_file=os.environ.get('KUBECONFIG'))
  return client.CustomObjectsApi()


def _namespace(params) -> str:
  if params.trainer_namespace:
    return params.trainer_namespace
  if os.path.isfile(NAMESPACE_FILE):
    with open(NAMESPACE_FILE, encoding='utf-8') as f:
      return f.read().strip()
  return 'default'


def run(job_uri: str, params, fingerprint: str) -> dict:
  """Creates the TFJob (or finds the run's unfinished one), waits for its end; returns where it
  ran. A failed job raises TrainingJobFailed; an interrupted wait deletes the job it started."""
  if not params.trainer_image:
    raise TrainingJobFailed('trainer_launcher=tfjob needs trainer_image (simclr-tfx compile '
                            'sets it to the pipeline image)')
  api, namespace = _api(), _namespace(params)
  running = [j for j in api.list_namespaced_custom_object(
      GROUP, VERSION, namespace, PLURAL, label_selector=f'{RUN_LABEL}={fingerprint}')['items']
             if not state(j)]
  created = not running
  if running:
    name = running[0]['metadata']['name']
    logging.info('SimCLRTrainer: TFJob %s/%s of this run is still running; waiting for it',
                 namespace, name)
  else:
    name = f'simclr-train-{fingerprint[:12]}-{uuid.uuid4().hex[:6]}'
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                        manifest(name, namespace, job_uri, params, fingerprint))
    logging.info('SimCLRTrainer: created TFJob %s/%s (%d workers, image %s)', namespace, name,
                 params.trainer_workers, params.trainer_image)
  finished = False
  try:
    job = _wait(api, namespace, name)
    finished = True
  finally:
    if created and not finished:  # interrupted: the job must not train on without us
      api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
  if state(job) == 'Failed':
    reason = job['status']['conditions'][-1].get('message', '')
    raise TrainingJobFailed(f'TFJob {namespace}/{name} failed: {reason} (kubectl logs -n '
                            f'{namespace} -l training.kubeflow.org/job-name={name}); run again '
                            'to resume from the last checkpoint')
  return {'launcher': 'tfjob', 'namespace': namespace, 'name': name,
          'uid': job['metadata'].get('uid', ''), 'workers': params.trainer_workers,
          'image': params.trainer_image}


def _wait(api, namespace: str, name: str) -> dict:
  last_seen = None
  while True:
    job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    conditions = (job.get('status') or {}).get('conditions') or []
    if conditions and conditions[-1]['type'] != last_seen:
      last_seen = conditions[-1]['type']
      logging.info('SimCLRTrainer: TFJob %s/%s: %s', namespace, name, last_seen)
    if state(job):
      return job
    time.sleep(POLL_SECONDS)
