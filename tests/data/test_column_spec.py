"""Your own columns: a column spec drives the same reader as the public CSV
formats; converted rows read back exactly, bad lines are counted, bad specs
are one line naming the spec file and the key."""

import hashlib
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readback  # noqa: E402  (tests/data helper)

from tafe_tf import features as features_lib  # noqa: E402
from tafe_tf.data import column_spec, convert, csv_formats  # noqa: E402
from tafe_tf.data.column_spec import ColumnSpec, SpecError, hash_id  # noqa: E402

HEADER = "req,uid,item_no,shop,tags,price,note,clk,buy"
# Good rows: (line, expected record).
GOOD = [
  ("r1,7,100,acme,3:0.5|4:2,1.5,x,1,1", ("r1", 7, 100, "acme", [3, 4], [0.5, 2.0], 1.5, 1, 1)),
  ("r2,8,101,zed,,2.25,y,0,0", ("r2", 8, 101, "zed", [], [], 2.25, 0, 0)),
  ("r3,,100,acme,5:1,0,,1,0", ("r3", -1, 100, "acme", [5], [1.0], 0.0, 1, 0)),
  ('r4,9,102,"big, shop",3:1,-4e2,z,0,0', ("r4", 9, 102, "big, shop", [3], [1.0], -400.0, 0, 0)),
]
BAD = [
  ("r5,7,100,acme,3:1,1.5,x,1", "wrong_field_count"),
  ("r6,7,100,acme,3:1,cheap,x,0,0", "bad_value"),
  ("r7,7,100,acme,3:1,1.5,x,0,1", "purchase_without_click"),
  (",7,100,acme,3:1,1.5,x,0,0", "missing_key"),
]
SPEC = {
  "name": "shop_logs",
  "files": {"train": "train.csv", "test": "test.csv"},
  "id_columns": ["uid", "item_no", {"column": "shop", "hash": True}],
  "list_columns": [{"column": "tags", "separator": "|", "weights": "inline"}],
  "dense_columns": ["price"],
  "steps": [{"name": "click", "column": "clk"}, {"name": "purchase", "column": "buy"}],
  "key_column": "req",
  "group_column": "uid",
  "user_column": "uid",
}


def _write(path, lines, header=HEADER):
  with open(path, "w") as f:
    f.write("\n".join([header] + lines) + "\n")


@pytest.fixture
def raw(tmp_path):
  raw_dir = tmp_path / "raw"
  raw_dir.mkdir()
  # Train: good rows with the bad ones planted between them (lines 4-7).
  _write(
    raw_dir / "train.csv", [GOOD[0][0], GOOD[1][0]] + [b for b, _ in BAD] + [g for g, _ in GOOD[2:]]
  )
  _write(raw_dir / "test.csv", [GOOD[1][0]])
  return str(raw_dir)


def _record(row):
  return (
    row["sample_id"],
    row["uid"],
    row["item_no"],
    row["shop"],
    row["tags"][0],
    row["tags"][1],
    row["price"][0],
    row["label/click"],
    row["label/purchase"],
  )


def _expected(good):
  req, uid, item, shop, tag_ids, tag_weights, price, click, buy = good
  return (
    req,
    uid,
    item,
    hash_id(shop.encode()),
    tag_ids,
    readback.f32(tag_weights),
    readback.f32([price])[0],
    click,
    click and buy,
  )


def test_converted_rows_read_back_exactly_and_bad_lines_are_counted(raw, tmp_path):
  spec = ColumnSpec.from_json(SPEC, "spec.json")
  out = str(tmp_path / "out")
  report = convert.convert_columns(
    spec, raw, out, min_count=0, num_shards=1, validation_fraction=0.0
  )
  assert report["skipped"] == {
    "bad_value": 1,
    "missing_key": 1,
    "purchase_without_click": 1,
    "wrong_field_count": 1,
  }
  assert report["skipped_first_lines"] == {
    reason: [f"train.csv:{4 + k}"] for k, (_, reason) in enumerate(BAD)
  }
  assert report["rows_per_split"] == {"train": 4, "validation": 0, "test": 1}
  assert report["columns_ignored"] == ["note"]
  assert [_record(r) for r in readback.read_split(out, "train")] == [_expected(g) for _, g in GOOD]
  assert [_record(r) for r in readback.read_split(out, "test")] == [_expected(GOOD[1][1])]
  schema = features_lib.Schema.load(out)
  assert schema.name == "shop_logs"
  assert schema.steps == ("click", "purchase")
  assert schema.user_field == "uid" and schema.has_sample_id
  assert [(f.name, f.kind.value) for f in schema.fields] == [
    ("uid", "id"),
    ("item_no", "id"),
    ("shop", "id"),
    ("tags", "weighted_ids"),
    ("price", "dense"),
  ]
  # The empty uid (-1) stays out of the vocabulary: the OOV row.
  assert sorted(readback.vocab(out, "uid")) == [7, 8, 9]
  with pytest.raises(ValueError, match=r"train.csv:4: expected 9 comma-separated fields, got 8"):
    convert.convert_columns(spec, raw, str(tmp_path / "strict"), strict=True)


