"""Submits a compiled package to a Kubeflow Pipelines cluster: upload, experiment, schedule.

  simclr-tfx kfp-submit --host http://localhost:8080 --package kfp/simclr_tfx.yaml \\
      [--pipeline-name NAME] [--experiment simclr-tfx] [--cron "0 0 3 * * *" | --once] \\
      [--run-name NAME] [--max-concurrency 1] [--namespace NS] [--replace-schedule]

With the KFP SDK's own client (kfp.Client, v2beta1 REST API):
  1. the package (the PipelineSpec YAML `simclr-tfx compile` writes) becomes a new pipeline, or
     a new version of the pipeline of that name when one exists;
  2. the experiment is looked up by name and created if missing;
  3. a recurring run of exactly that version is created (KFP's cron: 6 fields, seconds first,
     in the scheduler's time zone, UTC unless its controller sets one), or with --once one run.

Each submit pins the version it uploaded, so an older recurring run keeps running the older
version: --replace-schedule disables the enabled recurring runs of the same name in the
experiment once the new one exists; without it they are listed as a warning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import socket
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional, Tuple

from components.errors import ConfigError, KfpSubmitError

DEFAULT_CRON = '0 0 3 * * *'  # every day at 03:00:00
DEFAULT_EXPERIMENT = 'simclr-tfx'
CONNECT_TIMEOUT_S = 10.0
# robfig/cron's descriptors, which KFP's scheduler accepts besides 6-field expressions.
CRON_DESCRIPTORS = ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight',
                    '@hourly')
# (name, lowest, highest) of KFP's 6 cron fields.
CRON_FIELDS = (('second', 0, 59), ('minute', 0, 59), ('hour', 0, 23), ('day of month', 1, 31),
               ('month', 1, 12), ('day of week', 0, 6))
CRON_NAMES = {'jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov',
              'dec', 'sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'}


@dataclasses.dataclass
class SubmitRequest:
  host: str
  package: str
  pipeline_name: str = ''  # default: the package's pipelineInfo.name
  experiment: str = DEFAULT_EXPERIMENT
  cron: Optional[str] = None  # default DEFAULT_CRON, unless once
  once: bool = False
  run_name: str = ''
  max_concurrency: int = 1
  namespace: str = ''  # multi-user KFP: the profile namespace
  version_name: str = ''  # default: <pipeline name>-<UTC time>-<package sha256[:8]>
  replace_schedule: bool = False

  def validate(self) -> 'SubmitRequest':
    """Everything checkable without the cluster, so that a mistake costs no request."""
    if self.once and self.cron:
      raise ConfigError('--cron and --once exclude each other')
    if not self.once:
      self.cron = validate_cron(self.cron or DEFAULT_CRON)
    # KFP's API server refuses a max_concurrency outside [1, 10].
    if not 1 <= self.max_concurrency <= 10:
      raise ConfigError(f'--max-concurrency must be 1..10, got {self.max_concurrency}')
    self.host = normalize_host(self.host)
    if not self.experiment.strip():
      raise ConfigError('--experiment must not be empty')
    return self


def normalize_host(host: str) -> str:
  # kfp.Client would silently prefix https://, which fails on a plain port-forward.
  parsed = urllib.parse.urlparse(host or '')
  if parsed.scheme not in ('http', 'https') or not parsed.hostname:
    raise ConfigError(f'--host needs a URL with http:// or https://, e.g. '
                      'http://localhost:8080 (kubectl port-forward -n kubeflow '
                      f'svc/ml-pipeline-ui 8080:80), got {host!r}')
  return host.rstrip('/')


def _cron_part_ok(part: str, low: int, high: int) -> bool:
  """One comma-separated item: '*', '?', N, N-M or a name, optionally /STEP."""
  value, _, step = part.partition('/')
  if step and not (step.isdigit() and int(step) > 0):
    return False
  if value in ('*', '?'):
    return True
  for bound in value.split('-', 1):
    if bound.lower() in CRON_NAMES:
      continue
    if not bound.isdigit() or not low <= int(bound) <= high:
      return False
  return True


def validate_cron(expression: str) -> str:
  """The expression, stripped, if KFP's scheduler reads it as intended; else ConfigError.

  KFP parses cron with robfig/cron: seconds first, and the day-of-week field optional, so a
  5-field Unix expression would be read with its fields shifted ('0 3 * * *': minute 3 of every
  hour). Only 6 fields or a descriptor are accepted here."""
  expression = ' '.join((expression or '').split())
  if expression.startswith('@'):
    every = re.fullmatch(r'@every ((\d+(\.\d+)?(ns|us|ms|s|m|h))+)', expression)
    if expression in CRON_DESCRIPTORS or every:
      return expression
    raise ConfigError(f'unknown cron descriptor {expression!r}; use one of '
                      f"{', '.join(CRON_DESCRIPTORS)}, '@every 6h' or 6 fields")
  fields = expression.split(' ') if expression else []
  if len(fields) != 6:
    hint = f" (did you mean '0 {expression}'?)" if len(fields) == 5 else ''
    raise ConfigError(f'KFP cron needs 6 fields (second minute hour day-of-month month '
                      f'day-of-week), got {len(fields)} in {expression!r}{hint}')
  for value, (name, low, high) in zip(fields, CRON_FIELDS):
    if not all(_cron_part_ok(p, low, high) for p in value.split(',')):
      raise ConfigError(f'cron {expression!r}: bad {name} field {value!r} '
                        f'(numbers {low}-{high}, *, ?, ranges a-b, lists a,b, steps /n)')
  return expression


def read_package(path: str) -> Tuple[str, str]:
  """(pipelineInfo.name, sha256 hex) of a KFP package YAML, checked like the server parses it."""
  import yaml  # pylint: disable=g-import-not-at-top
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from kfp.pipeline_spec import pipeline_spec_pb2  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no pipeline package at {path} (write one with `simclr-tfx compile`)')
  if not path.endswith(('.yaml', '.yml')):
    raise ConfigError(f'{path}: upload the PipelineSpec .yaml that `simclr-tfx compile` writes '
                      '(its .json is the PipelineJob for Vertex AI, which KFP does not take)')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    documents = [d for d in yaml.safe_load_all(data) if d]
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
  except (yaml.YAMLError, json_format.ParseError, IndexError, AttributeError,
          TypeError) as e:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ConfigError(f'{path} is not a KFP PipelineSpec: {first}') from None
  if not spec.pipeline_info.name or not spec.root.dag.tasks:
    raise ConfigError(f'{path} is not a KFP PipelineSpec (no pipelineInfo.name or no tasks)')
  return spec.pipeline_info.name, hashlib.sha256(data).hexdigest()


def check_reachable(host: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
  """Fails in seconds: kfp.Client has no timeout, and hangs on a host that drops packets."""
  parsed = urllib.parse.urlparse(host)
  port = parsed.port or (443 if parsed.scheme == 'https' else 80)
  try:
    socket.create_connection((parsed.hostname, port), timeout=timeout).close()
  except OSError as e:
    reason = e.strerror or str(e) or type(e).__name__
    raise KfpSubmitError(f'cannot reach Kubeflow Pipelines at {host}: {reason} (is the API '
                         'server up, or the port-forward running?)') from None


def _api_message(error: Exception) -> str:
  """One line from an ApiException (HTTP status and the server's message) or a network error."""
  status = getattr(error, 'status', None)
  if status:
    body = getattr(error, 'body', b'') or b''
    body = body.decode('utf-8', 'replace') if isinstance(body, bytes) else str(body)
    try:
      parsed = json.loads(body)
      message = parsed.get('message') or parsed.get('error') or body
    except (ValueError, AttributeError):
      message = body
    message = ' '.join(str(message).split())[:300]
    return f'HTTP {status} {getattr(error, "reason", "")}: {message}'.rstrip(': ')
  return ' '.join(str(error).split())[:300] or type(error).__name__


@contextlib.contextmanager
def _api_errors(host: str, action: str) -> Iterator[None]:
  import kfp_server_api  # pylint: disable=g-import-not-at-top
  import urllib3  # pylint: disable=g-import-not-at-top
  try:
    yield
  except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError, TimeoutError,
          ConnectionError) as e:
    raise KfpSubmitError(f'{action} on {host} failed: {_api_message(e)}') from None


