"""Pure evaluation math: a linear probe and a weighted kNN classifier on frozen embeddings,
class-balanced label subsets, classification metrics and the blessing decision."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

C_GRID = (0.01, 0.1, 1.0, 10.0)  # ascending: each fit starts from the previous solution


def _fit(x, y, c, start=None):
  """Logistic regression at L2 strength 1/c. start: a fitted model on the same classes to begin
  from (a warm start: the problem is convex, so only the iterations change, not the optimum
  beyond the solver's tolerance; along an ascending C grid this saves most of them).
  BLAS runs on one thread: its products here are small, and next to TensorFlow's thread pools
  in the same process, OpenBLAS's threads wait on each other (4-5x slower measured)."""
  model = LogisticRegression(C=c, max_iter=2000, warm_start=start is not None)
  if start is not None:
    model.coef_, model.intercept_ = start.coef_.copy(), start.intercept_.copy()
  with threadpool_limits(limits=1, user_api='blas'):
    return model.fit(x, y)


class LinearProbe:
  """Multinomial logistic regression on standardised features. The L2 strength (1/C) is picked
  on a held-out 20% of the labelled training data, then the probe is refitted on all of it."""

  def __init__(self, train_x: np.ndarray, train_y: np.ndarray, seed: int = 0,
               groups: Optional[np.ndarray] = None):
    """groups: the source image of each row when rows are augmented copies; the held-out 20%
    is drawn by image, so no copy of a held-out image is fitted on."""
    self.scaler = StandardScaler().fit(train_x)
    tx = self.scaler.transform(train_x)
    self.C = C_GRID[len(C_GRID) // 2]
    groups = np.arange(len(tx)) if groups is None else np.asarray(groups)
    unique = np.unique(groups)
    held = np.random.default_rng(seed).permutation(unique)[:len(unique) // 5]
    in_val = np.isin(groups, held)
    val, fit = np.flatnonzero(in_val), np.flatnonzero(~in_val)
    self.validation_rows, self.fit_rows = val, fit
    n_val = len(held)
    path, previous = {}, None  # C -> the model fitted on the fit rows
    if n_val >= 10 and len(np.unique(train_y[fit])) > 1:
      for c in C_GRID:
        path[c] = previous = _fit(tx[fit], train_y[fit], c, start=previous)
      scores = {c: model.score(tx[val], train_y[val]) for c, model in path.items()}
      self.C = max(C_GRID, key=lambda c: (scores[c], -c))
    start = path.get(self.C)
    same_classes = start is not None and np.array_equal(start.classes_, np.unique(train_y))
    self.classifier = _fit(tx, train_y, self.C, start=start if same_classes else None)
    self.classes = self.classifier.classes_

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.classifier.predict(self.scaler.transform(x))

  def predict_proba(self, x: np.ndarray) -> np.ndarray:
    return self.classifier.predict_proba(self.scaler.transform(x))


def augmented_views(pixels: np.ndarray, copies: int, pad: int = 4, seed: int = 0) -> list:
  """The probe's training augmentation, as in SimCLR's linear evaluation (random crop and
  horizontal flip): the mirror image, then `copies` random crops of the image padded by `pad`
  pixels (reflect), each mirrored with probability 1/2. pixels: [n, H, W, C]."""
  rng = np.random.default_rng(seed)
  n, height, width, _ = pixels.shape
  padded = np.pad(pixels, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  views = [pixels[:, :, ::-1]]
  for _ in range(copies):
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    flip = rng.random(n) < 0.5
    view = np.stack([padded[i, dy[i]:dy[i] + height, dx[i]:dx[i] + width] for i in range(n)])
    view[flip] = view[flip, :, ::-1]
    views.append(view)
  return views


def augmented_linear_probe(train_views: list, train_y: np.ndarray, eval_views: list,
                           eval_y: np.ndarray, seed: int = 0) -> Dict[str, float]:
  """A linear probe fitted on the features of every training view (the first is the plain
  image), scored on the mean class probability over the eval views (plain and mirrored)."""
  n = len(train_y)
  x = np.concatenate(train_views)
  fitted = LinearProbe(x, np.tile(train_y, len(train_views)), seed,
                       groups=np.tile(np.arange(n), len(train_views)))
  proba = sum(fitted.predict_proba(v) for v in eval_views)
  top1 = float(np.mean(fitted.classes[np.argmax(proba, axis=1)] == eval_y))
  return {'top1': top1, 'C': fitted.C, 'train_views': len(train_views),
          'eval_views': len(eval_views)}


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, seed: int = 0):
  """(predict(x), C) of a LinearProbe; kept for callers that only need predictions."""
  fitted = LinearProbe(train_x, train_y, seed)
  return fitted.predict, fitted.C


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray,
                 eval_y: np.ndarray, seed: int = 0) -> Dict[str, float]:
  """Fits the probe on train and returns its top-1 on eval (and the chosen C)."""
  fitted = LinearProbe(train_x, train_y, seed)
  return {'top1': float(np.mean(fitted.predict(eval_x) == eval_y)), 'C': fitted.C}


def classification_metrics(proba: np.ndarray, classes: np.ndarray, labels: np.ndarray,
                           all_classes: Optional[np.ndarray] = None) -> Dict:
  """top-1, top-5 (top-k with k = min(5, classes)), per-class accuracy and the confusion matrix
  (rows: true class, columns: predicted) over `all_classes` (default: the probe's classes).
  An eval label the probe never saw counts as wrong."""
  all_classes = np.asarray(classes if all_classes is None else all_classes)
  ranked = classes[np.argsort(-proba, axis=1)]
  k = min(5, len(classes))
  top1 = ranked[:, 0] == labels
  topk = np.any(ranked[:, :k] == labels[:, None], axis=1)
  index = {c: i for i, c in enumerate(all_classes.tolist())}
  confusion = np.zeros((len(all_classes), len(all_classes)), np.int64)
  for true, pred in zip(labels.tolist(), ranked[:, 0].tolist()):
    if true in index and pred in index:
      confusion[index[true], index[pred]] += 1
  per_class = {}
  for c in all_classes.tolist():
    mask = labels == c
    per_class[str(c)] = float(np.mean(top1[mask])) if mask.any() else None
  return {'top1': float(np.mean(top1)) if len(labels) else 0.0,
          'top5': float(np.mean(topk)) if len(labels) else 0.0, 'top5_k': k,
          'per_class_top1': per_class, 'confusion_matrix': confusion.tolist(),
          'confusion_classes': [int(c) for c in all_classes.tolist()]}


def balanced_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
  """Indices of a class-balanced `fraction` of `labels` (at least one per class), the same on
  every run: each class contributes round(fraction * its count) of its records."""
  if fraction >= 1.0:
    return np.arange(len(labels))
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    take = max(1, int(round(fraction * len(members))))
    chosen.append(rng.permutation(members)[:take])
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros([0], np.int64)


def bless_decision(top1: float, threshold: float, baseline_top1: Optional[float] = None,
                   max_drop: float = 0.0, baseline_uri: str = '') -> Tuple[bool, str]:
  """Blessed only if top-1 reaches the absolute threshold AND, when there is a baseline (the
  latest blessed model, measured on the same data now), top-1 >= baseline - max_drop. A
  negative max_drop demands an improvement of at least -max_drop."""
  if top1 < threshold:
    return False, f'linear_top1 {top1:.4f} < threshold {threshold:.4f}'
  reason = f'linear_top1 {top1:.4f} >= threshold {threshold:.4f}'
  if baseline_top1 is None:
    return True, reason + '; no blessed baseline to compare with'
  floor = baseline_top1 - max_drop
  where = f' ({baseline_uri})' if baseline_uri else ''
  if top1 < floor:
    return False, (f'linear_top1 {top1:.4f} < baseline {baseline_top1:.4f} - max drop '
                   f'{max_drop:.4f} = {floor:.4f}: worse than the latest blessed model{where}')
  return True, (reason + f'; not worse than the latest blessed model{where}: baseline '
                f'{baseline_top1:.4f}, allowed drop {max_drop:.4f}')


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
