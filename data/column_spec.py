"""A column spec: what each column of a delimited file with a header is.

A :class:`ColumnSpec` is written once (a JSON file, ``launch.convert
--spec=spec.json``, or proposed by ``--infer_spec``) and says which columns are
single ids, lists of ids (with a separator and optional weights), dense values,
the row key, the validation hold-out unit, and the label of each step in chain
order (or one multi-class column). :class:`tafe_tf.data.csv_formats.SpecFormat`
reads files through it; the public processed CSV formats are specs too
(``csv_formats.PROCESSED_ALI_CCP_SPEC``, ``csv_formats.ALIEXPRESS_SPEC``).

The JSON form (every key but ``files`` and the steps optional)::

  {
    "name": "shop_logs",                       # the schema's name
    "delimiter": ",",                          # "," or "\\t"
    "files": {"train": "train-*.csv", "test": "test.csv", "validation": "val.csv"},
    "id_columns": ["user", "item", {"column": "city", "hash": true}],
    "list_columns": [{"column": "tags", "separator": "|", "weights": "inline"}],
    "dense_columns": ["price", {"name": "stats", "columns": ["s1", "s2"]}],
    "steps": [{"name": "click", "column": "is_click"}, {"name": "purchase", "column": "is_buy"}],
    "key_column": "request_id",
    "group_column": "user",
    "user_column": "user"
  }

or, for one multi-class label column (the number of steps each row reached)::

    "steps": ["click", "purchase"],
    "multiclass_label": {"column": "label", "values": {"0": 0, "1": 1, "2": 2}}

A column entry is its name (the schema field takes it) or an object with
``column`` and the optional ``name`` (field name: letters, digits, ``_``,
starting with a letter), ``group`` (a report tag: ``user``, ``item``, ...) and
``hash`` (string ids: see :func:`hash_id`). A list column's ``weights`` is
``"inline"`` (entries ``id:weight``; ``weight_separator`` changes the ``:``)
or absent (every weight 1.0); ``weight_column`` names a column of weights
instead, split by the same separator. Columns of the files that the spec does
not name are ignored (and listed in the convert report).

Every mistake is one ``ValueError`` line naming the spec file and the key
(``spec.json: list_columns[0].separator: ...``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

SPLITS = ("train", "validation", "test")
DELIMITERS = (",", "\t")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # as tafe_tf.features' field names
_RESERVED = ("sample_id",)


def hash_id(text: bytes) -> int:
  """The int64 id of a string id: the first 8 bytes of its BLAKE2b digest,
  little-endian, shifted right once (so it is non-negative).

  Stable across processes, machines and Python versions (unlike ``hash``);
  clients that serve a model trained on hashed columns send these ids.
  """
  return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class SpecError(ValueError):
  """A bad spec: one line naming the spec file and the key."""


#: A file format -> the delimiter its spec must have (TFRecords have none).
FORMAT_DELIMITERS: Dict[str, Optional[str]] = {"csv": ",", "tsv": "\t", "tfrecord": None}


def read_spec_object(path: str, fmt: str) -> Dict[str, Any]:
  """The JSON object in spec file ``path``, for files of format ``fmt``
  (:data:`FORMAT_DELIMITERS`), its ``delimiter`` checked against and
  defaulted to the format's.

  Raises:
    OSError: the file cannot be read (callers name it their way).
    SpecError: not JSON, not an object, or a delimiter that is not the format's.
  """
  delimiter = FORMAT_DELIMITERS[fmt]
  try:
    with open(path, encoding="utf-8") as f:
      obj = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SpecError(f"{path}: not valid JSON: {e}") from None
  if not isinstance(obj, dict):
    raise SpecError(f"{path}: must hold a JSON object (the spec)")
  if delimiter:
    if obj.get("delimiter", delimiter) != delimiter:
      raise SpecError(
        f"{path}: delimiter: {obj['delimiter']!r} but --format={fmt} reads {delimiter!r}"
      )
    obj.setdefault("delimiter", delimiter)
  return obj


@dataclasses.dataclass(frozen=True)
class IdColumn:
  """A single-valued id column.

  Attributes:
    column: The header name.
    name: The schema field.
    group: Report tag (``user``, ``item``, ``context``, ...).
    hash: Cells are strings, read as :func:`hash_id`; else decimal ids.
  """

  column: str
  name: str
  group: str = ""
  hash: bool = False


@dataclasses.dataclass(frozen=True)
class ListColumn:
  """A multi-valued id column (``weighted_ids``): ``a|b|c``.

  Attributes:
    column: The header name.
    name: The schema field.
    separator: Between entries.
    weights: ``""`` (every weight 1.0) or ``"inline"`` (``id:weight`` entries).
    weight_separator: Between an inline entry's id and weight.
    weight_column: A column holding the weights (same separator, as many).
    group: Report tag.
    hash: Entries are strings, read as :func:`hash_id`.
  """

  column: str
  name: str
  separator: str = "|"
  weights: str = ""
  weight_separator: str = ":"
  weight_column: str = ""
  group: str = ""
  hash: bool = False


@dataclasses.dataclass(frozen=True)
class DenseField:
  """A dense field: one float per column (dim = number of columns)."""

  name: str
  columns: Tuple[str, ...]
  group: str = ""


@dataclasses.dataclass(frozen=True)
class Step:
  """A step and its 0/1 label column ("" with a multi-class label)."""

  name: str
  column: str = ""


@dataclasses.dataclass(frozen=True)
class MulticlassLabel:
  """One column giving how many steps a row reached (AliExpress style).

  Attributes:
    column: The header name.
    values: ``(cell text, steps reached)`` pairs; other cells are bad labels.
  """

  column: str
  values: Tuple[Tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
  """What each column of a delimited file is (see the module doc for JSON).

  Attributes:
    files: ``(split, file name or glob in the input folder)`` pairs; ``train``
      is required. Without ``validation``, the train files' rows are held out.
    name: The schema name.
    delimiter: ``,`` or a tab.
    id_columns, list_columns, dense_columns: The fields, in this order.
    steps: In chain order, each with its label column (or none, with
      ``multiclass_label``).
    multiclass_label: The one label column, or None.
    key_column: Written as each row's ``sample_id`` ("" for none).
    group_column: The validation hold-out unit (a user, a session: all its
      rows fall in one split). "": the key column, else the whole line.
    user_column: The id column that names the user (GAUC), or "".
    source: Where the spec came from (error messages; not serialized).
  """

  files: Tuple[Tuple[str, str], ...]
  steps: Tuple[Step, ...]
  name: str = "custom"
  delimiter: str = ","
  id_columns: Tuple[IdColumn, ...] = ()
  list_columns: Tuple[ListColumn, ...] = ()
  dense_columns: Tuple[DenseField, ...] = ()
  multiclass_label: Optional[MulticlassLabel] = None
  key_column: str = ""
  group_column: str = ""
  user_column: str = ""
  source: str = dataclasses.field(default="spec", compare=False)

  def __post_init__(self):
    _validate(self)

  # --- access ---------------------------------------------------------------

  @property
  def step_names(self) -> Tuple[str, ...]:
    return tuple(s.name for s in self.steps)

  @property
  def holdout_column(self) -> str:
    return self.group_column or self.key_column

  @property
  def user_field(self) -> Optional[str]:
    for c in self.id_columns:
      if c.column == self.user_column:
        return c.name
    return None

  def columns(self) -> List[Tuple[str, str]]:
    """``(column, key that names it)`` of every column the spec reads."""
    out = [(c.column, f"id_columns[{i}]") for i, c in enumerate(self.id_columns)]
    for i, c in enumerate(self.list_columns):
      out.append((c.column, f"list_columns[{i}]"))
      if c.weight_column:
        out.append((c.weight_column, f"list_columns[{i}].weight_column"))
    for i, d in enumerate(self.dense_columns):
      out += [(c, f"dense_columns[{i}]") for c in d.columns]
    out += [(s.column, f"steps[{i}].column") for i, s in enumerate(self.steps) if s.column]
    if self.multiclass_label:
      out.append((self.multiclass_label.column, "multiclass_label.column"))
    for key in ("key_column", "group_column"):
      if getattr(self, key):
        out.append((getattr(self, key), key))
    return out

  def error(self, key: str, problem: str) -> SpecError:
    return SpecError(f"{self.source}: {key}: {problem}")

  # --- JSON -------------------------------------------------------------------

  @classmethod
  def from_json(cls, obj: Any, source: str = "spec") -> "ColumnSpec":
    """A spec from its JSON form; raises :class:`SpecError` naming ``source``
    and the key."""
    return _parse(obj, source)

  @classmethod
  def load(cls, path: str) -> "ColumnSpec":
    """The spec in the JSON file ``path``."""
    try:
      with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    except OSError as e:
      raise SpecError(f"{path}: cannot read the spec: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise SpecError(f"{path}: not valid JSON: {e}") from None
    return cls.from_json(obj, path)

  def to_json(self) -> Dict[str, Any]:
    """The JSON form (``from_json(spec.to_json())`` gives the spec back)."""
    out: Dict[str, Any] = {
      "name": self.name,
      "delimiter": self.delimiter,
      "files": dict(self.files),
    }
    out["id_columns"] = [_column_json(c, IdColumn) for c in self.id_columns]
    out["list_columns"] = [
      {**_column_json(c, ListColumn, as_object=True), "separator": c.separator}
      for c in self.list_columns
    ]
    out["dense_columns"] = [
      d.columns[0]
      if len(d.columns) == 1 and d.name == d.columns[0] and not d.group
      else {"name": d.name, "columns": list(d.columns), **({"group": d.group} if d.group else {})}
      for d in self.dense_columns
    ]
    if self.multiclass_label:
      out["steps"] = list(self.step_names)
      out["multiclass_label"] = {
        "column": self.multiclass_label.column,
        "values": dict(self.multiclass_label.values),
      }
    else:
      out["steps"] = [{"name": s.name, "column": s.column} for s in self.steps]
    for key in ("key_column", "group_column", "user_column"):
      if getattr(self, key):
        out[key] = getattr(self, key)
    return out


def _column_json(c: Any, cls: type, as_object: bool = False) -> Any:
  """A column entry: its name alone when every other key is the default."""
  defaults = {
    f.name: f.default for f in dataclasses.fields(cls) if f.name not in ("column", "name")
  }
  extra = {k: getattr(c, k) for k, v in defaults.items() if getattr(c, k) != v}
  if c.name == c.column and not extra and not as_object:
    return c.column
  return {"column": c.column, **({"name": c.name} if c.name != c.column else {}), **extra}


# --- parsing the JSON form ------------------------------------------------------

_TOP_KEYS = (
  "name",
  "delimiter",
  "files",
  "id_columns",
  "list_columns",
  "dense_columns",
  "steps",
  "multiclass_label",
  "key_column",
  "group_column",
  "user_column",
)


def _fail(source: str, key: str, problem: str) -> SpecError:
  return SpecError(f"{source}: {key}: {problem}")


def _keys(obj: Any, allowed: Sequence[str], source: str, where: str) -> Mapping[str, Any]:
  if not isinstance(obj, Mapping):
    raise _fail(source, where, f"must be an object, got {json.dumps(obj)[:60]}")
  unknown = [k for k in obj if k not in allowed]
  if unknown:
    key = f"{where}.{unknown[0]}" if where else unknown[0]
    raise _fail(source, key, f"unknown key (known: {', '.join(allowed)})")
  return obj


def _string(obj: Mapping[str, Any], key: str, source: str, where: str, default: str = "") -> str:
  value = obj.get(key, default)
  if not isinstance(value, str):
    raise _fail(source, where, f"must be a string, got {json.dumps(value)[:60]}")
  return value


def _bool(obj: Mapping[str, Any], key: str, source: str, where: str) -> bool:
  value = obj.get(key, False)
  if not isinstance(value, bool):
    raise _fail(source, where, f"must be true or false, got {json.dumps(value)[:60]}")
  return value


def _list(obj: Mapping[str, Any], key: str, source: str) -> List[Any]:
  value = obj.get(key, [])
  if not isinstance(value, list):
    raise _fail(source, key, f"must be a list, got {json.dumps(value)[:60]}")
  return value


def _entry(item: Any, allowed: Sequence[str], source: str, where: str) -> Dict[str, Any]:
  """A column entry: a name, or an object with ``column``."""
  if isinstance(item, str):
    return {"column": item}
  entry = dict(_keys(item, allowed, source, where))
  if "column" not in entry:
    raise _fail(source, where, "needs a 'column'")
  return entry


def _parse(obj: Any, source: str) -> ColumnSpec:
  top = _keys(obj, _TOP_KEYS, source, "")
  files = top.get("files")
  if not isinstance(files, Mapping) or not files:
    raise _fail(source, "files", 'must be an object like {"train": "train.csv", "test": ...}')
  for split, pattern in files.items():
    if split not in SPLITS:
      raise _fail(source, f"files.{split}", f"unknown split (known: {', '.join(SPLITS)})")
    if not isinstance(pattern, str) or not pattern:
      raise _fail(source, f"files.{split}", "must be a file name or glob")
  ids = []
  for i, item in enumerate(_list(top, "id_columns", source)):
    where = f"id_columns[{i}]"
    e = _entry(item, ("column", "name", "group", "hash"), source, where)
    column = _string(e, "column", source, f"{where}.column")
    ids.append(
      IdColumn(
        column=column,
        name=_string(e, "name", source, f"{where}.name", column),
        group=_string(e, "group", source, f"{where}.group"),
        hash=_bool(e, "hash", source, f"{where}.hash"),
      )
    )
  lists = []
  list_keys = (
    "column",
    "name",
    "separator",
    "weights",
    "weight_separator",
    "weight_column",
    "group",
    "hash",
  )
  for i, item in enumerate(_list(top, "list_columns", source)):
    where = f"list_columns[{i}]"
    e = _entry(item, list_keys, source, where)
    column = _string(e, "column", source, f"{where}.column")
    lists.append(
      ListColumn(
        column=column,
        name=_string(e, "name", source, f"{where}.name", column),
        separator=_string(e, "separator", source, f"{where}.separator", "|"),
        weights=_string(e, "weights", source, f"{where}.weights"),
        weight_separator=_string(e, "weight_separator", source, f"{where}.weight_separator", ":"),
        weight_column=_string(e, "weight_column", source, f"{where}.weight_column"),
        group=_string(e, "group", source, f"{where}.group"),
        hash=_bool(e, "hash", source, f"{where}.hash"),
      )
    )
  dense = []
  for i, item in enumerate(_list(top, "dense_columns", source)):
    where = f"dense_columns[{i}]"
    if isinstance(item, str):
      dense.append(DenseField(name=item, columns=(item,)))
      continue
    e = _keys(item, ("name", "columns", "group"), source, where)
    columns = e.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
      raise _fail(source, f"{where}.columns", "must be a non-empty list of column names")
    if "name" not in e:
      raise _fail(source, where, "a group of dense columns needs a 'name'")
    dense.append(
      DenseField(
        name=_string(e, "name", source, f"{where}.name"),
        columns=tuple(columns),
        group=_string(e, "group", source, f"{where}.group"),
      )
    )
  multiclass = None
  if "multiclass_label" in top:
    m = _keys(top["multiclass_label"], ("column", "values"), source, "multiclass_label")
    values = m.get("values")
    if not isinstance(values, Mapping) or not values:
      raise _fail(source, "multiclass_label.values", 'must be an object like {"0": 0, "1": 1}')
    for text, reached in values.items():
      if not isinstance(reached, int) or isinstance(reached, bool):
        raise _fail(source, f"multiclass_label.values.{text}", "must be an integer")
    multiclass = MulticlassLabel(
      column=_string(m, "column", source, "multiclass_label.column"),
      values=tuple((str(k), int(v)) for k, v in values.items()),
    )
  steps = []
  for i, item in enumerate(_list(top, "steps", source)):
    where = f"steps[{i}]"
    if multiclass is not None:
      if not isinstance(item, str):
        raise _fail(source, where, "with multiclass_label, steps are names only")
      steps.append(Step(name=item))
      continue
    if isinstance(item, str):
      raise _fail(source, where, 'needs {"name": ..., "column": ...} (or a multiclass_label)')
    e = _keys(item, ("name", "column"), source, where)
    for key in ("name", "column"):
      if key not in e:
        raise _fail(source, where, f"needs a '{key}'")
    steps.append(
      Step(
        name=_string(e, "name", source, f"{where}.name"),
        column=_string(e, "column", source, f"{where}.column"),
      )
    )
  return ColumnSpec(
    files=tuple((split, files[split]) for split in SPLITS if split in files),
    steps=tuple(steps),
    name=_string(top, "name", source, "name", "custom"),
    delimiter=_string(top, "delimiter", source, "delimiter", ","),
    id_columns=tuple(ids),
    list_columns=tuple(lists),
    dense_columns=tuple(dense),
    multiclass_label=multiclass,
    key_column=_string(top, "key_column", source, "key_column"),
    group_column=_string(top, "group_column", source, "group_column"),
    user_column=_string(top, "user_column", source, "user_column"),
    source=source,
  )


# --- validation -------------------------------------------------------------------


def _validate(spec: ColumnSpec) -> None:
  """Raises :class:`SpecError` at the first problem (file and key named)."""
  err = spec.error
  if not _NAME_RE.match(spec.name):
    raise err("name", f"{spec.name!r}: use letters, digits and '_', starting with a letter")
  if spec.delimiter not in DELIMITERS:
    raise err("delimiter", f'{spec.delimiter!r} must be "," or "\\t"')
  splits = dict(spec.files)
  if "train" not in splits:
    raise err("files", "needs a 'train' file (name or glob)")
  if not spec.id_columns and not spec.list_columns and not spec.dense_columns:
    raise err("id_columns", "the spec names no feature column (id, list or dense)")
  # Columns: each feature or label column in one role; key and group may be any column.
  roles: Dict[str, str] = {}
  for column, key in spec.columns():
    if not column:
      raise err(key, "the column name is empty")
    if key in ("key_column", "group_column"):
      continue
    if column in roles:
      raise err(key, f"column {column!r} is already {roles[column]}")
    roles[column] = key
  # Field names: valid, each once.
  seen_fields: Dict[str, str] = {}
  fields = (
    [(c.name, f"id_columns[{i}]") for i, c in enumerate(spec.id_columns)]
    + [(c.name, f"list_columns[{i}]") for i, c in enumerate(spec.list_columns)]
    + [(d.name, f"dense_columns[{i}]") for i, d in enumerate(spec.dense_columns)]
  )
  for name, key in fields:
    if not _NAME_RE.match(name) or name in _RESERVED:
      raise err(
        key,
        f"field name {name!r} must be letters, digits and '_', starting with a letter"
        f" (not {', '.join(_RESERVED)}): give the entry a 'name'",
      )
    if name in seen_fields:
      raise err(key, f"field name {name!r} is used twice (also {seen_fields.get(name, '')})")
    seen_fields[name] = key
  for i, c in enumerate(spec.list_columns):
    where = f"list_columns[{i}]"
    if not c.separator:
      raise err(f"{where}.separator", "must not be empty")
    if spec.delimiter in c.separator:
      raise err(f"{where}.separator", f"{c.separator!r} contains the file's delimiter")
    if c.weights not in ("", "inline"):
      raise err(f"{where}.weights", f'{c.weights!r} must be "inline" or absent')
    if c.weights and c.weight_column:
      raise err(f"{where}.weight_column", 'give either "weights": "inline" or a weight_column')
    if c.weights and (not c.weight_separator or c.weight_separator in c.separator):
      raise err(f"{where}.weight_separator", f"{c.weight_separator!r} must differ from separator")
  # Steps.
  if len(spec.steps) < 2:
    raise err("steps", f"needs at least 2 steps in chain order, got {len(spec.steps)}")
  names = [s.name for s in spec.steps]
  for i, name in enumerate(names):
    if not _NAME_RE.match(name):
      raise err(f"steps[{i}].name", f"{name!r}: use letters, digits and '_'")
    if name in names[:i]:
      raise err(f"steps[{i}].name", f"step {name!r} is named twice")
  if spec.multiclass_label is not None:
    texts = [t for t, _ in spec.multiclass_label.values]
    for text, reached in spec.multiclass_label.values:
      if not 0 <= reached <= len(spec.steps):
        raise err(
          f"multiclass_label.values.{text}",
          f"{reached} steps reached: must be 0 to {len(spec.steps)}",
        )
    if len(set(texts)) != len(texts):
      raise err("multiclass_label.values", "a cell value is given twice")
  if spec.user_column and spec.user_field is None:
    raise err("user_column", f"{spec.user_column!r} must be one of the id_columns")


# --- proposing a spec from a sample of rows -----------------------------------------

#: Rows of the train file that ``infer_spec`` looks at.
INFER_ROWS = 10_000
_LABEL_RE = re.compile(
  r"click|clk|buy|purchase|conversion|convert|cart|order|pay|label|like|install|finish", re.I
)
_KEY_RE = re.compile(
  r"^(id|key|req|req_id|request|request_id|sample_id|row_id|impression_id|event_id|log_id)$|_key$"
)
_USER_RE = re.compile(r"^(user|user_id|userid|uid|customer|customer_id|member_id)$", re.I)
_LIST_SEPARATORS = ("|", ";", "#")


# A column is numbers when this share of its sampled cells are (the others
# are skipped and counted at conversion, and named in the decision line).
_MOSTLY = 0.8


def _others(cells: Sequence[str], test: Any) -> str:
  bad = [c for c in cells if not test(c)]
  if not bad:
    return ""
  return f"; {len(bad)} other, e.g. {bad[0][:20]!r}, skipped at conversion"


def _is_int(text: str) -> bool:
  return text.isascii() and text.isdigit()


def _is_float(text: str) -> bool:
  try:
    value = float(text)
  except ValueError:
    return False
  return value - value == 0.0  # finite


def _step_name(column: str, taken: Sequence[str]) -> str:
  name = re.sub(r"^(is|has)_|_(label|flag)$", "", column.lower())
  name = re.sub(r"[^A-Za-z0-9_]", "_", name)
  if not _NAME_RE.match(name) or name in taken:
    name = f"step{len(taken) + 1}"
  return name


def _field_entry(column: str, **extra: Any) -> Dict[str, Any]:
  """A column entry, with a field ``name`` where the column's is not one."""
  entry: Dict[str, Any] = {"column": column, **extra}
  if not _NAME_RE.match(column) or column in _RESERVED:
    name = re.sub(r"[^A-Za-z0-9_]", "_", column)
    entry["name"] = name if _NAME_RE.match(name) and name not in _RESERVED else f"f_{name}"
  return entry


