"""Raw Ali-CCP: round trip, vocabularies/OOV, every malformed kind, strict."""

import json
import os
import sys
import zlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readback  # noqa: E402  (tests/data helper)

from tafe_tf.data import (
  ali_ccp,  # noqa: E402
  convert,  # noqa: E402
)
from tafe_tf.data import writer as writer_lib  # noqa: E402

SKELETON = ali_ccp.SKELETON_FILES["train"]
COMMON = ali_ccp.COMMON_FILES["train"]

# Two users (common rows) and the impressions that use them; some fields are
# missing on purpose (user B has no 126 and no 109_14; s3 has no brand and no
# crosses).
USERS = {
  "aaaaaaaaaaaaaaaa": [
    ("101", 1001, 1.0),
    ("121", 2001, 1.0),
    ("122", 2101, 1.0),
    ("124", 2201, 1.0),
    ("125", 2301, 1.0),
    ("126", 2401, 1.0),
    ("127", 2501, 1.0),
    ("128", 2601, 1.0),
    ("129", 2701, 1.0),
    ("109_14", 3001, 0.69315),
    ("109_14", 3002, 1.09861),
    ("110_14", 3101, 2.0),
    ("127_14", 3201, 1.5),
    ("150_14", 3301, 0.5),
    ("150_14", 3302, 0.25),
  ],
  "bbbbbbbbbbbbbbbb": [
    ("101", 1002, 1.0),
    ("121", 2001, 1.0),
    ("122", 2102, 1.0),
    ("124", 2202, 1.0),
    ("125", 2302, 1.0),
    ("127", 2502, 1.0),
    ("128", 2602, 1.0),
    ("129", 2702, 1.0),
    ("110_14", 3102, 3.0),
    ("127_14", 3202, 1.0),
    ("150_14", 3303, 0.75),
  ],
}
IMPRESSIONS = [
  (
    "s1",
    1,
    1,
    "aaaaaaaaaaaaaaaa",
    [
      ("205", 5001, 1.0),
      ("206", 6001, 1.0),
      ("207", 7001, 1.0),
      ("210", 8001, 1.0),
      ("210", 8002, 1.0),
      ("216", 9001, 1.0),
      ("508", 10001, 0.69315),
      ("853", 11001, 1.38629),
      ("301", 12001, 1.0),
    ],
  ),
  (
    "s2",
    1,
    0,
    "aaaaaaaaaaaaaaaa",
    [
      ("205", 5002, 1.0),
      ("206", 6001, 1.0),
      ("207", 7002, 1.0),
      ("210", 8003, 1.0),
      ("216", 9002, 1.0),
      ("509", 10101, 0.5),
      ("702", 10201, 2.5),
      ("301", 12002, 1.0),
    ],
  ),
  (
    "s3",
    0,
    0,
    "bbbbbbbbbbbbbbbb",
    [
      ("205", 5001, 1.0),
      ("206", 6001, 1.0),
      ("207", 7001, 1.0),
      ("210", 8001, 1.0),
      ("301", 12001, 1.0),
    ],
  ),
  (
    "s4",
    0,
    0,
    "aaaaaaaaaaaaaaaa",
    [
      ("205", 5001, 1.0),
      ("206", 6002, 1.0),
      ("207", 7001, 1.0),
      ("210", 8002, 1.0),
      ("216", 9001, 1.0),
      ("301", 12003, 1.0),
    ],
  ),
]


def _write(
  directory, impressions=IMPRESSIONS, users=USERS, extra_common=(), extra_skeleton=(), split="train"
):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, ali_ccp.COMMON_FILES[split]), "w") as f:
    for key, entries in users.items():
      f.write(ali_ccp.format_common_line(key, entries))
    f.writelines(extra_common)
  with open(os.path.join(directory, ali_ccp.SKELETON_FILES[split]), "w") as f:
    for sample_id, click, buy, key, entries in impressions:
      f.write(ali_ccp.format_skeleton_line(sample_id, click, buy, key, entries))
    f.writelines(extra_skeleton)
  return directory


def _expected_row(sample_id, click, buy, key, entries):
  """What the converter must write for one impression."""
  names = {raw: (name, kind) for raw, name, kind, _ in ali_ccp.FIELDS}
  row = {}
  for _, name, kind, _ in ali_ccp.FIELDS:
    row[name] = -1 if kind == ali_ccp.ID else ([], [])
  for raw, feature_id, value in list(USERS[key]) + list(entries):
    name, kind = names[raw]
    if kind == ali_ccp.ID:
      row[name] = feature_id
    else:
      row[name][0].append(feature_id)
      row[name][1].append(value)
  for name, value in row.items():
    if isinstance(value, tuple):
      row[name] = (value[0], readback.f32(value[1]))
  row.update({"label/click": click, "label/purchase": click * buy, "sample_id": sample_id})
  return row


