"""A classifier's numbers on labelled eval images (NumPy only): top-1, top-1 per class, the
expected calibration error and the confusion matrix.

Expected calibration error (Guo et al. 2017), over B equal-width bins of the top-1 confidence:
  ECE = sum_b (n_b / N) * | accuracy_b - mean confidence_b |
where bin b holds the n_b answers whose confidence lies in ((b-1)/B, b/B].
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
  confidence = np.asarray(confidence, np.float64)
  correct = np.asarray(correct, np.float64)
  if not len(confidence):
    return 0.0
  which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  total = 0.0
  for b in range(bins):
    members = which == b
    if members.any():
      total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
  return float(total / len(confidence))


def classifier_metrics(predicted: np.ndarray, confidence: np.ndarray, labels: np.ndarray,
                       class_names: Sequence[str], bins: int) -> Dict:
  """predicted: class index per image; confidence: its probability; labels: the truth. The
  confusion matrix's rows are true classes, its columns predicted ones, in class-index order."""
  predicted, labels = np.asarray(predicted, np.int64), np.asarray(labels, np.int64)
  correct = predicted == labels
  count = len(class_names)
  confusion = np.zeros((count, count), np.int64)
  for true, guess in zip(labels.tolist(), predicted.tolist()):
    if 0 <= true < count and 0 <= guess < count:
      confusion[true, guess] += 1
  per_class = {name: (float(correct[labels == c].mean()) if np.any(labels == c) else None)
               for c, name in enumerate(class_names)}
  return {'top1': float(correct.mean()) if len(labels) else 0.0,
          'per_class_top1': per_class,
          'ece': expected_calibration_error(confidence, correct, bins),
          'confusion_matrix': confusion.tolist(), 'num_eval': int(len(labels))}
