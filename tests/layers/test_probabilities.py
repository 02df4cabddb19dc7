"""Tests of chained probabilities and log1mexp in log space."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import probabilities  # noqa: E402


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_log1mexp_matches_float64_across_the_range():
  x = -np.logspace(-30, 2.5, 400)
  got = probabilities.log1mexp(tf.constant(x, tf.float32)).numpy()
  x64 = x.astype(np.float32).astype(np.float64)
  # The float64 reference needs the same two branches to be exact itself.
  with np.errstate(divide="ignore"):  # np.where evaluates both branches
    expected = np.where(x64 > -np.log(2.0), np.log(-np.expm1(x64)), np.log1p(-np.exp(x64)))
  # atol: values below float32's smallest subnormal round to 0.
  np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-44)


def test_log1mexp_at_zero_is_minus_inf_and_gradients_are_finite_elsewhere():
  assert probabilities.log1mexp(tf.constant(0.0)).numpy() == -np.inf
  x = tf.constant([-1e-30, -1e-8, -0.5, -np.log(2.0), -1.0, -50.0, -200.0])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = probabilities.log1mexp(x)
  grad = tape.gradient(y, x).numpy()
  assert np.isfinite(y.numpy()).all() and np.isfinite(grad).all()


def test_chained_probabilities_are_products_of_conditionals():
  logits = tf.random.stateless_normal([50, 4], seed=[0, 3]) * 3
  p, q = probabilities.ChainedProbabilities(chained=True)(logits)
  expected_q = _sigmoid(logits.numpy())
  np.testing.assert_allclose(q.numpy(), expected_q, rtol=1e-6)
  np.testing.assert_allclose(p.numpy(), np.cumprod(expected_q, axis=1), rtol=1e-5)


def test_chained_p_never_increases_along_steps():
  logits = tf.random.stateless_uniform([2000, 3], seed=[1, 1], minval=-50, maxval=50)
  p, _ = probabilities.ChainedProbabilities()(logits)
  p = p.numpy()
  assert (p[:, 1:] <= p[:, :-1]).all()
  assert ((p >= 0) & (p <= 1)).all()


def test_independent_heads_report_clipped_ratio():
  logits = np.array([[0.0, 2.0, -1.0], [1.0, -1.0, -3.0]], np.float32)
  p, q = probabilities.ChainedProbabilities(chained=False)(logits)
  expected_p = _sigmoid(logits)
  np.testing.assert_allclose(p.numpy(), expected_p, rtol=1e-6)
  ratio = expected_p[:, 1:] / expected_p[:, :-1]
  expected_q = np.concatenate([expected_p[:, :1], np.minimum(ratio, 1.0)], 1)
  np.testing.assert_allclose(q.numpy(), expected_q, rtol=1e-5)
  assert q.numpy()[0, 1] == 1.0  # p_2 > p_1 there: clipped


@pytest.mark.parametrize("chained", [True, False])
def test_extreme_logits_stay_finite(chained):
  logits = tf.constant([[50.0, 50.0], [-50.0, -50.0], [50.0, -50.0]])
  log_p, log_1mp = probabilities.step_log_probabilities(logits, chained)
  assert np.isfinite(log_p.numpy()).all()
  assert np.isfinite(log_1mp.numpy()).all()
  np.testing.assert_allclose(
    log_1mp.numpy()[0], [-50.0, -50.0 + np.log(2)] if chained else [-50.0, -50.0], rtol=1e-5
  )


def test_float16_logits_computed_in_float32():
  p, q = probabilities.ChainedProbabilities()(tf.constant([[1.0, 2.0]], tf.float16))
  assert p.dtype == tf.float32 and q.dtype == tf.float32


def test_config_round_trip():
  td.assert_config_round_trip(probabilities.ChainedProbabilities(False), tf.constant([[0.5, -0.5]]))
