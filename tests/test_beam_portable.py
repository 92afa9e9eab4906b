"""ImageIngest, DualViewTransform and Embedder through Beam's portable runner protocol, the way
Flink, Spark and Dataflow run them: a job server (Beam's own Python job service) and an external
SDK worker pool, each in a process of its own. Their artifacts equal the DirectRunner's in the
shared smoke run: the same fingerprint, counts, statistics, transformed records and embeddings.
The runner is set per component (ingest_beam_args, transform_beam_args, embed_beam_args), as on
Dataflow, Flink or Spark."""
import os
import socket
import subprocess
import sys
import time

import pytest

from components import io_utils
from components.image_ingest import contract as ingest
from components.simclr_trainer.launch import free_ports
from tests.conftest import executions_by_component, smoke_config

DATA_COMPONENTS = ('ImageIngest', 'DualViewTransform')


def _wait_for_port(port: int, process, seconds: float = 120) -> None:
  deadline = time.time() + seconds
  while time.time() < deadline:
    assert process.poll() is None, f'{process.args} exited with {process.returncode}'
    try:
      socket.create_connection(('localhost', port), timeout=1).close()
      return
    except OSError:
      time.sleep(0.2)
  raise TimeoutError(f'nothing listens on port {port} after {seconds} s')


@pytest.fixture(scope='module')
def portable_args(tmp_path_factory):
  """beam_pipeline_args for a job service and a worker pool started here, stopped after."""
  tmp_path = tmp_path_factory.mktemp('beam_services')
  job_port, pool_port = free_ports(2)
  commands = [
      [sys.executable, '-m', 'apache_beam.runners.portability.local_job_service_main',
       '--port', str(job_port)],
      [sys.executable, '-m', 'apache_beam.runners.worker.worker_pool_main',
       '--service_port', str(pool_port)]]
  logs = [open(tmp_path / f'service{i}.log', 'w') for i in range(2)]
  # The pool starts each SDK worker as `python -c ...`: this environment's python, as the
  # `python` of a worker image would be.
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
  procs = [subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env) for c, log in zip(commands, logs)]
  try:
    for port, process in zip((job_port, pool_port), procs):
      _wait_for_port(port, process)
    yield (f'--runner=PortableRunner --job_endpoint=localhost:{job_port} '
           f'--environment_type=EXTERNAL --environment_config=localhost:{pool_port}')
  finally:
    for process in procs:
      os.killpg(process.pid, 9)  # the pool's SDK worker processes with it
      process.wait()
    for log in logs:
      log.close()


def _records(examples_uri: str, split: str) -> list:
  """The split's tf.Examples, serialized deterministically (a feature map's order on the wire
  may differ between processes), sorted."""
  import tensorflow as tf
  files = io_utils.split_files(os.path.join(examples_uri, f'Split-{split}'))
  return sorted(tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
                for r in tf.data.TFRecordDataset(files, compression_type='GZIP'))


def test_ingest_and_transform_on_the_portable_runner_equal_the_direct_runner(
    local_run, mnist_subset, portable_args, tmp_path):
  from tfx.orchestration import metadata, pipeline as tfx_pipeline
  from tfx.orchestration.local import local_dag_runner
  from pipeline.pipeline import create_components
  import shlex
  # The pipeline-level runner does not exist: only each component's own args (added after
  # the pipeline's, so they win) can make the run succeed.
  config = smoke_config(mnist_subset, tmp_path / 'out', beam_pipeline_args='--runner=NoSuchRunner',
                        ingest_beam_args=portable_args, transform_beam_args=portable_args)
  store = str(tmp_path / 'out' / 'metadata.sqlite')
  local_dag_runner.LocalDagRunner().run(tfx_pipeline.Pipeline(
      pipeline_name=config.pipeline_name, pipeline_root=str(tmp_path / 'out' / 'root'),
      components=[c for c in create_components(config) if c.id in DATA_COMPONENTS],
      metadata_connection_config=metadata.sqlite_metadata_connection_config(store),
      beam_pipeline_args=shlex.split(config.beam_pipeline_args)))
  portable = executions_by_component(store)
  direct = executions_by_component(local_run[2])
  assert set(portable) == set(DATA_COMPONENTS)
  for name in DATA_COMPONENTS:
    assert portable[name]['state'] == 'COMPLETE', name
  p_examples = portable['ImageIngest']['outputs']['examples'][0]
  d_examples = direct['ImageIngest']['outputs']['examples'][0]
  for key in (ingest.DATA_FINGERPRINT, *ingest.COUNTS, ingest.CLASSES,
              *(ingest.split_count(s) for s in ingest.SPLITS)):
    assert p_examples['properties'][key] == d_examples['properties'][key], key
  p_graph = portable['DualViewTransform']['outputs']['transform_graph'][0]
  d_graph = direct['DualViewTransform']['outputs']['transform_graph'][0]
  for key in ('channel_mean', 'channel_std'):
    assert p_graph['properties'][key] == d_graph['properties'][key], key
  p_out = portable['DualViewTransform']['outputs']['transformed_examples'][0]['uri']
  d_out = direct['DualViewTransform']['outputs']['transformed_examples'][0]['uri']
  for split in ingest.SPLITS:
    records = _records(p_out, split)
    assert records and records == _records(d_out, split), split


def _embeddings(split_uri: str) -> dict:
  """{image content hash: embedding} of one split of an Embeddings artifact."""
  import numpy as np
  import tensorflow as tf
  from components.embedder import contract
  import schemas
  found = {}
  for record in tf.data.TFRecordDataset(io_utils.split_files(split_uri), compression_type='GZIP'):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    found[feature[schemas.SHA256_KEY].bytes_list.value[0]] = np.array(
        feature[contract.EMBEDDING_KEY].float_list.value)
  return found


def test_embedder_on_the_portable_runner_equals_the_direct_runner(local_run, portable_args,
                                                                   tmp_path):
  """The Embedder's executor, given the shared run's examples and model, with the portable
  runner's args: its RunInference runs in the worker pool's SDK worker."""
  import shlex
  import numpy as np
  from tfx.dsl.components.base import base_beam_executor
  from tfx.types import artifact_utils, standard_artifacts
  from components.artifacts import Embeddings
  from components.embedder import contract, executor
  direct = executions_by_component(local_run[2])['Embedder']
  inputs = {}
  for key, cls in (('examples', standard_artifacts.Examples), ('model', standard_artifacts.Model)):
    artifact = cls()
    artifact.uri = direct['inputs'][key][0]['uri']
    if key == 'examples':
      artifact.split_names = artifact_utils.encode_split_names(list(ingest.SPLITS))
      for split in ingest.SPLITS:
        count = direct['inputs'][key][0]['properties'][ingest.split_count(split)]
        artifact.set_int_custom_property(ingest.split_count(split), int(count))
    inputs[key] = [artifact]
  out = Embeddings()
  out.uri = str(tmp_path / 'embeddings')
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=shlex.split(portable_args), tmp_dir=str(tmp_path / 'tmp'))
  executor.Executor(context).Do(inputs, {'embeddings': [out]}, {})
  expected = direct['outputs']['embeddings'][0]
  assert out.get_int_custom_property(contract.NUM_EMBEDDED) == int(
      expected['properties'][contract.NUM_EMBEDDED])
  for split in ingest.SPLITS:
    portable = _embeddings(contract.split_dir(out.uri, split))
    reference = _embeddings(contract.split_dir(expected['uri'], split))
    assert portable and sorted(portable) == sorted(reference), split
    for key, vector in portable.items():
      np.testing.assert_allclose(vector, reference[key], rtol=1e-4, atol=1e-4)
