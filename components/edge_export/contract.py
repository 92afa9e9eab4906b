"""What EdgeExport promises the Pusher and the tools (TensorFlow-free): the files of an
EdgeModel artifact and its properties."""

PREPROCESSING_FILE = 'preprocessing.json'  # how to turn an image into the model's input
PARITY_FILE = 'parity.json'  # cosine and top-1 parity against the SavedModel
LABELS_FILE = 'labels.txt'  # a classifier's class names, one per line in output order


def formats(kind: str = 'encoder') -> dict:
  """The TFLite files of a model of this kind (encoder | classifier), per format."""
  return {'float32': f'{kind}.tflite', 'int8': f'{kind}_int8.tflite'}


FORMATS = formats('encoder')
FLOAT_FILE, INT8_FILE = FORMATS['float32'], FORMATS['int8']

MODEL_URI = 'model_uri'  # the Model artifact it was converted from
KIND = 'kind'  # encoder | classifier: names the files (formats) and says what parity measured


def accepted(fmt: str) -> str:
  """0/1 property: the format passed its parity gate."""
  return f'{fmt}_accepted'


def reason(fmt: str) -> str:
  return f'{fmt}_reason'


def mean_cosine(fmt: str) -> str:
  return f'{fmt}_mean_cosine'
