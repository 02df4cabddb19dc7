"""Ali-CCP (Tianchi dataset 408) from its raw files.

Files (no header; the package never downloads them, they need a login)::

  sample_skeleton_{train,test}.csv   sample_id,click,buy,common_key,feature_num,feature_list
  common_features_{train,test}.csv   common_key,feature_num,feature_list

``feature_list`` joins entries with ``\\x01``; an entry is
``field_id \\x02 feature_id \\x03 value`` (feature ids are integers unique across
fields; the value is 1.0 for plain ids and a log count for behaviour histories
and crosses). A skeleton row (the impression: item, position, crosses) joins the
common row of its key (the user and context: ~730k rows for ~42M train
impressions, hundreds of entries each).

Bounded memory: :func:`index_common_file` keeps only each common row's key,
byte offset and line number in numpy arrays (~30 bytes a row); readers parse a
common row when a skeleton row first needs it and keep the most recent ones in
an LRU cache (impressions sharing a key are adjacent in the files), together
with their serialized bytes, so a row's hundreds of entries are parsed and
encoded once per cache stay instead of once per impression.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Collection, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tafe_tf.data import line_format
from tafe_tf.data import writer as writer_lib
from tafe_tf.data.line_format import FieldKind, FieldTemplate, LineError, Row, SplitInput

ID, WEIGHTED = FieldKind.ID, FieldKind.WEIGHTED_IDS

# Raw field id -> (schema field name, kind, group). Histories (*_14), the
# intention node 210 (several per item in real rows) and the crosses carry a
# value per entry: weighted_ids with the value as weight.
FIELDS: Tuple[Tuple[str, str, FieldKind, str], ...] = (
  ("101", "user_id", ID, "user"),
  ("121", "user_profile", ID, "user"),
  ("122", "user_group", ID, "user"),
  ("124", "user_gender", ID, "user"),
  ("125", "user_age", ID, "user"),
  ("126", "user_consumption_1", ID, "user"),
  ("127", "user_consumption_2", ID, "user"),
  ("128", "user_occupation", ID, "user"),
  ("129", "user_geography", ID, "user"),
  ("109_14", "hist_category", WEIGHTED, "user"),
  ("110_14", "hist_shop", WEIGHTED, "user"),
  ("127_14", "hist_brand", WEIGHTED, "user"),
  ("150_14", "hist_intention", WEIGHTED, "user"),
  ("205", "item_id", ID, "item"),
  ("206", "item_category", ID, "item"),
  ("207", "item_shop", ID, "item"),
  ("210", "item_intention", WEIGHTED, "item"),
  ("216", "item_brand", ID, "item"),
  ("508", "cross_category", WEIGHTED, "cross"),
  ("509", "cross_shop", WEIGHTED, "cross"),
  ("702", "cross_brand", WEIGHTED, "cross"),
  ("853", "cross_intention", WEIGHTED, "cross"),
  ("301", "position", ID, "context"),
)
FIELD_BY_RAW_ID: Dict[bytes, Tuple[str, FieldKind]] = {
  raw.encode(): (name, kind) for raw, name, kind, _ in FIELDS
}
FIELD_KIND: Dict[str, FieldKind] = {name: kind for _, name, kind, _ in FIELDS}
# How errors name a field: its raw id and schema name.
_WHERE: Dict[bytes, str] = {raw.encode(): f"field {raw} ({name})" for raw, name, _, _ in FIELDS}
_EMPTY_WEIGHTED = ((), ())

SKELETON_FILES = {"train": "sample_skeleton_train.csv", "test": "sample_skeleton_test.csv"}
COMMON_FILES = {"train": "common_features_train.csv", "test": "common_features_test.csv"}
DEFAULT_CACHE_ROWS = 4096
# Bound of the per-reader memo of parsed skeleton entries (~150 bytes each).
MEMO_ENTRIES = 1 << 18


def field_templates() -> List[FieldTemplate]:
  """The 23 Ali-CCP fields, user side first."""
  return [FieldTemplate(name, kind, group) for _, name, kind, group in FIELDS]


def resolve_field(field: bytes) -> Tuple[str, bool, str]:
  """``(field name, single-valued?, how errors name it)`` of a raw field id.

  Raises:
    LineError: ``unknown_field`` for a field id not in :data:`FIELDS`.
  """
  known = FIELD_BY_RAW_ID.get(field)
  if known is None:
    raise LineError("unknown_field", f"unknown field id {line_format.show(field)}")
  return known[0], known[1] == ID, _WHERE[field]


def parse_entry(entry: bytes) -> Tuple[str, bool, int, float]:
  """One raw entry ``field\\x02feature_id\\x03value``, resolved:
  ``(field name, single-valued?, feature_id, value)``.

  Raises:
    LineError: ``bad_entry`` (not two separators), ``unknown_field``, or
      the id and value checks of :func:`tafe_tf.data.line_format.parse_id` and
      :func:`~tafe_tf.data.line_format.parse_value` (``bad_id``,
      ``id_out_of_range``, ``bad_value``, ``value_out_of_range``).
  """
  field, sep, rest = entry.partition(b"\x02")
  feature_id, sep2, value = rest.partition(b"\x03")
  if not sep or not sep2:
    raise LineError(
      "bad_entry", f"entry {line_format.show(entry, 80)} is not field\\x02id\\x03value"
    )
  name, single, where = resolve_field(field)
  return (
    name,
    single,
    line_format.parse_id(feature_id, where),
    line_format.parse_value(value, where),
  )


def collect(entries: Iterable[Tuple[str, bool, int, float]]) -> Dict[str, Any]:
  """Schema values of resolved entries: an int per single-valued field, an
  ``(ids, values)`` pair of lists per multi-valued one (entries in order).

  Raises:
    LineError: ``repeated_single_field`` when a single-valued field has
      several entries.
  """
  out: Dict[str, Any] = {}
  for name, single, feature_id, value in entries:
    if single:
      if name in out:
        raise LineError("repeated_single_field", f"single-valued field {name} has several ids")
      out[name] = feature_id
    else:
      slot = out.get(name)
      if slot is None:
        out[name] = ([feature_id], [value])
      else:
        slot[0].append(feature_id)
        slot[1].append(value)
  return out


def parse_fields(
  feature_list: bytes, memo: Optional[Dict[bytes, Tuple[str, bool, int, float]]] = None
) -> Dict[str, Any]:
  """Schema values of a raw ``feature_list`` (entries joined by ``\\x01``).

  Args:
    feature_list: The list.
    memo: Resolved entries by their bytes, reused across lines (skeleton
      entries repeat: the same item, position, cross); cleared when it holds
      :data:`MEMO_ENTRIES`. None for lists parsed once (common rows).

  Raises:
    LineError: see :func:`parse_entry` and :func:`collect`.
  """
  entries = feature_list.split(b"\x01")
  if memo is None:
    return collect(map(parse_entry, entries))
  return collect(_memoized(entries, memo))


def _memoized(entries: List[bytes], memo: Dict[bytes, Any]) -> Iterator[Any]:
  for entry in entries:
    parsed = memo.get(entry)
    if parsed is None:
      parsed = parse_entry(entry)
      if len(memo) >= MEMO_ENTRIES:
        memo.clear()
      memo[entry] = parsed
    yield parsed


def fill_missing(values: Dict[str, Any], elsewhere: Collection[str] = ()) -> Dict[str, Any]:
  """Adds every field in neither ``values`` nor ``elsewhere``, as missing.

  A missing single-valued field gets :data:`line_format.MISSING_ID` (the model
  maps it to the OOV row), a missing multi-valued field no ids. Returns
  ``values``.
  """
  for name, kind in FIELD_KIND.items():
    if name not in values and name not in elsewhere:
      values[name] = line_format.MISSING_ID if kind == ID else _EMPTY_WEIGHTED
  return values


def _parse_counted_list(
  feature_num: bytes, feature_list: bytes, memo: Optional[Dict[bytes, Any]] = None
) -> Dict[str, Any]:
  """Schema values of ``feature_list``, checked against ``feature_num``."""
  if not feature_num.isdigit():  # strict, as ids are: no sign, space or "_"
    raise LineError(
      "bad_feature_num", f"feature_num {line_format.show(feature_num)} is not an integer"
    )
  # int() refuses 4300+ digits; no list is that long anyway.
  expected = int(feature_num) if len(feature_num) < 19 else -1
  if expected == 0 and not feature_list:
    return {}
  found = feature_list.count(b"\x01") + 1
  if found != expected:
    raise LineError(
      "bad_feature_num",
      f"feature_num is {feature_num[:40].decode()} but the list has {found} entries",
    )
  return parse_fields(feature_list, memo)


# --- common rows -------------------------------------------------------------


class CommonIndex:
  """Where each common row of one file is: sorted keys, offsets, line numbers."""

  def __init__(self, path: str, keys: np.ndarray, offsets: np.ndarray, line_numbers: np.ndarray):
    self.path = path
    self.keys = keys
    self.offsets = offsets
    self.line_numbers = line_numbers

  def __len__(self) -> int:
    return int(self.keys.size)

  def find(self, key: bytes) -> int:
    """Position of ``key`` in the index, or -1."""
    if not key or len(key) > self.keys.dtype.itemsize:
      return -1
    pos = int(np.searchsorted(self.keys, key))
    if pos < self.keys.size and self.keys[pos] == key:
      return pos
    return -1


def index_common_file(path: str, skips: writer_lib.SkipCounter) -> CommonIndex:
  """Indexes a common-features file; skips and counts rows it cannot index.

  Reasons: ``common_wrong_field_count`` (not 3 comma fields),
  ``common_duplicate_key`` (a key seen on an earlier line; the first wins).
  Entries are checked later, when a skeleton row first uses the row.
  """
  keys: List[bytes] = []
  offsets: List[int] = []
  numbers: List[int] = []
  offset = 0
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      size = len(line)
      if number == 1:
        line = line_format.without_bom(line)
      commas = line.count(b",")
      key = line[: line.find(b",")] if commas else b""
      if commas != 2 or not key:
        skips.skip(
          "common_wrong_field_count",
          path,
          number,
          f"expected 3 comma-separated fields, got {commas + 1}",
        )
      else:
        keys.append(key)
        offsets.append(offset)
        numbers.append(number)
      offset += size
  key_array = np.array(keys, dtype=bytes) if keys else np.zeros(0, "S1")
  order = np.argsort(key_array, kind="stable")
  key_array = key_array[order]
  offset_array = np.asarray(offsets, np.int64)[order]
  number_array = np.asarray(numbers, np.int64)[order]
  duplicate = np.zeros(key_array.size, bool)
  if key_array.size > 1:
    duplicate[1:] = key_array[1:] == key_array[:-1]
  for number in np.sort(number_array[duplicate]):
    skips.skip(
      "common_duplicate_key",
      path,
      int(number),
      "common_feature_index already used on an earlier line",
    )
  keep = ~duplicate
  return CommonIndex(path, key_array[keep], offset_array[keep], number_array[keep])


class _BadCommonRow:
  """Cache marker for a common row that failed to parse."""

  __slots__ = ("line_number",)

  def __init__(self, line_number: int):
    self.line_number = line_number


class _CommonRow:
  """A parsed common row and the missing-value form of the other fields."""

  __slots__ = ("shared", "others")

  def __init__(self, shared: line_format.SharedFeatures):
    self.shared = shared
    # A skeleton row starts from these and overwrites what it has.
    self.others = fill_missing({}, shared.features)


class RawReader(line_format.LineReader):
  """Joins skeleton lines with their common rows (LRU-cached)."""

  def __init__(
    self, path: str, common: CommonIndex, skips: writer_lib.SkipCounter, cache_rows: int
  ):
    super().__init__(path, skips)
    self.common = common
    self.cache_rows = cache_rows
    self._cache: "collections.OrderedDict[bytes, Any]" = collections.OrderedDict()
    self._memo: Dict[bytes, Tuple[bytes, int, float]] = {}
    self._common_file = open(common.path, "rb")
    self._problems: Dict[Tuple[str, int], Tuple[str, str]] = {}
    self._parses = 0

  def parse_or_raise(self, line: bytes, line_number: int) -> Row:
    parts = line_format.strip_line(line).split(b",")
    if len(parts) != 6:
      raise LineError("wrong_field_count", f"expected 6 comma-separated fields, got {len(parts)}")
    sample_id, click, buy, key, feature_num, feature_list = parts
    line_format.check_sample_id(sample_id)
    labels = line_format.cumulative_labels(
      line_format.parse_label(click, "click"), line_format.parse_label(buy, "buy")
    )
    own = _parse_counted_list(feature_num, feature_list, self._memo)
    common = self._common_row(key)
    shared = common.shared
    if not own.keys().isdisjoint(shared.features):
      both = sorted(set(own) & set(shared.features))
      raise LineError(
        "field_in_both_files", f"field(s) {', '.join(both)} in both the skeleton and the common row"
      )
    features = dict(common.others)
    features.update(own)
    return Row(
      labels=labels,
      features=features,
      # Whole visits go to validation: impressions of one common row share
      # what no feature carries (the user's intent that day), so a visit split
      # across train and validation inflates validation AUC and keeps the
      # wrong epoch (issue 10: 0.68 validation vs 0.61 test CTR AUC).
      holdout_key=key,
      sample_id=sample_id,
      shared=shared,
    )

  def _common_row(self, key: bytes) -> _CommonRow:
    cached = self._cache.get(key)
    if cached is None:
      cached = self._load(key)
      self._cache[key] = cached
      if len(self._cache) > self.cache_rows:
        _, old = self._cache.popitem(last=False)
        if isinstance(old, _CommonRow):
          self.on_evict(old.shared)
    else:
      self._cache.move_to_end(key)
    if isinstance(cached, _BadCommonRow):
      raise LineError(
        "bad_common_row",
        f"its common row ({os.path.basename(self.common.path)}:{cached.line_number}) is malformed",
      )
    return cached

  def _load(self, key: bytes) -> Any:
    pos = self.common.find(key)
    if pos < 0:
      raise LineError(
        "unknown_common_key",
        f"common_feature_index {key[:40].decode(errors='replace')!r}"
        f" is not in {os.path.basename(self.common.path)}",
      )
    line_number = int(self.common.line_numbers[pos])
    self._common_file.seek(int(self.common.offsets[pos]))
    line = line_format.strip_line(self._common_file.readline())
    self._parses += 1
    try:
      _, feature_num, feature_list = line.split(b",")
      return _CommonRow(line_format.SharedFeatures(_parse_counted_list(feature_num, feature_list)))
    except LineError as e:
      reason = "common_" + e.reason
      if self.skips.strict:
        self.skips.skip(reason, self.common.path, line_number, e.detail)
      self._problems[(self.common.path, line_number)] = (reason, e.detail)
      return _BadCommonRow(line_number)

  def close(self) -> None:
    while self._cache:
      _, old = self._cache.popitem(last=False)
      if isinstance(old, _CommonRow):
        self.on_evict(old.shared)
    self._common_file.close()

  def facts(self) -> Dict[str, Dict[str, int]]:
    return {"common_row_parses": {os.path.basename(self.common.path): self._parses}}

  def shared_problems(self) -> Dict[Tuple[str, int], Tuple[str, str]]:
    return dict(self._problems)


class RawAliCcp(line_format.LineFormat):
  """The raw Tianchi files: skeleton + common features, train and test.

  Args:
    cache_rows: Common rows each reader keeps parsed (LRU).
  """

  name = "ali_ccp"
  has_sample_id = True
  user_field = "user_id"

  def __init__(self, cache_rows: int = DEFAULT_CACHE_ROWS):
    if cache_rows < 1:
      raise ValueError(f"cache_rows must be >= 1, got {cache_rows}")
    self.cache_rows = cache_rows

  def fields(self) -> List[FieldTemplate]:
    return field_templates()

  def inputs(self, source_dir: str) -> List[SplitInput]:
    line_format.require_files(source_dir, [SKELETON_FILES["train"], COMMON_FILES["train"]])
    out = [
      SplitInput(os.path.join(source_dir, SKELETON_FILES["train"]), line_format.TRAIN, holdout=True)
    ]
    test = [
      os.path.isfile(os.path.join(source_dir, n))
      for n in (SKELETON_FILES["test"], COMMON_FILES["test"])
    ]
    if any(test):  # the test pair is optional, but never half of it
      line_format.require_files(source_dir, [SKELETON_FILES["test"], COMMON_FILES["test"]])
      out.append(SplitInput(os.path.join(source_dir, SKELETON_FILES["test"]), line_format.TEST))
    return out

  def prepare(
    self, inputs: Sequence[SplitInput], skips: writer_lib.SkipCounter
  ) -> Dict[str, CommonIndex]:
    """Indexes the common file of every skeleton file (by skeleton path)."""
    out = {}
    for split_input in inputs:
      name = os.path.basename(split_input.path).replace("sample_skeleton_", "common_features_")
      out[split_input.path] = index_common_file(
        os.path.join(os.path.dirname(split_input.path), name), skips
      )
    return out

  def reader(
    self, split_input: SplitInput, context: Dict[str, CommonIndex], skips: writer_lib.SkipCounter
  ) -> RawReader:
    return RawReader(split_input.path, context[split_input.path], skips, self.cache_rows)

  def report_facts(self, context: Dict[str, CommonIndex]) -> Dict[str, Any]:
    return {"common_rows": {os.path.basename(index.path): len(index) for index in context.values()}}


# --- writing raw files (tests and the benchmark) -----------------------------


def format_entries(entries: Sequence[Tuple[str, int, float]]) -> str:
  """A raw ``feature_list`` from ``(field_id, feature_id, value)`` triples."""
  return "\x01".join(
    f"{field}\x02{feature_id}\x03{value:g}" for field, feature_id, value in entries
  )


def format_skeleton_line(
  sample_id: str, click: int, buy: int, key: str, entries: Sequence[Tuple[str, int, float]]
) -> str:
  """One raw skeleton line (with its newline)."""
  return f"{sample_id},{click},{buy},{key},{len(entries)},{format_entries(entries)}\n"


def format_common_line(key: str, entries: Sequence[Tuple[str, int, float]]) -> str:
  """One raw common-features line (with its newline)."""
  return f"{key},{len(entries)},{format_entries(entries)}\n"
