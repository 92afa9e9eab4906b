"""The classifier of the shared smoke run (tests/conftest.py `local_run`, with FineTuner on):
the four-model comparison in MLMD and metrics.json, the blessing rule, the push as
<model_name>_classifier beside the encoder (SavedModel, warmup, TFLite), `simclr-tfx classify`
against the SavedModel, REST, gRPC (TFServingDouble: a test double) and TFLite, and lineage from
a classifier version to the encoder version it came from."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from components.pusher import push, serving_files
from simclr_tools import lineage
from tests.conftest import REPO, executions_by_component
from tests.serving_double import TFServingDouble

pytestmark = pytest.mark.slow


def _classifier_base(config):
  return os.path.join(config.output_dir, 'serving', config.model_name + '_classifier')


def _digits(mnist_subset, n=4):
  paths = sorted(glob.glob(os.path.join(mnist_subset, '*', '*.png')))[::29][:n]
  return paths, [open(p, 'rb').read() for p in paths]


def _classify(*args):
  result = subprocess.run([sys.executable, '-m', 'simclr_tools.cli', 'classify', *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout)


def test_four_models_on_the_same_eval_images_in_mlmd_and_metrics_json(local_run):
  config, summary, metadata_path = local_run
  evaluation = executions_by_component(metadata_path)['ClassifierEvaluator']['outputs'][
      'evaluation'][0]
  with open(os.path.join(evaluation['uri'], 'metrics.json')) as f:
    metrics = json.load(f)
  assert set(metrics['models']) == {'linear_probe', 'finetuned', 'distilled', 'supervised'}
  num_eval = {m['num_eval'] for m in metrics['models'].values()}
  assert num_eval == {summary['num_eval']}
  for name, values in metrics['models'].items():
    assert 0.0 <= values['top1'] <= 1.0 and 0.0 <= values['ece'] <= 1.0
    assert set(values['per_class_top1']) == set(metrics['class_names'])
    confusion = np.array(values['confusion_matrix'])
    assert confusion.shape == (10, 10) and confusion.sum() == values['num_eval']
    assert np.trace(confusion) / confusion.sum() == pytest.approx(values['top1'])
    assert evaluation['properties'][f'{name}_top1'] == pytest.approx(values['top1'], abs=1e-5)
    assert evaluation['properties'][f'{name}_ece'] == pytest.approx(values['ece'], abs=1e-5)
  served = metrics['models'][metrics['served_model']]['top1']
  expected = (served >= config.bless_min_classifier_top1 and
              served >= metrics['models']['linear_probe']['top1'])
  assert metrics['blessed'] == expected == bool(evaluation['properties']['blessed'])
  assert os.path.isfile(os.path.join(evaluation['uri'], 'classifier_confusion_matrix.png'))
  assert summary['classifier']['top1'] == {m: v['top1'] for m, v in metrics['models'].items()}


def test_classifier_is_pushed_as_its_own_model_and_serves_the_top_k(local_run, mnist_subset):
  config, summary, _ = local_run
  classifier = summary['classifier']
  assert classifier['pushed'], classifier['push_reason']
  base = _classifier_base(config)
  assert classifier['pushed_destination'] == os.path.join(base, str(classifier['pushed_version']))
  names = {c.name for c in serving_files.read_models_config(
      summary['models_config']).model_config_list.config}
  assert names == {config.model_name, config.model_name + '_classifier'}
  paths, images = _digits(mnist_subset)
  out = tf.saved_model.load(classifier['pushed_destination']).signatures['serving_default'](
      images=tf.constant(images))
  assert out['classes'].shape == (len(images), config.classifier_top_k)
  probabilities = out['probabilities'].numpy()
  assert np.all(np.diff(probabilities, axis=1) <= 0) and np.all(probabilities.sum(1) <= 1 + 1e-5)
  assert {c.decode() for c in out['classes'].numpy().ravel()} <= {str(d) for d in range(10)}
  replies = serving_files.replay_warmup(classifier['pushed_destination'])
  assert len(replies) == config.serving_warmup_images
  record = push.finished_pushes(base)[-1]
  assert record['kind'] == 'classifier'
  assert record['encoder_version'] == summary['pushed_version']
  for name in ('classifier.tflite', 'labels.txt', 'parity.json', 'preprocessing.json'):
    assert os.path.isfile(os.path.join(classifier['pushed_destination'], 'tflite', name)), name


def test_classify_cli_agrees_across_saved_model_rest_grpc_and_tflite(local_run, mnist_subset):
  config, summary, _ = local_run
  base, version_dir = _classifier_base(config), summary['classifier']['pushed_destination']
  paths, images = _digits(mnist_subset, 3)
  direct = tf.saved_model.load(version_dir).signatures['serving_default'](
      images=tf.constant(images))
  expected = [[c.decode() for c in row[:2]] for row in direct['classes'].numpy()]
  local = _classify('--model', base, '--top-k', '2', *paths)
  assert [r['image'] for r in local] == paths
  assert [r['classes'] for r in local] == expected
  np.testing.assert_allclose([r['probabilities'] for r in local],
                             direct['probabilities'].numpy()[:, :2], atol=1e-5)
  with TFServingDouble(config.model_name + '_classifier', base) as server:
    for protocol, address in (('rest', server.rest_address), ('grpc', server.grpc_address)):
      remote = _classify('--server', address, '--protocol', protocol, '--model-name',
                         config.model_name + '_classifier', '--top-k', '2', *paths)
      assert [r['classes'] for r in remote] == expected, protocol
  on_device = _classify('--tflite', os.path.join(version_dir, 'tflite', 'classifier.tflite'),
                        '--top-k', '1', *paths)
  assert [r['classes'][0] for r in on_device] == [row[0] for row in expected]


def test_lineage_links_the_classifier_version_to_its_encoder_version(local_run):
  config, summary, metadata_path = local_run
  chain = lineage.model_lineage(metadata_path, kind='classifier')
  assert chain['pushed_version'] == summary['classifier']['pushed_version']
  assert chain['encoder_version'] == summary['pushed_version']
  steps = [s['component'] for s in chain['chain']]
  for component in ('ImageIngest', 'SimCLRTrainer', 'Pusher', 'FineTuner',
                    'ClassifierEvaluator', 'ClassifierPusher'):
    assert component in steps, component
  assert lineage.model_lineage(metadata_path)['pushed_version'] == summary['pushed_version']
