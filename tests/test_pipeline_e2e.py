"""The whole DAG, really run: LocalDagRunner and BeamDagRunner, SQLite MLMD, TFT on Beam.

A 300-image MNIST subset, 16 px images and 3 training steps keep each run under a minute; the
assertions are about wiring and contracts, not about accuracy.
"""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline import runner
from tfx.utils import path_utils

from components.pusher import push
from tests.conftest import (LOCAL_RUN_FINETUNE, REPO, executions_by_component, png_bytes,
                            smoke_config)

# Runs the pipeline, or starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow

COMPONENTS = ('ImageIngest', 'DualViewTransform', 'SimCLRTrainer', 'Embedder', 'LinearEvaluator',
              'EdgeExport', 'Pusher', 'FineTuner', 'ClassifierEvaluator', 'ClassifierEdgeExport',
              'ClassifierPusher')
# Every run also has the resolver node that finds the latest blessed model (the evaluator's
# baseline, and the trainer's warm start when asked for).
RESOLVER = 'latest_blessed_model_resolver'
NODES = COMPONENTS + (RESOLVER,)
# A DAG without the classifier stages (finetune=false, as in the smoke preset).
ENCODER_NODES = tuple(c for c in NODES if not c.startswith(('FineTuner', 'Classifier')))
EXPECTED_IO = {
    'ImageIngest': ({}, {'examples': 'Examples', 'schema': 'Schema',
                         'report': 'simclr_tfx.IngestReport'}),
    'DualViewTransform': ({'examples': 'Examples', 'schema': 'Schema'},
                          {'transform_graph': 'TransformGraph', 'transformed_examples': 'Examples'}),
    'SimCLRTrainer': ({'transformed_examples': 'Examples', 'transform_graph': 'TransformGraph'},
                      {'model': 'Model', 'model_run': 'ModelRun'}),
    'Embedder': ({'examples': 'Examples', 'model': 'Model'},
                 {'embeddings': 'simclr_tfx.Embeddings'}),
    'LinearEvaluator': ({'examples': 'Examples', 'model': 'Model',
                         'embeddings': 'simclr_tfx.Embeddings'},
                        {'evaluation': 'ModelEvaluation', 'blessing': 'ModelBlessing'}),
    'EdgeExport': ({'model': 'Model', 'examples': 'Examples'},
                   {'edge_model': 'simclr_tfx.EdgeModel'}),
    'Pusher': ({'model': 'Model', 'model_blessing': 'ModelBlessing',
                'edge_model': 'simclr_tfx.EdgeModel', 'examples': 'Examples'},
               {'pushed_model': 'PushedModel'}),
    'FineTuner': ({'transformed_examples': 'Examples', 'transform_graph': 'TransformGraph',
                   'model': 'Model', 'examples': 'Examples'},
                  {'classifier': 'Model', 'finetune_run': 'ModelRun'}),
    'ClassifierEvaluator': ({'examples': 'Examples', 'classifier': 'Model',
                             'finetune_run': 'ModelRun', 'embeddings': 'simclr_tfx.Embeddings'},
                            {'evaluation': 'ModelEvaluation', 'blessing': 'ModelBlessing'}),
    'ClassifierPusher': ({'model': 'Model', 'model_blessing': 'ModelBlessing',
                          'edge_model': 'simclr_tfx.EdgeModel', 'examples': 'Examples',
                          'encoder_push': 'PushedModel'}, {'pushed_model': 'PushedModel'}),
}


def test_every_execution_completes_with_its_artifacts(local_run):
  _, summary, metadata_path = local_run
  executions = executions_by_component(metadata_path)
  assert sorted(executions) == sorted(NODES)
  for component, (inputs, outputs) in EXPECTED_IO.items():
    entry = executions[component]
    assert entry['state'] == 'COMPLETE', (component, entry['state'])
    got_inputs = {k: v[0]['type'] for k, v in entry['inputs'].items()}
    got_outputs = {k: v[0]['type'] for k, v in entry['outputs'].items()}
    assert got_inputs == inputs, component
    assert got_outputs == outputs, component
  # Wiring: the trainer consumed exactly what the transform produced, and so on down the DAG.
  produced = executions['DualViewTransform']['outputs']['transform_graph'][0]['id']
  assert executions['SimCLRTrainer']['inputs']['transform_graph'][0]['id'] == produced
  model_id = executions['SimCLRTrainer']['outputs']['model'][0]['id']
  assert executions['Pusher']['inputs']['model'][0]['id'] == model_id
  embeddings = executions['Embedder']['outputs']['embeddings'][0]['id']
  assert executions['LinearEvaluator']['inputs']['embeddings'][0]['id'] == embeddings
  assert executions['FineTuner']['inputs']['model'][0]['id'] == model_id
  classifier_id = executions['FineTuner']['outputs']['classifier'][0]['id']
  assert executions['ClassifierPusher']['inputs']['model'][0]['id'] == classifier_id
  assert executions['ClassifierPusher']['inputs']['encoder_push'][0]['id'] == \
      executions['Pusher']['outputs']['pushed_model'][0]['id']
  assert summary['pushed'] is True and summary['classifier']['pushed'] is True


