"""FineTuner's settings: SimCLRv2's fine-tune and distil stages, the supervised comparison, and
their checks (TensorFlow-free). The classifier's blessing rule is ClassifierEvaluator's."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from components.params import ComponentParams, check, is_probability
from components.simclr_trainer.hardware import PRECISIONS
from components.simclr_trainer.params import BACKBONES

AUGMENTATIONS = ('crop_flip', 'simclr')  # data.view_policy
INITS = ('probe', 'random')  # linear_init.py
OPTIMIZERS = ('lars', 'sgd')


@dataclasses.dataclass
class FineTunerParams(ComponentParams):
  finetune: bool = True  # False: the DAG ends at the encoder (no classifier is trained or pushed)
  # Of the labelled train records, the class-balanced share (in content-hash order) that the
  # classifiers train on; 1 = all of them. ClassifierEvaluator's probe reads the same share.
  finetune_label_fraction: float = 1.0
  # Fine-tuning: encoder + first projection layer + a new linear layer, on the labelled images.
  finetune_epochs: int = 40
  finetune_minutes: float = 0.0  # > 0: at most this long (the trainer's time budget)
  finetune_batch_size: int = 64
  finetune_learning_rate: float = 0.05  # peak rate: cosine decay after a warmup
  # lars: each layer steps in proportion to its weights (SimCLRv2 fine-tunes with LARS) | sgd:
  # with momentum 0.9. The supervised model from random weights always takes sgd.
  finetune_optimizer: str = 'sgd'
  finetune_weight_decay: float = 1e-4
  finetune_precision: str = 'auto'  # as the trainer's precision
  # crop_flip: the pretraining policy's crop and flip, as SimCLRv2 fine-tunes | simclr: its
  # colour, greyscale and blur too.
  finetune_augmentation: str = 'crop_flip'
  # The new layer's start: random = Keras's initialiser (SimCLRv2's paper) | probe = the linear
  # probe on the labelled images' features (LP-FT: linear_init.py), for an encoder whose
  # probe is already good (the cifar preset); with a briefly trained encoder (the demo), whose
  # batch-norm statistics are far from its batches', the probe's start does not carry over.
  finetune_init: str = 'random'
  # true: batch norm keeps the pretrained moving statistics while fine-tuning and distilling
  # (its scale and offset still train); false: each batch's statistics, as in pretraining.
  # Only for a well-trained encoder: with poor moving statistics the activations diverge.
  finetune_freeze_bn_statistics: bool = False
  # Distillation into a student on every train image: the teacher's predictions at this
  # temperature, plus the label where one may be used, weighted by distill_label_weight.
  distill_epochs: int = 2  # 0 = no distillation: the fine-tuned model is served
  distill_minutes: float = 0.0
  # Lower than the fine-tuning's: a student that starts from its trained teacher only refines.
  distill_learning_rate: float = 0.01
  distill_temperature: float = 1.0
  distill_label_weight: float = 0.5
  # The student's architecture ('' / 0 = the teacher's). The same architecture starts from the
  # fine-tuned teacher (a self-distillation that refines it on every image); another one
  # starts from random weights.
  distill_backbone: str = ''
  distill_width_multiplier: float = 0.0
  # The supervised-from-scratch comparison: the classifier's architecture from random weights,
  # on the same labels with the fine-tuning's epochs and minutes. Measured, never served.
  supervised_baseline: bool = True
  supervised_learning_rate: float = 0.05  # its SGD peak rate (momentum 0.9)
  classifier_top_k: int = 5  # class names and probabilities in each served answer
  finetune_checkpoint_every_steps: int = 100
  finetune_seed: int = 42

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, 0.0 < self.finetune_label_fraction <= 1.0,
          f'finetune_label_fraction must be in (0, 1], got {self.finetune_label_fraction}')
    check(found, self.finetune_epochs >= 1, 'finetune_epochs must be >= 1')
    check(found, self.distill_epochs >= 0, 'distill_epochs must be >= 0 (0 = no distillation)')
    for name in ('finetune_minutes', 'distill_minutes'):
      check(found, getattr(self, name) >= 0, f'{name} must be >= 0 (0 = no time budget)')
    check(found, self.finetune_batch_size >= 2, 'finetune_batch_size must be >= 2')
    check(found, self.finetune_learning_rate > 0, 'finetune_learning_rate must be > 0')
    check(found, self.distill_learning_rate > 0, 'distill_learning_rate must be > 0')
    check(found, self.supervised_learning_rate > 0, 'supervised_learning_rate must be > 0')
    check(found, self.finetune_weight_decay >= 0, 'finetune_weight_decay must be >= 0')
    check(found, self.finetune_precision in PRECISIONS,
          f'finetune_precision must be one of {list(PRECISIONS)}, got {self.finetune_precision!r}')
    check(found, self.finetune_augmentation in AUGMENTATIONS,
          f'finetune_augmentation must be one of {list(AUGMENTATIONS)}, got '
          f'{self.finetune_augmentation!r}')
    check(found, self.finetune_optimizer in OPTIMIZERS,
          f'finetune_optimizer must be one of {list(OPTIMIZERS)}, got {self.finetune_optimizer!r}')
    check(found, self.finetune_init in INITS,
          f'finetune_init must be one of {list(INITS)}, got {self.finetune_init!r}')
    check(found, self.distill_temperature > 0, 'distill_temperature must be > 0')
    check(found, is_probability(self.distill_label_weight),
          f'distill_label_weight must be in [0, 1], got {self.distill_label_weight}')
    check(found, self.distill_backbone in ('',) + BACKBONES,
          f'distill_backbone must be empty (the teacher\'s) or one of {list(BACKBONES)}, got '
          f'{self.distill_backbone!r}')
    check(found, self.distill_width_multiplier >= 0,
          'distill_width_multiplier must be >= 0 (0 = the teacher\'s)')
    check(found, self.classifier_top_k >= 1, 'classifier_top_k must be >= 1')
    check(found, self.finetune_checkpoint_every_steps >= 1,
          'finetune_checkpoint_every_steps must be >= 1')
    return found

  def served(self) -> str:
    """Which model the classifier is: the student when there is one (SimCLRv2's last stage)."""
    return 'distilled' if self.distill_epochs else 'finetuned'

  def fingerprint(self) -> Dict[str, Any]:
    """What makes the stages' checkpoints (not what is only exported or how often saved)."""
    skip = {'finetune', 'classifier_top_k', 'finetune_checkpoint_every_steps'}
    return {k: v for k, v in self.to_dict().items() if k not in skip}
