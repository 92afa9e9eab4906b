"""ImageIngest's Beam executor on messy folders: every bad input quarantined with its reason,
duplicates recorded, TFRecord and manifest inputs, labelled fraction, stable splits."""
import io
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import artifact_utils

import schemas
from components.image_ingest import executor as ingest_executor
from components.image_ingest.images import IngestError
from tests.conftest import png_bytes

# Runs the pipeline, or starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow


def image(seed, size=(12, 10), mode='RGB'):
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
  return Image.fromarray(pixels).convert(mode)


def encoded(img, fmt, **kwargs):
  buffer = io.BytesIO()
  img.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def run_ingest(data_dir, out_dir, **params):
  params = {'eval_percent': 30, 'min_side': 4, 'max_pixels': 10**7, **params}
  return ingest_executor.run_standalone(str(data_dir), out_dir, **params)


def read_split(examples, split):
  spec = {k: tf.io.FixedLenFeature([], t) for k, t in (
      (schemas.FILENAME_KEY, tf.string), (schemas.LABEL_KEY, tf.int64),
      (schemas.LABELLED_KEY, tf.int64), (schemas.IMAGE_KEY, tf.string))}
  files = tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*.gz'))
  records = [tf.io.parse_single_example(r, spec) for r in
             tf.data.TFRecordDataset(files, compression_type='GZIP')]
  return {r[schemas.FILENAME_KEY].numpy().decode('utf-8', 'surrogateescape'): r for r in records}


@pytest.fixture()
def messy_folder(tmp_path):
  root = tmp_path / 'messy'
  good = {
      'cat/rgb.jpg': encoded(image(1), 'JPEG'),
      'cat/gray.png': encoded(image(2, mode='L'), 'PNG'),
      'cat/cmyk.jpg': encoded(image(3, mode='CMYK'), 'JPEG'),
      'cat/palette.png': encoded(image(4, mode='P'), 'PNG'),
      'cat/deep/nested/rgba.png': encoded(image(5, mode='RGBA'), 'PNG'),
      'dog/sixteen.png': encoded(Image.fromarray(
          np.random.default_rng(6).integers(0, 65535, (10, 12), dtype=np.uint16)), 'PNG'),
      'dog/pic.bmp': encoded(image(7), 'BMP'),
      'dog/anim.gif': encoded(image(8), 'GIF', save_all=True, append_images=[image(9)]),
      'dog/pic.webp': encoded(image(10), 'WEBP', lossless=True),
      'dog/pic.tiff': encoded(image(11), 'TIFF'),
      'unlabelled.png': encoded(image(12), 'PNG'),
      'dog/copy_of_rgb.jpg': encoded(image(1), 'JPEG'),  # duplicate of cat/rgb.jpg
  }
  header = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
  header[16:24] = (60000).to_bytes(4, 'big') * 2
  import zlib
  header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, 'big')
  bad = {
      'cat/empty.jpg': (b'', 'empty file'),
      'cat/truncated.jpg': (encoded(image(20, (64, 64)), 'JPEG')[:300], 'cannot decode image'),
      'cat/truncated.png': (encoded(image(21, (64, 64)), 'PNG')[:200], 'cannot decode image'),
      'dog/text.jpg': (b'hello, not an image', 'not a recognised image format'),
      'dog/error.png': (b'<html><body>502 Bad Gateway</body></html>',
                        'not a recognised image format'),
      'dog/huge.png': (bytes(header), 'declared size 60000x60000'),
      'dog/tiny.png': (encoded(image(22, (1, 1)), 'PNG'), 'image too small'),
      'dog/icon.ico': (encoded(image(23, (16, 16)), 'ICO'), 'unsupported image format ICO'),
  }
  for rel, data in list(good.items()) + [(k, v[0]) for k, v in bad.items()]:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  # A non-UTF-8 file name, valid content.
  weird = os.path.join(str(root).encode(), b'cat', b'caf\xe9.png')
  with open(weird, 'wb') as f:
    f.write(encoded(image(30), 'PNG'))
  # Filesystem oddities: each must end in the quarantine with a reason, never hang or vanish.
  os.symlink('loop_b.png', root / 'cat' / 'loop_a.png')  # a symlink loop
  os.symlink('loop_a.png', root / 'cat' / 'loop_b.png')
  os.symlink('does_not_exist.png', root / 'dog' / 'dangling.png')
  os.mkfifo(root / 'dog' / 'fifo.png')  # opening it would block forever
  os.symlink('..', root / 'cat' / 'up')  # a folder link that would loop
  bad.update({
      'cat/loop_a.png': (None, 'cannot read file: Too many levels of symbolic links'),
      'cat/loop_b.png': (None, 'cannot read file: Too many levels of symbolic links'),
      'dog/dangling.png': (None, 'cannot read file: No such file or directory'),
      'dog/fifo.png': (None, 'not a regular file'),
      'cat/up': (None, 'symlinked folder not followed'),
  })
  if os.geteuid() != 0:  # root reads files whatever their mode
    (root / 'dog' / 'locked.png').write_bytes(encoded(image(31), 'PNG'))
    os.chmod(root / 'dog' / 'locked.png', 0)
    bad['dog/locked.png'] = (None, 'cannot read file: Permission denied')
  return root, good, bad


