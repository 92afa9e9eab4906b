"""The Kubeflow Pipelines submission side, without a cluster or a Docker engine.

- test_dockerfile_*: infra/kubeflow/Dockerfile read as text and checked against setup.py, the
  lock and .dockerignore; its build-time import check is run here, in the project's venv.
- the rest: `simclr-tfx kfp-submit` with the real kfp.Client against tests/kfp_api_double.py,
  a TEST DOUBLE of the KFP v2beta1 REST API (what it checks and does not: its docstring).
"""
import ast
import fnmatch
import glob
import json
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from simclr_tools import cli, kfp_submit
from pipeline.config import ConfigError
from tests.conftest import REPO
from tests.kfp_api_double import KfpApiDouble

DOCKERFILE = os.path.join(REPO, 'infra', 'kubeflow', 'Dockerfile')


# --- the pipeline image ---------------------------------------------------------------------

def _instructions(path=DOCKERFILE):
  """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
  with open(path, encoding='utf-8') as f:
    lines = [l.rstrip('\n') for l in f if not l.lstrip().startswith('#')]
  text = re.sub(r'\\\n', ' ', '\n'.join(lines))
  out = []
  for line in text.splitlines():
    if line.strip():
      keyword, _, rest = line.strip().partition(' ')
      out.append((keyword.upper(), ' '.join(rest.split())))
  return out


def _lock_target():
  """(python version, glibc minor) the lock was compiled for, from uv's header line."""
  with open(os.path.join(REPO, 'requirements', 'lock.txt'), encoding='utf-8') as f:
    header = f.read(2000)
  python = re.search(r'--python-version (\d+\.\d+)', header).group(1)
  glibc = int(re.search(r'--python-platform \S*manylinux_2_(\d+)', header).group(1))
  return python, glibc


def _setup_top_level_packages():
  """Top-level packages of setup.py's `packages=`, evaluating its find_packages(...) here."""
  from setuptools import find_packages
  with open(os.path.join(REPO, 'setup.py'), encoding='utf-8') as f:
    tree = ast.parse(f.read())
  setup_call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and getattr(n.func, 'id', '') == 'setup')
  packages = next(k.value for k in setup_call.keywords if k.arg == 'packages')
  if isinstance(packages, ast.Call):  # find_packages(include=[...], exclude=[...])
    kwargs = {k.arg: ast.literal_eval(k.value) for k in packages.keywords}
    names = find_packages(where=kwargs.pop('where', REPO), **kwargs)
  else:
    names = ast.literal_eval(packages)
  return sorted({n.split('.')[0] for n in names})


def _copied_into(instructions):
  """{source: absolute destination} of every COPY, resolving relative ones against WORKDIR."""
  workdir, copied = '/', {}
  for keyword, args in instructions:
    if keyword == 'WORKDIR':
      workdir = os.path.join(workdir, args)
    elif keyword == 'COPY':
      *sources, dest = [a for a in shlex.split(args) if not a.startswith('--')]
      for source in sources:
        target = os.path.normpath(os.path.join(workdir, dest))
        if dest.endswith('/') or dest in ('.', './') or len(sources) > 1:
          target = os.path.join(target, os.path.basename(source))
        copied[source.rstrip('/')] = target
  return copied


def _import_check():
  keyword, args = _instructions()[-1]
  assert keyword == 'RUN', 'the import check must be the last instruction'
  argv = shlex.split(args)
  assert argv[:2] == ['python', '-c'], argv
  return argv[2]


def test_dockerfile_base_image_matches_lock():
  python, glibc = _lock_target()
  froms = [a for k, a in _instructions() if k == 'FROM']
  assert len(froms) == 1, froms
  match = re.fullmatch(r'python:(\d+\.\d+)(?:\.\d+)?-slim-(\w+)', froms[0])
  assert match, froms[0]
  assert match.group(1) == python
  debian_glibc = {'bullseye': 31, 'bookworm': 36, 'trixie': 41}
  # manylinux_2_N wheels need glibc >= N; the lock targets exactly bookworm's.
  assert debian_glibc[match.group(2)] >= glibc