def test_hash_id_is_stable_and_non_negative():
  # The documented formula, fixed forever: serving clients compute it too.
  digest = hashlib.blake2b(b"acme", digest_size=8).digest()
  assert hash_id(b"acme") == int.from_bytes(digest, "little") >> 1 == 4670556750111019800
  assert 0 <= hash_id(b"") < 2**63


def test_spec_round_trips_through_json():
  spec = ColumnSpec.from_json(SPEC, "spec.json")
  assert ColumnSpec.from_json(json.loads(json.dumps(spec.to_json())), "again") == spec
  for public in (csv_formats.PROCESSED_ALI_CCP_SPEC, csv_formats.ALIEXPRESS_SPEC):
    assert ColumnSpec.from_json(public.to_json(), "x") == public


def test_multiclass_label_tsv_weight_column_and_globbed_files(tmp_path):
  raw_dir = tmp_path / "raw"
  raw_dir.mkdir()
  header = "user\thist\thist_w\tlabel"
  _write(raw_dir / "part-0.tsv", ["1\t5,6\t0.5,2\t2", "2\t\t\t0"], header)
  _write(raw_dir / "part-1.tsv", ["3\t7\t1\t1", "4\t7\t1\t3", "5\t7,8\t1\t0"], header)
  _write(raw_dir / "eval.tsv", ["1\t5\t1\t1"], header)
  spec = ColumnSpec.from_json(
    {
      "delimiter": "\t",
      "files": {"train": "part-*.tsv", "test": "eval.tsv"},
      "id_columns": ["user"],
      "list_columns": [{"column": "hist", "separator": ",", "weight_column": "hist_w"}],
      "steps": ["click", "cart", "purchase"],
      "multiclass_label": {"column": "label", "values": {"0": 0, "1": 1, "2": 3}},
    },
    "mc.json",
  )
  out = str(tmp_path / "out")
  report = convert.convert_columns(
    spec, str(raw_dir), out, min_count=0, num_shards=2, validation_fraction=0.0
  )
  # part-1's "3" is not a label value; part-1's last row has one weight for two ids.
  assert report["skipped"] == {"bad_label": 1, "weight_count_mismatch": 1}
  assert report["skipped_first_lines"] == {
    "bad_label": ["part-1.tsv:3"],
    "weight_count_mismatch": ["part-1.tsv:4"],
  }
  rows = sorted(readback.read_split(out, "train"), key=lambda r: r["user"])
  assert [
    (r["user"], r["hist"], r["label/click"], r["label/cart"], r["label/purchase"]) for r in rows
  ] == [(1, ([5, 6], [0.5, 2.0]), 1, 1, 1), (2, ([], []), 0, 0, 0), (3, ([7], [1.0]), 1, 0, 0)]
  assert report["inputs"]["train"] == [str(raw_dir / "part-0.tsv"), str(raw_dir / "part-1.tsv")]