def test_every_bad_file_is_quarantined_with_its_reason(messy_folder, tmp_path):
  root, good, bad = messy_folder
  report, examples = run_ingest(root, str(tmp_path / 'out'))
  reasons = {q['path']: q['reason'] for q in report['quarantined']}
  assert sorted(reasons) == sorted(bad)
  for rel, (_, reason) in bad.items():
    assert reasons[rel].startswith(reason), (rel, reasons[rel])
  assert report['num_duplicates'] == 1
  assert report['duplicates'][0] == {'path': 'dog/copy_of_rgb.jpg', 'duplicate_of': 'cat/rgb.jpg',
                                     'sha256': report['duplicates'][0]['sha256']}
  # 12 good files + the non-UTF-8 one, minus one duplicate.
  assert report['num_examples'] == len(good) + 1 - 1
  assert report['num_records'] == report['num_examples'] + len(bad) + 1  # + the duplicate
  assert report['classes'] == ['cat', 'dog']
  records = {**read_split(examples, 'train'), **read_split(examples, 'eval')}
  assert len(records) == report['num_examples']
  assert int(records['unlabelled.png'][schemas.LABEL_KEY]) == -1
  assert int(records['cat/deep/nested/rgba.png'][schemas.LABEL_KEY]) == 0
  assert int(records['dog/pic.webp'][schemas.LABEL_KEY]) == 1
  for rel, record in records.items():  # everything stored decodes in TensorFlow as RGB
    decoded = tf.io.decode_image(record[schemas.IMAGE_KEY], channels=3, expand_animations=False)
    assert decoded.shape[-1] == 3, rel


def test_split_and_fingerprint_are_stable_across_reruns(messy_folder, tmp_path):
  root, _, _ = messy_folder
  first, examples_1 = run_ingest(root, str(tmp_path / 'a'))
  second, examples_2 = run_ingest(root, str(tmp_path / 'b'))
  assert first['data_fingerprint'] == second['data_fingerprint']
  for split in ('train', 'eval'):
    assert sorted(read_split(examples_1, split)) == sorted(read_split(examples_2, split))


def test_nothing_valid_or_too_many_bad_fails_clearly(tmp_path):
  root = tmp_path / 'bad_only'
  root.mkdir()
  (root / 'a.jpg').write_bytes(b'')
  (root / 'b.png').write_bytes(b'nope')
  with pytest.raises(IngestError, match='no valid image .* all 2 inputs were quarantined'):
    run_ingest(root, str(tmp_path / 'out'))
  for i in range(3):
    (root / f'ok{i}.png').write_bytes(encoded(image(40 + i), 'PNG'))
  with pytest.raises(IngestError, match=r'2 of 5 inputs .* max_bad_fraction 30%'):
    run_ingest(root, str(tmp_path / 'out2'), max_bad_fraction=0.3)


