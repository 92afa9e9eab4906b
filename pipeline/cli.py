"""The `simclr-tfx` command line: run the pipeline, read its lineage, embed images."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pipeline.config import PRESETS, ConfigError, build_config


def _quiet_tf():
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def _add_config_args(parser):
  parser.add_argument('--data-dir', help='folder of images (sub-folders = class names); '
                      'default: the embedded MNIST demo, written to OUT/demo_data')
  parser.add_argument('--output', default=None, help='output folder OUT (default: out)')
  parser.add_argument('--config', help='YAML or JSON file of config values')
  parser.add_argument('--preset', choices=sorted(PRESETS), help='named set of config values')
  parser.add_argument('--set', dest='set_args', action='append', default=[],
                      metavar='NAME=VALUE', help='override one config value (repeatable)')


def _config_from(args):
  return build_config(preset=args.preset, config_file=args.config, set_args=args.set_args,
                      data_dir=args.data_dir, output_dir=args.output)


def cmd_run(args) -> int:
  config = _config_from(args)  # fails fast on a bad config, before any import of TFX
  from pipeline import runner  # pylint: disable=g-import-not-at-top
  summary = runner.run_pipeline(config, engine=args.engine)
  print(runner.format_summary(summary))
  if args.summary_json:
    with open(args.summary_json, 'w', encoding='utf-8') as f:
      json.dump(summary, f, indent=2, default=str)
  return 0


def cmd_lineage(args) -> int:
  from pipeline import lineage  # pylint: disable=g-import-not-at-top
  store = lineage.open_store(os.path.join(args.output, 'metadata.sqlite'))
  run = lineage.latest_run(store)
  executions = lineage.run_executions(store, run)
  if args.json:
    print(json.dumps({'run_id': run.name, 'executions': executions}, indent=2, default=str))
    return 0
  print(f'run {run.name}')
  for e in executions:
    print(f"\n[{e['id']}] {e['component']} ({e['type']}): {e['state']}")
    for side in ('inputs', 'outputs'):
      for key, artifacts in sorted(e[side].items()):
        for a in artifacts:
          arrow = '<-' if side == 'inputs' else '->'
          print(f"    {arrow} {key}: {a['type']} #{a['id']} {a['uri']}")
  return 0


def _read_images(paths):
  images = []
  for path in paths:
    with open(path, 'rb') as f:
      images.append(f.read())
  return images


def _print_rows(paths, key, vectors) -> int:
  """One JSON list of {'image': path, key: vector} on stdout."""
  print(json.dumps([{'image': p, key: [float(x) for x in v]} for p, v in zip(paths, vectors)]))
  return 0


def cmd_embed(args) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components.pusher import push  # pylint: disable=g-import-not-at-top
  if args.tflite:
    from components.edge_export import tflite  # pylint: disable=g-import-not-at-top
    encoder = tflite.TFLiteEncoder(args.tflite, num_threads=args.threads)
    pixels = tflite.decode_pixels(_read_images(args.images), encoder.image_size)
    return _print_rows(args.images, 'embedding', encoder.embed(pixels))
  if args.server:
    from pipeline import serving_client  # pylint: disable=g-import-not-at-top
    predict = (serving_client.grpc_predict if args.protocol == 'grpc'
               else serving_client.rest_predict)
    out = predict(args.server, args.model_name, _read_images(args.images),
                  version=args.version)
    return _print_rows(args.images, args.output_key, out[args.output_key])
  if not args.model:
    raise ConfigError('embed needs --model DIR, --server HOST:PORT or --tflite FILE')
  model_dir = args.model
  version_dirs = push.versions(model_dir)
  if not os.path.isfile(os.path.join(model_dir, 'saved_model.pb')) and version_dirs:
    model_dir = os.path.join(model_dir, str(version_dirs[-1]))  # a model base path: newest
  if not os.path.isfile(os.path.join(model_dir, 'saved_model.pb')):
    raise FileNotFoundError(f'no SavedModel (saved_model.pb) in {args.model} or its versions')
  serve = tf.saved_model.load(model_dir).signatures['serving_default']
  out = serve(images=tf.constant(_read_images(args.images)))
  return _print_rows(args.images, args.output_key, np.asarray(out[args.output_key]))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='simclr-tfx', description='SimCLR pretraining as a TFX pipeline: ingest, transform, '
      'train, linear-probe, push to TF Serving, all recorded in ML Metadata.')
  parser.add_argument('-v', '--verbose', action='store_true', help='show TFX/Beam debug logs')
  sub = parser.add_subparsers(dest='command', required=True)

  run = sub.add_parser('run', help='run the whole pipeline end to end')
  _add_config_args(run)
  run.add_argument('--engine', choices=('local', 'beam'), default='local',
                   help='orchestrator: LocalDagRunner (local) or BeamDagRunner (beam)')
  run.add_argument('--summary-json', help='also write the run summary to this JSON file')
  run.set_defaults(func=cmd_run)

  lin = sub.add_parser('lineage', help="the latest run's executions and artifacts from MLMD")
  lin.add_argument('--output', default='out', help='the OUT folder of a run')
  lin.add_argument('--json', action='store_true', help='machine-readable output')
  lin.set_defaults(func=cmd_lineage)

  emb = sub.add_parser('embed', help='embeddings of image files from a pushed model, a TF '
                       'Serving server or a TFLite file')
  emb.add_argument('--model',
                   help='a SavedModel folder, or a model base path (newest version is used)')
  emb.add_argument('--tflite', help='a .tflite encoder (e.g. <version>/tflite/encoder_int8.tflite)')
  emb.add_argument('--server', metavar='HOST:PORT',
                   help='a TF Serving model server (REST 8501 or gRPC 8500)')
  emb.add_argument('--protocol', choices=('rest', 'grpc'), default='rest',
                   help='API of --server (default rest)')
  emb.add_argument('--model-name', default='simclr_encoder', help='model name on --server')
  emb.add_argument('--version', type=int, default=None,
                   help='a specific version on --server (default: what it serves)')
  emb.add_argument('--threads', type=int, default=1, help='TFLite interpreter threads')
  emb.add_argument('--output-key', choices=('embedding', 'projection'), default='embedding')
  emb.add_argument('images', nargs='+', help='image files (JPEG, PNG, BMP, GIF)')
  emb.set_defaults(func=cmd_embed)

  args = parser.parse_args(argv)
  _quiet_tf()
  logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                      format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
  # ml-metadata 1.17 does not implement this query feature; TFX falls back correctly (resolvers
  # still work), so the warning is noise that hides the progress lines.
  for handler in logging.getLogger().handlers:
    handler.addFilter(lambda r: 'property_predicate is not supported' not in r.getMessage())
  if not args.verbose:
    for noisy in ('absl', 'apache_beam', 'tensorflow', 'ml_metadata'):
      logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    return args.func(args)
  except ConfigError as e:
    print(f'simclr-tfx: {e}', file=sys.stderr)
    return 2
  except Exception as e:  # pylint: disable=broad-except
    if args.verbose:
      raise
    # Expected failures (bad data, a locked or unwritable output folder, a full disk, a
    # failed component) end with one clear line; -v shows the traceback.
    print(f'simclr-tfx: {_describe(e)}', file=sys.stderr)
    return 1


def _describe(error: Exception) -> str:
  from pipeline import run_lock  # pylint: disable=g-import-not-at-top
  from pipeline import serving_client  # pylint: disable=g-import-not-at-top
  known = (FileNotFoundError, LookupError, run_lock.RunLockedError, run_lock.OutputFolderError,
           serving_client.ServingError)
  try:
    from components.image_ingest.images import IngestError  # pylint: disable=g-import-not-at-top
    known += (IngestError,)
  except ImportError:
    pass
  if isinstance(error, known):
    return str(error)
  if isinstance(error, OSError) and error.errno is not None:
    where = f' ({error.filename})' if error.filename else ''
    return f'{error.strerror}{where}: the run stopped; nothing partial was published'
  return (f'run failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'
          ' (the log above has the details; rerun with -v for a traceback)')


if __name__ == '__main__':
  sys.exit(main())
