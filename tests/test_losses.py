"""Tests of the DTL loss: hand computations, extremes, validation."""

import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import losses

LOGITS = np.array([[0.5, -1.0, 2.0], [-2.0, 0.3, -0.7], [1.5, 1.0, 0.0]], np.float32)
LABELS = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1]], np.float32)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _bce(y, p):
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_chained_loss_by_hand():
  loss = losses.DTLLoss(num_steps=3, chained=True)
  p = np.cumprod(_sigmoid(LOGITS), axis=1)
  expected = _bce(LABELS, p).sum(1)
  np.testing.assert_allclose(loss.per_example(LABELS, LOGITS).numpy(), expected, rtol=1e-5)
  np.testing.assert_allclose(float(loss(LABELS, LOGITS)), expected.mean(), rtol=1e-5)


def test_independent_loss_with_step_weights_and_calibrator_by_hand():
  loss = losses.DTLLoss(
    num_steps=3, chained=False, step_weights=(1.0, 2.0, 0.5), calibration_weight=0.6
  )
  p = _sigmoid(LOGITS)
  expected = (_bce(LABELS, p) * [1.0, 2.0, 0.5]).sum(1) + 0.6 * np.maximum(
    p[:, 1:] - p[:, :-1], 0
  ).sum(1)
  assert (np.maximum(p[:, 1:] - p[:, :-1], 0).sum(1) > 0).any()
  np.testing.assert_allclose(loss.per_example(LABELS, LOGITS).numpy(), expected, rtol=1e-5)


def test_conditional_term_by_hand():
  loss = losses.DTLLoss(num_steps=3, chained=True, conditional_weight=0.3)
  q = _sigmoid(LOGITS)
  p = np.cumprod(q, axis=1)
  conditional = (LABELS[:, :-1] * _bce(LABELS[:, 1:], q[:, 1:])).sum(1)
  expected = _bce(LABELS, p).sum(1) + 0.3 * conditional
  np.testing.assert_allclose(loss.per_example(LABELS, LOGITS).numpy(), expected, rtol=1e-5)


def test_likelihood_form_is_the_chain_negative_log_likelihood():
  # -log P(y_1..y_T) = BCE(y_1, q_1) + sum_{t>1} y_{t-1} BCE(y_t, q_t), by hand.
  loss = losses.DTLLoss(3, chained=True, entire_space_weight=0.0, conditional_weight=1.0)
  q = _sigmoid(LOGITS)
  nll = []
  for y, qs in zip(LABELS, q):
    log_prob, alive = 0.0, True
    for t in range(3):
      if not alive:
        break
      log_prob += np.log(qs[t]) if y[t] else np.log(1 - qs[t])
      alive = bool(y[t])
    nll.append(-log_prob)
  np.testing.assert_allclose(loss.per_example(LABELS, LOGITS).numpy(), nll, rtol=1e-5)


def test_step_weights_weigh_every_term_of_their_step():
  loss = losses.DTLLoss(
    3, chained=True, step_weights=(1.0, 2.0, 0.5), entire_space_weight=0.7, conditional_weight=0.3
  )
  q = _sigmoid(LOGITS)
  p = np.cumprod(q, axis=1)
  es = _bce(LABELS, p)
  cond = LABELS[:, :-1] * _bce(LABELS[:, 1:], q[:, 1:])
  expected = (
    es[:, 0] + 2.0 * (0.7 * es[:, 1] + 0.3 * cond[:, 0]) + 0.5 * (0.7 * es[:, 2] + 0.3 * cond[:, 1])
  )
  np.testing.assert_allclose(loss.per_example(LABELS, LOGITS).numpy(), expected, rtol=1e-5)


def test_parent_normalization_averages_each_conditional_term_over_its_parents():
  loss = losses.DTLLoss(
    3,
    chained=True,
    entire_space_weight=0.0,
    conditional_weight=1.0,
    conditional_normalization="parents",
  )
  q = _sigmoid(LOGITS)
  cond = LABELS[:, :-1] * _bce(LABELS[:, 1:], q[:, 1:])
  parents = LABELS[:, :-1].sum(0)  # clicks 2, purchases 1 of 3 rows
  expected = _bce(LABELS[:, 0], q[:, 0]) + (cond * (3 / parents)).sum(1)
  np.testing.assert_allclose(loss.per_example(LABELS, LOGITS).numpy(), expected, rtol=1e-5)
  # The batch mean of a conditional term is then the mean over its parent rows.
  np.testing.assert_allclose(
    float(tf.reduce_mean(loss.per_example(LABELS, LOGITS))),
    _bce(LABELS[:, 0], q[:, 0]).mean() + (cond.sum(0) / parents).sum(),
    rtol=1e-5,
  )
  # A batch without parents adds nothing (no division by zero).
  none = np.zeros_like(LABELS)
  np.testing.assert_allclose(loss.per_example(none, LOGITS).numpy(), _bce(0.0, q[:, 0]), rtol=1e-5)


