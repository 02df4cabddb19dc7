"""PLE: Progressive Layered Extraction (Tang et al., RecSys 2020).

``num_levels`` stacked CGC levels: each step owns ``experts_per_task`` experts,
K experts are shared; step t's gate mixes its own and the shared experts, and
on every level but the last a shared gate mixes all experts into the next
level's shared input. One tower per step. Independent heads on the cumulative
labels (not chained).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.hparams import PLEHParams
from tafe_tf.layers import extraction, towers
from tafe_tf.models import base


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class PLE(base.MultiStepModel):
  """PLE with independent entire-space heads."""

  MODEL_NAME = "ple"
  HParams = PLEHParams

  def __init__(self, schema: features_lib.Schema, **hparams: Any):
    hp = self.make_hparams(**hparams)
    super().__init__(schema, hp, chained=False)
    num_steps = len(self.steps)
    self.levels = [
      extraction.CustomizedGateControl(
        num_steps,
        hp.num_experts,
        hp.experts_per_task,
        hp.expert_units,
        shared_output=level < hp.num_levels - 1,
        dropout=hp.dropout,
        seed=self._seed(10 + level),
        name=f"cgc_{level}",
      )
      for level in range(hp.num_levels)
    ]
    self.towers = towers.TaskTower(
      num_steps, hp.tower_units, dropout=hp.dropout, seed=self._seed(2), name="towers"
    )

  def _forward(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    x_shared = self.embed(features, training)
    x_tasks = x_shared  # [B, in]: the same input for every step at level 0
    gates: Dict[str, tf.Tensor] = {}
    for level, cgc in enumerate(self.levels):
      out = cgc((x_shared, x_tasks), training=training)
      x_tasks = out["tasks"]
      for step, weights in zip(self.steps, tf.unstack(out["gates"], axis=1)):
        gates[f"level{level}/{step}"] = weights
      if "shared" in out:
        x_shared = out["shared"]
        gates[f"level{level}/shared"] = out["shared_gates"]
    _, logits = self.towers(x_tasks, training=training)
    return logits, gates
