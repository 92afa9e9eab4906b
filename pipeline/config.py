"""The one configuration object of a simclr-tfx run.

Defaults are the embedded MNIST demo. Every field can be overridden from a YAML/JSON file
(`--config`), a named preset (`--preset`) or `--set name=value`; values are type-checked and
range-checked before any work starts, so a typo fails in a second instead of an hour into a run.

PipelineConfig is derived from the components' parameter classes (components/<name>/params.py),
which own each setting's default and checks, plus RunSettings below for where the run reads and
writes. A setting's key is its field name in one of those classes; the DAG hands each component
its own params with `<Params>.of(config)`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Iterable, List, Optional

from components import baseline, limits
from components.classifier_evaluator.params import ClassifierEvaluatorParams
from components.dual_view_transform.params import TransformParams
from components.edge_export.params import EdgeExportParams
from components.errors import ConfigError
from components.fine_tuner.params import FineTunerParams
from components.image_ingest.params import IngestParams
from components.linear_evaluator.params import EvaluatorParams
from components.params import ComponentParams, check
from components.pusher.params import PusherParams
from components.simclr_trainer import contract as trainer_contract
from components.simclr_trainer.params import TrainerParams

COMPONENT_PARAMS = (IngestParams, TransformParams, TrainerParams, EvaluatorParams,
                    FineTunerParams, ClassifierEvaluatorParams, EdgeExportParams, PusherParams)


@dataclasses.dataclass
class RunSettings(ComponentParams):
  """Where a run reads and writes, and how the DAG is wired: no component's own setting."""
  pipeline_name: str = 'simclr-tfx'
  data_dir: str = ''  # folder of images; empty = the embedded demo data set
  output_dir: str = 'out'  # metadata.sqlite, pipeline_root/, serving/ go under here
  # TF Serving's model base folder; empty = <output_dir>/serving. Several pipelines may share
  # one and push at the same time (a lock orders the pushes). A POSIX path: local disk or a
  # mounted volume, not an object-store URI (a push needs atomic renames and a file lock).
  serving_dir: str = ''
  enable_cache: bool = True
  # Extra Beam options for the data components (e.g. runner, direct_num_workers).
  beam_pipeline_args: str = '--runner=DirectRunner --direct_running_mode=in_memory'
  # Added to beam_pipeline_args for one data component only (e.g. its own machine type or
  # worker count on Dataflow; docs/scale-out.md).
  ingest_beam_args: str = ''
  transform_beam_args: str = ''
  embed_beam_args: str = ''
  warm_start: bool = False  # start from the latest blessed encoder of this pipeline, if any
  # Where the warm start and the evaluator's baseline find the latest blessed model
  # (components/baseline.py): `metadata` (a resolver node's ML Metadata query) or `serving`
  # (the serving folder's newest pushed version; what `compile` uses for Kubeflow, whose
  # open-source orchestrator does not run TFX's resolver).
  baseline_from: str = 'metadata'

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, limits.is_safe_name(self.pipeline_name),
          limits.unsafe_name_message('pipeline_name', self.pipeline_name))
    check(found, '://' not in self.serving_dir,
          f'serving_dir must be a folder on a POSIX file system (local disk or a mounted '
          f'volume), got the URI {self.serving_dir!r}: a push publishes a version by an atomic '
          'rename under a file lock, which object stores do not offer; use a mounted volume, or '
          'leave serving_dir empty for <output_dir>/serving')
    check(found, self.baseline_from in baseline.SOURCES,
          f'baseline_from must be one of {list(baseline.SOURCES)}, got {self.baseline_from!r}')
    check(found, not (self.baseline_from == 'serving' and self.enable_cache),
          'baseline_from=serving needs enable_cache=false: the cache cannot see a version '
          'pushed since, and would replay the old baseline or warm start')
    return found


@dataclasses.dataclass
class PipelineConfig(RunSettings, PusherParams, EdgeExportParams, ClassifierEvaluatorParams,
                     FineTunerParams, EvaluatorParams, TrainerParams, TransformParams,
                     IngestParams):
  """Every setting of a run: the fields of RunSettings and of each component's params."""

  def validate(self) -> 'PipelineConfig':
    """Raises ConfigError naming every impossible value at once."""
    found: List[str] = []
    for part in (RunSettings, *COMPONENT_PARAMS):
      found += part.problems(self)
    check(found, not (self.local_crops and self.negatives_queue_size),
          'local_crops and negatives_queue_size cannot be combined; set one of them to 0')
    check(found, not (self.local_crops and self.micro_batch_size),
          'local_crops and micro_batch_size (gradient caching) cannot be combined; set one of '
          'them to 0')
    if found:
      raise ConfigError('invalid configuration:\n  - ' + '\n  - '.join(found))
    return self


