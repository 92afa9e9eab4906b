"""Pure push logic: publish a SavedModel into TF Serving's <base>/<model_name>/<version>/ layout.

A push has two phases.
- Stage (no lock, may take minutes): the model is copied to this push's own hidden staging
  folder in the model folder (same file system), every file and folder fsync'd. The staging
  folder's name is unique, and its owner holds an flock on `<staging>.lock` while it lives, so
  another push can tell a live staging folder from the debris of a killed one.
- Commit (under an exclusive flock on <base>/.simclr-tfx-serving.lock, milliseconds): roll back
  what a push killed mid-commit left, check models.config can be updated (a broken file stops
  the push here, before anything is visible), choose the next integer version, write a journal,
  rename the staging folder to the version (atomic on POSIX; TF Serving only considers integer
  folder names, so it never sees a partial version), fsync the folder, update models.config
  (fsync'd with its folder), delete the journal, retire old versions. If the config update
  fails, the version is renamed away again (rolled back). If the process dies between the
  rename and the config update, the next push to that base finds the journal and rolls the
  version back, so no version stays on disk without its push having completed.

Several pipelines may share one base and push at once, to the same model name or not: the
lock orders the commits, and a push removes only its own staging folder (or a dead one's).
The lock and the renames are POSIX guarantees on a local file system; flock is not honoured
by every network file system (see docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from typing import Callable, Dict, Iterator, List, Optional, Protocol

from components import failpoints
from components.errors import PushError
from components.pusher.contract import LAST_VERSION_FILE, LOCK_FILE, SOURCE_FILE

STAGING_PREFIX = '.staging-'
RETIRED_PREFIX = '.retired-'
JOURNAL_PREFIX = '.publishing-'
LOCK_TIMEOUT_S = 600  # a commit takes milliseconds; a holder this slow is stuck


def versions(model_dir: str) -> List[int]:
  """Integer version folders, ascending (what TF Serving would consider)."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(name) for name in os.listdir(model_dir)
                if name.isdigit() and os.path.isdir(os.path.join(model_dir, name)))


def _source_record(version_dir: str) -> Optional[Dict]:
  try:
    with open(os.path.join(version_dir, SOURCE_FILE), encoding='utf-8') as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def pushed_versions(model_dir: str) -> List[int]:
  """The versions this project's Pusher wrote (they carry its source record), ascending.
  Anything else in the folder (a version copied in by hand, another tool's) is not ours."""
  return [v for v in versions(model_dir)
          if _source_record(os.path.join(model_dir, str(v))) is not None]


def finished_pushes(model_dir: str) -> List[Dict]:
  """The versions this project's Pusher finished publishing (a version whose journal is left
  did not finish), ascending: {'version', 'path', ...its source record} each."""
  found = []
  for version in pushed_versions(model_dir):
    if os.path.exists(os.path.join(model_dir, f'{JOURNAL_PREFIX}{version}.json')):
      continue
    path = os.path.join(model_dir, str(version))
    found.append({**_source_record(path), 'version': version, 'path': path})
  return found


def find_pushed(model_dir: str, source_uri: str) -> Optional[int]:
  """The version already holding the model from `source_uri`, if any (makes reruns idempotent)."""
  for pushed in finished_pushes(model_dir):
    if pushed.get('source_uri') == source_uri:
      return pushed['version']
  return None


def latest_pushed(model_dir: str) -> Optional[Dict]:
  """The newest finished push in model_dir (every such version was blessed when it was pushed),
  or None: what a run without ML Metadata queries (Kubeflow) takes as the latest blessed
  model."""
  pushes = finished_pushes(model_dir)
  return pushes[-1] if pushes else None


def fsync_dir(path: str) -> None:
  """Makes a rename or a new entry in `path` durable (POSIX: fsync the folder itself)."""
  fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_tree(root: str) -> None:
  for folder, _, files in os.walk(root):
    for name in files:
      with open(os.path.join(folder, name), 'rb') as f:
        os.fsync(f.fileno())
    fsync_dir(folder)


def _try_flock(handle) -> bool:
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False


