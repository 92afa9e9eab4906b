"""Config: --set type checking, files, presets, and clear errors before any work starts."""
import json
import os

import pytest

from pipeline.config import ConfigError, PipelineConfig, build_config
from tests.conftest import run_cli, run_cli_reporting_imports


def test_defaults_are_valid_and_set_overrides_with_types():
  config = build_config(set_args=['image_size=48', 'batch_size=64', 'epochs=3',
                                  'train_steps=10', 'backbone=resnet18', 'temperature=0.1',
                                  'learning_rate=0.3', 'model_name=defects',
                                  'bless_min_linear_top1=0.7', 'hflip=true'])
  assert (config.image_size, config.batch_size, config.epochs, config.train_steps) == (48, 64, 3, 10)
  assert config.backbone == 'resnet18' and config.model_name == 'defects'
  assert config.temperature == 0.1 and config.bless_min_linear_top1 == 0.7 and config.hflip is True
  assert PipelineConfig().validate() == PipelineConfig()


@pytest.mark.parametrize('pair,message', [
    ('batch_size=big', 'batch_size expects an integer'),
    ('image_size=3.5', 'image_size expects an integer'),
    ('temperature=warm', 'temperature expects a number'),
    ('hflip=maybe', 'hflip expects true/false'),
    ('no_such_key=1', "unknown config key(s) ['no_such_key']"),
    ('batch_size', 'expects name=value'),
])
def test_bad_set_values_are_named(pair, message):
  with pytest.raises(ConfigError, match=None) as error:
    build_config(set_args=[pair])
  assert message in str(error.value)


@pytest.mark.parametrize('pair,message', [
    ('batch_size=0', 'batch_size must be >= 2'),
    ('image_size=7', 'image_size must be >= 16'),
    ('temperature=0', 'temperature must be > 0'),
    ('temperature=-1', 'temperature must be > 0'),
    ('bless_min_linear_top1=1.5', 'bless_min_linear_top1 is a fraction'),
    ('backbone=vgg', 'backbone must be one of'),
    ('eval_percent=100', 'eval_percent must be in 1..99'),
    ('embedding_stages=0', 'embedding_stages must be 1..3 for resnet_small'),
    ('embedding_stages=4', 'embedding_stages must be 1..3 for resnet_small'),
    ('embedding_pool=sum', 'embedding_pool must be avg or avg_max'),
    ('contrastive_loss=infonce', "contrastive_loss must be one of ('nt_xent', 'dcl')"),
])
def test_impossible_values_are_refused(pair, message):
  with pytest.raises(ConfigError) as error:
    build_config(set_args=[pair])
  assert message in str(error.value)


def test_every_problem_is_reported_at_once():
  with pytest.raises(ConfigError) as error:
    build_config(set_args=['batch_size=0', 'temperature=0'])
  assert 'batch_size' in str(error.value) and 'temperature' in str(error.value)


def test_config_files_yaml_and_json_then_set_wins(tmp_path):
  yaml_file = tmp_path / 'c.yaml'
  yaml_file.write_text('image_size: 40\nbatch_size: 16\n')
  json_file = tmp_path / 'c.json'
  json_file.write_text(json.dumps({'image_size': 20, 'temperature': 0.3}))
  assert build_config(config_file=str(yaml_file)).image_size == 40
  config = build_config(config_file=str(json_file), set_args=['image_size=24'])
  assert (config.image_size, config.temperature) == (24, 0.3)
  bad = tmp_path / 'bad.yaml'
  bad.write_text('batch_size: [1, 2]\n')
  with pytest.raises(ConfigError, match='batch_size expects an integer'):
    build_config(config_file=str(bad))
  with pytest.raises(ConfigError, match='config file not found'):
    build_config(config_file=str(tmp_path / 'missing.yaml'))