def test_tfrecord_input_and_manifest(tmp_path):
  root = tmp_path / 'records'
  root.mkdir()

  def example(img_bytes, **features):
    feature = {schemas.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[img_bytes]))}
    for key, value in features.items():
      if isinstance(value, int):
        feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
      else:
        feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

  with tf.io.TFRecordWriter(str(root / 'part.tfrecord.gz'), options='GZIP') as writer:
    writer.write(example(encoded(image(50), 'PNG'), **{'image/class/text': b'ok'}))
    writer.write(example(encoded(image(51), 'JPEG'), **{'image/class/label': 3}))
    writer.write(example(encoded(image(52), 'PNG')))
    writer.write(example(b'garbage'))
    writer.write(tf.train.Example().SerializeToString())
  report, examples = run_ingest(root, str(tmp_path / 'out'), eval_percent=50)
  assert report['num_examples'] == 3 and report['classes'] == ['3', 'ok']
  reasons = {q['path']: q['reason'] for q in report['quarantined']}
  assert reasons == {'part.tfrecord.gz#3': 'not a recognised image format',
                     'part.tfrecord.gz#4': 'tf.Example has no image/encoded bytes'}

  pics = tmp_path / 'pics'
  pics.mkdir()
  for i in range(6):
    (pics / f'p{i}.png').write_bytes(encoded(image(60 + i), 'PNG'))
  manifest = tmp_path / 'labels.csv'
  manifest.write_text('path,label\np0.png,good\np1.png,bad\np2.png,good\np3.png,\n'
                      'gone.png,bad\n')
  report, _ = run_ingest(pics, str(tmp_path / 'out2'), manifest=str(manifest), eval_percent=50)
  assert report['num_examples'] == 4 and report['classes'] == ['bad', 'good']
  assert report['num_not_in_manifest'] == 2
  assert [q['path'] for q in report['quarantined']] == ['gone.png']
  assert report['quarantined'][0]['reason'].startswith('cannot read file')


def test_labelled_fraction_flags_a_class_balanced_subset(mnist_subset, tmp_path):
  report, examples = run_ingest(mnist_subset, str(tmp_path / 'out'), labelled_fraction=0.1)
  train = read_split(examples, 'train')
  flagged = [r for r in train.values() if int(r[schemas.LABELLED_KEY]) == 1]
  per_class = {c: v['train_labelled'] for c, v in report['per_class'].items()}
  assert set(per_class) == {str(d) for d in range(10)}
  for name, counts in report['per_class'].items():
    assert counts['train_labelled'] == max(1, round(0.1 * counts['train'])), name
  assert len(flagged) == report['num_labelled_for_probe'] == sum(per_class.values())
  assert all(int(r[schemas.LABEL_KEY]) >= 0 for r in train.values())  # true labels kept
  evaluation = read_split(examples, 'eval')
  assert all(int(r[schemas.LABELLED_KEY]) == 1 for r in evaluation.values())


def test_multi_processing_direct_runner_gives_the_same_data(messy_folder, tmp_path):
  """The mode that spreads ingest over every core: functions and records must survive
  pickling into worker processes, and the result must not depend on the runner mode."""
  root, _, _ = messy_folder
  single, _ = run_ingest(root, str(tmp_path / 'single'))
  multi, _ = ingest_executor.run_standalone(
      str(root), str(tmp_path / 'multi'), eval_percent=30, min_side=4, max_pixels=10**7,
      beam_pipeline_args=['--runner=DirectRunner', '--direct_running_mode=multi_processing',
                          '--direct_num_workers=2'])
  assert multi['data_fingerprint'] == single['data_fingerprint']
  assert multi['quarantined'] == single['quarantined']


# --- hardening: resources, limits and settings ----------------------------------------------


def small_folder(root, count=8):
  """`count` distinct small PNGs at the root of a new folder (both splits non-empty at 50%)."""
  root.mkdir(parents=True, exist_ok=True)
  for i in range(count):
    (root / f'ok{i}.png').write_bytes(encoded(image(100 + i), 'PNG'))
  return root


def test_a_huge_sparse_file_is_quarantined_from_its_size_without_being_read(tmp_path):
  import resource
  root = small_folder(tmp_path / 'data')
  with open(root / 'x.jpg', 'wb') as f:
    f.truncate(64 * 2**30)  # 64 GiB of holes: costs nothing on disk, 64 GiB if read
  peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  report, _ = run_ingest(root, str(tmp_path / 'out'), eval_percent=50)
  reasons = {q['path']: q['reason'] for q in report['quarantined']}
  assert set(reasons) == {'x.jpg'}
  assert str(64 * 2**30) in reasons['x.jpg'] and 'max_file_bytes' in reasons['x.jpg']
  assert report['num_examples'] == 8
  grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib
  assert grown_kib < 2**20, f'peak memory grew by {grown_kib} KiB: the file was read'


@pytest.mark.timeout(600)
def test_a_fifo_named_tfrecord_is_quarantined_without_being_opened(tmp_path):
  """A reader that opens a FIFO blocks until a writer comes. A watcher plays that writer:
  opening the FIFO for writing without blocking succeeds only while someone has it open
  for reading, so the watcher both detects an open and releases it (the test never hangs)."""
  import threading
  root = small_folder(tmp_path / 'data')
  fifo = root / 'x.tfrecord'
  os.mkfifo(fifo)
  done, opened = threading.Event(), []

  def watch():
    while not done.wait(0.05):
      try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
      except OSError:  # ENXIO: nobody is reading it
        continue
      opened.append(True)
      os.close(fd)  # the reader sees end of file and goes on

  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  try:
    report, _ = run_ingest(root, str(tmp_path / 'out'), eval_percent=50)
  finally:
    done.set()
    watcher.join()
  assert not opened, 'ingest opened the FIFO'
  reasons = {q['path']: q['reason'] for q in report['quarantined']}
  assert reasons == {'x.tfrecord': 'not a regular file (FIFO, socket or device)'}


