"""TF Serving's side files: the models.config a model server polls, and the warmup requests it
replays before a new version takes traffic (so the first user request is not the slow one)."""
from __future__ import annotations

import os
import uuid
from typing import Dict, List, Sequence

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from components.pusher import push

from components.pusher.contract import MODELS_CONFIG, WARMUP_FILE
SIGNATURE, INPUT_KEY = 'serving_default', 'images'


def read_models_config(path: str) -> model_server_config_pb2.ModelServerConfig:
  config = model_server_config_pb2.ModelServerConfig()
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      try:
        text_format.Parse(f.read(), config)
      except text_format.ParseError as e:
        raise ValueError(f'{path} is not a valid TF Serving ModelServerConfig ({e}); fix or '
                         'remove it, then push again') from None
  return config


class ModelsConfigUpdate:
  """Adds or updates one model's entry in <serving_base>/models.config, keeping every other
  model and a version policy someone set by hand (e.g. a rollback pin).

  prepare() reads and checks the file (a broken one raises, naming it; it is never replaced);
  commit() re-reads it, writes it to a temporary name, fsyncs it, renames it over the old one
  and fsyncs the folder, so a polling server never reads half a file and a crash never loses
  the rename. The Pusher calls both under the serving lock (components/pusher/push.py), so
  concurrent pushes never lose each other's entries."""

  def __init__(self, serving_base: str, model_name: str, base_path: str):
    self.path = os.path.join(serving_base, MODELS_CONFIG)
    self.model_name, self.base_path = model_name, base_path

  def prepare(self) -> None:
    read_models_config(self.path)

  def commit(self) -> Dict:
    config = read_models_config(self.path)
    entries = config.model_config_list.config
    entry = next((c for c in entries if c.name == self.model_name), None)
    if entry is None:
      entry = entries.add()
      entry.name = self.model_name
      entry.model_platform = 'tensorflow'
      entry.model_version_policy.latest.num_versions = 1  # newest version serves
    entry.base_path = self.base_path
    pinned = (list(entry.model_version_policy.specific.versions)
              if entry.model_version_policy.HasField('specific') else [])
    tmp = f'{self.path}.tmp-{uuid.uuid4().hex}'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(text_format.MessageToString(config))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)
    push.fsync_dir(os.path.dirname(self.path))
    return {'path': self.path, 'pinned_versions': pinned}


def update_models_config(serving_base: str, model_name: str, base_path: str) -> Dict:
  """ModelsConfigUpdate in one call, under the serving lock (for tools and tests)."""
  update = ModelsConfigUpdate(serving_base, model_name, base_path)
  with push.serving_lock(serving_base):
    update.prepare()
    return update.commit()


def write_warmup_requests(path: str, model_name: str, images: Sequence[bytes]) -> int:
  """One PredictRequest per image (batch 1, serving_default), as PredictionLog records in a
  TFRecord file: the format TF Serving reads from assets.extra/tf_serving_warmup_requests."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for image in images:
      request = predict_pb2.PredictRequest()
      request.model_spec.name = model_name
      request.model_spec.signature_name = SIGNATURE
      request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto([image], dtype=tf.string))
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
  return len(images)


def read_warmup_requests(path: str) -> List[predict_pb2.PredictRequest]:
  requests = []
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    requests.append(log.predict_log.request)
  return requests


def replay_warmup(version_dir: str) -> List[Dict[str, tf.Tensor]]:
  """What TF Serving does when it loads a version: load the SavedModel and run every warmup
  request through the signature it names. Raises if any request fails."""
  loaded = tf.saved_model.load(version_dir)
  outputs = []
  for request in read_warmup_requests(os.path.join(version_dir, WARMUP_FILE)):
    signature = loaded.signatures[request.model_spec.signature_name or SIGNATURE]
    inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
    outputs.append(signature(**inputs))
  return outputs
