"""Tests of the batched expert bank against per-expert Dense computations."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import experts  # noqa: E402


def _reference(bank, x):
  """Every expert as its own numpy MLP: [B, G, J, out]."""
  kernels = [k.numpy() for k in bank.kernels]
  biases = [b.numpy() for b in bank.biases]
  g_count, j_count = bank.num_groups, bank.experts_per_group
  out = np.zeros((x.shape[0], g_count, j_count, bank.units[-1]), np.float32)
  for g in range(g_count):
    for j in range(j_count):
      h = x if x.ndim == 2 else x[:, g]
      for kernel, bias in zip(kernels, biases):
        h = np.maximum(h @ kernel[g, j] + bias[g, j], 0.0)
      out[:, g, j] = h
  return out


@pytest.mark.parametrize("grouped_input", [False, True])
def test_bank_equals_independent_mlps(grouped_input):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 3, 6) if grouped_input else (5, 6)).astype(np.float32)
  bank = experts.ExpertBank(3, 4, (7, 2), seed=1)
  bank(x)
  for b in bank.biases:  # non-zero biases so they are checked too
    b.assign(rng.normal(size=b.shape))
  np.testing.assert_allclose(bank(x).numpy(), _reference(bank, x), rtol=1e-5, atol=1e-5)


def test_experts_differ_and_seed_reproduces():
  x = tf.random.stateless_normal([4, 5], seed=[1, 2])
  a = experts.ExpertBank(1, 3, (4,), seed=5)
  b = experts.ExpertBank(1, 3, (4,), seed=5)
  out = a(x).numpy()
  np.testing.assert_array_equal(out, b(x).numpy())
  assert not np.allclose(a.kernels[0][0, 0], a.kernels[0][0, 1])


def test_glorot_scale_of_each_expert_kernel():
  bank = experts.ExpertBank(2, 8, (64,), seed=0)
  bank(tf.zeros([1, 32]))
  limit = np.sqrt(6.0 / (32 + 64))
  kernel = bank.kernels[0].numpy()
  assert np.abs(kernel).max() <= limit
  assert np.abs(kernel).max() > 0.9 * limit


def test_linear_bank_and_dropout_only_in_training():
  x = tf.ones([200, 4])
  bank = experts.ExpertBank(1, 1, (50,), activation=None, dropout=0.5, seed=0)
  inference = bank(x, training=False).numpy()
  training = bank(x, training=True).numpy()
  assert (inference < 0).any()  # linear: negative outputs survive
  zeroed = np.mean(training == 0.0)
  assert 0.4 < zeroed < 0.6
  kept = training != 0.0
  np.testing.assert_allclose(training[kept], 2.0 * inference[kept], rtol=1e-5)


def test_invalid_arguments():
  with pytest.raises(ValueError, match="num_groups and experts_per_group"):
    experts.ExpertBank(0, 2, (3,))
  with pytest.raises(ValueError, match="units must be a non-empty tuple"):
    experts.ExpertBank(1, 2, ())
  with pytest.raises(ValueError, match="dropout must be in"):
    experts.ExpertBank(1, 2, (3,), dropout=1.0)
  with pytest.raises(ValueError, match="input has 2 groups, the bank 3"):
    experts.ExpertBank(3, 1, (3,))(tf.zeros([1, 2, 4]))


def test_config_round_trip():
  td.assert_config_round_trip(
    experts.ExpertBank(2, 3, (4, 2), dropout=0.1, seed=3),
    tf.random.stateless_normal([3, 2, 5], [0, 1]),
  )
