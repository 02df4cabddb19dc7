"""Raw ids -> embedding-table rows, inside the graph, per a field's lookup.

Row 0 of every table is the out-of-vocabulary row; rows ``1..num_ids`` are the
known ids. The mapping per :class:`tafe_tf.features.LookupKind`:

* ``identity``: id ``i`` in ``0..num_ids-1`` -> row ``i + 1``; others -> 0.
* ``vocabulary``: the id on line ``i`` (0-based) of the vocabulary file -> row
  ``i + 1``; unseen ids -> 0. A ``tf.lookup.StaticHashTable`` with a
  ``TextFileInitializer`` holds the file, so a SavedModel carries it as an
  asset. Only the first ``num_ids`` lines are read; a shorter file is an error
  (naming the file) when the table initialises.
* ``hash``: ``1 + Fingerprint64(decimal string of id) mod num_ids`` (the
  FarmHash fingerprint behind ``tf.strings.to_hash_bucket_fast`` and Keras'
  ``Hashing`` layer; stable across platforms and releases).

For every kind the id :data:`tafe_tf.features.PAD_ID` (-1) maps to row 0: the
converters write a missing single-valued field as -1, and for identity and
vocabulary lookups -1 lands on row 0 anyway; the hash lookup would otherwise
scatter "missing" over a real bucket.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from tafe_tf import features as features_lib


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class IdLookup(tf.keras.layers.Layer):
  """Maps raw int64 ids of one field to int64 rows in ``[0, field.num_rows)``.

  Args:
    field: The id field (``kind`` ``id`` or ``weighted_ids``).
    vocabulary_path: Path of the vocabulary file (vocabulary lookups only),
      usually ``schema.vocabulary_path(field)``.

  Call:
    ids: int tensor of any shape. Returns int64 rows of the same shape.
  """

  def __init__(
    self, field: features_lib.FieldSpec, vocabulary_path: Optional[str] = None, **kwargs
  ):
    kwargs.setdefault("name", f"lookup_{field.name}")
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    if not field.is_id:
      raise ValueError(f"field {field.name!r} is {field.kind.value!r}, not an id field")
    self.field = field
    self.vocabulary_path = vocabulary_path
    self._table = None
    if field.lookup == features_lib.LookupKind.VOCABULARY and field.num_ids:
      if not vocabulary_path:
        raise ValueError(f"field {field.name!r}: vocabulary lookup needs vocabulary_path")
      if not tf.io.gfile.exists(vocabulary_path):
        raise FileNotFoundError(
          f"field {field.name!r}: vocabulary file {vocabulary_path} does not exist"
        )
      initializer = tf.lookup.TextFileInitializer(
        vocabulary_path,
        key_dtype=tf.int64,
        key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        value_dtype=tf.int64,
        value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        vocab_size=field.num_ids,
      )
      # Unseen -> -1, so "+ 1" below sends it to the OOV row 0.
      self._table = tf.lookup.StaticHashTable(initializer, default_value=-1)

  def call(self, ids: tf.Tensor) -> tf.Tensor:
    ids = tf.cast(ids, tf.int64)
    kind = self.field.lookup
    num_ids = tf.constant(self.field.num_ids, tf.int64)
    if kind == features_lib.LookupKind.IDENTITY:
      known = tf.logical_and(ids >= 0, ids < num_ids)
      return tf.where(known, ids + 1, tf.zeros_like(ids))
    if kind == features_lib.LookupKind.VOCABULARY:
      if self._table is None:  # an empty vocabulary: everything is OOV
        return tf.zeros_like(ids)
      return self._table.lookup(ids) + 1
    buckets = tf.strings.to_hash_bucket_fast(tf.strings.as_string(ids), self.field.num_ids)
    return tf.where(ids == features_lib.PAD_ID, tf.zeros_like(ids), buckets + 1)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(field=self.field.to_json(), vocabulary_path=self.vocabulary_path)
    return config

  @classmethod
  def from_config(cls, config: Dict[str, Any]) -> "IdLookup":
    config = dict(config)
    config["field"] = features_lib.FieldSpec(**config["field"])
    return cls(**config)
