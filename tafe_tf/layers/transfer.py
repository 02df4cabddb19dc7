"""Dependence transfer: information from step t-1 entering step t.

Modes (``DependenceTransfer(mode=...)``), ``h`` step t's representation
``[B, D]`` and ``u`` step t-1's ``[B, D_u]``:

* ``"gated"`` (TAFE, our reading):
  ``z = h + sigmoid(W_f [h ; u] + b_f) * (V u)``; the sample-wise,
  element-wise gate decides how much of the previous step's information to
  let in, so conflicting signal can be filtered out.
* ``"attention"`` (AITM's Adaptive Information Transfer, Xi et al. 2021):
  ``info = relu(W_i u + b_i)``; ``z = sum_j a_j V x_j`` over the two "tokens"
  ``x = (h, info)`` with ``a = softmax(<Q x_j, K x_j> / sqrt(D))``; Q, K, V are
  bias-free as in the reference code.
* ``"none"``: ``z = h``.

``stop_gradient=True`` blocks step t's loss from updating step t-1's network
through the transfer path.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from tafe_tf.layers import initializers

GATED = "gated"
ATTENTION = "attention"
NONE = "none"
TRANSFER_MODES = (GATED, ATTENTION, NONE)


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class DependenceTransfer(tf.keras.layers.Layer):
  """Combines step t's representation with step t-1's.

  Args:
    mode: One of :data:`TRANSFER_MODES`.
    stop_gradient: Stop gradients into ``u`` (the previous step).
    dropout: Dropout on the transferred information (``attention``'s info
      layer, as in AITM; ``gated``'s ``V u``), training only.
    seed: Initializer seed.

  Call: ``(h [B, D], u [B, D_u])`` -> ``z [B, D]``.
  """

  def __init__(
    self,
    mode: str = GATED,
    stop_gradient: bool = False,
    dropout: float = 0.0,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    if mode not in TRANSFER_MODES:
      raise ValueError(f"transfer mode must be one of {TRANSFER_MODES}, got {mode!r}")
    self.mode = mode
    self.stop_gradient = stop_gradient
    self.dropout = dropout
    self.seed = seed
    self._dropout = (
      tf.keras.layers.Dropout(dropout, seed=initializers.derive_seed(seed, 99)) if dropout else None
    )

  def build(self, input_shape: Tuple[tf.TensorShape, tf.TensorShape]) -> None:
    h_shape, u_shape = (tf.TensorShape(s) for s in input_shape)
    d, d_u = int(h_shape[-1]), int(u_shape[-1])
    seed = lambda salt: initializers.derive_seed(self.seed, salt)  # noqa: E731
    glorot = initializers.glorot_uniform
    if self.mode == GATED:
      self.gate_kernel = self.add_weight(
        name="gate_kernel", shape=(d + d_u, d), initializer=glorot(d + d_u, d, seed(0))
      )
      self.gate_bias = self.add_weight(name="gate_bias", shape=(d,), initializer="zeros")
      self.value_kernel = self.add_weight(
        name="value_kernel", shape=(d_u, d), initializer=glorot(d_u, d, seed(1))
      )
    elif self.mode == ATTENTION:
      self.info_kernel = self.add_weight(
        name="info_kernel", shape=(d_u, d), initializer=glorot(d_u, d, seed(0))
      )
      self.info_bias = self.add_weight(name="info_bias", shape=(d,), initializer="zeros")
      self.qkv_kernel = self.add_weight(
        name="qkv_kernel", shape=(3, d, d), initializer=glorot(d, d, seed(1))
      )
    super().build(input_shape)

  def _maybe_dropout(self, x: tf.Tensor, training: Optional[bool]) -> tf.Tensor:
    return self._dropout(x, training=training) if self._dropout else x

  def call(self, inputs: Tuple[tf.Tensor, tf.Tensor], training: Optional[bool] = None) -> tf.Tensor:
    h, u = inputs
    if self.mode == NONE:
      return h
    if self.stop_gradient:
      u = tf.stop_gradient(u)
    if self.mode == GATED:
      gate = tf.sigmoid(tf.matmul(tf.concat([h, u], axis=-1), self.gate_kernel) + self.gate_bias)
      value = self._maybe_dropout(tf.matmul(u, self.value_kernel), training)
      return h + gate * value
    info = self._maybe_dropout(
      tf.nn.relu(tf.matmul(u, self.info_kernel) + self.info_bias), training
    )
    tokens = tf.stack([h, info], axis=1)  # [B, 2, D]
    q, k, v = tf.unstack(tf.einsum("bnd,cde->cbne", tokens, self.qkv_kernel))
    scores = tf.reduce_sum(q * k, axis=-1) / math.sqrt(float(h.shape[-1]))
    weights = tf.nn.softmax(scores, axis=1)  # over the two tokens
    return tf.reduce_sum(weights[:, :, None] * v, axis=1)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      mode=self.mode, stop_gradient=self.stop_gradient, dropout=self.dropout, seed=self.seed
    )
    return config
