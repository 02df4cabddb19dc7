"""The schema-driven front end with its id tables in a TFRS ``TPUEmbedding``.

:class:`TPUFeatureEmbedding` is :class:`~tafe_tf.layers.embedding
.FeatureEmbedding` (same fields, output order, pooling and dense projections)
whose id tables are those of ``tfrs.layers.embedding.TPUEmbedding``, laid out
by :func:`tpu_embedding_feature_config` and :func:`tpu_row_offsets` (the TPU
table layout, beside the layer that uses it): one table per embedding width,
each id field a block of rows at a fixed offset, weighted lists pooled by the
``mean`` combiner (``sum w e / sum w``; an empty list or all-zero weights give
a zero vector, as in ``FeatureEmbedding``).

* Created under a ``TPUStrategy``, the tables live in TPU embedding memory
  and are updated by the TPU embedding engine with ``optimizer`` (a
  ``tf.tpu.experimental.embedding`` optimizer or a Keras one TFRS translates);
  they are not among the model's trainable variables.
* Created anywhere else (CPU, GPU, tests), the same layer keeps the tables as
  ordinary trainable variables, trained by the model's own optimizer, and its
  checkpoints are compatible with the TPU ones (TFRS' contract).

Inputs are raw features (ids are looked up here) or the ``rows/<field>`` of
:meth:`FeatureEmbedding.lookup_rows` (what a compiled TPU step gets).
Single-valued fields go to TFRS as dense ``[B]`` rows, weighted lists as
``SparseTensor`` rows and weights (padding entries carry weight 0, which the
lookup prunes).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tafe_tf import features as features_lib
from tafe_tf.layers import embedding as embedding_lib
from tafe_tf.layers import initializers


def tpu_embedding_feature_config(
  schema: features_lib.Schema,
  embedding_dim: int,
  field_embedding_dims: Optional[Mapping[str, int]] = None,
  optimizer: Optional[Any] = None,
  seed: Optional[int] = None,
) -> Dict[str, Any]:
  """``tf.tpu.experimental.embedding.FeatureConfig`` per id field.

  One ``TableConfig`` per table of :class:`FeatureEmbedding`'s fused layout
  (``table_d<dim>``: the id fields of one width share it, each owning a block
  of rows), so the tables that live in TPU embedding memory are the ones the
  CPU/GPU model trains. Single-valued fields have output shape ``[batch]``'s
  embedding; weighted lists use the ``mean`` combiner (sum of w_i e_i over sum
  of w_i, as the CPU layer pools them). The dict goes to
  ``tfrs.layers.embedding.TPUEmbedding(feature_config, optimizer)``; its
  inputs are the rows of :meth:`FeatureEmbedding.lookup_rows` plus the field's
  block offset (:func:`tpu_row_offsets`), as sparse or ragged tensors with the
  weights.

  Args:
    schema: The dataset schema.
    embedding_dim, field_embedding_dims: The model's widths
      (:func:`tafe_tf.layers.embedding.field_widths`).
    optimizer: A ``tf.tpu.experimental.embedding`` optimizer for the tables
      (None: the TPUEmbedding layer's).
    seed: Seed of the table initialisers, derived per table as
      ``FeatureEmbedding`` derives its own (same seed, same initial tables).
  """
  groups = embedding_lib.table_groups(schema, embedding_dim, field_embedding_dims)
  config = {}
  for i, g in enumerate(groups):
    table = tf.tpu.experimental.embedding.TableConfig(
      vocabulary_size=g.num_rows,
      dim=g.dim,
      initializer=initializers.embedding_uniform(initializers.derive_seed(seed, i)),
      optimizer=optimizer,
      combiner="mean",
      name=g.name,
    )
    for f in g.fields:
      config[f.name] = tf.tpu.experimental.embedding.FeatureConfig(table=table, name=f.name)
  return config


def tpu_row_offsets(
  schema: features_lib.Schema,
  embedding_dim: int,
  field_embedding_dims: Optional[Mapping[str, int]] = None,
) -> Dict[str, int]:
  """First row of each id field's block in its TPU table (fused layout)."""
  out = {}
  for g in embedding_lib.table_groups(schema, embedding_dim, field_embedding_dims):
    out.update(g.offsets)
  return out


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class TPUFeatureEmbedding(embedding_lib.FeatureEmbedding):
  """:class:`FeatureEmbedding` over a ``tfrs.layers.embedding.TPUEmbedding``.

  Args:
    schema: The dataset schema.
    embedding_dim, field_embedding_dims: The widths (see ``FeatureEmbedding``).
    output_mode: ``"flat"`` or ``"fields"`` (see ``FeatureEmbedding``).
    seed: Seed of the table initialisers and dense projections.
    optimizer: The tables' optimizer on a TPU (None off TPUs: the model's
      optimizer trains them). Must be created in the same strategy scope.

  Call: as ``FeatureEmbedding`` (ragged or padded lists, raw ids or rows).
  """

  def __init__(
    self,
    schema: features_lib.Schema,
    embedding_dim: int,
    field_embedding_dims: Optional[Mapping[str, int]] = None,
    output_mode: str = embedding_lib.FLAT,
    seed: Optional[int] = None,
    optimizer: Optional[Any] = None,
    **kwargs,
  ):
    super().__init__(
      schema,
      embedding_dim,
      field_embedding_dims,
      fused=True,
      output_mode=output_mode,
      seed=seed,
      **kwargs,
    )
    self._row_offsets = tpu_row_offsets(schema, embedding_dim, field_embedding_dims)
    # Created now, in the caller's strategy scope: TFRS picks the TPU or the
    # CPU implementation from the strategy current at construction.
    self.tpu_embedding = tfrs.layers.embedding.TPUEmbedding(
      tpu_embedding_feature_config(schema, embedding_dim, field_embedding_dims, seed=seed),
      optimizer=optimizer,
    )

  def _build_tables(self) -> Dict[str, tf.Variable]:
    return {}  # the TPUEmbedding holds them

  @property
  def tables(self) -> Dict[str, tf.Variable]:
    """The TPUEmbedding's table variables by table name (built layer)."""
    if not self.built:
      raise ValueError(f"{self.name}: call the layer (or build it) before reading its tables")
    return {table.name: variable for table, variable in self.tpu_embedding.embedding_tables.items()}

  def _id_vectors(self, features: Mapping[str, Any]) -> Dict[str, tf.Tensor]:
    """``[B, dim]`` per id field, from one TPUEmbedding call."""
    ids: Dict[str, Any] = {}
    weights: Dict[str, Any] = {}
    for g in self._table_groups:
      for f in g.single:
        field_ids = self._ids(features, f)
        if field_ids.shape.rank != 1:
          raise ValueError(
            f"field {f.name!r}: expected ids of shape [batch], got {field_ids.shape}"
          )
        ids[f.name] = self._rows(features, f, field_ids) + self._row_offsets[f.name]
        weights[f.name] = None
      for f in g.multi:
        # Ragged or padded, raw ids or rows; padding entries get weight 0.
        values, w, row_ids, batch = embedding_lib.flat_weighted_ids(
          self._ids(features, f), self._get(features, f.weight_key), f.name
        )
        rows = self._rows(features, f, values) + self._row_offsets[f.name]
        ids[f.name] = tf.RaggedTensor.from_value_rowids(rows, row_ids, nrows=batch).to_sparse()
        weights[f.name] = tf.RaggedTensor.from_value_rowids(w, row_ids, nrows=batch).to_sparse()
    return self.tpu_embedding(ids, weights)

  def call(self, features: Mapping[str, Any]) -> tf.Tensor:
    vectors = self._id_vectors(features)
    blocks = []
    for g in self._table_groups:
      if g.single:
        blocks.append(tf.stack([vectors[f.name] for f in g.single], axis=1))
    for g in self._table_groups:
      if g.multi:
        blocks.append(tf.stack([vectors[f.name] for f in g.multi], axis=1))
    return self._assemble(blocks, features)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    del config["fused"]  # always the fused layout
    return config
