"""The Pusher's settings: what a pushed model is called and how the serving folder is kept
(TensorFlow-free). Where the serving folder is comes separately (the DAG decides it)."""
from __future__ import annotations

import dataclasses
from typing import List

from components import limits
from components.params import ComponentParams, check


@dataclasses.dataclass
class PusherParams(ComponentParams):
  model_name: str = 'simclr_encoder'  # <serving_dir>/<model_name>/<version>/
  serving_keep_versions: int = 3  # older versions are retired after a push; 0 = keep all
  serving_warmup_images: int = 5  # real images in assets.extra/tf_serving_warmup_requests
  # The serving base path as the model server sees it, written into <serving>/models.config
  # (e.g. /models where the Kubernetes manifest mounts it); empty = the local serving folder.
  serving_config_base_path: str = ''

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, limits.is_safe_name(self.model_name), limits.unsafe_name_message(
        'model_name', self.model_name))
    check(found, self.serving_keep_versions >= 0,
          'serving_keep_versions must be >= 0 (0 = keep all)')
    check(found, self.serving_warmup_images >= 0, 'serving_warmup_images must be >= 0 (0 = none)')
    return found
