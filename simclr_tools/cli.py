"""The `simclr-tfx` command line: run the pipeline, read its lineage, embed and classify images."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from components import errors
from components.errors import ConfigError
from pipeline.config import PRESETS, build_config


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
  if config.data_dir:  # and on a missing or empty folder
    from components.image_ingest import images  # pylint: disable=g-import-not-at-top
    images.check_data_dir(config.data_dir, config.manifest)
  from pipeline import runner  # pylint: disable=g-import-not-at-top
  summary = runner.run_pipeline(config, engine=args.engine)
  print(runner.format_summary(summary))
  if args.summary_json:
    with open(args.summary_json, 'w', encoding='utf-8') as f:
      json.dump(summary, f, indent=2, default=str)
  return 0


def cmd_lineage(args) -> int:
  from simclr_tools import lineage  # pylint: disable=g-import-not-at-top
  metadata_path = os.path.join(args.output, 'metadata.sqlite')
  if args.data_fingerprint:
    models = lineage.models_from_fingerprint(metadata_path, args.data_fingerprint)
    if args.json:
      print(json.dumps({'data_fingerprint': args.data_fingerprint, 'models': models}, indent=2,
                       default=str))
      return 0
    print(f'models trained from data fingerprint {args.data_fingerprint}*:')
    for m in models:
      top1 = 'n/a' if m['linear_top1'] is None else f"{100 * float(m['linear_top1']):.1f}%"
      pushed = ', '.join(str(v) for v in m['pushed_versions']) or 'not pushed'
      print(f"  Model #{m['model_id']}  run {m['run']}  trainer #{m['trainer_execution_id']} "
            f"{m['trainer_state']}  probe {top1}  blessed {m['blessed']}  versions {pushed}"
            f"\n      {m['model_uri']}")
    return 0
  if args.run:
    return _print_run(metadata_path, args.json)
  chain = lineage.model_lineage(metadata_path, args.version,
                                'classifier' if args.classifier else 'encoder')
  if args.dot:
    dot_text = lineage.to_dot(chain['graph'])
    with open(args.dot, 'w', encoding='utf-8') as f:
      f.write(dot_text)
    print(f'lineage graph (DOT): {args.dot}', file=sys.stderr)
    if args.png:
      if lineage.render_png(dot_text, args.png):
        print(f'lineage graph (PNG): {args.png}', file=sys.stderr)
      else:
        print('no PNG: graphviz `dot` is not installed (Debian: apt-get install graphviz)',
              file=sys.stderr)
  if args.json:
    print(json.dumps(chain, indent=2, default=str))
  else:
    print(lineage.format_chain(chain))
  return 0


def _print_run(metadata_path: str, as_json: bool) -> int:
  """Every execution of the latest run with its input and output artifacts."""
  from pipeline import run_record  # pylint: disable=g-import-not-at-top
  store = run_record.open_store(metadata_path)
  run = run_record.latest_run(store)
  executions = run_record.run_executions(store, run)
  if as_json:
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


def cmd_compile(args) -> int:
  config = _config_from(args)
  from pipeline import kubeflow_runner  # pylint: disable=g-import-not-at-top
  settings = kubeflow_runner.ClusterSettings(
      image=args.image, pipeline_root=args.pipeline_root, serving_dir=args.serving_dir,
      pvc=args.pvc, enable_cache=args.enable_cache).validate()
  written = kubeflow_runner.compile_pipeline(config, settings, args.out_dir)
  print(f"compiled for Kubeflow Pipelines: {written['package']} (KFP package to upload: "
        f"simclr-tfx kfp-submit --package {written['package']} ...) and "
        f"{written['pipeline_job']} (PipelineJob, Vertex AI format)")
  return 0


def cmd_kfp_local(args) -> int:
  from simclr_tools import kfp_local  # pylint: disable=g-import-not-at-top
  result = kfp_local.run_package(args.package, args.work_dir)
  for name, task in result['tasks'].items():
    print(f"{name:45s} {task['seconds']:7.1f}s")
  print(f"run {result['run_id']}: artifacts under {result['pipeline_root']}")
  return 0


def cmd_report(args) -> int:
  from simclr_tools import report  # pylint: disable=g-import-not-at-top
  print(f'report written to {report.write_report(args.output, args.html)}')
  return 0


def cmd_kfp_submit(args) -> int:
  from simclr_tools import kfp_submit  # pylint: disable=g-import-not-at-top
  request = kfp_submit.SubmitRequest(
      host=args.host, package=args.package, pipeline_name=args.pipeline_name,
      experiment=args.experiment, cron=args.cron, once=args.once, run_name=args.run_name,
      max_concurrency=args.max_concurrency, namespace=args.namespace,
      version_name=args.version_name, replace_schedule=args.replace_schedule)
  try:
    result = kfp_submit.submit(request)
  except kfp_submit.KfpSubmitError as e:  # the cluster's side: one line, no traceback
    print(f'simclr-tfx: {e}', file=sys.stderr)
    return 1
  print(kfp_submit.format_result(result))
  if args.result_json:
    with open(args.result_json, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)
  return 0


def _read_images(paths):
  images = []
  for path in paths:
    with open(path, 'rb') as f:
      images.append(f.read())
  return images


def _in_requests(predict, images) -> dict:
  """predict(list of encoded images) -> {output: [n, ...]}, called once per request that the
  serving signature accepts (limits.plan_batches over the headers); rows in input order."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from components import limits  # pylint: disable=g-import-not-at-top
  answers = [predict([images[i] for i in batch])
             for batch in limits.plan_batches(limits.header_pixels(images))]
  return {key: np.concatenate([np.asarray(a[key]) for a in answers]) for key in answers[0]}


