"""The schema-driven feature front end: raw features -> field embeddings.

Per field kind:

* ``id``: the raw id is mapped to a row (:class:`IdLookup`) and embedded.
* ``weighted_ids``: every id is embedded and the field's vector is the
  weighted mean ``sum_i w_i e_i / sum_i w_i`` (zero for an empty list, or for
  weights summing to zero). Ragged ``[B, None]`` and padded ``[B, L]`` inputs
  (padding id :data:`tafe_tf.features.PAD_ID`, its weight ignored) give the same
  result (padding entries weigh 0, which leaves the sums bit-identical).
  Weights are expected to be >= 0.
* ``dense``: projected to its width by a linear map, or passed through
  unchanged when its width is 0.

Widths (:func:`field_widths`) are the model's, not the schema's: one
``embedding_dim`` for every field, optionally overridden per field.

Efficiency ("fused" mode, the default): id fields of equal embedding width share
ONE table variable, each field owning a block of rows at a fixed offset, so a
batch needs one gather for all single-valued fields of that width and one
gather plus one segment sum for all multi-valued fields, instead of one lookup
per field. Dense fields of equal (dim, width) are projected by one
batched matmul. ``fused=False`` gives every id field its own table (the
per-field layout), kept for the benchmark that compares both
(``launch/benchmark_training.py --embedding=per_field``).

Output order of the fields (see :attr:`FeatureEmbedding.field_names`): the
single-valued id fields, then the multi-valued ones, then projected dense
fields, then raw dense fields; within each part tables/projections in order of
first appearance in the schema and fields in schema order.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.layers import id_lookup, initializers

FLAT = "flat"
FIELDS = "fields"
# Feature key of a field's precomputed table rows (see FeatureEmbedding
# .lookup_rows): when present the layer skips the id lookup of that field.
ROWS_PREFIX = "rows/"
_OUTPUT_MODES = (FLAT, FIELDS)


@dataclasses.dataclass(frozen=True)
class _TableGroup:
  """Id fields that share one table variable (``[sum of num_rows, dim]``)."""

  name: str
  dim: int
  single: Tuple[features_lib.FieldSpec, ...]
  multi: Tuple[features_lib.FieldSpec, ...]

  @property
  def fields(self) -> Tuple[features_lib.FieldSpec, ...]:
    return self.single + self.multi

  @property
  def offsets(self) -> Dict[str, int]:
    """First row of each field's block."""
    out, row = {}, 0
    for f in self.fields:
      out[f.name] = row
      row += f.num_rows
    return out

  @property
  def num_rows(self) -> int:
    return sum(f.num_rows for f in self.fields)


@dataclasses.dataclass(frozen=True)
class _DenseGroup:
  """Dense fields of equal (dim, width), projected by one matmul."""

  name: str
  dim: int
  width: int
  fields: Tuple[features_lib.FieldSpec, ...]


def field_widths(
  schema: features_lib.Schema,
  embedding_dim: int,
  field_embedding_dims: Optional[Mapping[str, int]] = None,
) -> Dict[str, int]:
  """Each field's embedding width: ``field_embedding_dims[name]`` where given,
  else ``embedding_dim`` (for a dense field the projection width; 0 passes
  its vector through unprojected).

  The widths are the model's (its ``embedding_dim`` and
  ``field_embedding_dims`` hyperparameters); the schema describes data only.

  Raises:
    ValueError: on a width below 1 (0 for dense fields) or an override naming
      a field the schema lacks.
  """
  overrides = dict(field_embedding_dims or {})
  unknown = sorted(set(overrides) - set(schema.field_names))
  if unknown:
    raise ValueError(
      f"field_embedding_dims names {unknown}, not fields of "
      f"schema {schema.name!r} (its fields: "
      f"{', '.join(schema.field_names)})"
    )
  if embedding_dim < 1:
    raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
  widths = {}
  for f in schema.fields:
    width = overrides.get(f.name, embedding_dim)
    least = 1 if f.is_id else 0
    if width < least:
      raise ValueError(f"field {f.name!r}: embedding width must be >= {least}, got {width}")
    widths[f.name] = width
  return widths


