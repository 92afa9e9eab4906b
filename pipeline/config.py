"""The one configuration object of a simclr-tfx run.

Defaults are the embedded MNIST demo. Every field can be overridden from a YAML/JSON file
(`--config`), a named preset (`--preset`) or `--set name=value`; values are type-checked and
range-checked before any work starts, so a typo fails in a second instead of an hour into a run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, Iterable, List, Optional

from components import limits
from components.errors import ConfigError
from components.simclr_trainer.hardware import PRECISIONS


@dataclasses.dataclass
class PipelineConfig:
  # --- where things are -------------------------------------------------------------------
  pipeline_name: str = 'simclr-tfx'
  data_dir: str = ''  # folder of images; empty = the embedded demo data set
  output_dir: str = 'out'  # metadata.sqlite, pipeline_root/, serving/ go under here
  model_name: str = 'simclr_encoder'  # <serving_dir>/<model_name>/<version>/
  # TF Serving's model base folder; empty = <output_dir>/serving. Several pipelines may share
  # one and push at the same time (a lock orders the pushes). A POSIX path: local disk or a
  # mounted volume, not an object-store URI (a push needs atomic renames and a file lock).
  serving_dir: str = ''
  enable_cache: bool = True

  # --- ingest -------------------------------------------------------------------------------
  eval_percent: int = 20  # share of images (by content hash) in the eval split
  labelled_fraction: float = 1.0  # class-balanced share of train labels the probe may use
  include_globs: str = ''  # comma-separated; empty = every file
  exclude_globs: str = ''  # comma-separated, e.g. '*.txt,thumbs/*'
  manifest: str = ''  # optional CSV of path,label (relative to data_dir) instead of folders
  min_side: int = 8  # images with a smaller side are quarantined
  # Declared width*height above this is quarantined from the header (never decoded); 1 up to
  # Pillow's bomb limit. Images above limits.MAX_DECODE_PIXELS but within it are downscaled.
  max_pixels: int = limits.PILLOW_BOMB_PIXELS
  # Bytes of one image file (or of one image in a TFRecord input) above this are quarantined
  # from the size alone, never read: bounds what one file can make ingest hold in memory.
  max_file_bytes: int = 268_435_456  # 256 MiB
  max_bad_fraction: float = 0.5  # fail the run when more inputs than this are unusable
  # Extra Beam options for the data components (e.g. runner, direct_num_workers).
  beam_pipeline_args: str = '--runner=DirectRunner --direct_running_mode=in_memory'

  # --- transform / augmentation (SimCLR policy) ---------------------------------------------
  image_size: int = 32
  # Side of the random-resized crops the trainer sees (0 = image_size). Smaller crops train
  # faster; the encoder is fully convolutional and is evaluated and served at image_size, which
  # suits crops trained below the test size (FixRes, Touvron et al. 2019).
  train_crop_size: int = 0
  crop_scale_min: float = 0.2  # random resized crop: area fraction range [min, 1]
  # Multi-crop (Caron et al. 2020, SwAV): besides the two views, this many small crops of
  # each image, local_crop_size px, of area fraction [local_crop_scale_min, _max]. Each is
  # paired with both views in the loss. 0 = off (plain SimCLR).
  local_crops: int = 0
  local_crop_size: int = 8
  local_crop_scale_min: float = 0.1
  local_crop_scale_max: float = 0.4
  color_jitter_strength: float = 0.5
  color_jitter_prob: float = 0.8
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  # The SimCLR CIFAR recipe uses no blur on small images: blur applies above 64 px only,
  # unless this is set.
  blur_at_small_sizes: bool = False
  solarize_prob: float = 0.0  # optional (BYOL-style); 0 = off
  hflip: bool = False  # digits are not mirror-symmetric; natural photos want True

  # --- model and training --------------------------------------------------------------------
  backbone: str = 'resnet_small'  # resnet_small | resnet18 | resnet34 | resnet50
  width_multiplier: float = 1.0
  head_layers: int = 2  # projection head MLP depth (SimCLR v1: 2, v2: 3)
  projection_dim: int = 128
  # What the probe, kNN and serving's `embedding` read: 1 = h, the last stage's pooled output
  # (SimCLR's protocol); k = the pooled outputs of the last k stages side by side (no new
  # weights, training unchanged). Helps short pretraining, whose later stages are least trained.
  embedding_stages: int = 1
  # How each of those stages is pooled: avg (global average; with embedding_stages=1 that is h)
  # or avg_max (global average and global max side by side: twice the numbers, still blind to
  # where in the frame a feature fires).
  embedding_pool: str = 'avg'
  batch_size: int = 128
  epochs: int = 10
  train_steps: int = 0  # > 0 overrides epochs
  # > 0: pretraining fits in this many minutes on the machine that trains. After the first 23
  # steps the measured pace fixes the step count (at most epochs' worth) and the schedule's
  # warmup and decay to it, and at step 123 the pace of steps 24 to 123 fixes them once more;
  # a slower stretch later stops training at the budget.
  train_minutes: float = 0.0
  temperature: float = 0.2
  # nt_xent (SimCLR) | dcl: the decoupled form, with the positive left out of the denominator.
  contrastive_loss: str = 'nt_xent'
  optimizer: str = 'lars'  # lars | sgd | adamw
  learning_rate: float = 1.0  # base rate, scaled by lr_scaling
  lr_scaling: str = 'linear'  # linear: base*batch/256 | sqrt: base*sqrt(batch)
  weight_decay: float = 1e-6
  warmup_fraction: float = 0.1
  checkpoint_every_steps: int = 100
  keep_checkpoints: int = 2  # newest checkpoints kept; 0 = all (to probe along training)
  seed: int = 42
  negatives_queue_size: int = 0  # > 0: MoCo-style queue of past projections as extra negatives
  # float32 | mixed_bfloat16 | mixed_float16 | auto: bf16 where the CPU or GPU has it, else
  # float16 on older tensor-core GPUs, else float32 (resolved on the machine that trains).
  precision: str = 'float32'
  jit_compile: bool = False  # XLA for the train step
  knn_monitor_every_epochs: int = 1  # kNN top-1 on labelled eval data in TensorBoard; 0 = off
  # auto | default | mirrored | multi_worker_mirrored (auto: TF_CONFIG -> multi-worker, several
  # local GPUs -> mirrored, else one device).
  distribution_strategy: str = 'auto'
  warm_start: bool = False  # start from the latest blessed encoder of this pipeline, if any

  # --- evaluation and blessing ---------------------------------------------------------------
  bless_min_linear_top1: float = 0.5
  # Compare with the latest blessed model of this pipeline (measured on the same data in the
  # same execution): bless only if linear_top1 >= baseline - this. Negative: demand a gain.
  bless_compare_with_baseline: bool = True
  bless_max_drop_vs_baseline: float = 0.02
  probe_fractions: str = '0.01,0.1,1'  # of the labelled train records; 1 = headline numbers
  probe_context_baselines: bool = True  # also probe raw pixels and a random-init encoder
  knn_k: int = 200  # weighted kNN (cosine, temperature 0.1), as in the SimCLR/InstDisc papers

  # --- pushing to TF Serving ---------------------------------------------------------------------
  serving_keep_versions: int = 3  # older versions are retired after a push; 0 = keep all
  serving_warmup_images: int = 5  # real images in assets.extra/tf_serving_warmup_requests
  # The serving base path as the model server sees it, written into <serving>/models.config
  # (e.g. /models where the Kubernetes manifest mounts it); empty = the local serving folder.
  serving_config_base_path: str = ''

  # --- edge export (TensorFlow Lite) -----------------------------------------------------------
  edge_export: bool = True
  tflite_calibration_images: int = 300  # real train images calibrate the int8 model
  tflite_parity_images: int = 500  # held-out eval images for the parity check
  tflite_min_cosine_float: float = 0.999
  tflite_min_cosine_int8: float = 0.98
  tflite_max_top1_drop: float = 0.01  # int8 probe top-1 may be at most 1 point lower

  # ------------------------------------------------------------------------------------------
  def validate(self) -> 'PipelineConfig':
    """Raises ConfigError naming every impossible value at once."""
    problems: List[str] = []

    def need(ok: bool, message: str) -> None:
      if not ok:
        problems.append(message)

    for key in ('pipeline_name', 'model_name'):
      need(is_safe_name(getattr(self, key)),
           f'{key} must be a safe name: 1-{MAX_NAME_LENGTH} letters, digits, "_" or "-", with '
           f'"." allowed inside (no path separators, no "." or ".."), got '
           f'{getattr(self, key)!r}')
    need('://' not in self.serving_dir,
         f'serving_dir must be a folder on a POSIX file system (local disk or a mounted '
         f'volume), got the URI {self.serving_dir!r}: a push publishes a version by an atomic '
         'rename under a file lock, which object stores do not offer; use a mounted volume, or '
         'leave serving_dir empty for <output_dir>/serving')
    need(0 < self.eval_percent < 100, f'eval_percent must be in 1..99, got {self.eval_percent}')
    need(self.image_size >= 16, f'image_size must be >= 16 pixels, got {self.image_size}')
    need(self.train_crop_size == 0 or 8 <= self.train_crop_size <= self.image_size,
         f'train_crop_size must be 0 (= image_size) or 8..image_size ({self.image_size}), '
         f'got {self.train_crop_size}')
    need(0.0 < self.crop_scale_min <= 1.0,
         f'crop_scale_min must be in (0, 1], got {self.crop_scale_min}')
    need(self.local_crops >= 0, f'local_crops must be >= 0 (0 = off), got {self.local_crops}')
    if self.local_crops:
      crop = self.train_crop_size or self.image_size
      need(4 <= self.local_crop_size < crop,
           f'local_crop_size must be 4..{crop - 1} (smaller than the {crop} px training crops), '
           f'got {self.local_crop_size}')
      need(0.0 < self.local_crop_scale_min < self.local_crop_scale_max <= 1.0,
           'local crop scales must satisfy 0 < local_crop_scale_min < local_crop_scale_max <= 1, '
           f'got {self.local_crop_scale_min} and {self.local_crop_scale_max}')
      need(self.negatives_queue_size == 0,
           'local_crops and negatives_queue_size cannot be combined; set one of them to 0')
    need(self.color_jitter_strength >= 0, 'color_jitter_strength must be >= 0')
    need(0.0 < self.labelled_fraction <= 1.0,
         f'labelled_fraction must be in (0, 1], got {self.labelled_fraction}')
    need(self.min_side >= 1, f'min_side must be >= 1, got {self.min_side}')
    need(1 <= self.max_pixels <= limits.PILLOW_BOMB_PIXELS,
         f'max_pixels must be in 1..{limits.PILLOW_BOMB_PIXELS} (Pillow\'s decompression-bomb '
         f'limit; 0 no longer means "no limit"), got {self.max_pixels}')
    need(self.max_file_bytes >= 1, f'max_file_bytes must be >= 1, got {self.max_file_bytes}')
    need(0.0 <= self.max_bad_fraction <= 1.0,
         f'max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}')
    for name in ('color_jitter_prob', 'grayscale_prob', 'blur_prob', 'solarize_prob'):
      value = getattr(self, name)
      need(0.0 <= value <= 1.0, f'{name} must be a probability in [0, 1], got {value}')
    need(self.backbone in BACKBONES,
         f'backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}')
    need(self.width_multiplier > 0, 'width_multiplier must be > 0')
    need(self.projection_dim > 0, 'projection_dim must be > 0')
    stages = 3 if self.backbone == 'resnet_small' else 4
    need(1 <= self.embedding_stages <= stages,
         f'embedding_stages must be 1..{stages} for {self.backbone}, got {self.embedding_stages}')
    need(self.embedding_pool in EMBEDDING_POOLS,
         f'embedding_pool must be {" or ".join(EMBEDDING_POOLS)}, got {self.embedding_pool!r}')
    need(self.head_layers in (2, 3), f'head_layers must be 2 or 3, got {self.head_layers}')
    need(self.lr_scaling in ('linear', 'sqrt'),
         f'lr_scaling must be linear or sqrt, got {self.lr_scaling!r}')
    need(self.negatives_queue_size >= 0, 'negatives_queue_size must be >= 0')
    need(self.negatives_queue_size == 0 or self.negatives_queue_size % self.batch_size == 0,
         f'negatives_queue_size must be a multiple of batch_size ({self.batch_size})')
    need(self.precision in PRECISIONS,
         f'precision must be one of {list(PRECISIONS)}, got {self.precision!r}')
    need(self.knn_monitor_every_epochs >= 0, 'knn_monitor_every_epochs must be >= 0')
    need(self.batch_size >= 2, f'batch_size must be >= 2 (NT-Xent needs negatives), '
         f'got {self.batch_size}')
    need(self.epochs >= 1 or self.train_steps >= 1, 'set epochs >= 1 or train_steps >= 1')
    need(self.train_steps >= 0, f'train_steps must be >= 0, got {self.train_steps}')
    need(self.train_minutes >= 0,
         f'train_minutes must be >= 0 (0 = no time budget), got {self.train_minutes}')
    need(self.temperature > 0, f'temperature must be > 0, got {self.temperature}')
    need(self.contrastive_loss in CONTRASTIVE_LOSSES,
         f'contrastive_loss must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive_loss!r}')
    need(self.optimizer in OPTIMIZERS,
         f'optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}')
    need(self.distribution_strategy in STRATEGIES,
         f'distribution_strategy must be one of {list(STRATEGIES)}, '
         f'got {self.distribution_strategy!r}')
    need(self.learning_rate > 0, f'learning_rate must be > 0, got {self.learning_rate}')
    need(self.weight_decay >= 0, 'weight_decay must be >= 0')
    need(0 <= self.warmup_fraction < 1, 'warmup_fraction must be in [0, 1)')
    need(self.checkpoint_every_steps >= 1, 'checkpoint_every_steps must be >= 1')
    need(0.0 <= self.bless_min_linear_top1 <= 1.0,
         f'bless_min_linear_top1 is a fraction in [0, 1], got {self.bless_min_linear_top1}')
    need(self.knn_k >= 1, 'knn_k must be >= 1')
    need(self.keep_checkpoints >= 0, 'keep_checkpoints must be >= 0 (0 = keep all)')
    need(-1.0 <= self.bless_max_drop_vs_baseline <= 1.0,
         f'bless_max_drop_vs_baseline is a top-1 difference in [-1, 1], got '
         f'{self.bless_max_drop_vs_baseline}')
    try:
      fractions = [float(p) for p in self.probe_fractions.split(',') if p.strip()]
      need(all(0.0 < f <= 1.0 for f in fractions),
           f'probe_fractions must each be in (0, 1], got {self.probe_fractions!r}')
    except ValueError:
      need(False, f'probe_fractions must be comma-separated numbers, got {self.probe_fractions!r}')
    need(self.serving_keep_versions >= 0, 'serving_keep_versions must be >= 0 (0 = keep all)')
    need(self.serving_warmup_images >= 0, 'serving_warmup_images must be >= 0 (0 = none)')
    need(self.tflite_calibration_images >= 1, 'tflite_calibration_images must be >= 1')
    need(self.tflite_parity_images >= 1, 'tflite_parity_images must be >= 1')
    need(self.tflite_max_top1_drop >= 0, 'tflite_max_top1_drop must be >= 0')
    if problems:
      raise ConfigError('invalid configuration:\n  - ' + '\n  - '.join(problems))
    return self

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def augmentation_policy(self) -> Dict[str, Any]:
    """The SimCLR augmentation policy, as recorded with the transform artifact."""
    s = self.color_jitter_strength
    policy = {
        'image_size': self.image_size,
        'crop_size': self.train_crop_size or self.image_size,
        'random_resized_crop': {'scale': [self.crop_scale_min, 1.0], 'ratio': [3 / 4, 4 / 3]},
        'horizontal_flip': self.hflip,
        'color_jitter': {'strength': s, 'prob': self.color_jitter_prob,
                         'brightness': 0.8 * s, 'contrast': 0.8 * s,
                         'saturation': 0.8 * s, 'hue': 0.2 * s, 'random_order': True},
        'grayscale_prob': self.grayscale_prob,
        'gaussian_blur': {'prob': self.effective_blur_prob(), 'configured_prob': self.blur_prob,
                          'sigma': [0.1, 2.0], 'kernel_fraction': 0.1},
        'solarize': {'prob': self.solarize_prob, 'threshold': 0.5},
    }
    return with_local_crops(policy, self.local_crops, self.local_crop_size,
                            (self.local_crop_scale_min, self.local_crop_scale_max))

  def effective_blur_prob(self) -> float:
    return self.blur_prob if (self.image_size > 64 or self.blur_at_small_sizes) else 0.0


MAX_NAME_LENGTH = 100
# Letters, digits, '_' and '-'; '.' only inside: a name is one path component, never '.', '..'
# or a hidden file, so it cannot point a folder or a file outside where it is used.
_SAFE_NAME = re.compile(r'[A-Za-z0-9_-](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?')


def is_safe_name(name: str) -> bool:
  """True for a pipeline or model name that is one harmless path component."""
  return (isinstance(name, str) and len(name) <= MAX_NAME_LENGTH
          and _SAFE_NAME.fullmatch(name) is not None)


BACKBONES = ('resnet_small', 'resnet18', 'resnet34', 'resnet50')
OPTIMIZERS = ('lars', 'sgd', 'adamw')
STRATEGIES = ('auto', 'default', 'mirrored', 'multi_worker_mirrored')
# model.POOLS, kept here so the config is checked without importing Keras (a test pins the two).
EMBEDDING_POOLS = ('avg', 'avg_max')
CONTRASTIVE_LOSSES = ('nt_xent', 'dcl')  # losses.CONTRASTIVE_LOSSES, pinned by the same test

# Named presets: partial overrides applied on top of the defaults (before --config / --set).
PRESETS: Dict[str, Dict[str, Any]] = {
    'demo': {},
    # A few steps on tiny images: for tests and smoke checks, not for quality.
    'smoke': {'image_size': 16, 'batch_size': 32, 'train_steps': 3, 'epochs': 1,
              'knn_monitor_every_epochs': 0, 'tflite_calibration_images': 20,
              # 40 parity images: one flipped prediction is 2.5 points, so the 1-point int8
              # probe target would be decided by noise.
              'tflite_parity_images': 40, 'tflite_max_top1_drop': 0.1,
              'projection_dim': 16, 'width_multiplier': 0.25, 'checkpoint_every_steps': 2,
              'bless_min_linear_top1': 0.0, 'knn_k': 5},
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
              'bless_min_linear_top1': 0.3, 'embedding_stages': 4, 'embedding_pool': 'avg_max'},
}


def with_local_crops(policy: Dict[str, Any], count: int, size: int,
                     scale: Iterable[float]) -> Dict[str, Any]:
  """A copy of an augmentation policy with `count` multi-crop views of `size` px per image,
  each a box of `scale` (min, max) of the image's area. With count 0 the copy has no
  `local_crops` key at all, so policies without local crops (and the fingerprints of their
  runs) are the same as before multi-crop existed. The one place that writes the key."""
  policy = {k: v for k, v in policy.items() if k != 'local_crops'}
  if count:
    policy['local_crops'] = {'count': int(count), 'size': int(size),
                             'scale': [float(v) for v in scale]}
  return policy


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
