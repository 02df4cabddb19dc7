"""TAFE: Task Aware Feature Extraction (our reading of arXiv 2301.02494).

Not the paper's code (its full text is not available to us): every part is a
switch so an ablation can show what it buys. See docs/models.md.

    front end -> [field interaction] -> L levels of
      { adaptive pattern extraction: K shared experts, per-step
        task-indicator gate -> s_t;
        task-specific extraction: J experts per step + s_t -> h_t }
    -> for t = 1..T: z_t = transfer(h_t, u_{t-1}); (u_t, l_t) = tower_t(z_t)
    -> chained: q_t = sigmoid(l_t), p_t = q_1 ... q_t (or independent heads)
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.hparams import TAFEHParams
from tafe_tf.layers import embedding as embedding_lib
from tafe_tf.layers import extraction, interaction, towers
from tafe_tf.layers import transfer as transfer_lib
from tafe_tf.models import base


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class TAFE(base.MultiStepModel):
  """TAFE (see the module docstring and :class:`TAFEHParams`)."""

  MODEL_NAME = "tafe"
  HParams = TAFEHParams

  def __init__(self, schema: features_lib.Schema, **hparams: Any):
    hp = self.make_hparams(**hparams)
    super().__init__(
      schema,
      hp,
      chained=hp.chained,
      embedding_output_mode=(embedding_lib.FIELDS if hp.field_interaction else embedding_lib.FLAT),
    )
    num_steps = len(self.steps)
    self.field_interaction = (
      interaction.FieldInteraction(
        num_heads=hp.interaction_heads, seed=self._seed(1), name="field_interaction"
      )
      if hp.field_interaction
      else None
    )
    self.shared_extraction = []
    self.task_extraction = []
    for level in range(hp.num_levels):
      last = level == hp.num_levels - 1
      self.shared_extraction.append(
        extraction.AdaptivePatternExtraction(
          num_steps,
          hp.num_experts,
          hp.expert_units,
          hp.indicator_dim,
          hp.gate_units,
          hp.top_k,
          shared_output=not last,
          task_indicators=hp.task_indicators,
          dropout=hp.dropout,
          seed=self._seed(10 + 2 * level),
          name=f"adaptive_pattern_extraction_{level}",
        )
      )
      if hp.experts_per_task:
        self.task_extraction.append(
          extraction.TaskSpecificExtraction(
            num_steps,
            hp.experts_per_task,
            hp.expert_units,
            dropout=hp.dropout,
            seed=self._seed(11 + 2 * level),
            name=f"task_specific_extraction_{level}",
          )
        )
    self.transfers = [
      transfer_lib.DependenceTransfer(
        hp.transfer,
        hp.transfer_stop_gradient,
        dropout=hp.dropout,
        seed=self._seed(100 + t),
        name=f"transfer_{step}",
      )
      for t, step in enumerate(self.steps)
      if t > 0
    ]
    self.towers = [
      towers.TaskTower(
        1,
        hp.tower_units,
        gated=hp.gated_towers,
        dropout=hp.dropout,
        seed=self._seed(200 + t),
        name=f"tower_{step}",
      )
      for t, step in enumerate(self.steps)
    ]

  def _forward(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    x = self.embedding(features)
    if self.field_interaction is not None:
      x = self.field_interaction(x)  # [B, F, D]
    x = self.interact(x, training)  # the shared front end's interaction switch
    x_shared = x
    x_tasks = x  # [B, in]: the same input for every step at the first level
    gates: Dict[str, tf.Tensor] = {}
    for level, shared_stage in enumerate(self.shared_extraction):
      out = shared_stage((x_shared, x_tasks), training=training)
      h_tasks = out["tasks"]
      gates.update(_per_step(f"level{level}", self.steps, out["gates"]))
      if "shared" in out:
        gates[f"level{level}/shared"] = out["shared_gates"]
        x_shared = out["shared"]
      if self.task_extraction:
        mixed = self.task_extraction[level]((x_tasks, h_tasks), training=training)
        h_tasks = mixed["tasks"]
        gates.update(_per_step(f"level{level}", self.steps, mixed["gates"], suffix="/mix"))
      x_tasks = h_tasks
    logits = []
    previous = None
    # Unstack and squeeze, not slices: a slice's gradient is a scatter.
    for t, z in enumerate(tf.unstack(x_tasks, axis=1)):
      if t > 0:
        z = self.transfers[t - 1]((z, previous), training=training)
      u, logit = self.towers[t](z, training=training)
      previous = tf.squeeze(u, axis=1)
      logits.append(logit)
    return tf.concat(logits, axis=1), gates


def _per_step(
  prefix: str, steps: Tuple[str, ...], weights: tf.Tensor, suffix: str = ""
) -> Dict[str, tf.Tensor]:
  """``{"<prefix>/<step><suffix>": weights[:, t]}`` from ``[B, T, E]``."""
  return {f"{prefix}/{step}{suffix}": w for step, w in zip(steps, tf.unstack(weights, axis=1))}
