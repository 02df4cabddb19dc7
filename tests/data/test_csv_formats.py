"""Processed Ali-CCP CSV, AliExpress CSV and PaddleRec ESMM tokens: the
fixtures (real rows) parse to exactly their values; bad lines are counted."""

import csv
import os
import shutil
import sys
import zlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readback  # noqa: E402  (tests/data helper)

from tafe_tf.data import (
  ali_ccp,  # noqa: E402
  convert,  # noqa: E402
)

FIXTURES = readback.FIXTURES
NAME = {raw: name for raw, name, _, _ in ali_ccp.FIELDS}


def _csv_rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_processed_ali_ccp_fixture(tmp_path):
  source = os.path.join(FIXTURES, "ali_ccp_processed")
  out = str(tmp_path / "out")
  report = convert.convert_ali_ccp_processed(source, out, min_count=0, num_shards=2)
  assert report["rows_per_split"] == {"train": 100, "validation": 50, "test": 50}
  assert report["skipped"] == {}
  for split, name in (("train", "train"), ("validation", "val"), ("test", "test")):
    expected = _csv_rows(os.path.join(source, f"{name}.csv"))
    got = readback.read_split(out, split)
    # One writer round-robins rows over the shards: restore file order.
    got = [got[i] for i in _round_robin_order(len(got), 2)]
    for row, csv_row in zip(got, expected):
      assert row["label/click"] == int(csv_row["click"])
      assert row["label/purchase"] == int(csv_row["purchase"])
      for raw, name in NAME.items():
        assert row[name] == int(csv_row[raw]), name
        if "D" + raw in csv_row:
          assert row[name + "_value"] == readback.f32([float(csv_row["D" + raw])])
  # Id 0 means "rare or missing" in this form: never in a vocabulary.
  item_ids = [int(r["205"]) for r in _csv_rows(os.path.join(source, "train.csv"))]
  assert 0 in item_ids
  assert sorted(readback.vocab(out, "item_id")) == sorted(set(item_ids) - {0})


def _round_robin_order(n, shards):
  """Positions in file order of rows read back shard after shard."""
  per_shard = [list(range(s, n, shards)) for s in range(shards)]
  read_order = [i for shard in per_shard for i in shard]
  return [read_order.index(i) for i in range(n)]


def test_aliexpress_fixture_and_search_id_hold_out(tmp_path):
  source = os.path.join(FIXTURES, "aliexpress")
  out = str(tmp_path / "out")
  report = convert.convert_aliexpress(
    source, out, min_count=0, num_shards=1, validation_fraction=0.3
  )
  train_rows = _csv_rows(os.path.join(source, "train.csv"))
  held = [r for r in train_rows if zlib.crc32(r["search_id"].encode()) < 0.3 * 2**32]
  kept = [r for r in train_rows if r not in held]
  assert report["rows_per_split"] == {"train": len(kept), "validation": len(held), "test": 100}
  for split, expected in (("train", kept), ("validation", held)):
    got = readback.read_split(out, split)  # one shard: file order
    assert len(got) == len(expected)
    for row, csv_row in zip(got, expected):
      for i in range(1, 17):
        assert row[f"categorical_{i}"] == int(csv_row[f"categorical_{i}"])
      assert row["numerical"] == readback.f32(
        [float(csv_row[f"numerical_{i}"]) for i in range(1, 64)]
      )
      assert row["label/click"] == int(csv_row["click"])
      assert row["label/purchase"] == int(csv_row["conversion"])


