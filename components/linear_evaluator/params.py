"""LinearEvaluator's settings: the probe, kNN and blessing rules, and their checks
(TensorFlow-free)."""
from __future__ import annotations

import dataclasses
from typing import List

from components.params import ComponentParams, check


@dataclasses.dataclass
class EvaluatorParams(ComponentParams):
  bless_min_linear_top1: float = 0.5
  # Compare with the latest blessed model of this pipeline (measured on the same data in the
  # same execution): bless only if linear_top1 >= baseline - this. Negative: demand a gain.
  bless_compare_with_baseline: bool = True
  bless_max_drop_vs_baseline: float = 0.02
  probe_fractions: str = '0.01,0.1,1'  # of the labelled train records; 1 = headline numbers
  probe_context_baselines: bool = True  # also probe raw pixels and a random-init encoder
  knn_k: int = 200  # weighted kNN (cosine, temperature 0.1), as in the SimCLR/InstDisc papers

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, 0.0 <= self.bless_min_linear_top1 <= 1.0,
          f'bless_min_linear_top1 is a fraction in [0, 1], got {self.bless_min_linear_top1}')
    check(found, -1.0 <= self.bless_max_drop_vs_baseline <= 1.0,
          'bless_max_drop_vs_baseline is a top-1 difference in [-1, 1], got '
          f'{self.bless_max_drop_vs_baseline}')
    check(found, self.knn_k >= 1, 'knn_k must be >= 1')
    try:
      self.fractions()
    except ValueError as e:
      found.append(str(e))
    return found

  def fractions(self) -> List[float]:
    """probe_fractions as numbers: sorted, unique, 1.0 (the headline) always included."""
    values = {1.0}
    for part in str(self.probe_fractions).split(','):
      if not part.strip():
        continue
      try:
        value = float(part)
      except ValueError:
        raise ValueError('probe_fractions must be comma-separated numbers, got '
                         f'{self.probe_fractions!r}') from None
      if not 0.0 < value <= 1.0:
        raise ValueError(f'probe_fractions must each be in (0, 1], got {self.probe_fractions!r}')
      values.add(value)
    return sorted(values)