def connect(host: str, namespace: str = ''):
  """kfp.Client for host; without a namespace the client asks the server's healthz first."""
  import kfp  # pylint: disable=g-import-not-at-top
  check_reachable(host)
  with _api_errors(host, 'connecting'):
    if namespace:
      return kfp.Client(host=host, namespace=namespace)
    return kfp.Client(host=host)


def _eq_filter(key: str, value: str) -> str:
  # The filter JSON kfp.Client itself sends (operation 1 = EQUALS).
  return json.dumps({'predicates': [{'operation': 1, 'key': key, 'stringValue': value}]})


def find_pipeline_id(client, name: str, namespace: str = '') -> Optional[str]:
  # Not client.get_pipeline_id: it cannot pass the namespace of a namespaced pipeline.
  found = client.list_pipelines(filter=_eq_filter('display_name', name), page_size=2,
                                namespace=namespace or None).pipelines or []
  if len(found) > 1:
    raise KfpSubmitError(f'{len(found)} pipelines are named {name!r}; pass --pipeline-name')
  return found[0].pipeline_id if found else None


def upload(client, package: str, name: str, version_name: str,
           namespace: str = '') -> Dict[str, Any]:
  """A new pipeline, or a new version of the existing one: ids of the pipeline and version."""
  pipeline_id = find_pipeline_id(client, name, namespace)
  if pipeline_id:
    version = client.upload_pipeline_version(package, version_name, pipeline_id=pipeline_id,
                                             description='uploaded by simclr-tfx kfp-submit')
    return {'pipeline_id': pipeline_id, 'pipeline_created': False,
            'version_id': version.pipeline_version_id, 'version_name': version_name}
  pipeline = client.upload_pipeline(package, pipeline_name=name, namespace=namespace or None,
                                    description='SimCLR pretraining (simclr-tfx)')
  # The upload made the first version; its id is what a run must pin.
  versions = client.list_pipeline_versions(pipeline.pipeline_id, page_size=1,
                                           sort_by='created_at desc').pipeline_versions or []
  if not versions:
    raise KfpSubmitError(f'pipeline {pipeline.pipeline_id} was created without a version')
  return {'pipeline_id': pipeline.pipeline_id, 'pipeline_created': True,
          'version_id': versions[0].pipeline_version_id, 'version_name': versions[0].display_name}