def test_dockerfile_installs_the_lock_with_no_deps():
  instructions = _instructions()
  copied = _copied_into(instructions)
  assert 'requirements/lock.txt' in copied
  lock_in_image = copied['requirements/lock.txt']
  runs = [i for i, (k, a) in enumerate(instructions)
          if k == 'RUN' and re.search(rf'pip install --no-deps -r {re.escape(lock_in_image)}\b', a)]
  assert runs, f'no `pip install --no-deps -r {lock_in_image}`'
  # The dependency layer comes before the code, so that code changes reuse it.
  first_code_copy = min(i for i, (k, a) in enumerate(instructions)
                        if k == 'COPY' and 'lock.txt' not in a)
  assert runs[0] < first_code_copy


def test_dockerfile_copies_every_package_in_setup_py():
  instructions = _instructions()
  copied = _copied_into(instructions)
  packages = _setup_top_level_packages()
  assert {'components', 'pipeline', 'schemas', 'simclr_tfx'} <= set(packages)
  for name in packages + ['setup.py']:
    assert copied.get(name) == f'/pipeline/{name}', f'{name} is not copied to /pipeline'
  assert ('WORKDIR', '/pipeline') in instructions
  installs = [a for k, a in instructions if k == 'RUN' and 'pip install' in a and '/pipeline' in a]
  assert installs and all('--no-deps' in a for a in installs), installs
  env = ' '.join(a for k, a in instructions if k == 'ENV')
  assert re.search(r'\bPYTHONPATH=/pipeline\b', env), env


def test_dockerfile_leaves_the_command_to_kfp():
  # TFX's tasks run `python -m ...kubeflow_v2_run_executor`; an ENTRYPOINT would prefix it.
  assert not [k for k, _ in _instructions() if k in ('ENTRYPOINT', 'CMD')]


def test_dockerfile_import_check_names_every_executor():
  code = _import_check()
  modules = set(re.fullmatch(r'import (.+)', code).group(1).replace(' ', '').split(','))
  executors = {os.path.relpath(p, REPO)[:-3].replace(os.sep, '.')
               for p in glob.glob(os.path.join(REPO, 'components', '*', 'executor.py'))}
  assert len(executors) == 9, executors
  assert executors <= modules, executors - modules
  assert 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor' in modules


@pytest.mark.slow
def test_dockerfile_import_check_imports_in_the_venv():
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run([sys.executable, '-c', _import_check()], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]


def test_dockerignore_keeps_the_context_small_and_the_code_in():
  with open(os.path.join(REPO, '.dockerignore'), encoding='utf-8') as f:
    patterns = [l.strip() for l in f if l.strip() and not l.startswith('#')]
  assert not [p for p in patterns if p.startswith('!')]  # keeps the check below simple

  def ignored(path):
    return any(fnmatch.fnmatch(path, p.lstrip('/')) or path.startswith(p.rstrip('/') + '/')
               for p in patterns)

  for heavy in ('.venv', 'out', '.git'):
    assert ignored(heavy), heavy
  needed = [src for src in _copied_into(_instructions())]
  assert 'requirements/lock.txt' in needed
  for path in needed:
    assert not ignored(path), f'.dockerignore drops {path}, which the Dockerfile copies'


# --- kfp-submit against the test double of the KFP API --------------------------------------

@pytest.fixture(autouse=True)
def _no_kfp_context(tmp_path, monkeypatch):
  """kfp.Client reads ~/.config/kfp/context.json; keep a developer's file out of the tests."""
  import kfp
  monkeypatch.setattr(kfp.Client, '_LOCAL_KFP_CONTEXT', str(tmp_path / 'no-context.json'))


@pytest.fixture()
def api():
  with KfpApiDouble() as double:
    yield double


@pytest.fixture(scope='module')
def package(tmp_path_factory):
  """A real one-step PipelineSpec YAML, compiled with kfp's own DSL."""
  from kfp import compiler, dsl

  @dsl.container_component
  def hello():
    return dsl.ContainerSpec(image='python:3.11-slim', command=['echo', 'hello'])

  @dsl.pipeline(name='simclr-submit-test')
  def one_step():
    hello()

  path = str(tmp_path_factory.mktemp('pkg') / 'simclr-submit-test.yaml')
  compiler.Compiler().compile(one_step, package_path=path)
  return path


def _bytes(path):
  with open(path, 'rb') as f:
    return f.read()


def _submit(api, package, **kwargs):
  return kfp_submit.submit(kfp_submit.SubmitRequest(host=api.url, package=package, **kwargs))


