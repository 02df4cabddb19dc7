"""--format=tfrecord: existing tf.train.Example files read through a column
spec give the very records the CSV path gives for the same rows; bad records
are skipped and counted with their record numbers; gzip is detected."""

import collections
import json
import os
import sys

import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readback  # noqa: E402  (tests/data helper)
from cli_runner import run_module  # noqa: E402  (tests/ helper, on sys.path via conftest)

from tafe_tf import features as features_lib  # noqa: E402
from tafe_tf.data import convert, tfrecord_format  # noqa: E402
from tafe_tf.data.column_spec import ColumnSpec, SpecError  # noqa: E402

COLUMNS = ("req", "uid", "shop", "tags", "tag_w", "price", "clk", "buy")
# One own-columns case: two ids (one hashed), a weighted list, a dense value,
# two labels, a key and a user. None is an empty cell / a missing feature.
ROWS = [
  ("r0", 7, "acme", [3, 4], [0.5, 2.0], 1.5, 1, 1),
  ("r1", 8, "zed", [], [], 2.25, 0, 0),
  ("r2", 14, "acme", [5], [1.0], 0.0, 1, 0),
  ("r3", 9, "big shop", [3], [0.25], -400.0, 0, 0),
  ("r4", 7, None, [4, 4, 6], [1.0, 1.0, 3.0], 0.125, 1, 0),
  ("r5", 10, "zed", [6], [2.0], 8.0, 0, 0),
  ("r6", 11, "acme", [3], [1.0], 1.0, 1, 1),
  ("r7", 12, "acme", [7], [1.0], 2.0, 0, 0),
  ("r8", 13, "zed", [8], [1.0], 3.0, 1, 0),
  ("r9", 8, "zed", [3, 8], [0.5, 0.5], 4.0, 0, 0),
]
# A row without a group value (uid) is held out by its line (CSV) or its
# record (TFRecords), which differ: here only in the test split.
TEST_ROWS = ROWS[:2] + [("t2", None, "acme", [5], [1.0], 0.0, 1, 0)]
SPEC = {
  "name": "shop_logs",
  "id_columns": ["uid", {"column": "shop", "hash": True}],
  "list_columns": [{"column": "tags", "separator": "|", "weight_column": "tag_w"}],
  "dense_columns": ["price"],
  "steps": [{"name": "click", "column": "clk"}, {"name": "purchase", "column": "buy"}],
  "key_column": "req",
  "group_column": "uid",
  "user_column": "uid",
}


def _cell(value):
  if value is None:
    return ""
  if isinstance(value, list):
    return "|".join(str(v) for v in value)
  return str(value)


def _feature(value):
  """A cell's value as the feature a pipeline writes: text as bytes_list,
  numbers as float_list, ids as int64_list."""
  values = value if isinstance(value, list) else [value]
  if isinstance(values[0], str):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
  if isinstance(values[0], float):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _example(row, **changes):
  """The Example of a row: a feature per non-empty value; ``changes``
  replace features (None removes one)."""
  features = {c: _feature(v) for c, v in zip(COLUMNS, row) if v is not None and v != []}
  for name, feature in changes.items():
    features.pop(name, None)
    if feature is not None:
      features[name] = feature
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _write_csv(path, rows):
  with open(path, "w") as f:
    f.write("\n".join([",".join(COLUMNS)] + [",".join(map(_cell, r)) for r in rows]) + "\n")


def _write_records(path, records, compression=""):
  with tf.io.TFRecordWriter(str(path), options=compression or None) as w:
    for record in records:
      w.write(record)


FLOATS = tf.train.Feature(float_list=tf.train.FloatList(value=[7.0]))
# Planted bad records: (record, skip reason); they go after ROWS[:2].
BAD = [
  (_example(ROWS[0], uid=FLOATS), "wrong_type"),
  (
    _example(ROWS[0], price=tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0]))),
    "wrong_length",
  ),
  (
    _example(ROWS[1], buy=tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))),
    "purchase_without_click",
  ),
  (_example(ROWS[0], price=None), "bad_value"),
  (_example(ROWS[0], tag_w=None), "weight_count_mismatch"),
  (_example(ROWS[0], req=None), "missing_key"),
  (b"\xff\xff\xff", "not_an_example"),
]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  """The same rows as CSV and as TFRecords (train gzip'ed, no .gz suffix)."""
  csv_dir = tmp_path_factory.mktemp("csv")
  _write_csv(csv_dir / "train.csv", ROWS)
  _write_csv(csv_dir / "test.csv", TEST_ROWS)
  tfr_dir = tmp_path_factory.mktemp("tfrecord")
  good = [_example(r) for r in ROWS]
  _write_records(tfr_dir / "train.tfrecord", good[:2] + [b for b, _ in BAD] + good[2:], "GZIP")
  _write_records(tfr_dir / "test.tfrecord", [_example(r) for r in TEST_ROWS])
  return str(csv_dir), str(tfr_dir)


def _spec(files):
  return ColumnSpec.from_json({**SPEC, "files": files}, "spec.json")


