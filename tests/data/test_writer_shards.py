"""ShardedWriter's shard subsets (parallel writers) and compression level."""

import os

import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.data import writer as writer_lib


def _read(path):
  return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def test_two_writers_fill_one_split(tmp_path):
  out = str(tmp_path)
  # A stale shard set of another count must go; siblings' shards must stay.
  with writer_lib.ShardedWriter(out, "train", 3) as old:
    old.write(b"stale")
  a = writer_lib.ShardedWriter(out, "train", 4, shard_indices=[0, 2])
  b = writer_lib.ShardedWriter(out, "train", 4, shard_indices=[1, 3], compression_level=1)
  for i in range(6):
    a.write(f"a{i}".encode())
    b.write(f"b{i}".encode())
  a.close()
  b.close()
  names = sorted(n for n in os.listdir(out) if n.endswith(".gz"))
  assert names == [writer_lib.shard_name("train", i, 4) for i in range(4)]
  shard = lambda i: _read(os.path.join(out, writer_lib.shard_name("train", i, 4)))
  assert shard(0) == [b"a0", b"a2", b"a4"]
  assert shard(2) == [b"a1", b"a3", b"a5"]
  assert shard(1) == [b"b0", b"b2", b"b4"]
  assert shard(3) == [b"b1", b"b3", b"b5"]


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (
      {"shard_indices": [4]},
      r"shard_indices must be distinct values in \[0, "
      r"4\), got \[4\]",
    ),
    ({"shard_indices": [1, 1]}, "distinct"),
    ({"shard_indices": []}, "distinct"),
    (
      {"compression_level": 10},
      r"compression_level must be in \[0, 9\], got "
      "10",
    ),
  ],
)
def test_bad_arguments(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    writer_lib.ShardedWriter(str(tmp_path), "train", 4, **kwargs)
