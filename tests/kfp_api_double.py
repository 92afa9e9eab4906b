"""TEST DOUBLE of the Kubeflow Pipelines v2beta1 REST API: not KFP, and not a fake cluster.

An in-process, threaded http.server that answers just the calls kfp.Client 2.16 (through
kfp_server_api 2.17) makes for `simclr-tfx kfp-submit`, with the paths, query parameters and
JSON field names of kfp_server_api's generated client:

  GET  /apis/v2beta1/healthz                       (kfp.Client() without a namespace)
  GET  /apis/v2beta1/pipelines?filter=...          (list by display_name EQUALS)
  POST /apis/v2beta1/pipelines/upload?name=...     (multipart field 'uploadfile')
  POST /apis/v2beta1/pipelines/upload_version?name=...&pipelineid=...   (same)
  GET  /apis/v2beta1/pipelines/{id}/versions
  GET  /apis/v2beta1/experiments?filter=...        POST /apis/v2beta1/experiments
  GET  /apis/v2beta1/recurringruns?experiment_id=  POST /apis/v2beta1/recurringruns
  POST /apis/v2beta1/recurringruns/{id}:disable
  POST /apis/v2beta1/runs

It keeps pipelines, versions, experiments and (recurring) runs in memory, and checks what the
real API server would refuse and the submit code could get wrong: a second pipeline of the same
name (409), a version or run that names an unknown pipeline, version or experiment (404). It
records every request (method, path, query, JSON body, uploaded files) in `requests`. It does
not compile, validate or run pipelines, and knows nothing of auth or namespaces' permissions.
"""
from __future__ import annotations

import datetime
import http.server
import itertools
import json
import re
import threading
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

from tests import http_double


class ApiError(Exception):

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def parse_multipart(content_type: str, body: bytes) -> Dict[str, Tuple[str, bytes]]:
  """{field: (filename, exact bytes)}: by hand, so that the bytes are not re-encoded."""
  boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
  files = {}
  for part in body.split(b'--' + boundary)[1:]:
    if part.startswith(b'--'):
      break  # the closing delimiter
    head, _, data = part[2:].partition(b'\r\n\r\n')  # part[2:]: the CRLF after the boundary
    data = data[:-2] if data.endswith(b'\r\n') else data
    disposition = head.decode('latin-1')
    name = re.search(r'\bname="([^"]*)"', disposition).group(1)
    filename = re.search(r'filename="([^"]*)"', disposition)
    files[name] = (filename.group(1) if filename else '', data)
  return files


