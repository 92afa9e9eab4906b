"""FineTuner's pieces without a pipeline: the distillation loss against a NumPy transcription of
its formula, the calibration error against a hand count, the classifier metrics, the stage loop's
resume, the classifier's architecture and its served signature, and the settings' checks."""
import numpy as np
import pytest
import tensorflow as tf

from components.classifier_evaluator import metrics
from components.errors import ConfigError
from components.fine_tuner import classifier as classifier_lib, contract, data, linear_init, stages
from components.linear_evaluator import probe
from components.simclr_trainer import model as model_lib
from components.fine_tuner.params import FineTunerParams


def _softmax(x):
  e = np.exp(x - x.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def reference_distillation(s, t, y, m, temperature, w):
  """The formula of stages.py in float64, one image at a time."""
  p_t, log_p_s = _softmax(t / temperature), np.log(_softmax(s / temperature))
  soft = np.mean([-(p_t[i] * log_p_s[i]).sum() for i in range(len(s))]) * temperature ** 2
  ce = -np.log(_softmax(s)[np.arange(len(s)), y])
  hard = (m * ce).sum() / max(1.0, m.sum())
  return (1 - w) * soft + w * hard


@pytest.mark.parametrize('temperature,w', [(1.0, 0.5), (2.0, 0.0), (0.5, 1.0)])
def test_distillation_loss_matches_its_formula(temperature, w):
  rng = np.random.default_rng(int(temperature * 10))
  s, t = rng.normal(size=(6, 4)) * 3, rng.normal(size=(6, 4)) * 3
  y = rng.integers(0, 4, 6)
  m = np.array([1, 0, 1, 0, 0, 1], np.float64)
  got = float(stages.distillation_loss(tf.constant(s, tf.float32), tf.constant(t, tf.float32),
                                       tf.constant(y), tf.constant(m, tf.float32), temperature, w))
  assert got == pytest.approx(reference_distillation(s, t, y, m, temperature, w), rel=1e-5)


def test_distillation_without_labels_in_the_batch_is_the_soft_term_alone():
  s, t = tf.constant([[2.0, 0.0]]), tf.constant([[0.0, 2.0]])
  only_soft = stages.distillation_loss(s, t, tf.constant([0]), tf.constant([0.0]), 1.0, 0.5)
  assert float(only_soft) == pytest.approx(0.5 * reference_distillation(
      s.numpy(), t.numpy(), np.array([0]), np.array([0.0]), 1.0, 0.0), rel=1e-6)


def test_expected_calibration_error_by_hand():
  # Two bins: (0, 0.5] holds 0.2 (wrong) and 0.4 (right): accuracy 0.5, confidence 0.3;
  # (0.5, 1] holds 0.9, 0.9 (right) and 0.6 (wrong): accuracy 2/3, confidence 0.8.
  confidence = np.array([0.2, 0.4, 0.9, 0.9, 0.6])
  correct = np.array([0, 1, 1, 1, 0])
  expected = 2 / 5 * abs(0.5 - 0.3) + 3 / 5 * abs(2 / 3 - 0.8)
  assert metrics.expected_calibration_error(confidence, correct, 2) == pytest.approx(expected)
  # A perfectly calibrated answer set scores 0; an over-confident wrong one its confidence.
  assert metrics.expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1]), 10) == 0
  assert metrics.expected_calibration_error(np.array([0.95]), np.array([0]), 10) == \
      pytest.approx(0.95)


