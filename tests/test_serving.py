"""The TF Serving path: the pushed version as TF Serving uses it (load, serving_default, warmup
replay, models.config), and the REST/gRPC clients against TFServingDouble (a test double: no TF
Serving binary installs here)."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.pusher import push, serving_files
from simclr_tools import serving_client
from tests.conftest import REPO, embed_with_cli, pushed
from tests.serving_double import TFServingDouble


def digits(mnist_subset, n=3):
  paths = sorted(glob.glob(os.path.join(mnist_subset, '*', '*.png')))[::37][:n]
  return paths, [open(p, 'rb').read() for p in paths]


def test_pushed_version_replays_its_warmup_requests(local_run):
  config, summary, _ = pushed(local_run)
  version_dir = summary['pushed_destination']
  requests = serving_files.read_warmup_requests(
      os.path.join(version_dir, serving_files.WARMUP_FILE))
  assert len(requests) == config.serving_warmup_images == 5
  assert {r.model_spec.name for r in requests} == {config.model_name}
  assert {r.model_spec.signature_name for r in requests} == {'serving_default'}
  outputs = serving_files.replay_warmup(version_dir)  # what TF Serving does on load
  assert len(outputs) == 5
  for out in outputs:
    assert out['embedding'].shape[0] == 1 and np.isfinite(out['embedding'].numpy()).all()


def test_models_config_names_the_model_and_its_base_path(local_run):
  config, summary, model_base = pushed(local_run)
  assert summary['models_config'] == os.path.join(config.output_dir, 'serving', 'models.config')
  parsed = serving_files.read_models_config(summary['models_config'])
  (entry,) = [c for c in parsed.model_config_list.config if c.name == config.model_name]
  assert entry.name == config.model_name and entry.model_platform == 'tensorflow'
  assert entry.base_path == model_base
  assert entry.model_version_policy.latest.num_versions == 1


def test_rest_and_grpc_clients_match_the_saved_model_and_survive_bad_requests(local_run,
                                                                              mnist_subset):
  config, summary, model_base = pushed(local_run)
  _, images = digits(mnist_subset)
  direct = tf.saved_model.load(summary['pushed_destination']).signatures['serving_default'](
      images=tf.constant(images))
  with TFServingDouble(config.model_name, model_base) as server:
    rest = serving_client.rest_predict(server.rest_address, config.model_name, images)
    grpc_out = serving_client.grpc_predict(server.grpc_address, config.model_name, images)
    for out in (rest, grpc_out):
      for key in ('embedding', 'projection'):
        np.testing.assert_allclose(out[key], direct[key].numpy(), rtol=1e-4, atol=1e-5)
    pinned = serving_client.grpc_predict(server.grpc_address, config.model_name, images[:1],
                                         version=summary['pushed_version'])
    np.testing.assert_allclose(pinned['embedding'][0], direct['embedding'].numpy()[0],
                               rtol=1e-4, atol=1e-5)
    for predict in (serving_client.rest_predict, serving_client.grpc_predict):
      address = server.rest_address if predict is serving_client.rest_predict else \
          server.grpc_address
      with pytest.raises(serving_client.ServingError, match='INVALID_ARGUMENT|HTTP 400'):
        predict(address, config.model_name, [b'not an image at all'])
      with pytest.raises(serving_client.ServingError, match='NOT_FOUND|HTTP 404'):
        predict(address, 'no_such_model', images[:1])
      # The bad requests did not hurt the server: the next good one is answered.
      assert predict(address, config.model_name, images[:1])['embedding'].shape[0] == 1


def test_embed_cli_against_a_server(local_run, mnist_subset):
  config, summary, model_base = pushed(local_run)
  paths, images = digits(mnist_subset, 2)
  direct = tf.saved_model.load(summary['pushed_destination']).signatures['serving_default'](
      images=tf.constant(images))['embedding'].numpy()
  with TFServingDouble(config.model_name, model_base) as server:
    for protocol, address in (('rest', server.rest_address), ('grpc', server.grpc_address)):
      np.testing.assert_allclose(
          embed_with_cli(paths, '--server', address, '--protocol', protocol, '--model-name',
                         config.model_name), direct, rtol=1e-4, atol=1e-5)
  unreachable = subprocess.run(
      [sys.executable, '-m', 'simclr_tools.cli', 'embed', '--server', '127.0.0.1:9', paths[0]],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert unreachable.returncode == 1
  assert 'cannot reach TF Serving REST' in unreachable.stderr


def test_kubernetes_manifests_serve_the_pushed_layout():
  serving = os.path.join(REPO, 'infra', 'serving')
  with open(os.path.join(serving, 'deployment.yaml')) as f:
    deployment, = [d for d in yaml.safe_load_all(f) if d]
  with open(os.path.join(serving, 'service.yaml')) as f:
    service, = [d for d in yaml.safe_load_all(f) if d]
  assert deployment['kind'] == 'Deployment' and service['kind'] == 'Service'
  pod = deployment['spec']['template']['spec']
  container, = pod['containers']
  assert container['image'].startswith('tensorflow/serving:')
  assert {p['containerPort'] for p in container['ports']} == {8500, 8501}
  args = dict(a.lstrip('-').split('=', 1) for a in container['args'])
  mounts = {m['name']: m['mountPath'] for m in container['volumeMounts']}
  config_file = args['model_config_file']
  assert any(config_file.startswith(path + '/') for path in mounts.values())
  assert int(args['model_config_file_poll_wait_seconds']) > 0
  # The models.config shipped with the manifests parses and points inside the mounted base.
  with open(os.path.join(serving, 'models.config')) as f:
    parsed = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  (entry,) = parsed.model_config_list.config
  assert entry.name == 'simclr_encoder'
  assert any(entry.base_path.startswith(path + '/') for path in mounts.values())
  # Readiness waits for the model to be AVAILABLE (after warmup), via TF Serving's status API.
  assert container['readinessProbe']['httpGet']['path'] == '/v1/models/simclr_encoder'
  selector = service['spec']['selector']
  assert all(deployment['spec']['template']['metadata']['labels'][k] == v
             for k, v in selector.items())
  assert {p['port'] for p in service['spec']['ports']} == {8500, 8501}
  assert push.versions(serving) == []  # the manifests folder holds no model by accident
