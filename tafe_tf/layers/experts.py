"""A bank of independent MLPs evaluated as one batched matmul per layer.

Experts, task towers and the shared bottom are all "G groups x J members of
identical MLP shape, each with its own weights". Stacking the members' kernels
into one ``[G, J, in, out]`` variable turns ``G * J`` Dense calls into one
batched matmul per layer, which makes K experts cost one op instead of K.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf

from tafe_tf.layers import initializers


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class ExpertBank(tf.keras.layers.Layer):
  """``num_groups x experts_per_group`` MLPs of the same shape, batched.

  Args:
    num_groups: G, groups of experts (e.g. one per task); every group may take
      its own input.
    experts_per_group: J, experts in each group (all see their group's input).
    units: Widths of the MLP layers; the activation follows every layer.
    activation: Keras activation name (None: linear).
    dropout: Dropout rate after every layer (training only).
    seed: Initializer and dropout seed (None: unseeded).

  Call:
    inputs: ``[B, in]`` (the same input for every group) or ``[B, G, in]``.
    Returns ``[B, G, J, units[-1]]``.
  """

  def __init__(
    self,
    num_groups: int,
    experts_per_group: int,
    units: Sequence[int],
    activation: Optional[str] = "relu",
    dropout: float = 0.0,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    if num_groups < 1 or experts_per_group < 1:
      raise ValueError(
        f"{self.name}: num_groups and experts_per_group must be "
        f">= 1, got {num_groups} and {experts_per_group}"
      )
    units = tuple(int(u) for u in units)
    if not units or min(units) < 1:
      raise ValueError(
        f"{self.name}: units must be a non-empty tuple of positive widths, got {units}"
      )
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"{self.name}: dropout must be in [0, 1), got {dropout}")
    self.num_groups = num_groups
    self.experts_per_group = experts_per_group
    self.units = units
    self.activation = tf.keras.activations.get(activation)
    self._activation_name = activation
    self.dropout = dropout
    self.seed = seed
    self._dropouts = (
      [
        tf.keras.layers.Dropout(dropout, seed=initializers.derive_seed(seed, 100 + i))
        for i in range(len(units))
      ]
      if dropout > 0
      else []
    )

  def build(self, input_shape: tf.TensorShape) -> None:
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank == 3 and input_shape[1] != self.num_groups:
      raise ValueError(
        f"{self.name}: input has {input_shape[1]} groups, the bank {self.num_groups}"
      )
    if input_shape.rank not in (2, 3):
      raise ValueError(
        f"{self.name}: expected [B, in] or [B, G, in] input, got shape {input_shape}"
      )
    fan_in = int(input_shape[-1])
    g, j = self.num_groups, self.experts_per_group
    self.kernels, self.biases = [], []
    for i, fan_out in enumerate(self.units):
      self.kernels.append(
        self.add_weight(
          name=f"kernel_{i}",
          shape=(g, j, fan_in, fan_out),
          initializer=initializers.glorot_uniform(
            fan_in, fan_out, initializers.derive_seed(self.seed, i)
          ),
        )
      )
      self.biases.append(
        self.add_weight(name=f"bias_{i}", shape=(g, j, fan_out), initializer="zeros")
      )
      fan_in = fan_out
    super().build(input_shape)

  def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    # Plain (batched) matmuls with the expert axis leading, not einsums: on
    # CPU, TF's einsum transposes its operands around every call, which made
    # the expert layers about a third slower than these matmuls (PLE's train
    # step: docs/benchmarks.md, "Speed").
    g, j = self.num_groups, self.experts_per_group
    x = self._first_layer(inputs)  # [G*J, B, units[0]] or [B, units[0]]
    for i in range(len(self.units)):
      if i > 0:
        kernel = self.kernels[i]
        if g * j == 1:
          x = tf.matmul(x, kernel[0, 0])
        else:
          x = tf.matmul(x, tf.reshape(kernel, [g * j] + kernel.shape[2:]))
      bias = self.biases[i]
      x = x + (bias[0] if g * j == 1 else tf.reshape(bias, [g * j, 1, -1]))
      if self.activation is not None:
        x = self.activation(x)
      if self._dropouts:
        x = self._dropouts[i](x, training=training)
    if g * j == 1:
      return tf.reshape(x, [-1, 1, 1, self.units[-1]])
    x = tf.transpose(x, [1, 0, 2])  # [B, G*J, out]
    return tf.reshape(x, [-1, g, j, self.units[-1]])

  def _first_layer(self, inputs: tf.Tensor) -> tf.Tensor:
    """First layer's pre-activations: ``[G*J, B, u]`` (or ``[B, u]`` when
    the bank holds one MLP)."""
    g, j = self.num_groups, self.experts_per_group
    kernel = self.kernels[0]  # [G, J, in, u]
    fan_in, width = kernel.shape[2], kernel.shape[3]
    if inputs.shape.rank == 2:
      if g * j == 1:
        return tf.matmul(inputs, kernel[0, 0])
      # One GEMM for all experts: x [B, in] @ [in, G*J*u].
      wide = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [fan_in, -1])
      x = tf.reshape(tf.matmul(inputs, wide), [-1, g * j, width])
      return tf.transpose(x, [1, 0, 2])
    if g == 1:
      return self._first_layer(tf.squeeze(inputs, axis=1))
    # One GEMM per group: [G, B, in] @ [G, in, J*u].
    x = tf.matmul(
      tf.transpose(inputs, [1, 0, 2]),
      tf.reshape(tf.transpose(kernel, [0, 2, 1, 3]), [g, fan_in, j * width]),
    )
    if j == 1:
      return x
    x = tf.transpose(tf.reshape(x, [g, -1, j, width]), [0, 2, 1, 3])
    return tf.reshape(x, [g * j, -1, width])

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_groups=self.num_groups,
      experts_per_group=self.experts_per_group,
      units=list(self.units),
      activation=self._activation_name,
      dropout=self.dropout,
      seed=self.seed,
    )
    return config
