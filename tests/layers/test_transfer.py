"""Tests of dependence transfer: gated, AITM attention, none, stop-gradient."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import transfer  # noqa: E402

H = tf.random.stateless_normal([5, 4], seed=[1, 2])
U = tf.random.stateless_normal([5, 3], seed=[3, 4])


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_gated_transfer_formula():
  layer = transfer.DependenceTransfer("gated", seed=0)
  layer((H, U))
  layer.gate_bias.assign([0.1, -0.2, 0.3, 0.0])
  h, u = H.numpy(), U.numpy()
  gate = _sigmoid(np.concatenate([h, u], 1) @ layer.gate_kernel.numpy() + layer.gate_bias.numpy())
  expected = h + gate * (u @ layer.value_kernel.numpy())
  np.testing.assert_allclose(layer((H, U)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_attention_transfer_is_aitm_ait():
  layer = transfer.DependenceTransfer("attention", seed=0)
  out = layer((H, U)).numpy()
  h, u = H.numpy(), U.numpy()
  info = np.maximum(u @ layer.info_kernel.numpy() + layer.info_bias.numpy(), 0)
  tokens = np.stack([h, info], axis=1)  # [B, 2, D]
  wq, wk, wv = layer.qkv_kernel.numpy()
  q, k, v = tokens @ wq, tokens @ wk, tokens @ wv
  scores = (q * k).sum(-1) / np.sqrt(4.0)
  a = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
  np.testing.assert_allclose(out, (a[:, :, None] * v).sum(1), rtol=1e-5, atol=1e-6)


def test_none_passes_h_through():
  layer = transfer.DependenceTransfer("none")
  np.testing.assert_array_equal(layer((H, U)).numpy(), H.numpy())
  assert not layer.weights


@pytest.mark.parametrize("mode", ["gated", "attention"])
def test_stop_gradient_blocks_the_previous_step(mode):
  u = tf.Variable(U)
  for stop, expect_gradient in ((False, True), (True, False)):
    layer = transfer.DependenceTransfer(mode, stop_gradient=stop, seed=0)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer((H, u)) ** 2)
    grad = tape.gradient(loss, u)
    if expect_gradient:
      assert grad is not None and np.abs(grad.numpy()).sum() > 0
    else:
      assert grad is None


def test_unknown_mode():
  with pytest.raises(
    ValueError,
    match="transfer mode must be one of "
    r"\('gated', 'attention', 'none'\), got 'sum'",
  ):
    transfer.DependenceTransfer("sum")


@pytest.mark.parametrize("mode", ["gated", "attention", "none"])
def test_config_round_trip(mode):
  td.assert_config_round_trip(
    transfer.DependenceTransfer(mode, stop_gradient=True, dropout=0.1, seed=2), (H, U)
  )
