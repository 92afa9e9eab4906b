"""Pure helpers of ImageIngest: listing a source folder, validating one file, splitting.

Kept free of Beam and TFX so each rule (what counts as bad, which split an image goes to) is
testable on its own.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import io
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own max_pixels check runs on the declared size before decoding; Pillow's bomb guard
# would otherwise refuse large but legitimate scans with an exception.
Image.MAX_IMAGE_PIXELS = None

# Formats whose original bytes are kept as they are (TensorFlow decodes them natively).
_KEEP_AS_IS = {'JPEG', 'PNG'}  # MPO (multi-picture JPEG) is re-encoded: TF sees its frames
_ORIENTATION_TAG = 0x0112


class IngestError(RuntimeError):
  """The source cannot produce a usable data set (empty, missing, nothing valid)."""


# Formats decoded and accepted. Anything else Pillow recognises (PSD, ICO, EPS, PDF...) is
# quarantined as an unsupported format rather than guessed at.
SUPPORTED_FORMATS = ('JPEG', 'MPO', 'PNG', 'BMP', 'GIF', 'WEBP', 'TIFF', 'PPM')
TFRECORD_SUFFIXES = ('.tfrecord', '.tfrecords', '.tfrec', '.tfrecord.gz', '.tfrecords.gz',
                     '.tfrec.gz')


@dataclasses.dataclass(frozen=True)
class SourceFile:
  # Relative to the source directory, '/'-separated (or absolute, from a manifest). Always
  # valid UTF-8: bytes of a non-UTF-8 file name are shown as \xNN escapes.
  relpath: str
  class_name: str  # '' for unlabelled files
  kind: str = 'image'  # 'image' or 'tfrecord' (a container of tf.Examples)
  raw_relpath: bytes = b''  # the name as the filesystem has it, to open the file


def printable(name: str) -> str:
  """A file name from os.walk (surrogate-escaped when not UTF-8) as valid, readable UTF-8."""
  return name.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


def _source(rel: str, class_name: str) -> SourceFile:
  return SourceFile(printable(rel), printable(class_name), 'tfrecord' if is_tfrecord(rel) else
                    'image', os.fsencode(rel))


@dataclasses.dataclass
class Listing:
  files: List[SourceFile]
  excluded: List[str]  # matched an exclude glob or missed every include glob
  not_in_manifest: int = 0
  # Entries the walk cannot take, with the reason (quarantined, never silently skipped).
  unreadable: List[Tuple[str, str]] = dataclasses.field(default_factory=list)


def is_tfrecord(path: str) -> bool:
  return path.lower().endswith(TFRECORD_SUFFIXES)


def _matches(relpath: str, patterns: Sequence[str]) -> bool:
  name = relpath.rsplit('/', 1)[-1]
  return any(fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def split_globs(text: str) -> List[str]:
  return [p.strip() for p in (text or '').split(',') if p.strip()]


def read_manifest(path: str) -> List[Tuple[str, str]]:
  """(path, label) rows of a CSV manifest; a first row of `path,label` is a header."""
  if not os.path.isfile(path):
    raise IngestError(f'manifest file not found: {path}')
  rows = []
  with open(path, newline='', encoding='utf-8') as f:
    for number, row in enumerate(csv.reader(f), start=1):
      if not row or not ''.join(row).strip():
        continue
      if number == 1 and [c.strip().lower() for c in row[:2]] == ['path', 'label']:
        continue
      if len(row) > 2:
        raise IngestError(f'{path} line {number}: expected "path,label", got {len(row)} columns')
      rows.append((row[0].strip(), row[1].strip() if len(row) > 1 else ''))
  if not rows:
    raise IngestError(f'manifest {path} lists no files')
  return rows


def list_sources(data_dir: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 manifest: str = '') -> Listing:
  """Every input of a run, sorted, before any file is opened.

  - Folder mode: every regular file under data_dir. A file's class is the first-level
    sub-folder it sits in (deeper folders belong to that class); files at the root are
    unlabelled. TFRecord files (.tfrecord[.gz], .tfrec...) are read as tf.Example containers.
  - Manifest mode: only the rows of the CSV `path,label` (paths relative to data_dir or
    absolute; an empty label means unlabelled).
  Include/exclude globs match the relative path or the file name. Nothing is filtered by
  extension: non-images are decoded, fail, and are quarantined with their reason.
  """
  if not data_dir:
    raise IngestError('no data directory given (set data_dir / --data-dir)')
  if not os.path.isdir(data_dir):
    raise IngestError(f'data directory does not exist or is not a folder: {data_dir}')
  candidates: List[SourceFile] = []
  unreadable: List[Tuple[str, str]] = []
  not_in_manifest = 0
  if manifest:
    rows = read_manifest(manifest)
    for path, label in rows:
      candidates.append(_source(path.replace(os.sep, '/'), label))
    listed = {os.path.normpath(os.path.join(data_dir, p)) for p, _ in rows}
    for root, _, names in os.walk(data_dir):
      not_in_manifest += sum(1 for n in names if os.path.join(root, n) not in listed)
  else:
    for root, dirs, names in os.walk(data_dir):
      for name in dirs:  # os.walk lists linked folders but never enters them: say so
        if os.path.islink(os.path.join(root, name)):
          rel = os.path.relpath(os.path.join(root, name), data_dir).replace(os.sep, '/')
          unreadable.append((printable(rel), 'symlinked folder not followed (it could loop); '
                             'link the files, or point --data-dir at the real folder'))
      dirs.sort()
      for name in sorted(names):
        rel = os.path.relpath(os.path.join(root, name), data_dir).replace(os.sep, '/')
        parts = rel.split('/')
        candidates.append(_source(rel, parts[0] if len(parts) > 1 else ''))
  files, excluded = [], []
  for f in candidates:
    if (include and not _matches(f.relpath, include)) or _matches(f.relpath, exclude):
      excluded.append(f.relpath)
    else:
      files.append(f)
  if not files:
    detail = f' ({len(excluded)} excluded by the include/exclude globs)' if excluded else ''
    raise IngestError(f'data directory {data_dir} holds no files to ingest{detail}; expected '
                      'images, optionally in one sub-folder per class')
  return Listing(files, excluded, not_in_manifest, unreadable)


def list_source_files(data_dir: str) -> List[SourceFile]:
  return list_sources(data_dir).files


def class_index(class_names) -> List[str]:
  """Sorted class names; a class's label is its index in this list."""
  return sorted({c for c in class_names if c})


