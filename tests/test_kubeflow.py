"""Kubeflow Pipelines: the compiled spec, and the whole DAG run through TFX's Kubeflow V2 container
entrypoint task by task (simclr_tools/kfp_local.py stands in for KFP's driver and launcher)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Runs the pipeline, or starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow

EXECUTORS = {
    'ImageIngest': 'components.image_ingest.executor.Executor',
    'DualViewTransform': 'components.dual_view_transform.executor.Executor',
    'SimCLRTrainer': 'components.simclr_trainer.executor.Executor',
    'EdgeExport': 'components.edge_export.executor.Executor',
    'Embedder': 'components.embedder.executor.Executor',
    'LinearEvaluator': 'components.linear_evaluator.executor.Executor',
    'Pusher': 'components.pusher.executor.Executor',
}
DEPENDENCIES = {
    'ImageIngest': set(),
    'DualViewTransform': {'ImageIngest'},
    'SimCLRTrainer': {'DualViewTransform'},
    'EdgeExport': {'ImageIngest', 'SimCLRTrainer'},
    'Embedder': {'ImageIngest', 'SimCLRTrainer'},
    'LinearEvaluator': {'ImageIngest', 'SimCLRTrainer', 'Embedder'},
    'Pusher': {'ImageIngest', 'SimCLRTrainer', 'LinearEvaluator', 'EdgeExport'},
}


def _settings(tmp, **overrides):
  from pipeline.kubeflow_runner import ClusterSettings
  values = dict(image='registry.example.com/simclr-tfx:test',
                pipeline_root=str(tmp / 'root'), serving_dir=str(tmp / 'serving'),
                pvc=f'simclr-data:{tmp}')
  values.update(overrides)
  return ClusterSettings(**values)


@pytest.fixture(scope='module')
def compiled(mnist_subset, tmp_path_factory):
  from pipeline import kubeflow_runner
  from tests.conftest import smoke_config
  tmp = tmp_path_factory.mktemp('kfp')
  config = smoke_config(mnist_subset, tmp / 'unused_out', warm_start='true')
  written = kubeflow_runner.compile_pipeline(config, _settings(tmp), str(tmp / 'spec'))
  return tmp, written


@pytest.fixture(scope='module')
def first_run(compiled):
  """The compiled package run once by kfp-local, into an empty serving folder."""
  from simclr_tools import kfp_local
  tmp, written = compiled
  return kfp_local.run_package(written['package'], str(tmp / 'work'))


def _output(result, task, key):
  return result['tasks'][task]['output']['artifacts'][key]['artifacts'][0]


def test_the_package_parses_as_a_kfp_pipeline_spec_with_the_dag(compiled):
  from pipeline.kubeflow_runner import load_package
  from simclr_tools.kfp_local import task_order
  tmp, written = compiled
  spec, platform = load_package(written['package'])
  tasks = spec.root.dag.tasks
  assert set(tasks) == set(DEPENDENCIES), 'no resolver tasks: KFP OSS cannot run them'
  for name, needs in DEPENDENCIES.items():
    assert set(tasks[name].dependent_tasks) == needs, name
    assert tasks[name].caching_options.enable_cache is False, name
  order = task_order(spec)
  assert order.index('ImageIngest') < order.index('SimCLRTrainer') < order.index('Pusher')
  assert spec.default_pipeline_root == str(tmp / 'root')
  mounts = platform['platforms']['kubernetes']['deploymentSpec']['executors']
  assert set(mounts) == {f'{n}_executor' for n in DEPENDENCIES}
  assert all(m['pvcMount'] == [{'constant': 'simclr-data', 'mountPath': str(tmp)}]
             for m in mounts.values())


def test_each_task_runs_the_tfx_container_entrypoint_in_the_given_image(compiled):
  from google.protobuf import json_format
  from kfp.pipeline_spec import pipeline_spec_pb2
  _, written = compiled
  with open(written['pipeline_job'], encoding='utf-8') as f:
    job = json.load(f)
  json_format.ParseDict(job['pipelineSpec'], pipeline_spec_pb2.PipelineSpec())
  executors = job['pipelineSpec']['deploymentSpec']['executors']
  for name, class_path in EXECUTORS.items():
    container = executors[f'{name}_executor']['container']
    assert container['image'] == 'registry.example.com/simclr-tfx:test'
    assert container['command'] == [
        'python', '-m', 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor']
    args = container['args']
    assert args[args.index('--executor_class_path') + 1] == class_path
    assert '{{$}}' in args
  trainer = job['pipelineSpec']['root']['dag']['tasks']['SimCLRTrainer']['inputs']['parameters']
  params = json.loads(trainer['params']['runtimeValue']['constantValue']['stringValue'])
  assert params['distribution_strategy'] == 'auto' and params['batch_size'] == 32
  assert trainer['checkpoint_root']['runtimeValue']['constantValue']['stringValue'].startswith(
      str(written['package']).rsplit('/spec/', 1)[0] + '/root')


def test_cluster_settings_are_checked_before_compiling(mnist_subset, tmp_path):
  from pipeline import kubeflow_runner
  from pipeline.config import ConfigError
  from tests.conftest import smoke_config
  config = smoke_config(mnist_subset, tmp_path)
  with pytest.raises(ConfigError, match='--image'):
    kubeflow_runner.compile_pipeline(config, _settings(tmp_path, image=''), str(tmp_path))
  with pytest.raises(ConfigError, match='--pvc'):
    kubeflow_runner.compile_pipeline(config, _settings(tmp_path, pvc='no-mount-path'),
                                     str(tmp_path))
  relative = smoke_config('relative/images', tmp_path)
  with pytest.raises(ConfigError, match='data_dir must be an absolute path'):
    kubeflow_runner.compile_pipeline(relative, _settings(tmp_path), str(tmp_path))


def test_the_whole_dag_runs_through_the_kubeflow_container_entrypoint(compiled, first_run,
                                                                     mnist_subset):
  """Every task's container command from the spec, in a subprocess, with local paths: ingest to
  push, the same executors and artifact passing as on a cluster."""
  import tensorflow as tf
  tmp, _ = compiled
  result = first_run
  assert set(result['tasks']) == set(EXECUTORS)
  assert all(t['command'][1:3] == ['-m', 'tfx.orchestration.kubeflow.v2.container.'
                                   'kubeflow_v2_run_executor'] for t in result['tasks'].values())
  ingest = result['tasks']['ImageIngest']['output']['artifacts']['examples']['artifacts'][0]
  assert json.loads(ingest['metadata']['split_names']) == ['train', 'eval']
  pushed = result['tasks']['Pusher']['output']['artifacts']['pushed_model']['artifacts'][0]
  assert pushed['metadata']['pushed'] == 1
  destination = pushed['metadata']['pushed_destination']
  assert destination.startswith(str(tmp / 'serving' / 'simclr_encoder'))
  serve = tf.saved_model.load(destination).signatures['serving_default']
  with open(os.path.join(os.path.dirname(destination), '..', 'models.config'),
            encoding='utf-8') as f:
    assert 'simclr_encoder' in f.read()
  image = open(next(os.path.join(r, n) for r, _, ns in os.walk(mnist_subset) for n in ns
                    if n.endswith('.png')), 'rb').read()
  assert serve(images=tf.constant([image]))['embedding'].shape[0] == 1
  blessing = result['tasks']['LinearEvaluator']['output']['artifacts']['blessing']['artifacts'][0]
  assert blessing['metadata']['blessed'] == 1
  assert blessing['uri'].startswith(str(tmp / 'root'))


def test_compile_command_and_the_environment_runner_write_the_same_dag(mnist_subset, tmp_path):
  """... with a multi-worker trainer: the compiled trainer starts a TFJob of the pipeline's
  image with the pipeline's volume (docs/scale-out.md)."""
  from simclr_tools import cli
  from pipeline.kubeflow_runner import load_package
  assert cli.main(['compile', '--preset', 'smoke', '--data-dir', mnist_subset,
                   '--image', 'img:1', '--pipeline-root', str(tmp_path / 'root'),
                   '--pvc', 'claim:/mnt/simclr', '--set', 'trainer_workers=2',
                   '--out-dir', str(tmp_path / 'cli')]) == 0
  env = dict(os.environ, SIMCLR_TFX_PRESET='smoke', SIMCLR_TFX_DATA_DIR=mnist_subset,
             SIMCLR_TFX_IMAGE='img:1', SIMCLR_TFX_PIPELINE_ROOT=str(tmp_path / 'root'),
             SIMCLR_TFX_PVC='claim:/mnt/simclr', SIMCLR_TFX_SET='trainer_workers=2',
             SIMCLR_TFX_KFP_OUT=str(tmp_path / 'env'))
  subprocess.run([sys.executable, 'pipeline/kubeflow_runner.py'], cwd=REPO, env=env,
                 check=True, capture_output=True, timeout=300)
  from_cli, _ = load_package(str(tmp_path / 'cli' / 'simclr-tfx.yaml'))
  from_env, _ = load_package(str(tmp_path / 'env' / 'simclr-tfx.yaml'))
  assert from_cli == from_env
  trainer = from_cli.root.dag.tasks['SimCLRTrainer'].inputs.parameters['params']
  params = json.loads(trainer.runtime_value.constant_value.string_value)
  assert (params['trainer_workers'], params['trainer_image'], params['trainer_pvc']) == (
      2, 'img:1', 'claim:/mnt/simclr')
  assert cli.main(['compile', '--preset', 'smoke', '--data-dir', 'relative', '--image', 'x',
                   '--pipeline-root', '/r']) == 2