def test_ingest_report_and_examples(local_run):
  _, _, metadata_path = local_run
  ingest = executions_by_component(metadata_path)['ImageIngest']
  with open(os.path.join(ingest['outputs']['report'][0]['uri'], 'report.json')) as f:
    report = json.load(f)
  assert report['num_files'] == 300 and report['num_examples'] == 300
  assert report['classes'] == [str(d) for d in range(10)]
  assert report['split_counts']['train'] + report['split_counts']['eval'] == 300
  assert report['split_counts']['eval'] > 20
  examples_uri = ingest['outputs']['examples'][0]['uri']
  assert glob.glob(os.path.join(examples_uri, 'Split-train', '*.gz'))
  assert glob.glob(os.path.join(examples_uri, 'Split-eval', '*.gz'))
  props = ingest['outputs']['examples'][0]['properties']
  assert props['split_names'] == '["train", "eval"]'


def test_policy_recorded_and_tensorboard_written(local_run):
  config, _, metadata_path = local_run
  executions = executions_by_component(metadata_path)
  graph = executions['DualViewTransform']['outputs']['transform_graph'][0]
  assert json.loads(graph['properties']['augmentation_policy']) == json.loads(
      json.dumps(config.augmentation_policy()))
  assert os.path.isfile(os.path.join(graph['uri'], 'policy.json'))
  from PIL import Image
  preview = Image.open(os.path.join(graph['uri'], 'preview.png'))
  assert preview.format == 'PNG' and preview.width > 3 * 64  # originals + two views per row
  run_dir = executions['SimCLRTrainer']['outputs']['model_run'][0]['uri']
  assert glob.glob(os.path.join(run_dir, 'events.out.tfevents.*'))


def test_embedder_gives_every_image_the_served_models_embedding(local_run):
  """RunInference over every ingested record equals the served signature called in this
  process on the same bytes, image by image, and loses no record."""
  import schemas
  from components.embedder import contract
  from tfx.utils import path_utils
  from components import io_utils
  executions = executions_by_component(local_run[2])
  embeddings = executions['Embedder']['outputs']['embeddings'][0]
  examples = executions['ImageIngest']['outputs']['examples'][0]
  assert embeddings['properties'][contract.MODEL_URI] == (
      executions['SimCLRTrainer']['outputs']['model'][0]['uri'])
  serve = io_utils.load_serving_signature(
      path_utils.serving_model_path(embeddings['properties'][contract.MODEL_URI]))
  for split in ('train', 'eval'):
    got = {}
    for path in glob.glob(os.path.join(embeddings['uri'], f'Split-{split}', '*.gz')):
      for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        got[feature[schemas.SHA256_KEY].bytes_list.value[0]] = np.array(
            feature[contract.EMBEDDING_KEY].float_list.value)
    images = {}
    for path in glob.glob(os.path.join(examples['uri'], f'Split-{split}', '*.gz')):
      for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        images[feature[schemas.SHA256_KEY].bytes_list.value[0]] = (
            feature[schemas.IMAGE_KEY].bytes_list.value[0])
    assert sorted(got) == sorted(images) and len(got) == int(
        embeddings['properties'][f'num_{split}'])
    keys = sorted(images)
    served = serve(images=tf.constant([images[k] for k in keys]))['embedding'].numpy()
    np.testing.assert_allclose(np.stack([got[k] for k in keys]), served, rtol=1e-4, atol=1e-4)


