"""Pure helpers of ImageIngest: listing a source folder, reading and validating one file, splitting.

Kept free of Beam and TFX so each rule (what counts as bad, which split an image goes to) is
testable on its own. The rules on resources, and why:
- A file is checked before it is read: anything that is not a regular file (a FIFO, socket or
  device, whatever its name or extension) is quarantined from its stat, never opened for
  reading, because it could block or never end; a file larger than `max_file_bytes` is
  quarantined from its size alone (a sparse 64 GB `x.jpg` costs one stat, not 64 GB of memory).
  The descriptor is checked again after opening and at most max_file_bytes + 1 bytes are read,
  so a file swapped or growing between the checks cannot make ingest hold more.
- Pixels: Pillow's decompression-bomb guard stays on (it refuses declared sizes above
  limits.PILLOW_BOMB_PIXELS). A declared width x height above `max_pixels` (1 up to that
  guard; there is no "no limit") is quarantined from the header, never decoded. An image at or
  under max_pixels but above limits.MAX_DECODE_PIXELS, the most the transform and the serving
  signature decode, is kept downscaled to fit (aspect kept, Lanczos; a JPEG is decoded at a
  reduced DCT scale first where that is enough), so a legitimate 60-megapixel photo trains
  instead of failing the run in the transform. It is re-encoded (JPEG sources as JPEG quality
  95, others as PNG) and listed in the report with its original size.
- The folder walk is iterative (an explicit stack): CPython 3.11's os.walk recurses once per
  level and a deep tree would hit the recursion limit. A folder it cannot list is reported
  with the reason (quarantined, never silently skipped).
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import io
import math
import os
import stat
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from components import limits
from components.errors import IngestError

# Formats whose original bytes are kept as they are (TensorFlow decodes them natively).
_KEEP_AS_IS = {'JPEG', 'PNG'}  # MPO (multi-picture JPEG) is re-encoded: TF sees its frames
_JPEG_FAMILY = ('JPEG', 'MPO')
_ORIENTATION_TAG = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_NOT_REGULAR = 'not a regular file (FIFO, socket or device)'


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


def walk_tree(top: str) -> Tuple[List[str], List[Tuple[str, str]]]:
  """Every non-folder entry under `top`, and the entries the walk cannot take, with a reason.

  Paths are relative to top, '/'-separated, spelled as os.walk spells them (surrogate escapes
  for non-UTF-8 bytes), in os.walk's order with sorted names: a folder's files, then each
  sub-folder depth first. Iterative (an explicit stack), so a tree deeper than Python's
  recursion limit lists like any other. Folder links are reported, not followed (they could
  loop); a sub-folder that cannot be listed is reported with the OS's reason; top itself not
  listable is an IngestError.
  """
  files: List[str] = []
  problems: List[Tuple[str, str]] = []
  stack = ['']
  while stack:
    rel_dir = stack.pop()
    try:
      with os.scandir(os.path.join(top, rel_dir) if rel_dir else top) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    except OSError as e:
      if not rel_dir:
        raise IngestError(f'cannot list data directory {top}: {e.strerror or e}') from None
      problems.append((rel_dir, f'cannot list folder: {e.strerror or e}'))
      continue
    sub_dirs = []
    for entry in entries:
      rel = f'{rel_dir}/{entry.name}' if rel_dir else entry.name
      try:
        is_dir = entry.is_dir()
      except OSError:  # as os.walk: an entry whose type cannot be read is not a folder
        is_dir = False
      if not is_dir:
        files.append(rel)
      elif entry.is_symlink():
        problems.append((rel, 'symlinked folder not followed (it could loop); link the files, '
                         'or point --data-dir at the real folder'))
      else:
        sub_dirs.append(rel)
    stack.extend(reversed(sub_dirs))
  return files, problems


def list_sources(data_dir: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 manifest: str = '') -> Listing:
  """Every input of a run, sorted, before any file is opened.

  - Folder mode: every regular file under data_dir. A file's class is the first-level
    sub-folder it sits in (deeper folders belong to that class); files at the root are
    unlabelled. TFRecord files (.tfrecord[.gz], .tfrec...) are read as tf.Example containers.
  - Manifest mode: only the rows of the CSV `path,label` (paths relative to data_dir or
    absolute; an empty label means unlabelled).
  Include/exclude globs match the relative path or the file name. Nothing is filtered by
  extension: non-images are decoded, fail, and are quarantined with their reason. Folder links
  and sub-folders that cannot be listed are in Listing.unreadable, with the reason.
  """
  if not data_dir:
    raise IngestError('no data directory given (set data_dir / --data-dir)')
  if not os.path.isdir(data_dir):
    raise _missing(data_dir)
  candidates: List[SourceFile] = []
  unreadable: List[Tuple[str, str]] = []
  not_in_manifest = 0
  found, problems = walk_tree(data_dir)
  if manifest:
    rows = read_manifest(manifest)
    for path, label in rows:
      candidates.append(_source(path.replace(os.sep, '/'), label))
    listed = {os.path.normpath(os.path.join(data_dir, p)) for p, _ in rows}
    not_in_manifest = sum(1 for rel in found
                          if os.path.normpath(os.path.join(data_dir, rel)) not in listed)
  else:
    for rel in found:
      parts = rel.split('/')
      candidates.append(_source(rel, parts[0] if len(parts) > 1 else ''))
    unreadable = [(printable(rel), reason) for rel, reason in problems]
  files, excluded = [], []
  for f in candidates:
    if (include and not _matches(f.relpath, include)) or _matches(f.relpath, exclude):
      excluded.append(f.relpath)
    else:
      files.append(f)
  if not files:
    raise _no_files(data_dir, f' ({len(excluded)} excluded by the include/exclude globs)'
                    if excluded else '')
  return Listing(files, excluded, not_in_manifest, unreadable)


def _missing(data_dir: str) -> IngestError:
  return IngestError(f'data directory does not exist or is not a folder: {data_dir}')


def _no_files(data_dir: str, detail: str = '') -> IngestError:
  return IngestError(f'data directory {data_dir} holds no files to ingest{detail}; expected '
                     'images, optionally in one sub-folder per class')


def check_data_dir(data_dir: str, manifest: str = '') -> None:
  """The checks of list_sources that need no full listing, for an entry point that should fail
  before it imports TFX: the folder exists and, without a manifest, holds a file somewhere (the
  walk stops at the first). list_sources, in the pipeline, still decides the rest."""
  if not os.path.isdir(data_dir):
    raise _missing(data_dir)
  if not manifest and not any(files for _, _, files in os.walk(data_dir)):
    raise _no_files(data_dir)


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


def _refusal(st: os.stat_result, max_file_bytes: int) -> str:
  if not stat.S_ISREG(st.st_mode):
    return _NOT_REGULAR
  if st.st_size > max_file_bytes:
    return f'file size {st.st_size} bytes exceeds max_file_bytes {max_file_bytes}'
  return ''


def container_refusal(path) -> str:
  """Why a TFRecord input cannot be opened ('' = it can), from its stat alone: a FIFO named
  x.tfrecord would block the reader forever. The container's size is not bounded (TFRecord
  files can hold many GB); each record's image is, by max_file_bytes."""
  try:
    st = os.stat(path)
  except OSError as e:
    return f'cannot read file: {e.strerror or e}'
  return '' if stat.S_ISREG(st.st_mode) else _NOT_REGULAR