def test_round_trip_raw_to_tfrecords_and_back(tmp_path):
  raw = _write(os.path.join(tmp_path, "raw"))
  _write(
    raw,
    impressions=[("t1", 0, 0, "cccccccccccccccc", [("205", 5003, 1.0), ("301", 12001, 1.0)])],
    users={"cccccccccccccccc": [("101", 1003, 1.0)]},
    split="test",
  )
  out = os.path.join(tmp_path, "out")
  report = convert.convert_ali_ccp(raw, out, min_count=0, validation_fraction=0.0, num_shards=3)
  got = sorted(readback.read_split(out, "train"), key=lambda r: r["sample_id"])
  assert got == [_expected_row(*imp) for imp in IMPRESSIONS]
  test_rows = readback.read_split(out, "test")
  assert len(test_rows) == 1 and test_rows[0]["user_id"] == 1003
  assert test_rows[0]["item_id"] == 5003 and test_rows[0]["item_shop"] == -1
  assert test_rows[0]["hist_shop"] == ([], [])
  assert report["rows_read"] == 5 and report["rows_written"] == 5
  assert report["rows_per_split"] == {"train": 4, "validation": 0, "test": 1}
  assert report["positives_per_split"]["train"] == {"click": 2, "purchase": 1}
  assert report["skipped"] == {} and report["skipped_first_lines"] == {}
  assert report["common_rows"] == {COMMON: 2, "common_features_test.csv": 1}
  with open(os.path.join(out, writer_lib.REPORT_FILENAME)) as f:
    assert json.load(f) == report
  assert sorted(n for n in os.listdir(out) if n.endswith(".gz")) == [
    f"{s}-0000{i}-of-00003.tfrecord.gz" for s in ("test", "train", "validation") for i in range(3)
  ]


def test_vocabularies_count_train_impressions_and_drop_rare(tmp_path):
  raw = _write(os.path.join(tmp_path, "raw"))
  out = os.path.join(tmp_path, "out")
  # cache_rows=1 evicts user A between s2 and s4 (s3 is user B): its ids must
  # still count once per train impression (3 for A, 1 for B).
  convert.convert_ali_ccp(
    raw, out, min_count=1, validation_fraction=0.0, num_shards=1, cache_rows=1
  )
  assert readback.vocab(out, "user_id") == [1001]  # B: 1 impression <= 1
  assert readback.vocab(out, "user_profile") == [2001]  # 4 impressions
  assert readback.vocab(out, "item_id") == [5001]  # 3x; 5002 once
  assert readback.vocab(out, "item_intention") == [8001, 8002]  # 2x each
  assert readback.vocab(out, "item_brand") == [9001]  # 2x; missing -1 never
  assert readback.vocab(out, "hist_category") == [3001, 3002]  # A only: 3x
  assert readback.vocab(out, "cross_category") == []
  schema = json.load(open(os.path.join(out, "schema.json")))
  spec = {f["name"]: f for f in schema["fields"]}
  assert spec["user_id"]["num_ids"] == 1
  assert spec["user_id"]["vocabulary_file"] == "vocab/user_id.txt"
  assert spec["cross_category"]["num_ids"] == 0  # empty: every id is OOV
  assert schema["user_field"] == "user_id" and schema["has_sample_id"]
  report = json.load(open(os.path.join(out, "report.json")))
  assert "cross_category" in report["empty_vocabularies"]
  assert report["common_row_parses"] == {COMMON: 3}  # A, B, A again


def test_validation_holds_out_whole_visits_by_the_hashed_common_key(tmp_path):
  keys = [f"visit{v:011d}" for v in range(40)]
  users = {key: [("101", 1000 + v, 1.0)] for v, key in enumerate(keys)}
  impressions = [(f"id{i}", 0, 0, keys[i % 40], [("205", 5000 + i % 3, 1.0)]) for i in range(400)]
  raw = _write(os.path.join(tmp_path, "raw"), impressions=impressions, users=users)
  out = os.path.join(tmp_path, "out")
  report = convert.convert_ali_ccp(raw, out, min_count=0, validation_fraction=0.25, num_shards=2)
  held_visits = {k for k in keys if zlib.crc32(k.encode()) < 0.25 * 2**32}
  held = {s for s, _, _, key, _ in impressions if key in held_visits}
  validation = {r["sample_id"] for r in readback.read_split(out, "validation")}
  train = {r["sample_id"] for r in readback.read_split(out, "train")}
  # No visit straddles the splits (its rows share what no feature carries).
  assert validation == held and 3 < len(held_visits) < 20
  assert train == {s for s, *_ in impressions} - held
  assert report["rows_per_split"] == {"train": len(train), "validation": len(validation)}


