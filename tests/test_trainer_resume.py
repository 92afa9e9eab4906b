"""Training survives SIGKILL: the same command again resumes from the last checkpoint."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, executions_by_component



# Runs the pipeline, or starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow

STEPS, EVERY = 200, 10


def _read_checkpoints(path):
  try:
    with open(path) as f:
      return json.load(f)['checkpoints']
  except (OSError, ValueError):  # written by a rename, but read while it changes
    return {}


def command(data_dir, out):
  return [sys.executable, '-m', 'simclr_tools.cli', 'run', '--data-dir', data_dir, '--output', out,
          '--preset', 'smoke', '--set', f'train_steps={STEPS}',
          '--set', f'checkpoint_every_steps={EVERY}', '--set', 'edge_export=false']


def test_sigkill_mid_training_then_rerun_resumes(mnist_subset, tmp_path):
  out = str(tmp_path / 'out')
  log_path = tmp_path / 'first.log'
  with open(log_path, 'w') as log:
    first = subprocess.Popen(command(mnist_subset, out), cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.time() + 600
  killed_after = None
  while time.time() < deadline and first.poll() is None:
    saved = [int(step) for path in glob.glob(os.path.join(
        out, 'pipeline_root', '_checkpoints', '*', 'timeline.json'))
             for step in _read_checkpoints(path)]
    if saved and max(saved) >= 3 * EVERY:
      os.killpg(first.pid, signal.SIGKILL)  # no clean-up of any kind runs
      killed_after = max(saved)
      break
    time.sleep(0.05)
  first.wait(timeout=60)
  assert killed_after is not None, 'training finished or never started before the kill'
  assert first.returncode == -signal.SIGKILL

  second = subprocess.run(command(mnist_subset, out), cwd=REPO, capture_output=True, text=True,
                          timeout=900)
  assert second.returncode == 0, second.stderr[-3000:]
  log = second.stdout + second.stderr
  resumed = int(re.search(r'resuming from step (\d+)', log).group(1))
  assert killed_after <= resumed <= STEPS and resumed % EVERY == 0
  executions = executions_by_component(os.path.join(out, 'metadata.sqlite'))
  assert executions['ImageIngest']['state'] == 'CACHED'  # finished before the kill
  trainer = executions['SimCLRTrainer']
  assert trainer['state'] == 'COMPLETE'
  props = trainer['outputs']['model'][0]['properties']
  assert props['resumed_from_step'] == resumed and props['train_steps'] == STEPS
  assert executions['Pusher']['state'] == 'COMPLETE'
