"""One self-contained HTML page about the latest run in OUT: `simclr-tfx report --output OUT`.

Everything is read back from ML Metadata (OUT/metadata.sqlite) and the artifacts it points to;
images are inlined as base64 data URIs and the lineage graph as inline SVG, so the page can be
mailed or archived as one file and opened without a server or network.
"""
from __future__ import annotations

import base64
import datetime
import glob
import html
import io
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from components.classifier_evaluator import contract as classifier_contract
from components.dual_view_transform import contract as transform_contract
from components.linear_evaluator import contract as evaluator_contract
from pipeline import run_record
from simclr_tools import svg_graph

REPORT_FILE = 'report.html'
CURVES = (('loss', 'NT-Xent loss'), ('contrastive_accuracy', 'contrastive accuracy'),
          ('learning_rate', 'learning rate'), ('knn_top1', 'kNN monitor top-1'))
CLASSIFIER_SECTION = 'Classifier: linear probe, fine-tuned, distilled, supervised'
SECTIONS = ('Run', 'Lineage graph', 'Metrics', 'Training curves', 'Trainer hyper-parameters',
            'Augmentation preview', 'Embedding map', 'Confusion matrix', CLASSIFIER_SECTION,
            'Querying lineage')

_CSS = """
body{font-family:sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ccc;
padding-bottom:4px;margin-top:32px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f3f3f3;padding:1px 4px}img{max-width:100%;border:1px solid #eee}
.ok{color:#176b1d;font-weight:bold}.bad{color:#a11;font-weight:bold}.muted{color:#777}
.dag-wrap{overflow-x:auto}footer{margin-top:40px;border-top:1px solid #ccc;color:#555}
"""


def _esc(value: Any) -> str:
  return html.escape('' if value is None else str(value))


def _pct(value: Any) -> str:
  return f'{100 * float(value):.2f}%' if isinstance(value, (int, float)) else 'n/a'


def _table(rows: Iterable[Sequence[Any]], header: Optional[Sequence[str]] = None) -> str:
  """Cells are escaped unless wrapped in _Raw (pre-built HTML)."""
  cell = lambda v: v.html if isinstance(v, _Raw) else _esc(v)
  head = ''.join(f'<th>{_esc(h)}</th>' for h in header) if header else ''
  body = ''.join('<tr>' + ''.join(f'<td>{cell(v)}</td>' for v in row) + '</tr>' for row in rows)
  return f'<table>{f"<tr>{head}</tr>" if head else ""}{body}</table>'


class _Raw:
  def __init__(self, markup: str):
    self.html = markup


def _png_data_uri(data: bytes) -> str:
  return 'data:image/png;base64,' + base64.b64encode(data).decode('ascii')


def _img_file(path: Optional[str], alt: str) -> str:
  if not path or not os.path.isfile(path):
    return f'<p class="muted">not produced ({_esc(alt)}: no {_esc(os.path.basename(path or ""))}' \
           ' in this run)</p>'
  with open(path, 'rb') as f:
    return f'<img alt="{_esc(alt)}" src="{_png_data_uri(f.read())}">'


def _section(title: str, body: str) -> str:
  slug = title.lower().replace(' ', '-')
  return f'<section id="{_esc(slug)}"><h2>{_esc(title)}</h2>\n{body}\n</section>'


# ---- reading the run ------------------------------------------------------------------------

def _collect(output_dir: str) -> Dict[str, Any]:
  """Everything the page shows, from one store handle."""
  metadata_path = os.path.join(output_dir, 'metadata.sqlite')
  if not os.path.isfile(metadata_path):
    raise FileNotFoundError(
        f'no ML Metadata store at {metadata_path}: {output_dir} holds no pipeline run; run '
        f'`simclr-tfx run --output {output_dir}` first, or pass the OUT folder of a run')
  store = run_record.open_store(metadata_path)
  run = run_record.latest_run(store)
  executions = run_record.run_executions(store, run)
  exec_props = {e.id: run_record.properties(e)
                for e in store.get_executions_by_id([x['id'] for x in executions])}
  return {'metadata_path': os.path.abspath(metadata_path), 'run': run, 'executions': executions,
          'exec_props': exec_props, 'summary': run_record.run_summary(metadata_path)}


def _find(executions, component: str) -> Optional[Dict[str, Any]]:
  """The execution of the node with this id (component ids, not types: the encoder's and the
  classifier's Pusher are one type)."""
  return next((e for e in executions if e['component'] == component), None)


