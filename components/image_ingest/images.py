"""Pure helpers of ImageIngest: listing a source folder, validating one file, splitting.

Kept free of Beam and TFX so each rule (what counts as bad, which split an image goes to) is
testable on its own.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats whose original bytes are kept as they are (TensorFlow decodes them natively).
_KEEP_AS_IS = {'JPEG', 'PNG'}
_ORIENTATION_TAG = 0x0112


class IngestError(RuntimeError):
  """The source cannot produce a usable data set (empty, missing, nothing valid)."""


@dataclasses.dataclass(frozen=True)
class SourceFile:
  relpath: str  # relative to the source directory, '/'-separated
  class_name: str  # '' for unlabelled files at the root


def list_source_files(data_dir: str) -> List[SourceFile]:
  """Every regular file under data_dir, sorted. Sub-folders of the root are class names.

  Nothing is filtered by extension: every file is decoded later, and those that are not
  images are quarantined with a reason rather than skipped silently.
  """
  if not data_dir:
    raise IngestError('no data directory given (set data_dir / --data-dir)')
  if not os.path.isdir(data_dir):
    raise IngestError(f'data directory does not exist or is not a folder: {data_dir}')
  found = []
  for root, dirs, files in os.walk(data_dir):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      rel = os.path.relpath(path, data_dir).replace(os.sep, '/')
      parts = rel.split('/')
      found.append(SourceFile(rel, parts[0] if len(parts) > 1 else ''))
  if not found:
    raise IngestError(f'data directory {data_dir} holds no files; expected images, '
                      'optionally in one sub-folder per class')
  return found


def class_index(files: List[SourceFile]) -> List[str]:
  """Sorted class names; a class's label is its index in this list."""
  return sorted({f.class_name for f in files if f.class_name})


def source_fingerprint(data_dir: str) -> str:
  """Cheap fingerprint of a folder's listing (names, sizes, mtimes).

  Used as a component parameter so that TFX's cache reuses an ingest only while the folder is
  unchanged; the content fingerprint in the IngestReport is computed from the bytes instead.
  """
  digest = hashlib.sha256()
  for f in list_source_files(data_dir):
    try:
      st = os.stat(os.path.join(data_dir, f.relpath))
      digest.update(f'{f.relpath}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode('utf-8', 'replace'))
    except OSError as e:
      digest.update(f'{f.relpath}\0error {e.errno}\n'.encode('utf-8', 'replace'))
  return digest.hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
    # 16-bit (or 32-bit int) greyscale: scale to 8 bits instead of clipping.
    array = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith('I;16') else max(float(array.max()), 1.0)
    image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
  if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
    image = image.convert('RGBA')
    background = Image.new('RGBA', image.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, image)
  return image.convert('RGB')


def decode_and_validate(data: bytes, min_side: int = 1) -> Tuple[Optional[bytes], int, int, str]:
  """Decodes `data` fully. Returns (bytes_to_store, height, width, reason).

  bytes_to_store is None when the file is unusable, and reason then says why. Files TensorFlow
  decodes as they are (8-bit RGB/greyscale JPEG and PNG, upright) are stored unchanged; every
  other image (BMP, GIF first frame, palette, RGBA, CMYK, 16-bit, EXIF-rotated) is stored as the
  PNG of its upright RGB pixels.
  """
  if not data:
    return None, 0, 0, 'empty file (0 bytes)'
  try:
    image = Image.open(io.BytesIO(data))
    fmt = image.format
    image.load()  # decodes every pixel: truncated files fail here
  except UnidentifiedImageError:
    return None, 0, 0, 'not a recognised image format'
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    return None, 0, 0, f'cannot decode image: {e}'
  width, height = image.size
  if min(width, height) < min_side:
    return None, height, width, f'image too small ({width}x{height}, min side {min_side})'
  orientation = image.getexif().get(_ORIENTATION_TAG, 1) if fmt == 'JPEG' else 1
  if fmt in _KEEP_AS_IS and image.mode in ('RGB', 'L') and orientation in (1, None):
    return data, height, width, ''
  upright = ImageOps.exif_transpose(image) if orientation not in (1, None) else image
  rgb = _to_rgb(upright)
  buffer = io.BytesIO()
  rgb.save(buffer, format='PNG')
  return buffer.getvalue(), rgb.size[1], rgb.size[0], ''


def split_for(sha256_hex: str, eval_percent: int) -> str:
  """Deterministic split from the content hash: same bytes, same split, on every machine."""
  bucket = int(sha256_hex[:16], 16) % 100
  return 'eval' if bucket < eval_percent else 'train'
