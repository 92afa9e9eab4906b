"""Fault suite: crashes at exact points, concurrent runs, unwritable and full disks, bad serving
input. Each case asserts the outcome a user relies on (see docs/reliability.md)."""
import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipeline import run_lock, run_record
from tests.conftest import REPO, png_bytes, pushed, run_cli, run_cli_reporting_imports

# Runs the pipeline, or starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow



def smoke_run(data_dir, out, *extra, env=None):
  return run_cli('run', '--data-dir', data_dir, '--output', str(out), '--preset', 'smoke',
                 *extra, env=env)


def executions(out):
  """Every execution in the store (all runs), as (component, state, failure reason)."""
  store = run_record.open_store(os.path.join(str(out), 'metadata.sqlite'))
  result = []
  for run in store.get_contexts_by_type('pipeline_run'):
    for e in run_record.run_executions(store, run):
      failure = store.get_executions_by_id([e['id']])[0].custom_properties.get(
          run_lock.FAILURE_PROPERTY)
      result.append((e['component'], e['state'], failure.string_value if failure else ''))
  return result


def live_artifacts(out, type_name, producer_uri_part):
  from ml_metadata.proto import metadata_store_pb2
  store = run_record.open_store(os.path.join(str(out), 'metadata.sqlite'))
  return [a for a in store.get_artifacts_by_type(type_name)
          if a.state == metadata_store_pb2.Artifact.LIVE and producer_uri_part in a.uri]


def versions(out):
  return sorted(glob.glob(os.path.join(str(out), 'serving', 'simclr_encoder', '[0-9]*')))


def test_sigkill_during_ingest_then_between_staging_and_rename_of_a_push_then_rerun(
    mnist_subset, tmp_path):
  """Three attempts on one output folder: killed after the ingest wrote its records, killed
  with a push staged but not renamed, then run to the end."""
  out = tmp_path / 'out'
  model_dir = os.path.join(str(out), 'serving', 'simclr_encoder')
  killed = smoke_run(mnist_subset, out, env={'SIMCLR_TFX_FAILPOINT': 'ingest.after_write'})
  assert killed.returncode == -signal.SIGKILL
  assert not versions(out)

  killed = smoke_run(mnist_subset, out, env={'SIMCLR_TFX_FAILPOINT': 'push.before_rename'})
  assert killed.returncode == -signal.SIGKILL
  assert not versions(out)  # the staged copy is complete but invisible to TF Serving
  assert [n for n in os.listdir(model_dir) if n.startswith('.staging-')]
  ingest = [(state, why) for component, state, why in executions(out)
            if component == 'ImageIngest']
  assert sorted(state for state, _ in ingest) == ['COMPLETE', 'FAILED']
  assert any('killed or crashed' in why for state, why in ingest if state == 'FAILED')

  again = smoke_run(mnist_subset, out)
  assert again.returncode == 0, again.stderr[-3000:]
  assert len(versions(out)) == 1
  assert os.path.isfile(os.path.join(versions(out)[0], 'saved_model.pb'))
  assert not [n for n in os.listdir(model_dir) if n.startswith('.staging-')]
  pushers = [state for component, state, _ in executions(out) if component == 'Pusher']
  assert sorted(pushers) == ['COMPLETE', 'FAILED']
  # Only the finished ingest published examples: nothing duplicated, nothing partial.
  assert len(live_artifacts(out, 'Examples', '/ImageIngest/')) == 1


def test_a_second_run_on_the_same_output_is_refused_before_tfx_is_imported(mnist_subset,
                                                                          tmp_path):
  out = tmp_path / 'out'
  with run_lock.run_lock(str(out), str(out / 'metadata.sqlite')):
    result, report = run_cli_reporting_imports('run', '--data-dir', mnist_subset, '--output',
                                               str(out), '--preset', 'smoke')
  assert report == {'code': 1, 'tensorflow': False, 'tfx': False}, result.stderr[-2000:]
  assert 'another simclr-tfx run is using' in result.stderr
  assert f'"pid": {os.getpid()}' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (out / 'metadata.sqlite').exists()  # the refused run touched nothing


