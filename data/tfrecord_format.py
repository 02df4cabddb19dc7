"""Existing ``tf.train.Example`` TFRecords read through a column spec.

:class:`TFRecordFormat` reads TFRecord files (from a TFX or Beam pipeline,
gzip or not: detected by the file's first bytes) through the same
:class:`tafe_tf.data.column_spec.ColumnSpec` as ``--format=csv``: the spec's
column names are the Examples' feature names. It is a
:class:`tafe_tf.data.line_format.LineFormat` whose "lines" are records (numbered
from 1 in each file), so vocabularies, the validation hold-out, the
skip-and-count rules, ``strict``, the report and the schema are the CSV
path's.

A feature's values are read as the CSV reader reads a cell: an ``int64_list``
value as its decimal text, a ``bytes_list`` value as the cell's bytes (a
``hash`` column hashes them with :func:`~tafe_tf.data.column_spec.hash_id`, as
the CSV path does), a ``float_list`` value as a number (dense columns and
weights only). A single-valued column (id, dense, label, key, group) holds at
most one value. A missing feature, or one with no values, is an empty cell:
an id -1 (the OOV row), a list with no ids, and a dense value, label or key
that is skipped and counted (``bad_value``, ``bad_label``, ``missing_key``).
A list column's weights come from the feature its ``weight_column`` names
(as many values as ids); ``"weights": "inline"`` is a text form and is
refused.

A record that cannot be used is skipped and counted with its number as the
line: ``not_an_example`` (does not parse), ``wrong_type`` (e.g. a
``float_list`` id), ``wrong_length`` (two values in a single-valued column),
and every reason of the CSV reader. A file that is not TFRecords (or is
truncated) stops the conversion with one line naming the file.

A file is read whole by one worker process: a TFRecord file has no record
boundaries to find from a byte offset, so give several files (``files``
globs) to convert in parallel.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Sequence, Tuple

import tensorflow as tf
from google.protobuf import message

from tafe_tf import features as features_lib
from tafe_tf.data import column_spec, csv_formats, line_format
from tafe_tf.data import writer as writer_lib
from tafe_tf.data.line_format import LineError, Row, SplitInput

#: The first bytes of a gzip file (magic 1f 8b, method 8 = deflate).
GZIP_MAGIC = b"\x1f\x8b\x08"
_EMPTY_LIST = ((), ())
_BATCH = 512


def compression_of(path: str) -> str:
  """``"GZIP"`` when ``path`` starts with the gzip magic bytes, else ``""``."""
  with open(path, "rb") as f:
    return "GZIP" if f.read(len(GZIP_MAGIC)) == GZIP_MAGIC else ""


def _values(feature_map: Any, name: str) -> Tuple[str, Sequence[Any]]:
  """``(kind, values)`` of feature ``name``; ``("", ())`` when it is absent."""
  if name not in feature_map:
    return "", ()
  feature = feature_map[name]
  kind = feature.WhichOneof("kind")
  if kind is None:
    return "", ()
  return kind, getattr(feature, kind).value


def _one(feature_map: Any, name: str) -> Tuple[str, Any]:
  """``(kind, value)`` of a single-valued feature; ``("", None)`` when it is
  absent or empty; raises ``LineError('wrong_length')`` for several values."""
  kind, values = _values(feature_map, name)
  if not values:
    return "", None
  if len(values) != 1:
    raise LineError("wrong_length", f"feature {name}: {len(values)} values, expected 1")
  return kind, values[0]


def _wrong_type(name: str, kind: str, expected: str) -> LineError:
  return LineError("wrong_type", f"feature {name}: {kind}, expected {expected}")


def _text(name: str, kind: str, value: Any) -> bytes:
  """An int64 or bytes value as the CSV cell that holds it."""
  if kind == "bytes_list":
    return value
  if kind == "int64_list":
    return str(value).encode()
  raise _wrong_type(name, kind, "int64_list or bytes_list")


def _number(name: str, kind: str, value: Any) -> float:
  """A float, int64 or bytes value as a checked dense value or weight."""
  where = f"feature {name}"
  if kind == "bytes_list":
    return line_format.parse_value(value, where)
  if kind not in ("float_list", "int64_list"):
    raise _wrong_type(name, kind, "float_list")
  value = float(value)
  if not features_lib.value_fits(value):  # raises with parse_value's reason and message
    line_format.parse_value(repr(value).encode(), where)
  return value


class TFRecordReader(line_format.LineReader):
  """The records of one TFRecord file, read through a :class:`TFRecordFormat`'s spec."""

  def __init__(self, path: str, skips: writer_lib.SkipCounter, fmt: "TFRecordFormat"):
    super().__init__(path, skips)
    spec = fmt.spec
    self.fmt = fmt
    self.spec = spec
    self.steps = spec.step_names
    self.multiclass = (
      {text.encode(): reached for text, reached in spec.multiclass_label.values}
      if spec.multiclass_label is not None
      else None
    )
    self.used = {column for column, _ in spec.columns()}
    # Records holding each feature the spec does not name (the report).
    self.ignored: Dict[str, int] = {}

  def parse_or_raise(self, line: bytes, line_number: int) -> Row:
    try:
      example = tf.train.Example.FromString(line)
    except message.DecodeError:
      raise LineError("not_an_example", "the record is not a tf.train.Example") from None
    fmap = example.features.feature
    for name in fmap:
      if name not in self.used:
        self.ignored[name] = self.ignored.get(name, 0) + 1
    spec = self.spec
    labels = self._labels(fmap)
    values: Dict[str, Any] = {}
    for c in spec.id_columns:
      values[c.name] = self._id(fmap, c.column, c.hash)
    for c in spec.list_columns:
      values[c.name] = self._list(fmap, c)
    for d in spec.dense_columns:
      values[d.name] = [self._dense(fmap, column) for column in d.columns]
    sample_id = None
    if spec.key_column:
      kind, value = _one(fmap, spec.key_column)
      sample_id = b"" if value is None else _text(spec.key_column, kind, value)
      if not sample_id:
        raise LineError("missing_key", f"feature {spec.key_column}: the row key is empty")
      line_format.check_sample_id(sample_id)
    holdout = b""
    if spec.holdout_column:
      kind, value = _one(fmap, spec.holdout_column)
      if value is not None:
        holdout = _text(spec.holdout_column, kind, value)
    return Row(labels=labels, features=values, holdout_key=holdout or line, sample_id=sample_id)

  def _id(self, fmap: Any, name: str, hashed: bool) -> int:
    kind, value = _one(fmap, name)
    if value is None:
      return line_format.MISSING_ID
    if kind == "int64_list" and not hashed and value >= 0:
      return value
    text = _text(name, kind, value)
    return column_spec.hash_id(text) if hashed else line_format.parse_id(text, f"feature {name}")

  def _list(self, fmap: Any, c: column_spec.ListColumn) -> Tuple[Sequence[int], Sequence[float]]:
    kind, entries = _values(fmap, c.column)
    weight_kind, weights = _values(fmap, c.weight_column) if c.weight_column else ("", ())
    if not entries:
      if weights:
        raise LineError(
          "weight_count_mismatch", f"feature {c.column}: no ids but {len(weights)} weights"
        )
      return _EMPTY_LIST
    if kind == "int64_list" and not c.hash and min(entries) >= 0:
      ids: List[int] = list(entries)
    else:
      where = f"feature {c.column}"
      texts = [_text(c.column, kind, v) for v in entries]
      if c.hash:
        ids = [column_spec.hash_id(t) for t in texts]
      else:
        ids = [line_format.parse_id(t, where) for t in texts]
    if not c.weight_column:
      return ids, [1.0] * len(ids)
    if len(weights) != len(ids):
      raise LineError(
        "weight_count_mismatch",
        f"feature {c.column}: {len(ids)} ids but {len(weights)} weights in {c.weight_column}",
      )
    return ids, [_number(c.weight_column, weight_kind, w) for w in weights]

  def _dense(self, fmap: Any, name: str) -> float:
    kind, value = _one(fmap, name)
    if value is None:
      raise LineError("bad_value", f"feature {name}: missing (no number is made up)")
    return _number(name, kind, value)

  def _labels(self, fmap: Any) -> Tuple[int, ...]:
    spec = self.spec
    if not self.fmt.reads_labels(fmap):  # a record without labels (labels_required=False)
      return ()
    if self.multiclass is not None:
      column = spec.multiclass_label.column
      kind, value = _one(fmap, column)
      text = b"" if value is None else _text(column, kind, value)
      reached = self.multiclass.get(text)
      if reached is None:
        raise LineError(
          "bad_label",
          f"{column} label {line_format.show(text)} is not one of "
          f"{', '.join(v.decode() for v in self.multiclass)}",
        )
      return tuple(1 if reached > t else 0 for t in range(len(self.steps)))
    ys = []
    for step in spec.steps:
      kind, value = _one(fmap, step.column)
      ys.append(
        line_format.parse_label(
          b"" if value is None else _text(step.column, kind, value), step.column
        )
      )
    return line_format.chain_labels(ys, self.steps)

  def facts(self) -> Dict[str, Dict[str, int]]:
    return {"features_ignored": dict(self.ignored)}


