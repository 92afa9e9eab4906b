"""One run per output folder, and what a killed run left behind made visible.

`run_lock(OUT)` holds an exclusive flock on OUT/.simclr-tfx.lock for the whole run. The kernel
releases it when the process ends, even on SIGKILL, so a lock can never go stale. A second run
on the same folder is refused at once with the holder's pid. Next to it, OUT/.simclr-tfx.running
marks a run in progress and is removed when the run ends. A new run that finds the marker
knows the previous run died (killed, crashed, machine lost). It then marks that run's
executions still RUNNING in ML Metadata as FAILED, with the reason, so lineage shows the failed
attempt next to the successful rerun.

A run stopped by Ctrl-C (SIGINT) or SIGTERM ends the same way at once: the signal becomes an
`Interrupted` exception in the main thread, and on the way out the run's still-RUNNING
executions are marked FAILED ("interrupted by SIGINT"), so none is left RUNNING. Every entry
point takes this lock: `simclr-tfx run`, pipeline/local_runner.py (what `tfx run create`
executes) and `simclr-tfx kfp-local`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import List

from components.errors import OutputFolderError, RunLockedError

LOCK_FILE = '.simclr-tfx.lock'
RUNNING_FILE = '.simclr-tfx.running'
FAILURE_PROPERTY = 'simclr_tfx_failure'


class Interrupted(KeyboardInterrupt):
  """The run was stopped by SIGINT (Ctrl-C) or SIGTERM."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def _signals_interrupt():
  """SIGINT and SIGTERM raise Interrupted in the main thread while the run goes on."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def interrupt(signum, _frame):
    raise Interrupted(signum)

  previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def check_output_writable(output_dir: str) -> None:
  """Fails before any work when OUT cannot be created or written (read-only, full, not a
  folder), instead of an hour later in the middle of a step."""
  try:
    os.makedirs(output_dir, exist_ok=True)
    probe = os.path.join(output_dir, f'.write-test-{os.getpid()}')
    with open(probe, 'w', encoding='utf-8') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise OutputFolderError(f'output folder {output_dir} is not writable: '
                            f'{e.strerror or e}') from None


def mark_interrupted_executions(metadata_path: str, reason: str) -> List[int]:
  """RUNNING executions -> FAILED with `reason`; returns their ids."""
  if not os.path.isfile(metadata_path):
    return []
  import ml_metadata as mlmd  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  store = mlmd.MetadataStore(config)
  running = [e for e in store.get_executions()
             if e.last_known_state == metadata_store_pb2.Execution.RUNNING]
  for execution in running:
    execution.last_known_state = metadata_store_pb2.Execution.FAILED
    execution.custom_properties[FAILURE_PROPERTY].string_value = reason
  if running:
    store.put_executions(running)
  return [e.id for e in running]


@contextlib.contextmanager
def run_lock(output_dir: str, metadata_path: str):
  os.makedirs(output_dir, exist_ok=True)
  handle = open(os.path.join(output_dir, LOCK_FILE), 'a+', encoding='utf-8')
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or 'unknown'
      raise RunLockedError(
          f'another simclr-tfx run is using {output_dir} ({holder}); wait for it to finish or '
          'choose another --output') from None
    handle.seek(0)
    handle.truncate()
    me = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.time()}
    handle.write(json.dumps(me))
    handle.flush()

    running = os.path.join(output_dir, RUNNING_FILE)
    if os.path.exists(running):
      with open(running, encoding='utf-8') as f:
        previous = f.read().strip()
      reason = (f'interrupted: the run that started this execution ({previous}) ended without '
                'finishing (killed or crashed); found by the next run')
      failed = mark_interrupted_executions(metadata_path, reason)
      logging.warning('previous run on %s did not finish (%s); marked %d interrupted '
                      'execution(s) FAILED in ML Metadata: %s', output_dir, previous,
                      len(failed), failed)
    with open(running, 'w', encoding='utf-8') as f:
      f.write(json.dumps(me))
    try:
      with _signals_interrupt():
        yield
    except BaseException as e:
      # TFX records an executor's exception as a FAILED execution itself; an interrupt (a
      # BaseException it lets through) or a crash in the orchestrator would leave RUNNING ones.
      why = (f'interrupted by {e.signal_name}' if isinstance(e, Interrupted)
             else f'the run stopped: {type(e).__name__}: {e}')
      mark_interrupted_executions(metadata_path, why)
      raise
    finally:
      os.remove(running)
  finally:
    handle.close()  # releases the flock
