"""NT-Xent against a direct NumPy transcription of the SimCLR paper's formula."""
import numpy as np
import pytest
import tensorflow as tf

from components.simclr_trainer import losses


def reference_nt_xent(z_a, z_b, temperature, decoupled=False):
  """Eq. (1) of Chen et al. 2020, summed over all 2N anchors and averaged, in float64.
  decoupled: the DCL form (Yeh et al. 2022), the positive left out of the denominator."""
  z = np.concatenate([z_a, z_b]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  n = n2 // 2
  sim = z @ z.T / temperature
  total = 0.0
  for i in range(n2):
    positive = (i + n) % n2
    left_out = (i, positive) if decoupled else (i,)
    denominator = sum(np.exp(sim[i, k]) for k in range(n2) if k not in left_out)
    total += -np.log(np.exp(sim[i, positive]) / denominator)
  return total / n2


@pytest.mark.parametrize('decoupled', [False, True])
@pytest.mark.parametrize('n,d,temperature', [(2, 3, 0.5), (8, 16, 0.1), (32, 8, 1.0)])
def test_matches_paper_formula(n, d, temperature, decoupled):
  rng = np.random.default_rng(n * 7 + d)
  z_a, z_b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  got = float(losses.nt_xent_loss(tf.constant(z_a, tf.float32), tf.constant(z_b, tf.float32),
                                  temperature, decoupled=decoupled))
  assert got == pytest.approx(reference_nt_xent(z_a, z_b, temperature, decoupled), rel=1e-4,
                              abs=1e-5)


def test_decoupled_loss_is_lower():
  """Leaving the positive out of the denominator always lowers the loss: log(a + b) > log(b)."""
  rng = np.random.default_rng(3)
  z_a, z_b = (tf.constant(rng.normal(size=(8, 4)), tf.float32) for _ in range(2))
  assert float(losses.nt_xent_loss(z_a, z_b, 0.1, decoupled=True)) < float(
      losses.nt_xent_loss(z_a, z_b, 0.1))


def test_scale_invariant_and_low_for_aligned_views():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(16, 32)).astype(np.float32)
  aligned = float(losses.nt_xent_loss(z, z * 3.0, 0.1))  # L2-normalised: scale is irrelevant
  shuffled = float(losses.nt_xent_loss(z, z[::-1].copy(), 0.1))
  assert aligned == pytest.approx(float(losses.nt_xent_loss(z, z, 0.1)), rel=1e-5)
  assert aligned < shuffled


def test_float16_inputs_are_computed_in_float32():
  rng = np.random.default_rng(1)
  z_a, z_b = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
  loss = losses.nt_xent_loss(tf.constant(z_a, tf.float16), tf.constant(z_b, tf.float16), 0.05)
  assert loss.dtype == tf.float32
  assert float(loss) == pytest.approx(reference_nt_xent(z_a, z_b, 0.05), rel=2e-2)


def test_gradient_is_finite_with_small_temperature():
  z_a = tf.Variable(np.random.default_rng(2).normal(size=(8, 4)), dtype=tf.float32)
  z_b = tf.Variable(np.random.default_rng(3).normal(size=(8, 4)), dtype=tf.float32)
  with tf.GradientTape() as tape:
    loss = losses.nt_xent_loss(z_a, z_b, 0.01)
  grads = tape.gradient(loss, [z_a, z_b])
  assert all(np.isfinite(g.numpy()).all() for g in grads)


def test_contrastive_accuracy_counts_positive_ranked_first():
  z = np.eye(4, dtype=np.float32)
  assert float(losses.contrastive_accuracy(z, z)) == 1.0
  assert float(losses.contrastive_accuracy(z, z[[1, 0, 2, 3]])) == 0.5


def test_queue_negatives_enter_every_denominator():
  rng = np.random.default_rng(4)
  z_a, z_b, queue = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), rng.normal(size=(10, 5))
  t = 0.2

  def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)

  z = unit(np.concatenate([z_a, z_b]))
  q = unit(queue)
  total = 0.0
  for i in range(12):
    others = [k for k in range(12) if k != i]
    denominator = (sum(np.exp(z[i] @ z[k] / t) for k in others)
                   + sum(np.exp(z[i] @ qk / t) for qk in q))
    total += -np.log(np.exp(z[i] @ z[(i + 6) % 12] / t) / denominator)
  got = losses.nt_xent_loss(tf.constant(z_a, tf.float32), tf.constant(z_b, tf.float32), t,
                            negatives=tf.constant(queue, tf.float32))
  assert float(got) == pytest.approx(total / 12, rel=1e-4)
  assert float(got) > float(losses.nt_xent_loss(z_a.astype(np.float32),
                                                 z_b.astype(np.float32), t))


def test_gradient_matches_finite_differences_of_the_reference():
  rng = np.random.default_rng(5)
  z_a, z_b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  t = 0.5
  var = tf.Variable(z_a, dtype=tf.float32)
  with tf.GradientTape() as tape:
    loss = losses.nt_xent_loss(var, tf.constant(z_b, tf.float32), t)
  analytic = tape.gradient(loss, var).numpy()
  numeric = np.zeros_like(z_a)
  eps = 1e-5
  for i in range(z_a.shape[0]):
    for j in range(z_a.shape[1]):
      plus, minus = z_a.copy(), z_a.copy()
      plus[i, j] += eps
      minus[i, j] -= eps
      numeric[i, j] = (reference_nt_xent(plus, z_b, t) - reference_nt_xent(minus, z_b, t)) / (2 * eps)
  np.testing.assert_allclose(analytic, numeric, atol=2e-4, rtol=1e-3)



@pytest.mark.parametrize('decoupled', [False, True])
def test_multi_crop_loss_is_the_mean_over_view_and_crop_pairs(decoupled):
  rng = np.random.default_rng(11)
  n, d, count, t = 6, 5, 3, 0.2
  z_a, z_b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  crops = [rng.normal(size=(n, d)) for _ in range(count)]
  expected = np.mean([reference_nt_xent(z_a, z_b, t, decoupled)] +
                     [reference_nt_xent(g, c, t, decoupled) for c in crops for g in (z_a, z_b)])
  got = float(losses.multi_crop_loss(
      tf.constant(z_a, tf.float32), tf.constant(z_b, tf.float32),
      tf.constant(np.concatenate(crops), tf.float32), count, t, decoupled=decoupled))
  assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
