"""Sample-wise softmax gates over experts (optionally top-k sparse).

Two gate networks:

* :class:`GroupedGate`: one independent linear gate per group (task), as in
  MMoE, CGC and PLE: ``g_t(x) = softmax(W_t x_t + b_t)``.
* :class:`TaskIndicatorGate`: ONE gate network shared by all tasks and made
  task-aware by a learnable task-indicator vector ``tau_t`` per task:
  ``g_t(x) = softmax(W_2 relu(W_1 [x_t ; tau_t] + b_1) + b_2)`` (TAFE's
  adaptive pattern extraction, our reading). With ``hidden_units=()`` it is the
  linear ``softmax(W [x_t ; tau_t] + b)``; note that then ``tau_t`` only adds a
  per-task constant to the logits (``W [x; tau] = W_x x + W_tau tau``), so the
  sample-wise part of the gate is the same for every task. The hidden layer is
  what lets the task indicator change *which* samples go to which expert.

Both return weights ``[B, G, E]`` that sum to 1 over E; with ``top_k`` only the
k largest logits per row keep weight (exactly k non-zero weights).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf

from tafe_tf.layers import initializers


def gate_softmax(logits: tf.Tensor, top_k: Optional[int] = None) -> tf.Tensor:
  """Softmax over the last axis, keeping only the ``top_k`` largest logits.

  Args:
    logits: ``[..., E]`` gate logits.
    top_k: None (dense softmax) or ``1 <= top_k <= E``.

  Returns:
    Weights of the shape of ``logits``, summing to 1 over the last axis, with
    exactly ``top_k`` non-zero entries per row when ``top_k`` is set (ties are
    broken by index, as ``tf.math.top_k`` does).
  """
  logits = tf.convert_to_tensor(logits)
  num_experts = logits.shape[-1]
  if top_k is None or top_k >= num_experts:
    return tf.nn.softmax(logits, axis=-1)
  _, indices = tf.math.top_k(logits, k=top_k)
  keep = tf.reduce_sum(tf.one_hot(indices, num_experts, dtype=logits.dtype), axis=-2) > 0
  # The dropped logits get the dtype's lowest value: exp() of it underflows to
  # exactly 0; the outer where makes that explicit for the gradient too.
  masked = tf.where(keep, logits, tf.constant(logits.dtype.min, logits.dtype))
  return tf.where(keep, tf.nn.softmax(masked, axis=-1), tf.zeros_like(logits))


def mix_experts(weights: tf.Tensor, experts: tf.Tensor) -> tf.Tensor:
  """``sum_e weights[b, g, e] * experts[b, g, e, :]`` -> ``[B, G, D]``.

  ``experts`` may have a group axis of 1 (experts shared by every group).
  """
  # Not einsums (slower on CPU, see layers/experts.py): a batched matmul when
  # the experts are shared, else a broadcast product summed over E (E is a
  # handful, so B tiny [1, E] x [E, D] matmuls would cost more).
  if experts.shape[1] == 1:
    return tf.matmul(weights, tf.squeeze(experts, axis=1))
  return tf.reduce_sum(weights[..., None] * experts, axis=2)


def _check_top_k(top_k: Optional[int], num_experts: int, name: str) -> None:
  if top_k is not None and not 1 <= top_k <= num_experts:
    raise ValueError(f"{name}: top_k must be in [1, {num_experts}], got {top_k}")


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class GroupedGate(tf.keras.layers.Layer):
  """One linear softmax gate per group, evaluated as one (batched) matmul.

  Args:
    num_groups: G gates.
    num_experts: E experts each gate weighs.
    top_k: Keep the k largest logits per row (None: dense softmax).
    seed: Initializer seed.

  Call:
    inputs: ``[B, in]`` (shared by all gates) or ``[B, G, in]``.
    Returns weights ``[B, G, E]``.
  """

  def __init__(
    self,
    num_groups: int,
    num_experts: int,
    top_k: Optional[int] = None,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    _check_top_k(top_k, num_experts, self.name)
    self.num_groups = num_groups
    self.num_experts = num_experts
    self.top_k = top_k
    self.seed = seed

  def build(self, input_shape: tf.TensorShape) -> None:
    fan_in = int(tf.TensorShape(input_shape)[-1])
    self.kernel = self.add_weight(
      name="kernel",
      shape=(self.num_groups, fan_in, self.num_experts),
      initializer=initializers.glorot_uniform(
        fan_in, self.num_experts, initializers.derive_seed(self.seed, 0)
      ),
    )
    self.bias = self.add_weight(
      name="bias", shape=(self.num_groups, self.num_experts), initializer="zeros"
    )
    super().build(input_shape)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    g, e = self.num_groups, self.num_experts
    if inputs.shape.rank == 2:
      # All gates in one GEMM: x [B, in] @ [in, G*E].
      wide = tf.reshape(tf.transpose(self.kernel, [1, 0, 2]), [-1, g * e])
      logits = tf.reshape(tf.matmul(inputs, wide), [-1, g, e])
    elif g == 1:
      logits = tf.matmul(tf.squeeze(inputs, axis=1), self.kernel[0])[:, None, :]
    else:
      logits = tf.transpose(tf.matmul(tf.transpose(inputs, [1, 0, 2]), self.kernel), [1, 0, 2])
    logits = logits + self.bias
    return gate_softmax(logits, self.top_k)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_groups=self.num_groups, num_experts=self.num_experts, top_k=self.top_k, seed=self.seed
    )
    return config


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class TaskIndicatorGate(tf.keras.layers.Layer):
  """A gate shared by all tasks, conditioned on a learnable vector per task.

  Args:
    num_tasks: Number of task-indicator vectors (tasks, plus one for a shared
      path where a level feeds one).
    num_experts: E experts weighed.
    indicator_dim: Length of each task-indicator vector ``tau_t``.
    hidden_units: Widths of the gate MLP's hidden layers (ReLU); ``()`` gives
      the linear gate (see the module docstring for why one layer is the
      default in TAFE).
    top_k: Keep the k largest logits per row (None: dense softmax).
    seed: Initializer seed.

  Call:
    inputs: ``[B, in]`` or ``[B, num_tasks, in]`` (each task's own input).
    Returns weights ``[B, num_tasks, E]``.
  """

  def __init__(
    self,
    num_tasks: int,
    num_experts: int,
    indicator_dim: int = 8,
    hidden_units: Sequence[int] = (16,),
    top_k: Optional[int] = None,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    _check_top_k(top_k, num_experts, self.name)
    if indicator_dim < 1:
      raise ValueError(f"{self.name}: indicator_dim must be >= 1, got {indicator_dim}")
    self.num_tasks = num_tasks
    self.num_experts = num_experts
    self.indicator_dim = indicator_dim
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.top_k = top_k
    self.seed = seed

  def build(self, input_shape: tf.TensorShape) -> None:
    fan_in = int(tf.TensorShape(input_shape)[-1])
    seed = lambda salt: initializers.derive_seed(self.seed, salt)  # noqa: E731
    self.task_indicators = self.add_weight(
      name="task_indicators",
      shape=(self.num_tasks, self.indicator_dim),
      initializer=tf.keras.initializers.RandomNormal(stddev=1.0, seed=seed(0)),
    )
    widths = self.hidden_units + (self.num_experts,)
    # The first layer's kernel is split into its x part and its tau part, so
    # W_1 [x ; tau_t] costs one [B, in] matmul plus a [T, dim] one, not T.
    self.input_kernel = self.add_weight(
      name="input_kernel",
      shape=(fan_in, widths[0]),
      initializer=initializers.glorot_uniform(fan_in + self.indicator_dim, widths[0], seed(1)),
    )
    self.indicator_kernel = self.add_weight(
      name="indicator_kernel",
      shape=(self.indicator_dim, widths[0]),
      initializer=initializers.glorot_uniform(fan_in + self.indicator_dim, widths[0], seed(2)),
    )
    self.kernels, self.biases = [], []
    for i, width in enumerate(widths):
      if i > 0:
        self.kernels.append(
          self.add_weight(
            name=f"kernel_{i}",
            shape=(widths[i - 1], width),
            initializer=initializers.glorot_uniform(widths[i - 1], width, seed(2 + i)),
          )
        )
      self.biases.append(self.add_weight(name=f"bias_{i}", shape=(width,), initializer="zeros"))
    super().build(input_shape)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    if inputs.shape.rank == 2:
      from_x = tf.matmul(inputs, self.input_kernel)[:, None, :]
    else:
      from_x = tf.einsum("bti,ih->bth", inputs, self.input_kernel)
    from_tau = tf.matmul(self.task_indicators, self.indicator_kernel)
    x = from_x + from_tau[None] + self.biases[0]
    for kernel, bias in zip(self.kernels, self.biases[1:]):
      x = tf.einsum("bth,ho->bto", tf.nn.relu(x), kernel) + bias
    return gate_softmax(x, self.top_k)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_tasks=self.num_tasks,
      num_experts=self.num_experts,
      indicator_dim=self.indicator_dim,
      hidden_units=list(self.hidden_units),
      top_k=self.top_k,
      seed=self.seed,
    )
    return config
