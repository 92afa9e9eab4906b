"""ImageIngest's settings: their defaults and their checks (TensorFlow-free)."""
from __future__ import annotations

import dataclasses
from typing import List

from components import limits
from components.params import ComponentParams, check


@dataclasses.dataclass
class IngestParams(ComponentParams):
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

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, 0 < self.eval_percent < 100,
          f'eval_percent must be in 1..99, got {self.eval_percent}')
    check(found, 0.0 < self.labelled_fraction <= 1.0,
          f'labelled_fraction must be in (0, 1], got {self.labelled_fraction}')
    check(found, self.min_side >= 1, f'min_side must be >= 1, got {self.min_side}')
    check(found, 1 <= self.max_pixels <= limits.PILLOW_BOMB_PIXELS,
          f'max_pixels must be in 1..{limits.PILLOW_BOMB_PIXELS} (Pillow\'s decompression-bomb '
          f'limit; 0 no longer means "no limit"), got {self.max_pixels}')
    check(found, self.max_file_bytes >= 1,
          f'max_file_bytes must be >= 1, got {self.max_file_bytes}')
    check(found, 0.0 <= self.max_bad_fraction <= 1.0,
          f'max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}')
    return found
