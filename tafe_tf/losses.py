"""The Dependence Task Learning (DTL) loss, from logits, in log space.

Per example, with cumulative labels y_t (y_t = 1: steps 1..t happened),
entire-space probabilities p_t and conditional ones q_t (p_t = q_1 ... q_t)::

    L = w_1 BCE(y_1, p_1)
      + sum_{t>1} w_t [ entire_space_weight * BCE(y_t, p_t)          (all rows)
                      + conditional_weight * s_t y_{t-1} BCE(y_t, q_t) ] (chained)
      + calibration_weight * sum_{t>1} relu(p_t - p_{t-1})            (AITM)

Why these terms (docs/models.md, "The DTL loss", has the derivation): the
chain's exact negative log-likelihood is ``BCE(y_1, q_1) + sum_{t>1} y_{t-1}
BCE(y_t, q_t)``: step 1 on every impression, step t only where step t-1
happened. That is ``entire_space_weight = 0, conditional_weight = 1``. The
ESMM form (``entire_space_weight = 1, conditional_weight = 0``) is the sum of
the marginal likelihoods of each p_t: also minimised by the true
probabilities, but it counts step 1's evidence again in every later term.
Both together (1, 1) is our earlier reading of the paper.

``s_t`` (``conditional_normalization``) is 1 ("impressions": the likelihood,
averaged over every impression, so a late step's term is as small as its
parent step is rare) or ``B / sum_b y_{t-1}`` over the batch ("parents": the
term averaged over the rows where step t-1 happened, as a CVR model trained on
clicks averages it: a loss scale for rare late steps).

``BCE(y, p) = -(y log p + (1 - y) log(1 - p))`` with ``log p`` and
``log(1 - p)`` from
:func:`tafe_tf.layers.probabilities.step_log_probabilities` (log-sigmoid sums
and log1mexp; never the log of a product of sigmoids, never clipping).
The terms are multiplied with ``multiply_no_nan`` so a label of 0 times
``log p = -inf`` (or 1 times ``log(1 - p) = -inf``) contributes exactly 0.

Conditional terms need chained heads: independent heads have no
well-defined q_t to train. The calibrator is 0 for chained heads by
construction (p_t <= p_{t-1}).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from tafe_tf.hparams import CONDITIONAL_NORMALIZATIONS, IMPRESSIONS, PARENTS
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
  """The DTL loss of a T-step model (the module docstring has the formula).

  Attributes:
    num_steps: T >= 2.
    chained: Whether logits are conditional (chained heads).
    step_weights: w_t per step, on all of step t's terms (None: all 1).
    entire_space_weight: Weight of the entire-space BCE of steps t > 1.
    conditional_weight: Weight of the conditional BCE of steps t > 1 on the
      rows where step t-1 happened (chained heads only).
    conditional_normalization: ``"impressions"`` (the likelihood) or
      ``"parents"`` (each conditional term averaged over its parent rows).
    calibration_weight: Weight of ``relu(p_t - p_{t-1})`` (AITM uses 0.6).
  """

  num_steps: int
  chained: bool
  step_weights: Optional[Tuple[float, ...]] = None
  entire_space_weight: float = 1.0
  conditional_weight: float = 0.0
  conditional_normalization: str = IMPRESSIONS
  calibration_weight: float = 0.0

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
    for name in ("entire_space_weight", "conditional_weight", "calibration_weight"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if self.conditional_normalization not in CONDITIONAL_NORMALIZATIONS:
      raise ValueError(
        f"conditional_normalization must be one of {', '.join(CONDITIONAL_NORMALIZATIONS)},"
        f" got {self.conditional_normalization!r}"
      )
    if self.conditional_weight > 0 and not self.chained:
      raise ValueError(
        "conditional_weight > 0 needs chained heads (q_t is "
        "not a model output of independent heads); set conditional_weight=0"
        " and entire_space_weight=1"
      )
    if self.entire_space_weight == 0 and self.conditional_weight == 0:
      raise ValueError(
        "entire_space_weight and conditional_weight are both 0: steps after the"
        " first would get no loss"
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
    entire_space = _bce(labels, log_p, log_1mp)
    # Step 1's entire-space term is its whole likelihood: always weight 1.
    per_step = tf.concat(
      [entire_space[:, :1], self.entire_space_weight * entire_space[:, 1:]], axis=1
    )
    if self.conditional_weight > 0:
      parents = labels[:, :-1]
      conditional = parents * _bce(
        labels[:, 1:], tf.math.log_sigmoid(logits[:, 1:]), tf.math.log_sigmoid(-logits[:, 1:])
      )
      if self.conditional_normalization == PARENTS:
        rows = tf.cast(tf.shape(labels)[0], tf.float32)
        conditional *= tf.math.divide_no_nan(rows, tf.reduce_sum(parents, axis=0))
      per_step += tf.pad(self.conditional_weight * conditional, [[0, 0], [1, 0]])
    if self.step_weights is not None:
      per_step = per_step * tf.constant(self.step_weights, tf.float32)
    loss = tf.reduce_sum(per_step, axis=1)
    if self.calibration_weight > 0:
      p = tf.exp(log_p)
      loss += self.calibration_weight * tf.reduce_sum(tf.nn.relu(p[:, 1:] - p[:, :-1]), axis=1)
    return loss

  def __call__(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean loss over the batch (a scalar)."""
    return tf.reduce_mean(self.per_example(labels, logits))
