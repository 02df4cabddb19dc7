"""What a line-oriented input format gives the converter and the TFDS builders.

Every real-data format here (raw Ali-CCP, processed Ali-CCP CSV, AliExpress
CSV, PaddleRec's ESMM tokens) is a set of text files with one impression per
line. A :class:`LineFormat` says which file feeds which split, which fields the
dataset has, and makes a :class:`LineReader` that turns one line into a
:class:`Row` or skips it. The same reader serves :func:`tafe_tf.data.convert.convert`
(TFRecords, in parallel over byte ranges) and the TFDS builders
(:func:`iter_rows`), so there is one parser per format.

A line that cannot be used raises :class:`LineError` inside the reader; the
reader reports it to its :class:`tafe_tf.data.writer.SkipCounter` (which raises instead
in strict mode) and returns ``None``.

Every reader reads ids with :func:`parse_id` and values with :func:`parse_value`,
the one check of what an input id or value may be (the bounds are
:mod:`tafe_tf.features`' ``MAX_ID`` and ``MAX_ABS_VALUE``): an id is decimal
digits only and fits int64, a value is a finite number within
``MAX_ABS_VALUE``; anything else is a :class:`LineError`, never a wrapped id
or an ``inf``.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import zlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from tafe_tf import features as features_lib
from tafe_tf.data import writer as writer_lib

FieldKind = features_lib.FieldKind
STEPS = ("click", "purchase")
TRAIN, VALIDATION, TEST = "train", "validation", "test"
# Written for a single-valued field that a row lacks; never in a vocabulary,
# so the model maps it to the OOV row.
MISSING_ID = -1
# A UTF-8 byte order mark some editors and exporters put at a file's start.
BOM = b"\xef\xbb\xbf"
_MAX_ID_DIGITS = len(str(features_lib.MAX_ID))


class LineError(Exception):
  """A line that cannot be used: ``reason`` (a report key) and ``detail``."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class FieldTemplate:
  """A field before its vocabulary size is known.

  Attributes:
    name: Schema field name.
    kind: ``id``, ``weighted_ids`` or ``dense``.
    group: ``user``, ``item``, ``context``, ``cross`` (reports only).
    dim: Length of a dense field.
  """

  name: str
  kind: FieldKind
  group: str = ""
  dim: int = 1


class SharedFeatures:
  """Features that many rows share (an Ali-CCP common row), encoded once.

  Attributes:
    features: ``field name -> value`` in
      :func:`tafe_tf.example_codec.make_example` form.
    encoded: Their serialized map entries, filled in by the first writer.
    train_rows: Train rows that used them while cached (vocabulary counts).
  """

  __slots__ = ("features", "encoded", "train_rows")

  def __init__(self, features: Dict[str, Any]):
    self.features = features
    self.encoded: Optional[bytes] = None
    self.train_rows = 0


@dataclasses.dataclass
class Row:
  """One impression.

  Attributes:
    labels: Cumulative labels, one per step (0/1); none for a file (or
      record) without label columns, read with ``labels_required=False``
      (:class:`tafe_tf.data.csv_formats.SpecFormat`, scoring only).
    features: The row's own fields; together with ``shared`` exactly the
      schema's fields, each once.
    holdout_key: Bytes hashed to hold rows out for validation.
    sample_id: The data's sample id (formats that have one).
    shared: Fields shared with other rows, or ``None``.
  """

  labels: Tuple[int, ...]
  features: Dict[str, Any]
  holdout_key: bytes
  sample_id: Optional[bytes] = None
  shared: Optional[SharedFeatures] = None

  def all_features(self) -> Dict[str, Any]:
    if self.shared is None:
      return self.features
    return {**self.shared.features, **self.features}


@dataclasses.dataclass(frozen=True)
class SplitInput:
  """One input file and the split it feeds.

  Attributes:
    path: The file.
    split: ``train``, ``validation`` or ``test``.
    holdout: Hold a hashed fraction of its rows out as ``validation``
      (train files of formats without a validation file).
  """

  path: str
  split: str
  holdout: bool = False


class LineReader(abc.ABC):
  """Parses the lines of one input file (one instance per worker process)."""

  def __init__(self, path: str, skips: writer_lib.SkipCounter):
    self.path = path
    self.skips = skips
    # Called with each SharedFeatures the reader stops caching.
    self.on_evict: Callable[[SharedFeatures], None] = lambda shared: None

  def parse(self, line: bytes, line_number: int) -> Optional[Row]:
    """The row of ``line`` (1-based ``line_number``), or None if skipped."""
    try:
      return self.parse_or_raise(line, line_number)
    except LineError as e:
      self.skips.skip(e.reason, self.path, line_number, e.detail)
      return None

  @abc.abstractmethod
  def parse_or_raise(self, line: bytes, line_number: int) -> Row:
    """The row of ``line``; raises :class:`LineError` if it cannot be used."""

  def close(self) -> None:  # noqa: B027  (a hook: most readers cache nothing)
    """Evicts every cached :class:`SharedFeatures` (via ``on_evict``)."""

  def facts(self) -> Dict[str, Dict[str, int]]:
    """Format-specific counts for the report (summed over workers)."""
    return {}

  def shared_problems(self) -> Dict[Tuple[str, int], Tuple[str, str]]:
    """Bad shared rows: ``(path, line) -> (reason, detail)``, counted once."""
    return {}