def test_paddle_esmm_fixture(tmp_path):
  source = os.path.join(FIXTURES, "ali_ccp_paddle_esmm")
  out = str(tmp_path / "out")
  report = convert.convert_paddle_esmm(
    source, out, min_count=0, num_shards=1, validation_fraction=0.0
  )
  assert report["rows_per_split"] == {"train": 10, "validation": 0, "test": 10}
  got = readback.read_split(out, "train")
  with open(os.path.join(source, "train.txt")) as f:
    lines = [line.rstrip("\n").split(",") for line in f]
  for row, parts in zip(got, lines):
    assert row["sample_id"] == parts[0]
    assert row["label/click"] == int(parts[1])
    assert row["label/purchase"] == int(parts[2])
    tokens = [t.split(":") for t in parts[3:]]
    for raw, name, kind, _ in ali_ccp.FIELDS:
      ids = [int(i) for f, i in tokens if f == raw]
      if kind == ali_ccp.ID:
        assert row[name] == (ids[0] if ids else -1), name
      else:
        assert row[name] == (ids, [1.0] * len(ids)), name
  # 126 is absent from every real row: an empty vocabulary, reported.
  assert report["empty_vocabularies"] == ["user_consumption_1"]


@pytest.mark.parametrize(
  "fixture, header_lines, bad_lines, expected",
  [
    (
      "ali_ccp_processed",
      1,
      [
        "0,1" + ",1" * 23 + ",0.5" * 8 + "\n",  # purchase without click
        "0,0" + ",1" * 22 + ",x" + ",0.5" * 8 + "\n",  # bad id
        "0,0" + ",1" * 23 + ",0.5" * 7 + ",inf\n",  # bad dense value
        "2,0" + ",1" * 23 + ",0.5" * 8 + "\n",  # bad label
        "0,0,1\n",
      ],
      {"buy_without_click": 1, "bad_id": 1, "bad_value": 1, "bad_label": 1, "wrong_field_count": 1},
    ),
    (
      "aliexpress",
      1,
      [
        "1" + ",1" * 16 + ",0.5" * 63 + ",0,1\n",
        "1" + ",1" * 16 + ",0.5" * 62 + ",nan,0,0\n",
        "1,2\n",
      ],
      {"buy_without_click": 1, "bad_value": 1, "wrong_field_count": 1},
    ),
    (
      "ali_ccp_paddle_esmm",
      0,
      [
        "99,0,1,205:1\n",
        "99,0,0,205\n",
        "99,0,0,205:1,205:2\n",
        "99,0,0,777:1\n",
        "99,y,0,205:1\n",
        "99\n",
      ],
      {
        "buy_without_click": 1,
        "bad_entry": 1,
        "repeated_single_field": 1,
        "unknown_field": 1,
        "bad_label": 1,
        "wrong_field_count": 1,
      },
    ),
  ],
)
def test_bad_lines_are_skipped_and_counted(tmp_path, fixture, header_lines, bad_lines, expected):
  source = str(tmp_path / "in")
  shutil.copytree(os.path.join(FIXTURES, fixture), source)
  train = [n for n in os.listdir(source) if n.startswith("train")][0]
  with open(os.path.join(source, train)) as f:
    good = f.readlines()
  with open(os.path.join(source, train), "w") as f:
    f.writelines(good[: header_lines + 2] + bad_lines + good[header_lines + 2 :])
  converter = {
    "ali_ccp_processed": convert.convert_ali_ccp_processed,
    "aliexpress": convert.convert_aliexpress,
    "ali_ccp_paddle_esmm": convert.convert_paddle_esmm,
  }[fixture]
  report = converter(source, str(tmp_path / "out"), min_count=0, num_shards=1)
  assert report["skipped"] == expected
  first_bad = header_lines + 3
  assert report["skipped_first_lines"][list(expected)[0]] == [f"{train}:{first_bad}"]
  with pytest.raises(
    ValueError,
    match=rf"{train}:{first_bad}: .*"
    r"\(buy_without_click\)",
  ):
    converter(source, str(tmp_path / "strict"), strict=True)


def test_wrong_header_is_an_error(tmp_path):
  source = str(tmp_path / "in")
  shutil.copytree(os.path.join(FIXTURES, "aliexpress"), source)
  path = os.path.join(source, "test.csv")
  lines = open(path).readlines()
  lines[0] = lines[0].replace("categorical_3", "categorical_x")
  open(path, "w").writelines(lines)
  with pytest.raises(
    ValueError,
    match=r"test.csv:1: header .* is not the "
    r"aliexpress header",
  ):
    convert.convert_aliexpress(source, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out" / "report.json")
