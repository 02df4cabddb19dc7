"""Delimited files with a header read through a column spec, and the public formats.

* :class:`SpecFormat`: any CSV / TSV with a header, read through a
  :class:`tafe_tf.data.column_spec.ColumnSpec` (``launch.convert --format=csv
  --spec=spec.json``). The two processed public CSV forms below are specs
  (:data:`PROCESSED_ALI_CCP_SPEC`, :data:`ALIEXPRESS_SPEC`) read by the same
  reader, :class:`SpecReader`, with their exact header required.

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

All three public forms name fields as :mod:`tafe_tf.data.ali_ccp` does where they come from Ali-CCP,
and write the same cumulative labels (``click``, ``purchase``).
"""

from __future__ import annotations

import csv
import glob
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tafe_tf.data import ali_ccp, column_spec, line_format
from tafe_tf.data import writer as writer_lib
from tafe_tf.data.line_format import FieldKind, FieldTemplate, LineError, Row, SplitInput


def split_cells(line: bytes, delimiter: bytes) -> List[bytes]:
  """The cells of one line (no newline). A line with a ``"`` is read as the
  csv module reads quoted cells (``"a,b"`` is one cell); others are split as
  they are (fast: the public formats never quote)."""
  if b'"' not in line:
    return line.split(delimiter)
  try:
    text = line.decode("utf-8")
    return [c.encode() for c in next(csv.reader([text], delimiter=delimiter.decode(), strict=True))]
  except UnicodeDecodeError:
    raise LineError("bad_quoting", "a line with quotes is not UTF-8") from None
  except csv.Error as e:
    raise LineError("bad_quoting", f"quoted cells: {e}") from None


def read_header(path: str, delimiter: bytes) -> List[str]:
  """The column names on line 1 of ``path`` (a byte order mark ignored)."""
  with open(path, "rb") as f:
    line = line_format.strip_line(line_format.without_bom(f.readline()))
  try:
    return [c.decode("utf-8") for c in split_cells(line, delimiter)]
  except (LineError, UnicodeDecodeError):
    raise ValueError(f"{path}:1: the header is not UTF-8 text") from None


def matching_files(source_dir: str, pattern: str, where: str) -> List[str]:
  """The files matching ``pattern`` (a name or glob) in ``source_dir``, in
  name order.

  Raises:
    FileNotFoundError: none matches (``where`` names the spec key).
    ValueError: one is empty (0 bytes).
  """
  paths = sorted(p for p in glob.glob(os.path.join(source_dir, pattern)) if os.path.isfile(p))
  if not paths:
    raise FileNotFoundError(f"{source_dir}: no file matches {pattern!r} ({where})")
  return line_format.require_files(source_dir, paths)


_EMPTY_LIST = ((), ())
_DELIMITER_NAME = {",": "comma", "\t": "tab"}