# Named presets: partial overrides applied on top of the defaults (before --config / --set).
PRESETS: Dict[str, Dict[str, Any]] = {
    # `make run`: the embedded MNIST demo as this project's users have their data, a tenth of
    # the train images labelled; the classifiers fine-tune on those labels.
    'demo': {'labelled_fraction': 0.1},
    # A few steps on tiny images: for tests and smoke checks, not for quality.
    'smoke': {'image_size': 16, 'batch_size': 32, 'train_steps': 3, 'epochs': 1,
              'knn_monitor_every_epochs': 0, 'tflite_calibration_images': 20,
              # 40 parity images: one flipped prediction is 2.5 points, so the 1-point int8
              # probe target would be decided by noise.
              'tflite_parity_images': 40, 'tflite_max_top1_drop': 0.1,
              'projection_dim': 16, 'width_multiplier': 0.25, 'checkpoint_every_steps': 2,
              'bless_min_linear_top1': 0.0, 'knn_k': 5, 'labelled_fraction': 1.0,
              # The classifier stages are off; a test that checks them turns them on, tiny.
              'finetune': False, 'finetune_epochs': 2, 'distill_epochs': 1,
              'finetune_batch_size': 16, 'bless_min_classifier_top1': 0.0,
              'classifier_top_k': 3},
    # Any folder of small photos, a first look in minutes on a CPU: the demo's small ResNet in
    # bfloat16 where the CPU has it natively (precision auto), with the photo augmentations
    # (flips, colour strength 0.5).
    'cpu-quick': {'backbone': 'resnet_small', 'image_size': 32, 'batch_size': 256,
                  'epochs': 15, 'precision': 'auto', 'temperature': 0.2,
                  'color_jitter_strength': 0.5, 'hflip': True, 'knn_monitor_every_epochs': 5},
    # Larger natural photos (96 px; a GPU or many cores): the SimCLR paper's ImageNet recipe,
    # scaled down: ResNet-18, standard stem, crops down to 8% of the image, colour strength 1,
    # blur on, temperature 0.1, LARS 0.3 x batch/256, 100 epochs. Not tuned on this machine,
    # which has no such data set; a starting point, stated as such in the README.
    'imagenet-like': {'backbone': 'resnet18', 'image_size': 96, 'batch_size': 256,
                      'epochs': 100, 'precision': 'auto', 'temperature': 0.1,
                      'learning_rate': 0.3, 'lr_scaling': 'linear', 'crop_scale_min': 0.08,
                      'color_jitter_strength': 1.0, 'hflip': True, 'warmup_fraction': 0.1,
                      'head_layers': 2, 'knn_monitor_every_epochs': 10},
    # CIFAR-10-like photos (32 px, 10 classes, ~20,000 images), pretrained within 30 minutes on
    # a 2-core CPU. Each choice and what it is for (the measurements behind them:
    # docs/benchmarks.md, "Current figures" and "How the cifar preset was chosen"):
    # - resnet18 at width 0.5, CIFAR stem: deeper than resnet_small, and at equal minutes depth
    #   pays more than the steps it costs;
    # - precision auto: bf16 only where the CPU has it natively (emulated bf16 is slower than
    #   float32);
    # - train_minutes 29.5 fixes the step count to the pace of the machine that trains; epochs
    #   64 is only a cap (the planner keeps 5% of the budget back);
    # - train_crop_size 16, served at 32 px (FixRes): smaller crops buy more steps per minute;
    # - embedding_stages 4 with embedding_pool avg_max: the probe and serving read the average
    #   and max pools of all four stages (32+64+128+256 = 480 numbers each, 960 in all), since a
    #   short pretraining leaves the last stage least trained; no new weights;
    # - temperature 0.1; batch 256 (510 negatives per anchor); LARS with 5% warmup, peak rate
    #   4.0 (rates 3 to 5 beat 1 and 2; 4.0 against 3.0 is within run-to-run noise);
    # - colour strength 0.5, no blur, flips: the SimCLR CIFAR recipe's augmentations;
    # - nt_xent and no local crops: the alternatives did not score higher in this budget;
    # - eval_percent 5 and labelled_fraction 0.1: most images pretrain, and the probe gets the
    #   few labels this preset is for; bless_min_linear_top1 0.3 is a bar well above chance;
    # - keep_checkpoints 0 (every 185 steps): `make bench-quality` probes each checkpoint.
    'cifar': {'backbone': 'resnet18', 'width_multiplier': 0.5, 'image_size': 32,
              'train_crop_size': 16, 'batch_size': 256, 'epochs': 64, 'train_minutes': 29.5,
              'precision': 'auto', 'optimizer': 'lars', 'learning_rate': 4.0,
              'lr_scaling': 'linear', 'weight_decay': 1e-6, 'warmup_fraction': 0.05,
              'temperature': 0.1, 'color_jitter_strength': 0.5, 'crop_scale_min': 0.2,
              'hflip': True, 'eval_percent': 5, 'labelled_fraction': 0.1,
              'knn_monitor_every_epochs': 5, 'checkpoint_every_steps': 185, 'keep_checkpoints': 0,
              'bless_min_linear_top1': 0.3, 'embedding_stages': 4, 'embedding_pool': 'avg_max',
              # SimCLRv2's stages after pretraining, within 10 more minutes on 2 cores:
              # fine-tune 2.5, distil 3.5, the supervised comparison 2.5 (the same budget as
              # the fine-tuning); the epochs are only caps. The new layer starts as the probe
              # (whose features are good here), and LARS keeps each layer's steps in
              # proportion to its weights (SGD's steps at these rates moved the probe-started
              # network away from the probe's answers: docs/benchmarks.md, bench-finetune).
              'finetune_epochs': 200, 'finetune_minutes': 2.5, 'distill_epochs': 20,
              'distill_minutes': 3.5, 'bless_min_classifier_top1': 0.3,
              'finetune_init': 'probe', 'finetune_optimizer': 'lars',
              'finetune_learning_rate': 0.5, 'distill_learning_rate': 0.1},
}