def test_unwritable_output_fails_before_tfx_is_imported(mnist_subset, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result, report = run_cli_reporting_imports('run', '--data-dir', mnist_subset, '--output',
                                             str(blocker / 'out'), '--preset', 'smoke')
  assert report == {'code': 1, 'tensorflow': False, 'tfx': False}, result.stderr[-2000:]
  assert 'is not writable' in result.stderr and 'Traceback' not in result.stderr


@pytest.fixture()
def tiny_tmpfs(tmp_path):
  mount_point = tmp_path / 'tmpfs'
  mount_point.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1200k', 'tmpfs',
                            str(mount_point)], capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f'cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}')
  try:
    yield mount_point
  finally:
    subprocess.run(['umount', '-l', str(mount_point)], check=False)


def test_disk_full_stops_with_a_clear_error_and_serves_nothing_partial(mnist_subset, tiny_tmpfs):
  out = tiny_tmpfs / 'out'
  result = smoke_run(mnist_subset, out)
  assert result.returncode == 1
  assert 'No space left on device' in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith('simclr-tfx: ')
  assert not versions(out)
  if (out / 'metadata.sqlite').exists():
    assert all(state != 'RUNNING' for _, state, _ in executions(out))


def test_serving_signature_rejects_bad_input_and_keeps_serving(local_run):
  _, summary, _ = pushed(local_run)
  serve = tf.saved_model.load(summary['pushed_destination']).signatures['serving_default']
  good = tf.constant([png_bytes(np.full((20, 20, 3), 90, np.uint8))])
  before = serve(images=good)['embedding'].numpy()
  huge = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
  huge[16:24] = (60000).to_bytes(4, 'big') * 2  # declares 60000 x 60000
  import zlib
  huge[29:33] = zlib.crc32(bytes(huge[12:29])).to_bytes(4, 'big')
  for bad, message in ((b'\x00garbage\xff' * 10, 'Unknown image file format'),
                       (b'', 'empty image bytes'),
                       (bytes(huge), 'image too large')):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      serve(images=tf.constant([bad]))
    after = serve(images=good)['embedding'].numpy()  # the next request is served as before
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_ctrl_c_leaves_no_execution_running_and_prints_one_line(mnist_subset, tmp_path):
  out = tmp_path / 'out'
  result = smoke_run(mnist_subset, out, env={'SIMCLR_TFX_FAILPOINT': 'ingest.after_write:SIGINT'})
  assert result.returncode == 130, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('simclr-tfx: interrupted')
  states = executions(out)
  assert states and all(state != 'RUNNING' for _, state, _ in states)
  assert ('ImageIngest', 'FAILED', 'interrupted by SIGINT') in states
  assert not (out / run_lock.RUNNING_FILE).exists()


def test_every_entry_point_takes_the_run_lock(mnist_subset, tmp_path):
  """pipeline/local_runner.py (what `tfx run create` executes) and kfp-local are refused on a
  folder another run holds, as `simclr-tfx run` is, and touch nothing."""
  out = tmp_path / 'out'
  env = {**os.environ, 'SIMCLR_TFX_PRESET': 'smoke', 'SIMCLR_TFX_DATA_DIR': mnist_subset,
         'SIMCLR_TFX_OUTPUT': str(out)}
  with run_lock.run_lock(str(out), str(out / 'metadata.sqlite')):
    result = subprocess.run([sys.executable, 'pipeline/local_runner.py'], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    from simclr_tools import kfp_local
    with pytest.raises(run_lock.RunLockedError):
      kfp_local.run_package(str(tmp_path / 'no-such-package.yaml'), str(out))
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'another simclr-tfx run is using' in result.stderr and 'Traceback' not in result.stderr
  assert not (out / 'metadata.sqlite').exists()


def test_two_pipelines_sharing_one_serving_folder_push_at_once(mnist_subset, tmp_path):
  """Two runs (own OUT each) push the same model name into one serving_dir at about the same
  time: both succeed, each version is the one its run recorded, models.config names the model."""
  serving = tmp_path / 'shared_serving'
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'simclr_tools.cli', 'run', '--data-dir', mnist_subset, '--output',
       str(tmp_path / f'out{i}'), '--preset', 'smoke', '--set', f'serving_dir={serving}',
       '--set', f'seed={i}', '--set', 'edge_export=false', '--set',
       'probe_context_baselines=false', '--summary-json', str(tmp_path / f'summary{i}.json')],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=1200) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  import json
  pushed = sorted(json.load(open(tmp_path / f'summary{i}.json'))['pushed_version']
                  for i in range(2))
  from components.pusher import push
  assert push.pushed_versions(str(serving / 'simclr_encoder')) == pushed
  assert 'name: "simclr_encoder"' in (serving / 'models.config').read_text()
  assert not (tmp_path / 'out0' / 'serving').exists()
