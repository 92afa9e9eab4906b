"""TFServingDouble: a TEST DOUBLE of TensorFlow Serving's model server, not TF Serving.

No TF Serving binary installs on these machines, so the client tests talk to this stand-in. It
loads the pushed SavedModel from a model base path the way TF Serving does (newest integer
version, or the one asked for), and answers the same two APIs: gRPC PredictionService/Predict
(tensorflow-serving-api's protos) and REST POST /v1/models/<name>[/versions/<v>]:predict (row
"instances" or columnar "inputs" JSON, {"b64": ...} for bytes). Bad input gets
INVALID_ARGUMENT / HTTP 400 for that request only, as TF Serving does.
"""
from __future__ import annotations

import base64
import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components.pusher import push
from tests import http_double


def status_message(error: Exception) -> str:
  """The op's own message, as TF Serving's error status carries it: without the "Graph
  execution error" preamble and Python traceback that TensorFlow adds in Python only."""
  preamble = ('Graph execution error', 'Detected at node', '  File ',
              '<stack traces unavailable>')
  lines = [line for line in str(error).splitlines()
           if line.strip() and not line.startswith(preamble)]
  return lines[0] if lines else repr(error)


def _json_value(tensor):
  """A tensor as TF Serving's REST API writes it: strings as JSON strings (UTF-8 text)."""
  array = np.asarray(tensor)
  if array.dtype == object:
    return np.vectorize(lambda b: b.decode('utf-8'), otypes=[object])(array).tolist()
  return array.tolist()


class _Models:
  def __init__(self, model_name: str, model_base: str):
    self.model_name, self.model_base = model_name, model_base
    self._loaded, self._lock = {}, threading.Lock()
    self.batch_sizes = []  # images in each call of a signature, in order: what clients sent

  def signature(self, name: str, version, signature: str):
    if name != self.model_name:
      raise LookupError(f'Servable not found for request: Latest({name})')
    available = push.versions(self.model_base)
    if not available:
      raise LookupError(f'no versions of {name} under {self.model_base}')
    version = int(version) if version else available[-1]
    if version not in available:
      raise LookupError(f'Servable not found for request: Specific({name}, {version})')
    with self._lock:
      if version not in self._loaded:
        self._loaded[version] = tf.saved_model.load(os.path.join(self.model_base, str(version)))
    signatures = self._loaded[version].signatures
    if (signature or 'serving_default') not in signatures:
      raise ValueError(f'Serving signature name: "{signature}" not found in signature def')
    return version, self._recorded(signatures[signature or 'serving_default'])

  def _recorded(self, fn):
    """fn that also records how many items each call carries (its first input's first dim)."""
    def call(**inputs):
      self.batch_sizes.append(int(next(iter(inputs.values())).shape[0]))
      return fn(**inputs)
    call.structured_input_signature = fn.structured_input_signature
    return call


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  def __init__(self, models: _Models):
    self.models = models

  def Predict(self, request, context):
    try:
      version, fn = self.models.signature(request.model_spec.name,
                                          request.model_spec.version.value or None,
                                          request.model_spec.signature_name)
    except LookupError as e:
      context.abort(grpc.StatusCode.NOT_FOUND, str(e))
    except ValueError as e:
      context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
    try:
      inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
      outputs = fn(**inputs)
    except (tf.errors.OpError, TypeError, ValueError) as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, status_message(e))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    response.model_spec.signature_name = request.model_spec.signature_name or 'serving_default'
    for key, value in outputs.items():
      response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response


def _decode(value):
  if isinstance(value, dict) and set(value) == {'b64'}:
    return base64.b64decode(value['b64'])
  if isinstance(value, list):
    return [_decode(v) for v in value]
  return value


class TFServingDouble:
  """Starts both servers on free local ports; use as a context manager."""

  def __init__(self, model_name: str, model_base: str):
    self.models = _Models(model_name, model_base)
    self.batch_sizes = self.models.batch_sizes

  def __enter__(self):
    self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(self.models), self.grpc_server)
    self.grpc_address = f'127.0.0.1:{self.grpc_server.add_insecure_port("127.0.0.1:0")}'
    self.grpc_server.start()
    self.http_server, url = http_double.start(self._handler())
    self.rest_address = url.split('://', 1)[1]
    return self

  def __exit__(self, *exc):
    http_double.stop(self.http_server)
    self.grpc_server.stop(grace=None)

  def _handler(self):
    models = self.models
    route = re.compile(r'^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$')

    class Handler(BaseHTTPRequestHandler):
      def log_message(self, *args):  # keep test output clean
        pass

      def _reply(self, code, body):
        data = json.dumps(body).encode('utf-8')
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_POST(self):  # pylint: disable=invalid-name
        match = route.match(self.path)
        if not match:
          return self._reply(404, {'error': f'Malformed request: POST {self.path}'})
        try:
          body = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))))
          version, fn = models.signature(match.group(1), match.group(2),
                                         body.get('signature_name', 'serving_default'))
        except LookupError as e:
          return self._reply(404, {'error': str(e)})
        except ValueError as e:
          return self._reply(400, {'error': str(e)})
        try:
          if 'inputs' in body:  # columnar
            inputs = body['inputs']
            if not isinstance(inputs, dict):
              (only_key,) = fn.structured_input_signature[1]
              inputs = {only_key: inputs}
            outputs = fn(**{k: tf.constant(_decode(v)) for k, v in inputs.items()})
            return self._reply(200, {'outputs': {k: _json_value(v)
                                                 for k, v in outputs.items()}})
          (only_key,) = fn.structured_input_signature[1]
          outputs = fn(**{only_key: tf.constant(_decode(body['instances']))})
          rows = [dict(zip(outputs, values)) for values in
                  zip(*[_json_value(v) for v in outputs.values()])]
          return self._reply(200, {'predictions': rows})
        except (tf.errors.OpError, TypeError, ValueError, KeyError) as e:
          return self._reply(400, {'error': status_message(e)})

    return Handler