def test_metrics_json_contract(local_run):
  _, _, metadata_path = local_run
  evaluation = executions_by_component(metadata_path)['LinearEvaluator']['outputs']['evaluation'][0]
  with open(os.path.join(evaluation['uri'], 'metrics.json')) as f:
    metrics = json.load(f)
  for key in ('linear_top1', 'knn_top1', 'num_labelled', 'num_eval', 'blessed', 'blessing_reason'):
    assert key in metrics
  assert 0.0 <= metrics['linear_top1'] <= 1.0 and 0.0 <= metrics['knn_top1'] <= 1.0
  assert metrics['num_labelled'] + metrics['num_eval'] == 300
  # 10 classes: top-5 is a real top-5 and at least top-1.
  assert metrics['linear_top5_k'] == 5 and metrics['linear_top5'] >= metrics['linear_top1']
  confusion = np.array(metrics['confusion_matrix'])
  assert confusion.shape == (10, 10) and confusion.sum() == metrics['num_eval']
  assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics['linear_top1'])
  assert sorted(metrics['per_class_top1']) == sorted(str(c) for c in range(10))
  # One probe per labelled fraction; fraction 1 is the headline number.
  by_fraction = metrics['linear_probe_by_fraction']
  assert sorted(by_fraction, key=float) == ['0.01', '0.1', '1']
  assert by_fraction['1']['top1'] == metrics['linear_top1']
  assert by_fraction['1']['num_labels'] == metrics['num_labelled']
  assert 10 <= by_fraction['0.01']['num_labels'] < by_fraction['0.1']['num_labels']
  # Context: the same probe on raw pixels and on a random-init encoder of the same design.
  assert 0.0 <= metrics['raw_pixels_linear_top1'] <= 1.0
  assert metrics['context']['random_init_encoder']['backbone'] == 'resnet_small'
  assert 0.0 <= metrics['random_init_encoder_linear_top1'] <= 1.0
  assert 'no blessed baseline' in metrics['blessing_reason']
  assert evaluation['properties']['blessed'] == 1


def test_evaluation_plots_and_projector_files(local_run):
  _, _, metadata_path = local_run
  evaluation = executions_by_component(metadata_path)['LinearEvaluator']['outputs']['evaluation'][0]
  with open(os.path.join(evaluation['uri'], 'metrics.json')) as f:
    metrics = json.load(f)
  for name in ('confusion_matrix.png', 'embedding_map.png'):
    with open(os.path.join(evaluation['uri'], name), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n', name
  projector = os.path.join(evaluation['uri'], 'projector')
  with open(os.path.join(projector, 'projector_config.pbtxt')) as f:
    assert 'metadata.tsv' in f.read()
  with open(os.path.join(projector, 'metadata.tsv')) as f:
    labels = f.read().splitlines()
  assert len(labels) == metrics['num_eval'] and set(labels) == {str(d) for d in range(10)}
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(projector))
  vectors = reader.get_tensor('embedding/.ATTRIBUTES/VARIABLE_VALUE')
  assert vectors.shape == (metrics['num_eval'], metrics['embedding_dim'])


def test_pushed_model_serves_png_bytes(local_run, mnist_subset):
  config, summary, _ = local_run
  model_dir = os.path.join(config.output_dir, 'serving', config.model_name)
  versions = [d for d in os.listdir(model_dir) if d.isdigit()]
  assert versions == [str(summary['pushed_version'])]
  version_dir = os.path.join(model_dir, versions[0])
  assert os.path.isfile(os.path.join(version_dir, 'saved_model.pb'))

  loaded = tf.saved_model.load(version_dir)  # what TF Serving does
  serve = loaded.signatures['serving_default']
  spec = serve.structured_input_signature[1]['images']
  assert spec.dtype == tf.string and spec.shape.as_list() == [None]
  digits = sorted(glob.glob(os.path.join(mnist_subset, '*', '*.png')))[:3]
  batch = [open(p, 'rb').read() for p in digits]
  batch.append(png_bytes(np.full((50, 70, 3), 200, np.uint8)))  # any size, colour
  out = serve(images=tf.constant(batch))
  embedding, projection = out['embedding'].numpy(), out['projection'].numpy()
  assert embedding.dtype == np.float32 and embedding.shape[0] == 4
  assert projection.shape == (4, config.projection_dim)
  assert np.isfinite(embedding).all() and np.isfinite(projection).all()
  np.testing.assert_allclose(np.linalg.norm(projection, axis=1), 1.0, rtol=1e-4)
  # The tf.Example signature gives the same answer for the same image bytes.
  examples = [tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))}))
      .SerializeToString() for b in batch]
  from_examples = loaded.signatures['serving_examples'](examples=tf.constant(examples))
  np.testing.assert_allclose(from_examples['embedding'].numpy(), embedding, rtol=1e-4,
                             atol=1e-5)
  # Same image, same embedding: the graph is deterministic at serving time.
  again = serve(images=tf.constant(batch[:1]))['embedding'].numpy()
  np.testing.assert_allclose(again[0], embedding[0], rtol=1e-4, atol=1e-5)


