"""Pure push logic: copy a SavedModel into TF Serving's <base>/<model_name>/<version>/ layout.

The copy goes to a hidden staging folder in the same parent (same filesystem), is flushed, then
renamed to its integer version. rename() is atomic on a POSIX filesystem, and TF Serving only
considers folders whose names are integers, so it never sees a partial version. A leftover
staging folder from a crash is ignored by Serving and removed by the next push.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Dict, List, Optional

from components import failpoints

SOURCE_FILE = os.path.join('assets.extra', 'simclr_tfx_source.json')
STAGING_PREFIX = '.staging-'
RETIRED_PREFIX = '.retired-'


def versions(model_dir: str) -> List[int]:
  """Integer version folders, ascending (what TF Serving would consider)."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(name) for name in os.listdir(model_dir)
                if name.isdigit() and os.path.isdir(os.path.join(model_dir, name)))


def find_pushed(model_dir: str, source_uri: str) -> Optional[int]:
  """The version already holding the model from `source_uri`, if any (makes reruns idempotent)."""
  for version in versions(model_dir):
    marker = os.path.join(model_dir, str(version), SOURCE_FILE)
    try:
      with open(marker, encoding='utf-8') as f:
        if json.load(f).get('source_uri') == source_uri:
          return version
    except (OSError, ValueError):
      continue
  return None


def _fsync_tree(root: str) -> None:
  for folder, _, files in os.walk(root):
    for name in files:
      with open(os.path.join(folder, name), 'rb') as f:
        os.fsync(f.fileno())


def push_model(saved_model_dir: str, serving_base: str, model_name: str, source_uri: str,
               metadata: Optional[Dict] = None,
               extra_files: Optional[Dict[str, str]] = None) -> Dict:
  """Pushes atomically; returns {'version', 'destination', 'already_pushed'}.

  `extra_files` ({relative path in the version: source file}) travel in the same staging
  folder, e.g. the TFLite models, so they appear together with the SavedModel or not at all.
  """
  if not os.path.isfile(os.path.join(saved_model_dir, 'saved_model.pb')):
    raise FileNotFoundError(f'no saved_model.pb in {saved_model_dir}: nothing to push')
  model_dir = os.path.join(serving_base, model_name)
  os.makedirs(model_dir, exist_ok=True)
  existing = find_pushed(model_dir, source_uri)
  if existing is not None:
    return {'version': existing, 'destination': os.path.join(model_dir, str(existing)),
            'already_pushed': True}
  for name in os.listdir(model_dir):  # debris of an earlier crashed push
    if name.startswith((STAGING_PREFIX, RETIRED_PREFIX)):
      shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)

  staging = os.path.join(model_dir, f'{STAGING_PREFIX}{uuid.uuid4().hex}')
  shutil.copytree(saved_model_dir, staging)
  for relative, source in (extra_files or {}).items():
    target = os.path.join(staging, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
  os.makedirs(os.path.join(staging, 'assets.extra'), exist_ok=True)
  with open(os.path.join(staging, SOURCE_FILE), 'w', encoding='utf-8') as f:
    json.dump({'source_uri': source_uri, 'pushed_at': time.time(), **(metadata or {})}, f,
              indent=2, sort_keys=True)
  _fsync_tree(staging)
  # Strictly increasing integer versions; seconds since the epoch, as TFX's Pusher does,
  # bumped past the newest existing version.
  known = versions(model_dir)
  version = max(int(time.time()), (known[-1] + 1) if known else 0)
  destination = os.path.join(model_dir, str(version))
  failpoints.hit('push.before_rename')
  os.rename(staging, destination)
  return {'version': version, 'destination': destination, 'already_pushed': False}


def retire_old_versions(model_dir: str, keep: int, protect=()) -> List[int]:
  """Removes all but the newest `keep` versions (0 = keep all), never one in `protect` (e.g. a
  version pinned in models.config for a rollback). Each is first renamed to a hidden name,
  atomically gone for Serving, then deleted. Returns the retired versions."""
  if keep <= 0:
    return []
  known = versions(model_dir)
  retired = [v for v in known[:-keep] if v not in set(protect)]
  for version in retired:
    hidden = os.path.join(model_dir, f'{RETIRED_PREFIX}{version}-{uuid.uuid4().hex}')
    os.rename(os.path.join(model_dir, str(version)), hidden)
    shutil.rmtree(hidden, ignore_errors=True)
  return retired
