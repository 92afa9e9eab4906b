"""LinearEvaluator executor: frozen-encoder embeddings -> linear probe + kNN -> blessing.

The embeddings are the Embedder's: computed with Beam's RunInference through the exported
`serving_default` signature on the raw image bytes of the ingested examples, i.e. exactly what
TF Serving will return, so the number that blesses a model is a number about the model that gets
served. The latest blessed model (when the pipeline's
resolver finds one) is measured the same way on the same data in the same execution, so the
comparison is never between numbers from different data.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import baseline, io_utils
from components.embedder import contract as embedder_contract
from components.linear_evaluator import baselines, plots, probe
from components.image_ingest import contract as ingest_contract
from components.linear_evaluator import contract
from components.linear_evaluator.contract import METRICS_FILE
from components.linear_evaluator.params import EvaluatorParams
from components.params import EXEC_PROPERTY
from components.simclr_trainer import contract as trainer_contract

_RAW_PIXELS_MAX_SIDE = 32  # raw-pixel probe: at most 32x32x3 features, or it takes minutes
_CONTEXT_MAX_LABELLED = 2000  # context probes train on a class-balanced subset of this size


def _check_same_model(embeddings, model) -> None:
  computed_by = embeddings.get_string_custom_property(embedder_contract.MODEL_URI)
  if computed_by != model.uri:
    raise ValueError(f'the embeddings at {embeddings.uri} were computed by {computed_by}, not by '
                     f'the model under evaluation ({model.uri}); wire the Embedder that ran on '
                     'this model into the LinearEvaluator')


def _labelled_images(examples):
  """(train image batches, labels, eval image batches, labels) of the labelled records."""
  train = io_utils.read_labelled(artifact_utils.get_split_uri([examples], 'train'))
  return (*train, *io_utils.read_labelled(artifact_utils.get_split_uri([examples], 'eval')))


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    started = time.time()
    examples = artifact_utils.get_single_instance(input_dict['examples'])
    model = artifact_utils.get_single_instance(input_dict['model'])
    base = baseline.find(input_dict.get('baseline_model'), exec_properties['baseline_model_dir'],
                         path_utils.serving_model_path)
    evaluation = artifact_utils.get_single_instance(output_dict['evaluation'])
    blessing = artifact_utils.get_single_instance(output_dict['blessing'])
    params = EvaluatorParams.from_json(exec_properties[EXEC_PROPERTY])
    class_names = json.loads(examples.get_string_custom_property(ingest_contract.CLASSES) or '[]')

    embeddings = artifact_utils.get_single_instance(input_dict['embeddings'])
    _check_same_model(embeddings, model)
    train_x, train_y = io_utils.read_labelled_embeddings(
        embedder_contract.split_dir(embeddings.uri, 'train'))
    eval_x, eval_y = io_utils.read_labelled_embeddings(
        embedder_contract.split_dir(embeddings.uri, 'eval'))
    metrics = {'num_labelled': int(len(train_y)), 'num_eval': int(len(eval_y)),
               'num_classes': int(len(np.unique(train_y))),
               'min_linear_top1': params.bless_min_linear_top1, 'linear_top1': None,
               'linear_top5': None, 'knn_top1': None, 'knn_k': params.knn_k,
               'knn_temperature': 0.1, 'max_drop_vs_baseline': params.bless_max_drop_vs_baseline,
               'class_names': class_names}

    blessed, reason = self._evaluate(model, base, params, evaluation.uri,
                                     (train_x, train_y, eval_x, eval_y),
                                     functools.cache(lambda: _labelled_images(examples)), metrics)
    metrics.update(blessed=blessed, blessing_reason=reason, model_uri=model.uri,
                   seconds=round(time.time() - started, 3))
    io_utils.write_json(os.path.join(evaluation.uri, METRICS_FILE), metrics)
    self._record(evaluation, blessing, metrics, model, base)
    logging.info('LinearEvaluator: linear_top1 %s knn_top1 %s on %d eval images -> %s (%s)',
                 metrics['linear_top1'], metrics['knn_top1'], metrics['num_eval'],
                 'BLESSED' if blessed else 'NOT BLESSED', reason)

  def _evaluate(self, model, base, params, out_dir, data, images, metrics):
    """Fills metrics with the probe, kNN, context and baseline numbers; (blessed, reason).
    data: the model's labelled embeddings; images(): the labelled images, for the context
    probes and the baseline model."""
    train_x, train_y, eval_x, eval_y = data
    if len(train_y) == 0 or len(eval_y) == 0 or metrics['num_classes'] < 2:
      return False, (f'cannot measure: {len(train_y)} labelled train and {len(eval_y)} labelled '
                     f'eval images in {metrics["num_classes"]} class(es); put labelled images in '
                     'class sub-folders (at least 2 classes)')
    all_classes = np.unique(np.concatenate([train_y, eval_y]))
    metrics.update(self._probe_all_fractions(train_x, train_y, eval_x, eval_y,
                                             params.fractions(), all_classes))
    metrics['knn_top1'] = probe.knn_top1(train_x, train_y, eval_x, eval_y, k=params.knn_k)
    metrics['embedding_dim'] = int(train_x.shape[1])
    if params.probe_context_baselines:
      metrics['context'] = self._context_baselines(model, *images())
      for name, values in metrics['context'].items():
        metrics[f'{name}_linear_top1'] = values['linear_top1']
    baseline_top1, baseline_uri = self._measure_baseline(base, model, images, metrics)
    decision = probe.bless_decision(metrics['linear_top1'], params.bless_min_linear_top1,
                                    baseline_top1, params.bless_max_drop_vs_baseline,
                                    baseline_uri)
    self._write_plots(out_dir, metrics, eval_x, eval_y, metrics['class_names'])
    return decision

  @staticmethod
  def _record(evaluation, blessing, metrics, model, base) -> None:
    """The properties of both outputs (names: contract.py), and TFX Evaluator's BLESSED or
    NOT_BLESSED file, so TFX resolvers and Pushers read the blessing too."""
    blessed, reason = metrics['blessed'], metrics['blessing_reason']
    for key in ('linear_top1', 'linear_top5', 'knn_top1', 'baseline_linear_top1',
                'raw_pixels_linear_top1', 'random_init_encoder_linear_top1'):
      if metrics.get(key) is not None:
        evaluation.set_float_custom_property(key, metrics[key])
    evaluation.set_int_custom_property(contract.NUM_LABELLED, metrics['num_labelled'])
    evaluation.set_int_custom_property(contract.NUM_EVAL, metrics['num_eval'])
    evaluation.set_int_custom_property(contract.BLESSED, int(blessed))
    evaluation.set_string_custom_property(contract.BLESSING_REASON, reason)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, 'BLESSED' if blessed else 'NOT_BLESSED'),
                           'w') as f:
      f.write(reason + '\n')
    blessing.set_int_custom_property(contract.BLESSED, int(blessed))
    blessing.set_string_custom_property(contract.CURRENT_MODEL, model.uri)
    blessing.set_int_custom_property(contract.CURRENT_MODEL_ID, model.id)
    if base:
      blessing.set_string_custom_property(contract.BASELINE_MODEL, base.describe())
      blessing.set_int_custom_property(contract.BASELINE_MODEL_ID, base.model_id)
    blessing.set_string_custom_property(contract.REASON, reason)

  @staticmethod
  def _probe_all_fractions(train_x, train_y, eval_x, eval_y, fractions, all_classes):
    """The probe at every labelled fraction; the headline numbers are those of fraction 1."""
    by_fraction = {}
    headline = None
    for fraction in fractions:
      subset = probe.balanced_subset(train_y, fraction)
      if len(np.unique(train_y[subset])) < 2:
        by_fraction[f'{fraction:g}'] = {'num_labels': int(len(subset)), 'top1': None,
                                        'note': 'fewer than 2 classes at this fraction'}
        continue
      fitted = probe.LinearProbe(train_x[subset], train_y[subset])
      scores = probe.classification_metrics(fitted.predict_proba(eval_x), fitted.classes,
                                            eval_y, all_classes)
      by_fraction[f'{fraction:g}'] = {'num_labels': int(len(subset)), 'top1': scores['top1'],
                                      'top5': scores['top5'], 'C': fitted.C}
      if fraction == 1.0:
        headline = (scores, fitted.C)
    scores, c = headline
    return {'linear_top1': scores['top1'], 'linear_top5': scores['top5'],
            'linear_top5_k': scores['top5_k'], 'linear_probe_C': c,
            'per_class_top1': scores['per_class_top1'],
            'confusion_matrix': scores['confusion_matrix'],
            'confusion_classes': scores['confusion_classes'],
            'linear_probe_by_fraction': by_fraction}

  @staticmethod
  def _context_baselines(model, train_images, train_y, eval_images, eval_y):
    """The same probe on raw pixels and on a random-init encoder of the same architecture."""
    image_size = int(model.get_int_custom_property(trainer_contract.IMAGE_SIZE))
    # Context, not the headline: a class-balanced subset keeps it to seconds on large sets.
    keep = probe.balanced_subset(train_y, min(1.0, _CONTEXT_MAX_LABELLED / len(train_y)))
    train_images = [tf.constant(np.concatenate([b.numpy() for b in train_images])[keep])]
    train_y = train_y[keep]
    train_px = baselines.decoded_pixels(train_images, image_size)
    eval_px = baselines.decoded_pixels(eval_images, image_size)
    side = min(image_size, _RAW_PIXELS_MAX_SIDE)
    small = lambda px: tf.image.resize(px, [side, side], antialias=True).numpy()
    raw = probe.linear_probe(baselines.raw_pixel_features(small(train_px)), train_y,
                             baselines.raw_pixel_features(small(eval_px)), eval_y)
    width = model.get_float_custom_property(trainer_contract.WIDTH_MULTIPLIER)
    backbone = model.get_string_custom_property(trainer_contract.BACKBONE)
    stages = int(model.get_int_custom_property(trainer_contract.EMBEDDING_STAGES))
    pool = model.get_string_custom_property(trainer_contract.EMBEDDING_POOL)
    random_train, random_eval = baselines.random_encoder_features(
        [train_px, eval_px], backbone, image_size, width, embedding_stages=stages,
        embedding_pool=pool)
    random_init = probe.linear_probe(random_train, train_y, random_eval, eval_y)
    return {'raw_pixels': {'linear_top1': raw['top1'], 'pixels': f'{side}x{side}x3',
                           'num_labels': int(len(train_y))},
            'random_init_encoder': {'linear_top1': random_init['top1'], 'backbone': backbone,
                                    'width_multiplier': width, 'embedding_stages': stages,
                                    'embedding_pool': pool,
                                    'num_labels': int(len(train_y))}}

  @staticmethod
  def _measure_baseline(base, model, images, metrics):
    """(top-1 of the latest blessed model on this data, its uri), or (None, '') if none."""
    if not base:
      metrics['baseline'] = None
      return None, ''
    found = {'model_uri': base.model_uri, 'model_id': base.model_id,
             'saved_model': base.saved_model_dir, 'pushed_version': base.pushed_version}
    if base.model_uri == model.uri or (base.pushed_version < 0 and base.model_id == model.id):
      metrics['baseline'] = dict(found, note='the baseline is this model')
      return metrics['linear_top1'], base.describe()
    serving_fn = io_utils.load_serving_signature(base.saved_model_dir)
    train_images, train_y, eval_images, eval_y = images()
    top1 = probe.linear_probe(io_utils.embed_batches(serving_fn, train_images), train_y,
                              io_utils.embed_batches(serving_fn, eval_images), eval_y)['top1']
    metrics['baseline'] = dict(found, linear_top1=top1)
    metrics['baseline_linear_top1'] = top1
    return top1, base.describe()

  @staticmethod
  def _write_plots(out_dir, metrics, eval_x, eval_y, class_names):
    name_of = lambda c: class_names[c] if 0 <= c < len(class_names) else str(c)
    classes = metrics['confusion_classes']
    plots.confusion_matrix_png(
        os.path.join(out_dir, contract.CONFUSION_PNG), metrics['confusion_matrix'],
        [name_of(c) for c in classes],
        f'linear probe on eval: top-1 {metrics["linear_top1"]:.3f}')
    plots.embedding_map_png(
        os.path.join(out_dir, contract.EMBEDDING_MAP_PNG), eval_x, eval_y,
        {c: name_of(c) for c in classes}, 'eval embeddings (t-SNE), coloured by class')
    plots.write_projector(os.path.join(out_dir, plots.PROJECTOR_DIR), eval_x,
                          [name_of(int(c)) for c in eval_y])
    metrics['files'] = {'confusion_matrix_png': contract.CONFUSION_PNG,
                        'embedding_map_png': contract.EMBEDDING_MAP_PNG,
                        'projector': plots.PROJECTOR_DIR}