def test_presets():
  assert build_config(preset='smoke').train_steps > 0
  from pipeline.config import PRESETS
  for name in PRESETS:  # every preset is valid on its own and under --set overrides
    build_config(preset=name, set_args=['seed=3'])
  cifar = build_config(preset='cifar', set_args=['epochs=2'])
  assert (cifar.backbone, cifar.width_multiplier, cifar.epochs) == ('resnet18', 0.5, 2)
  assert cifar.hflip and cifar.precision == 'auto' and cifar.keep_checkpoints == 0
  # The 30-minute pretraining budget, on any CPU: the planner keeps 5% back.
  assert cifar.train_minutes == 29.5
  assert cifar.embedding_stages == 4 and build_config().embedding_stages == 1
  assert cifar.embedding_pool == 'avg_max' and build_config().embedding_pool == 'avg'
  assert cifar.local_crops == 0 == build_config().local_crops
  assert build_config(set_args=['embedding_pool=avg_max']).embedding_pool == 'avg_max'
  with pytest.raises(ConfigError, match='train_minutes must be >= 0'):
    build_config(set_args=['train_minutes=-1'])
  with pytest.raises(ConfigError, match='train_crop_size'):
    build_config(set_args=['image_size=32', 'train_crop_size=40'])
  with pytest.raises(ConfigError, match='unknown preset'):
    build_config(preset='nope')


def test_cli_refuses_bad_config_before_any_work(tmp_path):
  out = tmp_path / 'out'
  result = run_cli('run', '--output', str(out), '--set', 'batch_size=0', '--set', 'image_size=7')
  assert result.returncode == 2
  assert 'batch_size must be >= 2' in result.stderr and 'image_size must be >= 16' in result.stderr
  assert not out.exists()  # nothing was started


def test_cli_missing_or_empty_data_dir_is_a_clear_error_before_tfx_is_imported(tmp_path):
  (tmp_path / 'empty' / 'class_a').mkdir(parents=True)  # folders, but not one file
  for folder, message in (('nope', 'data directory does not exist'),
                          ('empty', 'holds no files to ingest')):
    result, report = run_cli_reporting_imports(
        'run', '--output', str(tmp_path / 'out'), '--data-dir', str(tmp_path / folder))
    assert report == {'code': 1, 'tensorflow': False, 'tfx': False}, result.stderr[-2000:]
    assert message in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'out' / 'pipeline_root').exists()  # no component started
  from components.image_ingest import images  # a manifest may list files outside the folder
  images.check_data_dir(str(tmp_path / 'empty'), manifest=str(tmp_path / 'list.csv'))


def test_cli_help_for_each_command():
  for command in ([], ['run'], ['lineage'], ['embed']):
    result = run_cli(*command, '--help', timeout=120)
    assert result.returncode == 0 and 'usage: simclr-tfx' in result.stdout


def test_embedding_stages_bound_matches_each_backbones_stage_count():
  """The config checks embedding_stages without importing Keras; its bound must be the
  model's own stage count, or a valid value would fail only inside the trainer."""
  from components.simclr_trainer import model
  from components.simclr_trainer.params import BACKBONES
  assert BACKBONES == model.BACKBONES
  for backbone in BACKBONES:
    stages = model.stage_count(backbone)
    build_config(set_args=[f'backbone={backbone}', f'embedding_stages={stages}'])
    with pytest.raises(ConfigError, match=f'embedding_stages must be 1..{stages}'):
      build_config(set_args=[f'backbone={backbone}', f'embedding_stages={stages + 1}'])


def test_embedding_pool_choices_match_the_models():
  """The config checks embedding_pool without importing Keras; its choices must be the ones
  model.build_embedder accepts, or a valid value would fail only inside the trainer."""
  from components.simclr_trainer import model
  from components.simclr_trainer.params import EMBEDDING_POOLS
  assert EMBEDDING_POOLS == model.POOLS


def test_contrastive_loss_choices_match_the_losses():
  from components.simclr_trainer import losses
  from components.simclr_trainer.params import CONTRASTIVE_LOSSES
  assert CONTRASTIVE_LOSSES == losses.CONTRASTIVE_LOSSES


