"""Compiles the same simclr-tfx DAG for Kubeflow Pipelines (KFP v2) with TFX's KubeflowV2DagRunner.

  simclr-tfx compile --image REGISTRY/simclr-tfx:TAG --pipeline-root /mnt/simclr/root \\
      --data-dir /mnt/simclr/images --serving-dir /mnt/models [--pvc NAME:/mnt/simclr] \\
      [--preset cifar] [--set name=value ...] [--out-dir kfp]

  or, like pipeline/local_runner.py, from the environment (SIMCLR_TFX_* plus SIMCLR_TFX_IMAGE,
  SIMCLR_TFX_PIPELINE_ROOT, SIMCLR_TFX_SERVING_DIR, SIMCLR_TFX_PVC):
  python pipeline/kubeflow_runner.py

Writes into --out-dir:
  <pipeline>.json       the PipelineJob TFX writes (what Vertex AI Pipelines runs)
  <pipeline>.yaml       the PipelineSpec alone, with defaultPipelineRoot and, with --pvc, the
                        Kubernetes platform spec that mounts the volume into every task: the
                        package `simclr-tfx kfp-submit` uploads to a KFP cluster.

What differs from a local run, and why:
  - Each task is a pod running the pipeline image's `python -m
    tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`; data_dir, pipeline root,
    checkpoints and the serving folder must be paths every pod sees (a ReadWriteMany volume via
    --pvc) or object-store URIs where the component supports them.
  - No latest-blessed-model resolver: TFX compiles it into artifact queries that only Vertex AI
    Pipelines evaluates, against the MLMD ids of TFX's own Evaluator blessings; open-source KFP
    does not. The warm start and the evaluator's baseline take the serving folder's newest
    pushed version instead (baseline_from=serving, components/baseline.py).
  - Caching is off by default: ImageIngest has no input artifacts, so KFP's cache would replay
    the first ingest on every scheduled run and never see new images (--enable-cache for
    one-off runs).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

if __package__ in (None, ''):  # run as a file (python pipeline/kubeflow_runner.py)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from pipeline.config import ConfigError, PipelineConfig

ENTRYPOINT = ['python', '-m', 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor']


@dataclasses.dataclass
class ClusterSettings:
  """Where the pipeline runs on the cluster; the model's settings stay in PipelineConfig."""
  image: str  # the pipeline image (infra/kubeflow/Dockerfile), pushed to a registry
  pipeline_root: str  # every artifact; a path on the shared volume or an object-store URI
  # TF Serving model base paths (default: the config's serving_dir, else
  # <pipeline_root>/../serving); a POSIX path in the pods, never an object-store URI.
  serving_dir: str = ''
  pvc: str = ''  # NAME:MOUNT_PATH of a ReadWriteMany PersistentVolumeClaim mounted in each task
  enable_cache: bool = False
  display_name: str = ''

  def validate(self) -> 'ClusterSettings':
    if not self.image:
      raise ConfigError('compile needs --image (the pipeline image, e.g. '
                        'registry.example.com/simclr-tfx:1.0; see infra/kubeflow/Dockerfile)')
    if not self.pipeline_root:
      raise ConfigError('compile needs --pipeline-root (a path on the shared volume or gs://...)')
    if self.pvc and (':' not in self.pvc or not self.pvc.split(':', 1)[1].startswith('/')):
      raise ConfigError(f'--pvc expects NAME:/mount/path, got {self.pvc!r}')
    return self


def _cluster_path(path: str, name: str) -> str:
  if '://' in path or path.startswith('/'):
    return path
  raise ConfigError(f'{name} must be an absolute path inside the task pods (on the --pvc '
                    f'volume) or a URI, got {path!r}')


def cluster_config(config: PipelineConfig, settings: ClusterSettings) -> PipelineConfig:
  """The config as the cluster runs it: the baseline and warm start from the serving folder
  (see above), the cache off (ClusterSettings.enable_cache decides for the compiled pipeline);
  a multi-worker trainer's TFJob pods run the pipeline image with its volume, unless the config
  names others."""
  if not config.data_dir:
    raise ConfigError('compile needs --data-dir: the image folder as the task pods see it')
  _cluster_path(config.data_dir, 'data_dir')
  if settings.enable_cache and (config.warm_start or config.bless_compare_with_baseline):
    logging.warning('Kubeflow: --enable-cache replays the cached trainer and evaluator even '
                    'after a newer version was pushed: their warm start and baseline go stale')
  return dataclasses.replace(config, baseline_from='serving', enable_cache=False,
                             trainer_image=config.trainer_image or settings.image,
                             trainer_pvc=config.trainer_pvc or settings.pvc)


def cluster_paths(settings: ClusterSettings, config_serving_dir: str = '') -> Dict[str, str]:
  root = _cluster_path(settings.pipeline_root.rstrip('/'), 'pipeline_root')
  serving = (settings.serving_dir or config_serving_dir or
             root.rsplit('/', 1)[0] + '/serving')
  return {'output': root.rsplit('/', 1)[0], 'metadata': '', 'pipeline_root': root,
          'checkpoints': root + '/_checkpoints', 'serving': _serving_path(serving)}


