"""Readers of the processed public forms of Ali-CCP and AliExpress.

* :class:`ProcessedAliCcp`: the CSV that torch-rechub (and others) ship after
  the usual preprocessing: ``click,purchase``, 23 id columns named by raw field
  id (vocabulary indices, 0 = rare or missing), 8 dense ``D*`` columns.
  Files ``train.csv``, ``test.csv`` and, optionally, ``val.csv``.
* :class:`AliExpress`: FuxiCTR's processed AliExpress (one country):
  ``search_id``, ``categorical_1..16``, ``numerical_1..63``, ``click``,
  ``conversion``. Files ``train.csv`` and ``test.csv``; the validation split is
  held out of train by a hash of ``search_id`` (a search stays in one split).
* :class:`PaddleEsmm`: PaddleRec's ESMM token form of Ali-CCP:
  ``sample_id,click,ctcvr,field:id,field:id,...`` (several tokens per
  multi-valued field, no values: every weight is 1.0). Files ``train.txt``
  and ``test.txt``.

All three name fields as :mod:`tafe_tf.data.ali_ccp` does where they come from Ali-CCP,
and write the same cumulative labels (``click``, ``purchase``).
"""

from __future__ import annotations

import abc
import os
from typing import Any, Dict, List, Sequence, Tuple

from tafe_tf.data import ali_ccp, line_format
from tafe_tf.data import writer as writer_lib
from tafe_tf.data.line_format import FieldKind, FieldTemplate, LineError, Row, SplitInput


class _ColumnsReader(line_format.LineReader):
  """A CSV with a header: label, id and dense columns at fixed positions."""

  def __init__(self, path: str, skips: writer_lib.SkipCounter, fmt: "_CsvFormat"):
    super().__init__(path, skips)
    self.fmt = fmt
    self.columns = fmt.header.split(b",")
    self.num_columns = len(self.columns)
    names = [c.decode() for c in self.columns]
    self.label_columns = [names.index(c) for c in fmt.label_columns]
    # (field, column position, how errors name the column)
    self.id_columns = [(field, names.index(c), f"column {c}") for field, c in fmt.id_columns()]
    self.dense_columns = [
      (field, [(names.index(c), f"column {c}") for c in cols])
      for field, cols in fmt.dense_columns()
    ]
    self.key_column = names.index(fmt.holdout_column) if fmt.holdout_column else None

  def parse_or_raise(self, line: bytes, line_number: int) -> Row:
    line = line_format.strip_line(line)
    parts = line.split(b",")
    if len(parts) != self.num_columns:
      raise LineError(
        "wrong_field_count", f"expected {self.num_columns} comma-separated fields, got {len(parts)}"
      )
    click, buy = (
      line_format.parse_label(parts[i], self.fmt.label_columns[k])
      for k, i in enumerate(self.label_columns)
    )
    labels = line_format.cumulative_labels(click, buy)
    values: Dict[str, Any] = {}
    parse_id, parse_value = line_format.parse_id, line_format.parse_value
    for field, i, where in self.id_columns:
      values[field] = parse_id(parts[i], where)
    for field, columns in self.dense_columns:
      values[field] = [parse_value(parts[i], where) for i, where in columns]
    key = parts[self.key_column] if self.key_column is not None else line
    return Row(labels=labels, features=values, holdout_key=key)


class _CsvFormat(line_format.LineFormat):
  """A processed CSV: ids and dense values in named columns."""

  label_columns: Tuple[str, str] = ("click", "purchase")
  holdout_column: str = ""  # "" hashes the whole line
  train_file, validation_file, test_file = "train.csv", "", "test.csv"

  @abc.abstractmethod
  def id_columns(self) -> List[Tuple[str, str]]:
    """``(field name, column)`` of every id field."""

  @abc.abstractmethod
  def dense_columns(self) -> List[Tuple[str, List[str]]]:
    """``(field name, columns)`` of every dense field."""

  def field_groups(self) -> Dict[str, str]:
    return {}

  def fields(self) -> List[FieldTemplate]:
    groups = self.field_groups()
    return [
      FieldTemplate(name, FieldKind.ID, groups.get(name, "")) for name, _ in self.id_columns()
    ] + [
      FieldTemplate(name, FieldKind.DENSE, groups.get(name, ""), dim=len(cols))
      for name, cols in self.dense_columns()
    ]

  def inputs(self, source_dir: str) -> List[SplitInput]:
    train, test = line_format.require_files(source_dir, [self.train_file, self.test_file])
    validation = os.path.join(source_dir, self.validation_file) if self.validation_file else ""
    if validation and os.path.isfile(validation):
      return [
        SplitInput(train, line_format.TRAIN),
        SplitInput(validation, line_format.VALIDATION),
        SplitInput(test, line_format.TEST),
      ]
    return [SplitInput(train, line_format.TRAIN, holdout=True), SplitInput(test, line_format.TEST)]

  def reader(
    self, split_input: SplitInput, context: Any, skips: writer_lib.SkipCounter
  ) -> _ColumnsReader:
    return _ColumnsReader(split_input.path, skips, self)


