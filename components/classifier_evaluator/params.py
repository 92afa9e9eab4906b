"""ClassifierEvaluator's settings: the classifier's blessing rule (TensorFlow-free)."""
from __future__ import annotations

import dataclasses
from typing import List

from components.params import ComponentParams, check, is_probability


@dataclasses.dataclass
class ClassifierEvaluatorParams(ComponentParams):
  # Blessed only if the served classifier's top-1 reaches this AND is at least the linear
  # probe's on the same labels and eval images.
  bless_min_classifier_top1: float = 0.5
  calibration_bins: int = 15  # equal-width confidence bins of the expected calibration error

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, is_probability(self.bless_min_classifier_top1),
          f'bless_min_classifier_top1 is a fraction in [0, 1], got '
          f'{self.bless_min_classifier_top1}')
    check(found, self.calibration_bins >= 1, 'calibration_bins must be >= 1')
    return found
