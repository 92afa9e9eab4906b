"""Reads ML Metadata (OUT/metadata.sqlite): the executions of a run and its one-line-per-fact
summary, which the runners print at the end and the tools (lineage, report) build on."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from components.classifier_evaluator import contract as classifier_contract
from components.image_ingest import contract as ingest_contract
from components.linear_evaluator import contract as evaluator_contract
from components.params import EXEC_PROPERTY as PARAMS_PROPERTY
from components.pusher import contract as pusher_contract

STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


def open_store(metadata_path: str) -> mlmd.MetadataStore:
  if not os.path.isfile(metadata_path):
    raise FileNotFoundError(f'no ML Metadata store at {metadata_path}; run the pipeline first')
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return mlmd.MetadataStore(config)


def _value(v: metadata_store_pb2.Value) -> Any:
  kind = v.WhichOneof('value')
  if kind == 'struct_value':
    from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
    return json_format.MessageToDict(v.struct_value)
  return getattr(v, kind) if kind else None


def properties(node) -> Dict[str, Any]:
  """A node's properties and custom properties; an execution's `params` (its component's
  settings as one JSON string) are listed setting by setting."""
  result = {k: _value(v) for k, v in node.properties.items()}
  result.update({k: _value(v) for k, v in node.custom_properties.items()})
  params = result.get(PARAMS_PROPERTY)
  if isinstance(params, str) and params.startswith('{'):
    del result[PARAMS_PROPERTY]
    result.update({k: v for k, v in json.loads(params).items() if k not in result})
  return result


def _component_id(store, execution, node_type_id) -> str:
  """The pipeline node (component id) an execution belongs to, from its 'node' context."""
  for context in store.get_contexts_by_execution(execution.id):
    if context.type_id == node_type_id:
      return context.name.split('.')[-1]  # '<pipeline>.<node id>'
  return execution.name


def latest_run(store: mlmd.MetadataStore, pipeline_name: Optional[str] = None):
  runs = store.get_contexts_by_type('pipeline_run')
  if pipeline_name:
    runs = [r for r in runs if _run_belongs(store, r, pipeline_name)]
  if not runs:
    raise LookupError('the ML Metadata store holds no pipeline run')
  return max(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def _run_belongs(store, run_context, pipeline_name) -> bool:
  parents = store.get_parent_contexts_by_context(run_context.id)
  return any(p.name == pipeline_name for p in parents) or run_context.name.startswith(
      pipeline_name)


def run_executions(store: mlmd.MetadataStore, run_context) -> List[Dict[str, Any]]:
  """Each execution of a run with its component, state and input/output artifacts."""
  executions = store.get_executions_by_context(run_context.id)
  types = {t.id: t.name for t in store.get_execution_types()}
  artifact_types = {t.id: t.name for t in store.get_artifact_types()}
  node_type = store.get_context_type('node')
  result = []
  for execution in sorted(executions, key=lambda e: e.id):
    events = store.get_events_by_execution_ids([execution.id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    entry = {'id': execution.id, 'type': types.get(execution.type_id, ''),
             'component': _component_id(store, execution, node_type.id),
             'state': STATE_NAMES.get(execution.last_known_state, 'UNKNOWN'),
             'inputs': {}, 'outputs': {}}
    for event in events:
      if event.artifact_id not in artifacts:
        continue
      artifact = artifacts[event.artifact_id]
      key = event.path.steps[0].key if event.path.steps else ''
      side = 'outputs' if event.type in _OUTPUT_EVENTS else (
          'inputs' if event.type in _INPUT_EVENTS else None)
      if side:
        entry[side].setdefault(key, []).append({
            'id': artifact.id, 'type': artifact_types.get(artifact.type_id, ''),
            'uri': artifact.uri, 'properties': properties(artifact)})
    result.append(entry)
  return result


def executions_by_component(metadata_path: str, run_id: Optional[str] = None) -> Dict[str, Any]:
  """The executions of a run (default: the latest one) in an MLMD store, by component."""
  store = open_store(str(metadata_path))
  run = (store.get_context_by_type_and_name('pipeline_run', run_id) if run_id
         else latest_run(store))
  return {e['component']: e for e in run_executions(store, run)}


def _first_output(executions, component: str, key: str):
  """The first `key` output of the node `component` (its id: the encoder's Pusher and the
  classifier's are one component class under two ids)."""
  for entry in executions:
    if entry['component'] == component and entry['outputs'].get(key):
      return entry['outputs'][key][0]
  return None


def run_summary(metadata_path: str, pipeline_name: Optional[str] = None) -> Dict[str, Any]:
  """Where the latest run's model went, its probe accuracy, and how each step ended."""
  store = open_store(metadata_path)
  run = latest_run(store, pipeline_name)
  executions = run_executions(store, run)
  pushed = _first_output(executions, 'Pusher', 'pushed_model')
  evaluation = _first_output(executions, 'LinearEvaluator', 'evaluation')
  report = _first_output(executions, 'ImageIngest', 'report')
  run_log = _first_output(executions, 'SimCLRTrainer', 'model_run')
  metrics = {}
  if evaluation:
    path = os.path.join(evaluation['uri'], evaluator_contract.METRICS_FILE)
    if os.path.isfile(path):
      with open(path, encoding='utf-8') as f:
        metrics = json.load(f)
  pushed_props = pushed['properties'] if pushed else {}
  return {
      'run_id': run.name,
      'metadata': os.path.abspath(metadata_path),
      'executions': [{'component': e['component'], 'type': e['type'], 'state': e['state']}
                     for e in executions],
      'pushed': bool(pushed_props.get(pusher_contract.PUSHED)),
      'pushed_destination': pushed_props.get(pusher_contract.PUSHED_DESTINATION),
      'pushed_version': pushed_props.get(pusher_contract.PUSHED_VERSION),
      'push_reason': pushed_props.get(pusher_contract.REASON),
      'edge_models': pushed_props.get(pusher_contract.EDGE_MODELS),
      'linear_top1': metrics.get('linear_top1'),
      'knn_top1': metrics.get('knn_top1'),
      'linear_top5': metrics.get('linear_top5'),
      'linear_probe_by_fraction': metrics.get('linear_probe_by_fraction'),
      'raw_pixels_linear_top1': metrics.get('raw_pixels_linear_top1'),
      'random_init_encoder_linear_top1': metrics.get('random_init_encoder_linear_top1'),
      'evaluation_dir': evaluation['uri'] if evaluation else None,
      'models_config': pushed_props.get(pusher_contract.MODELS_CONFIG_PATH),
      'num_labelled': metrics.get('num_labelled'),
      'num_eval': metrics.get('num_eval'),
      'blessing_reason': metrics.get('blessing_reason'),
      **_ingest_counts(report),
      'tensorboard_logdir': run_log['uri'] if run_log else None,
      'classifier': _classifier_summary(executions),
  }


def _classifier_summary(executions) -> Optional[Dict[str, Any]]:
  """The classifier's part of a run (None when the DAG has no FineTuner): the four models'
  top-1 and ECE, the blessing and where the classifier was pushed."""
  evaluation = _first_output(executions, 'ClassifierEvaluator', 'evaluation')
  if not evaluation:
    return None
  path = os.path.join(evaluation['uri'], classifier_contract.METRICS_FILE)
  metrics = {}
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      metrics = json.load(f)
  pushed = _first_output(executions, 'ClassifierPusher', 'pushed_model')
  props = pushed['properties'] if pushed else {}
  return {'served_model': metrics.get('served_model'), 'num_labels': metrics.get('num_labels'),
          'top1': {m: v['top1'] for m, v in metrics.get('models', {}).items()},
          'ece': {m: v['ece'] for m, v in metrics.get('models', {}).items()},
          'blessed': metrics.get('blessed'), 'blessing_reason': metrics.get('blessing_reason'),
          'evaluation_dir': evaluation['uri'],
          'pushed': bool(props.get(pusher_contract.PUSHED)),
          'pushed_destination': props.get(pusher_contract.PUSHED_DESTINATION),
          'pushed_version': props.get(pusher_contract.PUSHED_VERSION),
          'push_reason': props.get(pusher_contract.REASON),
          'edge_models': props.get(pusher_contract.EDGE_MODELS)}


def _ingest_counts(report) -> Dict[str, Any]:
  props = report['properties'] if report else {}
  return {key: props.get(key) for key in (ingest_contract.DATA_FINGERPRINT,
                                          ingest_contract.NUM_EXAMPLES,
                                          ingest_contract.NUM_QUARANTINED)}