def test_classifier_metrics_per_class_and_confusion():
  out = metrics.classifier_metrics(np.array([0, 1, 1, 2]), np.array([0.9, 0.8, 0.7, 0.6]),
                                   np.array([0, 1, 2, 2]), ['cat', 'dog', 'eel'], bins=10)
  assert out['top1'] == 0.75 and out['num_eval'] == 4
  assert out['per_class_top1'] == {'cat': 1.0, 'dog': 1.0, 'eel': 0.5}
  assert out['confusion_matrix'] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_the_classifier_is_the_encoder_the_first_head_layer_and_a_new_layer():
  model, encoder, head = classifier_lib.build_classifier('resnet_small', 16, 0.25, 7,
                                                         head_layers=3, projection_dim=8)
  assert model.output_shape == (None, 7)
  shared = {id(w) for w in model.weights}
  first = head.get_layer('head_dense1').kernel
  assert id(first) in shared  # pretrained, fine-tuned
  assert id(head.get_layer('head_out').kernel) not in shared  # the rest of the head is not used
  assert all(id(w) in shared for w in encoder.weights)


def test_the_new_layer_reads_the_served_embedding_and_the_first_head_layer():
  model, _, _ = classifier_lib.build_classifier('resnet_small', 16, 0.25, 5, head_layers=2,
                                                embedding_stages=2, embedding_pool='avg_max')
  embedder = model_lib.build_embedder(model_lib.build_encoder('resnet_small', 16, 0.25),
                                     'resnet_small', 2, 'avg_max')
  served, h = embedder.output_shape[0][-1], embedder.output_shape[1][-1]
  assert classifier_lib.features_model(model).output_shape == (None, served + h)


@pytest.mark.parametrize('classes,num_classes', [((0, 1, 2, 3), 4), ((0, 1), 2), ((0, 2, 3), 5)])
def test_the_probe_folded_into_the_new_layer_gives_the_probes_probabilities(classes,
                                                                           num_classes):
  """Multinomial, two classes (scikit-learn's one row) and classes without a label (1 and 4)."""
  rng = np.random.default_rng(len(classes))
  y = np.array(classes * 30)
  x = rng.normal(size=(len(y), 6)) * rng.uniform(0.1, 20, size=6) + rng.normal(size=6) * 5
  x[:, :2] += y[:, None] * 2.0  # two features carry the class
  fitted = probe.LinearProbe(x, y)
  mean, scale, kernel, bias = linear_init.probe_weights(fitted, num_classes)
  logits = ((x - mean) / scale) @ kernel + bias
  got = _softmax(logits)
  present = got[:, list(classes)]
  np.testing.assert_allclose(present / present.sum(axis=1, keepdims=True),
                             fitted.predict_proba(x), atol=1e-6)
  absent = sorted(set(range(num_classes)) - set(classes))
  assert np.all(got[:, absent] < 1e-3)


def test_init_from_probe_makes_the_classifier_answer_as_the_probe_on_its_features():
  model, _, _ = classifier_lib.build_classifier('resnet_small', 8, 0.25, 3)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(60, 8, 8, 3)).astype(np.float32)
  y = np.arange(60) % 3
  x[:, :, :, 0] += y[:, None, None]  # a class signal the random encoder passes on
  batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 60, 16)]
  fitted = linear_init.init_from_probe(model, batches, 3)
  assert fitted['images'] == 60
  features = np.asarray(classifier_lib.features_model(model)(x, training=False), np.float64)
  reference = probe.LinearProbe(features, y)
  np.testing.assert_allclose(_softmax(np.asarray(model(x, training=False), np.float64)),
                             reference.predict_proba(features), atol=1e-4)


def _tiny_stage(tmp_path, max_steps, fail_at=None, learning_rate=0.1):
  model, _, _ = classifier_lib.build_classifier('resnet_small', 8, 0.25, 3)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
  y = rng.integers(0, 3, 64)

  def make_data(start):
    batches = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
    if fail_at is None:
      return batches
    return batches.enumerate(start).map(
        lambda i, b: (tf.debugging.assert_less(i, tf.constant(fail_at, tf.int64)), b)[1])

  def loss_fn(m, batch):
    logits = m(batch[0], training=True)
    correct = tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == batch[1], tf.float32))
    return tf.reduce_mean(stages.cross_entropy(batch[1], logits)), correct

  return model, stages.Stage(
      name='finetuned', model=model, make_data=make_data, loss_fn=loss_fn, batch_size=8,
      max_steps=max_steps, minutes=0.0, learning_rate=learning_rate,
      rate_setting='finetune_learning_rate', weight_decay=1e-4,
      checkpoint_dir=str(tmp_path / 'ckpt'), events_dir=str(tmp_path / 'events'),
      checkpoint_every=2)


