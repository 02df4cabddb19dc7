"""Shared-Bottom (Caruana 1997): one shared MLP, then one tower per step.

Independent heads: tower t predicts the entire-space p_t on the cumulative
label y_t (not chained).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.hparams import SharedBottomHParams
from tafe_tf.layers import experts, towers
from tafe_tf.models import base


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class SharedBottom(base.MultiStepModel):
  """Shared-Bottom with independent entire-space heads."""

  MODEL_NAME = "shared_bottom"
  HParams = SharedBottomHParams

  def __init__(self, schema: features_lib.Schema, **hparams: Any):
    hp = self.make_hparams(**hparams)
    super().__init__(schema, hp, chained=False)
    self.bottom = experts.ExpertBank(
      1, 1, hp.expert_units, dropout=hp.dropout, seed=self._seed(1), name="bottom"
    )
    self.towers = towers.TaskTower(
      len(self.steps), hp.tower_units, dropout=hp.dropout, seed=self._seed(2), name="towers"
    )

  def _forward(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    shared = self.bottom(self.embed(features, training), training=training)
    _, logits = self.towers(tf.reshape(shared, [-1, shared.shape[-1]]), training=training)
    return logits, {}