class SpecReader(line_format.LineReader):
  """A delimited file with a header, read through a :class:`SpecFormat`'s spec.

  Cells: an id is :func:`~tafe_tf.data.line_format.parse_id` (or
  :func:`~tafe_tf.data.column_spec.hash_id` of a ``hash`` column), an empty id
  cell :data:`~tafe_tf.data.line_format.MISSING_ID` (the OOV row; formats with
  ``empty_id_is_missing``); a list cell is entries (an empty cell: no ids);
  a dense cell is :func:`~tafe_tf.data.line_format.parse_value` (an empty cell
  is ``bad_value``: no number is made up); labels are 0/1.
  """

  def __init__(self, path: str, skips: writer_lib.SkipCounter, fmt: "SpecFormat", header):
    super().__init__(path, skips)
    spec = fmt.spec
    self.delimiter = spec.delimiter.encode()
    self.delimiter_name = _DELIMITER_NAME[spec.delimiter]
    self.num_columns = len(header)
    at = {name: i for i, name in enumerate(header)}
    self.empty_id_is_missing = fmt.empty_id_is_missing
    # (field, position, how errors name the column, hashed?)
    self.ids = [(c.name, at[c.column], f"column {c.column}", c.hash) for c in spec.id_columns]
    self.lists = [
      (
        c.name,
        at[c.column],
        f"column {c.column}",
        c,
        at[c.weight_column] if c.weight_column else None,
      )
      for c in spec.list_columns
    ]
    self.dense = [(d.name, [(at[c], f"column {c}") for c in d.columns]) for d in spec.dense_columns]
    self.steps = spec.step_names
    self.label_reason = fmt.label_skip_reason
    if not fmt.reads_labels(at):  # rows without labels (labels_required=False)
      self.multiclass, self.labels = None, []
    elif spec.multiclass_label is not None:
      self.multiclass = (
        at[spec.multiclass_label.column],
        spec.multiclass_label.column,
        {text.encode(): reached for text, reached in spec.multiclass_label.values},
      )
      self.labels = []
    else:
      self.multiclass = None
      self.labels = [(at[s.column], s.column) for s in spec.steps]
    self.key = (at[spec.key_column], spec.key_column) if spec.key_column else None
    self.holdout = at[spec.holdout_column] if spec.holdout_column else None

  def parse_or_raise(self, line: bytes, line_number: int) -> Row:
    line = line_format.strip_line(line)
    parts = split_cells(line, self.delimiter)
    if len(parts) != self.num_columns:
      raise LineError(
        "wrong_field_count",
        f"expected {self.num_columns} {self.delimiter_name}-separated fields, got {len(parts)}",
      )
    labels = self._labels(parts)
    values: Dict[str, Any] = {}
    parse_id = line_format.parse_id
    for field, i, where, hashed in self.ids:
      cell = parts[i]
      if not cell and self.empty_id_is_missing:
        values[field] = line_format.MISSING_ID
      else:
        values[field] = column_spec.hash_id(cell) if hashed else parse_id(cell, where)
    for field, i, where, c, weight_at in self.lists:
      values[field] = _parse_list(parts[i], where, c, parts[weight_at] if weight_at else None)
    parse_value = line_format.parse_value
    for field, columns in self.dense:
      values[field] = [parse_value(parts[i], where) for i, where in columns]
    sample_id = None
    if self.key is not None:
      sample_id = parts[self.key[0]]
      if not sample_id:
        raise LineError("missing_key", f"column {self.key[1]}: the row key is empty")
      line_format.check_sample_id(sample_id)
    holdout = parts[self.holdout] if self.holdout is not None else b""
    return Row(labels=labels, features=values, holdout_key=holdout or line, sample_id=sample_id)

  def _labels(self, parts: List[bytes]) -> Tuple[int, ...]:
    if self.multiclass is not None:
      i, column, values = self.multiclass
      reached = values.get(parts[i])
      if reached is None:
        raise LineError(
          "bad_label",
          f"{column} label {line_format.show(parts[i])} is not one of "
          f"{', '.join(v.decode() for v in values)}",
        )
      return tuple(1 if reached > t else 0 for t in range(len(self.steps)))
    ys = [line_format.parse_label(parts[i], column) for i, column in self.labels]
    return line_format.chain_labels(ys, self.steps, self.label_reason)


def _parse_list(
  cell: bytes, where: str, c: column_spec.ListColumn, weights_cell: Optional[bytes]
) -> Tuple[Sequence[int], Sequence[float]]:
  """``(ids, weights)`` of a list cell; an empty cell has no ids."""
  if not cell:
    if weights_cell:
      raise LineError("weight_count_mismatch", f"{where}: no ids but weights {weights_cell!r}")
    return _EMPTY_LIST
  separator = c.separator.encode()
  entries = cell.split(separator)
  read_id = column_spec.hash_id if c.hash else lambda text: line_format.parse_id(text, where)
  if c.weights:
    ids, weights, weight_separator = [], [], c.weight_separator.encode()
    for entry in entries:
      text, sep, weight = entry.rpartition(weight_separator)
      if not sep:
        raise LineError(
          "bad_entry",
          f"{where}: entry {line_format.show(entry)} is not id{c.weight_separator}weight",
        )
      ids.append(read_id(text))
      weights.append(line_format.parse_value(weight, where))
    return ids, weights
  ids = [read_id(text) for text in entries]
  if weights_cell is None:
    return ids, [1.0] * len(ids)
  weight_texts = weights_cell.split(separator) if weights_cell else []
  if len(weight_texts) != len(ids):
    raise LineError(
      "weight_count_mismatch",
      f"{where}: {len(ids)} ids but {len(weight_texts)} weights in column {c.weight_column}",
    )
  where_weights = f"column {c.weight_column}"
  return ids, [line_format.parse_value(w, where_weights) for w in weight_texts]


