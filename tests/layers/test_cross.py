"""Tests of the interaction switch's layer (DCN-v2 cross, pairwise dot)."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import cross

FIELDS = tf.random.stateless_normal([4, 5, 3], seed=[2, 3])  # [B, F, D]
FLAT = tf.reshape(FIELDS, [4, 15])


def _randomise(layer: tf.keras.layers.Layer) -> None:
  """Non-trivial weights (biases start at 0, which would hide them)."""
  rng = np.random.default_rng(0)
  layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])


@pytest.mark.parametrize("projection_dim", [None, 2])
def test_cross_stack_by_hand(projection_dim):
  layer = cross.FeatureInteraction("cross", cross_layers=2, projection_dim=projection_dim, seed=0)
  layer(FLAT)
  _randomise(layer)
  out = layer(FLAT).numpy()
  x0 = FLAT.numpy().astype(np.float64)
  x = x0
  weights = [w.astype(np.float64) for w in layer.get_weights()]
  per_layer = 2 if projection_dim is None else 3
  for i in range(2):
    w = weights[per_layer * i : per_layer * (i + 1)]
    if projection_dim is None:
      kernel, bias = w
      assert kernel.shape == (15, 15)
    else:
      u, v, bias = w
      assert u.shape == (15, 2) and v.shape == (2, 15)
      kernel = u @ v  # low rank W = U V
    x = x0 * (x @ kernel + bias) + x  # x_{l+1} = x_0 * (W x_l + b) + x_l
  np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4)


def test_cross_on_field_embeddings_flattens_them_first():
  layer = cross.FeatureInteraction("cross", cross_layers=1, seed=1)
  np.testing.assert_array_equal(layer(FIELDS).numpy(), layer(FLAT).numpy())
  assert layer(FIELDS).shape == (4, 15)


def test_dot_appends_every_pairwise_field_product_by_hand():
  out = cross.FeatureInteraction("dot")(FIELDS).numpy()
  x = FIELDS.numpy()
  pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
  dots = np.stack([(x[:, i] * x[:, j]).sum(-1) for i, j in pairs], axis=1)
  np.testing.assert_allclose(out, np.concatenate([x.reshape(4, 15), dots], 1), rtol=1e-5)
  assert out.shape == (4, 15 + 10)


def test_none_flattens_only():
  np.testing.assert_array_equal(cross.FeatureInteraction("none")(FIELDS).numpy(), FLAT.numpy())
  assert cross.FeatureInteraction("none")(FLAT) is not None


def test_cross_is_seeded_per_layer():
  layer = cross.FeatureInteraction("cross", cross_layers=3, seed=5)
  again = cross.FeatureInteraction("cross", cross_layers=3, seed=5)
  np.testing.assert_array_equal(again(FLAT).numpy(), layer(FLAT).numpy())
  kernels = [w for w in layer.get_weights() if w.ndim == 2]
  assert not np.array_equal(kernels[0], kernels[1])  # each layer its own seed


def test_bad_arguments_are_one_line_errors():
  with pytest.raises(ValueError, match=r"^interaction must be one of \('none', 'cross', 'dot'\)"):
    cross.FeatureInteraction("fm")
  with pytest.raises(ValueError, match="^cross_layers must be >= 1, got 0$"):
    cross.FeatureInteraction("cross", cross_layers=0)
  with pytest.raises(ValueError, match="^cross_projection_dim must be >= 1 or None, got 0$"):
    cross.FeatureInteraction("cross", projection_dim=0)
  with pytest.raises(ValueError, match=r"interaction='dot' needs \[B, F, D\] field embeddings"):
    cross.FeatureInteraction("dot")(FLAT)


def test_mixed_float16_computes_in_float16():
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    layers = [cross.FeatureInteraction(m, projection_dim=4, seed=0) for m in ("cross", "dot")]
    outs = [layer(tf.cast(FIELDS, tf.float16)) for layer in layers]
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  assert [o.dtype for o in outs] == [tf.float16, tf.float16]
  assert all(np.isfinite(o.numpy()).all() for o in outs)
  assert {w.dtype for w in layers[0].weights} == {tf.float32}


@pytest.mark.parametrize(
  "kwargs", [dict(mode="cross", cross_layers=2, projection_dim=3, seed=4), dict(mode="dot")]
)
def test_config_round_trip(kwargs):
  td.assert_config_round_trip(cross.FeatureInteraction(**kwargs), FIELDS)
