"""SimCLRTrainer's settings: their defaults, their checks and which of them make a run
(the run fingerprint that names its checkpoints). TensorFlow-free."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from components.params import ComponentParams, check
from components.simclr_trainer.hardware import PRECISIONS

# The domains of the choice settings. model.BACKBONES / model.POOLS and
# losses.CONTRASTIVE_LOSSES hold the same names next to their code (tests pin the pairs), so
# that a config is checked without importing Keras.
BACKBONES = ('resnet_small', 'resnet18', 'resnet34', 'resnet50')
OPTIMIZERS = ('lars', 'sgd', 'adamw')
STRATEGIES = ('auto', 'default', 'mirrored', 'multi_worker_mirrored')
LAUNCHERS = ('auto', 'local', 'tfjob')
EMBEDDING_POOLS = ('avg', 'avg_max')
CONTRASTIVE_LOSSES = ('nt_xent', 'dcl')
LR_SCALINGS = ('linear', 'sqrt')

# The settings that change what is trained, in the run fingerprint. The others only say where
# and how often to write, what to monitor, how to replicate, or what the exported embedding
# reads: changing them reuses the checkpoints.
_FINGERPRINT = ('backbone', 'width_multiplier', 'head_layers', 'projection_dim', 'batch_size',
                'epochs', 'train_steps', 'temperature', 'optimizer', 'learning_rate',
                'lr_scaling', 'weight_decay', 'warmup_fraction', 'seed', 'negatives_queue_size',
                'precision', 'jit_compile', 'train_minutes')


@dataclasses.dataclass
class TrainerParams(ComponentParams):
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
  # > 0: pretraining fits in this many minutes on the machine that trains: the measured pace
  # fixes the step count (at most epochs' worth) and the schedule's warmup and decay to it
  # (time_budget.TimeBudget); a slower stretch later stops training at the budget.
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
  # > 0: gradient caching (step.py): the exact loss and gradients of the whole batch while the
  # activations of only this many images per view are held; each replica's share of the batch
  # must be a multiple. Batch norm then normalises each micro-batch by its own statistics.
  micro_batch_size: int = 0
  # float32 | mixed_bfloat16 | mixed_float16 | auto: bf16 where the CPU or GPU has it, else
  # float16 on older tensor-core GPUs, else float32 (resolved on the machine that trains).
  precision: str = 'float32'
  jit_compile: bool = False  # XLA for the train step
  knn_monitor_every_epochs: int = 1  # kNN top-1 on labelled eval data in TensorBoard; 0 = off
  # auto | default | mirrored | multi_worker_mirrored (auto: TF_CONFIG -> multi-worker, several
  # local GPUs -> mirrored, else one device).
  distribution_strategy: str = 'auto'
  # > 1: the training is a job of this many worker processes with MultiWorkerMirroredStrategy
  # (launch.py): local processes on this machine, or a Kubeflow TFJob on a cluster. Not in the
  # fingerprint: checkpoints load under any worker count, so a rerun with another count resumes.
  trainer_workers: int = 1
  # auto (a TFJob when the executor runs in a Kubernetes pod, else local) | local | tfjob
  trainer_launcher: str = 'auto'
  # The TFJob's pods (tfjob.py): the image (`simclr-tfx compile` sets the pipeline image), a
  # PersistentVolumeClaim NAME:MOUNT_PATH mounted in each (compile sets its --pvc), the
  # namespace ('' = the trainer pod's own) and GPUs per worker.
  trainer_image: str = ''
  trainer_pvc: str = ''
  trainer_namespace: str = ''
  trainer_gpus: int = 0

  def problems(self) -> List[str]:
    return self._model_problems() + self._schedule_problems()

  def _model_problems(self) -> List[str]:
    found: List[str] = []
    check(found, self.backbone in BACKBONES,
          f'backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}')
    check(found, self.width_multiplier > 0, 'width_multiplier must be > 0')
    check(found, self.projection_dim > 0, 'projection_dim must be > 0')
    stages = 3 if self.backbone == 'resnet_small' else 4
    check(found, 1 <= self.embedding_stages <= stages,
          f'embedding_stages must be 1..{stages} for {self.backbone}, got '
          f'{self.embedding_stages}')
    check(found, self.embedding_pool in EMBEDDING_POOLS,
          f'embedding_pool must be {" or ".join(EMBEDDING_POOLS)}, got {self.embedding_pool!r}')
    check(found, self.head_layers in (2, 3), f'head_layers must be 2 or 3, got {self.head_layers}')
    check(found, self.precision in PRECISIONS,
          f'precision must be one of {list(PRECISIONS)}, got {self.precision!r}')
    check(found, self.distribution_strategy in STRATEGIES,
          f'distribution_strategy must be one of {list(STRATEGIES)}, '
          f'got {self.distribution_strategy!r}')
    check(found, self.temperature > 0, f'temperature must be > 0, got {self.temperature}')
    check(found, self.contrastive_loss in CONTRASTIVE_LOSSES,
          f'contrastive_loss must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive_loss!r}')
    check(found, self.negatives_queue_size >= 0, 'negatives_queue_size must be >= 0')
    check(found, self.negatives_queue_size == 0 or self.negatives_queue_size % self.batch_size == 0,
          f'negatives_queue_size must be a multiple of batch_size ({self.batch_size})')
    check(found, self.micro_batch_size >= 0, 'micro_batch_size must be >= 0 (0 = off)')
    workers = max(self.trainer_workers, 1)  # an invalid count is reported by _job_problems
    check(found, self.micro_batch_size <= 0
          or self.batch_size % (workers * self.micro_batch_size) == 0,
          f'micro_batch_size ({self.micro_batch_size}) must divide each worker\'s share of '
          f'batch_size ({self.batch_size} over {workers} worker(s))')
    return found

  def _schedule_problems(self) -> List[str]:
    found: List[str] = []
    check(found, self.batch_size >= 2,
          f'batch_size must be >= 2 (NT-Xent needs negatives), got {self.batch_size}')
    check(found, self.epochs >= 1 or self.train_steps >= 1, 'set epochs >= 1 or train_steps >= 1')
    check(found, self.train_steps >= 0, f'train_steps must be >= 0, got {self.train_steps}')
    check(found, self.train_minutes >= 0,
          f'train_minutes must be >= 0 (0 = no time budget), got {self.train_minutes}')
    check(found, self.optimizer in OPTIMIZERS,
          f'optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}')
    check(found, self.learning_rate > 0, f'learning_rate must be > 0, got {self.learning_rate}')
    check(found, self.lr_scaling in LR_SCALINGS,
          f'lr_scaling must be linear or sqrt, got {self.lr_scaling!r}')
    check(found, self.weight_decay >= 0, 'weight_decay must be >= 0')
    check(found, 0 <= self.warmup_fraction < 1, 'warmup_fraction must be in [0, 1)')
    check(found, self.checkpoint_every_steps >= 1, 'checkpoint_every_steps must be >= 1')
    check(found, self.keep_checkpoints >= 0, 'keep_checkpoints must be >= 0 (0 = keep all)')
    check(found, self.knn_monitor_every_epochs >= 0, 'knn_monitor_every_epochs must be >= 0')
    return found + self._job_problems()

  def _job_problems(self) -> List[str]:
    found: List[str] = []
    check(found, self.trainer_workers >= 1, f'trainer_workers must be >= 1, got '
          f'{self.trainer_workers}')
    check(found, self.trainer_launcher in LAUNCHERS,
          f'trainer_launcher must be one of {list(LAUNCHERS)}, got {self.trainer_launcher!r}')
    check(found, self.trainer_gpus >= 0, f'trainer_gpus must be >= 0, got {self.trainer_gpus}')
    check(found, not self.trainer_pvc or (':' in self.trainer_pvc and
                                          self.trainer_pvc.split(':', 1)[1].startswith('/')),
          f'trainer_pvc expects NAME:/mount/path, got {self.trainer_pvc!r}')
    if self.trainer_workers > 1:
      check(found, self.batch_size % self.trainer_workers == 0,
            f'batch_size ({self.batch_size}) must be a multiple of trainer_workers '
            f'({self.trainer_workers}): each worker takes an equal share of every batch')
      check(found, self.train_minutes == 0,
            'train_minutes needs trainer_workers=1: each worker would measure its own pace and '
            'plan another step count; set train_steps or epochs for a multi-worker job')
      check(found, self.negatives_queue_size == 0,
            'negatives_queue_size needs trainer_workers=1 (with several workers the '
            'cross-worker negatives already enlarge the batch)')
      check(found, self.distribution_strategy in ('auto', 'multi_worker_mirrored'),
            f'trainer_workers > 1 trains with multi_worker_mirrored; distribution_strategy '
            f'{self.distribution_strategy!r} contradicts it')
    return found

  def fingerprint(self) -> Dict[str, Any]:
    """The settings that make a run, as the run fingerprint hashes them. The values keep the
    types the fingerprint has always hashed (jit_compile as 0/1), and contrastive_loss and
    micro_batch_size, added later, enter only when not the default: checkpoints of earlier runs
    stay found."""
    values = {name: getattr(self, name) for name in _FINGERPRINT}
    values.update(jit_compile=int(self.jit_compile), width_multiplier=float(self.width_multiplier),
                  train_minutes=float(self.train_minutes))
    if self.contrastive_loss != 'nt_xent':
      values['contrastive_loss'] = self.contrastive_loss
    if self.micro_batch_size:  # batch norm's statistics are then the micro-batches'
      values['micro_batch_size'] = self.micro_batch_size
    return values
