"""ClassifierEvaluator executor: the four models of the semi-supervised comparison on the same
labelled eval images, and the served classifier's blessing.

- the linear probe on the Embedder's embeddings of the pretrained encoder, trained on the same
  labels as the classifiers (the labelled train records in content-hash order, the same
  class-balanced share: fine_tuner/data.py);
- the fine-tuned, distilled and supervised-from-scratch models, each through its exported
  `serving_default` on the raw image bytes (the served classifier through the very SavedModel
  the Pusher publishes).
Blessed only if the served classifier's top-1 reaches bless_min_classifier_top1 and is at least
the linear probe's.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import io_utils
from components.classifier_evaluator import contract, metrics as metrics_lib
from components.classifier_evaluator.params import ClassifierEvaluatorParams
from components.embedder import contract as embedder_contract
from components.fine_tuner import contract as finetune_contract
from components.linear_evaluator import contract as evaluator_contract, plots, probe
from components.params import EXEC_PROPERTY


def probe_predictions(embeddings_uri: str, fraction: float):
  """(predicted class, its probability, eval labels) of the linear probe trained on the chosen
  share of the labelled train embeddings."""
  train_x, train_y = io_utils.read_labelled_embeddings(
      embedder_contract.split_dir(embeddings_uri, 'train'))
  eval_x, eval_y = io_utils.read_labelled_embeddings(
      embedder_contract.split_dir(embeddings_uri, 'eval'))
  keep = probe.balanced_subset(train_y, fraction)
  fitted = probe.LinearProbe(train_x[keep], train_y[keep])
  proba = fitted.predict_proba(eval_x)
  return fitted.classes[np.argmax(proba, 1)], proba.max(1), eval_y


def served_predictions(saved_model_dir: str, image_batches):
  """(top-1 class index, its probability) of a classifier SavedModel's serving_default."""
  serve = io_utils.load_serving_signature(saved_model_dir)  # the classifier's serving_default
  ids, probabilities = [], []
  for batch in image_batches:
    out = serve(**{finetune_contract.SERVING_INPUT: batch})
    ids.append(out[finetune_contract.CLASS_IDS_OUTPUT].numpy()[:, 0])
    probabilities.append(out[finetune_contract.PROBABILITIES_OUTPUT].numpy()[:, 0])
  return np.concatenate(ids), np.concatenate(probabilities)


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    params = ClassifierEvaluatorParams.from_json(exec_properties[EXEC_PROPERTY])
    examples = artifact_utils.get_single_instance(input_dict['examples'])
    classifier = artifact_utils.get_single_instance(input_dict['classifier'])
    run = artifact_utils.get_single_instance(input_dict['finetune_run'])
    embeddings = artifact_utils.get_single_instance(input_dict['embeddings'])
    evaluation = artifact_utils.get_single_instance(output_dict['evaluation'])
    blessing = artifact_utils.get_single_instance(output_dict['blessing'])
    names = json.loads(classifier.get_string_custom_property(finetune_contract.CLASS_NAMES))
    served = classifier.get_string_custom_property(finetune_contract.SERVED_STAGE)
    fraction = classifier.get_float_custom_property(finetune_contract.LABEL_FRACTION)
    score = lambda ids, conf, y: metrics_lib.classifier_metrics(ids, conf, y, names,
                                                                params.calibration_bins)
    models = {'linear_probe': score(*probe_predictions(embeddings.uri, fraction))}
    images, labels = io_utils.read_labelled(artifact_utils.get_split_uri([examples], 'eval'))
    for stage in finetune_contract.STAGES:
      saved = (path_utils.serving_model_path(classifier.uri) if stage == served
               else finetune_contract.stage_dir(run.uri, stage))
      if tf.io.gfile.exists(os.path.join(saved, 'saved_model.pb')):
        models[stage] = score(*served_predictions(saved, images), labels)
    result = self._bless(models, served, params)
    result.update(models=models, served_model=served, class_names=names,
                  label_fraction=fraction, classifier_uri=classifier.uri,
                  num_labels=classifier.get_int_custom_property(finetune_contract.NUM_LABELS),
                  encoder_model_uri=classifier.get_string_custom_property(
                      finetune_contract.ENCODER_MODEL_URI))
    plots.confusion_matrix_png(
        os.path.join(evaluation.uri, contract.CONFUSION_PNG), models[served]['confusion_matrix'],
        names, f'{served} classifier on eval: top-1 {models[served]["top1"]:.3f}')
    io_utils.write_json(os.path.join(evaluation.uri, contract.METRICS_FILE), result)
    self._record(evaluation, blessing, classifier, result)
    logging.info('ClassifierEvaluator: top-1 %s on %d eval images -> %s (%s)',
                 ', '.join(f'{m} {v["top1"]:.4f}' for m, v in models.items()), len(labels),
                 'BLESSED' if result['blessed'] else 'NOT BLESSED', result['blessing_reason'])

  @staticmethod
  def _bless(models, served, params):
    top1, probe_top1 = models[served]['top1'], models['linear_probe']['top1']
    minimum = params.bless_min_classifier_top1
    if top1 < minimum:
      reason = f'{served} classifier top-1 {top1:.4f} < threshold {minimum:.4f}'
    elif top1 < probe_top1:
      reason = f'{served} classifier top-1 {top1:.4f} < the linear probe\'s {probe_top1:.4f}'
    else:
      reason = (f'{served} classifier top-1 {top1:.4f} >= threshold {minimum:.4f} and >= the '
                f'linear probe\'s {probe_top1:.4f}')
      return {'blessed': True, 'blessing_reason': reason}
    return {'blessed': False, 'blessing_reason': reason}

  @staticmethod
  def _record(evaluation, blessing, classifier, result) -> None:
    """The properties of both outputs, and the BLESSED / NOT_BLESSED file TFX reads."""
    for model, values in result['models'].items():
      evaluation.set_float_custom_property(contract.top1(model), values['top1'])
      evaluation.set_float_custom_property(contract.ece(model), values['ece'])
    evaluation.set_string_custom_property(contract.SERVED_MODEL, result['served_model'])
    blessed, reason = result['blessed'], result['blessing_reason']
    for artifact in (evaluation, blessing):
      artifact.set_int_custom_property(evaluator_contract.BLESSED, int(blessed))
    evaluation.set_string_custom_property(evaluator_contract.BLESSING_REASON, reason)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, 'BLESSED' if blessed else 'NOT_BLESSED'),
                           'w') as f:
      f.write(reason + '\n')
    blessing.set_string_custom_property(evaluator_contract.CURRENT_MODEL, classifier.uri)
    blessing.set_int_custom_property(evaluator_contract.CURRENT_MODEL_ID, classifier.id)
    blessing.set_string_custom_property(evaluator_contract.REASON, reason)