def test_a_sixty_megapixel_photo_is_downscaled_and_kept(tmp_path):
  from components import limits
  root = small_folder(tmp_path / 'data')
  # 60.3 MP: above what the transform decodes (MAX_DECODE_PIXELS), under max_pixels.
  Image.new('RGB', (9000, 6700), (200, 120, 40)).save(root / 'big.jpg', format='JPEG')
  report, examples = ingest_executor.run_standalone(str(root), str(tmp_path / 'out'),
                                                    eval_percent=50)
  assert report['num_quarantined'] == 0 and report['num_examples'] == 9
  assert report['num_downscaled'] == 1
  row = report['downscaled'][0]
  assert (row['path'], row['original_width'], row['original_height']) == ('big.jpg', 9000, 6700)
  assert row['width'] * row['height'] <= limits.MAX_DECODE_PIXELS
  assert abs(row['width'] / row['height'] - 9000 / 6700) < 1e-3  # aspect kept
  records = {**read_split(examples, 'train'), **read_split(examples, 'eval')}
  stored = records['big.jpg'][schemas.IMAGE_KEY]
  height, width, _ = tf.io.extract_jpeg_shape(stored).numpy()  # stored as a JPEG
  assert (width, height) == (row['width'], row['height'])


def test_max_bad_fraction_zero_fails_on_one_bad_file(tmp_path):
  root = small_folder(tmp_path / 'data')
  (root / 'broken.jpg').write_bytes(b'not an image')
  report, _ = run_ingest(root, str(tmp_path / 'tolerant'), eval_percent=50,
                         max_bad_fraction=0.5)
  assert report['num_quarantined'] == 1
  with pytest.raises(IngestError, match=r'1 of 9 inputs'):
    run_ingest(root, str(tmp_path / 'strict'), eval_percent=50, max_bad_fraction=0)


def test_an_unreadable_sub_folder_is_reported_in_the_quarantine(tmp_path, monkeypatch):
  import errno
  root = small_folder(tmp_path / 'data')
  locked = root / 'cat' / 'locked'
  locked.mkdir(parents=True)
  (locked / 'hidden.png').write_bytes(encoded(image(200), 'PNG'))
  if os.geteuid() != 0:
    os.chmod(locked, 0)
  else:  # root lists any folder whatever its mode: make listing this one fail as it would
    real_scandir = os.scandir

    def scandir(path='.'):
      if not isinstance(path, int) and os.path.normpath(os.fspath(path)) == str(locked):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
      return real_scandir(path)
    monkeypatch.setattr(os, 'scandir', scandir)
  try:
    report, _ = run_ingest(root, str(tmp_path / 'out'), eval_percent=50)
  finally:
    os.chmod(locked, 0o755)
  reasons = {q['path']: q['reason'] for q in report['quarantined']}
  assert list(reasons) == ['cat/locked']
  assert reasons['cat/locked'].startswith('cannot list folder: Permission denied')


@pytest.mark.parametrize('key', ['max_pixels', 'max_file_bytes'])
def test_config_refuses_a_zero_bound_and_names_it(key):
  from pipeline.config import ConfigError, build_config
  assert getattr(build_config(set_args=[f'{key}=1']), key) == 1
  with pytest.raises(ConfigError, match=key):
    build_config(set_args=[f'{key}=0'])


def test_a_beam_step_writes_nothing_outside_its_output_folder(tmp_path, monkeypatch):
  """TFX's BaseBeamExecutor left a 50 MB copy of TFX in a new /tmp folder on every Beam step;
  the project's Beam executors (components/beam_executor.py) must leave the system temp folder
  as they found it."""
  root = small_folder(tmp_path / 'data')
  system_tmp = tmp_path / 'system_tmp'
  system_tmp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(system_tmp))
  report, _ = ingest_executor.run_standalone(str(root), str(tmp_path / 'out'),
                                             beam_pipeline_args=['--runner=DirectRunner'])
  assert report['num_examples'] > 0
  assert sorted(os.listdir(system_tmp)) == []
