"""The evaluation math on data whose answer is known."""
import numpy as np

from components.linear_evaluator import probe


def clusters(n_per_class, classes, dim, spread, seed):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, dim)) * 3
  y = np.repeat(np.arange(classes), n_per_class)
  return centres[y] + rng.normal(size=(len(y), dim)) * spread, y


def test_separable_classes_are_learned_and_noise_is_not():
  train_x, train_y = clusters(50, 4, 8, 0.3, 0)
  eval_x, eval_y = clusters(20, 4, 8, 0.3, 0)
  assert probe.linear_probe(train_x, train_y, eval_x, eval_y)['top1'] > 0.95
  assert probe.knn_top1(train_x, train_y, eval_x, eval_y, k=10) > 0.95
  rng = np.random.default_rng(1)
  noise_y = rng.integers(0, 4, size=len(train_y))
  assert probe.linear_probe(rng.normal(size=train_x.shape), noise_y, eval_x, eval_y)['top1'] < 0.5


def test_knn_weighted_vote():
  bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
  labels = np.array([0, 0, 1])
  assert probe.knn_top1(bank, labels, np.array([[1.0, 0.05]]), np.array([0]), k=3) == 1.0
  assert probe.knn_top1(bank, labels, np.array([[0.05, 1.0]]), np.array([1]), k=1) == 1.0