def test_second_identical_run_is_cached_and_pushes_nothing_new(local_run):
  config, first, metadata_path = local_run
  second = runner.run_pipeline(config, engine='local')
  states = {e['component']: e['state'] for e in second['executions']}
  # The work is cached. The evaluator runs once more because its baseline input changed (the
  # first run's model is now the latest blessed one): it finds it is comparing the model with
  # itself, and the Pusher finds that version already pushed.
  assert {c: states[c] for c in ('ImageIngest', 'DualViewTransform', 'SimCLRTrainer',
                                 'EdgeExport')} == {c: 'CACHED' for c in ('ImageIngest',
                                                    'DualViewTransform', 'SimCLRTrainer',
                                                    'EdgeExport')}
  evaluation = executions_by_component(second['metadata'])['LinearEvaluator']['outputs'][
      'evaluation'][0]
  with open(os.path.join(evaluation['uri'], 'metrics.json')) as f:
    assert json.load(f)['baseline']['note'] == 'the baseline is this model'
  assert second['pushed'] and second['pushed_version'] == first['pushed_version']
  assert second['push_reason'] == 'already pushed as this version'
  model_dir = os.path.join(config.output_dir, 'serving', config.model_name)
  assert [d for d in os.listdir(model_dir) if d.isdigit()] == [str(first['pushed_version'])]


def test_beam_engine_labelled_fraction_and_an_unblessed_model_is_not_pushed(mnist_subset,
                                                                            tmp_path):
  # Also: training on 12 px crops of the 16 px images (train_crop_size), served at 16 px.
  config = smoke_config(mnist_subset, tmp_path / 'beam_run', bless_min_linear_top1=1.0,
                        labelled_fraction=0.1, train_crop_size=12)
  summary = runner.run_pipeline(config, engine='beam')
  # The probe saw only the class-balanced 10% of train labels that ImageIngest flagged.
  report_path, = glob.glob(os.path.join(config.output_dir, 'pipeline_root', 'ImageIngest',
                                        'report', '*', 'report.json'))
  with open(report_path) as f:
    report = json.load(f)
  assert summary['num_labelled'] == report['num_labelled_for_probe']
  assert 20 <= summary['num_labelled'] <= 30  # 10% of ~240 train images, >= 1 per class
  states = {e['component']: e['state'] for e in summary['executions']}
  assert states == {c: 'COMPLETE' for c in ENCODER_NODES}  # the smoke preset: no classifier
  assert summary['pushed'] is False and summary['classifier'] is None
  assert 'threshold' in summary['push_reason']
  model_dir, = glob.glob(os.path.join(config.output_dir, 'pipeline_root', 'SimCLRTrainer',
                                      'model', '*', 'Format-Serving'))
  import tensorflow as tf
  serve = tf.saved_model.load(model_dir).signatures['serving_default']
  digit = sorted(glob.glob(os.path.join(mnist_subset, '3', '*.png')))[0]
  assert serve(images=tf.constant([open(digit, 'rb').read()]))['embedding'].shape[0] == 1
  serving = os.path.join(config.output_dir, 'serving')
  assert not glob.glob(os.path.join(serving, '*', '[0-9]*'))


