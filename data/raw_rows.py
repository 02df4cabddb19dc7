"""Raw files (CSV, TSV, TFRecords) read through a column spec, as batches of
serialized ``tf.train.Example`` to score (``launch.predict --format=...``).

:class:`RawRows` reads the files through the spec's format
(:class:`tafe_tf.data.csv_formats.SpecFormat` or
:class:`tafe_tf.data.tfrecord_format.TFRecordFormat`, built with
``labels_required=False``: the files may lack every label column) with its own
reader, so a bad line is skipped and counted (or, ``strict``, stops with one
line naming file, line and field) exactly as ``launch.convert`` does. Each
usable row becomes Example bytes through the converter's row encoder
(:class:`tafe_tf.example_codec.ExampleEncoder`): ids raw (the model's lookups
map them with its vocabularies), labels left out (scoring ignores them).

Each row is named by the spec's ``key_column`` (the key column ``sample_id``,
as in a converted split), else by ``<file>:<line>`` (``line``; ``record`` for
TFRecords, numbered from 1 in each file). Files are read in name order, one
line at a time: one batch is held in memory.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf

from tafe_tf import example_codec
from tafe_tf import features as features_lib
from tafe_tf.data import column_spec, convert, csv_formats, line_format, tfrecord_format
from tafe_tf.data import writer as writer_lib

#: ``--format`` -> the delimiter its spec must have (TFRecords have none).
DELIMITERS = column_spec.FORMAT_DELIMITERS


def load_spec(path: str, fmt: str) -> column_spec.ColumnSpec:
  """The spec in the JSON file ``path``, for files of format ``fmt``
  (``csv``, ``tsv`` or ``tfrecord``), with ``launch.convert``'s defaults: the
  format's delimiter, and ``files`` (unused here) when absent.

  Raises:
    ValueError: one line naming the file (and the key): unreadable, not
      JSON, a delimiter that is not the format's, a bad spec.
  """
  if fmt not in DELIMITERS:
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(DELIMITERS)})")
  try:
    obj = column_spec.read_spec_object(path, fmt)
  except OSError as e:
    raise ValueError(f"{path}: cannot read the spec: {e.strerror or e}") from None
  obj.setdefault("files", {"train": f"train.{fmt}"})
  return column_spec.ColumnSpec.from_json(obj, path)


def spec_format(spec: column_spec.ColumnSpec, fmt: str) -> csv_formats.SpecFormat:
  """The format reading ``fmt`` files through ``spec``, labels optional."""
  if fmt == "tfrecord":
    return tfrecord_format.TFRecordFormat(spec, labels_required=False)
  return csv_formats.SpecFormat(spec, labels_required=False)


def input_files(pattern: str) -> List[str]:
  """The files matching ``pattern`` (a path or glob), in name order.

  Raises:
    FileNotFoundError: none matches.
    ValueError: one is empty (0 bytes).
  """
  paths = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
  if not paths:
    raise FileNotFoundError(f"no file matches {pattern!r}")
  return line_format.require_files("", paths)


class RawRows:
  """The usable rows of raw files as batches of serialized Examples and keys
  (a :class:`tafe_tf.prediction.KeyedRecordSource`).

  Args:
    fmt: :func:`spec_format`'s format.
    paths: The files, read in this order.
    fields: The fields to encode (the model's; default every field of the
      spec). Each must be a field of the spec.
    strict: Stop at the first bad line (ValueError naming file, line and
      field) instead of skipping and counting it.

  Attributes:
    schema: The spec's schema (no vocabularies: ids are raw), with
      ``has_sample_id`` where the spec has a key column.
    key_column: ``sample_id`` (the spec's key column), ``line`` or ``record``.
    skips: Lines skipped so far, by reason (:class:`~tafe_tf.data.writer.SkipCounter`).
    rows_read: Lines (records) read so far, skipped ones included.

  Raises (on construction):
    ValueError: a header lacks a column the spec names (label columns may be
      absent), or a field is not the spec's.
  """

  def __init__(
    self,
    fmt: csv_formats.SpecFormat,
    paths: Sequence[str],
    fields: Optional[Sequence[str]] = None,
    strict: bool = False,
  ):
    self.format = fmt
    self.paths = list(paths)
    self.schema = convert.build_schema(fmt, {})
    self.fields: List[str] = []
    self.encode_only(self.schema.field_names if fields is None else fields)
    self.key_column = (
      features_lib.SAMPLE_ID_KEY if fmt.has_sample_id else ("line" if fmt.has_header else "record")
    )
    self.skips = writer_lib.SkipCounter(strict=strict)
    self.rows_read = 0
    more = len(self.paths) - 1
    self.description = self.paths[0] + (f" and {more} more file(s)" if more else "")
    self._splits = [line_format.SplitInput(p, line_format.TEST) for p in self.paths]
    self._context = fmt.prepare(self._splits, self.skips)  # CSV: every header, read once
    for path in self.paths:
      line_format.check_header(fmt, path)  # before any row is scored

  def encode_only(self, fields: Sequence[str]) -> None:
    """Encodes ``fields`` (spec fields) from now on; raises ValueError naming
    one the spec lacks."""
    unknown = [n for n in fields if n not in self.schema.field_names]
    if unknown:
      raise ValueError(f"{self.format.spec.source} has no field {unknown[0]!r}")
    self.fields = list(fields)

  def rows(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """``(key, field values)`` of every usable row, in file order."""
    fmt, by_key = self.format, self.format.has_sample_id
    for split_input in self._splits:
      reader = fmt.reader(split_input, self._context, self.skips)
      size = os.path.getsize(split_input.path)
      for number, line in fmt.read_range(split_input.path, 0, size, 1):
        self.rows_read += 1
        row = reader.parse(line, number)
        if row is None:
          continue
        key = row.sample_id.decode() if by_key else f"{split_input.path}:{number}"
        yield key, row.all_features()
      reader.close()

  def keyed_batches(self, batch_size: int) -> Iterator[Tuple[tf.Tensor, List[str]]]:
    """``(serialized Examples [<= batch_size], their keys)``, in file order."""
    encoder = example_codec.ExampleEncoder(self.schema)
    examples: List[bytes] = []
    keys: List[str] = []
    for key, values in self.rows():
      examples.append(encoder.example(encoder.encode_fields(values, self.fields)))
      keys.append(key)
      if len(examples) == batch_size:
        yield tf.constant(examples), keys
        examples, keys = [], []
    if examples:
      yield tf.constant(examples), keys

  def read_summary(self) -> str:
    """``"12 lines read, 2 skipped (bad_id 1: test.csv:4; wrong_field_count 1:
    test.csv:7)"`` (the first lines of each reason), or ``"..., 0 skipped"``."""
    unit = "lines" if self.format.has_header else "records"
    parts = []
    for reason, n in sorted(self.skips.counts.items()):
      first = self.skips.first_lines.get(reason, [])
      parts.append(f"{reason} {n}: {', '.join(first)}{', ...' if n > len(first) else ''}")
    skipped = f" ({'; '.join(parts)})" if parts else ""
    return f"{self.rows_read} {unit} read, {self.skips.total} skipped{skipped}"