BAD_SKELETON = [
  ("s5,0,0,aaaaaaaaaaaaaaaa,1\n", "wrong_field_count"),
  ("s6,x,0,aaaaaaaaaaaaaaaa,1,205\x025001\x031\n", "bad_label"),
  ("s7,0,0,aaaaaaaaaaaaaaaa,two,205\x025001\x031\n", "bad_feature_num"),
  ("s8,0,0,aaaaaaaaaaaaaaaa,2,205\x025001\x031\n", "bad_feature_num"),
  ("s9,0,0,aaaaaaaaaaaaaaaa,1,205\x025001\n", "bad_entry"),
  ("s10,0,0,aaaaaaaaaaaaaaaa,1,205\x02abc\x031\n", "bad_id"),
  ("s11,0,0,aaaaaaaaaaaaaaaa,1,205\x025001\x03nan\n", "bad_value"),
  ("s12,0,0,aaaaaaaaaaaaaaaa,1,999\x025001\x031\n", "unknown_field"),
  ("s13,0,0,aaaaaaaaaaaaaaaa,2,205\x025001\x031\x01205\x025002\x031\n", "repeated_single_field"),
  ("s14,0,0,aaaaaaaaaaaaaaaa,1,101\x021001\x031\n", "field_in_both_files"),
  ("s15,0,0,ffffffffffffffff,1,205\x025001\x031\n", "unknown_common_key"),
  ("s16,0,0,dddddddddddddddd,1,205\x025001\x031\n", "bad_common_row"),
  ("s17,0,0,dddddddddddddddd,1,205\x025001\x031\n", "bad_common_row"),
  ("s18,0,0,eeeeeeeeeeeeeeee,1,205\x025001\x031\n", "bad_common_row"),
  ("s19,0,1,aaaaaaaaaaaaaaaa,1,205\x025001\x031\n", "buy_without_click"),
  ("\n", "wrong_field_count"),
]
BAD_COMMON = [
  ("dddddddddddddddd,1,101\x02x\x031\n", "common_bad_id"),
  ("eeeeeeeeeeeeeeee,2,101\x021\x031\n", "common_bad_feature_num"),
  ("aaaaaaaaaaaaaaaa,1,101\x021\x031\n", "common_duplicate_key"),
  ("gggggggggggggggg,1\n", "common_wrong_field_count"),
]


def test_every_malformed_kind_is_skipped_and_counted(tmp_path):
  raw = _write(
    os.path.join(tmp_path, "raw"),
    extra_common=[line for line, _ in BAD_COMMON],
    extra_skeleton=[line for line, _ in BAD_SKELETON],
  )
  out = os.path.join(tmp_path, "out")
  report = convert.convert_ali_ccp(raw, out, min_count=0, validation_fraction=0.0, num_shards=2)
  expected = {}
  for _, reason in BAD_SKELETON + BAD_COMMON:
    expected[reason] = expected.get(reason, 0) + 1
  assert report["skipped"] == expected
  first = report["skipped_first_lines"]
  base = len(IMPRESSIONS)
  assert first["bad_feature_num"] == [f"{SKELETON}:{base + 3}", f"{SKELETON}:{base + 4}"]
  assert first["wrong_field_count"] == [f"{SKELETON}:{base + 1}", f"{SKELETON}:{base + 16}"]
  assert first["bad_common_row"] == [
    f"{SKELETON}:{base + 12}",
    f"{SKELETON}:{base + 13}",
    f"{SKELETON}:{base + 14}",
  ]
  # A bad common row counts once, at its own line, however often it is used.
  assert first["common_bad_id"] == [f"{COMMON}:3"]
  assert first["common_duplicate_key"] == [f"{COMMON}:5"]
  assert report["rows_read"] == len(IMPRESSIONS) + len(BAD_SKELETON)
  assert report["rows_written"] == len(IMPRESSIONS)
  got = sorted(readback.read_split(out, "train"), key=lambda r: r["sample_id"])
  assert got == [_expected_row(*imp) for imp in IMPRESSIONS]