def _embed_in_requests(predict, images, key):
  return _in_requests(predict, images)[key]


def _print_rows(paths, key, vectors) -> int:
  """One JSON list of {'image': path, key: vector} on stdout."""
  print(json.dumps([{'image': p, key: [float(x) for x in v]} for p, v in zip(paths, vectors)]))
  return 0


def cmd_embed(args) -> int:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if args.tflite:
    from components.edge_export import tflite  # pylint: disable=g-import-not-at-top
    encoder = tflite.TFLiteEncoder(args.tflite, num_threads=args.threads)
    pixels = tflite.decode_pixels(_read_images(args.images), encoder.image_size)
    return _print_rows(args.images, 'embedding', encoder.embed(pixels))
  if args.server:
    from simclr_tools import serving_client  # pylint: disable=g-import-not-at-top
    predict = (serving_client.grpc_predict if args.protocol == 'grpc'
               else serving_client.rest_predict)
    vectors = _embed_in_requests(
        lambda images: predict(args.server, args.model_name, images, version=args.version),
        _read_images(args.images), args.output_key)
    return _print_rows(args.images, args.output_key, vectors)
  if not args.model:
    raise ConfigError('embed needs --model DIR, --server HOST:PORT or --tflite FILE')
  model_dir = _saved_model_dir(args.model)
  from components import io_utils  # pylint: disable=g-import-not-at-top
  serve = io_utils.load_serving_signature(model_dir)
  vectors = _embed_in_requests(lambda images: serve(images=tf.constant(images)),
                               _read_images(args.images), args.output_key)
  return _print_rows(args.images, args.output_key, vectors)


def _saved_model_dir(path: str) -> str:
  """A SavedModel folder, or the newest version of a model base path."""
  from components.pusher import push  # pylint: disable=g-import-not-at-top
  version_dirs = push.versions(path)
  if not os.path.isfile(os.path.join(path, 'saved_model.pb')) and version_dirs:
    path = os.path.join(path, str(version_dirs[-1]))
  if not os.path.isfile(os.path.join(path, 'saved_model.pb')):
    raise FileNotFoundError(f'no SavedModel (saved_model.pb) in {path} or its versions')
  return path