# Processed Ali-CCP: the raw field ids as column names.
_PROCESSED_ID_COLUMNS = (
  "101",
  "121",
  "122",
  "124",
  "125",
  "126",
  "127",
  "128",
  "129",
  "205",
  "206",
  "207",
  "210",
  "216",
  "508",
  "509",
  "702",
  "853",
  "301",
  "109_14",
  "110_14",
  "127_14",
  "150_14",
)
_PROCESSED_DENSE_COLUMNS = ("109_14", "110_14", "127_14", "150_14", "508", "509", "702", "853")
_ALI_CCP_NAME = {raw: name for raw, name, _, _ in ali_ccp.FIELDS}
_ALI_CCP_GROUP = {name: group for _, name, _, group in ali_ccp.FIELDS}


class ProcessedAliCcp(_CsvFormat):
  """torch-rechub's processed Ali-CCP CSV (ids are vocabulary indices).

  Id 0 means "rare or missing" there, so it never enters a vocabulary: it
  lands on the model's OOV row like -1 does for the raw data. The ``D<field>``
  columns (scaled weights of the multi-valued fields) become dense fields
  ``<name>_value``.
  """

  name = "ali_ccp_processed"
  user_field = "user_id"
  validation_file = "val.csv"
  header = b",".join(
    [b"click", b"purchase"]
    + [c.encode() for c in _PROCESSED_ID_COLUMNS]
    + [b"D" + c.encode() for c in _PROCESSED_DENSE_COLUMNS]
  )

  def id_columns(self) -> List[Tuple[str, str]]:
    return [(_ALI_CCP_NAME[c], c) for c in _PROCESSED_ID_COLUMNS]

  def dense_columns(self) -> List[Tuple[str, List[str]]]:
    return [(_ALI_CCP_NAME[c] + "_value", ["D" + c]) for c in _PROCESSED_DENSE_COLUMNS]

  def field_groups(self) -> Dict[str, str]:
    groups = dict(_ALI_CCP_GROUP)
    groups.update(
      {
        _ALI_CCP_NAME[c] + "_value": _ALI_CCP_GROUP[_ALI_CCP_NAME[c]]
        for c in _PROCESSED_DENSE_COLUMNS
      }
    )
    return groups

  def excluded_ids(self, field: str) -> Sequence[int]:
    return (line_format.MISSING_ID, 0)


ALIEXPRESS_CATEGORICAL = tuple(f"categorical_{i}" for i in range(1, 17))
ALIEXPRESS_NUMERICAL = tuple(f"numerical_{i}" for i in range(1, 64))


class AliExpress(_CsvFormat):
  """FuxiCTR's processed AliExpress CSV (one country).

  16 categorical columns become id fields of the same names, the 63 numerical
  columns one dense field ``numerical`` of dim 63.
  """

  name = "aliexpress"
  label_columns = ("click", "conversion")
  holdout_column = "search_id"
  header = b",".join(
    [b"search_id"]
    + [c.encode() for c in ALIEXPRESS_CATEGORICAL]
    + [c.encode() for c in ALIEXPRESS_NUMERICAL]
    + [b"click", b"conversion"]
  )

  def id_columns(self) -> List[Tuple[str, str]]:
    return [(c, c) for c in ALIEXPRESS_CATEGORICAL]

  def dense_columns(self) -> List[Tuple[str, List[str]]]:
    return [("numerical", list(ALIEXPRESS_NUMERICAL))]


def _token_entry(token: bytes) -> Tuple[str, bool, int, float]:
  """A ``field:id`` token as a resolved Ali-CCP entry of weight 1.0."""
  field, sep, feature_id = token.partition(b":")
  if not sep:
    raise LineError("bad_entry", f"token {line_format.show(token, 80)} is not field:id")
  name, single, where = ali_ccp.resolve_field(field)
  return name, single, line_format.parse_id(feature_id, where), 1.0


class _PaddleReader(line_format.LineReader):
  """``sample_id,click,ctcvr,field:id,...`` lines."""

  def parse_or_raise(self, line: bytes, line_number: int) -> Row:
    parts = line_format.strip_line(line).split(b",")
    if len(parts) < 3:
      raise LineError(
        "wrong_field_count", f"expected sample_id,click,ctcvr and tokens, got {len(parts)} fields"
      )
    sample_id, click, ctcvr = line_format.check_sample_id(parts[0]), parts[1], parts[2]
    # ctcvr is already cumulative: 1 only if clicked and bought.
    labels = line_format.cumulative_labels(
      line_format.parse_label(click, "click"), line_format.parse_label(ctcvr, "ctcvr")
    )
    values = ali_ccp.fill_missing(ali_ccp.collect(map(_token_entry, parts[3:])))
    return Row(labels=labels, features=values, holdout_key=sample_id, sample_id=sample_id)


class PaddleEsmm(line_format.LineFormat):
  """PaddleRec's ESMM token form of Ali-CCP (fields as in :mod:`tafe_tf.data.ali_ccp`)."""

  name = "ali_ccp_paddle_esmm"
  has_sample_id = True
  user_field = "user_id"

  def fields(self) -> List[FieldTemplate]:
    return ali_ccp.field_templates()

  def inputs(self, source_dir: str) -> List[SplitInput]:
    train, test = line_format.require_files(source_dir, ["train.txt", "test.txt"])
    return [SplitInput(train, line_format.TRAIN, holdout=True), SplitInput(test, line_format.TEST)]

  def reader(
    self, split_input: SplitInput, context: Any, skips: writer_lib.SkipCounter
  ) -> _PaddleReader:
    return _PaddleReader(split_input.path, skips)
