"""Reads ML Metadata (OUT/metadata.sqlite) to say where a served model came from: the chain of
executions behind each pushed version, and the models trained on one data fingerprint."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

import ml_metadata as mlmd

from pipeline.run_record import (_INPUT_EVENTS, _OUTPUT_EVENTS, STATE_NAMES, _component_id,
                                 open_store, properties)

# ---------------------------------------------------------------------------------------------
# Lineage of a served model, and models per data fingerprint.

CHAIN_ORDER = ('ImageIngest', 'DualViewTransform', 'SimCLRTrainer', 'Embedder', 'EdgeExport',
               'LinearEvaluator', 'Pusher', 'FineTuner', 'ClassifierEvaluator',
               'ClassifierEdgeExport', 'ClassifierPusher')
KINDS = ('encoder', 'classifier')  # what a pushed model is (the PushedModel's `kind`)
_COMPLETE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


class _Graph:
  """Executions and artifacts reached from one artifact, read once each from the store."""

  def __init__(self, store: mlmd.MetadataStore):
    self.store = store
    self.artifact_types = {t.id: t.name for t in store.get_artifact_types()}
    self.execution_types = {t.id: t.name for t in store.get_execution_types()}
    self.node_type = store.get_context_type('node')
    self.nodes: Dict[str, Dict[str, Any]] = {}
    self.edges: List[tuple] = []

  def artifact_node(self, artifact) -> str:
    key = f'a{artifact.id}'
    if key not in self.nodes:
      self.nodes[key] = {'id': key, 'kind': 'artifact', 'artifact_id': artifact.id,
                         'type': self.artifact_types.get(artifact.type_id, ''),
                         'uri': artifact.uri, 'properties': properties(artifact)}
    return key

  def execution_node(self, execution) -> str:
    key = f'e{execution.id}'
    if key not in self.nodes:
      self.nodes[key] = {
          'id': key, 'kind': 'execution', 'execution_id': execution.id,
          'type': self.execution_types.get(execution.type_id, ''),
          'component': _component_id(self.store, execution, self.node_type.id),
          'state': STATE_NAMES.get(execution.last_known_state, 'UNKNOWN'),
          'properties': properties(execution),
          'run': next((c.name for c in self.store.get_contexts_by_execution(execution.id)
                       if self.store.get_context_types_by_id([c.type_id])[0].name
                       == 'pipeline_run'), '')}
    return key

  def producer(self, artifact_id: int):
    """The execution that first wrote the artifact (a cached rerun re-lists it as its output)."""
    events = [e for e in self.store.get_events_by_artifact_ids([artifact_id])
              if e.type in _OUTPUT_EVENTS]
    executions = self.store.get_executions_by_id(sorted({e.execution_id for e in events}))
    done = [x for x in executions if x.last_known_state == metadata_store_pb2.Execution.COMPLETE]
    return min(done or executions, key=lambda x: x.id) if executions else None

  def walk_up(self, artifact) -> None:
    node = self.artifact_node(artifact)
    execution = self.producer(artifact.id)
    if execution is None:
      return
    exec_key = f'e{execution.id}'
    self.edges.append((exec_key, node))
    if exec_key in self.nodes:
      return
    self.execution_node(execution)
    events = self.store.get_events_by_execution_ids([execution.id])
    # Its other outputs too (the evaluation beside the blessing, the trainer's run log).
    outputs = sorted({e.artifact_id for e in events if e.type in _OUTPUT_EVENTS})
    for sibling in self.store.get_artifacts_by_id(outputs):
      self.edges.append((exec_key, self.artifact_node(sibling)))
    inputs = [e for e in events if e.type in _INPUT_EVENTS]
    for upstream in self.store.get_artifacts_by_id(sorted({e.artifact_id for e in inputs})):
      self.edges.append((self.artifact_node(upstream), exec_key))
      self.walk_up(upstream)

  def as_dict(self) -> Dict[str, Any]:
    return {'nodes': list(self.nodes.values()), 'edges': sorted(set(self.edges))}


def _artifacts_of_type(store, type_name: str):
  try:
    return store.get_artifacts_by_type(type_name)
  except Exception:  # pylint: disable=broad-except  (the type is registered by a first run)
    return []


def pushed_models(store, kind: str = 'encoder') -> List[Any]:
  """PushedModel artifacts of one kind of model that reached serving, oldest first."""
  pushed = [a for a in _artifacts_of_type(store, 'PushedModel')
            if int(properties(a).get('pushed') or 0) == 1 and
            (properties(a).get('kind') or 'encoder') == kind]
  return sorted(pushed, key=lambda a: a.id)


def model_lineage(metadata_path: str, version: Optional[int] = None,
                  kind: str = 'encoder') -> Dict[str, Any]:
  """The chain behind a pushed version of the encoder or of the classifier (default: the
  newest): pushed model <- blessing and evaluation <- trainer (and for a classifier the
  FineTuner, and the encoder's push it came from) and their parameters <- transform <- ingest
  (source folder, data fingerprint, counts), plus the whole upstream graph."""
  store = open_store(metadata_path)
  pushed = pushed_models(store, kind)
  if version is not None:
    pushed = [a for a in pushed if str(properties(a).get('pushed_version')) == str(version)]
  if not pushed:
    known = [properties(a).get('pushed_version') for a in pushed_models(store, kind)]
    raise LookupError(f'no pushed {kind}{"" if version is None else f" version {version}"} in '
                      f'{metadata_path}; pushed versions: {known or "none"}')
  target = pushed[-1]
  graph = _Graph(store)
  graph.walk_up(target)
  data = graph.as_dict()
  steps = {}
  for node in data['nodes']:
    if node['kind'] == 'execution' and node['component'] in CHAIN_ORDER:
      steps[node['component']] = _step(node, data)
  pushed_props = properties(target)
  return {'kind': kind, 'pushed_version': pushed_props.get('pushed_version'),
          'pushed_destination': pushed_props.get('pushed_destination'),
          'encoder_version': pushed_props.get('encoder_version'),
          'pushed_model_id': target.id,
          'chain': [steps[c] for c in CHAIN_ORDER if c in steps],
          'graph': data}


def _step(execution_node: Dict[str, Any], graph: Dict[str, Any]) -> Dict[str, Any]:
  """One execution of the chain: its parameters and the artifacts it read and wrote."""
  by_id = {n['id']: n for n in graph['nodes']}
  key = execution_node['id']
  outputs = [by_id[b] for a, b in graph['edges'] if a == key]
  inputs = [by_id[a] for a, b in graph['edges'] if b == key]
  brief = lambda a: {'id': a['artifact_id'], 'type': a['type'], 'uri': a['uri'],
                     'properties': a['properties']}
  return {'component': execution_node['component'],
          'execution_id': execution_node['execution_id'], 'state': execution_node['state'],
          'run': execution_node['run'], 'parameters': execution_node['properties'],
          'inputs': [brief(a) for a in inputs], 'outputs': [brief(a) for a in outputs]}


def models_from_fingerprint(metadata_path: str, fingerprint: str) -> List[Dict[str, Any]]:
  """Forward lineage: every Model trained from ingested data whose content fingerprint starts
  with `fingerprint`, with its trainer run, probe accuracy, blessing and pushed versions."""
  store = open_store(metadata_path)
  reports = [a for a in _artifacts_of_type(store, 'Examples')
             if str(properties(a).get('data_fingerprint', '')).startswith(fingerprint)]
  if not fingerprint or not reports:
    raise LookupError(f'no ingested data with fingerprint {fingerprint!r} in {metadata_path}')
  graph = _Graph(store)
  models, frontier, seen = [], [a.id for a in reports], set()
  while frontier:  # breadth-first over consumer executions, down to the trainer's Model
    artifact_id = frontier.pop(0)
    if artifact_id in seen:
      continue
    seen.add(artifact_id)
    consumers = {e.execution_id for e in store.get_events_by_artifact_ids([artifact_id])
                 if e.type in _INPUT_EVENTS}
    for execution in store.get_executions_by_id(sorted(consumers)):
      node = graph.nodes.get(f'e{execution.id}') or graph.nodes[graph.execution_node(execution)]
      if node['component'] not in ('DualViewTransform', 'SimCLRTrainer'):
        continue
      outs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
              if e.type in _OUTPUT_EVENTS]
      for artifact in store.get_artifacts_by_id(outs):
        if graph.artifact_types.get(artifact.type_id) == 'Model':
          models.append(_model_summary(store, graph, artifact, node))
        else:
          frontier.append(artifact.id)
  unique = {m['model_id']: m for m in models}
  return [unique[k] for k in sorted(unique)]


def _input_key(event) -> str:
  """The input key (e.g. 'model', 'baseline_model') an INPUT event's path names."""
  steps = event.path.steps
  return steps[0].key if steps and steps[0].HasField('key') else ''


def _model_summary(store, graph: _Graph, model, trainer_node) -> Dict[str, Any]:
  """A Model with what became of it downstream: evaluation, blessing, pushes."""
  summary = {'model_id': model.id, 'model_uri': model.uri, 'run': trainer_node['run'],
             'trainer_execution_id': trainer_node['execution_id'],
             'trainer_state': trainer_node['state'], 'linear_top1': None, 'blessed': None,
             'pushed_versions': []}
  # Only the executions that take it as *the* model: a later run's evaluator reads it as its
  # baseline_model and a later trainer as its base_model, and their verdicts are not this
  # model's.
  consumers = {e.execution_id for e in store.get_events_by_artifact_ids([model.id])
               if e.type in _INPUT_EVENTS and _input_key(e) == 'model'}
  for execution in store.get_executions_by_id(sorted(consumers)):
    outs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
            if e.type in _OUTPUT_EVENTS]
    for artifact in store.get_artifacts_by_id(outs):
      kind, props = graph.artifact_types.get(artifact.type_id), properties(artifact)
      if kind == 'ModelEvaluation':
        summary['linear_top1'] = props.get('linear_top1')
      elif kind == 'ModelBlessing':
        summary['blessed'] = bool(int(props.get('blessed') or 0))
      elif kind == 'PushedModel' and int(props.get('pushed') or 0) == 1:
        summary['pushed_versions'].append(props.get('pushed_version'))
  return summary