def _group_id_fields(
  schema: features_lib.Schema, widths: Mapping[str, int], fused: bool
) -> List[_TableGroup]:
  """Id fields grouped by table: by width when fused, else one per field."""
  order: List[Any] = []
  members: Dict[Any, List[features_lib.FieldSpec]] = {}
  for f in schema.fields:
    if not f.is_id:
      continue
    key = widths[f.name] if fused else f.name
    if key not in members:
      order.append(key)
      members[key] = []
    members[key].append(f)
  groups = []
  for key in order:
    fs = members[key]
    name = f"table_d{key}" if fused else f"table_{key}"
    groups.append(
      _TableGroup(
        name=name,
        dim=widths[fs[0].name],
        single=tuple(f for f in fs if f.kind == features_lib.FieldKind.ID),
        multi=tuple(f for f in fs if f.kind == features_lib.FieldKind.WEIGHTED_IDS),
      )
    )
  return groups


def table_groups(
  schema: features_lib.Schema,
  embedding_dim: int,
  field_embedding_dims: Optional[Mapping[str, int]] = None,
  fused: bool = True,
) -> List[_TableGroup]:
  """The embedding tables of :class:`FeatureEmbedding` (name, width, fields
  and each field's row offset), e.g. to lay out TPU embedding tables alike."""
  return _group_id_fields(schema, field_widths(schema, embedding_dim, field_embedding_dims), fused)


def _group_dense_fields(
  schema: features_lib.Schema, widths: Mapping[str, int]
) -> Tuple[List[_DenseGroup], Tuple[features_lib.FieldSpec, ...]]:
  """Projected dense fields grouped by (dim, width); the raw dense fields."""
  order: List[Tuple[int, int]] = []
  members: Dict[Tuple[int, int], List[features_lib.FieldSpec]] = {}
  raw = []
  for f in schema.fields_of(features_lib.FieldKind.DENSE):
    if widths[f.name] == 0:
      raw.append(f)
      continue
    key = (f.dim, widths[f.name])
    if key not in members:
      order.append(key)
      members[key] = []
    members[key].append(f)
  groups = [
    _DenseGroup(name=f"dense_{d}x{w}", dim=d, width=w, fields=tuple(members[(d, w)]))
    for d, w in order
  ]
  return groups, tuple(raw)