def test_a_stage_killed_mid_way_resumes_from_its_checkpoint_and_a_finished_one_only_restores(
    tmp_path):
  _, crashing = _tiny_stage(tmp_path, max_steps=6, fail_at=3)
  with pytest.raises(tf.errors.InvalidArgumentError):
    stages.run(crashing)  # dies in step 4's batch: the checkpoint of step 2 is the latest
  model, stage = _tiny_stage(tmp_path, max_steps=6)
  resumed = stages.run(stage)
  assert resumed['resumed_from_step'] == 2 and resumed['steps'] == 6
  trained = [w.copy() for w in model.get_weights()]
  model, stage = _tiny_stage(tmp_path, max_steps=6)
  again = stages.run(stage)
  assert again['resumed_from_step'] == 6 and again['steps'] == 6
  for a, b in zip(trained, model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_a_stage_whose_loss_is_no_longer_finite_stops_naming_its_rate_setting(tmp_path):
  _, stage = _tiny_stage(tmp_path, max_steps=50, learning_rate=1e30)
  with pytest.raises(FloatingPointError, match='finetune_learning_rate'):
    stages.run(stage)


def test_the_fine_tuning_views_keep_crop_and_flip_and_drop_colour_unless_asked():
  policy = {'image_size': 32, 'crop_size': 16, 'horizontal_flip': True,
            'random_resized_crop': {'scale': [0.2, 1.0], 'ratio': [0.75, 1.33]},
            'color_jitter': {'prob': 0.8, 'strength': 0.5}, 'grayscale_prob': 0.2,
            'gaussian_blur': {'prob': 0.5, 'sigma': [0.1, 2.0], 'kernel_fraction': 0.1},
            'solarize': {'prob': 0.1, 'threshold': 0.5}}
  view = data.view_policy(policy, 'crop_flip')
  assert view['crop_size'] == 32 and view['horizontal_flip']  # at the served size
  assert view['random_resized_crop'] == policy['random_resized_crop']
  assert (view['color_jitter']['prob'], view['grayscale_prob'], view['gaussian_blur']['prob'],
          view['solarize']['prob']) == (0.0, 0.0, 0.0, 0.0)
  full = data.view_policy(policy, 'simclr')
  assert full['color_jitter'] == policy['color_jitter'] and full['crop_size'] == 32


def test_settings_are_checked_all_at_once():
  with pytest.raises(ConfigError) as error:
    FineTunerParams.from_json(FineTunerParams(
        finetune_label_fraction=0.0, distill_backbone='vgg', finetune_augmentation='mixup',
        distill_label_weight=1.5).to_json())
  for name in ('finetune_label_fraction', 'distill_backbone', 'finetune_augmentation',
               'distill_label_weight'):
    assert name in str(error.value)
  assert FineTunerParams().served() == 'distilled'
  assert FineTunerParams(distill_epochs=0).served() == 'finetuned'
  assert 'classifier_top_k' not in FineTunerParams().fingerprint()
  assert contract.stage_dir('/r/', 'distilled') == '/r/models/distilled'


def test_a_stage_with_a_time_budget_plans_its_steps_and_a_rerun_keeps_the_plan(tmp_path):
  _, stage = _tiny_stage(tmp_path, max_steps=100_000)
  stage.minutes = 0.2  # 12 seconds: stopped at the budget, long before 100,000 steps
  first = stages.run(stage)
  assert 0 < first['steps'] < 100_000 and first['train_seconds'] < 12 + 10
  _, again = _tiny_stage(tmp_path, max_steps=100_000)
  again.minutes = 0.2
  second = stages.run(again)
  assert second['resumed_from_step'] == first['steps'] == second['steps']