def _dot_quote(text: str) -> str:
  """A DOT string literal; newlines become DOT's line breaks."""
  escaped = str(text).replace('\\', '\\\\').replace('"', '\\"')
  return '"' + escaped.replace('\n', '\\n') + '"'


def to_dot(graph: Dict[str, Any]) -> str:
  """Graphviz DOT of a lineage graph: executions as boxes, artifacts as ellipses."""
  lines = ['digraph lineage {', '  rankdir=LR;', '  node [fontname="Helvetica", fontsize=10];']
  for node in graph['nodes']:
    if node['kind'] == 'execution':
      label = f"{node['component']}\nexecution #{node['execution_id']} ({node['state']})"
      lines.append(f"  {node['id']} [shape=box, style=filled, fillcolor=\"#dbe9f6\", "
                   f"label={_dot_quote(label)}];")
    else:
      label = f"{node['type'].split('.')[-1]} #{node['artifact_id']}"
      lines.append(f"  {node['id']} [shape=ellipse, label={_dot_quote(label)}];")
  lines += [f'  {a} -> {b};' for a, b in graph['edges']]
  lines.append('}')
  return '\n'.join(lines) + '\n'


def render_png(dot_text: str, png_path: str) -> bool:
  """Renders DOT to PNG with graphviz's `dot` if it is installed; False if it is not."""
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  dot = shutil.which('dot')
  if not dot:
    return False
  subprocess.run([dot, '-Tpng', '-o', png_path], input=dot_text.encode(), check=True,
                 timeout=120)
  return True


