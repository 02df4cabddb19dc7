"""Explicit feature interactions on the embedded input: DCN-v2 cross or dot.

The ``interaction`` switch of every model (:class:`~tafe_tf.models.base
.BaseHParams`), applied once, between the front end and the networks:

* ``"cross"``: ``cross_layers`` DCN-v2 cross layers (Wang et al., WWW 2021;
  ``tfrs.layers.dcn.Cross``) over the flat embedding ``x_0``:
  ``x_{l+1} = x_0 * (W x_l + b) + x_l``, with ``W = U V`` of rank
  ``projection_dim`` when one is given (full rank otherwise); TFRS's
  initializers (``W`` truncated normal with stddev 0.05, ``b`` zeros).
* ``"dot"``: the pairwise dot products of the F field embeddings
  (FM / DLRM style), ``<e_i, e_j>`` for ``i < j``, concatenated to the flat
  embedding; needs one width for every field.
* ``"none"``: the flat embedding unchanged.

Input ``[B, D]`` (flat) or ``[B, F, D]`` (one token per field; ``"dot"`` needs
this form); output always flat: ``[B, F * D]`` (none, cross) or
``[B, F * D + F (F - 1) / 2]`` (dot).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

# The names live in tafe_tf.hparams (no TensorFlow there).
from tafe_tf.hparams import CROSS, DOT, INTERACTIONS, NONE  # noqa: E402
from tafe_tf.layers import initializers


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class FeatureInteraction(tf.keras.layers.Layer):
  """Cross layers or pairwise dot products on the embedded input.

  Args:
    mode: ``"none"``, ``"cross"`` or ``"dot"`` (module docstring).
    cross_layers: Stacked cross layers (``"cross"``), >= 1.
    projection_dim: Rank of each cross layer's ``W = U V`` (None: full rank).
    seed: Initializer seed.

  Call: ``[B, D]`` or ``[B, F, D]`` -> flat ``[B, out]`` (module docstring);
  ``"dot"`` on a flat ``[B, D]`` input is a ValueError.
  """

  def __init__(
    self,
    mode: str = NONE,
    cross_layers: int = 2,
    projection_dim: Optional[int] = None,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    if mode not in INTERACTIONS:
      raise ValueError(f"interaction must be one of {INTERACTIONS}, got {mode!r}")
    if cross_layers < 1:
      raise ValueError(f"cross_layers must be >= 1, got {cross_layers}")
    if projection_dim is not None and projection_dim < 1:
      raise ValueError(f"cross_projection_dim must be >= 1 or None, got {projection_dim}")
    self.mode = mode
    self.cross_layers = cross_layers
    self.projection_dim = projection_dim
    self.seed = seed
    self.crosses = []
    if mode == CROSS:
      # TFRS's own default initializer (truncated normal, stddev 0.05), seeded
      # per layer so a seeded model is rebuilt bit for bit.
      self.crosses = [
        tfrs.layers.dcn.Cross(
          projection_dim=projection_dim,
          kernel_initializer=tf.keras.initializers.TruncatedNormal(
            stddev=0.05, seed=initializers.derive_seed(seed, layer)
          ),
          name=f"cross_{layer}",
        )
        for layer in range(cross_layers)
      ]
    self._pairs: Optional[np.ndarray] = None

  def build(self, input_shape: tf.TensorShape) -> None:
    input_shape = tf.TensorShape(input_shape)
    if self.mode == DOT:
      if input_shape.rank != 3:
        raise ValueError(
          f"{self.name}: interaction='dot' needs [B, F, D] field embeddings, got shape "
          f"{input_shape}"
        )
      num_fields = int(input_shape[1])
      rows, cols = np.triu_indices(num_fields, k=1)
      # Positions of the pairs i < j in the flattened [F, F] Gram matrix.
      self._pairs = (rows * num_fields + cols).astype(np.int32)
    super().build(input_shape)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    x = inputs
    flat = tf.reshape(x, [-1, x.shape[1] * x.shape[2]]) if x.shape.rank == 3 else x
    if self.mode == CROSS:
      out = flat
      for cross in self.crosses:
        out = cross(flat, out)
      return out
    if self.mode == DOT:
      gram = tf.matmul(x, x, transpose_b=True)  # [B, F, F]
      dots = tf.gather(tf.reshape(gram, [-1, x.shape[1] * x.shape[1]]), self._pairs, axis=1)
      return tf.concat([flat, dots], axis=1)
    return flat

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      mode=self.mode,
      cross_layers=self.cross_layers,
      projection_dim=self.projection_dim,
      seed=self.seed,
    )
    return config