@pytest.mark.parametrize('sets,message', [
    (['local_crops=-1'], 'local_crops must be >= 0'),
    (['local_crops=2', 'local_crop_size=32'], 'local_crop_size must be 4..31'),
    (['local_crops=2', 'train_crop_size=16', 'local_crop_size=16'],
     'local_crop_size must be 4..15'),
    (['local_crops=2', 'local_crop_scale_min=0.5', 'local_crop_scale_max=0.4'],
     'local crop scales must satisfy'),
    (['local_crops=2', 'negatives_queue_size=256'],
     'local_crops and negatives_queue_size cannot be combined'),
    (['local_crops=2', 'micro_batch_size=32'],
     'local_crops and micro_batch_size (gradient caching) cannot be combined'),
])
def test_impossible_local_crops_are_refused(sets, message):
  with pytest.raises(ConfigError) as error:
    build_config(set_args=sets)
  assert message in str(error.value)
  # Unused local-crop settings are not checked while multi-crop is off.
  build_config(set_args=['local_crop_size=64', 'local_crop_scale_min=0.9'])


def test_local_crops_enter_the_policy_only_when_on():
  # A run without local crops must keep the policy (and so the run fingerprint) it had before
  # multi-crop existed: no key at all, not a zero count.
  plain = build_config(preset='cifar').augmentation_policy()
  assert 'local_crops' not in plain
  multi = build_config(preset='cifar', set_args=[
      'local_crops=2', 'local_crop_size=8', 'local_crop_scale_min=0.1',
      'local_crop_scale_max=0.4']).augmentation_policy()
  assert multi['local_crops'] == {'count': 2, 'size': 8, 'scale': [0.1, 0.4]}
  assert {k: v for k, v in multi.items() if k != 'local_crops'} == plain
  # The benchmarks add or drop crops on a run's recorded policy through the same helper.
  from components.dual_view_transform.params import with_local_crops
  assert with_local_crops(multi, 0, 8, (0.1, 0.4)) == plain
  assert with_local_crops(plain, 2, 8, ('0.1', '0.4')) == multi
  assert 'local_crops' in multi  # the helper copies; it does not edit its argument


@pytest.mark.parametrize('key,value', [
    ('model_name', '.'), ('model_name', '..'), ('model_name', 'a/b'), ('model_name', '/abs'),
    ('model_name', ''), ('model_name', '.hidden'), ('model_name', 'x' * 101),
    ('pipeline_name', '../x'), ('pipeline_name', 'a\\b'), ('pipeline_name', 'a b'),
    ('pipeline_name', 'trailing.'),
])
def test_unsafe_names_are_refused(key, value):
  with pytest.raises(ConfigError) as error:
    build_config(set_args=[f'{key}={value}'])
  assert f'{key} must be a safe name' in str(error.value)


def test_safe_names_pass():
  config = build_config(set_args=['model_name=defects_v2.1', 'pipeline_name=Line-3_cam.a'])
  assert (config.model_name, config.pipeline_name) == ('defects_v2.1', 'Line-3_cam.a')


def test_cli_refuses_an_unsafe_model_name_before_touching_anything(tmp_path):
  """model_name=.. used to make OUT itself the model folder, whose retention then deleted the
  integer-named folders of OUT; now the run exits 2, naming the key, before any work."""
  out = tmp_path / 'out'
  for year in range(2019, 2025):
    (out / str(year)).mkdir(parents=True)
  result = run_cli('run', '--output', str(out), '--set', 'model_name=..')
  assert result.returncode == 2 and 'model_name must be a safe name' in result.stderr
  assert sorted(os.listdir(out)) == [str(y) for y in range(2019, 2025)]