class TFRecordFormat(csv_formats.SpecFormat):
  """``tf.train.Example`` TFRecord files read through a :class:`ColumnSpec`
  (its ``delimiter`` and list ``separator`` do not apply). The files, splits
  and hold-out are :class:`~tafe_tf.data.csv_formats.SpecFormat`'s."""

  splittable = False

  def __init__(self, spec: column_spec.ColumnSpec, labels_required: bool = True):
    for i, c in enumerate(spec.list_columns):
      if c.weights:
        raise spec.error(
          f"list_columns[{i}].weights",
          f"{c.weights!r} is for delimited files: in TFRecords give a weight_column"
          " (a float_list feature, as many values as ids)",
        )
    super().__init__(spec, labels_required)

  @property
  def has_header(self) -> bool:
    return False

  def prepare(self, inputs: Sequence[SplitInput], skips: writer_lib.SkipCounter) -> Any:
    """``path -> compression`` of every input."""
    return {s.path: compression_of(s.path) for s in inputs}

  def read_range(
    self, path: str, start: int, end: int, first_line: int
  ) -> Iterator[Tuple[int, bytes]]:
    """``(record number, record)`` of every record of ``path`` (read whole)."""
    dataset = tf.data.TFRecordDataset(path, compression_type=compression_of(path))
    number = 0
    try:
      for batch in dataset.batch(_BATCH).as_numpy_iterator():
        for record in batch:
          number += 1
          yield number, record
    except tf.errors.DataLossError as e:
      raise ValueError(
        f"{path}: record {number + 1}: not a TFRecord file, or truncated ({e.message})"
      ) from None

  def reader(
    self, split_input: SplitInput, context: Any, skips: writer_lib.SkipCounter
  ) -> TFRecordReader:
    return TFRecordReader(split_input.path, skips, self)

  def report_facts(self, context: Any) -> Dict[str, Any]:
    spec = self.spec.to_json()
    del spec["delimiter"]
    return {"spec": spec, "compression": {p: c or "none" for p, c in context.items()}}
