"""Tests of the softmax gates: known values, sums, top-k sparsity."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import gates  # noqa: E402


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_gate_softmax_dense_is_softmax():
  logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
  np.testing.assert_allclose(gates.gate_softmax(logits).numpy(), _softmax(logits), rtol=1e-6)


def test_gate_softmax_top_k_by_hand():
  logits = np.array([[1.0, 3.0, 2.0, 0.5]], np.float32)
  weights = gates.gate_softmax(logits, top_k=2).numpy()
  e = np.exp([3.0, 2.0])
  np.testing.assert_allclose(weights, [[0.0, e[0] / e.sum(), e[1] / e.sum(), 0.0]], rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_keeps_exactly_k_largest_and_sums_to_one(k):
  logits = tf.random.stateless_normal([64, 3, 5], seed=[3, k])
  weights = gates.gate_softmax(logits, top_k=k).numpy()
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  assert (np.count_nonzero(weights, axis=-1) == k).all()
  top = np.argsort(-logits.numpy(), axis=-1)[..., :k]
  kept = np.take_along_axis(weights, top, axis=-1)
  assert (kept > 0).all()


def test_top_k_with_ties_keeps_exactly_k():
  weights = gates.gate_softmax(tf.zeros([2, 4]), top_k=2).numpy()
  assert (np.count_nonzero(weights, axis=-1) == 2).all()
  np.testing.assert_allclose(weights.sum(-1), 1.0)


def test_top_k_gradient_is_finite():
  logits = tf.Variable(tf.random.stateless_normal([8, 6], seed=[0, 0]))
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(gates.gate_softmax(logits, top_k=2) ** 2)
  grad = tape.gradient(loss, logits).numpy()
  assert np.isfinite(grad).all()


def test_mix_experts_shared_and_grouped():
  w = np.array([[[0.25, 0.75], [1.0, 0.0]]], np.float32)  # [1, 2 groups, 2]
  shared = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)  # [1, 1, 2, 2]
  np.testing.assert_allclose(gates.mix_experts(w, shared).numpy(), [[[2.5, 3.5], [1.0, 2.0]]])
  grouped = np.concatenate([shared, 10 * shared], axis=1)  # [1, 2, 2, 2]
  np.testing.assert_allclose(gates.mix_experts(w, grouped).numpy(), [[[2.5, 3.5], [10.0, 20.0]]])


def test_grouped_gate_is_softmax_of_linear_map():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 2, 4)).astype(np.float32)
  gate = gates.GroupedGate(2, 3, seed=0)
  gate(x)
  gate.bias.assign(rng.normal(size=(2, 3)))
  kernel, bias = gate.kernel.numpy(), gate.bias.numpy()
  expected = np.stack([_softmax(x[:, g] @ kernel[g] + bias[g]) for g in range(2)], axis=1)
  np.testing.assert_allclose(gate(x).numpy(), expected, rtol=1e-5)
  shared_input = gate(x[:, 0]).numpy()  # [B, in]: every gate sees it
  np.testing.assert_allclose(shared_input[:, 0], expected[:, 0], rtol=1e-5)


def test_linear_task_indicator_gate_is_softmax_of_w_x_tau():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(5, 4)).astype(np.float32)
  gate = gates.TaskIndicatorGate(3, 4, indicator_dim=2, hidden_units=(), seed=0)
  out = gate(x).numpy()
  tau = gate.task_indicators.numpy()
  w = np.concatenate([gate.input_kernel.numpy(), gate.indicator_kernel.numpy()], axis=0)
  for t in range(3):
    xt = np.concatenate([x, np.repeat(tau[t : t + 1], 5, axis=0)], axis=1)
    np.testing.assert_allclose(out[:, t], _softmax(xt @ w), rtol=1e-5)


def test_hidden_task_indicator_gate_by_hand():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 2, 4)).astype(np.float32)  # each task's own input
  gate = gates.TaskIndicatorGate(2, 3, indicator_dim=3, hidden_units=(6,), seed=1)
  out = gate(x).numpy()
  tau = gate.task_indicators.numpy()
  w1 = np.concatenate([gate.input_kernel.numpy(), gate.indicator_kernel.numpy()], axis=0)
  b1, b2 = gate.biases[0].numpy(), gate.biases[1].numpy()
  w2 = gate.kernels[0].numpy()
  for t in range(2):
    xt = np.concatenate([x[:, t], np.repeat(tau[t : t + 1], 5, axis=0)], axis=1)
    expected = _softmax(np.maximum(xt @ w1 + b1, 0) @ w2 + b2)
    np.testing.assert_allclose(out[:, t], expected, rtol=1e-5, atol=1e-6)
  # Task-aware and sample-wise: gates differ across tasks and samples.
  assert not np.allclose(out[:, 0], out[:, 1])
  assert not np.allclose(out[0, 0], out[1, 0])


def test_task_indicator_gate_top_k():
  gate = gates.TaskIndicatorGate(3, 6, top_k=2, seed=0)
  out = gate(tf.random.stateless_normal([10, 4], seed=[0, 1])).numpy()
  assert (np.count_nonzero(out, axis=-1) == 2).all()
  np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)


def test_invalid_top_k_and_indicator_dim():
  with pytest.raises(ValueError, match=r"top_k must be in \[1, 3\], got 4"):
    gates.GroupedGate(1, 3, top_k=4)
  with pytest.raises(ValueError, match="indicator_dim must be >= 1"):
    gates.TaskIndicatorGate(2, 3, indicator_dim=0)


def test_config_round_trips():
  x = tf.random.stateless_normal([3, 2, 4], seed=[5, 5])
  td.assert_config_round_trip(gates.GroupedGate(2, 3, top_k=2, seed=1), x)
  td.assert_config_round_trip(
    gates.TaskIndicatorGate(2, 3, indicator_dim=4, hidden_units=(5,), top_k=1, seed=1), x
  )