def format_chain(lineage: Dict[str, Any]) -> str:
  """The chain as a text table, ingest first."""
  lines = [f"pushed {lineage.get('kind', 'encoder')} version {lineage['pushed_version']} -> "
           f"{lineage['pushed_destination']}", '']
  if lineage.get('encoder_version') is not None:
    encoder = lineage['encoder_version']
    lines.insert(1, f"fine-tuned from encoder version {encoder}" if encoder >= 0 else
                 'fine-tuned from an encoder that was not pushed')
  rows = [('step', 'execution', 'state', 'what')]
  for step in lineage['chain']:
    rows.append((step['component'], f"#{step['execution_id']}", step['state'],
                 _step_facts(step)))
  width = [max(len(r[i]) for r in rows) for i in range(3)]
  for row in rows:
    lines.append('  '.join(c.ljust(w) for c, w in zip(row[:3], width)) + '  ' + row[3])
  trainer = next((s for s in lineage['chain'] if s['component'] == 'SimCLRTrainer'), None)
  if trainer:
    lines += ['', f"trainer parameters (execution #{trainer['execution_id']}, run "
              f"{trainer['run']}):"]
    lines += [f'  {k:26s} {v}' for k, v in sorted(trainer['parameters'].items())]
  return '\n'.join(lines)