@contextlib.contextmanager
def serving_lock(serving_base: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
  """Exclusive flock on <serving_base>/.simclr-tfx-serving.lock: one commit at a time per
  serving folder. The kernel drops it when its holder dies, so it never goes stale."""
  os.makedirs(serving_base, exist_ok=True)
  with open(os.path.join(serving_base, LOCK_FILE), 'a', encoding='utf-8') as handle:
    deadline = time.monotonic() + timeout_s
    while not _try_flock(handle):
      if time.monotonic() > deadline:
        raise PushError(f'the serving lock {os.path.join(serving_base, LOCK_FILE)} was held for '
                        f'more than {timeout_s:.0f}s by another push; is one stuck?')
      time.sleep(0.05)
    yield  # closing the file releases the lock


class _Staging:
  """This push's staging folder, with the flock that says its owner is alive."""

  def __init__(self, model_dir: str):
    self.path = os.path.join(model_dir, f'{STAGING_PREFIX}{uuid.uuid4().hex}')
    self._lock = open(self.path + '.lock', 'a', encoding='utf-8')  # pylint: disable=consider-using-with
    fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: never contended
    os.mkdir(self.path)

  def close(self) -> None:
    """Removes what is left of the folder (nothing after a rename) and then the lock file."""
    shutil.rmtree(self.path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.path + '.lock')
    self._lock.close()


def remove_dead_staging(model_dir: str) -> List[str]:
  """Staging folders of pushes that died (their lock is free, or they have no lock file),
  and retire debris; never a live push's. Call under the serving lock. Returns the names."""
  removed = []
  for name in sorted(os.listdir(model_dir)):
    path = os.path.join(model_dir, name)
    if name.startswith(RETIRED_PREFIX):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(name)
    elif name.startswith(STAGING_PREFIX) and not name.endswith('.lock'):
      if _remove_if_dead(path + '.lock', path):
        removed.append(name)
    elif name.startswith(STAGING_PREFIX) and not os.path.exists(path[:-len('.lock')]):
      _remove_if_dead(path, None)
  return removed


def _remove_if_dead(lock_path: str, folder: Optional[str]) -> bool:
  """Removes a staging folder and its lock file unless a live push holds the lock."""
  try:
    lock = open(lock_path, 'r', encoding='utf-8')  # pylint: disable=consider-using-with
  except FileNotFoundError:
    lock = None  # no lock file: debris of a push from before staging locks, or half removed
  try:
    if lock is not None and not _try_flock(lock):
      return False  # a push in progress owns it
    if folder:
      shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
      with contextlib.suppress(FileNotFoundError):
        os.remove(lock_path)
    return True
  finally:
    if lock is not None:
      lock.close()


def _hide_and_delete(model_dir: str, version: int) -> None:
  """Removes a version for Serving in one rename, then deletes its files."""
  hidden = os.path.join(model_dir, f'{RETIRED_PREFIX}{version}-{uuid.uuid4().hex}')
  os.rename(os.path.join(model_dir, str(version)), hidden)
  fsync_dir(model_dir)
  shutil.rmtree(hidden, ignore_errors=True)


def roll_back_unfinished(model_dir: str) -> List[int]:
  """Versions whose push died between its rename and its end (a journal is left): renamed
  away and deleted, journal and all. Call under the serving lock. Returns those versions."""
  rolled_back = []
  for name in sorted(os.listdir(model_dir)):
    if not name.startswith(JOURNAL_PREFIX):
      continue
    version = int(name[len(JOURNAL_PREFIX):].split('.')[0])
    if os.path.isdir(os.path.join(model_dir, str(version))):
      _hide_and_delete(model_dir, version)
      rolled_back.append(version)
    os.remove(os.path.join(model_dir, name))
  if rolled_back:
    fsync_dir(model_dir)
    logging.warning('Pusher: rolled back version(s) %s of %s: their push did not finish',
                    rolled_back, model_dir)
  return rolled_back


def _stage(staging: str, saved_model_dir: str, source_uri: str, metadata: Optional[Dict],
           extra_files: Optional[Dict[str, str]]) -> None:
  shutil.copytree(saved_model_dir, staging, dirs_exist_ok=True)
  for relative, source in (extra_files or {}).items():
    target = os.path.join(staging, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
  os.makedirs(os.path.join(staging, 'assets.extra'), exist_ok=True)
  with open(os.path.join(staging, SOURCE_FILE), 'w', encoding='utf-8') as f:
    json.dump({'source_uri': source_uri, 'pushed_at': time.time(), **(metadata or {})}, f,
              indent=2, sort_keys=True)
  _fsync_tree(staging)


def _next_version(model_dir: str) -> int:
  """Seconds since the epoch, as TFX's Pusher does, bumped past every version that exists or
  was ever handed out here (one rolled back included: a server may have loaded it, so its number
  is never reused). Call under the serving lock."""
  known = versions(model_dir)
  record = os.path.join(model_dir, LAST_VERSION_FILE)
  try:
    with open(record, encoding='utf-8') as f:
      last = int(f.read().strip() or 0)
  except (OSError, ValueError):
    last = 0
  version = max(int(time.time()), (known[-1] + 1) if known else 0, last + 1)
  with open(record + '.tmp', 'w', encoding='utf-8') as f:
    f.write(str(version))
    os.fsync(f.fileno())
  os.replace(record + '.tmp', record)
  return version


def _commit(staging: str, model_dir: str, config: Optional['ConfigUpdate']) -> Dict:
  """Rename staging -> next version and update models.config, or roll the version back."""
  if config is not None:
    config.prepare()  # a broken models.config stops the push before anything is visible
  version = _next_version(model_dir)
  journal = os.path.join(model_dir, f'{JOURNAL_PREFIX}{version}.json')
  with open(journal, 'w', encoding='utf-8') as f:
    json.dump({'version': version, 'pid': os.getpid()}, f)
    os.fsync(f.fileno())
  destination = os.path.join(model_dir, str(version))
  failpoints.hit('push.before_rename')
  os.rename(staging, destination)
  fsync_dir(model_dir)
  failpoints.hit('push.after_rename')
  try:
    config_result = config.commit() if config is not None else {}
  except BaseException:
    _hide_and_delete(model_dir, version)
    raise
  finally:
    os.remove(journal)
    fsync_dir(model_dir)
  return {'version': version, 'destination': destination, 'already_pushed': False,
          **config_result}


class ConfigUpdate(Protocol):
  """What a push changes in models.config: prepare() reads and checks it (raises when it cannot
  be updated), commit() writes it durably and returns {'path', 'pinned_versions'}."""

  def prepare(self) -> None:
    ...

  def commit(self) -> Dict:
    ...


def push_model(saved_model_dir: str, serving_base: str, model_name: str, source_uri: str,
               metadata: Optional[Dict] = None, extra_files: Optional[Dict[str, str]] = None,
               config: Optional[ConfigUpdate] = None, keep: int = 0) -> Dict:
  """Stages and commits one push (see the module docstring); returns {'version',
  'destination', 'already_pushed', 'retired', 'rolled_back'} plus the config's result.

  `extra_files` ({relative path in the version: source file}) travel in the same staging
  folder, e.g. the TFLite models, so they appear together with the SavedModel or not at all.
  `keep` > 0 retires all but the newest `keep` of this project's versions after the commit,
  never one pinned in models.config nor the new one.
  """
  if '://' in serving_base:
    raise PushError(f'cannot push to {serving_base}: the serving folder must be on a POSIX '
                    'file system (atomic rename, file lock); set serving_dir to a mounted path')
  if not os.path.isfile(os.path.join(saved_model_dir, 'saved_model.pb')):
    raise FileNotFoundError(f'no saved_model.pb in {saved_model_dir}: nothing to push')
  model_dir = os.path.join(serving_base, model_name)
  os.makedirs(model_dir, exist_ok=True)
  staging = _Staging(model_dir)

  def stage() -> None:
    if not os.path.isfile(os.path.join(staging.path, SOURCE_FILE)):
      _stage(staging.path, saved_model_dir, source_uri, metadata, extra_files)

  try:
    if find_pushed(model_dir, source_uri) is None:  # a rerun copies nothing
      stage()
    with serving_lock(serving_base):
      result = _commit_or_reuse(stage, staging.path, model_dir, source_uri, config)
      pinned = result.get('pinned_versions', [])
      result['retired'] = retire_old_versions(model_dir, keep,
                                              protect=pinned + [result['version']])
  finally:
    staging.close()
  return result


def _commit_or_reuse(stage: Callable[[], None], staging: str, model_dir: str, source_uri: str,
                     config: Optional[ConfigUpdate]) -> Dict:
  """Under the serving lock: clean up after dead pushes, then reuse the version that holds
  this model already, or commit the staged copy as a new one."""
  rolled_back = roll_back_unfinished(model_dir)
  remove_dead_staging(model_dir)
  existing = find_pushed(model_dir, source_uri)
  if existing is not None:
    config_result = config.commit() if config is not None else {}
    result = {'version': existing, 'destination': os.path.join(model_dir, str(existing)),
              'already_pushed': True, **config_result}
  else:
    stage()  # only when the version seen before the lock was rolled back or retired since
    result = _commit(staging, model_dir, config)
  result['rolled_back'] = rolled_back
  return result


def retire_old_versions(model_dir: str, keep: int, protect=()) -> List[int]:
  """Removes all but the newest `keep` of this project's versions (0 = keep all), never one in
  `protect` (e.g. a version pinned in models.config for a rollback) and never a folder the
  Pusher did not write. Each is first renamed to a hidden name, atomically gone for Serving,
  then deleted. Returns the retired versions."""
  if keep <= 0:
    return []
  ours = pushed_versions(model_dir)
  retired = [v for v in ours[:-keep] if v not in set(protect)]
  for version in retired:
    _hide_and_delete(model_dir, version)
  return retired
