"""A PNG grid of originals and their two SimCLR views: what the model is trained on."""
from __future__ import annotations

import io
from typing import Any, Dict

import numpy as np
import tensorflow as tf
from PIL import Image

from components.dual_view_transform import augment


def preview_grid(unit_images: np.ndarray, policy: Dict[str, Any], seed: int = 0,
                 cell: int = 96, gap: int = 4) -> bytes:
  """Rows: one image each; columns: original, view A, view B, then the policy's local crops
  (multi-crop), if any. unit_images: [N, S, S, 3] in [0, 1].

  Views are shown before normalisation, i.e. as the encoder's input looks to a person."""
  x = tf.constant(unit_images, tf.float32)
  views = augment.training_views(x, policy, tf.constant([seed, 0], tf.int64))
  columns = [x.numpy(), views[0].numpy(), views[1].numpy()]
  if len(views) == 3:  # [N, count, s, s, 3]
    columns += [views[2][:, j].numpy() for j in range(views[2].shape[1])]
  rows = len(unit_images)
  width = len(columns) * cell + (len(columns) + 1) * gap
  canvas = Image.new('RGB', (width, rows * cell + (rows + 1) * gap), (255, 255, 255))
  for r in range(rows):
    for c, column in enumerate(columns):
      tile = Image.fromarray(np.uint8(np.clip(column[r], 0, 1) * 255 + 0.5))
      tile = tile.resize((cell, cell), Image.NEAREST)
      canvas.paste(tile, (gap + c * (cell + gap), gap + r * (cell + gap)))
  buffer = io.BytesIO()
  canvas.save(buffer, format='PNG')
  return buffer.getvalue()