def _props_of(step, type_suffix: str) -> Dict[str, Any]:
  for artifact in step['outputs']:
    if artifact['type'].endswith(type_suffix):
      return artifact['properties']
  return {}


# Per step: the output artifact type whose properties describe it, and the one-line description.
_FACTS = {
    'ImageIngest': ('Examples', lambda r, params: (
        f"source {r.get('source_dir', params.get('data_dir'))}, data fingerprint "
        f"{str(r.get('data_fingerprint', ''))[:16]}, {r.get('num_examples')} images "
        f"({r.get('num_train')} train / {r.get('num_eval')} eval), "
        f"{r.get('num_quarantined')} quarantined, {r.get('num_duplicates')} duplicates")),
    'DualViewTransform': ('TransformGraph', lambda g, _: (
        f"image_size {g.get('image_size')}, channel mean {g.get('channel_mean')}")),
    'SimCLRTrainer': ('Model', lambda m, _: (
        f"{m.get('backbone')} x{m.get('width_multiplier')}, {m.get('train_steps')} steps, "
        f"final loss {m.get('final_loss')}, run fingerprint {m.get('run_fingerprint')}")),
    'Embedder': ('Embeddings', lambda e, _: (
        f"{e.get('num_embedded')} images, {e.get('embedding_dim')} numbers each, "
        f"{e.get('images_per_second')} images/s")),
    'EdgeExport': ('EdgeModel', lambda e, _: f"int8 {e.get('int8_reason')}"),
    'LinearEvaluator': ('ModelEvaluation', lambda ev, _: (
        f"linear top-1 {ev.get('linear_top1')}, kNN {ev.get('knn_top1')}; "
        f"{ev.get('blessing_reason')}")),
    'Pusher': ('PushedModel', lambda p, _: (
        f"version {p.get('pushed_version')} -> {p.get('pushed_destination')}")),
    'FineTuner': ('Model', lambda m, _: (
        f"{m.get('served_stage')} {m.get('backbone')} classifier, {m.get('num_labels')} labels "
        f"({m.get('num_classes')} classes), from encoder {m.get('encoder_model_uri')}")),
    'ClassifierEvaluator': ('ModelEvaluation', lambda ev, _: (
        f"top-1 linear probe {ev.get('linear_probe_top1')}, fine-tuned "
        f"{ev.get('finetuned_top1')}, distilled {ev.get('distilled_top1')}, supervised "
        f"{ev.get('supervised_top1')}; {ev.get('blessing_reason')}")),
    'ClassifierEdgeExport': ('EdgeModel', lambda e, _: f"int8 {e.get('int8_reason')}"),
    'ClassifierPusher': ('PushedModel', lambda p, _: (
        f"version {p.get('pushed_version')} -> {p.get('pushed_destination')}, encoder version "
        f"{p.get('encoder_version')}")),
}


def _step_facts(step: Dict[str, Any]) -> str:
  if step['component'] not in _FACTS:
    return ''
  type_suffix, describe = _FACTS[step['component']]
  return describe(_props_of(step, type_suffix), step['parameters'])