def absolute_path(path: str) -> str:
  """Local paths are made absolute (components run in other working folders); URIs such as
  gs://bucket/root are left alone."""
  return path if '://' in path else os.path.abspath(path)


def paths(config: PipelineConfig) -> dict:
  """Where a run of `config` writes: a function of the config alone, so that an entry point
  checks and locks OUT before it imports TFX."""
  out = absolute_path(config.output_dir)
  return {
      'output': out,
      'metadata': os.path.join(out, 'metadata.sqlite'),
      'pipeline_root': os.path.join(out, 'pipeline_root'),
      'checkpoints': os.path.join(out, 'pipeline_root', trainer_contract.CHECKPOINTS_DIR),
      'serving': (os.path.abspath(config.serving_dir) if config.serving_dir
                  else os.path.join(out, 'serving')),
  }


def _coerce(name: str, field_type: Any, value: Any) -> Any:
  """Converts a --set string (or a file value) to the field's type, strictly."""
  type_name = field_type if isinstance(field_type, str) else field_type.__name__
  if type_name == 'bool':
    if isinstance(value, bool):
      return value
    if isinstance(value, str) and value.lower() in ('true', '1', 'yes', 'on'):
      return True
    if isinstance(value, str) and value.lower() in ('false', '0', 'no', 'off'):
      return False
    raise ConfigError(f'{name} expects true/false, got {value!r}')
  if type_name == 'int':
    if isinstance(value, bool):
      raise ConfigError(f'{name} expects an integer, got {value!r}')
    if isinstance(value, int):
      return value
    try:
      return int(str(value), 10)
    except ValueError:
      raise ConfigError(f'{name} expects an integer, got {value!r}') from None
  if type_name == 'float':
    if isinstance(value, bool):
      raise ConfigError(f'{name} expects a number, got {value!r}')
    try:
      return float(value)
    except (TypeError, ValueError):
      raise ConfigError(f'{name} expects a number, got {value!r}') from None
  if type_name == 'str':
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
      raise ConfigError(f'{name} expects a string, got {value!r}')
    return str(value)
  raise ConfigError(f'{name}: unsupported field type {type_name}')


def apply_overrides(config: PipelineConfig, overrides: Dict[str, Any],
                    source: str) -> PipelineConfig:
  fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f'unknown config key(s) {unknown} in {source}; '
                      f'known keys: {", ".join(sorted(fields))}')
  changes = {k: _coerce(k, fields[k].type, v) for k, v in overrides.items()}
  return dataclasses.replace(config, **changes)


def parse_set_args(pairs: Iterable[str]) -> Dict[str, str]:
  result = {}
  for pair in pairs:
    if '=' not in pair:
      raise ConfigError(f'--set expects name=value, got {pair!r}')
    key, value = pair.split('=', 1)
    result[key.strip()] = value.strip()
  return result


def load_config_file(path: str) -> Dict[str, Any]:
  if not os.path.isfile(path):
    raise ConfigError(f'config file not found: {path}')
  with open(path, encoding='utf-8') as f:
    text = f.read()
  try:
    if path.endswith('.json'):
      data = json.loads(text)
    else:
      import yaml  # pylint: disable=g-import-not-at-top
      data = yaml.safe_load(text)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'cannot parse config file {path}: {e}') from None
  if data is None:
    data = {}
  if not isinstance(data, dict):
    raise ConfigError(f'config file {path} must hold a mapping of name: value')
  return data


def build_config(preset: Optional[str] = None, config_file: Optional[str] = None,
                 set_args: Iterable[str] = (), **explicit: Any) -> PipelineConfig:
  """Defaults <- preset <- config file <- explicit keyword values <- --set; then validated."""
  config = PipelineConfig()
  if preset:
    if preset not in PRESETS:
      raise ConfigError(f'unknown preset {preset!r}; choose from {sorted(PRESETS)}')
    config = apply_overrides(config, PRESETS[preset], f'preset {preset!r}')
  if config_file:
    config = apply_overrides(config, load_config_file(config_file), config_file)
  explicit = {k: v for k, v in explicit.items() if v is not None}
  if explicit:
    config = apply_overrides(config, explicit, 'command-line options')
  config = apply_overrides(config, parse_set_args(set_args), '--set')
  return config.validate()
