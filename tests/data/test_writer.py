"""Crash-safe sharded writing and skip counting."""

import glob
import os

import pytest
import tensorflow as tf

from tafe_tf.data import writer


def _records(path):
  return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def test_close_publishes_all_records_round_robin(tmp_path):
  with writer.ShardedWriter(str(tmp_path), "train", num_shards=3) as w:
    for i in range(10):
      w.write(b"r%d" % i)
  files = sorted(glob.glob(str(tmp_path / "train-*")))
  assert [os.path.basename(f) for f in files] == [
    "train-00000-of-00003.tfrecord.gz",
    "train-00001-of-00003.tfrecord.gz",
    "train-00002-of-00003.tfrecord.gz",
  ]
  assert _records(files[0]) == [b"r0", b"r3", b"r6", b"r9"]
  assert sorted(sum((_records(f) for f in files), [])) == sorted(b"r%d" % i for i in range(10))
  assert not glob.glob(str(tmp_path / "*.incomplete"))


def test_crash_leaves_no_readable_shard(tmp_path):
  with pytest.raises(RuntimeError, match="boom"):
    with writer.ShardedWriter(str(tmp_path), "train", num_shards=2) as w:
      w.write(b"x")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []


def test_rewrite_with_fewer_shards_drops_stale_ones(tmp_path):
  with writer.ShardedWriter(str(tmp_path), "test", num_shards=4) as w:
    w.write(b"a")
  with writer.ShardedWriter(str(tmp_path), "test", num_shards=2) as w:
    w.write(b"b")
  names = sorted(os.listdir(tmp_path))
  assert names == ["test-00000-of-00002.tfrecord.gz", "test-00001-of-00002.tfrecord.gz"]


def test_skip_counter_counts_and_keeps_first_lines():
  counter = writer.SkipCounter(keep_first=2)
  for line in (3, 5, 9):
    counter.skip("bad_label", "/x/a.csv", line, "label 'q'")
  counter.skip("wrong_field_count", "/x/a.csv", 4, "5 fields")
  assert counter.total == 4
  assert counter.to_json() == {
    "skipped": {"bad_label": 3, "wrong_field_count": 1},
    "skipped_first_lines": {"bad_label": ["a.csv:3", "a.csv:5"], "wrong_field_count": ["a.csv:4"]},
  }


def test_strict_skip_counter_raises_with_file_and_line():
  counter = writer.SkipCounter(strict=True)
  with pytest.raises(
    ValueError,
    match=r"^/x/a.csv:7: field 'click' is 'q' "
    r"\(bad_label\)$",
  ):
    counter.skip("bad_label", "/x/a.csv", 7, "field 'click' is 'q'")


def test_report_is_written_atomically(tmp_path):
  writer.write_report(str(tmp_path), {"rows_read": 3})
  assert writer.read_report(str(tmp_path)) == {"rows_read": 3, "shards": {}}
  assert os.listdir(tmp_path) == ["report.json"]
  assert writer.read_report(str(tmp_path / "nothing")) is None