class SpecFormat(line_format.LineFormat):
  """Delimited files with a header, read through a :class:`ColumnSpec`.

  The files are ``spec.files`` under the input folder (globs: every match, in
  name order); the header must hold every column the spec names, in any order
  (other columns are ignored, and listed in the report). Without a validation
  file, a ``validation_fraction`` of the train rows is held out by a hash of
  the spec's group column (whole users or sessions), else the key, else the
  line.
  """

  #: An empty id cell is a missing id (-1, the OOV row) rather than a bad id.
  empty_id_is_missing: bool = True
  #: Skip reason of a step reached without the one before it (None: generic).
  label_skip_reason: Optional[str] = None
  #: Splits of ``spec.files`` that may be absent (then held out of train).
  optional_splits: Tuple[str, ...] = ()

  def __init__(self, spec: column_spec.ColumnSpec, labels_required: bool = True):
    self.spec = spec
    # False (scoring, launch.predict): files may lack every label column; rows
    # of such files carry no labels. Files with them are read as usual.
    self.labels_required = labels_required
    self.name = spec.name
    self.steps = spec.step_names
    self.user_field = spec.user_field
    self.has_sample_id = bool(spec.key_column)

  @property
  def has_header(self) -> bool:
    return True

  def check_header_line(self, path: str, line: bytes) -> None:
    if self.header is not None:  # a public format: exactly its header
      super().check_header_line(path, line)
      return
    names = read_header(path, self.spec.delimiter.encode())
    seen = set()
    for name in names:
      if name in seen:
        raise ValueError(f"{path}:1: column {name!r} appears twice in the header")
      seen.add(name)
    skip = () if self.reads_labels(seen) else self.label_columns()
    for column, key in self.spec.columns():
      if column not in seen and column not in skip:
        shown = ", ".join(names)
        raise ValueError(
          f"{self.spec.source}: {key}: column {column!r} is not in the header of {path}"
          f" ({shown[:200]})"
        )

  def label_columns(self) -> Tuple[str, ...]:
    """The columns holding the labels (the steps' or the multi-class one)."""
    spec = self.spec
    if spec.multiclass_label is not None:
      return (spec.multiclass_label.column,)
    return tuple(s.column for s in spec.steps)

  def reads_labels(self, columns: Any) -> bool:
    """Whether a file (or record) with ``columns`` has its labels read: always
    when they are required, else when any label column is there."""
    return self.labels_required or any(c in columns for c in self.label_columns())

  def fields(self) -> List[FieldTemplate]:
    spec = self.spec
    return (
      [FieldTemplate(c.name, FieldKind.ID, c.group) for c in spec.id_columns]
      + [FieldTemplate(c.name, FieldKind.WEIGHTED_IDS, c.group) for c in spec.list_columns]
      + [
        FieldTemplate(d.name, FieldKind.DENSE, d.group, dim=len(d.columns))
        for d in spec.dense_columns
      ]
    )

  def inputs(self, source_dir: str) -> List[SplitInput]:
    found: Dict[str, List[str]] = {}
    for split, pattern in self.spec.files:
      where = f"{self.spec.source}: files.{split}"
      if split in self.optional_splits and not glob.glob(os.path.join(source_dir, pattern)):
        continue
      found[split] = matching_files(source_dir, pattern, where)
    holdout = line_format.VALIDATION not in found
    return [
      SplitInput(path, split, holdout=holdout and split == line_format.TRAIN)
      for split in (line_format.TRAIN, line_format.VALIDATION, line_format.TEST)
      for path in found.get(split, [])
    ]

  def prepare(self, inputs: Sequence[SplitInput], skips: writer_lib.SkipCounter) -> Any:
    """``path -> header`` of every input (checked by ``check_header_line``)."""
    delimiter = self.spec.delimiter.encode()
    return {s.path: read_header(s.path, delimiter) for s in inputs}

  def reader(
    self, split_input: SplitInput, context: Any, skips: writer_lib.SkipCounter
  ) -> SpecReader:
    return SpecReader(split_input.path, skips, self, context[split_input.path])

  def report_facts(self, context: Any) -> Dict[str, Any]:
    if self.header is not None:
      return {}
    used = {column for column, _ in self.spec.columns()}
    ignored = sorted({name for header in context.values() for name in header} - used)
    return {"spec": self.spec.to_json(), "columns_ignored": ignored}


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
_CLICK_PURCHASE = (column_spec.Step("click", "click"), column_spec.Step("purchase", "purchase"))

