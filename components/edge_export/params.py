"""EdgeExport's settings: the TFLite conversion and its parity gates (TensorFlow-free)."""
from __future__ import annotations

import dataclasses
from typing import List

from components.params import ComponentParams, check


@dataclasses.dataclass
class EdgeExportParams(ComponentParams):
  edge_export: bool = True  # False: the DAG has no EdgeExport and pushes no TFLite files
  tflite_calibration_images: int = 300  # real train images calibrate the int8 model
  tflite_parity_images: int = 500  # held-out eval images for the parity check
  tflite_min_cosine_float: float = 0.999
  tflite_min_cosine_int8: float = 0.98
  tflite_max_top1_drop: float = 0.01  # int8 probe top-1 may be at most 1 point lower

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, self.tflite_calibration_images >= 1, 'tflite_calibration_images must be >= 1')
    check(found, self.tflite_parity_images >= 1, 'tflite_parity_images must be >= 1')
    check(found, self.tflite_max_top1_drop >= 0, 'tflite_max_top1_drop must be >= 0')
    return found
