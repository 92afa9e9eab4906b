"""Runs a compiled KFP package on this machine, task by task, the way KFP's driver and launcher do.

No cluster here, so this stands in for the parts of KFP that sit around a task: it orders the DAG
by dependentTasks, builds each task's ExecutorInput (parameters from the spec, input artifacts from
the upstream tasks' executor outputs, output artifacts under the pipeline root), substitutes it for
the `{{$}}` placeholder and runs the executor's *container command and args from the spec* in a
subprocess (TFX's kubeflow_v2_run_executor), then reads back the ExecutorOutput the entrypoint
writes. What runs is the cluster code path of every component; what is not exercised is Kubernetes
itself (pods, the image, volumes), Argo, and KFP's own MLMD and cache.

  simclr-tfx kfp-local kfp/simclr-tfx.yaml --work-dir /tmp/kfp_run
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional

from google.protobuf import json_format

from components.errors import TaskFailed


def task_order(spec) -> List[str]:
  """Task names of the root DAG in an order where every task follows its dependencies."""
  tasks = spec.root.dag.tasks
  done: List[str] = []
  pending = sorted(tasks)
  while pending:
    ready = [t for t in pending if all(d in done for d in tasks[t].dependent_tasks)]
    if not ready:
      raise ValueError(f'the DAG has a cycle or a missing dependency among {pending}')
    done += ready
    pending = [t for t in pending if t not in ready]
  return done


def _parameters(task, root_values: Dict[str, Any]) -> Dict[str, Any]:
  """The task's parameters as pipeline_spec Value dicts ({'intValue': ...}), as KFP passes
  them to a schema-2.0.0 TFX task."""
  result = {}
  for key, spec in task.inputs.parameters.items():
    kind = spec.WhichOneof('kind')
    if kind == 'runtime_value':
      result[key] = json_format.MessageToDict(spec.runtime_value.constant_value)
    elif kind == 'component_input_parameter':
      result[key] = root_values[spec.component_input_parameter]
    else:
      raise ValueError(f'parameter {key}: {kind} is not supported by this local launcher')
  return result


def _output_artifacts(component, root: str, task_name: str, run_id: str) -> Dict[str, Any]:
  outputs = {}
  for key, definition in component.output_definitions.artifacts.items():
    outputs[key] = {'artifacts': [{
        'name': f'{run_id}-{task_name}-{key}',
        'type': json_format.MessageToDict(definition.artifact_type),
        'uri': os.path.join(root, run_id, task_name, key),
        'metadata': {}}]}
  return outputs


def run_package(package_path: str, work_dir: str, env: Optional[Dict[str, str]] = None,
                timeout_s: int = 1800) -> Dict[str, Any]:
  """Runs every task of the package; returns {task: ExecutorOutput dict} in run order. Holds
  the run lock of work_dir throughout, as `simclr-tfx run` holds OUT's (pipeline/run_lock.py)."""
  from pipeline import run_lock
  run_lock.check_output_writable(work_dir)
  with run_lock.run_lock(work_dir, metadata_path=''):
    return _run_tasks(package_path, work_dir, env, timeout_s)


def _run_tasks(package_path: str, work_dir: str, env: Optional[Dict[str, str]],
               timeout_s: int) -> Dict[str, Any]:
  from pipeline.kubeflow_runner import load_package
  spec, _ = load_package(package_path)
  root = spec.default_pipeline_root or os.path.join(work_dir, 'pipeline_root')
  run_id = time.strftime('run-%Y%m%d-%H%M%S-') + uuid.uuid4().hex[:6]
  root_values = {k: json_format.MessageToDict(v.default_value)
                 for k, v in spec.root.input_definitions.parameters.items()}
  produced: Dict[str, Dict[str, Any]] = {}
  results = {}
  for name in task_order(spec):
    task = spec.root.dag.tasks[name]
    component = spec.components[task.component_ref.name]
    executor = spec.deployment_spec.fields['executors'].struct_value.fields[
        component.executor_label]
    executor = json_format.MessageToDict(executor)
    if 'container' not in executor:
      raise ValueError(f'task {name}: only container executors run here, got '
                       f'{sorted(executor)} (resolver/importer tasks need KFP itself)')
    inputs = {}
    for key, spec_in in task.inputs.artifacts.items():
      upstream = spec_in.task_output_artifact
      inputs[key] = {'artifacts': produced[upstream.producer_task][upstream.output_artifact_key]}
    outputs = _output_artifacts(component, root, name, run_id)
    output_file = os.path.join(work_dir, run_id, name, 'executor_output.json')
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    executor_input = {'inputs': {'parameters': _parameters(task, root_values),
                                 'artifacts': inputs},
                      'outputs': {'artifacts': outputs, 'outputFile': output_file}}
    container = executor['container']
    placeholder = json.dumps(executor_input)
    command = container['command'] + [placeholder if a == '{{$}}' else a
                                      for a in container.get('args', [])]
    if command[0] == 'python':  # the image's python is this environment's
      command[0] = sys.executable
    logging.info('kfp-local: task %s (%s)', name, component.executor_label)
    started = time.time()
    proc = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
      tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-25:])
      raise TaskFailed(f'task {name} exited with {proc.returncode}:\n{tail}')
    with open(output_file, encoding='utf-8') as f:
      output = json.load(f)
    # Downstream tasks see the artifacts as the executor left them (properties, split names).
    produced[name] = {}
    for key, listed in outputs.items():
      reported = output.get('artifacts', {}).get(key, {}).get('artifacts')
      produced[name][key] = reported or listed['artifacts']
      for artifact in produced[name][key]:
        artifact.setdefault('type', listed['artifacts'][0]['type'])
        artifact.setdefault('name', listed['artifacts'][0]['name'])
    results[name] = {'seconds': round(time.time() - started, 1), 'output': output,
                     'command': command[:4]}
    logging.info('kfp-local: task %s done in %.1fs', name, time.time() - started)
  return {'run_id': run_id, 'pipeline_root': root, 'tasks': results}