PROCESSED_ALI_CCP_SPEC = column_spec.ColumnSpec(
  name="ali_ccp_processed",
  files=(("train", "train.csv"), ("validation", "val.csv"), ("test", "test.csv")),
  id_columns=tuple(
    column_spec.IdColumn(c, _ALI_CCP_NAME[c], _ALI_CCP_GROUP[_ALI_CCP_NAME[c]])
    for c in _PROCESSED_ID_COLUMNS
  ),
  dense_columns=tuple(
    column_spec.DenseField(
      _ALI_CCP_NAME[c] + "_value", ("D" + c,), _ALI_CCP_GROUP[_ALI_CCP_NAME[c]]
    )
    for c in _PROCESSED_DENSE_COLUMNS
  ),
  steps=_CLICK_PURCHASE,
  user_column="101",
  source="ali_ccp_processed",
)


class ProcessedAliCcp(SpecFormat):
  """torch-rechub's processed Ali-CCP CSV (ids are vocabulary indices).

  Id 0 means "rare or missing" there, so it never enters a vocabulary: it
  lands on the model's OOV row like -1 does for the raw data. The ``D<field>``
  columns (scaled weights of the multi-valued fields) become dense fields
  ``<name>_value``. Without ``val.csv``, validation rows are held out of
  train by a hash of the whole line.
  """

  empty_id_is_missing = False  # 0 is this form's missing id: an empty cell is damage
  label_skip_reason = "buy_without_click"
  optional_splits = ("validation",)
  header = b",".join(
    [b"click", b"purchase"]
    + [c.encode() for c in _PROCESSED_ID_COLUMNS]
    + [b"D" + c.encode() for c in _PROCESSED_DENSE_COLUMNS]
  )

  def __init__(self):
    super().__init__(PROCESSED_ALI_CCP_SPEC)

  def excluded_ids(self, field: str) -> Sequence[int]:
    return (line_format.MISSING_ID, 0)


ALIEXPRESS_CATEGORICAL = tuple(f"categorical_{i}" for i in range(1, 17))
ALIEXPRESS_NUMERICAL = tuple(f"numerical_{i}" for i in range(1, 64))

ALIEXPRESS_SPEC = column_spec.ColumnSpec(
  name="aliexpress",
  files=(("train", "train.csv"), ("test", "test.csv")),
  id_columns=tuple(column_spec.IdColumn(c, c) for c in ALIEXPRESS_CATEGORICAL),
  dense_columns=(column_spec.DenseField("numerical", ALIEXPRESS_NUMERICAL),),
  steps=(column_spec.Step("click", "click"), column_spec.Step("purchase", "conversion")),
  group_column="search_id",
  source="aliexpress",
)


class AliExpress(SpecFormat):
  """FuxiCTR's processed AliExpress CSV (one country).

  16 categorical columns become id fields of the same names, the 63 numerical
  columns one dense field ``numerical`` of dim 63; validation rows are held
  out of train by a hash of ``search_id`` (a search stays in one split).
  """

  empty_id_is_missing = False
  label_skip_reason = "buy_without_click"
  header = b",".join(
    [b"search_id"]
    + [c.encode() for c in ALIEXPRESS_CATEGORICAL]
    + [c.encode() for c in ALIEXPRESS_NUMERICAL]
    + [b"click", b"conversion"]
  )

  def __init__(self):
    super().__init__(ALIEXPRESS_SPEC)


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


def read_sample(
  path: str, delimiter: str, limit: int = column_spec.INFER_ROWS
) -> Tuple[List[str], List[List[str]]]:
  """The header and the first ``limit`` data rows of ``path``, as text (for
  :func:`tafe_tf.data.column_spec.infer_spec`; lines that cannot be split or
  decoded are left out)."""
  sep = delimiter.encode()
  header = read_header(path, sep)
  rows = []
  with open(path, "rb") as f:
    f.readline()
    for line in f:
      if len(rows) >= limit:
        break
      try:
        rows.append([c.decode("utf-8") for c in split_cells(line_format.strip_line(line), sep)])
      except (LineError, UnicodeDecodeError):
        continue
  return header, rows