def infer_spec(
  header: Sequence[str], rows: Sequence[Sequence[str]], delimiter: str, files: Mapping[str, str]
) -> Tuple[Dict[str, Any], List[str]]:
  """A proposed spec (JSON form, for the user to edit) from a header and
  sample rows, and one line per column saying what it became and why.

  Rules, per column, over its non-empty sampled cells: 0/1 cells under a
  label-like name (click, buy, purchase, conversion, cart, order, label, ...)
  -> a step, in header order; a key-like name (``id``, ``request_id``,
  ``*_key``, ...) whose cells are all distinct -> the key column; cells with a
  ``|``, ``;`` or ``#`` (or ``,`` in a TSV) -> a list column (``id:weight``
  entries -> inline weights); decimal integers (80% of the cells or more) ->
  an id column; numbers (80% or more, not all integers) -> dense; other text
  -> a hashed id column; a user-like name (``user_id``, ``uid``, ...) -> also
  the user and group column; no value -> ignored.

  Args:
    header: Column names.
    rows: Sample rows, each as many cells as the header (others are left out).
    delimiter: The files' delimiter.
    files: The spec's ``files``.
  """
  rows = [r for r in rows if len(r) == len(header)]
  ids: List[Any] = []
  lists: List[Any] = []
  dense: List[Any] = []
  steps: List[Dict[str, str]] = []
  spec: Dict[str, Any] = {"delimiter": delimiter, "files": dict(files)}
  lines = []
  separators = _LIST_SEPARATORS + ((",",) if delimiter == "\t" else ())
  for k, column in enumerate(header):
    cells = [r[k] for r in rows if r[k] != ""]
    distinct = len(set(cells))
    seen = f"{distinct} distinct in {len(cells)} non-empty of {len(rows)} rows"
    if not cells:
      lines.append(f"{column}: ignored (empty in every sampled row)")
      continue
    if set(cells) <= {"0", "1"} and _LABEL_RE.search(column):
      name = _step_name(column, [s["name"] for s in steps])
      steps.append({"name": name, "column": column})
      lines.append(f"{column}: step {len(steps)} {name!r} (0/1 under a label-like name)")
      continue
    if not spec.get("key_column") and _KEY_RE.search(column.lower()) and distinct == len(cells):
      spec["key_column"] = column
      lines.append(f"{column}: key_column (a key-like name, unique in {seen})")
      continue
    separator = next((s for s in separators if any(s in c for c in cells)), None)
    if separator is not None:
      entries = [e for c in cells for e in c.split(separator)]
      inline = all(":" in e and _is_float(e.rpartition(":")[2]) for e in entries)
      id_texts = [e.rpartition(":")[0] if inline else e for e in entries]
      hashed = not all(_is_int(t) for t in id_texts)
      extra: Dict[str, Any] = {"separator": separator}
      if inline:
        extra["weights"] = "inline"
      if hashed:
        extra["hash"] = True
      lists.append(_field_entry(column, **extra))
      lines.append(
        f"{column}: list column, separator {separator!r}"
        + (", inline id:weight" if inline else "")
        + (", string ids hashed" if hashed else "")
        + f" ({len(set(id_texts))} distinct ids)"
      )
      continue
    ints = sum(map(_is_int, cells))
    numbers = sum(map(_is_float, cells))
    if ints < len(cells) and numbers >= _MOSTLY * len(cells):
      entry = _field_entry(column)
      dense.append({"name": entry["name"], "columns": [column]} if "name" in entry else column)
      lines.append(f"{column}: dense column (numbers, {seen}{_others(cells, _is_float)})")
      continue
    if ints >= _MOSTLY * len(cells):
      ids.append(_field_entry(column))
      lines.append(f"{column}: id column (integers, {seen}{_others(cells, _is_int)})")
    else:
      ids.append(_field_entry(column, hash=True))
      lines.append(f"{column}: id column, strings hashed ({seen})")
    if _USER_RE.match(column) and not spec.get("user_column"):
      spec["user_column"] = spec["group_column"] = column
      lines[-1] += "; user_column and group_column (a user-like name)"
  spec["id_columns"] = [e["column"] if list(e) == ["column"] else e for e in ids]
  spec["list_columns"] = lists
  spec["dense_columns"] = dense
  spec["steps"] = steps
  return spec, lines
