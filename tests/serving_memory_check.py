"""Run as a script (tests/test_serving_limits.py starts it in a fresh process, so that its peak
RSS is that of a model server alone): loads a pushed SavedModel as TF Serving does, serves the
largest requests that the limits allow, then one just over them, and prints one JSON line.

  python tests/serving_memory_check.py MODEL_DIR LARGEST_PNG SMALL_PNG_DIR

LARGEST_PNG holds the largest image one request may carry (real pixels); SMALL_PNG_DIR holds
MAX_REQUEST_IMAGES images that share the request's pixel budget. Peak RSS is the kernel's
high-water mark of this process (VmHWM), which is what a container memory limit meets; it is
reset after loading and before each request (/proc/self/clear_refs), so each request's own peak
shows apart from the peak of loading the model. Reported: the largest of them.
"""
import json
import os
import re
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf
from PIL import Image

# A model server on a many-core node runs decode_and_resize's parallel map (10 iterations) at
# once; so does this process, however few cores the machine running the test has.
tf.config.threading.set_inter_op_parallelism_threads(16)

from components import limits  # noqa: E402


def status_bytes(field: str) -> int:
  with open('/proc/self/status') as f:
    return int(re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.M).group(1)) * 1024


def reset_peak():
  """From now on VmHWM is the peak of what follows (Linux >= 4.0)."""
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')


def read(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def main(model_dir: str, largest_png: str, small_dir: str) -> dict:
  """Serves each request; refused: whether the request over the pixel budget got
  InvalidArgumentError (it must, or the numbers say nothing about a bound)."""
  serve = tf.saved_model.load(model_dir).signatures['serving_default']
  small = [read(os.path.join(small_dir, name)) for name in sorted(os.listdir(small_dir))]
  serve(images=tf.constant(small[:1]))  # traced and warm, as after TF Serving's warmup
  result = {'loaded_peak_bytes': status_bytes('VmHWM'),
            'loaded_rss_bytes': status_bytes('VmRSS')}
  largest = read(largest_png)
  with Image.open(largest_png) as image:  # the header only
    width, height = image.size
  copies = limits.MAX_REQUEST_PIXELS // (width * height)  # as many as the budget allows
  for name, request in (('largest_images', [largest] * copies), ('most_images', small)):
    reset_peak()
    rows = serve(images=tf.constant(request))['embedding'].shape[0]
    result[name] = {'images': len(request), 'rows': int(rows), 'peak_bytes':
                    status_bytes('VmHWM')}
  reset_peak()
  try:
    serve(images=tf.constant([largest] * (copies + 1)))
    result['refused'] = False
  except tf.errors.InvalidArgumentError:
    result['refused'] = True
  result['refused_peak_bytes'] = status_bytes('VmHWM')
  result['peak_bytes'] = max(result['loaded_peak_bytes'], result['refused_peak_bytes'],
                             *(result[name]['peak_bytes'] for name in ('largest_images',
                                                                        'most_images')))
  return result


if __name__ == '__main__':
  print(json.dumps(main(*sys.argv[1:4])))