class LineFormat(abc.ABC):
  """One input format. Instances are small and picklable (sent to workers)."""

  #: Dataset (schema) name.
  name: str = ""
  #: Whether rows carry a sample id.
  has_sample_id: bool = False
  #: The field that identifies a user (GAUC), if any.
  user_field: Optional[str] = None
  #: The exact first line of every file (CSV header), or None.
  header: Optional[bytes] = None
  #: Step names, in chain order (the schema's steps; each row has one label per step).
  steps: Tuple[str, ...] = STEPS

  #: Whether a file may be cut into byte ranges at line starts (a worker per
  #: range); else each file is read whole by one worker (TFRecords).
  splittable: bool = True

  @property
  def has_header(self) -> bool:
    """Whether line 1 of every file is a header (checked, never a row)."""
    return self.header is not None

  def read_range(
    self, path: str, start: int, end: int, first_line: int
  ) -> Iterator[Tuple[int, bytes]]:
    """``(line number, line)`` of every line starting in ``[start, end)`` of
    ``path`` (``first_line`` is the number of the line at ``start``): the
    header is left out (it is checked before any worker starts) and a byte
    order mark on line 1 removed. Formats whose "lines" are records override it."""
    with open(path, "rb") as f:
      f.seek(start)
      position, number = start, first_line - 1
      for line in f:
        if position >= end:
          break
        position += len(line)
        number += 1
        if number == 1:
          if self.has_header:
            continue
          line = without_bom(line)
        yield number, line

  def check_header_line(self, path: str, line: bytes) -> None:
    """Raises ValueError unless ``line`` (line 1 of ``path``, without its
    newline and byte order mark) is a header this format reads."""
    if line != self.header:
      raise ValueError(
        f"{path}:1: header {line[:200].decode(errors='replace')!r}"
        f" is not the {self.name} header "
        f"{(self.header or b'')[:200].decode(errors='replace')!r}"
      )

  @abc.abstractmethod
  def fields(self) -> List[FieldTemplate]:
    """The dataset's fields, in model order."""

  @abc.abstractmethod
  def inputs(self, source_dir: str) -> List[SplitInput]:
    """The input files under ``source_dir``; raises FileNotFoundError."""

  def excluded_ids(self, field: str) -> Sequence[int]:
    """Ids of ``field`` that never enter its vocabulary."""
    return (MISSING_ID,)

  def prepare(self, inputs: Sequence[SplitInput], skips: writer_lib.SkipCounter) -> Any:
    """Work done once before reading (e.g. indexing a side file)."""
    return None

  @abc.abstractmethod
  def reader(
    self, split_input: SplitInput, context: Any, skips: writer_lib.SkipCounter
  ) -> LineReader:
    """A reader of ``split_input``; ``context`` is what :meth:`prepare` gave."""

  def report_facts(self, context: Any) -> Dict[str, Any]:
    """Facts of :meth:`prepare` for the report."""
    return {}


def require_files(source_dir: str, names: Sequence[str]) -> List[str]:
  """Paths of ``names`` under ``source_dir``.

  Raises:
    FileNotFoundError: naming the missing ones.
    ValueError: naming an empty (0-byte) one: a failed download or copy,
      never a dataset of 0 rows.
  """
  paths = [os.path.join(source_dir, n) for n in names]
  missing = [n for n, p in zip(names, paths) if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"{source_dir}: missing input file(s) {', '.join(missing)}")
  for path in paths:
    if os.path.getsize(path) == 0:
      raise ValueError(f"{path}: the file is empty (0 bytes)")
  return paths


def show(text: bytes, limit: int = 40) -> str:
  """``text`` quoted for an error message (cut to ``limit`` bytes)."""
  return repr(text[:limit].decode(errors="replace"))


def parse_id(text: bytes, where: str) -> int:
  """An input id: decimal digits only (no sign, space or ``_``), at most
  :data:`tafe_tf.features.MAX_ID`.

  Args:
    text: The id's bytes.
    where: The field or column, for the error (``column categorical_3``).

  Raises:
    LineError: ``bad_id`` (not digits: ``+7``, `` 7``, ``1_00036``, ``-1``,
      empty) or ``id_out_of_range`` (past int64, which would wrap).
  """
  # bytes.isdigit is ASCII 0-9 only (str.isdigit would take other scripts).
  if not text.isdigit():
    raise LineError(
      "bad_id", f"{where}: id {show(text)} is not a non-negative integer (digits only)"
    )
  digits = text
  if len(digits) > _MAX_ID_DIGITS:  # int() refuses 4300+ digits; skip the zeros
    digits = digits.lstrip(b"0") or b"0"
  value = int(digits) if len(digits) <= _MAX_ID_DIGITS else None
  if value is None or value > features_lib.MAX_ID:
    raise LineError(
      "id_out_of_range",
      f"{where}: id {show(text)} is larger than {features_lib.MAX_ID} (the int64 maximum)",
    )
  return value


