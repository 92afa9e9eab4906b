"""The latest blessed model, found one of two ways (TensorFlow-free), for the trainer's warm
start and the evaluator's comparison:

- metadata: the pipeline's resolver node queries ML Metadata for the newest Model with a
  blessing (TFX's LatestBlessedModelStrategy) and hands it in as an input artifact;
- serving: the executor reads the serving folder's newest version that this project's Pusher
  published (components/pusher/push.py): every such version was blessed, and its source record
  names the Model it came from. This needs no metadata queries, so it works where the
  orchestrator does not evaluate TFX's resolver (open-source Kubeflow Pipelines).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from components.pusher import push

SOURCES = ('metadata', 'serving')


@dataclasses.dataclass(frozen=True)
class Baseline:
  saved_model_dir: str  # the SavedModel to load, warm start from or compare with
  model_uri: str  # the Model artifact it is (or was pushed from)
  model_id: int = -1  # its ML Metadata id, -1 when found in the serving folder
  pushed_version: int = -1  # its version in the serving folder, -1 when found in metadata

  def describe(self) -> str:
    if self.pushed_version >= 0:
      return f'pushed version {self.pushed_version} ({self.saved_model_dir})'
    return self.model_uri


def from_artifacts(models, serving_model_path) -> Optional[Baseline]:
  """The resolver's Model artifact, if it found one. serving_model_path: TFX's
  path_utils.serving_model_path (passed in: this module stays free of TFX imports)."""
  if not models:
    return None
  return Baseline(serving_model_path(models[0].uri), models[0].uri, int(models[0].id))


def from_serving_folder(model_dir: str) -> Optional[Baseline]:
  """The newest version the Pusher published under <serving_dir>/<model_name>, if any."""
  if not model_dir:
    return None
  found = push.latest_pushed(model_dir)
  if found is None:
    return None
  return Baseline(found['path'], found.get('source_uri', ''),
                  int(found.get('model_artifact_id', -1)), int(found['version']))


def find(models, model_dir: str, serving_model_path) -> Optional[Baseline]:
  """From the resolver's artifact when the DAG has a resolver, else from the serving folder."""
  return from_artifacts(models, serving_model_path) or from_serving_folder(model_dir)


def model_dir(serving_dir: str, model_name: str) -> str:
  return os.path.join(serving_dir, model_name)
