import io
import os
import zlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(os.path.dirname(REPO), 'shared', 'datasets')


def run_cli(*args, env=None, timeout=900):
  """`simclr-tfx ARGS...` in a subprocess from the repository root, as users run it."""
  import subprocess
  import sys
  return subprocess.run([sys.executable, '-m', 'simclr_tools.cli', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


def run_cli_reporting_imports(*args, timeout=300):
  """`simclr-tfx ARGS...` in a fresh interpreter that, once the command returns, prints its
  exit code and whether TensorFlow and TFX were imported: (CompletedProcess, that report as
  {'code': int, 'tensorflow': bool, 'tfx': bool}). For the failures promised before TFX loads."""
  import json
  import subprocess
  import sys
  script = ('import json, sys; from simclr_tools import cli; code = cli.main(sys.argv[1:]); '
            'print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules, '
            '"tfx": "tfx" in sys.modules}))')
  result = subprocess.run([sys.executable, '-c', script, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
  assert result.stdout.strip(), result.stderr[-2000:]
  return result, json.loads(result.stdout.strip().splitlines()[-1])


def executions_by_component(metadata_path, run_id=None):
  """The executions of a run (default: the latest one) in an MLMD store, by component."""
  from pipeline import run_record
  return run_record.executions_by_component(metadata_path, run_id)


def checkpoint_steps(out) -> list:
  """The steps of the trainer checkpoints saved so far under OUT (from each run's timeline)."""
  import glob
  import json
  steps = []
  for path in glob.glob(os.path.join(str(out), 'pipeline_root', '_checkpoints', '*',
                                     'timeline.json')):
    try:
      with open(path) as f:
        steps += [int(step) for step in json.load(f)['checkpoints']]
    except (OSError, ValueError):  # written by a rename, but read while it changes
      pass
  return steps


def png_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def forged_png(width: int, height: int) -> bytes:
  """A 1x1 PNG whose header declares width x height (its CRC fixed, so the header is valid):
  a decoder that trusted it would allocate that much before finding the data missing."""
  data = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
  data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
  data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, 'big')
  return bytes(data)


def embed_with_cli(paths, *where):
  """`simclr-tfx embed WHERE... PATHS...` in a subprocess -> embeddings [N, D], after checking
  it succeeded and answered one row per path, in order."""
  import json
  import subprocess
  import sys
  result = subprocess.run([sys.executable, '-m', 'simclr_tools.cli', 'embed', *where, *paths],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(result.stdout)
  assert [r['image'] for r in rows] == list(paths)
  return np.array([r['embedding'] for r in rows])


def pushed(local_run):
  """(config, summary, model base path) of the version that the shared smoke run pushed."""
  config, summary, _ = local_run
  model_base = os.path.join(config.output_dir, 'serving', config.model_name)
  return config, summary, model_base


# Fixtures that run the whole pipeline: a test that uses one is marked `slow`, and
# `make test-fast` (pytest -m "not slow") leaves it out. Tests that start pipelines or
# benchmarks themselves carry the mark in their module.
PIPELINE_FIXTURES = frozenset({'local_run', 'three_runs', 'variant_run', 'budget_run'})


def _work_unit(item) -> str:
  """The unit that one pytest-xdist worker runs whole (`make test` runs `--dist loadgroup`):
  the tests sharing a pipeline-run fixture, or a module's tests sharing a module fixture, so
  that no run is made twice; any other test is a unit of its own."""
  shared = sorted(PIPELINE_FIXTURES & set(getattr(item, 'fixturenames', ())))
  if shared:
    return shared[0]
  info = getattr(item, '_fixtureinfo', None)
  scopes = {defs[-1].scope for defs in (info.name2fixturedefs.values() if info else ()) if defs}
  return item.module.__name__ if 'module' in scopes else item.nodeid


@pytest.hookimpl(tryfirst=True)  # before xdist names each test's group from these marks
def pytest_collection_modifyitems(items):
  """Marks the pipeline tests slow and groups the tests into xdist work units, the units that
  hold slow tests first: workers take units in this order as they free up, so the long ones
  start early and the short ones fill the gaps at the end."""
  unit = {item.nodeid: _work_unit(item) for item in items}
  for item in items:
    if unit[item.nodeid] in PIPELINE_FIXTURES:
      item.add_marker(pytest.mark.slow)
    item.add_marker(pytest.mark.xdist_group(unit[item.nodeid]))
  slow_units = {unit[item.nodeid] for item in items if item.get_closest_marker('slow')}
  items.sort(key=lambda item: unit[item.nodeid] not in slow_units)  # stable: keeps the order


def pytest_collection_finish(session):
  """On an xdist worker with --dist loadgroup, every test's id must carry its unit (xdist
  appends '@unit'): where a pytest release stops honouring that, each shared run would be
  made once per worker, silently, so this stops the session instead."""
  if session.config.getoption('loadgroup', False):
    ungrouped = [item.nodeid for item in session.items if '@' not in item.nodeid]
    if ungrouped:
      raise pytest.UsageError(f'xdist did not group {ungrouped[0]} (pytest-xdist and pytest '
                              'versions out of step? see requirements/requirements.in)')


@pytest.fixture(scope='session')
def mnist_subset(tmp_path_factory):
  """300 real MNIST digits (30 per class) from the embedded demo data, as PNG class folders."""
  from pipeline import demo_data
  return demo_data.write_demo_dataset(str(tmp_path_factory.mktemp('data') / 'mnist300'),
                                      limit=300)


def smoke_config(data_dir, out, **overrides):
  from pipeline.config import build_config
  return build_config(preset='smoke', data_dir=data_dir, output_dir=str(out),
                      set_args=[f'{k}={v}' for k, v in overrides.items()])


LOCAL_RUN_FINETUNE = {'finetune': 'true', 'finetune_epochs': 10, 'distill_epochs': 3}


@pytest.fixture(scope='session')
def local_run(mnist_subset, tmp_path_factory):
  """One smoke run of the whole DAG with LocalDagRunner, shared by the tests that read what it
  wrote: (config, summary, metadata path)."""
  from pipeline import runner
  out = tmp_path_factory.mktemp('local_run')
  # With the classifier stages (off in the smoke preset), long enough to beat the smoke
  # encoder's probe: the classifier is blessed and pushed.
  config = smoke_config(mnist_subset, out, **LOCAL_RUN_FINETUNE)
  summary = runner.run_pipeline(config, engine='local')
  return config, summary, os.path.join(str(out), 'metadata.sqlite')


@pytest.fixture(scope='session')
def three_runs(mnist_subset, tmp_path_factory):
  """Three runs into one output folder, for lineage, warm start and the baseline comparison:
  (output folder, summary of each run).

  1. smoke with warm_start on, when nothing is blessed yet: trained from scratch, pushed;
  2. seed 7, no baseline comparison: a second model from the cached ingest, pushed;
  3. warm started from the latest blessed model (2), bfloat16, a negatives queue, gradient
     caching, a different embedding read-out, and an impossible gain demanded over that model:
     not pushed."""
  from pipeline import runner
  out = tmp_path_factory.mktemp('three_runs')
  first = runner.run_pipeline(smoke_config(mnist_subset, out, warm_start='true'), engine='local')
  second = runner.run_pipeline(
      smoke_config(mnist_subset, out, seed=7, bless_compare_with_baseline='false'), engine='local')
  third = runner.run_pipeline(smoke_config(
      mnist_subset, out, warm_start='true', seed=7, precision='mixed_bfloat16',
      negatives_queue_size=64, micro_batch_size=8, bless_max_drop_vs_baseline=-1.0,
      embedding_stages=2,
      embedding_pool='avg_max'), engine='local')
  return str(out), first, second, third