def source_fingerprint(data_dir: str, manifest: str = '') -> str:
  """Cheap fingerprint of a folder's listing (names, sizes, mtimes) and of the manifest.

  Used as a component parameter so that TFX's cache reuses an ingest only while the folder is
  unchanged; the content fingerprint in the IngestReport is computed from the bytes instead.
  """
  digest = hashlib.sha256()
  paths = [os.path.join(os.fsencode(data_dir), f.raw_relpath)
           for f in list_sources(data_dir).files]
  if manifest:
    paths.append(manifest)
  for path in paths:
    try:
      st = os.stat(path)
      digest.update(os.fsencode(path) + f'\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    except OSError as e:
      digest.update(os.fsencode(path) + f'\0error {e.errno}\n'.encode())
  return digest.hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    # 16-bit, 32-bit int or float greyscale: scale to 8 bits instead of clipping.
    array = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith('I;16') else max(float(array.max()), 1.0)
    image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
  if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
    image = image.convert('RGBA')
    background = Image.new('RGBA', image.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, image)
  return image.convert('RGB')


def decode_and_validate(data: bytes, min_side: int = 1, max_pixels: int = 0
                        ) -> Tuple[Optional[bytes], int, int, str]:
  """Decodes `data` fully. Returns (bytes_to_store, height, width, reason).

  bytes_to_store is None when the file is unusable, and reason then says why. Files TensorFlow
  decodes as they are (8-bit RGB/greyscale JPEG and PNG, upright) are stored unchanged; every
  other image (BMP, GIF first frame, WebP, TIFF, palette, RGBA, CMYK, 16-bit, EXIF-rotated) is
  stored as the PNG of its upright RGB pixels. The declared size is checked against
  `max_pixels` (0 = no limit) before any pixel is decoded.
  """
  if not data:
    return None, 0, 0, 'empty file (0 bytes)'
  try:
    image = Image.open(io.BytesIO(data))
  except UnidentifiedImageError:
    return None, 0, 0, 'not a recognised image format'
  except (OSError, SyntaxError, ValueError) as e:
    return None, 0, 0, f'cannot decode image: {e}'
  fmt = image.format
  width, height = image.size
  if fmt not in SUPPORTED_FORMATS:
    return None, height, width, f'unsupported image format {fmt}'
  if max_pixels and width * height > max_pixels:
    return None, height, width, (f'declared size {width}x{height} = {width * height} pixels '
                                 f'exceeds max_pixels {max_pixels}')
  try:
    image.load()  # decodes every pixel (first frame): truncated files fail here
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    return None, height, width, f'cannot decode image: {e}'
  if min(width, height) < min_side:
    return None, height, width, f'image too small ({width}x{height}, min side {min_side})'
  orientation = image.getexif().get(_ORIENTATION_TAG, 1) if fmt in ('JPEG', 'MPO') else 1
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


def select_labelled(shas_by_class, fraction: float):
  """Class-balanced labelled subset: per class, the first max(1, round(fraction * n)) images in
  sha256 order. Deterministic, and nested: a larger fraction keeps every image of a smaller one."""
  selected = set()
  for shas in shas_by_class.values():
    ordered = sorted(shas)
    keep = len(ordered) if fraction >= 1.0 else max(1, int(round(fraction * len(ordered))))
    selected.update(ordered[:keep])
  return selected


def class_of_record(features) -> str:
  """Class name of a tf.Example read from a TFRecord input: its text, else its integer label."""
  text = features.get('image/class/text')
  if text is not None and text.bytes_list.value and text.bytes_list.value[0]:
    return text.bytes_list.value[0].decode('utf-8', 'replace')
  for key in ('image/class/label', 'label'):
    value = features.get(key)
    if value is not None and value.int64_list.value and value.int64_list.value[0] >= 0:
      return str(value.int64_list.value[0])
  return ''
