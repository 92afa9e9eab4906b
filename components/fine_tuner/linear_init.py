"""The new layer's start (LP-FT, Kumar et al. 2022): the linear probe fitted on the labelled
images' features, folded into the classifier's standardisation and new layer.

With a random new layer, the first steps of fine-tuning send that layer's errors back into the
pretrained encoder and distort the features the probe reads well. Started from the probe, the
classifier begins at the probe's answers on the served (whole, unaugmented) images, and
fine-tuning moves from there. The probe is LinearEvaluator's (probe.LinearProbe: standardised
features, L2 strength picked on a held-out fifth of the labels). Pure NumPy but for the
feature pass.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from components.fine_tuner import classifier as classifier_lib
from components.linear_evaluator import probe

# A class with no labelled image cannot be fitted: it starts this far below the lowest fitted
# bias (never the top answer at first) and is left to fine-tuning.
ABSENT_CLASS_MARGIN = 10.0


def probe_weights(fitted: probe.LinearProbe, num_classes: int):
  """(mean, scale, kernel [D, num_classes], bias) of a fitted probe, over every class index.
  scikit-learn fits one row for two classes (the second class's logit minus the first's); it
  becomes two opposite halves, which give the same probabilities.

  The probe standardises each of the D features to unit variance, so a feature vector has a
  squared norm of about D (1,216 for the cifar preset), and one SGD step on the new layer moves
  the logits by about learning rate x D: at the fine-tuning's rate they explode. The features
  are divided by sqrt(D) more and the kernel multiplied by it: the same logits, a layer that
  trains at the rate the rest of the network does, and the same gradients into the encoder."""
  coef, intercept = fitted.classifier.coef_, fitted.classifier.intercept_
  if coef.shape[0] == 1:
    coef, intercept = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-1, 1]) * intercept[0] / 2
  kernel = np.zeros([coef.shape[1], num_classes])
  bias = np.full([num_classes], intercept.min() - ABSENT_CLASS_MARGIN)
  kernel[:, fitted.classes] = coef.T
  bias[fitted.classes] = intercept
  root = np.sqrt(coef.shape[1])
  return fitted.scaler.mean_, fitted.scaler.scale_ * root, kernel * root, bias


def init_from_probe(classifier, batches, num_classes: int) -> Dict:
  """Fits the probe on the features of `batches` ((images, labels), as served) and sets the
  classifier's new layer to it; returns what was fitted."""
  features = classifier_lib.features_model(classifier)
  xs, ys = [], []
  for images, labels in batches:
    xs.append(np.asarray(features(images, training=False), np.float64))
    ys.append(np.asarray(labels))
  x, y = np.concatenate(xs), np.concatenate(ys)
  fitted = probe.LinearProbe(x, y)
  classifier_lib.set_linear_layer(classifier, *probe_weights(fitted, num_classes))
  return {'features': int(x.shape[1]), 'images': int(len(y)), 'probe_C': float(fitted.C),
          'probe_train_top1': float(np.mean(fitted.predict(x) == y))}