def test_distribution_strategy_is_a_checked_choice():
  import tensorflow as tf
  from components.simclr_trainer import training
  from pipeline.config import ConfigError, build_config
  assert isinstance(training.choose_strategy('mirrored'), tf.distribute.MirroredStrategy)
  assert training.choose_strategy('default') is tf.distribute.get_strategy()
  with pytest.raises(ValueError, match='distribution_strategy'):
    training.choose_strategy('tpu')
  with pytest.raises(ConfigError, match='distribution_strategy'):
    build_config(set_args=['distribution_strategy=tpu'])


def test_compile_refuses_a_uri_serving_folder(mnist_subset, tmp_path):
  """A push to gs:// from a pod would land on the pod's own disk (or half fail) while MLMD
  said pushed: a URI serving folder, given or derived from a gs:// pipeline root, is refused."""
  from pipeline import kubeflow_runner
  from pipeline.config import ConfigError
  from tests.conftest import smoke_config
  config = smoke_config(mnist_subset, tmp_path)
  settings = kubeflow_runner.ClusterSettings(image='registry/simclr:1', pipeline_root='gs://b/root')
  with pytest.raises(ConfigError, match='--serving-dir'):
    kubeflow_runner.compile_pipeline(config, settings, str(tmp_path))
  settings.serving_dir = '/mnt/models'
  assert kubeflow_runner.cluster_paths(settings)['serving'] == '/mnt/models'