@pytest.mark.parametrize(
  "bad_line, message",
  [
    (
      "s9,0,0,aaaaaaaaaaaaaaaa,1,205\x025001\n",
      "sample_skeleton_train.csv:5: entry '205\\x025001' is not field\\x02id\\x03value (bad_entry)",
    ),
    (
      "s19,0,1,aaaaaaaaaaaaaaaa,1,205\x025001\x031\n",
      "sample_skeleton_train.csv:5: purchase=1 but click=0 (buy_without_click)",
    ),
    (
      "s16,0,0,dddddddddddddddd,1,205\x025001\x031\n",
      "common_features_train.csv:3: field 101 (user_id): id 'x' is not a non-negative "
      "integer (digits only) (common_bad_id)",
    ),
  ],
)
def test_strict_raises_naming_file_line_and_field(tmp_path, bad_line, message):
  raw = _write(
    os.path.join(tmp_path, "raw"), extra_skeleton=[bad_line], extra_common=[BAD_COMMON[0][0]]
  )
  out = os.path.join(tmp_path, "out")
  with pytest.raises(ValueError) as error:
    convert.convert_ali_ccp(raw, out, min_count=0, num_shards=2, strict=True)
  assert str(error.value) == os.path.join(raw, "") + message
  # Nothing half-written is left: no shards, no report.
  assert not [n for n in os.listdir(out) if "tfrecord" in n or n.startswith("report")]


def test_strict_stops_at_index_time_problems(tmp_path):
  raw = _write(os.path.join(tmp_path, "raw"), extra_common=[BAD_COMMON[2][0]])
  with pytest.raises(
    ValueError,
    match=r"common_features_train.csv:3: "
    r"common_feature_index already used on an earlier line "
    r"\(common_duplicate_key\)",
  ):
    convert.convert_ali_ccp(raw, os.path.join(tmp_path, "out"), strict=True)


def test_missing_files_are_named(tmp_path):
  os.makedirs(tmp_path / "raw")
  with pytest.raises(
    FileNotFoundError,
    match="missing input file.*sample_skeleton_train.csv, common_features_train.csv",
  ):
    convert.convert_ali_ccp(str(tmp_path / "raw"), str(tmp_path / "out"))
  _write(str(tmp_path / "raw"))
  open(tmp_path / "raw" / ali_ccp.SKELETON_FILES["test"], "w").close()
  with pytest.raises(FileNotFoundError, match="common_features_test.csv"):
    convert.convert_ali_ccp(str(tmp_path / "raw"), str(tmp_path / "out"))


def test_a_new_run_replaces_the_previous_dataset(tmp_path):
  raw = _write(os.path.join(tmp_path, "raw"))
  out = os.path.join(tmp_path, "out")
  convert.convert_ali_ccp(raw, out, min_count=0, num_shards=4)
  convert.convert_ali_ccp(raw, out, min_count=0, num_shards=2, validation_fraction=0.0)
  shards = sorted(n for n in os.listdir(out) if n.endswith(".gz"))
  assert shards == [
    f"{s}-0000{i}-of-00002.tfrecord.gz" for s in ("train", "validation") for i in range(2)
  ]
  assert len(readback.read_split(out, "train")) == len(IMPRESSIONS)


def test_parallel_workers_write_the_same_dataset(tmp_path):
  from tafe_tf.benchmarks import data_throughput  # the realistic generator

  raw = os.path.join(tmp_path, "raw")
  data_throughput.write_raw_ali_ccp(raw, 3000, impressions_per_user=30, history_entries=40, seed=3)
  # Bad lines in both halves: skips must merge in line order.
  path = os.path.join(raw, SKELETON)
  lines = open(path).readlines()
  for at in (2600, 1800, 10):
    lines.insert(at, "bad line\n")
  open(path, "w").writelines(lines)
  one, two = os.path.join(tmp_path, "one"), os.path.join(tmp_path, "two")
  r1 = convert.convert_ali_ccp(raw, one, min_count=2, num_shards=4, workers=1)
  r2 = convert.convert_ali_ccp(
    raw, two, min_count=2, num_shards=4, workers=2, min_bytes_per_worker=1
  )
  for key in (
    "rows_read",
    "rows_written",
    "rows_per_split",
    "skipped",
    "skipped_first_lines",
    "positives_per_split",
    "vocabulary_sizes",
  ):
    assert r1[key] == r2[key], key
  assert r2["skipped_first_lines"]["wrong_field_count"] == [
    f"{SKELETON}:11",
    f"{SKELETON}:1802",
    f"{SKELETON}:2603",
  ]
  assert r2["common_row_parses"][COMMON] >= r1["common_row_parses"][COMMON]
  for split in ("train", "validation"):
    a = sorted(readback.read_split(one, split), key=lambda r: r["sample_id"])
    b = sorted(readback.read_split(two, split), key=lambda r: r["sample_id"])
    assert a == b and len(a) == r1["rows_per_split"][split]
  for name in os.listdir(os.path.join(one, "vocab")):
    assert readback.vocab(one, name[:-4]) == readback.vocab(two, name[:-4])
