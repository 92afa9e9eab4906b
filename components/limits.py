"""Resource bounds shared by ingest, transform, serving and their clients (TensorFlow-free).

One place for each bound, so that ingest, the transform graph and the served signature agree:
ingest never keeps an image that the transform would refuse (it downscales it to fit instead),
and the serving signature refuses a request before it decodes anything that could exhaust the
model server's memory.
"""
import re

# Declared width x height that the transform graph and the serving signature decode per image.
# Ingest stores larger (legitimate) images downscaled to fit under it.
MAX_DECODE_PIXELS = 50_000_000

# Pillow's decompression-bomb guard refuses images above 2 x Image.MAX_IMAGE_PIXELS (its
# default, 89,478,485): the largest declared size ingest can open with the guard left on.
PILLOW_BOMB_PIXELS = 2 * 89_478_485

# One serving request (serving_default / serving_examples): at most this many images, and at
# most this many declared pixels over all of them, checked from the headers before decoding.
# Decoding holds the uint8 pixels and float32 copies of them at once, so a request's memory
# grows with the pixels it declares, whatever their number or order; the sum bounds it
# (tests/test_serving_limits.py measures the largest request against the memory limit of
# infra/serving/deployment.yaml). Concurrent requests add up: the server's memory limit must
# hold the loaded model plus one such peak per request served at once.
# MAX_REQUEST_PIXELS >= MAX_DECODE_PIXELS: every image that ingest stores can be served alone.
MAX_REQUEST_IMAGES = 256
MAX_REQUEST_PIXELS = 50_000_000


def plan_batches(pixel_counts, max_images: int = MAX_REQUEST_IMAGES,
                 max_pixels: int = MAX_REQUEST_PIXELS):
  """Splits images, in order, into requests the serving signature accepts: lists of indices.

  pixel_counts[i] is image i's declared width x height (0 when unknown). Each batch holds at
  most max_images images and at most max_pixels declared pixels; consecutive images are packed
  greedily, so concatenating the answers keeps the input order. An image over max_pixels on
  its own gets a batch of its own: the server then refuses it with a message naming it,
  instead of the client hiding it or refusing the other images with it.
  """
  if max_images < 1 or max_pixels < 1:
    raise ValueError(f'max_images ({max_images}) and max_pixels ({max_pixels}) must be >= 1')
  batches, current, current_pixels = [], [], 0
  for index, pixels in enumerate(pixel_counts):
    pixels = max(int(pixels), 0)
    if current and (len(current) == max_images or current_pixels + pixels > max_pixels):
      batches.append(current)
      current, current_pixels = [], 0
    current.append(index)
    current_pixels += pixels
  if current:
    batches.append(current)
  return batches


def header_pixels(images) -> list:
  """Declared width x height of each image (a path or encoded bytes), from its header only
  (Pillow decodes no pixel here): what plan_batches takes. 0 when Pillow does not know the
  format (the server judges that image); an image over Pillow's bomb guard counts as over
  MAX_DECODE_PIXELS, so it goes alone and the server names it."""
  # pylint: disable=g-import-not-at-top
  import io
  import warnings
  from PIL import Image, UnidentifiedImageError
  # pylint: enable=g-import-not-at-top
  counts = []
  for image in images:
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        source = io.BytesIO(image) if isinstance(image, bytes) else image
        with Image.open(source) as opened:
          width, height = opened.size
      counts.append(width * height)
    except Image.DecompressionBombError:
      counts.append(MAX_DECODE_PIXELS + 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
      counts.append(0)
  return counts


# Names that become path components (pipeline_name, model_name): letters, digits, '_' and '-',
# with '.' only inside, so a name is never '.', '..' or a hidden file, and cannot point a folder
# or a file outside where it is used.
MAX_NAME_LENGTH = 100
_SAFE_NAME = re.compile(r'[A-Za-z0-9_-](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?')


def is_safe_name(name: str) -> bool:
  """True for a pipeline or model name that is one harmless path component."""
  return (isinstance(name, str) and len(name) <= MAX_NAME_LENGTH
          and _SAFE_NAME.fullmatch(name) is not None)


def unsafe_name_message(key: str, name: str) -> str:
  return (f'{key} must be a safe name: 1-{MAX_NAME_LENGTH} letters, digits, "_" or "-", with '
          f'"." allowed inside (no path separators, no "." or ".."), got {name!r}')
