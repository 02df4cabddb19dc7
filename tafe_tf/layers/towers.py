"""Task towers: per-step MLPs ending in one logit, batched over steps.

A tower maps its step's representation ``z`` to a hidden representation ``u``
(what dependence transfer hands to the next step) and a logit ``l = w.u + b``.
With ``gated=True`` the input first passes a sample-wise feature gate,
``z' = z * 2 sigmoid(W_g z + b_g)`` (TAFE's gated towers, our reading: the
factor 2 makes the gate start as the identity on average, as in PEPNet's
gate unit), so each step can damp input features that hurt it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import tensorflow as tf

from tafe_tf.layers import experts as experts_lib
from tafe_tf.layers import initializers


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class TaskTower(tf.keras.layers.Layer):
  """``num_towers`` towers of the same shape, each with its own weights.

  Args:
    num_towers: G towers (all steps at once, or 1 for a single step).
    units: Hidden widths (ReLU); ``()`` puts the logit straight on the input.
    gated: Put a feature gate on the input.
    dropout: Dropout after every hidden layer.
    seed: Initializer seed.

  Call: ``[B, in]`` (one input for every tower) or ``[B, G, in]`` ->
  ``(u [B, G, units[-1] or in], logits [B, G])``.
  """

  def __init__(
    self,
    num_towers: int,
    units: Sequence[int] = (),
    gated: bool = False,
    dropout: float = 0.0,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.num_towers = num_towers
    self.units = tuple(int(u) for u in units)
    self.gated = gated
    self.dropout = dropout
    self.seed = seed
    self.hidden = (
      experts_lib.ExpertBank(
        num_towers,
        1,
        self.units,
        dropout=dropout,
        seed=initializers.derive_seed(seed, 0),
        name="hidden",
      )
      if self.units
      else None
    )
    self.head = experts_lib.ExpertBank(
      num_towers, 1, (1,), activation=None, seed=initializers.derive_seed(seed, 1), name="logit"
    )
    self._gate_bank = None

  def build(self, input_shape: tf.TensorShape) -> None:
    if self.gated:
      width = int(tf.TensorShape(input_shape)[-1])
      self._gate_bank = experts_lib.ExpertBank(
        self.num_towers,
        1,
        (width,),
        activation="sigmoid",
        seed=initializers.derive_seed(self.seed, 2),
        name="feature_gate",
      )
    super().build(input_shape)

  def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    # A [B, in] input stays one tensor (the banks take it as every tower's
    # input, one GEMM for all towers) instead of being copied per tower;
    # reshapes, not slices, drop the banks' unit axes (a slice's gradient is
    # a scatter into zeros).
    x = inputs
    g = self.num_towers
    if self._gate_bank is not None:
      gate = tf.squeeze(self._gate_bank(x), axis=2)  # [B, G, in]
      x = (tf.expand_dims(x, 1) if x.shape.rank == 2 else x) * 2.0 * gate
    if self.hidden is not None:
      u = tf.squeeze(self.hidden(x, training=training), axis=2)
    elif x.shape.rank == 2:
      u = tf.repeat(x[:, None, :], g, axis=1)
    else:
      u = x
    logits = tf.reshape(self.head(u), [-1, g])
    return u, logits

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_towers=self.num_towers,
      units=list(self.units),
      gated=self.gated,
      dropout=self.dropout,
      seed=self.seed,
    )
    return config
