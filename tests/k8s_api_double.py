"""A TEST DOUBLE of a Kubernetes API server with the Kubeflow training operator installed: just
enough of /apis/kubeflow.org/v1/namespaces/NS/tfjobs (create, get, list by label, delete) for
components/simclr_trainer/tfjob.py, over real HTTP through the kubernetes client.

Like the operator, it starts the job's pods when a TFJob is created: each replica's container
command runs as a local process (`python` is this interpreter), with the TF_CONFIG the operator
would set (a `chief` and `worker` cluster; the task type and index of the pod). Its conditions
go Created, Running, then Succeeded or Failed when the processes end. It validates nothing
beyond what it needs to run the pods: the manifest itself is checked against the
kubeflow-training SDK's models by the test.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from typing import Dict, List, Optional

from tests import http_double

_PATH = re.compile(r'^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs(?:/([^/?]+))?$')


def _condition(kind: str, message: str = '') -> dict:
  return {'type': kind, 'status': 'True', 'reason': f'TFJob{kind}', 'message': message}


class TrainingOperatorDouble:
  """Use as a context manager; `url` is the API server, `created` the manifests received."""

  def __init__(self, free_ports):
    self._free_ports = free_ports
    self.created: List[dict] = []
    self.jobs: Dict[str, dict] = {}
    self.procs: Dict[str, List[subprocess.Popen]] = {}
    self._lock = threading.Lock()
    self._server: Optional[http.server.ThreadingHTTPServer] = None
    self.url = ''

  def __enter__(self) -> 'TrainingOperatorDouble':
    double = self

    class Handler(http_double.QuietHandler):

      def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def _route(self):
        parsed = urllib.parse.urlparse(self.path)
        match = _PATH.match(parsed.path)
        return match, urllib.parse.parse_qs(parsed.query)

      def do_GET(self):  # pylint: disable=invalid-name
        match, query = self._route()
        if not match:
          return self._reply(404, {'kind': 'Status', 'code': 404})
        namespace, name = match.groups()
        with double._lock:
          if name:
            job = double.jobs.get(f'{namespace}/{name}')
            return self._reply(200, job) if job else self._reply(404, {'code': 404})
          wanted = dict(s.split('=', 1) for s in query.get('labelSelector', [''])[0].split(',')
                        if '=' in s)
          items = [j for key, j in double.jobs.items() if key.startswith(namespace + '/') and
                   all(j['metadata'].get('labels', {}).get(k) == v for k, v in wanted.items())]
        return self._reply(200, {'kind': 'TFJobList', 'items': items})

      def do_POST(self):  # pylint: disable=invalid-name
        match, _ = self._route()
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        if not match or match.group(2):
          return self._reply(404, {'code': 404})
        double.create(match.group(1), body)
        return self._reply(201, body)

      def do_DELETE(self):  # pylint: disable=invalid-name
        match, _ = self._route()
        if not match or not match.group(2):
          return self._reply(404, {'code': 404})
        double.delete(f'{match.group(1)}/{match.group(2)}')
        return self._reply(200, {'kind': 'Status', 'status': 'Success'})

    self._server, self.url = http_double.start(Handler)
    return self

  def __exit__(self, *exc) -> None:
    for key in list(self.procs):
      self.delete(key)
    http_double.stop(self._server)

  def kubeconfig(self) -> dict:
    """A kubeconfig that points the kubernetes client at this double."""
    return {'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'double',
            'clusters': [{'name': 'double', 'cluster': {'server': self.url}}],
            'users': [{'name': 'double', 'user': {'token': 'test'}}],
            'contexts': [{'name': 'double', 'context': {'cluster': 'double', 'user': 'double'}}]}

  def create(self, namespace: str, job: dict) -> None:
    """Records the manifest and starts its pods as processes, as the operator would."""
    key = f'{namespace}/{job["metadata"]["name"]}'
    specs = job['spec']['tfReplicaSpecs']
    tasks = [(kind.lower(), i) for kind in ('Chief', 'Worker') if kind in specs
             for i in range(specs[kind]['replicas'])]
    ports = iter(self._free_ports(len(tasks)))
    cluster: Dict[str, list] = {}
    for kind, _ in tasks:
      cluster.setdefault(kind, []).append(f'localhost:{next(ports)}')
    procs = []
    for kind, index in tasks:
      container = specs[kind.capitalize()]['template']['spec']['containers'][0]
      command = [sys.executable if part == 'python' else part for part in container['command']]
      env = {'TF_CONFIG': json.dumps({'cluster': cluster,
                                      'task': {'type': kind, 'index': index}})}
      procs.append(subprocess.Popen(command, env={**os.environ, **env},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    with self._lock:
      self.created.append(json.loads(json.dumps(job)))
      self.jobs[key] = dict(job, metadata=dict(job['metadata'], uid=f'uid-{len(self.created)}'),
                            status={'conditions': [_condition('Created'),
                                                   _condition('Running')]})
      self.procs[key] = procs
    threading.Thread(target=self._watch, args=(key, procs), daemon=True).start()

  def _watch(self, key: str, procs) -> None:
    errors = [p.communicate()[1] for p in procs]
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    with self._lock:
      if key in self.jobs:
        final = (_condition('Failed', errors[failed[0]][-500:]) if failed
                 else _condition('Succeeded'))
        self.jobs[key]['status']['conditions'].append(final)

  def delete(self, key: str) -> None:
    with self._lock:
      procs = self.procs.pop(key, [])
      self.jobs.pop(key, None)
    for p in procs:
      if p.poll() is None:
        p.kill()
