"""DualViewTransform's settings, the SimCLR augmentation policy they make, and their checks
(TensorFlow-free)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List

from components.params import ComponentParams, check, is_probability

PROBABILITIES = ('color_jitter_prob', 'grayscale_prob', 'blur_prob', 'solarize_prob')


@dataclasses.dataclass
class TransformParams(ComponentParams):
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

  def problems(self) -> List[str]:
    found: List[str] = []
    check(found, self.image_size >= 16, f'image_size must be >= 16 pixels, got {self.image_size}')
    check(found, self.train_crop_size == 0 or 8 <= self.train_crop_size <= self.image_size,
          f'train_crop_size must be 0 (= image_size) or 8..image_size ({self.image_size}), '
          f'got {self.train_crop_size}')
    check(found, 0.0 < self.crop_scale_min <= 1.0,
          f'crop_scale_min must be in (0, 1], got {self.crop_scale_min}')
    check(found, self.local_crops >= 0,
          f'local_crops must be >= 0 (0 = off), got {self.local_crops}')
    if self.local_crops:
      crop = self.train_crop_size or self.image_size
      check(found, 4 <= self.local_crop_size < crop,
            f'local_crop_size must be 4..{crop - 1} (smaller than the {crop} px training crops), '
            f'got {self.local_crop_size}')
      check(found, 0.0 < self.local_crop_scale_min < self.local_crop_scale_max <= 1.0,
            'local crop scales must satisfy 0 < local_crop_scale_min < local_crop_scale_max '
            f'<= 1, got {self.local_crop_scale_min} and {self.local_crop_scale_max}')
    check(found, self.color_jitter_strength >= 0, 'color_jitter_strength must be >= 0')
    for name in PROBABILITIES:
      value = getattr(self, name)
      check(found, is_probability(value), f'{name} must be a probability in [0, 1], got {value}')
    return found

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