def test_calibrator_is_zero_for_chained_heads():
  logits = tf.random.stateless_normal([100, 3], seed=[0, 0]) * 5
  labels = tf.zeros([100, 3])
  plain = losses.DTLLoss(3, chained=True).per_example(labels, logits)
  calibrated = losses.DTLLoss(3, chained=True, calibration_weight=5.0).per_example(labels, logits)
  np.testing.assert_array_equal(plain.numpy(), calibrated.numpy())


@pytest.mark.parametrize("chained", [True, False])
@pytest.mark.parametrize("num_steps", [2, 3])
def test_extreme_logits_give_finite_loss_and_gradients(chained, num_steps):
  values = np.array([-50.0, -20.0, 0.0, 20.0, 50.0], np.float32)
  grid = np.stack(np.meshgrid(*[values] * num_steps), -1).reshape(-1, num_steps)
  rng = np.random.default_rng(0)
  labels = np.cumprod(rng.integers(0, 2, size=grid.shape), axis=1)
  for y in (labels, np.zeros_like(labels), np.ones_like(labels)):
    loss_fn = losses.DTLLoss(
      num_steps, chained=chained, calibration_weight=0.6, conditional_weight=0.5 if chained else 0.0
    )
    logits = tf.Variable(grid)
    with tf.GradientTape() as tape:
      loss = loss_fn(tf.constant(y, tf.float32), logits)
    grad = tape.gradient(loss, logits).numpy()
    assert np.isfinite(loss.numpy()), y
    assert np.isfinite(grad).all(), y


def test_confident_right_answers_cost_about_nothing():
  loss = losses.DTLLoss(2, chained=True)
  per_example = loss.per_example(
    tf.constant([[1.0, 1.0], [0.0, 0.0]]), tf.constant([[50.0, 50.0], [-50.0, -50.0]])
  ).numpy()
  np.testing.assert_allclose(per_example, [0.0, 0.0], atol=1e-12)
  wrong = loss.per_example(tf.constant([[0.0, 0.0]]), tf.constant([[50.0, 50.0]])).numpy()
  np.testing.assert_allclose(wrong, [50.0 + (50.0 - np.log(2.0))], rtol=1e-5)


def test_rare_step_still_informative_at_large_negative_logits():
  # A positive of the last step at logit -30: the gradient pushes it up by ~1.
  logits = tf.Variable([[5.0, -30.0]])
  with tf.GradientTape() as tape:
    loss = losses.DTLLoss(2, chained=True)(tf.constant([[1.0, 1.0]]), logits)
  grad = tape.gradient(loss, logits).numpy()
  np.testing.assert_allclose(grad[0, 1], -1.0, rtol=1e-6)


def test_stack_labels_orders_by_step_and_reports_missing():
  labels = {"purchase": tf.constant([0, 1]), "click": tf.constant([1, 1])}
  np.testing.assert_array_equal(
    losses.stack_labels(labels, ("click", "purchase")).numpy(), [[1, 0], [1, 1]]
  )
  with pytest.raises(KeyError, match=r"labels miss steps \['cart'\]"):
    losses.stack_labels(labels, ("click", "cart"))


def test_invalid_configurations():
  with pytest.raises(ValueError, match="needs >= 2 steps"):
    losses.DTLLoss(1, chained=True)
  with pytest.raises(ValueError, match="step_weights has 2 entries for 3"):
    losses.DTLLoss(3, chained=True, step_weights=(1.0, 1.0))
  with pytest.raises(ValueError, match="step_weights must be >= 0"):
    losses.DTLLoss(2, chained=True, step_weights=(1.0, -1.0))
  with pytest.raises(ValueError, match="conditional_weight > 0 needs chained"):
    losses.DTLLoss(2, chained=False, conditional_weight=0.1)
  with pytest.raises(ValueError, match="both 0: steps after the first would get no loss"):
    losses.DTLLoss(2, chained=True, entire_space_weight=0.0)
  with pytest.raises(
    ValueError, match="conditional_normalization must be one of impressions, parents"
  ):
    losses.DTLLoss(2, chained=True, conditional_weight=1.0, conditional_normalization="clicks")
  with pytest.raises(ValueError, match="entire_space_weight must be >= 0"):
    losses.DTLLoss(2, chained=True, entire_space_weight=-1.0)
  with pytest.raises(ValueError, match="must be >= 0"):
    losses.DTLLoss(2, chained=False, calibration_weight=-0.1)