def test_submit_uploads_the_package_and_schedules_it(api, package):
  result = _submit(api, package, experiment='nightly', cron='0 30 2 * * *', max_concurrency=2)

  uploads = api.calls('POST', '/apis/v2beta1/pipelines/upload')
  assert len(uploads) == 1 and not api.calls('POST', '/apis/v2beta1/pipelines/upload_version')
  filename, data = uploads[0]['files']['uploadfile']
  assert data == _bytes(package) and filename == os.path.basename(package)
  assert uploads[0]['query']['name'] == 'simclr-submit-test'  # the package's pipelineInfo.name

  (pipeline_id, pipeline), = api.pipelines.items()
  (version,) = api.versions[pipeline_id]
  (experiment_id, experiment), = api.experiments.items()
  assert experiment['display_name'] == 'nightly'
  (create,) = api.calls('POST', '/apis/v2beta1/recurringruns')
  body = create['json']
  assert body['trigger']['cron_schedule']['cron'] == '0 30 2 * * *'
  assert int(body['max_concurrency']) == 2
  assert body['pipeline_version_reference'] == {
      'pipeline_id': pipeline_id, 'pipeline_version_id': version['pipeline_version_id']}
  assert body['experiment_id'] == experiment_id
  assert body['mode'] == 'ENABLE' and body['no_catchup'] is True
  assert 'pipeline_spec' not in body  # the uploaded version is pinned, not an inline copy
  assert not api.calls('POST', '/apis/v2beta1/runs')

  (recurring_run_id,) = api.recurring_runs
  assert result['pipeline_created'] is True
  assert (result['pipeline_id'], result['version_id'], result['experiment_id'],
          result['recurring_run_id']) == (pipeline_id, version['pipeline_version_id'],
                                          experiment_id, recurring_run_id)
  assert result['cron'] == '0 30 2 * * *' and result['run_id'] is None


def test_a_second_submit_adds_a_version_not_a_pipeline(api, package):
  first = _submit(api, package)
  second = _submit(api, package, version_name='v2')

  assert len(api.calls('POST', '/apis/v2beta1/pipelines/upload')) == 1
  (version_upload,) = api.calls('POST', '/apis/v2beta1/pipelines/upload_version')
  assert version_upload['query'] == {'name': 'v2', 'pipelineid': first['pipeline_id'],
                                     'description': 'uploaded by simclr-tfx kfp-submit'}
  assert version_upload['files']['uploadfile'][1] == _bytes(package)
  assert len(api.pipelines) == 1 and len(api.versions[first['pipeline_id']]) == 2
  assert second['pipeline_created'] is False
  assert second['pipeline_id'] == first['pipeline_id']
  assert second['version_id'] == api.versions[first['pipeline_id']][1]['pipeline_version_id']
  assert second['version_id'] != first['version_id']
  # The experiment is found by name, not created again.
  assert len(api.calls('POST', '/apis/v2beta1/experiments')) == 1
  assert second['experiment_id'] == first['experiment_id']
  # The new schedule pins the new version; the old one is reported, still enabled.
  assert (api.recurring_runs[second['recurring_run_id']]['pipeline_version_reference']
          ['pipeline_version_id']) == second['version_id']
  assert second['other_enabled_recurring_runs'] == [first['recurring_run_id']]
  assert 'still enabled' in kfp_submit.format_result(second)

  third = _submit(api, package, version_name='v3', replace_schedule=True)
  assert third['disabled_recurring_runs'] == [first['recurring_run_id'],
                                              second['recurring_run_id']]
  status = {rid: r['status'] for rid, r in api.recurring_runs.items()}
  assert status == {first['recurring_run_id']: 'DISABLED',
                    second['recurring_run_id']: 'DISABLED',
                    third['recurring_run_id']: 'ENABLED'}


def test_once_creates_one_run_of_the_uploaded_version(api, package):
  result = _submit(api, package, once=True, run_name='try-1')
  (create,) = api.calls('POST', '/apis/v2beta1/runs')
  assert create['json']['display_name'] == 'try-1'
  assert create['json']['pipeline_version_reference'] == {
      'pipeline_id': result['pipeline_id'], 'pipeline_version_id': result['version_id']}
  assert create['json']['experiment_id'] == result['experiment_id']
  assert result['run_id'] in api.runs and result['recurring_run_id'] is None
  assert not api.calls('POST', '/apis/v2beta1/recurringruns')


