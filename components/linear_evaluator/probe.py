"""Pure evaluation math: a linear probe and a weighted kNN classifier on frozen embeddings."""
from __future__ import annotations

from typing import Dict

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

C_GRID = (0.01, 0.1, 1.0, 10.0)


def _fit(x, y, c):
  return LogisticRegression(C=c, max_iter=2000).fit(x, y)


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, seed: int = 0):
  """Multinomial logistic regression on standardised features; C picked on a held-out 20%
  of the labelled training data, then refitted on all of it. Returns (predict(x), C)."""
  scaler = StandardScaler().fit(train_x)
  tx = scaler.transform(train_x)
  best_c = C_GRID[len(C_GRID) // 2]
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(tx))
  n_val = len(tx) // 5
  val, fit = order[:n_val], order[n_val:]
  if n_val >= 10 and len(np.unique(train_y[fit])) > 1:
    scores = {c: _fit(tx[fit], train_y[fit], c).score(tx[val], train_y[val]) for c in C_GRID}
    best_c = max(C_GRID, key=lambda c: (scores[c], -c))
  classifier = _fit(tx, train_y, best_c)
  return (lambda x: classifier.predict(scaler.transform(x))), best_c


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray,
                 eval_y: np.ndarray, seed: int = 0) -> Dict[str, float]:
  """Fits the probe on train and returns its top-1 on eval (and the chosen C)."""
  predict, best_c = fit_linear_probe(train_x, train_y, seed)
  return {'top1': float(np.mean(predict(eval_x) == eval_y)), 'C': best_c}


def knn_top1(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
             k: int = 200, temperature: float = 0.1) -> float:
  """Weighted kNN on cosine similarity (weights exp(sim / t)), as the SimCLR/InstDisc monitor."""
  def unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

  bank, queries = unit(train_x.astype(np.float32)), unit(eval_x.astype(np.float32))
  classes = np.unique(train_y)
  k = min(k, len(bank))
  correct = 0
  for start in range(0, len(queries), 1024):
    sim = queries[start:start + 1024] @ bank.T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
    votes = np.zeros((len(sim), len(classes)))
    label_pos = np.searchsorted(classes, train_y[top])
    for j in range(k):
      votes[np.arange(len(sim)), label_pos[:, j]] += weights[:, j]
    predicted = classes[np.argmax(votes, axis=1)]
    correct += int(np.sum(predicted == eval_y[start:start + 1024]))
  return correct / max(len(queries), 1)
