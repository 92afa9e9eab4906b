"""Training survives SIGKILL, of the whole run or of one worker of a multi-worker job: the same
command again resumes from the last checkpoint."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from components.simclr_trainer import contract
from components.simclr_trainer.launch import WORKER_MODULE
from tests.conftest import REPO, checkpoint_steps, executions_by_component

# Runs the pipeline, or starts processes that import TensorFlow and train: not in make test-fast.
pytestmark = pytest.mark.slow

STEPS, EVERY = 100, 10
MICRO = 8  # gradient caching: resumed, and on two workers with cross-worker negatives


def command(data_dir, out, workers):
  return [sys.executable, '-m', 'simclr_tools.cli', 'run', '--data-dir', data_dir, '--output', out,
          '--preset', 'smoke', '--set', f'train_steps={STEPS}',
          '--set', f'checkpoint_every_steps={EVERY}', '--set', 'edge_export=false',
          '--set', f'trainer_workers={workers}', '--set', 'probe_context_baselines=false',
          '--set', f'micro_batch_size={MICRO}']


def worker_pid(out: str, index: int):
  """The pid of trainer worker `index` of a run into OUT (from /proc: its command names the job
  file under OUT, its TF_CONFIG the index), or None."""
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        cmdline = f.read().decode(errors='replace')
      if WORKER_MODULE not in cmdline or out not in cmdline:
        continue
      with open(f'/proc/{pid}/environ', 'rb') as f:
        env = dict(item.split('=', 1) for item in f.read().decode(errors='replace').split('\0')
                   if '=' in item)
    except OSError:  # ended meanwhile
      continue
    if json.loads(env.get('TF_CONFIG', '{}')).get('task', {}).get('index') == index:
      return int(pid)
  return None


def run_until_killed(cmd, out, log_path, kill_at_step, victim):
  """Starts `cmd`, and once a checkpoint at kill_at_step or later is saved sends SIGKILL to
  victim(process) (a pid or a process group, negative). Returns (the process, the checkpoint
  step at the kill)."""
  with open(log_path, 'w') as log:
    process = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
  deadline, killed_after = time.time() + 600, None
  while time.time() < deadline and process.poll() is None and killed_after is None:
    saved = checkpoint_steps(out)
    target = victim(process) if saved and max(saved) >= kill_at_step else None
    if target and target < 0:
      os.killpg(-target, signal.SIGKILL)
    elif target:
      os.kill(target, signal.SIGKILL)
    killed_after = max(saved) if target else None
    time.sleep(0.05)
  process.wait(timeout=300)
  assert killed_after is not None, 'training finished or never started before the kill'
  return process, killed_after


def resumed_step(log_text: str) -> int:
  return int(re.search(r'resuming from step (\d+)', log_text).group(1))


def test_sigkill_mid_training_then_two_workers_resume_then_sigkill_one_worker(mnist_subset,
                                                                               tmp_path):
  """1. One process trains; SIGKILL of the whole run, no clean-up of any kind runs.
  2. The rerun, as a job of two worker processes, resumes from that checkpoint (checkpoints
     load under any worker count); SIGKILL of worker 1: the step fails with one line and no
     worker is left behind.
  3. The same command again resumes from the chief's last checkpoint and finishes."""
  out = str(tmp_path / 'out')
  first, killed_1 = run_until_killed(command(mnist_subset, out, 1), out, tmp_path / '1.log',
                                     3 * EVERY, lambda p: -p.pid)
  assert first.returncode == -signal.SIGKILL

  second, killed_2 = run_until_killed(command(mnist_subset, out, 2), out, tmp_path / '2.log',
                                      5 * EVERY, lambda p: worker_pid(out, 1))
  log_2 = (tmp_path / '2.log').read_text()
  assert second.returncode == 1 and 'Traceback' not in log_2, log_2[-3000:]
  assert killed_1 <= resumed_step(log_2) <= killed_2
  assert worker_pid(out, 0) is None  # the chief was stopped with it

  third = subprocess.run(command(mnist_subset, out, 2), cwd=REPO, capture_output=True,
                         text=True, timeout=900)
  assert third.returncode == 0, third.stderr[-3000:]
  resumed = resumed_step(third.stdout + third.stderr)
  assert killed_2 <= resumed < STEPS and resumed % EVERY == 0
  executions = executions_by_component(os.path.join(out, 'metadata.sqlite'))
  assert executions['ImageIngest']['state'] == 'CACHED'  # finished before the first kill
  trainer = executions['SimCLRTrainer']
  assert trainer['state'] == 'COMPLETE'
  props = trainer['outputs']['model'][0]['properties']
  assert props['resumed_from_step'] == resumed and props['train_steps'] == STEPS
  assert props['micro_batch_size'] == MICRO
  assert executions['Pusher']['state'] == 'COMPLETE'
  _assert_two_local_workers_ran(trainer['outputs']['model_run'][0])


def _assert_two_local_workers_ran(run: dict) -> None:
  """ML Metadata says where the job ran; only the chief wrote TensorBoard events."""
  assert run['properties'][contract.TRAINER_WORKERS] == 2
  job = json.loads(run['properties'][contract.TRAINER_JOB])
  assert job['launcher'] == 'local' and [w['index'] for w in job['workers']] == [0, 1]
  assert len({w['address'] for w in job['workers']}) == 2
  for w in job['workers']:
    assert os.path.dirname(w['log']) == run['uri'] and os.path.getsize(w['log']) > 0
  events = glob.glob(os.path.join(run['uri'], '**', 'events.out.tfevents.*'), recursive=True)
  assert len(events) == 1  # worker 1 wrote its events to a scratch folder it deleted
