"""Step logits -> conditional q_t and entire-space p_t, in log space.

Chained heads (TAFE, ESMM): logit ``l_t`` is the conditional logit,
``q_t = sigmoid(l_t)`` and ``p_t = q_1 * ... * q_t``, computed as
``log p_t = sum_{k<=t} log_sigmoid(l_k)`` and
``log(1 - p_t) = log1mexp(log p_t)``, so ``p_t <= p_{t-1}`` holds for every
sample and nothing underflows to a log of zero for logits in [-50, 50].

Independent heads (Shared-Bottom, MMoE, PLE, AITM): ``l_t`` is an
entire-space logit, ``p_t = sigmoid(l_t)``; the reported
``q_t = p_t / p_{t-1}`` is clipped to ``[0, 1]`` (those models can give
``p_t > p_{t-1}``), ``q_1 = p_1``.

Everything is computed in float32 whatever the input dtype (mixed precision).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import tensorflow as tf

_LOG_HALF = -math.log(2.0)


def log1mexp(x: tf.Tensor) -> tf.Tensor:
  """``log(1 - exp(x))`` for ``x <= 0``, accurately (Maechler 2012).

  Uses ``log(-expm1(x))`` for ``x > -log 2`` and ``log1p(-exp(x))`` otherwise.
  Each branch is fed a harmless value where it is not selected, so neither
  produces inf/NaN gradients that ``tf.where`` would turn into NaN. Returns
  -inf at ``x = 0`` (p = 1), as it should.
  """
  x = tf.convert_to_tensor(x)
  near_zero = x > _LOG_HALF
  safe_near = tf.where(near_zero, x, -1.0)
  safe_far = tf.where(near_zero, -1.0, x)
  return tf.where(
    near_zero, tf.math.log(-tf.math.expm1(safe_near)), tf.math.log1p(-tf.exp(safe_far))
  )


def step_log_probabilities(logits: tf.Tensor, chained: bool) -> Tuple[tf.Tensor, tf.Tensor]:
  """``(log p, log(1 - p))``, each ``[B, T]`` float32, of the entire-space p_t.

  Args:
    logits: ``[B, T]`` step logits (conditional when ``chained``).
    chained: Whether the logits are conditional (chained heads).
  """
  logits = tf.cast(logits, tf.float32)
  if chained:
    log_p = tf.math.cumsum(tf.math.log_sigmoid(logits), axis=-1)
    return log_p, log1mexp(log_p)
  return tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)


def conditional_probabilities(logits: tf.Tensor, log_p: tf.Tensor, chained: bool) -> tf.Tensor:
  """Float32 ``[B, T]`` q_t: ``sigmoid(l_t)`` or (independent) p_t/p_{t-1}."""
  if chained:
    return tf.sigmoid(tf.cast(logits, tf.float32))
  log_q = tf.concat([log_p[:, :1], tf.minimum(log_p[:, 1:] - log_p[:, :-1], 0.0)], axis=1)
  return tf.exp(log_q)


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class ChainedProbabilities(tf.keras.layers.Layer):
  """Logits ``[B, T]`` -> ``(p [B, T], q [B, T])``, float32.

  Args:
    chained: True: the logits are conditional (q_t = sigmoid(l_t), p_t the
      product); False: the logits are independent entire-space logits.
  """

  def __init__(self, chained: bool = True, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.chained = chained

  def call(self, logits: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    log_p, _ = step_log_probabilities(logits, self.chained)
    return tf.exp(log_p), conditional_probabilities(logits, log_p, self.chained)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config["chained"] = self.chained
    return config


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class StepCalibration(tf.keras.layers.Layer):
  """Per-step affine map of the step logits: ``l_t -> a_t l_t + b_t``.

  Platt scaling of each step's logit (conditional for chained heads), fitted
  after training on held-out rows (:mod:`tafe_tf.calibration`) and kept in
  the model's variables, so checkpoints, ``.keras`` files and the exported
  SavedModel all serve calibrated probabilities. Not trainable: identity
  (``a = 1, b = 0``) until fitted.

  Args:
    num_steps: T.

  Call: ``[B, T]`` logits -> ``[B, T]`` float32 logits.
  """

  def __init__(self, num_steps: int, **kwargs):
    kwargs.setdefault("dtype", "float32")
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    if num_steps < 1:
      raise ValueError(f"{self.name}: num_steps must be >= 1, got {num_steps}")
    self.num_steps = num_steps
    # Built at once: the fit assigns before any call.
    self.build(tf.TensorShape([None, num_steps]))

  def build(self, input_shape: tf.TensorShape) -> None:
    self.scale = self.add_weight(
      name="scale", shape=(self.num_steps,), initializer="ones", trainable=False
    )
    self.shift = self.add_weight(
      name="shift", shape=(self.num_steps,), initializer="zeros", trainable=False
    )
    super().build(input_shape)

  def call(self, logits: tf.Tensor) -> tf.Tensor:
    return tf.cast(logits, tf.float32) * self.scale + self.shift

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config["num_steps"] = self.num_steps
    return config
