"""create_pipeline(config): the components of simclr-tfx as one TFX DAG.

ImageIngest -> DualViewTransform -> SimCLRTrainer -> Embedder -> LinearEvaluator -> Pusher,
with EdgeExport beside the evaluator; and from the trainer, FineTuner -> ClassifierEvaluator ->
the classifier's own EdgeExport and Pusher (<model_name>_classifier).
Output layout under config.output_dir (OUT):
  OUT/metadata.sqlite               ML Metadata store (SQLite)
  OUT/pipeline_root/                every artifact; trainer checkpoints in _checkpoints/
  OUT/serving/<model_name>/<ver>/   TF Serving model base path (or <serving_dir>/...)
"""
from __future__ import annotations

import dataclasses
import shlex

from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.types import channel, standard_artifacts

from components import baseline
from components.classifier_evaluator.component import ClassifierEvaluator
from components.classifier_evaluator.params import ClassifierEvaluatorParams
from components.dual_view_transform.component import DualViewTransform
from components.dual_view_transform.params import TransformParams
from components.edge_export.component import EdgeExport
from components.edge_export.params import EdgeExportParams
from components.embedder.component import Embedder
from components.fine_tuner import contract as finetune_contract
from components.fine_tuner.component import FineTuner
from components.fine_tuner.params import FineTunerParams
from components.image_ingest import images
from components.image_ingest.component import ImageIngest
from components.image_ingest.params import IngestParams
from components.linear_evaluator.component import LinearEvaluator
from components.linear_evaluator.params import EvaluatorParams
from components.pusher.component import Pusher
from components.pusher.params import PusherParams
from components.simclr_trainer.component import SimCLRTrainer
from components.simclr_trainer.params import TrainerParams
from pipeline.config import PipelineConfig, absolute_path, paths






def create_components(config: PipelineConfig, where: dict | None = None,
                      listing_fingerprint: bool = True) -> list:
  """The nodes of the DAG. `where` overrides paths(config) (a cluster's pipeline root and
  serving folder); listing_fingerprint=False leaves the ingest's cache key free of the data
  folder's listing, for a compile machine that cannot see the data (Kubeflow)."""
  where = where or paths(config)
  data_dir = absolute_path(config.data_dir)
  ingest_params = dataclasses.replace(
      IngestParams.of(config), manifest=absolute_path(config.manifest) if config.manifest else '')
  fingerprint = (images.source_fingerprint(data_dir, ingest_params.manifest)
                 if listing_fingerprint else '')
  ingest = ImageIngest(data_dir=data_dir, source_fingerprint=fingerprint, params=ingest_params)
  transform = DualViewTransform(examples=ingest.outputs['examples'],
                                schema=ingest.outputs['schema'],
                                params=TransformParams.of(config))
  resolver_node = _latest_blessed_model(config)
  latest_blessed = resolver_node.outputs['model'] if resolver_node else None
  pushed = (baseline.model_dir(where['serving'], config.model_name)
            if config.baseline_from == 'serving' else '')
  trainer = SimCLRTrainer(
      transformed_examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      base_model=latest_blessed if config.warm_start else None,
      baseline_model_dir=pushed if config.warm_start else '',
      params=TrainerParams.of(config), checkpoint_root=where['checkpoints'])
  embedder = Embedder(examples=ingest.outputs['examples'], model=trainer.outputs['model'])
  evaluator = LinearEvaluator(
      examples=ingest.outputs['examples'], model=trainer.outputs['model'],
      embeddings=embedder.outputs['embeddings'],
      baseline_model=latest_blessed if config.bless_compare_with_baseline else None,
      baseline_model_dir=pushed if config.bless_compare_with_baseline else '',
      params=EvaluatorParams.of(config))
  for component, extra in ((ingest, config.ingest_beam_args),
                           (transform, config.transform_beam_args),
                           (embedder, config.embed_beam_args)):
    if extra:
      component.with_beam_pipeline_args(shlex.split(extra))
  edge = (EdgeExport(model=trainer.outputs['model'], examples=ingest.outputs['examples'],
                     params=EdgeExportParams.of(config)) if config.edge_export else None)
  pusher = Pusher(model=trainer.outputs['model'], model_blessing=evaluator.outputs['blessing'],
                  serving_base_dir=where['serving'], params=PusherParams.of(config),
                  edge_model=edge.outputs['edge_model'] if edge else None,
                  examples=ingest.outputs['examples'])
  nodes = [ingest, transform, resolver_node, trainer, embedder, evaluator, edge, pusher]
  if config.finetune:
    nodes += _classifier_nodes(config, where, ingest, transform, trainer, embedder, pusher)
  return [node for node in nodes if node is not None]


def _classifier_nodes(config, where, ingest, transform, trainer, embedder, pusher) -> list:
  """FineTuner -> ClassifierEvaluator -> the classifier's EdgeExport and Pusher, which
  publishes it as <model_name>_classifier beside the encoder."""
  tuner = FineTuner(transformed_examples=transform.outputs['transformed_examples'],
                    transform_graph=transform.outputs['transform_graph'],
                    model=trainer.outputs['model'], examples=ingest.outputs['examples'],
                    params=FineTunerParams.of(config), checkpoint_root=where['checkpoints'])
  evaluator = ClassifierEvaluator(
      examples=ingest.outputs['examples'], classifier=tuner.outputs['classifier'],
      finetune_run=tuner.outputs['finetune_run'], embeddings=embedder.outputs['embeddings'],
      params=ClassifierEvaluatorParams.of(config))
  edge = (EdgeExport(model=tuner.outputs['classifier'], examples=ingest.outputs['examples'],
                     params=EdgeExportParams.of(config)).with_id(CLASSIFIER_EDGE_EXPORT)
          if config.edge_export else None)
  params = dataclasses.replace(PusherParams.of(config), model_name=classifier_model_name(config))
  pusher = Pusher(model=tuner.outputs['classifier'], model_blessing=evaluator.outputs['blessing'],
                  serving_base_dir=where['serving'], params=params,
                  edge_model=edge.outputs['edge_model'] if edge else None,
                  examples=ingest.outputs['examples'],
                  encoder_push=pusher.outputs['pushed_model']).with_id(CLASSIFIER_PUSHER)
  return [tuner, evaluator, edge, pusher]


CLASSIFIER_EDGE_EXPORT, CLASSIFIER_PUSHER = 'ClassifierEdgeExport', 'ClassifierPusher'


def classifier_model_name(config: PipelineConfig) -> str:
  return config.model_name + finetune_contract.CLASSIFIER_MODEL_SUFFIX


def _latest_blessed_model(config: PipelineConfig):
  """The resolver of the latest blessed Model of this pipeline, found as TFX's own Evaluator
  finds its baseline: the evaluator's baseline and the trainer's warm start. None when neither
  is wanted."""
  if config.baseline_from != 'metadata' or not (config.warm_start or
                                                  config.bless_compare_with_baseline):
    return None
  # The encoder's Model and LinearEvaluator's blessings only: the classifier is a blessed Model
  # of this pipeline too, and neither a baseline nor a warm start for an encoder.
  return resolver.Resolver(
      strategy_class=latest_blessed_model_strategy.LatestBlessedModelStrategy,
      model=channel.Channel(type=standard_artifacts.Model, producer_component_id='SimCLRTrainer',
                            output_key='model'),
      model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing,
                                     producer_component_id='LinearEvaluator',
                                     output_key='blessing'),
  ).with_id('latest_blessed_model_resolver')


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
