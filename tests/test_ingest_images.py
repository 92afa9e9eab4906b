"""ImageIngest's per-file rules: what is valid, what is quarantined and why, which split."""
import importlib
import io
import os
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from components import limits
from components.image_ingest import images
from tests.conftest import png_bytes


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def decode_stored(data: bytes) -> Image.Image:
  return Image.open(io.BytesIO(data))


RGB = (np.arange(20 * 30 * 3) % 251).astype(np.uint8).reshape(20, 30, 3)


def test_rgb_png_and_jpeg_are_stored_unchanged():
  for data in (png_bytes(RGB), encode(Image.fromarray(RGB), 'JPEG')):
    stored, height, width, reason = images.decode_and_validate(data)
    assert stored == data and (height, width) == (20, 30) and reason == ''


@pytest.mark.parametrize('make', [
    lambda: encode(Image.fromarray(RGB).convert('CMYK'), 'JPEG'),
    lambda: encode(Image.fromarray(RGB).convert('P'), 'PNG'),
    lambda: encode(Image.fromarray(RGB).convert('RGBA'), 'PNG'),
    lambda: encode(Image.fromarray((RGB[..., 0].astype(np.uint16) * 257)), 'PNG'),
    lambda: encode(Image.fromarray(RGB), 'BMP'),
    lambda: encode(Image.fromarray(RGB), 'GIF'),
    lambda: encode(Image.fromarray(RGB), 'WEBP'),
    lambda: encode(Image.fromarray(RGB), 'TIFF'),
    lambda: encode(Image.fromarray(RGB[..., 0] > 100), 'PNG'),  # 1-bit
])
def test_other_modes_become_rgb_png(make):
  stored, height, width, reason = images.decode_and_validate(make())
  assert reason == '' and (height, width) == (20, 30)
  image = decode_stored(stored)
  assert image.format == 'PNG' and image.mode == 'RGB'


def test_sixteen_bit_is_scaled_not_clipped():
  gray16 = np.full((4, 4), 65535 // 2, np.uint16)
  stored, _, _, _ = images.decode_and_validate(encode(Image.fromarray(gray16), 'PNG'))
  assert abs(int(np.asarray(decode_stored(stored))[0, 0, 0]) - 127) <= 1


def test_exif_orientation_is_applied():
  image = Image.fromarray(RGB)  # 30 wide, 20 high
  exif = image.getexif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  stored, height, width, reason = images.decode_and_validate(
      encode(image, 'JPEG', exif=exif.tobytes()))
  assert reason == '' and (height, width) == (30, 20)


@pytest.mark.parametrize('data,reason', [
    (b'', 'empty file'),
    (b'this is text, not a picture', 'not a recognised image format'),
    (b'<html><body>404 Not Found</body></html>', 'not a recognised image format'),
    (png_bytes(RGB)[:60], 'cannot decode image'),
    (encode(Image.fromarray(RGB), 'JPEG')[:200], 'cannot decode image'),
])
def test_bad_files_get_a_reason(data, reason):
  stored, _, _, got = images.decode_and_validate(data)
  assert stored is None and got.startswith(reason)


def test_min_side():
  stored, _, _, reason = images.decode_and_validate(png_bytes(RGB[:1, :1]), min_side=8)
  assert stored is None and 'too small' in reason


def test_split_is_deterministic_and_near_the_requested_share():
  import hashlib
  shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
  splits = [images.split_for(s, 20) for s in shas]
  assert splits == [images.split_for(s, 20) for s in shas]
  assert 0.17 < splits.count('eval') / len(splits) < 0.23


def test_listing_classes_and_empty_folder(tmp_path):
  (tmp_path / 'cat').mkdir()
  (tmp_path / 'dog').mkdir()
  (tmp_path / 'cat' / 'a.png').write_bytes(b'x')
  (tmp_path / 'dog' / 'b.png').write_bytes(b'x')
  (tmp_path / 'loose.png').write_bytes(b'x')
  files = images.list_source_files(str(tmp_path))
  assert [(f.relpath, f.class_name) for f in files] == [
      ('loose.png', ''), ('cat/a.png', 'cat'), ('dog/b.png', 'dog')]
  assert images.class_index(f.class_name for f in files) == ['cat', 'dog']
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(images.IngestError, match='holds no files to ingest'):
    images.list_source_files(str(empty))
  with pytest.raises(images.IngestError, match='does not exist'):
    images.list_source_files(str(tmp_path / 'missing'))


def test_source_fingerprint_changes_with_the_folder(tmp_path):
  (tmp_path / 'a.png').write_bytes(b'1')
  before = images.source_fingerprint(str(tmp_path))
  assert before == images.source_fingerprint(str(tmp_path))
  (tmp_path / 'b.png').write_bytes(b'2')
  assert images.source_fingerprint(str(tmp_path)) != before


def test_animated_gif_keeps_the_first_frame():
  frames = [Image.fromarray(np.full((10, 10, 3), v, np.uint8)) for v in (10, 200)]
  buffer = io.BytesIO()
  frames[0].save(buffer, format='GIF', save_all=True, append_images=frames[1:])
  stored, _, _, reason = images.decode_and_validate(buffer.getvalue())
  assert reason == '' and np.asarray(decode_stored(stored))[0, 0, 0] < 50


def test_unsupported_format_and_declared_size_limit():
  ico = encode(Image.fromarray(RGB), 'ICO')
  stored, _, _, reason = images.decode_and_validate(ico)
  assert stored is None and reason == 'unsupported image format ICO'
  # A PNG whose header declares 100000 x 100000 pixels: refused from the header, never decoded.
  header = bytearray(png_bytes(RGB[:1, :1]))
  header[16:24] = (100000).to_bytes(4, 'big') * 2
  header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, 'big')  # a valid IHDR chunk
  stored, height, width, reason = images.decode_and_validate(bytes(header), max_pixels=10**8)
  assert stored is None and (height, width) == (100000, 100000)
  assert reason.startswith('declared size 100000x100000') and 'max_pixels' in reason


