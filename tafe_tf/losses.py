"""The Dependence Task Learning (DTL) loss, from logits, in log space.

Per example, with cumulative labels y_t and entire-space probabilities p_t::

    L = sum_t w_t * BCE(y_t, p_t)                             (all impressions)
      + calibration_weight * sum_{t>1} relu(p_t - p_{t-1})    (AITM calibrator)
      + conditional_weight * sum_{t>1} y_{t-1} * BCE(y_t, q_t)  (chained only)

``BCE(y, p) = -(y log p + (1 - y) log(1 - p))`` with ``log p`` and
``log(1 - p)`` from
:func:`tafe_tf.layers.probabilities.step_log_probabilities` (log-sigmoid sums
and log1mexp; never the log of a product of sigmoids, never clipping).
The terms are multiplied with ``multiply_no_nan`` so a label of 0 times
``log p = -inf`` (or 1 times ``log(1 - p) = -inf``) contributes exactly 0.

The conditional term is the classic CVR loss (step t given step t-1 happened,
where ``e_t = y_t``) on the rows with ``y_{t-1} = 1``; it is summed per example
and averaged over ALL impressions like the other terms (rows with
``y_{t-1} = 0`` add 0), so its scale moves with the step-(t-1) rate. It needs
chained heads: independent heads have no well-defined q_t to train.

The calibrator is 0 for chained heads by construction (p_t <= p_{t-1}).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from tafe_tf.layers import probabilities


def stack_labels(labels: Mapping[str, tf.Tensor], steps: Sequence[str]) -> tf.Tensor:
  """``step -> [B] labels`` to a float32 ``[B, T]`` tensor in step order."""
  missing = [s for s in steps if s not in labels]
  if missing:
    raise KeyError(f"labels miss steps {missing}; got {sorted(labels)}, need {list(steps)}")
  return tf.stack([tf.cast(labels[s], tf.float32) for s in steps], axis=1)


def _bce(labels: tf.Tensor, log_p: tf.Tensor, log_1mp: tf.Tensor) -> tf.Tensor:
  return -(tf.math.multiply_no_nan(log_p, labels) + tf.math.multiply_no_nan(log_1mp, 1.0 - labels))


@dataclasses.dataclass(frozen=True)
class DTLLoss:
  """The DTL loss of a T-step model.

  Attributes:
    num_steps: T >= 2.
    chained: Whether logits are conditional (chained heads).
    step_weights: w_t per step (None: all 1).
    calibration_weight: Weight of ``relu(p_t - p_{t-1})`` (AITM uses 0.6).
    conditional_weight: Weight of the conditional BCE on ``y_{t-1} = 1`` rows.
  """

  num_steps: int
  chained: bool
  step_weights: Optional[Tuple[float, ...]] = None
  calibration_weight: float = 0.0
  conditional_weight: float = 0.0

  def __post_init__(self):
    if self.num_steps < 2:
      raise ValueError(f"DTL loss needs >= 2 steps, got {self.num_steps}")
    if self.step_weights is not None:
      weights = tuple(float(w) for w in self.step_weights)
      if len(weights) != self.num_steps:
        raise ValueError(f"step_weights has {len(weights)} entries for {self.num_steps} steps")
      if min(weights) < 0:
        raise ValueError(f"step_weights must be >= 0, got {weights}")
      object.__setattr__(self, "step_weights", weights)
    if self.calibration_weight < 0 or self.conditional_weight < 0:
      raise ValueError(
        "calibration_weight and conditional_weight must be >= 0,"
        f" got {self.calibration_weight} and "
        f"{self.conditional_weight}"
      )
    if self.conditional_weight > 0 and not self.chained:
      raise ValueError(
        "conditional_weight > 0 needs chained heads (q_t is "
        "not a model output of independent heads)"
      )

  def per_example(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Loss per example, float32 ``[B]``.

    Args:
      labels: ``[B, T]`` cumulative 0/1 labels.
      logits: ``[B, T]`` step logits (any float dtype; computed in float32).
    """
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    log_p, log_1mp = probabilities.step_log_probabilities(logits, self.chained)
    per_step = _bce(labels, log_p, log_1mp)
    if self.step_weights is not None:
      per_step = per_step * tf.constant(self.step_weights, tf.float32)
    loss = tf.reduce_sum(per_step, axis=1)
    if self.calibration_weight > 0:
      p = tf.exp(log_p)
      loss += self.calibration_weight * tf.reduce_sum(tf.nn.relu(p[:, 1:] - p[:, :-1]), axis=1)
    if self.conditional_weight > 0:
      conditional = _bce(
        labels[:, 1:], tf.math.log_sigmoid(logits[:, 1:]), tf.math.log_sigmoid(-logits[:, 1:])
      )
      loss += self.conditional_weight * tf.reduce_sum(labels[:, :-1] * conditional, axis=1)
    return loss

  def __call__(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean loss over the batch (a scalar)."""
    return tf.reduce_mean(self.per_example(labels, logits))