def _multiset(out, split):
  return collections.Counter(json.dumps(r, sort_keys=True) for r in readback.read_split(out, split))


OPTIONS = dict(min_count=0, num_shards=2, validation_fraction=0.3)


@pytest.fixture(scope="module")
def csv_out(raw, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("csv_out"))
  spec = _spec({"train": "train.csv", "test": "test.csv"})
  report = convert.convert_columns(spec, raw[0], out, **OPTIONS)
  assert report["skipped"] == {}
  return out


def test_records_convert_to_what_the_csv_path_gives(raw, csv_out, tmp_path):
  out = str(tmp_path / "out")
  spec = _spec({"train": "train.tfrecord", "test": "test.tfrecord"})
  report = convert.convert_tfrecords(spec, raw[1], out, **OPTIONS)
  assert report["format"] == "shop_logs"
  assert report["compression"] == {
    os.path.join(raw[1], "train.tfrecord"): "GZIP",
    os.path.join(raw[1], "test.tfrecord"): "none",
  }
  assert report["rows_read"] == len(ROWS) + len(BAD) + len(TEST_ROWS)
  # Every planted record skipped and counted, by reason, at its record number.
  assert report["skipped"] == dict(collections.Counter(reason for _, reason in BAD))
  assert report["skipped_first_lines"] == {
    reason: [f"train.tfrecord:{3 + k}"] for k, (_, reason) in enumerate(BAD)
  }
  with open(os.path.join(csv_out, "report.json")) as f:
    csv_report = json.load(f)
  # The hold-out by uid splits both alike, and validation is not empty.
  assert report["rows_per_split"] == csv_report["rows_per_split"]
  assert report["rows_per_split"]["validation"] > 0
  assert report["vocabulary_sizes"] == csv_report["vocabulary_sizes"]
  for split in ("train", "validation", "test"):
    assert _multiset(out, split) == _multiset(csv_out, split), split
  assert features_lib.Schema.load(out) == features_lib.Schema.load(csv_out)
  for field in ("uid", "shop", "tags"):
    assert readback.vocab(out, field) == readback.vocab(csv_out, field)
  # A missing uid or shop is -1 (the OOV row); no vocabulary holds it.
  assert -1 not in readback.vocab(out, "uid")
  train = {r["sample_id"]: r for r in readback.read_split(out, "train")}
  train.update({r["sample_id"]: r for r in readback.read_split(out, "validation")})
  assert train["r4"]["shop"] == -1
  assert {r["sample_id"]: r["uid"] for r in readback.read_split(out, "test")}["t2"] == -1
  assert train["r4"]["tags"] == ([4, 4, 6], [1.0, 1.0, 3.0])
  assert train["r0"]["label/purchase"] == 1 and train["r2"]["label/purchase"] == 0


def test_strict_stops_at_the_first_bad_record(raw, tmp_path):
  spec = _spec({"train": "train.tfrecord"})
  with pytest.raises(
    ValueError,
    match=r"train.tfrecord:3: feature uid: float_list, expected int64_list or bytes_list"
    r" \(wrong_type\)",
  ):
    convert.convert_tfrecords(spec, raw[1], str(tmp_path / "strict"), strict=True, **OPTIONS)
  assert not os.path.exists(tmp_path / "strict" / "report.json")


def test_a_file_that_is_not_tfrecords_is_one_line(raw, tmp_path):
  spec = _spec({"train": "train.csv"})
  with pytest.raises(ValueError, match=r"train.csv: record 1: not a TFRecord file, or truncated"):
    convert.convert_tfrecords(spec, raw[0], str(tmp_path / "out"), **OPTIONS)


def test_inline_weights_are_refused_naming_the_key():
  obj = {**SPEC, "files": {"train": "t"}, "list_columns": [{"column": "tags", "weights": "inline"}]}
  with pytest.raises(SpecError, match=r"^spec.json: list_columns\[0\].weights: 'inline' is for"):
    tfrecord_format.TFRecordFormat(ColumnSpec.from_json(obj, "spec.json"))


def test_gzip_is_detected_by_its_magic_bytes(raw):
  assert tfrecord_format.compression_of(os.path.join(raw[1], "train.tfrecord")) == "GZIP"
  assert tfrecord_format.compression_of(os.path.join(raw[1], "test.tfrecord")) == ""


def test_cli_converts_tfrecords_through_a_spec_file(raw, csv_out, tmp_path):
  spec_path = tmp_path / "spec.json"
  spec_path.write_text(json.dumps(SPEC))  # files: the default train/test.tfrecord
  out = str(tmp_path / "out")
  result = run_module(
    "launch.convert",
    "--format=tfrecord",
    f"--spec={spec_path}",
    f"--raw_dir={raw[1]}",
    f"--out_dir={out}",
    "--min_count=0",
    "--num_shards=2",
    "--validation_fraction=0.3",
  )
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["skipped"] == dict(collections.Counter(reason for _, reason in BAD))
  for split in ("train", "validation", "test"):
    assert _multiset(out, split) == _multiset(csv_out, split), split
