"""ESMM: Entire Space Multi-task Model (Ma et al., SIGIR 2018), T steps.

Shared embeddings, one independent MLP tower per step on the embedded input,
chained heads: tower t's logit is the conditional logit of step t, and only
the entire-space products p_t = q_1 ... q_t are supervised (the DTL loss). With
two steps this is ESMM exactly (pCTR tower, pCVR tower, pCTCVR = their product).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.hparams import ESMMHParams
from tafe_tf.layers import towers
from tafe_tf.models import base


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class ESMM(base.MultiStepModel):
  """ESMM generalised to T chained steps."""

  MODEL_NAME = "esmm"
  HParams = ESMMHParams

  def __init__(self, schema: features_lib.Schema, **hparams: Any):
    hp = self.make_hparams(**hparams)
    super().__init__(schema, hp, chained=True)
    self.towers = towers.TaskTower(
      len(self.steps), hp.tower_units, dropout=hp.dropout, seed=self._seed(1), name="towers"
    )

  def _forward(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    _, logits = self.towers(self.embed(features, training), training=training)
    return logits, {}
