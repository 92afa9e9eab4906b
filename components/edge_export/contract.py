"""What EdgeExport promises the Pusher and the tools (TensorFlow-free): the files of an
EdgeModel artifact and its properties."""

FLOAT_FILE, INT8_FILE = 'encoder.tflite', 'encoder_int8.tflite'
PREPROCESSING_FILE = 'preprocessing.json'  # how to turn an image into the model's input
PARITY_FILE = 'parity.json'  # cosine and probe parity against the SavedModel
FORMATS = {'float32': FLOAT_FILE, 'int8': INT8_FILE}

MODEL_URI = 'model_uri'  # the Model artifact it was converted from


def accepted(fmt: str) -> str:
  """0/1 property: the format passed its parity gate."""
  return f'{fmt}_accepted'


def reason(fmt: str) -> str:
  return f'{fmt}_reason'


def mean_cosine(fmt: str) -> str:
  return f'{fmt}_mean_cosine'
