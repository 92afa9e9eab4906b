"""create_pipeline(config): the five components of simclr-tfx as one TFX DAG.

ImageIngest -> DualViewTransform -> SimCLRTrainer -> LinearEvaluator -> Pusher.
Output layout under config.output_dir (OUT):
  OUT/metadata.sqlite               ML Metadata store (SQLite)
  OUT/pipeline_root/                every artifact; trainer checkpoints in _checkpoints/
  OUT/serving/<model_name>/<ver>/   TF Serving model base path (or <serving_dir>/...)
"""
from __future__ import annotations

import json
import os
import shlex

from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.types import channel, standard_artifacts

from components.dual_view_transform.component import DualViewTransform
from components.edge_export.component import EdgeExport
from components.image_ingest import images
from components.image_ingest.component import ImageIngest
from components.linear_evaluator.component import LinearEvaluator
from components.pusher.component import Pusher
from components.simclr_trainer import contract as trainer_contract
from components.simclr_trainer.component import SimCLRTrainer
from pipeline.config import PipelineConfig


def _absolute(path: str) -> str:
  """Local paths are made absolute (components run in other working folders); URIs such as
  gs://bucket/root are left alone."""
  return path if '://' in path else os.path.abspath(path)


def paths(config: PipelineConfig) -> dict:
  out = _absolute(config.output_dir)
  return {
      'output': out,
      'metadata': os.path.join(out, 'metadata.sqlite'),
      'pipeline_root': os.path.join(out, 'pipeline_root'),
      'checkpoints': os.path.join(out, 'pipeline_root', trainer_contract.CHECKPOINTS_DIR),
      'serving': (os.path.abspath(config.serving_dir) if config.serving_dir
                  else os.path.join(out, 'serving')),
  }


def create_components(config: PipelineConfig, where: dict | None = None,
                      listing_fingerprint: bool = True) -> list:
  """The nodes of the DAG. `where` overrides paths(config) (a cluster's pipeline root and
  serving folder); listing_fingerprint=False leaves the ingest's cache key free of the data
  folder's listing, for a compile machine that cannot see the data (Kubeflow)."""
  where = where or paths(config)
  data_dir = _absolute(config.data_dir)
  manifest = _absolute(config.manifest) if config.manifest else ''
  fingerprint = images.source_fingerprint(data_dir, manifest) if listing_fingerprint else ''
  ingest = ImageIngest(data_dir=data_dir, eval_percent=config.eval_percent,
                       source_fingerprint=fingerprint,
                       min_side=config.min_side, max_pixels=config.max_pixels,
                       max_file_bytes=config.max_file_bytes,
                       max_bad_fraction=config.max_bad_fraction,
                       labelled_fraction=config.labelled_fraction,
                       include_globs=config.include_globs, exclude_globs=config.exclude_globs,
                       manifest=manifest)
  transform = DualViewTransform(
      examples=ingest.outputs['examples'], schema=ingest.outputs['schema'],
      image_size=config.image_size,
      augmentation_policy=json.dumps(config.augmentation_policy(), sort_keys=True))
  extra = []
  base_model = latest_blessed_model = None
  if config.warm_start or config.bless_compare_with_baseline:
    # The latest blessed Model of this pipeline, as TFX's own Evaluator baselines are found:
    # the evaluator's baseline and the trainer's warm start.
    latest_blessed = resolver.Resolver(
        strategy_class=latest_blessed_model_strategy.LatestBlessedModelStrategy,
        model=channel.Channel(type=standard_artifacts.Model),
        model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
    ).with_id('latest_blessed_model_resolver')
    extra.append(latest_blessed)
    latest_blessed_model = latest_blessed.outputs['model']
    base_model = latest_blessed_model if config.warm_start else None
  trainer = SimCLRTrainer(
      transformed_examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'], base_model=base_model,
      backbone=config.backbone, width_multiplier=config.width_multiplier,
      head_layers=config.head_layers, projection_dim=config.projection_dim,
      batch_size=config.batch_size, epochs=config.epochs,
      train_steps=config.train_steps, train_minutes=float(config.train_minutes),
      temperature=config.temperature, contrastive_loss=config.contrastive_loss,
      optimizer=config.optimizer, learning_rate=config.learning_rate,
      lr_scaling=config.lr_scaling, weight_decay=config.weight_decay,
      warmup_fraction=config.warmup_fraction, seed=config.seed,
      checkpoint_every_steps=config.checkpoint_every_steps,
      negatives_queue_size=config.negatives_queue_size, precision=config.precision,
      jit_compile=int(config.jit_compile),
      knn_monitor_every_epochs=config.knn_monitor_every_epochs,
      embedding_stages=config.embedding_stages, embedding_pool=config.embedding_pool,
      checkpoint_root=where['checkpoints'], keep_checkpoints=config.keep_checkpoints,
      distribution_strategy=config.distribution_strategy)
  evaluator = LinearEvaluator(
      examples=ingest.outputs['examples'], model=trainer.outputs['model'],
      baseline_model=latest_blessed_model if config.bless_compare_with_baseline else None,
      min_linear_top1=config.bless_min_linear_top1, knn_k=config.knn_k,
      probe_fractions=config.probe_fractions,
      max_drop_vs_baseline=config.bless_max_drop_vs_baseline,
      context_baselines=config.probe_context_baselines)
  edge = None
  if config.edge_export:
    edge = EdgeExport(model=trainer.outputs['model'], examples=ingest.outputs['examples'],
                      calibration_images=config.tflite_calibration_images,
                      parity_images=config.tflite_parity_images,
                      min_cosine_float=config.tflite_min_cosine_float,
                      min_cosine_int8=config.tflite_min_cosine_int8,
                      max_top1_drop=config.tflite_max_top1_drop)
  pusher = Pusher(model=trainer.outputs['model'], model_blessing=evaluator.outputs['blessing'],
                  serving_base_dir=where['serving'], model_name=config.model_name,
                  edge_model=edge.outputs['edge_model'] if edge else None,
                  examples=ingest.outputs['examples'], keep_versions=config.serving_keep_versions,
                  warmup_images=config.serving_warmup_images,
                  serving_config_base_path=config.serving_config_base_path)
  return [ingest, transform, *extra, trainer, evaluator, *([edge] if edge else []), pusher]


def create_pipeline(config: PipelineConfig,
                    metadata_connection_config=None) -> tfx_pipeline.Pipeline:
  """The TFX pipeline for `config` (data_dir must name a folder of images)."""
  config.validate()
  where = paths(config)
  if metadata_connection_config is None:
    metadata_connection_config = metadata.sqlite_metadata_connection_config(where['metadata'])
  return tfx_pipeline.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=where['pipeline_root'],
      components=create_components(config),
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=shlex.split(config.beam_pipeline_args))