def test_a_second_cluster_run_warm_starts_from_and_compares_with_the_pushed_version(compiled,
                                                                                    first_run):
  """No resolver runs on Kubeflow: the trainer and the evaluator find the latest blessed model
  in the serving folder (the first run's push), with no metadata store at all."""
  from simclr_tools import kfp_local
  tmp, written = compiled
  first = _output(first_run, 'Pusher', 'pushed_model')['metadata']
  first_metrics = json.load(open(os.path.join(
      _output(first_run, 'LinearEvaluator', 'evaluation')['uri'], 'metrics.json')))
  assert first_metrics['baseline'] is None  # nothing was pushed before it
  assert _output(first_run, 'SimCLRTrainer', 'model')['metadata']['warm_started_from'] == ''

  second = kfp_local.run_package(written['package'], str(tmp / 'work2'))
  destination = first['pushed_destination']
  model = _output(second, 'SimCLRTrainer', 'model')['metadata']
  version = int(first['pushed_version'])  # KFP's metadata numbers are floats
  assert model['warm_started_from'] == f'pushed version {version} ({destination})'
  metrics = json.load(open(os.path.join(_output(second, 'LinearEvaluator', 'evaluation')['uri'],
                                        'metrics.json')))
  assert metrics['baseline']['pushed_version'] == first['pushed_version']
  assert metrics['baseline']['saved_model'] == destination
  assert metrics['baseline']['model_uri'] == _output(first_run, 'SimCLRTrainer', 'model')['uri']
  assert 0.0 <= metrics['baseline_linear_top1'] <= 1.0
