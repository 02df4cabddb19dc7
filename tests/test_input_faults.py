"""Faults in a dataset directory: the reader refuses, naming the file.

report.json is the completion marker and lists every shard with its size;
a directory without it, a stale shard it does not list, a missing shard or a
truncated one is an error, never a silent partial read.
"""

import gzip
import os
import re
import shutil

import pytest

from tafe_tf import input_pipeline
from tafe_tf.data import convert, synthetic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_dataset(
    out,
    synthetic.SyntheticConfig(seed=3),
    num_train=600,
    num_validation=200,
    num_test=200,
    num_shards=2,
  )
  return out


def _copy(dataset, tmp_path):
  out = str(tmp_path / "copy")
  shutil.copytree(dataset, out)
  return out


def _count(data_dir, split):
  return sum(
    int(labels["click"].shape[0])
    for _, labels in input_pipeline.make_dataset(data_dir, split, batch_size=128)
  )


def test_a_complete_directory_reads_every_row(dataset):
  assert _count(dataset, "train") == 600
  assert input_pipeline.count_examples(dataset, "test") == 200


def test_no_report_means_unfinished(dataset, tmp_path):
  out = _copy(dataset, tmp_path)
  os.remove(os.path.join(out, "report.json"))
  with pytest.raises(
    FileNotFoundError,
    match=re.escape(f"{out} has no report.json") + ".*still running, was interrupted or failed",
  ):
    input_pipeline.make_dataset(out, "train", batch_size=8)


def test_a_report_without_a_manifest_is_from_an_older_writer(dataset, tmp_path):
  out = _copy(dataset, tmp_path)
  with open(os.path.join(out, "report.json"), "w") as f:
    f.write('{"rows_per_split": {"train": 600}}')
  with pytest.raises(ValueError, match="lists no shards"):
    input_pipeline.list_split_files(out, "train")


def test_truncated_shard_is_refused_by_name(dataset, tmp_path):
  # Before: a shard cut to half its bytes trained on about half its records
  # with exit code 0.
  out = _copy(dataset, tmp_path)
  shard = input_pipeline.list_split_files(out, "train")[0]
  data = open(shard, "rb").read()
  with open(shard, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(
    ValueError,
    match=re.escape(
      f"{shard}: {len(data) // 2} bytes, report.json says {len(data)} (truncated or replaced)"
    ),
  ):
    input_pipeline.make_dataset(out, "train", batch_size=8)


def test_stale_and_missing_shards_are_refused(dataset, tmp_path):
  out = _copy(dataset, tmp_path)
  stale = os.path.join(out, "test-00000-of-00003.tfrecord.gz")
  with gzip.open(stale, "wb"):
    pass
  with pytest.raises(
    ValueError, match=re.escape(stale) + ": a shard that report.json does not list"
  ):
    input_pipeline.list_split_files(out, "test")
  os.remove(stale)
  gone = input_pipeline.list_split_files(out, "test")[1]
  os.remove(gone)
  with pytest.raises(FileNotFoundError, match=re.escape(gone) + ": listed in report.json"):
    input_pipeline.count_examples(out, "test")


def _write_raw_ali_ccp(directory, split, rows):
  os.makedirs(directory, exist_ok=True)
  common = "\x01".join(["101\x021000\x031.0", "121\x022000\x031.0"])
  with open(os.path.join(directory, f"common_features_{split}.csv"), "w") as f:
    f.write(f"{'a' * 16},2,{common}\n")
  with open(os.path.join(directory, f"sample_skeleton_{split}.csv"), "w") as f:
    for i in range(rows):
      entries = "\x01".join([f"205\x02{3000 + i % 7}\x031.0", f"301\x02{4000 + i % 3}\x031.0"])
      f.write(f"{i + 1},{i % 2},0,{'a' * 16},2,{entries}\n")


def test_converting_again_without_a_split_removes_its_old_shards(tmp_path):
  # Before: a second conversion without the test files kept the old test-*
  # shards, and evaluation read the old data.
  source = str(tmp_path / "raw")
  _write_raw_ali_ccp(source, "train", 60)
  _write_raw_ali_ccp(source, "test", 20)
  out = str(tmp_path / "out")
  convert.convert_ali_ccp(source, out, min_count=0, num_shards=1)
  assert input_pipeline.count_examples(out, "test") == 20
  for name in ("sample_skeleton_test.csv", "common_features_test.csv"):
    os.remove(os.path.join(source, name))
  report = convert.convert_ali_ccp(source, out, min_count=0, num_shards=1)
  assert "test" not in report["rows_per_split"]
  assert not [n for n in os.listdir(out) if n.startswith("test-")]
  with pytest.raises(FileNotFoundError, match="no 'test' shards"):
    input_pipeline.make_dataset(out, "test", batch_size=8)
  assert _count(out, "train") == report["rows_per_split"]["train"]