def read_image_file(path, max_file_bytes: int) -> Tuple[Optional[bytes], str]:
  """(bytes, '') of one image file, or (None, reason) when it is refused or unreadable.

  Non-regular and oversize files are refused from their stat, before any open; the file is
  then opened non-blocking, its descriptor checked again, and at most max_file_bytes + 1
  bytes are read (see the module docstring).
  """
  try:
    reason = _refusal(os.stat(path), max_file_bytes)
    if reason:
      return None, reason
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
  except OSError as e:
    return None, f'cannot read file: {e.strerror or e}'
  try:
    st = os.fstat(fd)
    reason = _refusal(st, max_file_bytes)
    if reason:
      return None, reason
    chunks, total = [], 0
    want = min(st.st_size, max_file_bytes) + 1  # one read, +1 to see a file that grew
    while total <= max_file_bytes:
      chunk = os.read(fd, want - total if total < want
                      else min(1 << 20, max_file_bytes + 1 - total))
      if not chunk:
        break
      chunks.append(chunk)
      total += len(chunk)
  except OSError as e:
    return None, f'cannot read file: {e.strerror or e}'
  finally:
    os.close(fd)
  if total > max_file_bytes:
    return None, f'file grew past max_file_bytes {max_file_bytes} while being read'
  return b''.join(chunks), ''


@dataclasses.dataclass(frozen=True)
class Decoded:
  """One validated image. stored is None when it is unusable, and reason says why."""
  stored: Optional[bytes]
  height: int  # of the stored image (of the declared one when unusable)
  width: int
  reason: str = ''
  # (width, height) as declared, when the image was downscaled to fit MAX_DECODE_PIXELS.
  original_size: Optional[Tuple[int, int]] = None


def fit_within(width: int, height: int, max_pixels: int) -> Tuple[int, int]:
  """The largest (width, height) of the same aspect with width * height <= max_pixels."""
  if width * height <= max_pixels:
    return width, height
  scale = math.sqrt(max_pixels / (width * height))
  w, h = max(1, int(width * scale)), max(1, int(height * scale))
  while w * h > max_pixels:  # float rounding: shrink the longer side until it fits
    if w >= h:
      w -= 1
    else:
      h -= 1
  return w, h