def test_include_exclude_globs(tmp_path):
  for rel in ('cat/a.png', 'cat/thumbs/t.png', 'dog/b.jpg', 'notes.txt'):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_bytes(b'x')
  listing = images.list_sources(str(tmp_path), include=['*.png', '*.jpg'], exclude=['*/thumbs/*'])
  assert [f.relpath for f in listing.files] == ['cat/a.png', 'dog/b.jpg']
  assert sorted(listing.excluded) == ['cat/thumbs/t.png', 'notes.txt']
  # Deeper folders belong to their first-level class folder.
  nested = images.list_sources(str(tmp_path), include=['t.png']).files
  assert [(f.relpath, f.class_name) for f in nested] == [('cat/thumbs/t.png', 'cat')]
  with pytest.raises(images.IngestError, match='excluded by the include/exclude globs'):
    images.list_sources(str(tmp_path), exclude=['*'])


def test_manifest(tmp_path):
  (tmp_path / 'x.png').write_bytes(b'x')
  (tmp_path / 'y.png').write_bytes(b'x')
  (tmp_path / 'z.png').write_bytes(b'x')
  manifest = tmp_path / 'm.csv'
  manifest.write_text('path,label\nx.png,ok\ny.png,\nmissing.png,defect\n')
  listing = images.list_sources(str(tmp_path), manifest=str(manifest))
  assert [(f.relpath, f.class_name) for f in listing.files] == [
      ('x.png', 'ok'), ('y.png', ''), ('missing.png', 'defect')]
  assert listing.not_in_manifest == 2  # z.png and the manifest itself
  bad = tmp_path / 'bad.csv'
  bad.write_text('a,b,c\n')
  with pytest.raises(images.IngestError, match='expected "path,label"'):
    images.list_sources(str(tmp_path), manifest=str(bad))


def test_labelled_fraction_is_class_balanced_deterministic_and_nested():
  import hashlib
  by_class = {c: [hashlib.sha256(f'{c}{i}'.encode()).hexdigest() for i in range(n)]
              for c, n in (('a', 200), ('b', 50), ('c', 3))}
  ten = images.select_labelled(by_class, 0.10)
  assert sum(s in ten for s in by_class['a']) == 20 and sum(s in ten for s in by_class['b']) == 5
  assert sum(s in ten for s in by_class['c']) == 1  # at least one label per class
  one = images.select_labelled(by_class, 0.01)
  assert one <= ten  # a smaller fraction is a subset of a larger one
  assert images.select_labelled(by_class, 0.10) == ten
  assert len(images.select_labelled(by_class, 1.0)) == 253


def declared_png(width, height) -> bytes:
  """A PNG whose valid IHDR declares width x height, with no pixel data behind it."""
  header = bytearray(png_bytes(RGB[:1, :1]))
  header[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
  header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, 'big')
  return bytes(header)


def test_pillow_bomb_guard_stays_on():
  importlib.import_module('components.image_ingest.executor')  # imports images too
  assert Image.MAX_IMAGE_PIXELS is not None
  assert 2 * Image.MAX_IMAGE_PIXELS == limits.PILLOW_BOMB_PIXELS


def test_a_header_above_max_pixels_is_quarantined_without_decoding(monkeypatch):
  def no_decoding(self, *args, **kwargs):
    raise AssertionError('pixels were decoded')
  monkeypatch.setattr(ImageFile.ImageFile, 'load', no_decoding)
  for width, height, kwargs in (
      (20000, 20000, {}),  # above Pillow's guard: refused by the default bound
      (12000, 12000, {'max_pixels': 10**8})):  # under the guard, above the configured bound
    stored, got_height, got_width, reason = images.decode_and_validate(
        declared_png(width, height), **kwargs)
    assert stored is None and (got_height, got_width) == (height, width)
    assert reason.startswith(f'declared size {width}x{height}') and 'max_pixels' in reason


def test_max_pixels_zero_is_not_a_way_to_remove_the_bound():
  with pytest.raises(ValueError, match='max_pixels'):
    images.decode_and_validate(png_bytes(RGB), max_pixels=0)


def test_a_tree_deeper_than_the_recursion_limit_lists(tmp_path):
  depth = sys.getrecursionlimit() + 200
  (tmp_path / 'top.png').write_bytes(b'x')
  path = str(tmp_path)
  for _ in range(depth):  # os.makedirs recurses once per level: build it level by level
    path = os.path.join(path, 'd')
    os.mkdir(path)
  with open(os.path.join(path, 'deep.png'), 'wb') as f:
    f.write(b'x')
  try:
    files = images.list_sources(str(tmp_path)).files
    assert [(f.relpath.count('/'), f.class_name) for f in files] == [(0, ''), (depth, 'd')]
  finally:  # shutil.rmtree recurses too: remove the tree bottom up
    os.remove(os.path.join(path, 'deep.png'))
    while path != str(tmp_path):
      os.rmdir(path)
      path = os.path.dirname(path)