def flat_weighted_ids(
  ids: Any, weights: Any, field_name: str
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """(values, weights, row ids, batch size) of a multi-valued field.

  Accepts ragged ``[B, None]`` or padded ``[B, L]`` ids and weights, flattened
  row-major. :data:`~tafe_tf.features.PAD_ID` entries (in either form) get
  weight 0 instead of being removed: adding exact zeros leaves every weighted
  sum bit-identical, so both forms give the same result, and it saves the
  compaction (a ``where`` and three gathers) on every batch.
  """
  if isinstance(ids, tf.RaggedTensor) != isinstance(weights, tf.RaggedTensor):
    raise ValueError(
      f"field {field_name!r}: ids and weights must both be ragged or both be padded dense tensors"
    )
  if isinstance(ids, tf.RaggedTensor):
    if ids.ragged_rank != 1:
      raise ValueError(
        f"field {field_name!r}: expected ragged [batch, None] "
        f"ids, got ragged rank {ids.ragged_rank}"
      )
    values = tf.cast(ids.values, tf.int64)
    weight_values = tf.cast(weights.values, tf.float32)
    row_ids = ids.value_rowids()
    batch_size = ids.nrows()
  else:
    if ids.shape.rank != 2:
      raise ValueError(
        f"field {field_name!r}: expected [batch, max_len] padded ids, got shape {ids.shape}"
      )
    shape = tf.shape(ids, out_type=tf.int64)
    batch_size = shape[0]
    values = tf.reshape(tf.cast(ids, tf.int64), [-1])
    weight_values = tf.reshape(tf.cast(weights, tf.float32), [-1])
    row_ids = tf.repeat(tf.range(batch_size), shape[1])
  weight_values = tf.where(
    tf.equal(values, features_lib.PAD_ID), tf.zeros_like(weight_values), weight_values
  )
  return values, weight_values, row_ids, batch_size


def _lookup(table: Any, rows: tf.Tensor) -> tf.Tensor:
  """``table[rows]``; also for a table sharded over parameter servers.

  ``tf.nn.embedding_lookup`` gathers from each shard of a ``ShardedVariable``
  where it lives; on a plain variable it is ``tf.gather``.
  """
  return tf.nn.embedding_lookup(table, rows)


def _is_padded_rows(features: Mapping[str, Any], field: features_lib.FieldSpec) -> bool:
  """Whether ``field`` comes as precomputed rows in padded ``[B, L]`` form."""
  rows = features.get(ROWS_PREFIX + field.name)
  return rows is not None and not isinstance(rows, tf.RaggedTensor)


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class FeatureEmbedding(tf.keras.layers.Layer):
  """Raw feature dict -> embeddings, driven by a :class:`Schema`.

  Args:
    schema: The dataset schema (its ``directory`` resolves vocabulary files).
    embedding_dim: Width of every id embedding and dense projection.
    field_embedding_dims: Per-field widths overriding ``embedding_dim`` (a
      dense field's 0 passes its vector through); see :func:`field_widths`.
    fused: One table per embedding width (True) or one per field (False).
    output_mode: ``"flat"``: ``[B, output_dim]``, the concatenation of all field
      vectors; ``"fields"``: ``[B, num_fields, D]``, one token per field (every
      field must then be ``D`` wide; raises ValueError naming the odd ones).
    seed: Seed of the table and projection initializers (None: unseeded).

  Call:
    features: dict as :func:`tafe_tf.input_pipeline.make_dataset` yields it
      (ragged or padded multi-valued fields); keys the schema does not name
      (``sample_id``, ``oracle/<step>``) are ignored.
  """

  def __init__(
    self,
    schema: features_lib.Schema,
    embedding_dim: int,
    field_embedding_dims: Optional[Mapping[str, int]] = None,
    fused: bool = True,
    output_mode: str = FLAT,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    if output_mode not in _OUTPUT_MODES:
      raise ValueError(f"output_mode must be one of {_OUTPUT_MODES}, got {output_mode!r}")
    self.schema = schema
    self.embedding_dim = embedding_dim
    self.field_embedding_dims = dict(field_embedding_dims) if field_embedding_dims else None
    self.fused = fused
    self.output_mode = output_mode
    self.seed = seed
    widths = field_widths(schema, embedding_dim, field_embedding_dims)
    self._table_groups = _group_id_fields(schema, widths, fused)
    self._dense_groups, self._raw_dense = _group_dense_fields(schema, widths)
    self._lookups = {
      f.name: id_lookup.IdLookup(
        f, schema.vocabulary_path(f) if f.lookup == features_lib.LookupKind.VOCABULARY else None
      )
      for f in schema.fields
      if f.is_id
    }
    if output_mode == FIELDS:
      widths = {name: w for name, w in self._field_widths()}
      common = collections.Counter(widths.values()).most_common(1)[0][0]
      odd = sorted(n for n, w in widths.items() if w != common)
      if odd:
        raise ValueError(
          f"output_mode='fields' needs every field {common} wide; "
          f"{odd} are not (widths {widths}); set one embedding_dim for "
          "all fields (models: drop their field_embedding_dims)"
        )

  # --- structure ------------------------------------------------------------

  def _field_widths(self) -> List[Tuple[str, int]]:
    out = []
    for g in self._table_groups:
      out += [(f.name, g.dim) for f in g.single]
    for g in self._table_groups:
      out += [(f.name, g.dim) for f in g.multi]
    for g in self._dense_groups:
      out += [(f.name, g.width) for f in g.fields]
    out += [(f.name, f.dim) for f in self._raw_dense]
    return out

  @property
  def field_names(self) -> List[str]:
    """Field names in output order."""
    return [name for name, _ in self._field_widths()]

  @property
  def num_fields(self) -> int:
    return len(self._field_widths())

  @property
  def output_dim(self) -> int:
    """Width of the flat output."""
    return sum(w for _, w in self._field_widths())

  @property
  def tables(self) -> Dict[str, tf.Variable]:
    """The embedding table variables by name (the layer must be built)."""
    if not self.built:
      raise ValueError(f"{self.name}: call the layer (or build it) before reading its tables")
    return dict(self._tables)

  def build(self, input_shape: Any = None) -> None:
    del input_shape  # every shape comes from the schema
    self._tables = self._build_tables()
    self._projections = {}
    for i, g in enumerate(self._dense_groups):
      salt = 1000 + 2 * i
      kernel = self.add_weight(
        name=g.name + "_kernel",
        shape=(len(g.fields), g.dim, g.width),
        initializer=initializers.glorot_uniform(
          g.dim, g.width, initializers.derive_seed(self.seed, salt)
        ),
      )
      bias = self.add_weight(
        name=g.name + "_bias", shape=(len(g.fields), g.width), initializer="zeros"
      )
      self._projections[g.name] = (kernel, bias)
    super().build(None)

  def _build_tables(self) -> Dict[str, tf.Variable]:
    """The id table variables by name (a subclass may keep them elsewhere)."""
    return {
      g.name: self.add_weight(
        name=g.name,
        shape=(g.num_rows, g.dim),
        initializer=initializers.embedding_uniform(initializers.derive_seed(self.seed, i)),
      )
      for i, g in enumerate(self._table_groups)
    }

  # --- forward ----------------------------------------------------------------

  def _single_tokens(self, g: _TableGroup, features: Mapping[str, Any]) -> tf.Tensor:
    """[B, len(g.single), dim]: one gather for every single-valued field."""
    offsets = g.offsets
    rows = []
    for f in g.single:
      ids = self._ids(features, f)
      if ids.shape.rank != 1:
        raise ValueError(f"field {f.name!r}: expected ids of shape [batch], got {ids.shape}")
      rows.append(self._rows(features, f, ids) + offsets[f.name])
    return _lookup(self._tables[g.name], tf.stack(rows, axis=1))

  def _multi_tokens(self, g: _TableGroup, features: Mapping[str, Any]) -> tf.Tensor:
    """[B, len(g.multi), dim]: weighted means, one gather + one segment sum."""
    offsets = g.offsets
    if all(_is_padded_rows(features, f) for f in g.multi):
      return self._padded_multi_tokens(g, features)
    rows, weights, segments = [], [], []
    batch_size = None
    for i, f in enumerate(g.multi):
      values, w, row_ids, b = flat_weighted_ids(
        self._ids(features, f), self._get(features, f.weight_key), f.name
      )
      batch_size = b if batch_size is None else batch_size
      rows.append(self._rows(features, f, values) + offsets[f.name])
      weights.append(w)
      segments.append(row_ids + i * batch_size)
    n = len(g.multi)
    vectors = _lookup(self._tables[g.name], tf.concat(rows, 0))
    weights = tf.cast(tf.concat(weights, 0), vectors.dtype)
    # Segment ids field * B + row are sorted (fields in order, rows row-major
    # within a field), so the sorted segment sum applies: ~5x faster on CPU
    # than the unsorted one. It stops at the largest id present; the padding
    # restores empty rows at the end.
    sums = tf.math.segment_sum(
      tf.concat([vectors * weights[:, None], weights[:, None]], axis=1), tf.concat(segments, 0)
    )
    missing = n * batch_size - tf.shape(sums, out_type=tf.int64)[0]
    sums = tf.pad(sums, [[0, missing], [0, 0]])
    # A split, not slices: its gradient is a concat, a slice's a scatter.
    weighted, total = tf.split(sums, [g.dim, 1], axis=1)
    means = tf.math.divide_no_nan(weighted, total)
    return tf.transpose(tf.reshape(means, [n, -1, g.dim]), [1, 0, 2])

  def _padded_multi_tokens(self, g: _TableGroup, features: Mapping[str, Any]) -> tf.Tensor:
    """[B, len(g.multi), dim] from padded precomputed rows, segment-free.

    The XLA path (:meth:`lookup_rows` output, padded): a segment sum needs a
    data-dependent output size, which XLA cannot compile; a masked sum over
    the padded axis has static shapes. Equal to the segment-sum path up to
    float rounding (the order of the additions differs).
    """
    offsets = g.offsets
    means = []
    for f in g.multi:
      rows = tf.cast(features[ROWS_PREFIX + f.name], tf.int64) + offsets[f.name]
      vectors = _lookup(self._tables[g.name], rows)  # [B, L, dim]
      weights = tf.cast(self._get(features, f.weight_key), vectors.dtype)
      means.append(
        tf.math.divide_no_nan(
          tf.reduce_sum(vectors * weights[:, :, None], axis=1),
          tf.reduce_sum(weights, axis=1, keepdims=True),
        )
      )
    return tf.stack(means, axis=1)

  def _dense_tokens(self, g: _DenseGroup, features: Mapping[str, Any]) -> tf.Tensor:
    """[B, len(g.fields), width]: every field's projection in one matmul."""
    kernel, bias = self._projections[g.name]
    x = tf.stack(
      [tf.cast(self._dense(features, f), kernel.dtype) for f in g.fields], axis=0
    )  # [n, B, dim]
    # A batched matmul over the fields, not an einsum (slower on CPU).
    projected = tf.transpose(tf.matmul(x, kernel), [1, 0, 2])
    return projected + bias

  def _dense(self, features: Mapping[str, Any], field: features_lib.FieldSpec) -> tf.Tensor:
    values = self._get(features, field.name)
    if values.shape.rank != 2 or values.shape[-1] not in (None, field.dim):
      raise ValueError(
        f"field {field.name!r}: expected dense values of shape "
        f"[batch, {field.dim}], got {values.shape}"
      )
    return values

  def _ids(self, features: Mapping[str, Any], field: features_lib.FieldSpec) -> Any:
    """The field's precomputed rows when given, else its raw ids."""
    key = ROWS_PREFIX + field.name
    return features[key] if key in features else self._get(features, field.name)

  def _rows(
    self, features: Mapping[str, Any], field: features_lib.FieldSpec, ids: tf.Tensor
  ) -> tf.Tensor:
    """Table rows of ``ids`` (already rows when precomputed)."""
    if ROWS_PREFIX + field.name in features:
      return tf.cast(ids, tf.int64)
    return self._lookups[field.name](ids)

  def lookup_rows(self, features: Mapping[str, Any]) -> Dict[str, Any]:
    """Moves the id lookups out of the model, e.g. into ``tf.data.map``.

    Args:
      features: A raw feature dict (as :meth:`call` takes it).

    Returns:
      A copy of ``features`` where every id field's raw ids are replaced by
      its table rows under ``rows/<field>`` (same shape, ragged or padded) and
      the padding entries of multi-valued fields get weight 0. :meth:`call`
      gives the same result on it as on ``features``, with no hashing, string
      or hash-table work: what an XLA-compiled training step needs.
    """
    out = dict(features)
    for f in self.schema.fields:
      if not f.is_id:
        continue
      ids = out.pop(f.name) if f.name in out else self._get(features, f.name)
      if isinstance(ids, tf.RaggedTensor):
        out[ROWS_PREFIX + f.name] = tf.ragged.map_flat_values(self._lookups[f.name], ids)
      else:
        out[ROWS_PREFIX + f.name] = self._lookups[f.name](ids)
      if f.kind == features_lib.FieldKind.WEIGHTED_IDS:
        # Rows lose the padding id (it shares the OOV row 0), so the weights
        # carry it: padding weighs 0, as in the raw path.
        weights = self._get(features, f.weight_key)
        is_pad = tf.equal(tf.cast(ids, tf.int64), features_lib.PAD_ID)
        if isinstance(weights, tf.RaggedTensor):
          out[f.weight_key] = weights.with_flat_values(
            tf.where(is_pad.flat_values, tf.zeros_like(weights.flat_values), weights.flat_values)
          )
        else:
          out[f.weight_key] = tf.where(is_pad, tf.zeros_like(weights), weights)
    return out

  def _get(self, features: Mapping[str, Any], key: str) -> Any:
    if key not in features:
      raise KeyError(
        f"features miss {key!r} (schema {self.schema.name!r} "
        f"needs {features_lib.model_feature_keys(self.schema)})"
      )
    return features[key]

  def call(self, features: Mapping[str, Any]) -> tf.Tensor:
    blocks: List[tf.Tensor] = []  # each [B, n, width]
    for g in self._table_groups:
      if g.single:
        blocks.append(self._single_tokens(g, features))
    for g in self._table_groups:
      if g.multi:
        blocks.append(self._multi_tokens(g, features))
    return self._assemble(blocks, features)

  def _assemble(self, blocks: List[tf.Tensor], features: Mapping[str, Any]) -> tf.Tensor:
    """The output from the id fields' ``[B, n, width]`` blocks (in output
    order) plus the dense fields."""
    blocks = list(blocks)
    for g in self._dense_groups:
      blocks.append(self._dense_tokens(g, features))
    raw = [tf.cast(self._dense(features, f), self.compute_dtype) for f in self._raw_dense]
    if self.output_mode == FIELDS:
      blocks += [x[:, None, :] for x in raw]
      return tf.concat(blocks, axis=1)
    batch = tf.shape(blocks[0])[0] if blocks else tf.shape(raw[0])[0]
    flat = [tf.reshape(b, [batch, b.shape[1] * b.shape[2]]) for b in blocks]
    return tf.concat(flat + raw, axis=1)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      schema=self.schema.to_json(),
      schema_directory=self.schema.directory,
      embedding_dim=self.embedding_dim,
      field_embedding_dims=self.field_embedding_dims,
      fused=self.fused,
      output_mode=self.output_mode,
      seed=self.seed,
    )
    return config

  @classmethod
  def from_config(cls, config: Dict[str, Any]) -> "FeatureEmbedding":
    config = dict(config)
    config["schema"] = features_lib.Schema.from_json(
      config.pop("schema"), directory=config.pop("schema_directory", None)
    )
    return cls(**config)