def _output_uri(execution, key: str) -> Optional[str]:
  artifacts = (execution or {}).get('outputs', {}).get(key) or []
  return artifacts[0]['uri'] if artifacts else None


def _output_props(execution, key: str) -> Dict[str, Any]:
  artifacts = (execution or {}).get('outputs', {}).get(key) or []
  return artifacts[0]['properties'] if artifacts else {}


def read_metrics(evaluation_uri: Optional[str]) -> Dict[str, Any]:
  path = os.path.join(evaluation_uri or '', evaluator_contract.METRICS_FILE)
  if not evaluation_uri or not os.path.isfile(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def read_scalars(logdir: Optional[str]) -> Dict[str, List[Tuple[int, float]]]:
  """{tag: [(step, value)]} from the TensorBoard event files under logdir. TF2 tf.summary.scalar
  stores scalars as tensors; TF1-style simple values are read too."""
  if not logdir or not glob.glob(os.path.join(logdir, '**', 'events.out.tfevents*'),
                                 recursive=True):
    return {}
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator as ea
  from tensorboard.util import tensor_util
  # pylint: enable=g-import-not-at-top
  acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
  acc.Reload()
  tags = acc.Tags()
  result: Dict[str, List[Tuple[int, float]]] = {}
  for tag in tags.get('tensors', []):
    values = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto).reshape(-1)[0]))
              for e in acc.Tensors(tag)]
    if values:
      result[tag] = values
  for tag in tags.get('scalars', []):
    result.setdefault(tag, [(e.step, float(e.value)) for e in acc.Scalars(tag)])
  return {tag: sorted(values) for tag, values in result.items()}


# ---- sections -------------------------------------------------------------------------------

def _header(data: Dict[str, Any]) -> str:
  s, run, executions = data['summary'], data['run'], data['executions']
  ingest = _find(executions, 'ImageIngest')
  report = _output_props(ingest, 'report')
  data_dir = (data['exec_props'].get(ingest['id'], {}).get('data_dir') if ingest else None) or \
      report.get('source_dir')
  when = datetime.datetime.fromtimestamp(run.create_time_since_epoch / 1000).astimezone()
  if s['pushed']:
    model = _Raw(f'<span class="ok">pushed</span> version {_esc(s["pushed_version"])} to '
                 f'<code>{_esc(s["pushed_destination"])}</code>')
  else:
    why = s['push_reason'] or 'the run has no Pusher output'
    model = _Raw(f'<span class="bad">not pushed</span>: {_esc(why)}')
  states = ', '.join(f"{e['component']} {e['state']}" for e in executions)
  rows = [('run id', s['run_id']), ('date', when.strftime('%Y-%m-%d %H:%M:%S %Z')),
          ('data folder', data_dir or 'n/a'),
          ('images', s['num_examples']), ('quarantined', s['num_quarantined']),
          ('labelled (for the probe)', report.get('num_labelled_for_probe', 'n/a')),
          ('data fingerprint', s['data_fingerprint'] or 'n/a'), ('model', model),
          ('blessing', s['blessing_reason'] or 'n/a'), ('executions', states),
          ('metadata', data['metadata_path'])]
  return _table(rows)


def _lineage_graph(executions: List[Dict[str, Any]]) -> str:
  nodes, edges, seen = [], [], set()
  for e in executions:
    eid = f"e{e['id']}"
    nodes.append({'id': eid, 'kind': 'execution', 'label': f"{e['component']}\n{e['state']}",
                  'tooltip': f"execution #{e['id']} {e['type']}"})
    for side in ('inputs', 'outputs'):
      for key, artifacts in e[side].items():
        for a in artifacts:
          aid = f"a{a['id']}"
          if aid not in seen:
            seen.add(aid)
            nodes.append({'id': aid, 'kind': 'artifact',
                          'label': f"{a['type'].split('.')[-1]}#{a['id']}",
                          'tooltip': f"{key}: {a['uri']}"})
          edges.append((aid, eid) if side == 'inputs' else (eid, aid))
  legend = ('<p class="muted">Boxes: executions of this run (component, state). Pills: '
            'artifacts (type#id; hover for the uri). Arrows: inputs and outputs.</p>')
  return legend + f'<div class="dag-wrap">{svg_graph.render_svg(nodes, edges)}</div>'


