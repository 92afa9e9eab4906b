"""When does the MoCo-style negatives queue help? Small-batch SimCLR with and without it.

  make bench-queue     (or: .venv/bin/python -m benchmarks.bench_queue)

Runs the whole pipeline on the embedded MNIST demo at batch 32 (the small-batch case the queue
is for), same steps and seed, negatives_queue_size 0, 512 and 4096, and writes the probe results to
docs/benchmarks.md between the bench-queue markers.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import docs_section

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ['batch_size=32', 'epochs=3', 'seed=1', 'knn_monitor_every_epochs=0',
            'finetune=false']  # the encoder's probe is what differs


def run(out: str, queue: int) -> dict:
  summary_path = os.path.join(out, 'summary.json')
  started = time.time()
  cmd = [sys.executable, '-m', 'simclr_tools.cli', 'run', '--output', out, '--summary-json',
         summary_path]
  for setting in SETTINGS + [f'negatives_queue_size={queue}']:
    cmd += ['--set', setting]
  subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  with open(summary_path) as f:
    summary = json.load(f)
  return {'queue': queue, 'linear_top1': summary['linear_top1'],
          'knn_top1': summary['knn_top1'], 'seconds': round(time.time() - started, 1)}


def main() -> None:
  work = tempfile.mkdtemp(prefix='bench_queue_')
  demo = os.path.join(work, 'shared_demo')
  rows = []
  for queue in (0, 512, 4096):
    out = os.path.join(work, f'q{queue}')
    os.makedirs(out)
    if os.path.isdir(demo):  # write the demo PNGs once
      os.symlink(demo, os.path.join(out, 'demo_data'))
    rows.append(run(out, queue))
    if not os.path.isdir(demo):
      os.rename(os.path.join(out, 'demo_data'), demo)
    print(json.dumps(rows[-1]), flush=True)
  lines = [f'Measured {datetime.date.today().isoformat()}, 2 cores; command: '
           '`make bench-queue`; settings: ' + ', '.join(SETTINGS) + '.', '',
           '| negatives_queue_size | linear top-1 | kNN top-1 | pipeline seconds |',
           '|---|---|---|---|']
  lines += [f'| {r["queue"]} | {100 * r["linear_top1"]:.1f}% | {100 * r["knn_top1"]:.1f}% | '
            f'{r["seconds"]} |' for r in rows]
  docs_section.write_section('bench-queue', 'Negatives queue at small batch', lines)


if __name__ == '__main__':
  main()
