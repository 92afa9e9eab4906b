"""A multi-worker training job (trainer_workers > 1): started, watched until done, and where it
ran recorded.

The job is worker.py run by N processes with the same JOB.json (written beside the ModelRun)
and each its own TF_CONFIG. Two launchers:

- local: N processes on this machine, gRPC collectives on localhost ports. Each writes a log
  in the ModelRun folder; the chief's lines are followed in this log. When one worker fails, the
  others are stopped (a peer of a dead worker would wait in a collective forever) and the step
  fails; its rerun resumes from the chief's last checkpoint.
- tfjob: a Kubeflow TFJob (tfjob.py), created in the cluster the executor's pod runs in.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from components import io_utils
from components.errors import TrainingJobFailed
from components.simclr_trainer import contract, tfjob
from components.simclr_trainer.worker import TrainJob

POLL_SECONDS = 0.5
WORKER_MODULE = 'components.simclr_trainer.worker'


def resolve_launcher(name: str) -> str:
  """'auto': a TFJob where the executor runs in a Kubernetes pod, else local processes."""
  if name != 'auto':
    return name
  return 'tfjob' if os.environ.get('KUBERNETES_SERVICE_HOST') else 'local'


def tf_config(addresses: list, index: int) -> dict:
  """TF_CONFIG of worker `index` (worker 0 is the chief, TensorFlow's convention)."""
  return {'cluster': {'worker': list(addresses)}, 'task': {'type': 'worker', 'index': index}}


def run_job(job: TrainJob, job_path: str) -> dict:
  """Runs the job (written at job_path) to the end; returns the chief's outcome with job=where
  it ran."""
  launcher = resolve_launcher(job.params.trainer_launcher)
  if launcher == 'local':
    where = run_local(job_path, job.params.trainer_workers, job.logdir)
  else:
    where = tfjob.run(job_path, job.params, os.path.basename(job.checkpoint_dir))
  return dict(io_utils.read_json(job.outcome_path), job=where)


def free_ports(count: int) -> list:
  """Ports that were free a moment ago (the workers bind them a second later)."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def run_local(job_path: str, workers: int, logdir: str) -> dict:
  addresses = [f'localhost:{port}' for port in free_ports(workers)]
  logs = [os.path.join(logdir, contract.WORKER_LOG.format(index=i)) for i in range(workers)]
  procs = []
  # The workers' temp folder (a non-chief's checkpoint scratch): removed after, even when a
  # worker was killed before its own clean-up ran.
  scratch = tempfile.mkdtemp(prefix='simclr-workers-')
  try:
    for index, log in enumerate(logs):
      env = dict(os.environ, TF_CONFIG=json.dumps(tf_config(addresses, index)), TMPDIR=scratch)
      with open(log, 'w', encoding='utf-8') as out:
        procs.append(subprocess.Popen([sys.executable, '-m', WORKER_MODULE, job_path], env=env,
                                      stdout=out, stderr=subprocess.STDOUT))
    logging.info('SimCLRTrainer: %d worker processes (pids %s) on %s; logs %s', workers,
                 ', '.join(str(p.pid) for p in procs), ', '.join(addresses),
                 os.path.join(logdir, contract.WORKER_LOG.format(index='*')))
    _wait(procs, logs)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    shutil.rmtree(scratch, ignore_errors=True)
  return {'launcher': 'local', 'host': socket.gethostname(),
          'workers': [{'index': i, 'address': a, 'pid': p.pid, 'log': log}
                      for i, (a, p, log) in enumerate(zip(addresses, procs, logs))]}


def _wait(procs, logs) -> None:
  """Until every worker exits 0, following the chief's log; the first failure raises."""
  with open(logs[0], encoding='utf-8', errors='replace') as chief_log:
    while True:
      for line in chief_log.readlines():
        logging.info('[worker 0] %s', line.rstrip())
      codes = [p.poll() for p in procs]
      failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
      if failed:
        i = _cause(failed, codes)
        raise TrainingJobFailed(
            f'training worker {i} exited with code {codes[i]}; the other workers were stopped. '
            f'Its log: {logs[i]} (last lines: {_tail(logs[i])}). Run again to resume from the '
            'last checkpoint')
      if all(code == 0 for code in codes):
        return
      time.sleep(POLL_SECONDS)


def _cause(failed: list, codes: list) -> int:
  """The failed worker to name: one that did not merely lose a peer, if there is one."""
  causes = [i for i in failed if codes[i] != contract.PEER_LOST_EXIT_CODE]
  return (causes or failed)[0]


def _tail(path: str, lines: int = 3) -> str:
  with open(path, encoding='utf-8', errors='replace') as f:
    return ' | '.join(line.strip() for line in f.readlines()[-lines:])