def enabled_recurring_runs(client, experiment_id: str, name: str) -> List[str]:
  """Ids of the enabled recurring runs named `name` in the experiment (filtered here, so that
  it does not depend on which keys the server can filter on)."""
  ids, token = [], ''
  while True:
    page = client.list_recurring_runs(experiment_id=experiment_id, page_size=100,
                                      page_token=token)
    for r in page.recurring_runs or []:
      enabled = r.status == 'ENABLED' or (not r.status and r.mode == 'ENABLE')
      if r.display_name == name and enabled:
        ids.append(r.recurring_run_id)
    token = page.next_page_token or ''
    if not token:
      return ids


def _default_version_name(name: str, sha256: str) -> str:
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')
  return f'{name}-{stamp}-{sha256[:8]}'


def submit(request: SubmitRequest, client=None) -> Dict[str, Any]:
  """Uploads, gets or creates the experiment, schedules (or runs once); returns what it made."""
  request.validate()
  name, sha256 = read_package(request.package)
  name = request.pipeline_name or name
  host = request.host
  client = client or connect(host, request.namespace)
  result: Dict[str, Any] = {'host': host, 'pipeline_name': name, 'package': request.package,
                            'package_sha256': sha256, 'experiment': request.experiment}
  with _api_errors(host, 'uploading the pipeline'):
    result.update(upload(client, request.package, name,
                         request.version_name or _default_version_name(name, sha256),
                         request.namespace))
  with _api_errors(host, 'getting or creating the experiment'):
    experiment = client.create_experiment(request.experiment,
                                          namespace=request.namespace or None)
  result['experiment_id'] = experiment.experiment_id
  pinned = {'experiment_id': experiment.experiment_id, 'pipeline_id': result['pipeline_id'],
            'version_id': result['version_id']}
  if request.once:
    run_name = request.run_name or f"{name}-{result['version_name']}"
    with _api_errors(host, 'creating the run'):
      run = client.run_pipeline(job_name=run_name, **pinned)
    result.update(run_id=run.run_id, run_name=run_name, recurring_run_id=None)
    return result
  result.update(_schedule(client, request, name, pinned))
  return result


def _schedule(client, request: SubmitRequest, name: str, pinned: Dict[str, str]):
  run_name = request.run_name or f'{name}-schedule'
  host = request.host
  with _api_errors(host, 'listing recurring runs'):
    older = enabled_recurring_runs(client, pinned['experiment_id'], run_name)
  with _api_errors(host, 'creating the recurring run'):
    # no_catchup: after a pause, one run on new data, not one per missed day.
    recurring = client.create_recurring_run(
        job_name=run_name, cron_expression=request.cron, max_concurrency=request.max_concurrency,
        no_catchup=True, enabled=True, **pinned)
  out = {'recurring_run_id': recurring.recurring_run_id, 'run_id': None, 'run_name': run_name,
         'cron': request.cron, 'max_concurrency': request.max_concurrency,
         'disabled_recurring_runs': [], 'other_enabled_recurring_runs': older}
  if request.replace_schedule:
    with _api_errors(host, 'disabling the older recurring runs'):
      for recurring_run_id in older:
        client.disable_recurring_run(recurring_run_id)
    out.update(disabled_recurring_runs=older, other_enabled_recurring_runs=[])
  return out


def format_result(result: Dict[str, Any]) -> str:
  made = 'new pipeline' if result['pipeline_created'] else 'new version of pipeline'
  lines = [f"{made} {result['pipeline_name']!r}: pipeline id {result['pipeline_id']}",
           f"  version {result['version_name']!r}: version id {result['version_id']}",
           f"  experiment {result['experiment']!r}: experiment id {result['experiment_id']}"]
  if result.get('recurring_run_id'):
    lines.append(f"  recurring run {result['run_name']!r} (cron {result['cron']!r}, max "
                 f"concurrency {result['max_concurrency']}): recurring run id "
                 f"{result['recurring_run_id']}")
    for rid in result['disabled_recurring_runs']:
      lines.append(f'  disabled the older recurring run {rid}')
    for rid in result['other_enabled_recurring_runs']:
      lines.append(f"  warning: recurring run {rid}, also named {result['run_name']!r}, is "
                   'still enabled on an older version (--replace-schedule disables it)')
  else:
    lines.append(f"  run {result['run_name']!r}: run id {result['run_id']}")
  return '\n'.join(lines)