def _declared_size_past_guard(data: bytes) -> Optional[Tuple[int, int]]:
  """(width, height) in the header of an image Pillow's bomb guard refused to open.

  Image.open raises without giving the size; the format's own opener (the factory Image.open
  calls, from Image.OPEN) parses the header alone and decodes no pixel.
  """
  Image.init()
  for fmt in Image.ID:
    factory, accept = Image.OPEN[fmt]
    verdict = accept(data[:16]) if accept else True
    if not verdict or isinstance(verdict, str):
      continue
    try:
      return factory(io.BytesIO(data), '').size
    except Exception:  # pylint: disable=broad-except  (not this format: try the next)
      continue
  return None


def _too_large(width: int, height: int, max_pixels: int) -> str:
  return (f'declared size {width}x{height} = {width * height} pixels exceeds max_pixels '
          f'{max_pixels}')


def _open(data: bytes, max_pixels: int):
  """(image, None) from the header alone, or (None, the Decoded refusal)."""
  try:
    return Image.open(io.BytesIO(data)), None
  except Image.DecompressionBombError as e:
    size = _declared_size_past_guard(data)
    if size is None:
      return None, Decoded(None, 0, 0, f'declared size exceeds max_pixels {max_pixels} ({e})')
    return None, Decoded(None, size[1], size[0], _too_large(*size, max_pixels))
  except UnidentifiedImageError:
    return None, Decoded(None, 0, 0, 'not a recognised image format')
  except (OSError, SyntaxError, ValueError) as e:
    return None, Decoded(None, 0, 0, f'cannot decode image: {e}')


def decode_image(data: bytes, min_side: int = 1, max_pixels: int = limits.PILLOW_BOMB_PIXELS,
                 max_decode_pixels: int = limits.MAX_DECODE_PIXELS) -> Decoded:
  """Decodes `data` fully and says what to store (see the module docstring for the bounds).

  Files TensorFlow decodes as they are (8-bit RGB/greyscale JPEG and PNG, upright, within
  max_decode_pixels) are stored unchanged; every other image (BMP, GIF first frame, WebP,
  TIFF, palette, RGBA, CMYK, 16-bit, EXIF-rotated, downscaled) is stored re-encoded from its
  upright RGB pixels.
  """
  if max_pixels < 1:
    raise ValueError(f'max_pixels must be >= 1 (there is no "no limit"), got {max_pixels}')
  if not data:
    return Decoded(None, 0, 0, 'empty file (0 bytes)')
  image, refused = _open(data, max_pixels)
  if refused is not None:
    return refused
  fmt = image.format
  width, height = image.size
  if fmt not in SUPPORTED_FORMATS:
    return Decoded(None, height, width, f'unsupported image format {fmt}')
  if width * height > max_pixels:
    return Decoded(None, height, width, _too_large(width, height, max_pixels))
  downscale = width * height > max_decode_pixels
  if downscale and fmt in _JPEG_FAMILY:  # decode at 1/2, 1/4 or 1/8 scale when that suffices
    image.draft('RGB', fit_within(width, height, max_decode_pixels))
  try:
    image.load()  # decodes every pixel (first frame): truncated files fail here
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    return Decoded(None, height, width, f'cannot decode image: {e}')
  if min(width, height) < min_side:
    return Decoded(None, height, width, f'image too small ({width}x{height}, min side {min_side})')
  orientation = image.getexif().get(_ORIENTATION_TAG, 1) if fmt in _JPEG_FAMILY else 1
  upright_ok = orientation in (1, None)
  if not downscale and fmt in _KEEP_AS_IS and image.mode in ('RGB', 'L') and upright_ok:
    return Decoded(data, height, width)
  rgb = _to_rgb(image if upright_ok else ImageOps.exif_transpose(image))
  if not downscale:
    return Decoded(_encode(rgb, 'PNG'), rgb.size[1], rgb.size[0])
  upright = (height, width) if orientation in _TRANSPOSED else (width, height)
  target = fit_within(*upright, max_decode_pixels)
  if rgb.size != target:
    rgb = rgb.resize(target, Image.Resampling.LANCZOS)
  return Decoded(_encode(rgb, 'JPEG' if fmt in _JPEG_FAMILY else 'PNG'), rgb.size[1],
                 rgb.size[0], original_size=(width, height))


def _encode(image: Image.Image, fmt: str) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
  return buffer.getvalue()


def decode_and_validate(data: bytes, min_side: int = 1,
                        max_pixels: int = limits.PILLOW_BOMB_PIXELS
                        ) -> Tuple[Optional[bytes], int, int, str]:
  """decode_image as (bytes_to_store, height, width, reason)."""
  decoded = decode_image(data, min_side, max_pixels)
  return decoded.stored, decoded.height, decoded.width, decoded.reason


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
