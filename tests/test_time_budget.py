"""train_minutes: the trainer measures its pace, fits the step count to the budget and keeps it."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, embed_with_cli, executions_by_component

BUDGET_MINUTES, EPOCH_STEPS = 0.25, 100_000


@pytest.fixture(scope='module')
def budget_run(mnist_subset, tmp_path_factory):
  """`simclr-tfx run` in a subprocess, as users run it, with a time budget: (output folder,
  the finished process)."""
  out = str(tmp_path_factory.mktemp('budget') / 'out')
  command = [sys.executable, '-m', 'simclr_tools.cli', 'run', '--data-dir', mnist_subset,
             '--output', out, '--preset', 'smoke', '--set', f'train_steps={EPOCH_STEPS}',
             '--set', f'train_minutes={BUDGET_MINUTES}', '--set', 'checkpoint_every_steps=50',
             '--set', 'precision=auto', '--set', 'micro_batch_size=16',  # gradient caching
             '--summary-json', os.path.join(out, 's.json')]
  run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return out, run


def test_time_budget_fits_the_steps_and_records_the_plan(budget_run):
  out, _ = budget_run
  executions = executions_by_component(os.path.join(out, 'metadata.sqlite'))
  props = executions['SimCLRTrainer']['outputs']['model'][0]['properties']
  assert props['precision'] in ('float32', 'mixed_bfloat16')
  ckpt_dir = os.path.join(out, 'pipeline_root', '_checkpoints', props['run_fingerprint'])
  with open(os.path.join(ckpt_dir, 'timeline.json')) as f:
    timeline = json.load(f)
  plans = [(p['at_step'], p['paced_steps'], p['planned_steps']) for p in timeline['plans']]
  assert plans[0][:2] == (23, 20) and 23 < plans[0][2] < EPOCH_STEPS, plans
  # Planned again at step 123 from the pace of the 100 steps after the first plan, if the run
  # got there.
  assert plans[1:] == ([] if plans[0][2] <= 123 else [(123, 100, plans[1][2])])
  planned = plans[-1][2]
  assert 23 < planned < EPOCH_STEPS
  assert timeline['planned_steps'] == planned  # a resume reads the plan back
  # Trained to the plan, or stopped at the budget on a slower stretch: never past it by more
  # than the step and checkpoint in flight.
  assert props['train_steps'] <= planned
  assert timeline['train_seconds'] <= BUDGET_MINUTES * 60 + 10
  assert str(props['train_steps']) in timeline['checkpoints']  # the last step was saved
  assert executions['Pusher']['state'] == 'COMPLETE'


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_time_budget_plans_replans_and_stops_on_a_clock():
  """TimeBudget alone, on a fake clock: 1 s/step for the first 20 measured steps, then 0.5."""
  from components.simclr_trainer.time_budget import TimeBudget
  clock = _Clock()
  budget = TimeBudget(minutes=3, max_steps=10_000, warmup_fraction=0.1, start_step=0,
                      clock=clock)
  assert budget.total_steps == 10_000 and budget.warmup_steps == 1000
  replanned = []
  for done in range(1, 124):
    clock.now += 1.0 if done <= 23 else 0.5
    if budget.after_step(done):
      replanned.append((done, budget.paced_steps, budget.total_steps))
  # 95% of the seconds left buys steps. At 23: 23 s spent, 157 s left at 1 s/step -> 149 more.
  # At 123: 73 s spent, 107 s left at 0.5 s/step -> 203 more.
  assert replanned == [(23, 20, 23 + 149), (123, 100, 123 + 203)]
  assert budget.warmup_steps == round(0.1 * 326)
  assert not budget.out_of_time(124)
  clock.now = 180.0
  assert budget.out_of_time(150) and budget.total_steps == 150  # stops where it is
  resumed = TimeBudget(3, 10_000, 0.1, 150, seconds_before=100.0, saved_plan=budget.plan(),
                       clock=clock)
  assert resumed.total_steps == 150 and not resumed.after_step(173)  # keeps its plan
  assert TimeBudget(0, 500, 0.1, 0, clock=clock).total_steps == 500  # no budget: the epochs


def test_cli_run_prints_the_summary_and_lineage_and_embed_read_it(budget_run, mnist_subset):
  out, run = budget_run
  assert 'simclr-tfx run summary' in run.stdout
  assert 'linear probe  top-1' in run.stdout and 'metadata.sqlite' in run.stdout
  with open(os.path.join(out, 's.json')) as f:
    summary = json.load(f)
  assert summary['pushed'] and os.path.isdir(summary['pushed_destination'])
  lineage_out = subprocess.run([sys.executable, '-m', 'simclr_tools.cli', 'lineage', '--run',
                                '--output', out, '--json'], cwd=REPO, capture_output=True,
                               text=True, timeout=300)
  assert lineage_out.returncode == 0, lineage_out.stderr[-2000:]
  executions = json.loads(lineage_out.stdout)['executions']
  assert len(executions) == 8  # the five components, EdgeExport, Embedder and the resolver
  digit = sorted(glob.glob(os.path.join(mnist_subset, '3', '*.png')))[0]
  embedded = embed_with_cli([digit], '--model', os.path.join(out, 'serving', 'simclr_encoder'))
  assert embedded.shape[0] == 1 and np.isfinite(embedded).all()
