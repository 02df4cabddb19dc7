"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

K shared experts on the embedded input, one softmax gate per step (a linear map
of the same input), one tower per step on its mixture. Independent heads on the
cumulative labels (not chained).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.hparams import MMoEHParams
from tafe_tf.layers import extraction, towers
from tafe_tf.models import base


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class MMoE(base.MultiStepModel):
  """MMoE with independent entire-space heads."""

  MODEL_NAME = "mmoe"
  HParams = MMoEHParams

  def __init__(self, schema: features_lib.Schema, **hparams: Any):
    hp = self.make_hparams(**hparams)
    super().__init__(schema, hp, chained=False)
    num_steps = len(self.steps)
    self.experts = extraction.CustomizedGateControl(
      num_steps,
      hp.num_experts,
      0,
      hp.expert_units,
      top_k=hp.top_k,
      dropout=hp.dropout,
      seed=self._seed(1),
      name="mixture_of_experts",
    )
    self.towers = towers.TaskTower(
      num_steps, hp.tower_units, dropout=hp.dropout, seed=self._seed(2), name="towers"
    )

  def _forward(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    x = self.embed(features, training)
    out = self.experts((x, x), training=training)  # every step's input is x
    _, logits = self.towers(out["tasks"], training=training)
    gates = {
      f"level0/{step}": weights
      for step, weights in zip(self.steps, tf.unstack(out["gates"], axis=1))
    }
    return logits, gates
