"""Faults in the converter's input and output: each gives one exact outcome.

A bad line is skipped and counted under a named reason (``report.json``
``skipped``), or with ``strict`` a ``ValueError`` naming file, line and field;
a bad file or an unwritable ``out_dir`` is one error line (``launch.convert``:
exit 2, no traceback). Nothing that looks complete is left behind a failure:
no ``report.json``, no shard.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_runner  # noqa: E402  (tests/ helper, on sys.path via conftest)
import readback  # noqa: E402  (tests/data helper)

from tafe_tf import example_codec  # noqa: E402
from tafe_tf import features as features_lib  # noqa: E402
from tafe_tf.data import ali_ccp, convert, csv_formats, line_format, vocabulary  # noqa: E402

FIXTURES = readback.FIXTURES
SKELETON = ali_ccp.SKELETON_FILES
COMMON = ali_ccp.COMMON_FILES
KEY = "k" * 16
TWO_64_PLUS_5 = 2**64 + 5  # read back as 5 before: a real id's collision
TWO_63_PLUS_5 = 2**63 + 5  # read back as a negative id before
MAX_ID = 2**63 - 1
USER = [("101", 1000, 1.0), ("121", 2000, 1.0), ("109_14", 3000, 0.5), ("109_14", 3001, 1.5)]


def _items(i):
  return [("205", 5000 + i % 3, 1.0), ("301", 7000 + i % 2, 1.0)]


def _raw(directory, rows=6, extra_skeleton=(), extra_common=(), split="train", prefix=b""):
  """Raw Ali-CCP files: one user, ``rows`` good impressions, then the extras.

  ``prefix`` goes before each file's first byte (a byte order mark).
  """
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, COMMON[split]), "wb") as f:
    f.write(prefix + ali_ccp.format_common_line(KEY, USER).encode())
    f.write("".join(extra_common).encode())
  with open(os.path.join(directory, SKELETON[split]), "wb") as f:
    lines = [ali_ccp.format_skeleton_line(f"s{i}", i % 2, 0, KEY, _items(i)) for i in range(rows)]
    f.write(prefix + "".join(lines + list(extra_skeleton)).encode())
  return directory


def _skeleton(sample_id, entries, key=KEY):
  return ali_ccp.format_skeleton_line(sample_id, 0, 0, key, entries)


def _no_output_left(out):
  """Nothing that looks complete: no report.json, no shard, no partial shard."""
  names = os.listdir(out) if os.path.isdir(out) else []
  return not [n for n in names if n == "report.json" or "tfrecord" in n]


def _copy_fixture(name, tmp_path):
  source = str(tmp_path / "in")
  shutil.copytree(os.path.join(FIXTURES, name), source)
  return source


def _replace_line(path, number, line):
  with open(path) as f:
    lines = f.readlines()
  lines[number - 1] = line
  with open(path, "w") as f:
    f.writelines(lines)


def _aliexpress_line(categorical=None, numerical=None):
  """An AliExpress data line; ``categorical`` / ``numerical``: index -> text."""
  cats = ["1"] * 16
  nums = ["0.5"] * 63
  for i, text in (categorical or {}).items():
    cats[i - 1] = text
  for i, text in (numerical or {}).items():
    nums[i - 1] = text
  return ",".join(["77"] + cats + nums + ["0", "0"]) + "\n"


# --- ids: digits only, within int64 ---------------------------------------------


@pytest.mark.parametrize(
  "entry, reason, detail",
  [
    (
      f"205\x02{TWO_64_PLUS_5}\x031",
      "id_out_of_range",
      f"field 205 (item_id): id '{TWO_64_PLUS_5}' is larger than {MAX_ID} (the int64 maximum)",
    ),
    (
      f"205\x02{TWO_63_PLUS_5}\x031",
      "id_out_of_range",
      f"field 205 (item_id): id '{TWO_63_PLUS_5}' is larger than {MAX_ID} (the int64 maximum)",
    ),
    (
      "205\x02" + "9" * 5000 + "\x031",  # past int()'s 4300-digit limit
      "id_out_of_range",
      f"field 205 (item_id): id '{'9' * 40}' is larger than {MAX_ID} (the int64 maximum)",
    ),
    (
      "205\x021_00036\x031",
      "bad_id",
      "field 205 (item_id): id '1_00036' is not a non-negative integer (digits only)",
    ),
    (
      "205\x02+7\x031",
      "bad_id",
      "field 205 (item_id): id '+7' is not a non-negative integer (digits only)",
    ),
    (
      "205\x02 7\x031",
      "bad_id",
      "field 205 (item_id): id ' 7' is not a non-negative integer (digits only)",
    ),
    (
      "205\x02-7\x031",
      "bad_id",
      "field 205 (item_id): id '-7' is not a non-negative integer (digits only)",
    ),
    (
      "205\x02\uff17\x031",  # a full-width 7: a digit to str.isdigit
      "bad_id",
      "field 205 (item_id): id '\uff17' is not a non-negative integer (digits only)",
    ),
    (
      "508\x029\x031e39",  # float32 would write inf
      "value_out_of_range",
      "field 508 (cross_category): value '1e39' is larger in magnitude than 1e+09 "
      "(tafe_tf.features.MAX_ABS_VALUE)",
    ),
    (
      "508\x029\x03-2e9",
      "value_out_of_range",
      "field 508 (cross_category): value '-2e9' is larger in magnitude than 1e+09 "
      "(tafe_tf.features.MAX_ABS_VALUE)",
    ),
    ("508\x029\x03inf", "bad_value", "field 508 (cross_category): 'inf' is not a finite number"),
  ],
  ids=[
    "2^64+5",
    "2^63+5",
    "5000_digits",
    "underscore",
    "plus",
    "space",
    "minus",
    "fullwidth_digit",
    "1e39",
    "-2e9",
    "inf",
  ],
)
def test_a_bad_skeleton_id_or_value_is_skipped_and_counted_or_strict(
  tmp_path, entry, reason, detail
):
  # Before: 2^64 + 5 in the test file was written as 5 and 2^63 + 5 as a
  # negative id (rc 0); in the train file the same id aborted the whole
  # conversion (OverflowError); 1e39 became inf; 1_00036, +7 and " 7" were
  # read as numbers.
  bad = [f"bad,0,0,{KEY},1,{entry}\n"]
  for split, good_rows in (("train", 6), ("test", 2)):
    raw = _raw(str(tmp_path / split / "raw"), extra_skeleton=bad if split == "train" else ())
    if split == "test":
      _raw(raw, rows=good_rows, extra_skeleton=bad, split="test")
    out = str(tmp_path / split / "out")
    report = convert.convert_ali_ccp(raw, out, min_count=0, validation_fraction=0.0, num_shards=1)
    assert report["skipped"] == {reason: 1}
    assert report["skipped_first_lines"] == {reason: [f"{SKELETON[split]}:{good_rows + 1}"]}
    rows = readback.read_split(out, split)
    assert len(rows) == good_rows and "bad" not in [r["sample_id"] for r in rows]
    assert {r["item_id"] for r in rows} <= {5000, 5001, 5002}  # nothing wrapped
    with pytest.raises(ValueError) as error:
      convert.convert_ali_ccp(raw, str(tmp_path / split / "strict"), strict=True, num_shards=1)
    path = os.path.join(raw, SKELETON[split])
    assert str(error.value) == f"{path}:{good_rows + 1}: {detail} ({reason})"
    assert _no_output_left(str(tmp_path / split / "strict"))


def test_the_bounds_are_exact(tmp_path):
  # MAX_ID and +-MAX_ABS_VALUE are kept; one past either is refused.
  entries = [("205", MAX_ID, 1.0), ("508", 0, 1e9), ("509", 1, -1e9), ("301", 0, 1.0)]
  raw = _raw(
    str(tmp_path / "raw"),
    rows=0,
    extra_skeleton=[
      _skeleton("edge", entries),
      f"past_id,0,0,{KEY},1,205\x02{MAX_ID + 1}\x031\n",
      f"past_value,0,0,{KEY},1,508\x020\x031000000000.0001\n",
    ],
  )
  out = str(tmp_path / "out")
  report = convert.convert_ali_ccp(raw, out, min_count=0, validation_fraction=0.0, num_shards=1)
  assert report["skipped"] == {"id_out_of_range": 1, "value_out_of_range": 1}
  [row] = readback.read_split(out, "train")
  assert row["item_id"] == MAX_ID and row["position"] == 0
  assert row["cross_category"] == ([0], [1e9]) and row["cross_shop"] == ([1], [-1e9])
  assert readback.vocab(out, "item_id") == [MAX_ID]


def test_a_bad_id_in_a_common_row_skips_its_impressions(tmp_path):
  other = "c" * 16
  raw = _raw(
    str(tmp_path / "raw"),
    extra_common=[ali_ccp.format_common_line(other, [("101", TWO_64_PLUS_5, 1.0)])],
    extra_skeleton=[_skeleton("u1", _items(0), other), _skeleton("u2", _items(1), other)],
  )
  out = str(tmp_path / "out")
  report = convert.convert_ali_ccp(raw, out, min_count=0, validation_fraction=0.0, num_shards=1)
  # The common row counts once at its own line; each impression using it once.
  assert report["skipped"] == {"common_id_out_of_range": 1, "bad_common_row": 2}
  assert report["skipped_first_lines"]["common_id_out_of_range"] == [f"{COMMON['train']}:2"]
  assert {r["user_id"] for r in readback.read_split(out, "train")} == {1000}
  with pytest.raises(
    ValueError,
    match=re.escape(
      f"{COMMON['train']}:2: field 101 (user_id): id '{TWO_64_PLUS_5}' is larger than"
      f" {MAX_ID} (the int64 maximum) (common_id_out_of_range)"
    ),
  ):
    convert.convert_ali_ccp(raw, str(tmp_path / "strict"), strict=True)


def test_a_long_history_with_a_huge_weight_is_refused_not_written_as_inf(tmp_path):
  # More than 32 weights: the numpy path, which silently made inf.
  history = [("109_14", 3000 + i, 0.5) for i in range(40)] + [("109_14", 4000, 1e39)]
  raw = _raw(str(tmp_path / "raw"))
  with open(os.path.join(raw, COMMON["train"]), "a") as f:
    f.write(ali_ccp.format_common_line("h" * 16, history))
  with open(os.path.join(raw, SKELETON["train"]), "a") as f:
    f.write(_skeleton("h", _items(0), "h" * 16))
  report = convert.convert_ali_ccp(
    raw, str(tmp_path / "out"), min_count=0, validation_fraction=0.0, num_shards=1
  )
  assert report["skipped"] == {"common_value_out_of_range": 1, "bad_common_row": 1}


@pytest.mark.parametrize(
  "line, reason, detail",
  [
    (
      _aliexpress_line(categorical={3: str(TWO_64_PLUS_5)}),
      "id_out_of_range",
      f"column categorical_3: id '{TWO_64_PLUS_5}' is larger than {MAX_ID} (the int64 maximum)",
    ),
    (
      _aliexpress_line(categorical={3: "1_00036"}),
      "bad_id",
      "column categorical_3: id '1_00036' is not a non-negative integer (digits only)",
    ),
    (
      _aliexpress_line(categorical={16: " 7"}),
      "bad_id",
      "column categorical_16: id ' 7' is not a non-negative integer (digits only)",
    ),
    (
      _aliexpress_line(numerical={63: "1e39"}),
      "value_out_of_range",
      "column numerical_63: value '1e39' is larger in magnitude than 1e+09 "
      "(tafe_tf.features.MAX_ABS_VALUE)",
    ),
  ],
  ids=["2^64+5", "underscore", "space", "1e39"],
)
def test_aliexpress_bad_ids_and_values(tmp_path, line, reason, detail):
  source = _copy_fixture("aliexpress", tmp_path)
  train = os.path.join(source, "train.csv")
  _replace_line(train, 3, line)
  report = convert.convert_aliexpress(
    source, str(tmp_path / "out"), min_count=0, validation_fraction=0.0, num_shards=1
  )
  assert report["skipped"] == {reason: 1}
  assert report["skipped_first_lines"] == {reason: ["train.csv:3"]}
  assert report["rows_per_split"] == {"train": 99, "validation": 0, "test": 100}
  with pytest.raises(ValueError) as error:
    convert.convert_aliexpress(source, str(tmp_path / "strict"), strict=True)
  assert str(error.value) == f"{train}:3: {detail} ({reason})"
  assert _no_output_left(str(tmp_path / "strict"))


def test_processed_ali_ccp_and_paddle_esmm_check_ids_and_values_too(tmp_path):
  source = _copy_fixture("ali_ccp_processed", tmp_path)
  path = os.path.join(source, "train.csv")
  header = open(path).readline().rstrip("\n").split(",")
  row = ["0", "0"] + ["1"] * 23 + ["0.5"] * 8
  row[header.index("205")] = str(TWO_63_PLUS_5)
  _replace_line(path, 2, ",".join(row) + "\n")
  row = ["0", "0"] + ["1"] * 23 + ["0.5"] * 8
  row[header.index("D853")] = "1e39"
  _replace_line(path, 3, ",".join(row) + "\n")
  report = convert.convert_ali_ccp_processed(source, str(tmp_path / "out"), min_count=0)
  assert report["skipped"] == {"id_out_of_range": 1, "value_out_of_range": 1}
  assert report["skipped_first_lines"] == {
    "id_out_of_range": ["train.csv:2"],
    "value_out_of_range": ["train.csv:3"],
  }
  shutil.rmtree(source)
  source = _copy_fixture("ali_ccp_paddle_esmm", tmp_path)
  path = os.path.join(source, "test.txt")
  _replace_line(path, 1, f"1,0,0,205:{TWO_64_PLUS_5},301:1\n")
  _replace_line(path, 2, "2,0,0,205:+7,301:1\n")
  report = convert.convert_paddle_esmm(source, str(tmp_path / "out2"), min_count=0)
  assert report["skipped"] == {"id_out_of_range": 1, "bad_id": 1}
  assert report["rows_per_split"]["test"] == 8
  with pytest.raises(
    ValueError,
    match=re.escape(
      f"test.txt:1: field 205 (item_id): id '{TWO_64_PLUS_5}' is larger than {MAX_ID}"
      " (the int64 maximum) (id_out_of_range)"
    ),
  ):
    convert.convert_paddle_esmm(source, str(tmp_path / "strict"), strict=True)


def test_feature_num_is_as_strict_as_an_id(tmp_path):
  line = f"s9,0,0,{KEY},+1,205\x025001\x031\n"
  raw = _raw(str(tmp_path / "raw"), extra_skeleton=[line])
  report = convert.convert_ali_ccp(raw, str(tmp_path / "out"), validation_fraction=0.0)
  assert report["skipped"] == {"bad_feature_num": 1}


# --- the encoder and the vocabulary refuse instead of wrapping -----------------


def test_the_encoder_refuses_ids_outside_int64_and_values_float32_cannot_hold():
  schema = convert.build_schema(csv_formats.AliExpress(), {})
  encoder = example_codec.ExampleEncoder(schema)
  values = {f"categorical_{i}": 1 for i in range(1, 17)}
  values["numerical"] = [0.5] * 63
  assert encoder.encode_fields(values)  # the good row encodes
  with pytest.raises(
    ValueError, match=f"^field 'categorical_2': id {TWO_64_PLUS_5} is outside int64$"
  ):
    encoder.encode_fields({**values, "categorical_2": TWO_64_PLUS_5})
  with pytest.raises(
    ValueError, match=f"^field 'categorical_2': id {-(2**63) - 1} is outside int64$"
  ):
    encoder.encode_fields({**values, "categorical_2": -(2**63) - 1})
  with pytest.raises(
    ValueError,
    match=r"^field 'numerical': a value too large for float32 \(it would be written as inf\)$",
  ):
    encoder.encode_fields({**values, "numerical": [0.5] * 62 + [1e39]})
  with pytest.raises(ValueError, match=f"^field 'categorical_1': id {2**63} is outside int64$"):
    example_codec.make_example(
      schema, {**values, "categorical_1": 2**63}, {"click": 0, "purchase": 0}
    )
  # Short lists (struct) and lists of ids (protobuf's packer) too.
  ali = example_codec.ExampleEncoder(convert.build_schema(ali_ccp.RawAliCcp(), {}))
  with pytest.raises(ValueError, match=r"^field 'hist_shop': a value too large for float32"):
    ali.encode_fields({"hist_shop": ([1, 2], [0.5, 1e39])})
  with pytest.raises(ValueError, match=f"^field 'hist_shop': Value out of range: {TWO_64_PLUS_5}$"):
    ali.encode_fields({"hist_shop": ([1, TWO_64_PLUS_5], [0.5, 0.5])})
  # The column-wise batch encoder: no unsigned id cast to a negative, no inf.
  batch = {f"categorical_{i}": np.ones(2, np.int64) for i in range(1, 17)}
  batch.update(
    {"numerical": np.zeros((2, 63)), "label/click": np.zeros(2, np.int64)},
    **{"label/purchase": np.zeros(2, np.int64)},
  )
  assert len(example_codec.serialize_batch(schema, batch)) == 2
  with pytest.raises(ValueError, match=f"^id {TWO_63_PLUS_5} is outside int64$"):
    example_codec.serialize_batch(
      schema, {**batch, "categorical_1": np.array([1, TWO_63_PLUS_5], np.uint64)}
    )
  huge = np.zeros((2, 63))
  huge[1, 5] = 1e39
  with pytest.raises(ValueError, match=r"^a value too large for float32"):
    example_codec.serialize_batch(schema, {**batch, "numerical": huge})


def test_the_id_counter_and_vocabulary_reader_refuse_ids_outside_int64(tmp_path):
  counter = vocabulary.IdCounter()
  with pytest.raises(ValueError, match="ids outside int64 cannot be counted"):
    counter.add([TWO_63_PLUS_5])
  with pytest.raises(ValueError, match="ids outside int64 cannot be counted"):
    counter.add_weighted([TWO_64_PLUS_5], 3)
  path = str(tmp_path / "v.txt")
  for entry, problem in (
    (str(TWO_63_PLUS_5), "does not fit int64"),
    ("+7", "is not an integer id"),
  ):
    with open(path, "w") as f:
      f.write(f"1\n{entry}\n")
    with pytest.raises(ValueError) as error:
      vocabulary.read_vocabulary(path)
    assert str(error.value) == f"{path}:2: vocabulary entry {entry!r} {problem}"


def test_one_rule_for_ids_and_values():
  # The readers' checks use the bounds the serving signature uses.
  assert features_lib.value_fits(features_lib.MAX_ABS_VALUE)
  assert not features_lib.value_fits(float("nan")) and not features_lib.value_fits(1e39)
  assert line_format.parse_value(b"1e9", "x") == 1e9
  assert line_format.parse_id(str(features_lib.MAX_ID).encode(), "x") == features_lib.MAX_ID
  assert line_format.parse_id(b"007", "x") == 7


# --- whole files ------------------------------------------------------------------


def test_a_byte_order_mark_is_not_part_of_the_first_key_or_header(tmp_path):
  # Before: the common file's first key kept the mark, so every impression of
  # that user was skipped as unknown_common_key; a CSV header with it failed.
  raw = _raw(str(tmp_path / "raw"), prefix=line_format.BOM)
  out = str(tmp_path / "out")
  report = convert.convert_ali_ccp(raw, out, min_count=0, validation_fraction=0.0, num_shards=1)
  assert report["skipped"] == {} and report["rows_written"] == 6
  rows = readback.read_split(out, "train")
  assert sorted(r["sample_id"] for r in rows) == [f"s{i}" for i in range(6)]
  assert {r["user_id"] for r in rows} == {1000}
  source = _copy_fixture("aliexpress", tmp_path)
  path = os.path.join(source, "train.csv")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(line_format.BOM + data)
  report = convert.convert_aliexpress(source, str(tmp_path / "csv"), validation_fraction=0.0)
  assert report["skipped"] == {} and report["rows_per_split"]["train"] == 100


@pytest.mark.parametrize(
  "fixture, name",
  [("aliexpress", "train.csv"), ("aliexpress", "test.csv"), ("ali_ccp_paddle_esmm", "train.txt")],
)
def test_an_empty_input_file_is_an_error(tmp_path, fixture, name):
  # Before: a 0-byte AliExpress CSV converted to 0 rows with rc 0.
  source = _copy_fixture(fixture, tmp_path)
  open(os.path.join(source, name), "w").close()
  out = str(tmp_path / "out")
  converter = {
    "aliexpress": convert.convert_aliexpress,
    "ali_ccp_paddle_esmm": convert.convert_paddle_esmm,
  }
  with pytest.raises(ValueError) as error:
    converter[fixture](source, out)
  assert str(error.value) == f"{os.path.join(source, name)}: the file is empty (0 bytes)"
  assert _no_output_left(out)


def test_an_empty_common_file_is_an_error(tmp_path):
  raw = _raw(str(tmp_path / "raw"))
  open(os.path.join(raw, COMMON["train"]), "w").close()
  with pytest.raises(
    ValueError, match=re.escape(f"{COMMON['train']}: the file is empty (0 bytes)")
  ):
    convert.convert_ali_ccp(raw, str(tmp_path / "out"))


def test_a_wrong_header_fails_before_any_shard_is_written(tmp_path):
  source = _copy_fixture("aliexpress", tmp_path)
  _replace_line(os.path.join(source, "test.csv"), 1, "search_id,nope\n")
  out = str(tmp_path / "out")
  with pytest.raises(
    ValueError, match=r"test.csv:1: header 'search_id,nope' is not the aliexpress header"
  ):
    convert.convert_aliexpress(source, out)
  assert not os.path.exists(out)  # refused before out_dir was even made


# --- what the report says: empty splits, OOV ids, empty vocabularies ----------------


def test_an_empty_split_is_reported_and_warned(tmp_path, caplog):
  source = _copy_fixture("aliexpress", tmp_path)
  path = os.path.join(source, "test.csv")
  with open(path) as f:
    header = f.readline()
  with open(path, "w") as f:
    f.write(header)  # a header and no rows
  out = str(tmp_path / "out")
  report = convert.convert_aliexpress(source, out, min_count=0, validation_fraction=0.0)
  expected = (
    "empty split(s), 0 rows written: test (test.csv has no data rows); validation "
    "(validation_fraction is 0: raise --validation_fraction)"
  )
  assert report["warnings"] == [expected]
  assert json.load(open(os.path.join(out, "report.json")))["warnings"] == [expected]
  assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
    f"{out}: {expected}"
  ]
  # Every test row skipped: the reason is named.
  with open(path, "w") as f:
    f.write(header + "1,2\n" * 3)
  report = convert.convert_aliexpress(source, out, min_count=0, validation_fraction=0.5)
  assert report["warnings"] == [
    "empty split(s), 0 rows written: test (all 3 data rows of test.csv were skipped: see "
    "skipped in report.json)"
  ]


def test_too_small_a_train_file_for_the_hold_out_is_warned(tmp_path):
  raw = _raw(str(tmp_path / "raw"), rows=1)
  report = convert.convert_ali_ccp(
    raw, str(tmp_path / "out"), min_count=0, validation_fraction=0.01
  )
  assert report["rows_per_split"] == {"train": 1, "validation": 0}
  assert [w for w in report["warnings"] if w.startswith("empty split")] == [
    "empty split(s), 0 rows written: validation (no train row fell in the "
    "validation_fraction=0.01 hold-out: raise --validation_fraction)"
  ]


def test_oov_ids_per_field_and_empty_vocabularies_name_the_flag(tmp_path):
  # Before: min_count=10 on the PaddleRec sample emptied all 23 vocabularies
  # without a word.
  source = os.path.join(FIXTURES, "ali_ccp_paddle_esmm")
  out = str(tmp_path / "out")
  report = convert.convert_paddle_esmm(source, out, min_count=10, validation_fraction=0.0)
  empty = report["empty_vocabularies"]
  assert len(empty) == 23
  seen = [n for n in empty if n != "user_consumption_1"]
  assert report["warnings"][1:] == [
    f"empty vocabularies, every id maps to the OOV row: {', '.join(seen)}: every train id "
    "seen <= 10 times (lower --min_count=10 to keep ids); user_consumption_1: no train row "
    "has an id"
  ]
  cutoff = report["vocabulary_cutoff"]
  rows = open(os.path.join(source, "train.txt")).read().splitlines()
  items = [t.split(":")[1] for r in rows for t in r.split(",")[3:] if t.startswith("205:")]
  assert cutoff["item_id"] == {
    "ids_seen": len(set(items)),
    "ids_oov": len(set(items)),
    "occurrences": len(items),
    "occurrences_oov": len(items),
  }
  assert cutoff["user_consumption_1"] == {
    "ids_seen": 0,
    "ids_oov": 0,
    "occurrences": 0,
    "occurrences_oov": 0,
  }
  report = convert.convert_paddle_esmm(source, out, min_count=0, validation_fraction=0.0)
  assert report["warnings"][1:] == [
    "empty vocabularies, every id maps to the OOV row: user_consumption_1: no train row has an id"
  ]
  assert cutoff["item_id"]["ids_seen"] == report["vocabulary_sizes"]["item_id"]
  assert report["vocabulary_cutoff"]["item_id"]["ids_oov"] == 0


def test_cutoff_counts_per_impression_and_leave_out_the_missing_id(tmp_path):
  raw = _raw(str(tmp_path / "raw"), rows=6)  # items 5000..5002 twice each
  with open(os.path.join(raw, SKELETON["train"]), "a") as f:
    f.write(_skeleton("once", [("205", 5009, 1.0)]))  # no position: -1
  report = convert.convert_ali_ccp(raw, str(tmp_path / "out"), min_count=1, validation_fraction=0.0)
  cutoff = report["vocabulary_cutoff"]
  assert cutoff["item_id"] == {"ids_seen": 4, "ids_oov": 1, "occurrences": 7, "occurrences_oov": 1}
  assert cutoff["position"] == {"ids_seen": 2, "ids_oov": 0, "occurrences": 6, "occurrences_oov": 0}
  assert cutoff["hist_category"] == {
    "ids_seen": 2,
    "ids_oov": 0,
    "occurrences": 14,
    "occurrences_oov": 0,
  }


# --- the output directory ------------------------------------------------------------


def test_out_dir_that_is_a_file_is_one_error(tmp_path):
  raw = _raw(str(tmp_path / "raw"))
  target = tmp_path / "a_file"
  target.write_text("not a dataset")
  with pytest.raises(
    NotADirectoryError, match=f"^out_dir {re.escape(str(target))} is a file, not a directory$"
  ):
    convert.convert_ali_ccp(raw, str(target))
  assert target.read_text() == "not a dataset"
  with pytest.raises(
    OSError,
    match=f"^cannot create out_dir {re.escape(str(target))}/sub: {re.escape(str(target))} is not a directory$",
  ):
    convert.convert_ali_ccp(raw, str(target / "sub"))


def test_disk_full_while_writing_a_vocabulary_leaves_nothing_complete(tmp_path):
  raw = _raw(str(tmp_path / "raw"))
  out = str(tmp_path / "out")
  convert.convert_ali_ccp(raw, out, min_count=0, num_shards=2)  # a complete dataset
  # /dev/full answers every write with ENOSPC, as a full disk does.
  target = os.path.join(out, "vocab", "user_id.txt.incomplete")
  os.symlink("/dev/full", target)
  with pytest.raises(OSError) as error:
    convert.convert_ali_ccp(raw, out, min_count=0, num_shards=2)
  assert str(error.value) == (
    f"converting into {out} failed, its partial shards removed: {target}; No space left on device"
  )
  assert _no_output_left(out)


def _unshare_works():
  try:
    proc = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return False
  return proc.returncode == 0


@pytest.mark.skipif(
  not _unshare_works(), reason="needs unprivileged user namespaces (unshare -Urm)"
)
def test_disk_full_while_writing_shards_is_one_line_and_leaves_nothing(tmp_path):
  # A real full file system: a 256 KiB tmpfs in a private mount namespace.
  source = _copy_fixture("aliexpress", tmp_path)
  path = os.path.join(source, "train.csv")
  lines = open(path).readlines()
  with open(path, "w") as f:
    f.writelines(lines[:1] + lines[1:] * 40)  # ~2 MB of uncompressed shards
  disk = str(tmp_path / "disk")
  os.makedirs(disk)
  out = os.path.join(disk, "out")
  command = " ".join(
    cli_runner.module_command(
      "launch.convert",
      "--format=aliexpress",
      f"--raw_dir={source}",
      f"--out_dir={out}",
      "--num_shards=1",
      "--workers=1",
      "--compression_level=0",
      "--validation_fraction=0",
    )
  )
  script = f"mount -t tmpfs -o size=256k tmpfs {disk} && {command}; echo rc=$?; ls -A {out}"
  proc = subprocess.run(
    ["unshare", "-Urm", "sh", "-c", script],
    cwd=cli_runner.ROOT,
    env=cli_runner.subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  shard = os.path.join(out, "train-00000-of-00001.tfrecord.gz.incomplete")
  assert proc.stderr.splitlines() == [
    f"convert.py: error: converting into {out} failed, its partial shards removed: "
    f"{shard}; No space left on device"
  ]
  assert proc.stdout.splitlines() == ["rc=2"]  # and `ls -A out` printed nothing


def test_cli_errors_are_one_line(tmp_path):
  target = tmp_path / "a_file"
  target.write_text("x")
  source = _copy_fixture("aliexpress", tmp_path)
  result = cli_runner.run_module(
    "launch.convert", "--format=aliexpress", f"--raw_dir={source}", f"--out_dir={target}"
  )
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
    f"convert.py: error: out_dir {target} is a file, not a directory"
  ]
  open(os.path.join(source, "train.csv"), "w").close()
  result = cli_runner.run_module(
    "launch.convert", "--format=aliexpress", f"--raw_dir={source}", f"--out_dir={tmp_path / 'o'}"
  )
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
    f"convert.py: error: {os.path.join(source, 'train.csv')}: the file is empty (0 bytes)"
  ]


def test_a_sample_id_that_is_not_utf8_is_skipped_and_counted(tmp_path):
  # Before: written as is; launch.evaluate then died on it (UnicodeDecodeError).
  raw = _raw(str(tmp_path / "raw"))
  with open(os.path.join(raw, SKELETON["train"]), "ab") as f:
    f.write(b"s\xff\xfe," + _skeleton("x", _items(0)).encode().split(b",", 1)[1])
  report = convert.convert_ali_ccp(raw, str(tmp_path / "out"), validation_fraction=0.0)
  assert report["skipped"] == {"bad_sample_id": 1}
  assert report["skipped_first_lines"] == {"bad_sample_id": [f"{SKELETON['train']}:7"]}
  source = _copy_fixture("ali_ccp_paddle_esmm", tmp_path)
  path = os.path.join(source, "train.txt")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(b"\xc3" + data)  # a cut two-byte character
  with pytest.raises(ValueError) as error:
    convert.convert_paddle_esmm(source, str(tmp_path / "strict"), strict=True)
  assert str(error.value) == f"{path}:1: sample_id '\ufffd1' is not UTF-8 (bad_sample_id)"
