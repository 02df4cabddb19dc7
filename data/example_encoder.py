"""Fast ``tf.train.Example`` serialization, in parts that can be cached.

A serialized ``Example`` is ``0x0a <length> <Features>`` and a serialized
``Features`` is nothing but its map entries, one after another. So the bytes of
a subset of the features can be built once and concatenated with the bytes of
the rest: the Ali-CCP converter encodes a user's common row (hundreds of
behaviour ids) once and reuses the bytes for every impression that shares it.

The bytes parse to the same proto that :func:`tafe_tf.features.make_example`
builds (the tests check this); only the order of the map entries may differ,
which the protobuf map contract leaves open anyway.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np

import tensorflow as tf

from tafe_tf import features as features_lib

FieldKind = features_lib.FieldKind

# Wire tags (field number << 3 | wire type 2 = length-delimited).
_TAG_1 = b"\x0a"  # Example.features, Features.feature entry, map key, *List.value
_TAG_2 = b"\x12"  # map value; Feature.float_list
_TAG_3 = b"\x1a"  # Feature.int64_list
_TWO_64 = 1 << 64
_STRUCT_FLOATS = 32
# Bound of the memo of encoded short features (entries, each < 100 bytes).
MEMO_ENTRIES = 1 << 18
# Weighted fields with at most this many ids are memoized too.
_MEMO_MAX_IDS = 4


def varint(value: int) -> bytes:
  """Protobuf base-128 varint of an int64 (negative ids take 10 bytes)."""
  if value < 0:
    value += _TWO_64
  if value < 0x80:
    return bytes((value,))
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
  return tag + varint(len(payload)) + payload


def _int64_feature(values: Sequence[int]) -> bytes:
  """Serialized ``Feature{int64_list}``."""
  if len(values) == 1:
    packed = varint(int(values[0]))
    return _delimited(_TAG_3, _TAG_1 + varint(len(packed)) + packed)
  # The C++ protobuf runtime packs long lists faster than Python can.
  values = values.tolist() if isinstance(values, np.ndarray) else list(values)
  return _delimited(_TAG_3, tf.train.Int64List(value=values).SerializeToString())


def _float_feature(values: Sequence[float]) -> bytes:
  """Serialized ``Feature{float_list}`` (packed little-endian float32)."""
  n = len(values)
  if n <= _STRUCT_FLOATS:  # struct is faster than numpy for short lists
    packed = struct.pack(f"<{n}f", *values)
  else:
    packed = np.asarray(values, dtype="<f4").tobytes()
  inner = _delimited(_TAG_1, packed) if packed else b""
  return _delimited(_TAG_2, inner)


def _bytes_feature(value: bytes) -> bytes:
  """Serialized ``Feature{bytes_list}`` holding one value."""
  return _delimited(_TAG_1, _delimited(_TAG_1, value))


class ExampleEncoder:
  """Serializes examples of one schema, a group of features at a time.

  ``encode_fields`` returns the map entries of some fields, ``encode_labels``
  and ``encode_sample_id`` those of the labels and the sample id, and
  :meth:`example` wraps any concatenation of such parts into ``Example`` bytes.
  Values follow :func:`tafe_tf.features.make_example`: an int for ``id``, an
  ``(ids, weights)`` pair for ``weighted_ids``, ``dim`` floats for ``dense``.

  Entries of ids and of short weighted lists are memoized (ids repeat: a
  popular item, a position), in a memo cleared when it holds
  :data:`MEMO_ENTRIES`.
  """

  def __init__(self, schema: features_lib.Schema):
    self.schema = schema
    self._specs: Dict[str, features_lib.FieldSpec] = {
        f.name: f for f in schema.fields}
    self._keys: Dict[str, bytes] = {}
    for key in features_lib.model_feature_keys(schema) + [
        features_lib.label_key(s) for s in schema.steps] + [
            features_lib.SAMPLE_ID_KEY]:
      self._keys[key] = _delimited(_TAG_1, key.encode())
    # Labels repeat a handful of values: encode each (step, value) once.
    self._label_entries = {
        (step, y): self._entry(features_lib.label_key(step), _int64_feature([y]))
        for step in schema.steps for y in (0, 1)}
    self._memo: Dict[Any, bytes] = {}

  def _memoize(self, key: Any, entry: bytes) -> bytes:
    if len(self._memo) >= MEMO_ENTRIES:
      self._memo.clear()
    self._memo[key] = entry
    return entry

  def _entry(self, key: str, feature: bytes) -> bytes:
    return _delimited(_TAG_1, self._keys[key] + _delimited(_TAG_2, feature))

  def encode_fields(self, values: Mapping[str, Any],
                    names: Optional[Iterable[str]] = None) -> bytes:
    """Map entries of the fields ``names`` (default: all of ``values``).

    Raises:
      KeyError: a name is not a schema field.
      ValueError: a weighted field's ids and weights differ in length, or a
        dense field has the wrong length.
    """
    parts = []
    memo = self._memo
    for name in (values if names is None else names):
      spec = self._specs[name]
      value = values[name]
      if spec.kind == FieldKind.ID:
        key = (name, value)
        entry = memo.get(key)
        if entry is None:
          entry = self._memoize(key, self._entry(name, _int64_feature([value])))
        parts.append(entry)
      elif spec.kind == FieldKind.WEIGHTED_IDS:
        ids, weights = value
        if len(ids) != len(weights):
          raise ValueError(f"field {name!r}: {len(ids)} ids but {len(weights)} "
                           "weights")
        key = (name, tuple(ids), tuple(weights)) if len(
            ids) <= _MEMO_MAX_IDS else None
        entry = memo.get(key) if key is not None else None
        if entry is None:
          entry = (self._entry(name, _int64_feature(ids)) +
                   self._entry(spec.weight_key, _float_feature(weights)))
          if key is not None:
            self._memoize(key, entry)
        parts.append(entry)
      else:
        if len(value) != spec.dim:
          raise ValueError(f"field {name!r}: expected {spec.dim} floats, got "
                           f"{len(value)}")
        parts.append(self._entry(name, _float_feature(value)))
    return b"".join(parts)

  def encode_labels(self, labels: Sequence[int]) -> bytes:
    """Map entries of the cumulative labels, one per step, in step order."""
    return b"".join(self._label_entries[(step, y)]
                    for step, y in zip(self.schema.steps, labels))

  def encode_sample_id(self, sample_id: bytes) -> bytes:
    return self._entry(features_lib.SAMPLE_ID_KEY, _bytes_feature(sample_id))

  @staticmethod
  def example(*parts: bytes) -> bytes:
    """``Example`` bytes whose features are the concatenated map entries."""
    features = b"".join(parts)
    return _TAG_1 + varint(len(features)) + features
