"""ImageIngest's Beam executor on messy folders: every bad input quarantined with its reason,
duplicates recorded, TFRecord and manifest inputs, labelled fraction, stable splits."""
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import artifact_utils

import schemas
from components.image_ingest import executor as ingest_executor
from components.image_ingest.images import IngestError
from tests.conftest import png_bytes


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
