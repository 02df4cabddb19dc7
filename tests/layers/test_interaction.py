"""Tests of field interaction (self-attention across fields + SE)."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import interaction  # noqa: E402

X = tf.random.stateless_normal([3, 6, 8], seed=[1, 1])


def test_attention_only_is_permutation_equivariant_over_fields():
  layer = interaction.FieldInteraction(num_heads=2, excitation=False, seed=0)
  perm = [3, 0, 5, 1, 4, 2]
  out = layer(X).numpy()
  permuted = layer(tf.gather(X, perm, axis=1)).numpy()
  np.testing.assert_allclose(permuted, out[:, perm], rtol=1e-5, atol=1e-5)


def test_attention_by_hand():
  layer = interaction.FieldInteraction(num_heads=2, excitation=False, seed=0)
  out = layer(X).numpy()
  x = X.numpy()
  wq, wk, wv = layer.qkv_kernel.numpy()  # [D, H, K] each
  wo = layer.output_kernel.numpy()  # [H, K, D]
  q, k, v = (np.einsum("bfd,dhk->bhfk", x, w) for w in (wq, wk, wv))
  s = np.einsum("bhfk,bhgk->bhfg", q, k) / np.sqrt(4.0)
  a = np.exp(s - s.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  y = x + np.einsum("bhfk,hkd->bfd", np.einsum("bhfg,bhgk->bhfk", a, v), wo)
  mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
  expected = (y - mean) / np.sqrt(var + layer.norm.epsilon)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_excitation_only_scales_each_field_by_its_gate():
  layer = interaction.FieldInteraction(attention=False, se_reduction=2, seed=0)
  out = layer(X).numpy()
  x = X.numpy()
  z = x.mean(-1)
  s = 1.0 / (
    1.0 + np.exp(-(np.maximum(z @ layer.squeeze_kernel.numpy(), 0) @ layer.excite_kernel.numpy()))
  )
  np.testing.assert_allclose(out, x * s[:, :, None], rtol=1e-5, atol=1e-6)
  assert layer.squeeze_kernel.shape == (6, 3)


def test_full_block_shape_and_arguments():
  assert interaction.FieldInteraction(seed=1)(X).shape == (3, 6, 8)
  with pytest.raises(ValueError, match="enable attention, excitation or both"):
    interaction.FieldInteraction(attention=False, excitation=False)
  with pytest.raises(ValueError, match="expected \\[B, F, D\\]"):
    interaction.FieldInteraction()(tf.zeros([3, 8]))


def test_config_round_trip():
  td.assert_config_round_trip(
    interaction.FieldInteraction(num_heads=4, key_dim=3, se_reduction=2, seed=3), X
  )