def test_a_uri_serving_dir_is_refused_and_a_path_is_used():
  with pytest.raises(ConfigError, match='serving_dir must be a folder on a POSIX file system'):
    build_config(set_args=['serving_dir=gs://bucket/serving'])
  from pipeline.config import paths
  config = build_config(set_args=['serving_dir=/srv/models', 'output_dir=/tmp/o'])
  assert paths(config)['serving'] == '/srv/models'
  assert paths(build_config(output_dir='/tmp/o'))['serving'] == '/tmp/o/serving'


def test_each_setting_has_one_default_in_its_components_params(mnist_subset, tmp_path):
  """PipelineConfig is derived from the components' params classes, whose fields are disjoint
  (a setting belongs to one component), and the DAG hands each component exactly its own params
  as one JSON execution parameter, which from_json reads back equal."""
  import dataclasses
  from components.params import EXEC_PROPERTY
  from pipeline.config import COMPONENT_PARAMS, PipelineConfig, RunSettings
  from pipeline.pipeline import create_components
  owners = {}
  for cls in (RunSettings, *COMPONENT_PARAMS):
    for f in dataclasses.fields(cls):
      assert f.name not in owners, (f.name, owners.get(f.name), cls.__name__)
      owners[f.name] = cls
  assert set(owners) == {f.name for f in dataclasses.fields(PipelineConfig)}
  config = build_config(data_dir=mnist_subset, output_dir=str(tmp_path),
                        set_args=['serving_keep_versions=7', 'probe_fractions=0.5',
                                  'hflip=true', 'learning_rate=2.5', 'tflite_parity_images=9',
                                  'max_bad_fraction=0'])
  nodes = {c.id: c for c in create_components(config)}
  owner = {'ImageIngest': 'IngestParams', 'DualViewTransform': 'TransformParams',
           'SimCLRTrainer': 'TrainerParams', 'LinearEvaluator': 'EvaluatorParams',
           'FineTuner': 'FineTunerParams', 'ClassifierEvaluator': 'ClassifierEvaluatorParams',
           'EdgeExport': 'EdgeExportParams', 'Pusher': 'PusherParams'}
  by_name = {cls.__name__: cls for cls in COMPONENT_PARAMS}
  assert set(owner.values()) == set(by_name)
  for name, cls in ((node, by_name[params]) for node, params in owner.items()):
    spec = nodes[name].spec
    assert not spec.PARAMETERS[EXEC_PROPERTY].optional
    params = cls.from_json(nodes[name].exec_properties[EXEC_PROPERTY])
    expected = cls.of(config)
    if name == 'ImageIngest':  # made absolute by the DAG
      expected = dataclasses.replace(expected, manifest='')
    assert params == expected, name
  assert nodes['ImageIngest'].exec_properties[EXEC_PROPERTY].count('"max_bad_fraction": 0.0')


def test_params_json_is_checked_when_an_executor_reads_it():
  from components.errors import ConfigError as BaseConfigError
  from components.simclr_trainer.params import TrainerParams
  assert TrainerParams.from_json(TrainerParams(batch_size=64).to_json()).batch_size == 64
  with pytest.raises(BaseConfigError, match='batch_size must be >= 2'):
    TrainerParams.from_json('{"batch_size": 1}')
  with pytest.raises(BaseConfigError, match='unknown parameter'):
    TrainerParams.from_json('{"batch_sise": 64}')
  with pytest.raises(BaseConfigError, match='batch_size must be int'):
    TrainerParams.from_json('{"batch_size": "64"}')


@pytest.mark.parametrize('sets,message', [
    (['micro_batch_size=-1'], 'micro_batch_size must be >= 0'),
    (['batch_size=128', 'micro_batch_size=48'], 'micro_batch_size (48) must divide'),
    (['batch_size=128', 'trainer_workers=2', 'micro_batch_size=128'],
     'micro_batch_size (128) must divide'),
])
def test_a_micro_batch_that_does_not_divide_the_batch_is_refused(sets, message):
  with pytest.raises(ConfigError) as error:
    build_config(set_args=sets)
  assert message in str(error.value)
  build_config(set_args=['batch_size=128', 'trainer_workers=2', 'micro_batch_size=32'])
