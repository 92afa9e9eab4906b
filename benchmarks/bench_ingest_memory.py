"""Ingest memory benchmark: peak RSS of ImageIngest against the number of images.

  make bench-ingest      (or: .venv/bin/python -m benchmarks.bench_ingest_memory
                          [--sizes 20000,100000] [--old-at 20000] [--no-doc])

Generates N distinct images (96x96 PNGs of random noise, about 28 KB each: enough bytes that a
design holding every image at once would clearly grow) in 10 class folders under the system's
temporary folder (never in the repository), then runs the ImageIngest executor
(run_standalone, the default in-memory DirectRunner, PipelineConfig's defaults) in a fresh
subprocess per run and records the subprocess's peak resident memory (ru_maxrss of itself and
of any worker process it started). --old-at also runs, at those sizes, the executor as it was
before the hardening (BEFORE_REV; `git show REV:components/image_ingest/executor.py` loaded as
a temporary module), to show the difference. Writes a table between the bench-ingest-memory markers of
docs/benchmarks.md, with the CPU it ran on, and prints a JSON line.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The last commit whose ingest held every image's bytes in its de-duplication GroupByKey.
BEFORE_REV = 'dc4b93b'
SIDE = 96  # pixels: 96 x 96 x 3 bytes of noise, which PNG cannot compress
CLASSES = 10


def generate(data_dir: str, count: int) -> int:
  """count distinct noise PNGs in CLASSES folders; returns their total bytes. Reuses a folder
  that a previous run completed (a marker file records the count)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  marker = os.path.join(data_dir, '.complete')
  if os.path.exists(marker):
    with open(marker, encoding='utf-8') as f:
      done = json.load(f)
    if done['count'] == count:
      return done['bytes']
  shutil.rmtree(data_dir, ignore_errors=True)
  rng = np.random.default_rng(count)
  total = 0
  for i in range(count):
    folder = os.path.join(data_dir, f'c{i % CLASSES}')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{i:07d}.png')
    Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(path)
    total += os.path.getsize(path)
  with open(marker, 'w', encoding='utf-8') as f:
    json.dump({'count': count, 'bytes': total}, f)
  return total


def old_executor_module(work: str):
  """The executor of BEFORE_REV, as a module in a temporary folder (it imports the current
  helpers, which keep its call signatures)."""
  source = subprocess.run(['git', 'show', f'{BEFORE_REV}:components/image_ingest/executor.py'],
                          cwd=REPO, check=True, capture_output=True, text=True).stdout
  path = os.path.join(work, 'old_ingest_executor.py')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(source)
  sys.path.insert(0, work)  # importable by name: Beam pickles its functions by reference
  return importlib.import_module('old_ingest_executor')


def child(data_dir: str, out_dir: str, old: bool) -> None:
  """One ingest in this (fresh) process; prints a JSON line with its peak memory."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  params = {}
  if old:  # its run_standalone has its own fallbacks (max_pixels 0): give it the config's
    from pipeline.config import PipelineConfig  # pylint: disable=g-import-not-at-top
    defaults = PipelineConfig()
    params = {k: getattr(defaults, k) for k in ('min_side', 'max_pixels', 'max_bad_fraction',
                                                'labelled_fraction')}
    executor = old_executor_module(out_dir)
  else:
    from components.image_ingest import executor  # pylint: disable=g-import-not-at-top
  started = time.perf_counter()
  report, _ = executor.run_standalone(data_dir, os.path.join(out_dir, 'ingest'), **params)
  seconds = time.perf_counter() - started
  peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
  print(json.dumps({'seconds': seconds, 'peak_rss_mib': peak_kib / 1024,
                    'num_examples': report['num_examples']}))


def measure(data_dir: str, work: str, old: bool) -> dict:
  out_dir = tempfile.mkdtemp(dir=work)
  command = [sys.executable, '-m', 'benchmarks.bench_ingest_memory', '--child', data_dir,
             out_dir] + (['--old'] if old else [])
  try:
    result = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
  except subprocess.CalledProcessError as e:
    raise SystemExit(f'ingest run failed:\n{e.stderr[-4000:]}') from None
  finally:
    shutil.rmtree(out_dir, ignore_errors=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def write_doc(rows, command: str) -> None:
  from benchmarks import docs_section  # pylint: disable=g-import-not-at-top
  from components.simclr_trainer import hardware  # pylint: disable=g-import-not-at-top
  lines = [
      f'Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores, '
      f'{hardware.describe_cpu()}, Python {platform.python_version()}; command: `{command}`.',
      f'Data: generated {SIDE}x{SIDE} PNGs of noise in {CLASSES} class folders; ImageIngest '
      'with the default settings, single process (DirectRunner in_memory), one fresh process '
      'per row; peak RSS = ru_maxrss of that process.',
      '',
      '| executor | images | image bytes (MiB) | seconds | images/s | peak RSS (MiB) |',
      '|---|---|---|---|---|---|',
  ]
  for row in rows:
    lines.append(f"| {row['code']} | {row['images']:,} | {row['bytes'] / 2**20:,.0f} | "
                 f"{row['seconds']:.0f} | {row['images'] / row['seconds']:.0f} | "
                 f"{row['peak_rss_mib']:,.0f} |")
  lines += ['', 'current = image bytes staged to temporary TFRecord shards in the reading stage, '
            f'only metadata through the de-duplication GroupByKey; before ({BEFORE_REV}) = '
            'every image\'s bytes through that GroupByKey.']
  docs_section.write_section('bench-ingest-memory', 'Ingest memory', lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='20000,100000', help='comma-separated image counts')
  parser.add_argument('--old-at', default='20000',
                      help=f"sizes at which the executor of {BEFORE_REV} (before the hardening) "
                      "runs too ('' = none)")
  parser.add_argument('--no-doc', action='store_true', help='do not update docs/benchmarks.md')
  parser.add_argument('--keep-data', action='store_true',
                      help='keep the generated images for the next run')
  parser.add_argument('--child', nargs=2, metavar=('DATA_DIR', 'OUT_DIR'),
                      help=argparse.SUPPRESS)
  parser.add_argument('--old', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(*args.child, old=args.old)
    return
  sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
  old_at = {int(s) for s in args.old_at.split(',') if s.strip()}
  work = os.path.join(tempfile.gettempdir(), 'bench_ingest_memory')
  os.makedirs(work, exist_ok=True)
  rows = []
  try:
    for size in sizes:
      data_dir = os.path.join(work, f'data_{size}')
      started = time.perf_counter()
      total = generate(data_dir, size)
      print(f'{size} images ready ({total / 2**20:.0f} MiB, '
            f'{time.perf_counter() - started:.0f}s)', flush=True)
      for old in ([False, True] if size in old_at else [False]):
        result = measure(data_dir, work, old)
        rows.append({'code': f'before ({BEFORE_REV})' if old else 'current', 'images': size,
                     'bytes': total, **result})
        print(json.dumps(rows[-1]), flush=True)
      if not args.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
  finally:
    if not args.keep_data:
      shutil.rmtree(work, ignore_errors=True)
  if not args.no_doc:
    write_doc(rows, 'make bench-ingest')
  print(json.dumps({'peak_rss_mib': {f"{r['code']} {r['images']}": round(r['peak_rss_mib'])
                                     for r in rows}}))


if __name__ == '__main__':
  main()
