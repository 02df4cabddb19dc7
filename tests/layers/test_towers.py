"""Tests of the batched (optionally gated) task towers."""

import multistep_testdata as td
import numpy as np
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import towers  # noqa: E402


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_tower_is_mlp_then_logit():
  x = tf.random.stateless_normal([4, 2, 5], seed=[0, 1])
  tower = towers.TaskTower(2, (3,), seed=0)
  u, logits = tower(x)
  k, b = tower.hidden.kernels[0].numpy(), tower.hidden.biases[0].numpy()
  hk, hb = tower.head.kernels[0].numpy(), tower.head.biases[0].numpy()
  for g in range(2):
    hidden = np.maximum(x.numpy()[:, g] @ k[g, 0] + b[g, 0], 0)
    np.testing.assert_allclose(u.numpy()[:, g], hidden, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
      logits.numpy()[:, g], (hidden @ hk[g, 0] + hb[g, 0])[:, 0], rtol=1e-5, atol=1e-6
    )


def test_gated_tower_scales_input_by_two_sigmoid():
  x = tf.random.stateless_normal([4, 5], seed=[2, 3])
  tower = towers.TaskTower(1, (), gated=True, seed=0)
  u, logits = tower(x)
  gate = tower._gate_bank  # pylint: disable=protected-access
  gk, gb = gate.kernels[0].numpy()[0, 0], gate.biases[0].numpy()[0, 0]
  gated = x.numpy() * 2.0 * _sigmoid(x.numpy() @ gk + gb)
  np.testing.assert_allclose(u.numpy()[:, 0], gated, rtol=1e-5, atol=1e-6)
  hk, hb = tower.head.kernels[0].numpy()[0, 0], tower.head.biases[0].numpy()
  np.testing.assert_allclose(
    logits.numpy()[:, 0], (gated @ hk)[:, 0] + hb[0, 0, 0], rtol=1e-5, atol=1e-6
  )


def test_one_input_for_all_towers_and_towers_differ():
  x = tf.random.stateless_normal([6, 5], seed=[4, 4])
  u, logits = towers.TaskTower(3, (4,), seed=1)(x)
  assert u.shape == (6, 3, 4) and logits.shape == (6, 3)
  assert not np.allclose(logits.numpy()[:, 0], logits.numpy()[:, 1])


def test_config_round_trip():
  td.assert_config_round_trip(
    towers.TaskTower(2, (4, 3), gated=True, dropout=0.2, seed=5),
    tf.random.stateless_normal([3, 2, 6], seed=[0, 0]),
  )
