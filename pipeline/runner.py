"""Runs the pipeline with a local orchestrator (LocalDagRunner or BeamDagRunner)."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict

from pipeline import demo_data, run_lock, run_record
from pipeline.config import PipelineConfig, build_config, paths

ENGINES = ('local', 'beam')


def resolve_data_dir(config: PipelineConfig) -> PipelineConfig:
  """An empty data_dir means the embedded MNIST demo, written once under OUT/demo_data."""
  if config.data_dir:
    return config
  import dataclasses  # pylint: disable=g-import-not-at-top
  demo_dir = os.path.join(paths(config)['output'], 'demo_data')
  logging.info('no --data-dir given: using the embedded MNIST demo data in %s', demo_dir)
  demo_data.write_demo_dataset(demo_dir)
  return dataclasses.replace(config, data_dir=demo_dir)


def config_from_environment(demo_if_no_data: bool = True) -> PipelineConfig:
  """The config of pipeline/local_runner.py and kubeflow_runner.py (for `tfx pipeline create`):
  SIMCLR_TFX_CONFIG, SIMCLR_TFX_PRESET, SIMCLR_TFX_DATA_DIR, SIMCLR_TFX_OUTPUT, SIMCLR_TFX_SET."""
  set_args = [p for p in os.environ.get('SIMCLR_TFX_SET', '').split(';') if p.strip()]
  config = build_config(
      preset=os.environ.get('SIMCLR_TFX_PRESET') or None,
      config_file=os.environ.get('SIMCLR_TFX_CONFIG') or None, set_args=set_args,
      data_dir=os.environ.get('SIMCLR_TFX_DATA_DIR') or None,
      output_dir=os.environ.get('SIMCLR_TFX_OUTPUT') or None)
  return resolve_data_dir(config) if demo_if_no_data else config


def locked_output(config: PipelineConfig):
  """The run lock of config's output folder, after checking the folder can be written: every
  entry point that runs the pipeline on OUT holds it (pipeline/run_lock.py)."""
  where = paths(config)
  run_lock.check_output_writable(where['output'])
  return run_lock.run_lock(where['output'], where['metadata'])


def run_pipeline(config: PipelineConfig, engine: str = 'local') -> Dict[str, Any]:
  if engine not in ENGINES:
    raise ValueError(f'engine must be one of {ENGINES}, got {engine!r}')
  config = config.validate()
  where = paths(config)
  with locked_output(config):  # a locked or unwritable OUT fails before TFX is imported
    from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top
    config = resolve_data_dir(config)
    tfx_pipeline = create_pipeline(config)
    started = time.time()
    if engine == 'local':
      from tfx.orchestration.local import local_dag_runner  # pylint: disable=g-import-not-at-top
      local_dag_runner.LocalDagRunner().run(tfx_pipeline)
    else:
      from tfx.orchestration.beam import beam_dag_runner  # pylint: disable=g-import-not-at-top
      beam_dag_runner.BeamDagRunner().run(tfx_pipeline)
  summary = run_record.run_summary(where['metadata'], config.pipeline_name)
  summary.update(engine=engine, data_dir=config.data_dir, wall_seconds=round(time.time() - started, 1))
  return summary


def _classifier_lines(classifier, pct) -> list:
  if not classifier:
    return []
  top1 = ', '.join(f'{model} {pct(value)}' for model, value in classifier['top1'].items())
  where = (f"{classifier['pushed_destination']} (version {classifier['pushed_version']})"
           if classifier['pushed'] else f"not pushed ({classifier['push_reason']})")
  return [f"classifier    top-1 {top1} ({classifier['num_labels']} labels; serving the "
          f"{classifier['served_model']} model)",
          f"              {classifier['blessing_reason']}",
          f"              {where}"]


def format_summary(summary: Dict[str, Any]) -> str:
  def pct(v):
    return f'{100 * v:.1f}%' if isinstance(v, (int, float)) else 'n/a'

  states = ', '.join(f"{e['component']} {e['state']}" for e in summary['executions'])
  if summary['pushed']:
    where = f"{summary['pushed_destination']} (version {summary['pushed_version']})"
  else:
    where = f"not pushed ({summary['push_reason']})"
  lines = [
      '',
      '=== simclr-tfx run summary ' + '=' * 40,
      f"data          {summary['data_dir']}: {summary['num_examples']} images, "
      f"{summary['num_quarantined']} quarantined, fingerprint "
      f"{(summary['data_fingerprint'] or '')[:12]}",
      f"linear probe  top-1 {pct(summary['linear_top1'])} (kNN {pct(summary['knn_top1'])}) on "
      f"{summary['num_eval']} eval images, {summary['num_labelled']} labelled train images",
      *_probe_detail_lines(summary, pct),
      f"blessing      {summary['blessing_reason']}",
      f"model         {where}",
      f"serving       models.config {summary.get('models_config') or 'n/a'}",
      f"edge (TFLite) {summary.get('edge_models') or 'none'}",
      *_classifier_lines(summary.get('classifier'), pct),
      f"TensorBoard   tensorboard --logdir {summary['tensorboard_logdir']}",
      f"metadata      {summary['metadata']}  (run {summary['run_id']}, {summary['engine']} "
      f"engine, {summary['wall_seconds']}s)",
      f"executions    {states}",
      f"lineage       simclr-tfx lineage --output {os.path.dirname(summary['metadata'])}",
      f"report        simclr-tfx report --output {os.path.dirname(summary['metadata'])}",
      '=' * 67,
  ]
  return '\n'.join(lines)


def _probe_detail_lines(summary, pct):
  """Probe accuracy per label budget and, for context, on raw pixels / a random-init encoder."""
  lines = []
  by_fraction = summary.get('linear_probe_by_fraction') or {}
  if by_fraction:
    parts = [f"{pct(v.get('top1'))} with {v['num_labels']} labels ({float(k):.0%})"
             for k, v in sorted(by_fraction.items(), key=lambda kv: float(kv[0]))]
    lines.append('              by labels: ' + ', '.join(parts))
  if summary.get('raw_pixels_linear_top1') is not None:
    lines.append(f"              context: raw pixels {pct(summary['raw_pixels_linear_top1'])}, "
                 f"random-init encoder {pct(summary.get('random_init_encoder_linear_top1'))}")
  if summary.get('evaluation_dir'):
    lines.append(f"              plots: {summary['evaluation_dir']}/"
                 "{confusion_matrix,embedding_map}.png, projector/")
  return lines