class KfpApiDouble:
  """State and handlers; `url` after start(). Use as a context manager."""

  def __init__(self, multi_user: bool = False):
    self.multi_user = multi_user
    self.requests: List[Dict[str, Any]] = []
    self.pipelines: Dict[str, Dict[str, Any]] = {}
    self.versions: Dict[str, List[Dict[str, Any]]] = {}
    self.experiments: Dict[str, Dict[str, Any]] = {}
    self.recurring_runs: Dict[str, Dict[str, Any]] = {}
    self.runs: Dict[str, Dict[str, Any]] = {}
    self._ids = itertools.count(1)
    self._lock = threading.Lock()
    self._server: Optional[http.server.ThreadingHTTPServer] = None
    self.url = ''

  # --- lifecycle
  def start(self) -> 'KfpApiDouble':
    double = self

    class Handler(http_double.QuietHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        double._handle(self)

      def do_POST(self):  # pylint: disable=invalid-name
        double._handle(self)

    self._server, self.url = http_double.start(Handler)
    return self

  def stop(self) -> None:
    if self._server:
      http_double.stop(self._server)

  def __enter__(self) -> 'KfpApiDouble':
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  def calls(self, method: str, path_regex: str) -> List[Dict[str, Any]]:
    return [r for r in self.requests
            if r['method'] == method and re.fullmatch(path_regex, r['path'])]

  # --- HTTP
  def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
    url = urllib.parse.urlsplit(handler.path)
    query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
    length = int(handler.headers.get('Content-Length') or 0)
    raw = handler.rfile.read(length) if length else b''
    content_type = handler.headers.get('Content-Type', '')
    record = {'method': handler.command, 'path': url.path, 'query': query, 'json': None,
              'files': {}}
    if content_type.startswith('multipart/form-data'):
      record['files'] = parse_multipart(content_type, raw)
    elif raw:
      record['json'] = json.loads(raw)
    with self._lock:
      self.requests.append(record)
      try:
        status, body = 200, self._route(handler.command, url.path, query, record)
      except ApiError as e:
        status, body = e.status, {'error': str(e), 'message': str(e), 'code': e.status}
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header('Content-Type', 'application/json')
    handler.send_header('Content-Length', str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)

  def _route(self, method: str, path: str, query: Dict[str, str], record) -> Dict[str, Any]:
    routes = [
        ('GET', r'/apis/v2beta1/healthz', self._healthz),
        ('GET', r'/apis/v2beta1/pipelines', self._list_pipelines),
        ('POST', r'/apis/v2beta1/pipelines/upload', self._upload),
        ('POST', r'/apis/v2beta1/pipelines/upload_version', self._upload_version),
        ('GET', r'/apis/v2beta1/pipelines/([^/]+)/versions', self._list_versions),
        ('GET', r'/apis/v2beta1/experiments', self._list_experiments),
        ('POST', r'/apis/v2beta1/experiments', self._create_experiment),
        ('GET', r'/apis/v2beta1/recurringruns', self._list_recurring_runs),
        ('POST', r'/apis/v2beta1/recurringruns', self._create_recurring_run),
        ('POST', r'/apis/v2beta1/recurringruns/([^/]+):disable', self._disable_recurring_run),
        ('POST', r'/apis/v2beta1/runs', self._create_run),
    ]
    for verb, pattern, handler in routes:
      match = re.fullmatch(pattern, path)
      if verb == method and match:
        return handler(query, record, *match.groups())
    raise ApiError(404, f'the KFP API double does not implement {method} {path}')

  def _new_id(self, kind: str) -> str:
    return f'{kind}-{next(self._ids):04d}'

  # --- pipelines
  def _healthz(self, query, record):
    return {'multi_user': self.multi_user, 'pipeline_store': 'database'}

  @staticmethod
  def _matches(item: Dict[str, Any], filter_json: Optional[str]) -> bool:
    """EQUALS predicates only (operation 1 or 'EQUALS'; stringValue or string_value)."""
    if not filter_json:
      return True
    for p in json.loads(filter_json).get('predicates', []):
      if p.get('operation') not in (1, 'EQUALS'):
        raise ApiError(400, f'the KFP API double only filters with EQUALS, got {p}')
      if item.get(p['key']) != p.get('stringValue', p.get('string_value')):
        return False
    return True

  def _list_pipelines(self, query, record):
    found = [p for p in self.pipelines.values() if self._matches(p, query.get('filter'))]
    return {'pipelines': found, 'total_size': len(found)}

  def _package(self, record) -> bytes:
    if 'uploadfile' not in record['files']:
      raise ApiError(400, 'upload needs the multipart field uploadfile')
    return record['files']['uploadfile'][1]

  def _add_version(self, pipeline_id: str, name: str, data: bytes) -> Dict[str, Any]:
    if any(v['display_name'] == name for v in self.versions[pipeline_id]):
      raise ApiError(409, f'a version named {name!r} already exists in {pipeline_id}')
    version = {'pipeline_id': pipeline_id, 'pipeline_version_id': self._new_id('version'),
               'display_name': name, 'name': name, 'created_at': _now(),
               'package_bytes': len(data)}
    self.versions[pipeline_id].append(version)
    return version

  def _upload(self, query, record):
    data = self._package(record)
    name = query.get('display_name') or query.get('name')
    if not name:
      raise ApiError(400, 'upload needs a pipeline name')
    if any(p['display_name'] == name for p in self.pipelines.values()):
      raise ApiError(409, f'pipeline {name!r} already exists; upload a version instead')
    pipeline = {'pipeline_id': self._new_id('pipeline'), 'display_name': name, 'name': name,
                'description': query.get('description', ''), 'created_at': _now(),
                'namespace': query.get('namespace', '')}
    self.pipelines[pipeline['pipeline_id']] = pipeline
    self.versions[pipeline['pipeline_id']] = []
    self._add_version(pipeline['pipeline_id'], name, data)  # as KFP does: the first version
    return pipeline

  def _upload_version(self, query, record):
    data = self._package(record)
    pipeline_id = query.get('pipelineid', '')
    if pipeline_id not in self.pipelines:
      raise ApiError(404, f'no pipeline {pipeline_id!r}')
    name = query.get('display_name') or query.get('name')
    if not name:
      raise ApiError(400, 'upload_version needs a version name')
    return self._add_version(pipeline_id, name, data)

  def _list_versions(self, query, record, pipeline_id):
    if pipeline_id not in self.pipelines:
      raise ApiError(404, f'no pipeline {pipeline_id!r}')
    versions = list(self.versions[pipeline_id])
    if query.get('sort_by') == 'created_at desc':
      versions.reverse()  # kept in creation order
    versions = versions[:int(query.get('page_size') or len(versions) or 1)]
    return {'pipeline_versions': versions, 'total_size': len(self.versions[pipeline_id])}

  # --- experiments and runs
  def _list_experiments(self, query, record):
    found = [e for e in self.experiments.values() if self._matches(e, query.get('filter'))]
    return {'experiments': found, 'total_size': len(found)}

  def _create_experiment(self, query, record):
    body = record['json'] or {}
    if not body.get('display_name'):
      raise ApiError(400, 'experiment needs a display_name')
    experiment = {'experiment_id': self._new_id('experiment'),
                  'display_name': body['display_name'], 'created_at': _now(),
                  'namespace': body.get('namespace') or '', 'storage_state': 'AVAILABLE'}
    self.experiments[experiment['experiment_id']] = experiment
    return experiment

  def _check_references(self, body: Dict[str, Any]) -> None:
    if body.get('experiment_id') not in self.experiments:
      raise ApiError(404, f"no experiment {body.get('experiment_id')!r}")
    ref = body.get('pipeline_version_reference') or {}
    versions = self.versions.get(ref.get('pipeline_id'), [])
    if not any(v['pipeline_version_id'] == ref.get('pipeline_version_id') for v in versions):
      raise ApiError(404, f'no pipeline version {ref}')

  def _list_recurring_runs(self, query, record):
    found = [r for r in self.recurring_runs.values()
             if r['experiment_id'] == query.get('experiment_id', r['experiment_id'])]
    return {'recurringRuns': found, 'total_size': len(found)}  # sic: camelCase in the API

  def _create_recurring_run(self, query, record):
    body = dict(record['json'] or {})
    self._check_references(body)
    cron = ((body.get('trigger') or {}).get('cron_schedule') or {}).get('cron')
    if not cron and not (body.get('trigger') or {}).get('periodic_schedule'):
      raise ApiError(400, 'a recurring run needs a trigger')
    if not 1 <= int(body.get('max_concurrency') or 0) <= 10:
      raise ApiError(400, 'max_concurrency must be in [1, 10]')
    body.update(recurring_run_id=self._new_id('recurring'), created_at=_now(),
                status='ENABLED' if body.get('mode') == 'ENABLE' else 'DISABLED')
    self.recurring_runs[body['recurring_run_id']] = body
    return body

  def _disable_recurring_run(self, query, record, recurring_run_id):
    if recurring_run_id not in self.recurring_runs:
      raise ApiError(404, f'no recurring run {recurring_run_id!r}')
    self.recurring_runs[recurring_run_id].update(mode='DISABLE', status='DISABLED')
    return {}

  def _create_run(self, query, record):
    body = dict(record['json'] or {})
    self._check_references(body)
    body.update(run_id=self._new_id('run'), created_at=_now(), state='PENDING')
    self.runs[body['run_id']] = body
    return body
