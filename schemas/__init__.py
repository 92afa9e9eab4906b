"""The feature contract of ingested images (a TFMD schema kept as text)."""
import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'image_examples.pbtxt')

IMAGE_KEY = 'image/encoded'
SHA256_KEY = 'image/sha256'
FILENAME_KEY = 'image/filename'
HEIGHT_KEY = 'image/height'
WIDTH_KEY = 'image/width'
LABEL_KEY = 'image/class/label'
CLASS_TEXT_KEY = 'image/class/text'
LABELLED_KEY = 'image/labelled'
UNLABELLED = -1


def load_schema(path: str = SCHEMA_PATH) -> schema_pb2.Schema:
  with open(path, encoding='utf-8') as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())
