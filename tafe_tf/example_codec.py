"""The ``tf.train.Example`` wire format of the package's examples, encoded fast.

The one home of the serialized form :mod:`tafe_tf.features` declares (keys,
kinds, :func:`~tafe_tf.features.tf_example_spec`): every writer of examples
(converters, the synthetic generator, tests, serving requests) encodes here.

A serialized ``Example`` is ``0x0a <length> <Features>`` and a serialized
``Features`` is nothing but its map entries, one after another. That allows
two encoders that skip the protobuf objects:

* :class:`ExampleEncoder`, row by row, in parts that can be cached: the bytes
  of a subset of the features are built once and concatenated with the bytes
  of the rest (the Ali-CCP converter encodes a user's common row, hundreds of
  behaviour ids, once and reuses the bytes for every impression sharing it);
* :func:`serialize_batch`, column-wise: the bytes of every row of a numpy batch
  assembled with numpy at once (the synthetic generator's path, an order of
  magnitude faster than row by row).

:meth:`ExampleEncoder.encode_row` and :func:`serialize_batch` write the map
entries in one canonical order (the schema's fields, each followed by its
weights, then the labels, the oracle and the sample id), so that the same rows
give the same bytes from either. :func:`make_example` is the checked, plain
entry point (a ``tf.train.Example`` of one row).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence

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


class RaggedColumn(NamedTuple):
  """Variable-length rows; row i is ``values[row_splits[i]:row_splits[i+1]]``.

  The column form of a weighted field's ids or weights in a batch.
  """

  values: np.ndarray
  row_splits: np.ndarray  # int64 [b + 1], row_splits[0] == 0

  @property
  def row_lengths(self) -> np.ndarray:
    return np.diff(self.row_splits)

  def row(self, i: int) -> np.ndarray:
    return self.values[self.row_splits[i] : self.row_splits[i + 1]]


# --- one row ------------------------------------------------------------------


def varint(value: int) -> bytes:
  """Protobuf base-128 varint of an int64 (negative ids take 10 bytes).

  Raises:
    ValueError: ``value`` is outside int64; its bytes would read back as
      another id (2^64 + 5 as 5, 2^63 + 5 as a negative one).
  """
  if value < 0:
    if value < features_lib.MIN_ID:
      raise ValueError(f"id {value} is outside int64")
    value += _TWO_64
  elif value > features_lib.MAX_ID:
    raise ValueError(f"id {value} is outside int64")
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
  # The C++ protobuf runtime packs long lists faster than Python can (and
  # refuses an id outside int64 with a ValueError).
  values = values.tolist() if isinstance(values, np.ndarray) else list(values)
  return _delimited(_TAG_3, tf.train.Int64List(value=values).SerializeToString())


def _float_feature(values: Sequence[float]) -> bytes:
  """Serialized ``Feature{float_list}`` (packed little-endian float32).

  Raises:
    ValueError: a finite value too large for float32 (it would become inf).
  """
  n = len(values)
  try:
    if n <= _STRUCT_FLOATS:  # struct is faster than numpy for short lists
      packed = struct.pack(f"<{n}f", *values)
    else:
      with np.errstate(over="raise"):
        packed = np.asarray(values, dtype="<f4").tobytes()
  except (OverflowError, FloatingPointError):
    raise ValueError("a value too large for float32 (it would be written as inf)") from None
  inner = _delimited(_TAG_1, packed) if packed else b""
  return _delimited(_TAG_2, inner)


def _bytes_feature(value: bytes) -> bytes:
  """Serialized ``Feature{bytes_list}`` holding one value."""
  return _delimited(_TAG_1, _delimited(_TAG_1, value))


def _example(features: bytes) -> bytes:
  return _TAG_1 + varint(len(features)) + features


class ExampleEncoder:
  """Serializes examples of one schema, a group of features at a time.

  ``encode_fields`` returns the map entries of some fields, ``encode_labels``,
  ``encode_oracle`` and ``encode_sample_id`` those of the labels, the oracle
  and the sample id, and :meth:`example` wraps any concatenation of such parts
  into ``Example`` bytes; :meth:`encode_row` does all of it in the canonical
  order. Values follow :func:`make_example`: an int for ``id``, an
  ``(ids, weights)`` pair for ``weighted_ids``, ``dim`` floats for ``dense``.
  Nothing here checks labels (converters build them consistent;
  :func:`make_example` checks).

  Entries of ids and of short weighted lists are memoized (ids repeat: a
  popular item, a position), in a memo cleared when it holds
  :data:`MEMO_ENTRIES`.
  """

  def __init__(self, schema: features_lib.Schema):
    self.schema = schema
    self._specs: Dict[str, features_lib.FieldSpec] = {f.name: f for f in schema.fields}
    self._keys: Dict[str, bytes] = {}
    for key in _canonical_keys(schema):
      self._keys[key] = _delimited(_TAG_1, key.encode())
    # Labels repeat a handful of values: encode each (step, value) once.
    self._label_entries = {
      (step, y): self._entry(features_lib.label_key(step), _int64_feature([y]))
      for step in schema.steps
      for y in (0, 1)
    }
    self._memo: Dict[Any, bytes] = {}

  def _memoize(self, key: Any, entry: bytes) -> bytes:
    if len(self._memo) >= MEMO_ENTRIES:
      self._memo.clear()
    self._memo[key] = entry
    return entry

  def _entry(self, key: str, feature: bytes) -> bytes:
    return _delimited(_TAG_1, self._keys[key] + _delimited(_TAG_2, feature))

  def encode_fields(
    self, values: Mapping[str, Any], names: Optional[Iterable[str]] = None
  ) -> bytes:
    """Map entries of the fields ``names`` (default: all of ``values``).

    Raises:
      KeyError: a name is not a schema field.
      ValueError: naming the field: a weighted field's ids and weights differ
        in length, a dense field has the wrong length, an id outside int64
        or a value too large for float32 (never written wrapped or as inf;
        readers check values first, :func:`tafe_tf.features.value_fits`).
    """
    parts = []
    memo = self._memo
    for name in values if names is None else names:
      spec = self._specs[name]
      value = values[name]
      try:  # free unless it raises (Python 3.11)
        if spec.kind == FieldKind.ID:
          key = (name, value)
          entry = memo.get(key)
          if entry is None:
            entry = self._memoize(key, self._entry(name, _int64_feature([value])))
          parts.append(entry)
        elif spec.kind == FieldKind.WEIGHTED_IDS:
          ids, weights = value
          if len(ids) != len(weights):
            raise ValueError(f"{len(ids)} ids but {len(weights)} weights")
          key = (name, tuple(ids), tuple(weights)) if len(ids) <= _MEMO_MAX_IDS else None
          entry = memo.get(key) if key is not None else None
          if entry is None:
            entry = self._entry(name, _int64_feature(ids)) + self._entry(
              spec.weight_key, _float_feature(weights)
            )
            if key is not None:
              self._memoize(key, entry)
          parts.append(entry)
        else:
          if len(value) != spec.dim:
            raise ValueError(f"expected {spec.dim} floats, got {len(value)}")
          parts.append(self._entry(name, _float_feature(value)))
      except ValueError as e:
        raise ValueError(f"field {name!r}: {e}") from None
    return b"".join(parts)

  def encode_labels(self, labels: Sequence[int]) -> bytes:
    """Map entries of the cumulative labels, one per step, in step order."""
    return b"".join(self._label_entries[(step, y)] for step, y in zip(self.schema.steps, labels))

  def encode_oracle(self, oracle: Sequence[float]) -> bytes:
    """Map entries of the true conditional probabilities, in step order."""
    return b"".join(
      self._entry(features_lib.oracle_key(step), _float_feature([q]))
      for step, q in zip(self.schema.steps, oracle)
    )

  def encode_sample_id(self, sample_id: bytes) -> bytes:
    return self._entry(features_lib.SAMPLE_ID_KEY, _bytes_feature(sample_id))

  @staticmethod
  def example(*parts: bytes) -> bytes:
    """``Example`` bytes whose features are the concatenated map entries."""
    return _example(b"".join(parts))

  def encode_row(
    self,
    values: Mapping[str, Any],
    labels: Sequence[int],
    sample_id: bytes = b"",
    oracle: Optional[Sequence[float]] = None,
  ) -> bytes:
    """``Example`` bytes of one whole row, map entries in the canonical order.

    Args:
      values: ``field name -> value`` for every schema field.
      labels: The cumulative labels, in step order.
      sample_id: Written where the schema has sample ids.
      oracle: The q_t in step order, where the schema has an oracle.

    Returns:
      The bytes :func:`serialize_batch` writes for the same row.
    """
    parts = [self.encode_fields(values, self.schema.field_names), self.encode_labels(labels)]
    if self.schema.has_oracle:
      parts.append(self.encode_oracle(oracle))
    if self.schema.has_sample_id:
      parts.append(self.encode_sample_id(sample_id))
    return _example(b"".join(parts))


def _canonical_keys(schema: features_lib.Schema) -> List[str]:
  """Every key of a serialized example of ``schema``, in the order written."""
  keys = features_lib.model_feature_keys(schema)
  keys += [features_lib.label_key(s) for s in schema.steps]
  if schema.has_oracle:
    keys += [features_lib.oracle_key(s) for s in schema.steps]
  if schema.has_sample_id:
    keys.append(features_lib.SAMPLE_ID_KEY)
  return keys


def make_example(
  schema: features_lib.Schema,
  features: Mapping[str, Any],
  labels: Mapping[str, int],
  sample_id: Optional[str] = None,
  oracle: Optional[Mapping[str, float]] = None,
) -> tf.train.Example:
  """One checked ``tf.train.Example`` in the schema's serialized form.

  Args:
    schema: The dataset schema.
    features: ``field name -> value``: an int for ``id``; a pair
      ``(ids, weights)`` of equal-length sequences for ``weighted_ids``; a
      sequence of ``dim`` floats for ``dense``.
    labels: ``step -> cumulative label`` (0 or 1) for every step.
    sample_id: Written where the schema has sample ids ("" when None).
    oracle: ``step -> true conditional probability`` (synthetic data).

  Raises:
    ValueError: on a missing field, wrong lengths, an id outside int64, a
      finite value too large for float32, inconsistent labels (y_t = 1 with
      y_{t-1} = 0) or a missing oracle the schema has. NaN, +-inf and values
      past :data:`tafe_tf.features.MAX_ABS_VALUE` are encoded as given (the
      readers of input files refuse them; serving tests need them).
  """
  for f in schema.fields:
    if f.name not in features:
      raise ValueError(f"example misses field {f.name!r}")
  ys = []
  previous = 1
  for step in schema.steps:
    y = int(labels[step])
    if y not in (0, 1):
      raise ValueError(f"label {step!r} must be 0 or 1, got {labels[step]!r}")
    if y > previous:
      raise ValueError(f"label {step!r} is 1 but an earlier step is 0")
    ys.append(y)
    previous = y
  if schema.has_oracle and oracle is None:
    raise ValueError("schema has oracle probabilities but none were given")
  encoder = ExampleEncoder(schema)
  values = {
    f.name: int(features[f.name]) if f.kind == FieldKind.ID else features[f.name]
    for f in schema.fields
  }
  return tf.train.Example.FromString(
    encoder.encode_row(
      values,
      ys,
      str(sample_id if sample_id is not None else "").encode(),
      [float(oracle[s]) for s in schema.steps] if schema.has_oracle else None,
    )
  )


# --- a batch of rows, column-wise ---------------------------------------------
#
# The bytes of every row of a batch are assembled with numpy at once. Rows are
# built as lists of "pieces" (one short byte string per row each) that are
# concatenated row-wise once at the end, so no payload is copied twice.


class _Piece(NamedTuple):
  data: np.ndarray  # uint8, the rows' bytes back to back
  lengths: np.ndarray  # int64 [n]


def _const_piece(value: bytes, n: int) -> _Piece:
  return _Piece(np.tile(np.frombuffer(value, np.uint8), n), np.full(n, len(value), np.int64))


def _varint_piece(values: np.ndarray) -> _Piece:
  """Protobuf varints of int64 ``values`` (negatives: 10 bytes), one a row.

  Raises:
    ValueError: unsigned ``values`` past int64 (a cast would wrap them).
  """
  values = np.asarray(values)
  if values.dtype.kind == "u" and values.size and values.max() > features_lib.MAX_ID:
    raise ValueError(f"id {int(values.max())} is outside int64")
  rest = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
  groups = []
  lengths = np.ones(rest.shape[0], np.int64)
  while True:
    low = (rest & np.uint64(0x7F)).astype(np.uint8)
    rest = rest >> np.uint64(7)
    more = rest != 0
    groups.append(low | (more.astype(np.uint8) << 7))
    if not more.any():
      break
    lengths += more
  matrix = np.stack(groups, axis=1)
  return _Piece(matrix[np.arange(len(groups)) < lengths[:, None]], lengths)


def _pieces_length(pieces: Sequence[_Piece]) -> np.ndarray:
  return sum(p.lengths for p in pieces)


def _keep_rows(piece: _Piece, keep: np.ndarray) -> _Piece:
  return _Piece(piece.data[np.repeat(keep, piece.lengths)], np.where(keep, piece.lengths, 0))


def _delimited_rows(
  tag: bytes, body: List[_Piece], n: int, omit_empty: bool = False
) -> List[_Piece]:
  """``tag varint(len) body`` per row; rows with an empty body are left out
  entirely when ``omit_empty`` (how packed repeated fields are written)."""
  length = _pieces_length(body) if body else np.zeros(n, np.int64)
  head = [_const_piece(tag, n), _varint_piece(length)]
  if omit_empty:
    keep = length > 0
    head = [_keep_rows(p, keep) for p in head]
  return head + body


def _rows_piece(element: _Piece, row_splits: np.ndarray) -> _Piece:
  """Merges consecutive element pieces into one piece per ragged row."""
  cum0 = np.concatenate([[0], np.cumsum(element.lengths)])
  return _Piece(element.data, cum0[row_splits[1:]] - cum0[row_splits[:-1]])


def _int64_list(values: np.ndarray, row_splits: Optional[np.ndarray], n: int) -> List[_Piece]:
  packed = _varint_piece(values)
  if row_splits is not None:
    packed = _rows_piece(packed, row_splits)
  return _delimited_rows(_TAG_3, _delimited_rows(_TAG_1, [packed], n, omit_empty=True), n)


def _float_list(values: np.ndarray, counts: np.ndarray, n: int) -> List[_Piece]:
  try:
    with np.errstate(over="raise"):  # never a finite value written as inf
      floats = np.ascontiguousarray(values, dtype="<f4")
  except FloatingPointError:
    raise ValueError("a value too large for float32 (it would be written as inf)") from None
  packed = _Piece(floats.view(np.uint8), 4 * counts.astype(np.int64))
  return _delimited_rows(_TAG_2, _delimited_rows(_TAG_1, [packed], n, omit_empty=True), n)


def _bytes_list(values: Sequence[bytes], n: int) -> List[_Piece]:
  packed = _Piece(
    np.frombuffer(b"".join(values), np.uint8), np.fromiter((len(v) for v in values), np.int64, n)
  )
  return _delimited_rows(_TAG_1, _delimited_rows(_TAG_1, [packed], n), n)


def _join_rows(pieces: Sequence[_Piece], n: int) -> List[bytes]:
  """Concatenates the pieces row by row; returns one bytes object per row."""
  total = _pieces_length(pieces)
  ends = np.cumsum(total)
  out = np.empty(int(ends[-1]) if n else 0, np.uint8)
  offset = ends - total
  for piece in pieces:
    if piece.data.size:
      source_start = np.cumsum(piece.lengths) - piece.lengths
      out[np.repeat(offset - source_start, piece.lengths) + np.arange(piece.data.size)] = piece.data
    offset = offset + piece.lengths
  buffer = out.tobytes()
  return [buffer[s:e] for s, e in zip((ends - total).tolist(), ends.tolist())]


def serialize_batch(schema: features_lib.Schema, batch: Mapping[str, Any]) -> List[bytes]:
  """Serialized ``tf.train.Example`` bytes of every row of ``batch``.

  Args:
    schema: The dataset schema.
    batch: Numpy columns keyed like the serialized examples: int64 ``[b]`` per
      id field; a :class:`RaggedColumn` of ids and one of weights per
      weighted field; ``[b, dim]`` floats per dense field; int64 ``[b]`` per
      ``label/<step>``; where the schema has them, ``[b]`` floats per
      ``oracle/<step>`` and ``[b]`` strings or bytes ``sample_id``.

  Returns:
    One bytes object per row, those of :meth:`ExampleEncoder.encode_row`.
  """
  n = len(batch[features_lib.label_key(schema.steps[0])])
  features: Dict[str, List[_Piece]] = {}
  for f in schema.fields:
    column = batch[f.name]
    if f.kind == FieldKind.ID:
      features[f.name] = _int64_list(column, None, n)
    elif f.kind == FieldKind.WEIGHTED_IDS:
      weights = batch[f.weight_key]
      features[f.name] = _int64_list(column.values, column.row_splits, n)
      features[f.weight_key] = _float_list(weights.values, weights.row_lengths, n)
    else:
      features[f.name] = _float_list(np.reshape(column, -1), np.full(n, f.dim), n)
  for step in schema.steps:
    features[features_lib.label_key(step)] = _int64_list(
      batch[features_lib.label_key(step)], None, n
    )
  if schema.has_oracle:
    for step in schema.steps:
      features[features_lib.oracle_key(step)] = _float_list(
        batch[features_lib.oracle_key(step)], np.ones(n, np.int64), n
      )
  if schema.has_sample_id:
    features[features_lib.SAMPLE_ID_KEY] = _bytes_list(
      [s if isinstance(s, bytes) else str(s).encode() for s in batch[features_lib.SAMPLE_ID_KEY]], n
    )
  entries: List[_Piece] = []
  for key in _canonical_keys(schema):
    key_bytes = key.encode()
    entry = [_const_piece(_TAG_1 + varint(len(key_bytes)) + key_bytes, n)] + _delimited_rows(
      _TAG_2, features[key], n
    )
    entries += _delimited_rows(_TAG_1, entry, n)
  return _join_rows(_delimited_rows(_TAG_1, entries, n), n)
