"""Clients for a running TF Serving model server: the encoder's embeddings or the classifier's
top-k for encoded images, over REST (port 8501, JSON with base64 image bytes) or gRPC (port
8500, tensorflow-serving-api's PredictionService). Both ask the `serving_default` signature by
default and return numpy arrays per output name (a classifier's class names as str)."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Dict, Optional, Sequence

import numpy as np

from components.errors import ServingError

INPUT_KEY = 'images'


def _model_path(model_name: str, version: Optional[int]) -> str:
  return f'/v1/models/{model_name}' + (f'/versions/{version}' if version else '')


def rest_predict(address: str, model_name: str, images: Sequence[bytes],
                 signature: str = 'serving_default', version: Optional[int] = None,
                 timeout: float = 30.0) -> Dict[str, np.ndarray]:
  """POST /v1/models/<name>[/versions/<v>]:predict in the columnar ("inputs") format."""
  url = f'http://{address}{_model_path(model_name, version)}:predict'
  body = json.dumps({'signature_name': signature, 'inputs': {
      INPUT_KEY: [{'b64': base64.b64encode(image).decode('ascii')} for image in images]}})
  request = urllib.request.Request(url, data=body.encode('utf-8'), method='POST',
                                   headers={'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      answer = json.loads(response.read().decode('utf-8'))
  except urllib.error.HTTPError as e:
    detail = e.read().decode('utf-8', 'replace')
    try:
      detail = json.loads(detail).get('error', detail)
    except ValueError:
      pass
    raise ServingError(f'{url}: HTTP {e.code}: {detail}') from None
  except (urllib.error.URLError, OSError) as e:
    raise ServingError(f'cannot reach TF Serving REST at {url}: {e}') from None
  outputs = answer.get('outputs')
  if isinstance(outputs, dict):
    return {key: _as_array(value) for key, value in outputs.items()}
  return {'output': _as_array(outputs)}  # a single unnamed output


def _as_array(value) -> np.ndarray:
  """A JSON output as an array: numbers as float32 (the served dtype of the embeddings and
  probabilities), integers as integers, strings (a classifier's class names) as str."""
  array = np.asarray(value)
  return array.astype(np.float32) if array.dtype.kind == 'f' else array


def grpc_predict(address: str, model_name: str, images: Sequence[bytes],
                 signature: str = 'serving_default', version: Optional[int] = None,
                 timeout: float = 30.0) -> Dict[str, np.ndarray]:
  """PredictionService/Predict over an insecure channel (put TLS in front, e.g. a mesh)."""
  # Imported here: the REST path needs neither TensorFlow nor gRPC.
  # pylint: disable=g-import-not-at-top
  import grpc
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
  # pylint: enable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature
  if version:
    request.model_spec.version.value = int(version)
  request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
  with grpc.insecure_channel(address) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
      response = stub.Predict(request, timeout=timeout)
    except grpc.RpcError as e:
      raise ServingError(f'TF Serving gRPC at {address}: {e.code().name}: {e.details()}') from None
  outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
  return {key: (value.astype(str) if value.dtype == object else value)
          for key, value in outputs.items()}
