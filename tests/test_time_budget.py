"""train_minutes: the trainer measures its pace, fits the step count to the budget and keeps it."""
import json
import os
import re
import subprocess
import sys

from pipeline import run_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_MINUTES, EPOCH_STEPS = 0.5, 100_000


def test_time_budget_fits_the_steps_and_records_the_plan(mnist_subset, tmp_path):
  out = str(tmp_path / 'out')
  command = [sys.executable, '-m', 'simclr_tools.cli', 'run', '--data-dir', mnist_subset,
             '--output', out, '--preset', 'smoke', '--set', f'train_steps={EPOCH_STEPS}',
             '--set', f'train_minutes={BUDGET_MINUTES}', '--set', 'checkpoint_every_steps=50',
             '--set', 'precision=auto']
  run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  log = run.stdout + run.stderr
  assert re.search(r'SimCLRTrainer: training in (float32|mixed_bfloat16) \(auto: ', log), (
      log[-3000:])
  plans = [(int(paced), int(steps)) for paced, steps in re.findall(
      r'time budget: [\d.]+ s/step measured over (\d+) steps, [\d.]+ min left: (\d+) steps',
      log)]
  assert plans[0][0] == 20 and 23 < plans[0][1] < EPOCH_STEPS, log[-3000:]
  # Planned again at step 123 from the pace of the 100 steps after the first plan, if the run
  # got there.
  assert plans[1:] == ([] if plans[0][1] <= 123 else [(100, plans[1][1])])
  planned = plans[-1][1]
  assert 23 < planned < EPOCH_STEPS

  store = run_record.open_store(os.path.join(out, 'metadata.sqlite'))
  executions = {e['component']: e for e in run_record.run_executions(store,
                                                                  run_record.latest_run(store))}
  props = executions['SimCLRTrainer']['outputs']['model'][0]['properties']
  assert props['precision'] in ('float32', 'mixed_bfloat16')
  ckpt_dir = os.path.join(out, 'pipeline_root', '_checkpoints', props['run_fingerprint'])
  with open(os.path.join(ckpt_dir, 'timeline.json')) as f:
    timeline = json.load(f)
  assert timeline['planned_steps'] == planned  # a resume reads the plan back
  # Trained to the plan, or stopped at the budget on a slower stretch: never past it by more
  # than the step and checkpoint in flight.
  assert props['train_steps'] <= planned
  assert timeline['train_seconds'] <= BUDGET_MINUTES * 60 + 10
  assert str(props['train_steps']) in timeline['checkpoints']  # the last step was saved
  assert executions['Pusher']['state'] == 'COMPLETE'
