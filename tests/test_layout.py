"""The structure the code keeps (docs/architecture.md, "Code layout and data flow"), checked on
the source: imports run downwards, components meet only through light modules, executors read
typed params, every expected error is in the one hierarchy, functions stay short."""
import ast
import importlib
import pathlib

import pytest

from tests.conftest import REPO

PACKAGES = ('components', 'pipeline', 'simclr_tools')
MAX_FUNCTION_LINES = 60


def modules(*packages):
  for package in packages:
    for path in sorted(pathlib.Path(REPO, package).rglob('*.py')):
      yield path, ast.parse(path.read_text(encoding='utf-8'))


def imported(tree):
  """Every module name an import statement of `tree` names (`from a import b` gives a and a.b)."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f'{node.module}.{alias.name}' for alias in node.names)


def test_imports_run_downwards_and_components_meet_through_light_modules():
  wrong = []
  for path, tree in modules(*PACKAGES):
    layer = path.relative_to(REPO).parts[0]
    own = path.relative_to(REPO).parts[1] if layer == 'components' else None
    for name in imported(tree):
      parts = name.split('.')
      if layer == 'components' and parts[0] in ('pipeline', 'simclr_tools'):
        wrong.append(f'{path}: {name} (a component imports upwards)')
      if layer == 'pipeline' and parts[0] == 'simclr_tools':
        wrong.append(f'{path}: {name} (pipeline/ imports a tool)')
      if (layer == 'components' and parts[0] == 'components' and len(parts) >= 3
          and parts[1] != own and parts[2] in ('executor', 'component')):
        wrong.append(f'{path}: {name} (another component\'s executor or spec)')
  assert not wrong, '\n'.join(wrong)


def test_no_function_is_longer_than_a_screen():
  long = [f'{path.relative_to(REPO)}:{node.lineno} {node.name} '
          f'({node.end_lineno - node.lineno + 1} lines)'
          for path, tree in modules('components', 'pipeline') for node in ast.walk(tree)
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
          and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
  assert not long, '\n'.join(long)


def test_executors_read_settings_only_from_their_typed_params():
  """No `exec_properties.get(...)` (a fallback default) and no setting read by name: an executor
  reads `params` with <Params>.from_json, and only the locations beside it."""
  locations = {'params', 'data_dir', 'source_fingerprint', 'checkpoint_root', 'serving_base_dir',
               'baseline_model_dir'}
  wrong = []
  for path in pathlib.Path(REPO, 'components').glob('*/executor.py'):
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if (isinstance(node, ast.Attribute) and node.attr == 'get'
          and isinstance(node.value, ast.Name) and node.value.id == 'exec_properties'):
        wrong.append(f'{path.name}:{node.lineno} exec_properties.get')
      if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
          and node.value.id == 'exec_properties'):
        key = node.slice.value if isinstance(node.slice, ast.Constant) else 'params'
        if key not in locations:
          wrong.append(f'{path.parent.name}/executor.py:{node.lineno} exec_properties[{key!r}]')
  assert not wrong, wrong


@pytest.mark.parametrize('package', PACKAGES)
def test_every_error_class_is_in_the_one_hierarchy(package):
  from components.errors import SimclrTfxError
  outside = []
  for path, tree in modules(package):
    names = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith(
        ('Error', 'Failed'))]
    if not names:
      continue
    module = importlib.import_module(
        '.'.join(path.relative_to(REPO).with_suffix('').parts))
    outside += [f'{module.__name__}.{name}' for name in names
                if not issubclass(getattr(module, name), SimclrTfxError)]
  assert not outside, outside


def test_the_cli_reports_each_error_with_its_exit_code(capsys):
  from components import errors
  assert errors.report_failure(errors.ConfigError('bad value'), verbose=True) == 2
  assert errors.report_failure(errors.IngestError('no images'), verbose=False) == 1
  assert errors.report_failure(KeyboardInterrupt('SIGTERM'), verbose=True) == 130
  lines = capsys.readouterr().err.splitlines()
  assert lines[:2] == ['simclr-tfx: bad value', 'simclr-tfx: no images'] and len(lines) == 3
  with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback under -v
    errors.report_failure(ZeroDivisionError('x'), verbose=True)


def test_every_custom_artifact_type_is_importable_by_its_type_name():
  """Kubeflow's container entrypoint imports an input artifact's class by its TYPE_NAME."""
  import importlib
  from tfx.types import artifact
  from components import artifacts
  types = [c for c in vars(artifacts).values() if isinstance(c, type)
           and issubclass(c, artifact.Artifact) and c is not artifact.Artifact]
  assert len(types) >= 3
  for cls in types:
    module, name = cls.TYPE_NAME.rsplit('.', 1)
    assert getattr(importlib.import_module(module), name) is cls, cls.TYPE_NAME
