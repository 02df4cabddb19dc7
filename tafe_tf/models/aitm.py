"""AITM: Adaptive Information Transfer Multi-task (Xi et al., KDD 2021).

As in the reference code: one MLP tower per step on the shared embeddings;
step t's representation attends over itself and an "info" projection of step
t-1's transferred representation (the AIT module, :class:`DependenceTransfer`
in ``attention`` mode); a logit per step. The heads predict the entire-space
p_t directly (not chained) and the behavioural calibrator
``0.6 * relu(p_t - p_{t-1})`` (``calibration_weight``) pushes p_t below p_{t-1}.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.hparams import AITMHParams
from tafe_tf.layers import experts
from tafe_tf.layers import transfer as transfer_lib
from tafe_tf.models import base


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class AITM(base.MultiStepModel):
  """AITM with its calibrator, T steps."""

  MODEL_NAME = "aitm"
  HParams = AITMHParams

  def __init__(self, schema: features_lib.Schema, **hparams: Any):
    hp = self.make_hparams(**hparams)
    super().__init__(schema, hp, chained=False)
    num_steps = len(self.steps)
    self.towers = experts.ExpertBank(
      num_steps, 1, hp.tower_units, dropout=hp.dropout, seed=self._seed(1), name="towers"
    )
    self.transfers = [
      transfer_lib.DependenceTransfer(
        transfer_lib.ATTENTION, dropout=hp.dropout, seed=self._seed(100 + t), name=f"ait_{step}"
      )
      for t, step in enumerate(self.steps)
      if t > 0
    ]
    self.heads = experts.ExpertBank(
      num_steps, 1, (1,), activation=None, seed=self._seed(2), name="heads"
    )

  def _forward(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    towers = tf.unstack(
      tf.squeeze(self.towers(self.embed(features, training), training=training), axis=2), axis=1
    )
    transferred = [towers[0]]
    for t in range(1, len(self.steps)):
      transferred.append(self.transfers[t - 1]((towers[t], transferred[-1]), training=training))
    logits = tf.reshape(self.heads(tf.stack(transferred, axis=1)), [-1, len(self.steps)])
    return logits, {}