def _metric_rows(m: Dict[str, Any]) -> List[Tuple[str, Any]]:
  """The probe numbers present in metrics.json, in reading order; absent keys are skipped."""
  rows = []

  def add(name, key, fmt=_pct, suffix=''):
    if m.get(key) is not None:
      rows.append((name, _Raw(f'<span data-key="{_esc(key)}">{_esc(fmt(m[key]))}</span>'
                              f'{_esc(suffix)}')))

  add('linear probe top-1', 'linear_top1')
  add(f"linear probe top-{m.get('linear_top5_k', 5)}", 'linear_top5')
  add('kNN top-1', 'knn_top1', suffix=f" (k={m['knn_k']})" if m.get('knn_k') else '')
  add('latest blessed model (baseline) top-1', 'baseline_linear_top1')
  pixels = ((m.get('context') or {}).get('raw_pixels') or {}).get('pixels')
  add('context: linear probe on raw pixels', 'raw_pixels_linear_top1',
      suffix=f' ({pixels})' if pixels else '')
  add('context: random-init encoder', 'random_init_encoder_linear_top1')
  for name, key in (('labelled train images', 'num_labelled'), ('eval images', 'num_eval'),
                    ('classes', 'num_classes'), ('embedding dim', 'embedding_dim'),
                    ('probe C', 'linear_probe_C'), ('threshold (min linear top-1)',
                                                     'min_linear_top1'),
                    ('max drop vs baseline', 'max_drop_vs_baseline')):
    add(name, key, fmt=str)
  if 'blessed' in m:
    css, word = ('ok', 'BLESSED') if m['blessed'] else ('bad', 'NOT BLESSED')
    rows.append(('blessing', _Raw(f'<span class="{css}">{word}</span>: '
                                  f'{_esc(m.get("blessing_reason"))}')))
  return rows


def _metrics(metrics: Dict[str, Any], evaluation_uri: Optional[str]) -> str:
  if not metrics:
    return (f'<p class="muted">not produced: no metrics.json in the evaluation artifact '
            f'({_esc(evaluation_uri or "the run has no LinearEvaluator output")})</p>')
  parts = [_table(_metric_rows(metrics))]
  by_fraction = metrics.get('linear_probe_by_fraction') or {}
  if by_fraction:
    rows = [(f'{float(k):.0%}', v.get('num_labels', ''),
             _pct(v.get('top1')) if v.get('top1') is not None else v.get('note', 'n/a'),
             _pct(v.get('top5')) if v.get('top5') is not None else '')
            for k, v in sorted(by_fraction.items(), key=lambda kv: float(kv[0]))]
    parts.append('<h3>Linear probe by labelled fraction</h3>' +
                 _table(rows, ('labelled fraction', 'labels', 'top-1', 'top-5')))
  per_class = metrics.get('per_class_top1') or {}
  if per_class:
    names = metrics.get('class_names') or []
    label = lambda c: names[int(c)] if str(c).isdigit() and int(c) < len(names) else c
    parts.append('<h3>Per-class top-1</h3>' + _table(
        [(label(c), _pct(v)) for c, v in per_class.items()], ('class', 'top-1')))
  return '\n'.join(parts)


def _classifier(executions) -> str:
  """The four-model comparison of ClassifierEvaluator, the served one's confusion matrix and
  where the classifier went."""
  evaluation_uri = _output_uri(_find(executions, 'ClassifierEvaluator'), 'evaluation')
  path = os.path.join(evaluation_uri or '', classifier_contract.METRICS_FILE)
  if not evaluation_uri or not os.path.isfile(path):
    return '<p class="muted">no classifier in this run (finetune=false)</p>'
  with open(path, encoding='utf-8') as f:
    metrics = json.load(f)
  rows = [(name + (' (served)' if name == metrics['served_model'] else ''),
           _pct(values['top1']), f"{values['ece']:.3f}", values['num_eval'])
          for name, values in metrics['models'].items()]
  served = metrics['models'][metrics['served_model']]
  per_class = _table([(c, _pct(v)) for c, v in served['per_class_top1'].items()],
                     ('class', 'top-1 of the served classifier'))
  pushed = _output_props(_find(executions, 'ClassifierPusher'), 'pushed_model')
  where = (f"pushed as version {pushed.get('pushed_version')} to "
           f"{_esc(pushed.get('pushed_destination'))}" if pushed.get('pushed')
           else f"not pushed: {_esc(pushed.get('reason', 'no ClassifierPusher output'))}")
  return '\n'.join([
      f"<p>{metrics['num_labels']} labelled train images; {_esc(metrics['blessing_reason'])}; "
      f'{where}</p>',
      _table(rows, ('model', 'top-1', 'expected calibration error', 'eval images')), per_class,
      _img_file(os.path.join(evaluation_uri, classifier_contract.CONFUSION_PNG),
                'classifier confusion matrix')])