@pytest.mark.parametrize('cron, message', [
    ('0 3 * * *', "6 fields .* got 5 .*did you mean '0 0 3 \\* \\* \\*'"),
    ('0 0 0 3 * * *', '6 fields .* got 7'),
    ('61 0 3 * * *', 'bad second field'),
    ('0 0 24 * * *', 'bad hour field'),
    ('0 0 3 * * MON-FUNDAY', 'bad day of week field'),
    ('@sometimes', 'unknown cron descriptor'),
])
def test_a_bad_cron_fails_before_any_request(api, package, cron, message):
  with pytest.raises(ConfigError, match=message):
    _submit(api, package, cron=cron)
  assert api.requests == []


@pytest.mark.parametrize('cron', ['0 0 3 * * *', '0 */15 * * * ?', '0 0 9 ? * MON-FRI',
                                  '0 0 1,13 1-7 * 1', '@daily', '@every 6h30m'])
def test_valid_crons_pass(cron):
  assert kfp_submit.validate_cron(cron) == cron


def test_cli_bad_cron_exits_2_with_one_line(api, package, capsys):
  code = cli.main(['kfp-submit', '--host', api.url, '--package', package, '--cron', '0 3 * * *'])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and 'KFP cron needs 6 fields' in err
  assert api.requests == []


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_an_unreachable_host_is_one_clear_line(package, capsys):
  host = f'http://127.0.0.1:{_closed_port()}'
  with pytest.raises(kfp_submit.KfpSubmitError, match=f'cannot reach Kubeflow Pipelines at {host}'):
    kfp_submit.submit(kfp_submit.SubmitRequest(host=host, package=package))
  assert cli.main(['kfp-submit', '--host', host, '--package', package]) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith('simclr-tfx: cannot reach'), err


def test_a_host_without_scheme_is_refused(package):
  with pytest.raises(ConfigError, match='http:// or https://'):
    kfp_submit.submit(kfp_submit.SubmitRequest(host='localhost:8080', package=package))


def test_a_missing_or_wrong_package_is_refused_before_any_request(api, tmp_path, capsys):
  missing = str(tmp_path / 'nope.yaml')
  assert cli.main(['kfp-submit', '--host', api.url, '--package', missing]) == 1
  err = capsys.readouterr().err.strip()
  assert err == (f'simclr-tfx: no pipeline package at {missing} '
                 '(write one with `simclr-tfx compile`)')
  job = tmp_path / 'simclr_tfx.json'
  job.write_text('{"pipelineSpec": {}}')
  with pytest.raises(ConfigError, match='PipelineJob for Vertex AI'):
    _submit(api, str(job))
  not_spec = tmp_path / 'values.yaml'
  not_spec.write_text('image_size: 64\n')
  with pytest.raises(ConfigError, match='is not a KFP PipelineSpec'):
    _submit(api, str(not_spec))
  assert api.requests == []


def test_a_refusal_from_the_server_is_one_line(api, package):
  from tests.kfp_api_double import ApiError

  def forbidden(query, record):
    raise ApiError(403, 'user is not authorized to create experiments in namespace ""\n'
                   'see the profile')
  api._create_experiment = forbidden  # pylint: disable=protected-access
  with pytest.raises(kfp_submit.KfpSubmitError) as error:
    _submit(api, package)
  message = str(error.value)
  assert len(message.splitlines()) == 1
  assert message.startswith(f'getting or creating the experiment on {api.url} failed: HTTP 403')
  assert 'not authorized' in message


def test_cli_kfp_submit(api, package, tmp_path, capsys):
  out = tmp_path / 'submitted.json'
  code = cli.main(['kfp-submit', '--host', api.url + '/', '--package', package,
                   '--pipeline-name', 'simclr-prod', '--experiment', 'prod', '--cron',
                   '0 0 4 * * *', '--max-concurrency', '1', '--run-name', 'simclr-daily',
                   '--result-json', str(out)])
  stdout = capsys.readouterr().out
  assert code == 0
  result = json.loads(out.read_text())
  (pipeline_id, pipeline), = api.pipelines.items()
  assert pipeline['display_name'] == 'simclr-prod' and result['pipeline_id'] == pipeline_id
  assert result['experiment_id'] in api.experiments
  assert api.recurring_runs[result['recurring_run_id']]['display_name'] == 'simclr-daily'
  for key in ('pipeline_id', 'version_id', 'experiment_id', 'recurring_run_id'):
    assert result[key] in stdout, key
  assert "new pipeline 'simclr-prod'" in stdout and "cron '0 0 4 * * *'" in stdout