def parse_value(text: bytes, where: str) -> float:
  """An input value or weight: a number (what ``float`` reads), finite and
  within :data:`tafe_tf.features.MAX_ABS_VALUE` in magnitude.

  Raises:
    LineError: ``bad_value`` (not a number, NaN, +-inf) or
      ``value_out_of_range`` (finite but larger: float32 would make 1e39
      ``inf``, and a model answers a saturated constant at such inputs).
  """
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not features_lib.value_fits(value):
    if value - value != 0.0:  # nan or inf
      raise LineError("bad_value", f"{where}: {show(text)} is not a finite number")
    raise LineError(
      "value_out_of_range",
      f"{where}: value {show(text)} is larger in magnitude than "
      f"{features_lib.MAX_ABS_VALUE:g} (tafe_tf.features.MAX_ABS_VALUE)",
    )
  return value


def check_sample_id(text: bytes) -> bytes:
  """``text`` if it is UTF-8 (predictions and reports write sample ids as
  text); raises ``LineError('bad_sample_id')`` otherwise."""
  try:
    text.decode("utf-8")
  except UnicodeDecodeError:
    raise LineError("bad_sample_id", f"sample_id {show(text)} is not UTF-8") from None
  return text


def is_held_out(key: bytes, fraction: float) -> bool:
  """Deterministic validation hold-out: crc32 of ``key`` below the fraction."""
  return zlib.crc32(key) < fraction * 4294967296.0


def parse_label(text: bytes, name: str) -> int:
  """``b'0'``/``b'1'`` -> 0/1; raises ``LineError('bad_label')`` otherwise."""
  if text == b"1":
    return 1
  if text == b"0":
    return 0
  raise LineError("bad_label", f"{name} label {text.decode(errors='replace')!r} is not 0 or 1")


def cumulative_labels(click: int, buy: int) -> Tuple[int, int]:
  """(click, click AND buy); a buy without a click is skipped and counted."""
  if buy and not click:
    raise LineError("buy_without_click", "purchase=1 but click=0")
  return click, buy


def chain_labels(
  labels: Sequence[int], steps: Sequence[str], reason: Optional[str] = None
) -> Tuple[int, ...]:
  """The labels of one row, one 0/1 per step in chain order, checked to be
  cumulative: a step reached without the step before it is inconsistent.

  Raises:
    LineError: ``<step>_without_<previous step>`` (``purchase_without_click``),
      or ``reason`` when given (the public formats keep ``buy_without_click``).
  """
  for t in range(1, len(labels)):
    if labels[t] and not labels[t - 1]:
      raise LineError(
        reason or f"{steps[t]}_without_{steps[t - 1]}", f"{steps[t]}=1 but {steps[t - 1]}=0"
      )
  return tuple(labels)


def strip_line(line: bytes) -> bytes:
  return line.rstrip(b"\r\n")


def without_bom(line: bytes) -> bytes:
  """A file's first line without a UTF-8 byte order mark (apply to line 1
  only: the mark is the file's encoding tag, not data)."""
  return line[len(BOM) :] if line.startswith(BOM) else line


def iter_rows(
  fmt: LineFormat, split_input: SplitInput, context: Any, skips: writer_lib.SkipCounter
) -> Iterator[Tuple[int, Row]]:
  """``(line number, row)`` of every usable line of one file, in order."""
  check_header(fmt, split_input.path)
  reader = fmt.reader(split_input, context, skips)
  for number, line in fmt.read_range(split_input.path, 0, os.path.getsize(split_input.path), 1):
    row = reader.parse(line, number)
    if row is not None:
      yield number, row
  reader.close()


def check_header(fmt: LineFormat, path: str) -> None:
  """Raises ValueError unless the first line of ``path`` is a header the
  format reads (formats with one; a leading byte order mark is ignored)."""
  if not fmt.has_header:
    return
  with open(path, "rb") as f:
    line = strip_line(without_bom(f.readline()))
  fmt.check_header_line(path, line)


def tfds_example(fmt: LineFormat, row: Row) -> Dict[str, Any]:
  """A row as the nested dict the TFDS builders declare (see data/tfds)."""
  out: Dict[str, Any] = {}
  values = row.all_features()
  for field in fmt.fields():
    value = values[field.name]
    if field.kind == FieldKind.WEIGHTED_IDS:
      out[field.name] = {"ids": list(value[0]), "weights": list(value[1])}
    else:
      out[field.name] = value
  out["label"] = dict(zip(fmt.steps, row.labels))
  if fmt.has_sample_id:
    out["sample_id"] = (row.sample_id or b"").decode()
  return out


def merge_counts(into: Dict[str, Any], other: Mapping[str, Any]) -> None:
  """Adds nested ``str -> int`` (or ``str -> dict``) counts of ``other``."""
  for key, value in other.items():
    if isinstance(value, Mapping):
      merge_counts(into.setdefault(key, {}), value)
    else:
      into[key] = into.get(key, 0) + value
