"""Bounded serving requests: at most MAX_REQUEST_IMAGES images and MAX_REQUEST_PIXELS declared
pixels per request, refused with INVALID_ARGUMENT before decoding; the clients in this repository
(LinearEvaluator, `simclr-tfx embed`) split their work into requests within those bounds; and the
largest allowed request fits the memory limit of infra/serving/deployment.yaml."""
import glob
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import schemas
from components import limits
from components import io_utils
from simclr_tools import serving_client
from tests.conftest import REPO, embed_with_cli, forged_png, png_bytes, pushed
from tests.serving_double import TFServingDouble

HERE = os.path.dirname(os.path.abspath(__file__))


def within_limits(batches, pixel_counts):
  return all(len(b) <= limits.MAX_REQUEST_IMAGES and
             sum(pixel_counts[i] for i in b) <= limits.MAX_REQUEST_PIXELS for b in batches)


def test_plan_batches_keeps_order_and_both_limits():
  counts = [3, 4, 0, 2, 5, 1, 1, 1]
  batches = limits.plan_batches(counts, max_images=3, max_pixels=7)
  assert batches == [[0, 1, 2], [3, 4], [5, 6, 7]]
  assert limits.plan_batches([], max_images=3, max_pixels=7) == []
  assert limits.plan_batches([0] * 7, max_images=3, max_pixels=7) == [[0, 1, 2], [3, 4, 5], [6]]
  rng = np.random.default_rng(0)
  counts = list(rng.integers(0, 3_000_000, 2000))
  batches = limits.plan_batches(counts)
  assert [i for b in batches for i in b] == list(range(2000))
  assert within_limits(batches, counts)


def test_plan_batches_sends_an_image_over_the_pixel_limit_alone():
  # Alone, so that the server refuses it by name and the other images are still served.
  assert limits.plan_batches([1, 9, 1, 1], max_images=10, max_pixels=5) == [[0], [1], [2, 3]]
  assert limits.plan_batches([9], max_images=10, max_pixels=5) == [[0]]
  with pytest.raises(ValueError):
    limits.plan_batches([1], max_images=0)


def test_every_image_ingest_stores_fits_one_request():
  # Ingest stores images up to MAX_DECODE_PIXELS; each must be servable on its own.
  assert limits.MAX_REQUEST_PIXELS >= limits.MAX_DECODE_PIXELS
  assert limits.MAX_REQUEST_IMAGES >= 1


def test_evaluator_reads_batches_the_server_accepts(tmp_path):
  split = tmp_path / 'Split-train'
  split.mkdir()
  sides = [(3000, 2000)] * 30 + [(1, 1)] * 300  # 6 M pixels each, then more than 256 images
  with tf.io.TFRecordWriter(str(split / 'data.gz'), 'GZIP') as writer:
    for i, (height, width) in enumerate(sides):
      feature = {schemas.IMAGE_KEY: [str(i).encode()], schemas.LABEL_KEY: [i % 2],
                 schemas.LABELLED_KEY: [1], schemas.HEIGHT_KEY: [height],
                 schemas.WIDTH_KEY: [width]}
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          k: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)) if k == schemas.IMAGE_KEY
          else tf.train.Feature(int64_list=tf.train.Int64List(value=v))
          for k, v in feature.items()})).SerializeToString())
  batches, labels = io_utils.read_labelled(str(split))
  assert [int(x) for b in batches for x in b.numpy()] == list(range(len(sides)))
  assert list(labels) == [i % 2 for i in range(len(sides))]
  sizes = [len(b.numpy()) for b in batches]
  counts = [h * w for h, w in sides]
  starts = np.cumsum([0] + sizes[:-1])
  assert within_limits([list(range(s, s + n)) for s, n in zip(starts, sizes)], counts)


def test_embed_cli_reads_declared_sizes_from_headers_only(tmp_path):
  paths = {'real.png': png_bytes(np.zeros((20, 30, 3), np.uint8)),
           'forged.png': forged_png(7000, 7000),  # 69 bytes: Pillow reads the header only
           'notes.txt': b'not an image'}
  for name, data in paths.items():
    (tmp_path / name).write_bytes(data)
  assert limits.header_pixels([str(tmp_path / n) for n in paths]) == [600, 49_000_000, 0]
  assert limits.header_pixels(list(paths.values())) == [600, 49_000_000, 0]  # as embed reads


def tiny_pngs(n):
  return [png_bytes(np.full((4, 4, 3), i % 256, np.uint8)) for i in range(n)]


def gif_with_larger_frame() -> bytes:
  """A GIF whose header declares a 1x1 screen; TF decodes its 300x400 frame at full size."""
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((300, 400), np.uint8)).save(buffer, format='GIF')
  data = bytearray(buffer.getvalue())
  data[6:10] = (1).to_bytes(2, 'little') * 2
  return bytes(data)


def webp() -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(buffer, format='WEBP', lossless=True)
  return buffer.getvalue()


