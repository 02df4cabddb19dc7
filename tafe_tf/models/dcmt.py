"""DCMT: Direct entire-space Causal Multi-Task (Zhu et al., ICDE 2023).

ESMM's network (shared embeddings, one MLP tower per step, chained heads,
pCTCVR = pCTR * pCVR supervised on all impressions by the DTL loss) with a
twin CVR tower: the factual head (the served pCVR, q_2) and a counterfactual
head q*_2 that predicts the conversion of the opposite world, trained on the
non-clicked impressions with the counterfactual label 1 - r. Two steps, with
o = click, r = purchase, p^ = clip(stop_gradient(pCTR)), every term averaged
over ALL impressions::

    counterfactual_weight * [ o / p^ * BCE(r, q_2)
                              + (1 - o) / (1 - p^) * BCE(1 - r, q*_2) ]
    + constraint_weight * |q_2 + q*_2 - 1|

(IPS on both spaces; the twin-tower constraint ties the heads together so
the counterfactual space's information reaches the factual head.) The
propensity is a stop-gradient: these terms never train the CTR tower.

T > 2 steps (our generalisation): the same for every later step t,
conditioned on step t-1: o = y_{t-1}, r = y_t, the heads q_t and q*_t, the
propensity p^ = clip(stop_gradient(p_{t-1})); one counterfactual tower per
later step; the terms are summed over t.

Choices (reference: the DCMT loss of the NISE benchmark code,
github.com/Hjh233/NISE, which produced the Ali-CCP numbers the issue cites):

* ``counterfactual_weight=1``, ``constraint_weight=1e-3``: its
  ``loss_cvr + loss_counterfactual_cvr + 1e-3 * loss_constraint`` added to
  the CTR and CTCVR BCEs (weights 1, the DTL default).
* ``propensity_floor=0.01``: p^ is clipped into [0.01, 0.99], so no weight
  exceeds 100; the reference clips at 1e-15 only, which lets one row with an
  extreme pCTR dominate a batch.
* The counterfactual towers are separate MLPs of the factual towers' shape,
  as in the reference.
* ``conditional_weight`` stays 0 here whatever the shared default: the factual
  term replaces the naive click-space CVR loss.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.hparams import DCMTHParams
from tafe_tf.layers import towers
from tafe_tf.models import escm2, esmm


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class DCMT(esmm.ESMM):
  """DCMT generalised to T chained steps."""

  MODEL_NAME = "dcmt"
  HParams = DCMTHParams

  def __init__(self, schema: features_lib.Schema, **hparams: Any):
    # ESMM's embeddings and factual towers (its _forward serves them).
    super().__init__(schema, **hparams)
    hp = self.hparams
    num_steps = len(self.steps)
    self.counterfactual_towers = towers.TaskTower(
      num_steps - 1,
      hp.tower_units,
      dropout=hp.dropout,
      seed=self._seed(2),
      name="counterfactual_towers",
    )

  def _forward_aux(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
    x = self.embed(features, training)
    _, logits = self.towers(x, training=training)
    _, counterfactual = self.counterfactual_towers(x, training=training)
    return logits, {}, {"counterfactual_logits": tf.cast(counterfactual, tf.float32)}

  def _extra_loss(
    self, labels: tf.Tensor, logits: tf.Tensor, aux: Mapping[str, tf.Tensor], training: bool
  ) -> Optional[tf.Tensor]:
    """The DCMT terms of the module docstring, per example ``[B]``."""
    del training
    hp = self.hparams
    observed = labels[:, :-1]  # o: step t-1 happened
    propensity = escm2.observed_propensity(logits, hp.propensity_floor, 1.0 - hp.propensity_floor)
    counterfactual_logits = aux["counterfactual_logits"]  # [B, T-1]
    factual = observed / propensity * escm2.conditional_bce(labels, logits)
    counterfactual = (
      (1.0 - observed)
      / (1.0 - propensity)
      * tf.nn.sigmoid_cross_entropy_with_logits(
        labels=1.0 - labels[:, 1:], logits=counterfactual_logits
      )
    )
    constraint = tf.abs(tf.sigmoid(logits[:, 1:]) + tf.sigmoid(counterfactual_logits) - 1.0)
    term = hp.counterfactual_weight * (factual + counterfactual) + hp.constraint_weight * constraint
    return tf.reduce_sum(term, axis=1)
