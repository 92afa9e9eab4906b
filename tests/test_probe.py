"""The evaluation math on data whose answer is known."""
import numpy as np
import pytest

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


def test_classification_metrics_top5_per_class_and_confusion():
  classes = np.array([0, 1, 2, 3, 4, 5])
  # Three eval images: true 0 ranked first; true 1 ranked second; true 2 ranked last.
  proba = np.array([[.5, .1, .1, .1, .1, .1],
                    [.4, .3, .1, .1, .05, .05],
                    [.3, .2, .0, .2, .2, .1]])
  scores = probe.classification_metrics(proba, classes, np.array([0, 1, 2]))
  assert scores['top1'] == pytest.approx(1 / 3)
  assert scores['top5'] == pytest.approx(2 / 3) and scores['top5_k'] == 5
  assert scores['per_class_top1'] == {'0': 1.0, '1': 0.0, '2': 0.0, '3': None, '4': None,
                                      '5': None}
  confusion = np.array(scores['confusion_matrix'])
  assert confusion[0, 0] == 1 and confusion[1, 0] == 1 and confusion[2, 0] == 1
  assert confusion.sum() == 3


def test_balanced_subset_takes_the_fraction_of_every_class_deterministically():
  labels = np.array([0] * 100 + [1] * 50 + [2] * 3)
  subset = probe.balanced_subset(labels, 0.1, seed=3)
  counts = np.bincount(labels[subset])
  assert counts.tolist() == [10, 5, 1]  # at least one per class
  assert np.array_equal(subset, probe.balanced_subset(labels, 0.1, seed=3))
  assert len(probe.balanced_subset(labels, 1.0)) == len(labels)


@pytest.mark.parametrize('top1,baseline,max_drop,blessed,phrase', [
    (0.40, None, 0.02, False, '< threshold'),
    (0.80, None, 0.02, True, 'no blessed baseline'),
    (0.79, 0.80, 0.02, True, 'not worse than the latest blessed model'),
    (0.77, 0.80, 0.02, False, 'worse than the latest blessed model'),
    (0.81, 0.80, -0.05, False, 'worse than the latest blessed model'),  # demands +5 points
    (0.86, 0.80, -0.05, True, 'not worse'),
])
def test_bless_decision(top1, baseline, max_drop, blessed, phrase):
  decision, reason = probe.bless_decision(top1, 0.5, baseline, max_drop, 'uri://base')
  assert decision is blessed and phrase in reason


def test_augmented_views_are_mirrors_and_shifted_crops_of_the_image():
  rng = np.random.default_rng(1)
  pixels = rng.integers(0, 255, size=(6, 12, 12, 3)).astype(np.float32)
  views = probe.augmented_views(pixels, copies=3, pad=2, seed=0)
  assert len(views) == 4 and all(v.shape == pixels.shape for v in views)
  np.testing.assert_array_equal(views[0], pixels[:, :, ::-1])
  padded = np.pad(pixels, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='reflect')
  for view in views[1:]:
    for i in range(len(pixels)):  # each copy is a window of the padded image, maybe mirrored
      found = any(np.array_equal(candidate, padded[i, y:y + 12, x:x + 12])
                  for y in range(5) for x in range(5)
                  for candidate in (view[i], view[i, :, ::-1]))
      assert found


def test_the_augmented_probe_holds_out_whole_images_when_picking_c():
  """With copies of each image, a row-wise hold-out would score C on copies of fitted images."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(100, 5))
  y = rng.integers(0, 2, 100)
  copies = [x + 0.01 * rng.normal(size=x.shape) for _ in range(3)]
  groups = np.tile(np.arange(100), 3)
  fitted = probe.LinearProbe(np.concatenate(copies), np.tile(y, 3), groups=groups)
  held_out = set(groups[fitted.validation_rows])
  assert len(held_out) == 20 and len(fitted.validation_rows) == 60
  assert not held_out & set(groups[fitted.fit_rows])
  result = probe.augmented_linear_probe(copies, y, [x, x], y)
  assert result['train_views'] == 3 and result['eval_views'] == 2 and 0 <= result['top1'] <= 1