def test_tfx_cli_local_flow_compiles_the_same_dag(local_run, mnist_subset, tmp_path):
  """`tfx pipeline create` + `tfx run create` on pipeline/local_runner.py, as TFX users do, into
  the shared smoke run's output folder with the same settings: the DAG the tfx CLI builds is
  the same one, so every data and training step is a cache hit of the earlier runs."""
  import subprocess
  import sys
  config, first, metadata_path = local_run
  tfx_cli = os.path.join(os.path.dirname(sys.executable), 'tfx')
  same = ';'.join(f'{k}={v}' for k, v in LOCAL_RUN_FINETUNE.items())
  env = dict(os.environ, LOCAL_HOME=str(tmp_path / 'tfx_home'), SIMCLR_TFX_PRESET='smoke',
             SIMCLR_TFX_DATA_DIR=mnist_subset, SIMCLR_TFX_OUTPUT=config.output_dir,
             SIMCLR_TFX_SET=same)
  for command in (['pipeline', 'create', '--engine', 'local', '--pipeline_path',
                   'pipeline/local_runner.py'],
                  ['run', 'create', '--engine', 'local', '--pipeline_name', 'simclr-tfx']):
    result = subprocess.run([tfx_cli, *command], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  executions = executions_by_component(metadata_path)
  states = {c: e['state'] for c, e in executions.items()}
  assert sorted(states) == sorted(NODES)
  assert all(states[c] == 'CACHED' for c in ('ImageIngest', 'DualViewTransform',
                                             'SimCLRTrainer', 'EdgeExport')), states
  # The evaluator reruns only where its baseline changed since the last run (not when the
  # second identical run above came first), and then so does the Pusher.
  assert states['LinearEvaluator'] in ('CACHED', 'COMPLETE') and states['Pusher'] in (
      'CACHED', 'COMPLETE'), states
  pushed = executions['Pusher']['outputs']['pushed_model'][0]['properties']
  assert pushed['pushed_version'] == first['pushed_version']  # already served: nothing new


def test_warm_start_from_latest_blessed_with_bfloat16_a_negatives_queue_and_micro_batches(
    three_runs, mnist_subset):
  out, first, blessed_run, third = three_runs
  executions = executions_by_component(first['metadata'], first['run_id'])
  assert first['pushed'] and 'latest_blessed_model_resolver' in executions
  assert executions['SimCLRTrainer']['inputs'].get('base_model') is None  # nothing blessed yet
  baseline = executions_by_component(blessed_run['metadata'], blessed_run['run_id'])[
      'SimCLRTrainer']['outputs']['model'][0]  # the latest blessed one when the third ran

  # The third run also demands an impossible gain over the latest blessed model (a max drop of
  # -1 top-1), so the comparison with the baseline, not the threshold, must refuse it.
  executions = executions_by_component(third['metadata'], third['run_id'])
  trainer = executions['SimCLRTrainer']
  assert trainer['state'] == 'COMPLETE'
  assert trainer['inputs']['base_model'][0]['id'] == baseline['id']
  model = trainer['outputs']['model'][0]
  assert model['properties']['warm_started_from'] == baseline['uri']
  assert model['properties']['micro_batch_size'] == 8  # gradient-cached, with the queue
  assert np.isfinite(model['properties']['final_loss'])
  evaluator = executions['LinearEvaluator']
  assert evaluator['inputs']['baseline_model'][0]['id'] == baseline['id']
  with open(os.path.join(evaluator['outputs']['evaluation'][0]['uri'], 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['baseline']['model_uri'] == baseline['uri']
  assert 0.0 <= metrics['baseline_linear_top1'] <= 1.0
  assert not metrics['blessed'] and 'worse than the latest blessed model' in metrics[
      'blessing_reason']
  assert not third['pushed'] and 'latest blessed model' in third['push_reason']
  assert push.versions(os.path.join(str(out), 'serving', 'simclr_encoder')) == sorted(
      [first['pushed_version'], blessed_run['pushed_version']])
  serve = tf.saved_model.load(path_utils.serving_model_path(model['uri'])).signatures[
      'serving_default']
  digit = sorted(glob.glob(os.path.join(mnist_subset, '*', '*.png')))[0]
  out_tensors = serve(images=tf.constant([open(digit, 'rb').read()]))
  assert out_tensors['embedding'].dtype == tf.float32  # bfloat16 inside, float32 out
  assert np.isfinite(out_tensors['embedding'].numpy()).all()
  # embedding_stages=2, embedding_pool=avg_max: the last two stages' average and max pools
  # (resnet_small x0.25: 2 x (16 + 32) channels), the head still on h (32); changing them kept
  # the warm start (no new weights).
  assert out_tensors['embedding'].shape == (1, 96) and out_tensors['projection'].shape[0] == 1
  assert (model['properties']['embedding_dim'], model['properties']['embedding_stages'],
          model['properties']['embedding_pool']) == (96, 2, 'avg_max')
  assert metrics['embedding_dim'] == 96  # what the probe read


@pytest.fixture(scope='module')
def variant_run(mnist_subset, tmp_path_factory):
  """One run of the settings the shared smoke run leaves at their defaults: float16 with loss
  scaling, an XLA train step, SGD with sqrt scaling, a 3-layer head, the decoupled loss on
  multi-crop views, and an int8 target no model can meet."""
  return runner.run_pipeline(smoke_config(
      mnist_subset, tmp_path_factory.mktemp('variant'), precision='mixed_float16',
      jit_compile='true', optimizer='sgd', lr_scaling='sqrt', learning_rate=0.05, head_layers=3,
      contrastive_loss='dcl', local_crops=2, local_crop_size=8, tflite_min_cosine_int8=1.5),
      engine='local')


def test_float16_with_loss_scaling_and_xla_train_step_on_the_decoupled_multi_crop_loss(
    variant_run):
  summary = variant_run
  executions = executions_by_component(summary['metadata'])
  trainer = executions['SimCLRTrainer']
  assert trainer['state'] == 'COMPLETE'
  model = trainer['outputs']['model'][0]
  assert np.isfinite(model['properties']['final_loss'])
  assert model['properties']['contrastive_loss'] == 'dcl'
  assert model['properties']['local_crops'] == 2
  graph = executions['DualViewTransform']['outputs']['transform_graph'][0]
  assert json.loads(graph['properties']['augmentation_policy'])['local_crops'] == {
      'count': 2, 'size': 8, 'scale': [0.1, 0.4]}
  from PIL import Image
  with Image.open(os.path.join(graph['uri'], 'preview.png')) as preview:
    assert preview.width == 5 * 96 + 6 * 4  # original, two views, two local crops
  assert summary['pushed']


def test_tflite_models_pushed_with_parity_and_embed_cli(local_run, mnist_subset):
  """Both TFLite formats ship inside the pushed version, agree with the SavedModel, and run
  from the CLI."""
  import subprocess
  import sys
  from components.edge_export import tflite
  config, summary, metadata_path = local_run
  edge = executions_by_component(metadata_path)['EdgeExport']['outputs']['edge_model'][0]
  assert edge['properties']['float32_accepted'] == 1
  tflite_dir = os.path.join(summary['pushed_destination'], 'tflite')
  for name in ('encoder.tflite', 'preprocessing.json', 'parity.json'):
    assert os.path.isfile(os.path.join(tflite_dir, name)), name
  with open(os.path.join(tflite_dir, 'parity.json')) as f:
    parity = json.load(f)
  assert parity['float32']['mean_cosine'] >= 0.999 and parity['int8']['mean_cosine'] >= 0.98
  assert parity['int8']['bytes'] < parity['float32']['bytes']
  # The int8 decision follows its targets, and the file ships exactly when accepted.
  targets = parity['targets']
  expected = (parity['int8']['mean_cosine'] >= targets['min_cosine_int8'] and
              parity['probe_top1_drop'] <= targets['max_top1_drop'])
  assert parity['int8']['accepted'] == expected == bool(edge['properties']['int8_accepted'])
  assert os.path.isfile(os.path.join(tflite_dir, 'encoder_int8.tflite')) == expected

  digits = sorted(glob.glob(os.path.join(mnist_subset, '*', '*.png')))[:4]
  served = tf.saved_model.load(summary['pushed_destination']).signatures['serving_default'](
      images=tf.constant([open(p, 'rb').read() for p in digits]))['embedding'].numpy()
  name = 'encoder_int8.tflite' if expected else 'encoder.tflite'
  int8 = tflite.TFLiteEncoder(os.path.join(tflite_dir, name))
  on_device = int8.embed(tflite.decode_pixels([open(p, 'rb').read() for p in digits],
                                              int8.image_size))
  assert tflite.cosine(on_device, served).min() > 0.95

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-m', 'simclr_tools.cli', 'embed', '--tflite',
                           os.path.join(tflite_dir, 'encoder.tflite'), *digits[:2]], cwd=repo,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(result.stdout)
  np.testing.assert_allclose(np.array(rows[0]['embedding']), served[0], rtol=1e-3, atol=1e-3)


def test_int8_that_misses_its_target_is_not_pushed(variant_run):
  summary = variant_run
  edge = executions_by_component(summary['metadata'])['EdgeExport']['outputs']['edge_model'][0]
  assert edge['properties']['int8_accepted'] == 0
  assert 'mean cosine' in edge['properties']['int8_reason'] and '< 1.5' in edge['properties']['int8_reason']
  tflite_dir = os.path.join(summary['pushed_destination'], 'tflite')
  assert os.path.isfile(os.path.join(tflite_dir, 'encoder.tflite'))
  assert not os.path.exists(os.path.join(tflite_dir, 'encoder_int8.tflite'))
  pushed = executions_by_component(summary['metadata'])['Pusher']['outputs']['pushed_model'][0]
  assert 'encoder_int8.tflite NOT pushed: mean cosine' in pushed['properties']['edge_models']