@pytest.mark.parametrize(
  "change, message",
  [
    ({"colour": 1}, "spec.json: colour: unknown key (known: name, delimiter, files,"),
    ({"delimiter": ";"}, 'spec.json: delimiter: \';\' must be "," or "\\t"'),
    ({"files": {"train": "a.csv", "dev": "b.csv"}}, "spec.json: files.dev: unknown split"),
    ({"files": {"test": "b.csv"}}, "spec.json: files: needs a 'train' file"),
    (
      {"list_columns": [{"column": "tags", "sep": "|"}]},
      "spec.json: list_columns[0].sep: unknown key (known: column, name, separator,",
    ),
    (
      {"list_columns": [{"column": "tags", "separator": ","}]},
      "spec.json: list_columns[0].separator: ',' contains the file's delimiter",
    ),
    ({"list_columns": [{"column": "tags", "weights": "yes"}]}, "list_columns[0].weights: 'yes'"),
    (
      {"steps": [{"name": "click", "column": "clk"}]},
      "spec.json: steps: needs at least 2 steps in chain order, got 1",
    ),
    (
      {"dense_columns": ["price", "uid"]},
      "spec.json: dense_columns[1]: column 'uid' is already id_columns[0]",
    ),
    ({"user_column": "price"}, "spec.json: user_column: 'price' must be one of the id_columns"),
    (
      {"id_columns": ["uid", "item no"]},
      "spec.json: id_columns[1]: field name 'item no' must be letters, digits and '_'",
    ),
    (
      {"steps": ["click", "purchase"], "multiclass_label": {"column": "l", "values": {"2": 3}}},
      "spec.json: multiclass_label.values.2: 3 steps reached: must be 0 to 2",
    ),
    ({"id_columns": [{"column": "uid", "hash": "yes"}]}, "id_columns[0].hash: must be true or"),
  ],
)
def test_bad_specs_are_one_line_naming_file_and_key(change, message):
  with pytest.raises(SpecError) as e:
    ColumnSpec.from_json({**SPEC, **change}, "spec.json")
  assert str(e.value).startswith("spec.json: ") and message in str(e.value)
  assert "\n" not in str(e.value)


def test_a_column_missing_from_the_header_names_the_spec_key(raw, tmp_path):
  spec = ColumnSpec.from_json({**SPEC, "dense_columns": ["price", "weight"]}, "spec.json")
  with pytest.raises(ValueError) as e:
    convert.convert_columns(spec, raw, str(tmp_path / "out"))
  assert str(e.value) == (
    f"spec.json: dense_columns[1]: column 'weight' is not in the header of "
    f"{os.path.join(raw, 'train.csv')} ({HEADER.replace(',', ', ')})"
  )
  assert not os.path.exists(tmp_path / "out" / "report.json")


def test_a_file_pattern_matching_nothing_names_the_spec_key(raw, tmp_path):
  spec = ColumnSpec.from_json({**SPEC, "files": {"train": "logs-*.csv"}}, "spec.json")
  with pytest.raises(FileNotFoundError, match=r"no file matches 'logs-\*.csv' \(spec.json: files"):
    convert.convert_columns(spec, raw, str(tmp_path / "out"))


def test_infer_spec_proposes_the_columns(raw):
  header, rows = csv_formats.read_sample(os.path.join(raw, "train.csv"), ",")
  proposal, lines = column_spec.infer_spec(header, rows, ",", {"train": "train.csv"})
  assert proposal == {
    "delimiter": ",",
    "files": {"train": "train.csv"},
    "key_column": "req",
    "user_column": "uid",
    "group_column": "uid",
    "id_columns": [
      "uid",
      "item_no",
      {"column": "shop", "hash": True},
      {"column": "note", "hash": True},
    ],
    "list_columns": [{"column": "tags", "separator": "|", "weights": "inline"}],
    "dense_columns": ["price"],
    "steps": [{"name": "clk", "column": "clk"}, {"name": "buy", "column": "buy"}],
  }
  assert len(lines) == len(header)
  assert lines == [
    "req: key_column (a key-like name, unique in 6 distinct in 6 non-empty of 7 rows)",
    "uid: id column (integers, 3 distinct in 6 non-empty of 7 rows);"
    " user_column and group_column (a user-like name)",
    "item_no: id column (integers, 3 distinct in 7 non-empty of 7 rows)",
    "shop: id column, strings hashed (3 distinct in 7 non-empty of 7 rows)",
    "tags: list column, separator '|', inline id:weight (3 distinct ids)",
    "price: dense column (numbers, 5 distinct in 7 non-empty of 7 rows;"
    " 1 other, e.g. 'cheap', skipped at conversion)",
    "note: id column, strings hashed (3 distinct in 6 non-empty of 7 rows)",
    "clk: step 1 'clk' (0/1 under a label-like name)",
    "buy: step 2 'buy' (0/1 under a label-like name)",
  ]
  ColumnSpec.from_json(proposal, "proposal")  # a valid spec as proposed