def test_signature_refuses_over_limit_requests_before_decoding(local_run):
  _, summary, _ = pushed(local_run)
  model = tf.saved_model.load(summary['pushed_destination'])
  serve = model.signatures['serving_default']
  good = tf.constant([png_bytes(np.full((20, 20, 3), 90, np.uint8))])
  before = serve(images=good)['embedding'].numpy()
  at_limit = serve(images=tf.constant(tiny_pngs(limits.MAX_REQUEST_IMAGES)))['embedding']
  assert at_limit.shape[0] == limits.MAX_REQUEST_IMAGES
  # 4 files of 69 bytes declaring 7000 x 7000 each: refused by the request's pixel sum, before
  # decoding (decoding them would fail otherwise, with TF's "Invalid PNG data").
  for images, message in ((tiny_pngs(limits.MAX_REQUEST_IMAGES + 1), 'MAX_REQUEST_IMAGES'),
                          ([forged_png(7000, 7000)] * 4, 'MAX_REQUEST_PIXELS'),
                          ([gif_with_larger_frame()], 'Unknown image file format'),
                          ([webp()], 'Unknown image file format')):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      serve(images=tf.constant(images))
    after = serve(images=good)['embedding'].numpy()  # the next request is served as before
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
  examples = [tf.train.Example(features=tf.train.Features(feature={
      schemas.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
              .SerializeToString() for image in tiny_pngs(limits.MAX_REQUEST_IMAGES + 1)]
  with pytest.raises(tf.errors.InvalidArgumentError, match='MAX_REQUEST_IMAGES'):
    model.signatures['serving_examples'](examples=tf.constant(examples))


def kubernetes_bytes(quantity: str) -> int:
  """A Kubernetes memory quantity ('4Gi', '512Mi', '2G', '1000') in bytes."""
  for suffix, factor in (('Ki', 2**10), ('Mi', 2**20), ('Gi', 2**30), ('Ti', 2**40),
                         ('k', 10**3), ('M', 10**6), ('G', 10**9), ('T', 10**12)):
    if quantity.endswith(suffix):
      return int(float(quantity[:-len(suffix)]) * factor)
  return int(quantity)


def serving_memory_limit() -> int:
  with open(os.path.join(REPO, 'infra', 'serving', 'deployment.yaml')) as f:
    deployment, = [d for d in yaml.safe_load_all(f) if d]
  container, = deployment['spec']['template']['spec']['containers']
  return kubernetes_bytes(container['resources']['limits']['memory'])


def gradient_png(path, side: int, seed: int):
  """Real pixels (a gradient: any content decodes to the same number of bytes)."""
  pixels = np.zeros((side, side, 3), np.uint8)
  pixels[:, :, 0] = (np.arange(side)[None, :] + seed) % 251
  pixels[:, :, 1] = seed % 256
  Image.fromarray(pixels).save(path, format='PNG', compress_level=1)


def test_largest_allowed_request_stays_under_the_serving_memory_limit(local_run, tmp_path):
  _, summary, _ = pushed(local_run)
  largest = str(tmp_path / 'largest.png')
  gradient_png(largest, math.isqrt(min(limits.MAX_DECODE_PIXELS, limits.MAX_REQUEST_PIXELS)), 0)
  small_dir = tmp_path / 'small'
  small_dir.mkdir()
  small_side = math.isqrt(limits.MAX_REQUEST_PIXELS // limits.MAX_REQUEST_IMAGES)
  for i in range(limits.MAX_REQUEST_IMAGES):
    gradient_png(str(small_dir / f'{i:03d}.png'), small_side, i)
  out = subprocess.run([sys.executable, os.path.join(HERE, 'serving_memory_check.py'),
                        summary['pushed_destination'], largest, str(small_dir)],
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  print('serving memory check:', result)  # the measured numbers, with pytest -s
  assert result['refused']  # the request just over the budget was refused
  assert result['largest_images']['rows'] == result['largest_images']['images'] >= 1
  assert result['most_images']['rows'] == limits.MAX_REQUEST_IMAGES
  assert result['peak_bytes'] < serving_memory_limit()


def test_over_limit_requests_over_the_network_and_the_next_is_answered(local_run):
  config, _, model_base = pushed(local_run)
  good = [png_bytes(np.full((20, 20, 3), 90, np.uint8))]
  with TFServingDouble(config.model_name, model_base) as server:
    for predict, address in ((serving_client.rest_predict, server.rest_address),
                             (serving_client.grpc_predict, server.grpc_address)):
      for images, limit in ((tiny_pngs(limits.MAX_REQUEST_IMAGES + 1), 'MAX_REQUEST_IMAGES'),
                            ([forged_png(7000, 7000)] * 4, 'MAX_REQUEST_PIXELS')):
        # The client sees the code and which limit, as TF Serving's status carries them.
        with pytest.raises(serving_client.ServingError,
                           match=f'(INVALID_ARGUMENT|HTTP 400): .*{limit}'):
          predict(address, config.model_name, images)
        assert predict(address, config.model_name, good)['embedding'].shape[0] == 1


def test_embed_cli_splits_what_one_request_cannot_carry(local_run, mnist_subset):
  config, summary, model_base = pushed(local_run)
  paths = sorted(glob.glob(os.path.join(mnist_subset, '*', '*.png')))
  assert len(paths) > limits.MAX_REQUEST_IMAGES
  serve = tf.saved_model.load(summary['pushed_destination']).signatures['serving_default']
  direct = np.concatenate([serve(images=tf.constant([open(p, 'rb').read() for p in chunk]))[
      'embedding'].numpy() for chunk in (paths[:200], paths[200:])])
  with TFServingDouble(config.model_name, model_base) as server:
    for where in (['--model', model_base], ['--server', server.grpc_address, '--protocol',
                                            'grpc', '--model-name', config.model_name]):
      np.testing.assert_allclose(embed_with_cli(paths, *where), direct, rtol=1e-4, atol=1e-5)
    # What the server was sent: every image once, in requests within the limit.
    assert sum(server.batch_sizes) == len(paths)
    assert max(server.batch_sizes) <= limits.MAX_REQUEST_IMAGES