def _tflite_top_k(args, images):
  """(class names, probabilities) [n, k] of a .tflite classifier, whose class names are in
  labels.txt beside it (or --labels)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from components.edge_export import contract as edge_contract, tflite  # pylint: disable=g-import-not-at-top
  labels_path = args.labels or os.path.join(os.path.dirname(os.path.abspath(args.tflite)),
                                            edge_contract.LABELS_FILE)
  if not os.path.isfile(labels_path):
    raise FileNotFoundError(f'no class names for {args.tflite}: {labels_path} is missing '
                            '(pass --labels FILE, one class name per line)')
  with open(labels_path, encoding='utf-8') as f:
    names = np.array([line.rstrip('\n') for line in f if line.strip()])
  model = tflite.TFLiteEncoder(args.tflite, num_threads=args.threads)
  probabilities = model.embed(tflite.decode_pixels(images, model.image_size))
  if probabilities.shape[1] != len(names):
    raise ValueError(f'{args.tflite} gives {probabilities.shape[1]} outputs but {labels_path} '
                     f'names {len(names)} classes: is it a classifier and its labels file?')
  order = np.argsort(-probabilities, axis=1)
  return names[order], np.take_along_axis(probabilities, order, axis=1)


def cmd_classify(args) -> int:
  """Top-k class names and probabilities of image files, from the pushed classifier."""
  from components.fine_tuner import contract  # pylint: disable=g-import-not-at-top
  images = _read_images(args.images)
  if args.tflite:
    names, probabilities = _tflite_top_k(args, images)
  else:
    if args.server:
      from simclr_tools import serving_client  # pylint: disable=g-import-not-at-top
      predict = (serving_client.grpc_predict if args.protocol == 'grpc'
                 else serving_client.rest_predict)
      call = lambda batch: predict(args.server, args.model_name, batch, version=args.version)
    elif args.model:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from components import io_utils  # pylint: disable=g-import-not-at-top
      serve = io_utils.load_serving_signature(_saved_model_dir(args.model))
      call = lambda batch: {k: v.numpy() for k, v in serve(images=tf.constant(batch)).items()}
    else:
      raise ConfigError('classify needs --model DIR, --server HOST:PORT or --tflite FILE')
    answers = _in_requests(call, images)
    names, probabilities = (answers[contract.CLASSES_OUTPUT],
                            answers[contract.PROBABILITIES_OUTPUT])
  rows = [{'image': path, 'classes': [c.decode() if isinstance(c, bytes) else str(c)
                                      for c in row_names[:args.top_k or None]],
           'probabilities': [round(float(p), 6)
                             for p in row_probabilities[:args.top_k or None]]}
          for path, row_names, row_probabilities in zip(args.images, names, probabilities)]
  print(json.dumps(rows))
  return 0


def _add_classify_parser(sub) -> None:
  from components.fine_tuner import contract  # pylint: disable=g-import-not-at-top
  from components.pusher.params import PusherParams  # pylint: disable=g-import-not-at-top
  cls = sub.add_parser('classify', help='top-k class names and probabilities of image files, '
                       'from the pushed classifier, a TF Serving server or a TFLite file')
  cls.add_argument('--model', help='the classifier\'s SavedModel folder, or its model base '
                   'path (<serving>/<model_name>_classifier: the newest version is used)')
  cls.add_argument('--tflite', help='a .tflite classifier (<version>/tflite/classifier.tflite); '
                   'its class names are read from labels.txt beside it')
  cls.add_argument('--labels', help='class names for --tflite, one per line (default: '
                   'labels.txt beside the file)')
  cls.add_argument('--server', metavar='HOST:PORT',
                   help='a TF Serving model server (REST 8501 or gRPC 8500)')
  cls.add_argument('--protocol', choices=('rest', 'grpc'), default='rest',
                   help='API of --server (default rest)')
  cls.add_argument('--model-name', default=PusherParams.model_name +
                   contract.CLASSIFIER_MODEL_SUFFIX, help='model name on --server')
  cls.add_argument('--version', type=int, default=None,
                   help='a specific version on --server (default: what it serves)')
  cls.add_argument('--threads', type=int, default=1, help='TFLite interpreter threads')
  cls.add_argument('--top-k', type=int, default=0,
                   help='answers per image (default 0: all the model returns, its '
                   'classifier_top_k; a TFLite file returns every class)')
  cls.add_argument('images', nargs='+', help='image files (JPEG, PNG, BMP)')
  cls.set_defaults(func=cmd_classify)


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

  lin = sub.add_parser('lineage', help='where a served model came from (default: the newest '
                       'pushed version), or every model trained from a data fingerprint')
  lin.add_argument('--output', default='out', help='the OUT folder of a run')
  lin.add_argument('--version', type=int, default=None, help='a pushed version (default: newest)')
  lin.add_argument('--classifier', action='store_true',
                   help='a version of the classifier (<model_name>_classifier) instead of the '
                   'encoder: its chain includes the encoder version it was fine-tuned from')
  lin.add_argument('--data-fingerprint', metavar='FP',
                   help='forward: models trained from ingested data with this fingerprint '
                   '(a prefix is enough)')
  lin.add_argument('--run', action='store_true',
                   help="the latest run's executions and artifacts instead")
  lin.add_argument('--json', action='store_true', help='machine-readable output')
  lin.add_argument('--dot', metavar='FILE', help='also write the lineage graph as graphviz DOT')
  lin.add_argument('--png', metavar='FILE', help='with --dot: render it (needs graphviz)')
  lin.set_defaults(func=cmd_lineage)

  comp = sub.add_parser('compile', help='compile the DAG for Kubeflow Pipelines (KFP v2 spec)')
  _add_config_args(comp)
  comp.add_argument('--image', required=True,
                    help='the pipeline image (infra/kubeflow/Dockerfile) in a registry')
  comp.add_argument('--pipeline-root', required=True,
                    help='artifact root as the task pods see it (shared volume path or URI)')
  comp.add_argument('--serving-dir', default='',
                    help='TF Serving model base folder (default: next to the pipeline root)')
  comp.add_argument('--pvc', default='', metavar='NAME:/MOUNT/PATH',
                    help='ReadWriteMany PersistentVolumeClaim mounted into every task')
  comp.add_argument('--enable-cache', action='store_true',
                    help="KFP's task cache (off by default: scheduled runs must re-ingest)")
  comp.add_argument('--out-dir', default='kfp', help='where the compiled files go (default kfp)')
  comp.set_defaults(func=cmd_compile)

  kl = sub.add_parser('kfp-local', help='run a compiled KFP package here, task by task, '
                      "through TFX's Kubeflow V2 container entrypoint (no cluster)")
  kl.add_argument('package', help='the .yaml written by `simclr-tfx compile`')
  kl.add_argument('--work-dir', required=True, help='executor outputs and, unless the '
                  'package names one, the pipeline root')
  kl.set_defaults(func=cmd_kfp_local)

  rep = sub.add_parser('report', help="one self-contained HTML page about the latest run: "
                       'lineage graph, metrics, training curves, plots')
  rep.add_argument('--output', default='out', help='the OUT folder of a run')
  rep.add_argument('--html', default=None, help='where to write the page '
                   '(default: OUT/report.html)')
  rep.set_defaults(func=cmd_report)

  ks = sub.add_parser('kfp-submit', help='upload a compiled package to a Kubeflow Pipelines '
                      'cluster and schedule it (recurring run) or run it once')
  ks.add_argument('--host', required=True,
                  help='KFP API endpoint, e.g. http://localhost:8080 (a port-forward of '
                  'svc/ml-pipeline-ui) or https://KUBEFLOW/pipeline')
  ks.add_argument('--package', required=True, help='the .yaml written by `simclr-tfx compile`')
  ks.add_argument('--pipeline-name', default='',
                  help="pipeline name on the cluster (default: the package's pipeline name); "
                  'an existing pipeline of that name gets a new version')
  ks.add_argument('--version-name', default='',
                  help='name of the uploaded version (default: NAME-UTCTIME-SHA256[:8])')
  ks.add_argument('--experiment', default='simclr-tfx',
                  help='experiment, created if missing (default simclr-tfx)')
  when = ks.add_mutually_exclusive_group()
  when.add_argument('--cron', default=None,
                    help='KFP cron, 6 fields with seconds first (default "0 0 3 * * *": daily '
                    "at 03:00 in the scheduler's time zone, UTC unless configured)")
  when.add_argument('--once', action='store_true', help='one run now instead of a schedule')
  ks.add_argument('--run-name', default='',
                  help='recurring run / run name (default NAME-schedule / NAME-VERSION)')
  ks.add_argument('--max-concurrency', type=int, default=1,
                  help='scheduled runs allowed at once, 1..10 (default 1)')
  ks.add_argument('--namespace', default='', help='profile namespace (multi-user Kubeflow)')
  ks.add_argument('--replace-schedule', action='store_true',
                  help='disable the enabled recurring runs of the same name in the experiment '
                  'once the new one exists')
  ks.add_argument('--result-json', help='also write what was created to this JSON file')
  ks.set_defaults(func=cmd_kfp_submit)

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
  emb.add_argument('images', nargs='+', help='image files (JPEG, PNG, BMP); sent in as many '
                   'requests as the served limits need (docs/serving.md)')
  emb.set_defaults(func=cmd_embed)

  _add_classify_parser(sub)
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
  except BaseException as e:  # pylint: disable=broad-except
    return errors.report_failure(e, args.verbose)


if __name__ == '__main__':
  sys.exit(main())
