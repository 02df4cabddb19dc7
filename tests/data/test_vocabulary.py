"""IdCounter and vocabulary files."""

import collections
import os
import pickle

import numpy as np
import pytest

from tafe_tf.data import vocabulary


def test_counts_match_collections_counter_across_folds():
  rng = np.random.default_rng(0)
  ids = rng.zipf(1.5, 20_000).astype(np.int64) - 5  # negatives too
  counter = vocabulary.IdCounter(buffer_size=777)  # folds many times
  expected = collections.Counter()
  for start in range(0, ids.size, 13):
    chunk = ids[start : start + 13].tolist()
    counter.add(chunk)
    expected.update(chunk)
  counter.add_weighted(np.array([3, 3, 1000]), 5)
  expected.update({3: 10, 1000: 5})
  got_ids, got_counts = counter.counts()
  assert got_ids.tolist() == sorted(expected)
  assert dict(zip(got_ids.tolist(), got_counts.tolist())) == dict(expected)


def test_merge_and_pickle_keep_counts():
  a, b = vocabulary.IdCounter(), vocabulary.IdCounter()
  a.add([1, 2, 2])
  b.add([2, 3])
  b.add_weighted([3], 4)
  b = pickle.loads(pickle.dumps(b))
  a.merge(b)
  ids, counts = a.counts()
  assert dict(zip(ids.tolist(), counts.tolist())) == {1: 1, 2: 3, 3: 5}


def test_select_vocabulary_min_count_exclude_and_order():
  counter = vocabulary.IdCounter()
  counter.add([5] * 3 + [7] * 3 + [9] * 4 + [0] * 9 + [-1] * 20 + [11])
  assert vocabulary.select_vocabulary(counter, 0, (-1,)).tolist() == [0, 9, 5, 7, 11]
  # Ids seen <= 3 times drop out; ties by id ascending.
  assert vocabulary.select_vocabulary(counter, 3, (-1, 0)).tolist() == [9]
  assert vocabulary.select_vocabulary(counter, 2, (-1,)).tolist() == [0, 9, 5, 7]
  with pytest.raises(ValueError, match="min_count must be >= 0, got -1"):
    vocabulary.select_vocabulary(counter, -1)


def test_write_read_round_trip_and_empty(tmp_path):
  path = os.path.join(tmp_path, "vocab", "f.txt")
  vocabulary.write_vocabulary(path, np.array([42, -3, 7]))
  assert open(path).read() == "42\n-3\n7\n"
  assert vocabulary.read_vocabulary(path).tolist() == [42, -3, 7]
  vocabulary.write_vocabulary(path, np.array([], np.int64))
  assert open(path).read() == ""
  assert vocabulary.read_vocabulary(path).tolist() == []


def test_read_vocabulary_names_bad_line(tmp_path):
  path = os.path.join(tmp_path, "v.txt")
  with open(path, "w") as f:
    f.write("1\n2\nabc\n")
  with pytest.raises(
    ValueError,
    match=r"v.txt:3: vocabulary entry 'abc' is "
    "not an integer id",
  ):
    vocabulary.read_vocabulary(path)


def test_write_vocabularies_sizes(tmp_path):
  a, b = vocabulary.IdCounter(), vocabulary.IdCounter()
  a.add([1, 1, 2])
  b.add([-1, -1])
  sizes = vocabulary.write_vocabularies(
    str(tmp_path), {"a": a, "b": b}, min_count=1, exclude={"b": (-1,)}
  )
  assert sizes == {"a": 1, "b": 0}
  assert open(os.path.join(tmp_path, "vocab", "a.txt")).read() == "1\n"