def _serving_path(path: str) -> str:
  """The Pusher publishes by an atomic rename under a file lock: the serving folder must be
  a POSIX path in the pods (a mounted volume), never an object-store URI, where the push would
  silently land on the pod's own disk or fail half way."""
  if '://' in path:
    raise ConfigError(f'the serving folder {path!r} is a URI; the Pusher needs a POSIX file '
                      'system (atomic rename, file lock): pass --serving-dir with a path on '
                      'a mounted volume (e.g. --pvc NAME:/mnt/simclr --serving-dir '
                      '/mnt/simclr/serving)')
  return _cluster_path(path, 'serving_dir')


def create_kubeflow_pipeline(config: PipelineConfig, settings: ClusterSettings):
  import shlex
  from tfx.orchestration import pipeline as tfx_pipeline
  from pipeline.pipeline import create_components
  config = cluster_config(config.validate(), settings.validate())
  where = cluster_paths(settings, config.serving_dir)
  return tfx_pipeline.Pipeline(
      pipeline_name=config.pipeline_name, pipeline_root=where['pipeline_root'],
      components=create_components(config, where, listing_fingerprint=False),
      enable_cache=settings.enable_cache,
      beam_pipeline_args=shlex.split(config.beam_pipeline_args))


def _platform_spec(executors: List[str], pvc: str) -> Dict[str, Any]:
  """KFP's Kubernetes platform spec (what kfp-kubernetes' mount_pvc writes): the claim mounted
  at the same path in every task."""
  name, mount_path = pvc.split(':', 1)
  mount = {'constant': name, 'mountPath': mount_path}
  return {'platforms': {'kubernetes': {'deploymentSpec': {'executors': {
      label: {'pvcMount': [dict(mount)]} for label in sorted(executors)}}}}}


def compile_pipeline(config: PipelineConfig, settings: ClusterSettings,
                     out_dir: str = 'kfp') -> Dict[str, str]:
  """Writes the PipelineJob JSON and the KFP package YAML; returns their paths."""
  import yaml
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kv2
  pipeline = create_kubeflow_pipeline(config, settings)
  name = pipeline.pipeline_info.pipeline_name
  os.makedirs(out_dir, exist_ok=True)
  job_path = os.path.join(out_dir, f'{name}.json')
  if os.path.exists(job_path):  # TFX refuses to overwrite; a recompile replaces it
    os.remove(job_path)
  runner = kv2.KubeflowV2DagRunner(
      config=kv2.KubeflowV2DagRunnerConfig(
          display_name=settings.display_name or name, default_image=settings.image,
          default_commands=ENTRYPOINT),
      output_dir=out_dir, output_filename=os.path.basename(job_path))
  job = runner.run(pipeline, write_out=True)
  spec = dict(job['pipelineSpec'])
  spec['defaultPipelineRoot'] = pipeline.pipeline_info.pipeline_root
  documents = [spec]
  if settings.pvc:
    documents.append(_platform_spec(list(spec['deploymentSpec']['executors']), settings.pvc))
  package_path = os.path.join(out_dir, f'{name}.yaml')
  with open(package_path + '.tmp', 'w', encoding='utf-8') as f:
    yaml.safe_dump_all(documents, f, sort_keys=True)
  os.replace(package_path + '.tmp', package_path)
  return {'pipeline_job': job_path, 'package': package_path}


def load_package(path: str):
  """(PipelineSpec proto, platform spec dict or None) of a compiled package, parsed the way the
  KFP backend parses it: a YAML/JSON PipelineSpec, optionally followed by a platform spec."""
  import yaml
  from google.protobuf import json_format
  from kfp.pipeline_spec import pipeline_spec_pb2
  with open(path, encoding='utf-8') as f:
    documents = [d for d in yaml.safe_load_all(f) if d]
  if not documents:
    raise ValueError(f'{path} holds no pipeline spec')
  spec_dict = documents[0].get('pipelineSpec', documents[0])  # a PipelineJob works too
  spec = json_format.ParseDict(spec_dict, pipeline_spec_pb2.PipelineSpec())
  platform = documents[1] if len(documents) > 1 else None
  return spec, platform


def settings_from_environment() -> ClusterSettings:
  return ClusterSettings(image=os.environ.get('SIMCLR_TFX_IMAGE', ''),
                         pipeline_root=os.environ.get('SIMCLR_TFX_PIPELINE_ROOT', ''),
                         serving_dir=os.environ.get('SIMCLR_TFX_SERVING_DIR', ''),
                         pvc=os.environ.get('SIMCLR_TFX_PVC', ''))


def main(argv: Optional[List[str]] = None) -> int:
  del argv
  from pipeline.runner import config_from_environment
  paths_written = compile_pipeline(config_from_environment(demo_if_no_data=False),
                                   settings_from_environment(),
                                   os.environ.get('SIMCLR_TFX_KFP_OUT', 'kfp'))
  print(json.dumps(paths_written))
  return 0


if __name__ == '__main__':
  sys.exit(main())