def curves_png(scalars: Dict[str, List[Tuple[int, float]]]) -> Optional[bytes]:
  """One PNG with a panel per training curve that has data, or None when there is none."""
  present = [(tag, title) for tag, title in CURVES if scalars.get(tag)]
  if not present:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # files only: no display on servers
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cols = 2 if len(present) > 1 else 1
  rows = (len(present) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.4 * rows), squeeze=False)
  for ax, (tag, title) in zip(axes.flat, present):
    steps, values = zip(*scalars[tag])
    ax.plot(steps, values, marker='o' if len(steps) < 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(present):]:
    ax.axis('off')
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=90)
  plt.close(fig)
  return buffer.getvalue()


def _training(scalars, logdir: Optional[str]) -> str:
  png = curves_png(scalars)
  if png is None:
    return (f'<p class="muted">not produced: no TensorBoard scalars under '
            f'{_esc(logdir or "the run has no SimCLRTrainer output")}</p>')
  last = [(tag, len(v), v[-1][0], f'{v[-1][1]:.6g}') for tag, v in sorted(scalars.items())]
  return (f'<img alt="training curves" id="training-curves" src="{_png_data_uri(png)}">'
          + _table(last, ('scalar', 'points', 'last step', 'last value'))
          + f'<p class="muted">TensorBoard: <code>tensorboard --logdir {_esc(logdir)}</code></p>')


def _hyperparameters(props: Dict[str, Any]) -> str:
  if not props:
    return '<p class="muted">not produced: the run has no SimCLRTrainer execution</p>'
  return _table(sorted(props.items()), ('parameter', 'value'))


def _footer(output_dir: str, metadata_path: str) -> str:
  now = datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')
  how = (f'<p>Every execution and artifact above is recorded in <code>{_esc(metadata_path)}'
         f'</code>. List them with <code>simclr-tfx lineage --output {_esc(output_dir)}</code> '
         '(add <code>--json</code> for a machine-readable form).</p>')
  return (f'<footer>{_section("Querying lineage", how)}'
          f'<p>Generated {_esc(now)} by <code>simclr-tfx report</code>.</p></footer>')


# ---- the page -------------------------------------------------------------------------------

def build_report(output_dir: str) -> str:
  """The HTML page (one string, no external references) for the latest run in output_dir."""
  data = _collect(output_dir)
  executions = data['executions']
  trainer = _find(executions, 'SimCLRTrainer')
  evaluation_uri = _output_uri(_find(executions, 'LinearEvaluator'), 'evaluation')
  transform_uri = _output_uri(_find(executions, 'DualViewTransform'), 'transform_graph')
  logdir = _output_uri(trainer, 'model_run')
  metrics = read_metrics(evaluation_uri)
  image = lambda uri, name, alt: _img_file(os.path.join(uri, name) if uri else None, alt)
  run_id = data['summary']['run_id']
  body = [
      f'<h1>simclr-tfx run {_esc(run_id)}</h1>',
      _section('Run', _header(data)),
      _section('Lineage graph', _lineage_graph(executions)),
      _section('Metrics', _metrics(metrics, evaluation_uri)),
      _section('Training curves', _training(read_scalars(logdir), logdir)),
      _section('Trainer hyper-parameters',
               _hyperparameters(data['exec_props'].get(trainer['id'], {}) if trainer else {})),
      _section('Augmentation preview', '<p class="muted">Originals and their two random views.'
               '</p>' + image(transform_uri, transform_contract.PREVIEW_FILE, 'augmentation preview')),
      _section('Embedding map', image(evaluation_uri, evaluator_contract.EMBEDDING_MAP_PNG, 'embedding map')),
      _section('Confusion matrix', image(evaluation_uri, evaluator_contract.CONFUSION_PNG, 'confusion matrix')),
      _section(CLASSIFIER_SECTION, _classifier(executions)),
      _footer(os.path.abspath(output_dir), data['metadata_path']),
  ]
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<title>simclr-tfx report {_esc(run_id)}</title><style>{_CSS}</style></head>\n'
          '<body>\n' + '\n'.join(body) + '\n</body></html>\n')


def write_report(output_dir: str, html_path: Optional[str] = None) -> str:
  """Writes the page (default OUT/report.html) through a temporary name; returns its path."""
  page = build_report(output_dir)
  path = html_path or os.path.join(output_dir, REPORT_FILE)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(page)
  os.replace(tmp, path)  # a reader never sees half a page
  return path
