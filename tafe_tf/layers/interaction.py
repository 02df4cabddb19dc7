"""Field interaction: self-attention across fields, then squeeze-and-excitation.

The optional block in front of TAFE's experts (the field-level block of the
paper's v3 sibling, APEM; our reading):

1. multi-head self-attention over the F field embeddings with a residual
   connection and layer normalisation,
   ``x <- LayerNorm(x + MHA(x, x, x))``;
2. squeeze-and-excitation (FiBiNET-style) re-weighting of fields:
   ``s = sigmoid(W_2 relu(W_1 mean_d(x)))`` and ``x <- x * s`` per field.

Input and output ``[B, F, D]``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import tensorflow as tf

from tafe_tf.layers import initializers


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class FieldInteraction(tf.keras.layers.Layer):
  """Self-attention across fields + squeeze-and-excitation.

  Args:
    num_heads: Attention heads.
    key_dim: Width of each head (None: ``D // num_heads``, at least 1).
    se_reduction: Squeeze-and-excitation bottleneck ratio (hidden width
      ``max(1, F // se_reduction)``).
    attention: Use the self-attention part.
    excitation: Use the squeeze-and-excitation part.
    seed: Initializer seed.

  Call: ``[B, F, D]`` -> ``[B, F, D]``.
  """

  def __init__(
    self,
    num_heads: int = 2,
    key_dim: Optional[int] = None,
    se_reduction: int = 3,
    attention: bool = True,
    excitation: bool = True,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    if num_heads < 1 or se_reduction < 1:
      raise ValueError(
        f"{self.name}: num_heads and se_reduction must be >= 1, got {num_heads} and {se_reduction}"
      )
    if not (attention or excitation):
      raise ValueError(f"{self.name}: enable attention, excitation or both")
    self.num_heads = num_heads
    self.key_dim = key_dim
    self.se_reduction = se_reduction
    self.attention = attention
    self.excitation = excitation
    self.seed = seed

  def build(self, input_shape: tf.TensorShape) -> None:
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 3:
      raise ValueError(f"{self.name}: expected [B, F, D] field embeddings, got shape {input_shape}")
    num_fields, dim = int(input_shape[1]), int(input_shape[2])
    seed = lambda salt: initializers.derive_seed(self.seed, salt)  # noqa: E731
    glorot = initializers.glorot_uniform
    if self.attention:
      key_dim = self.key_dim or max(1, dim // self.num_heads)
      self._head_dim = key_dim
      self.qkv_kernel = self.add_weight(
        name="qkv_kernel",
        shape=(3, dim, self.num_heads, key_dim),
        initializer=glorot(dim, self.num_heads * key_dim, seed(0)),
      )
      self.output_kernel = self.add_weight(
        name="output_kernel",
        shape=(self.num_heads, key_dim, dim),
        initializer=glorot(self.num_heads * key_dim, dim, seed(1)),
      )
      self.norm = tf.keras.layers.LayerNormalization(name="norm")
    if self.excitation:
      hidden = max(1, num_fields // self.se_reduction)
      self.squeeze_kernel = self.add_weight(
        name="squeeze_kernel",
        shape=(num_fields, hidden),
        initializer=glorot(num_fields, hidden, seed(2)),
      )
      self.excite_kernel = self.add_weight(
        name="excite_kernel",
        shape=(hidden, num_fields),
        initializer=glorot(hidden, num_fields, seed(3)),
      )
    super().build(input_shape)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    x = inputs
    if self.attention:
      # Projections as plain [B*F, .] matmuls (faster than einsums on CPU,
      # see layers/experts.py); the per-sample scores stay batched matmuls.
      _, num_fields, dim = x.shape
      heads, key_dim = self.num_heads, self._head_dim
      qkv = tf.matmul(
        tf.reshape(x, [-1, dim]), tf.reshape(tf.transpose(self.qkv_kernel, [1, 0, 2, 3]), [dim, -1])
      )
      qkv = tf.transpose(
        tf.reshape(qkv, [-1, num_fields, 3, heads, key_dim]), [2, 0, 3, 1, 4]
      )  # [3, B, H, F, K]
      q, k, v = tf.unstack(qkv)
      scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(key_dim)
      attended = tf.matmul(tf.nn.softmax(scores, -1), v)  # [B, H, F, K]
      attended = tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [-1, heads * key_dim])
      projected = tf.matmul(attended, tf.reshape(self.output_kernel, [heads * key_dim, dim]))
      x = self.norm(x + tf.reshape(projected, [-1, num_fields, dim]))
    if self.excitation:
      squeezed = tf.reduce_mean(x, axis=-1)  # [B, F]
      scale = tf.sigmoid(
        tf.matmul(tf.nn.relu(tf.matmul(squeezed, self.squeeze_kernel)), self.excite_kernel)
      )
      x = x * scale[:, :, None]
    return x

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_heads=self.num_heads,
      key_dim=self.key_dim,
      se_reduction=self.se_reduction,
      attention=self.attention,
      excitation=self.excitation,
      seed=self.seed,
    )
    return config
