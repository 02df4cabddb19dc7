"""TFRecords -> (features, labels) batches, driven by the schema."""

import numpy as np
import pytest
import tensorflow as tf

from tafe_tf import example_codec, input_pipeline
from tafe_tf import features as F
from tafe_tf.data import writer


def _write_toy_dataset(directory, num_rows=10, num_shards=3):
  schema = F.Schema(
    name="toy",
    fields=[
      F.FieldSpec("user_id", "id", "identity", num_ids=100),
      F.FieldSpec("hist", "weighted_ids", "hash", num_ids=50),
      F.FieldSpec("price", "dense", dim=1),
    ],
    steps=("click", "cart", "purchase"),
    user_field="user_id",
    has_sample_id=True,
    has_oracle=True,
  )
  schema.save(directory)
  with writer.ShardedWriter(directory, "train", num_shards) as w:
    for i in range(num_rows):
      clicked = i % 2
      ex = example_codec.make_example(
        schema,
        {"user_id": i, "hist": (list(range(i % 4)), [1.0] * (i % 4)), "price": [float(i)]},
        {
          "click": clicked,
          "cart": clicked * (i % 3 == 1),
          "purchase": clicked * (i % 3 == 1) * (i % 5 == 1),
        },
        sample_id=f"id{i}",
        oracle={"click": 0.5, "cart": 0.25, "purchase": 0.125},
      )
      w.write(ex.SerializeToString())
  writer.write_report(directory, {"rows_per_split": {"train": num_rows}})
  return schema


def _collect(ds):
  users, hists, labels = [], [], []
  for feats, labs in ds:
    users.extend(feats["user_id"].numpy().tolist())
    hists.extend(
      feats["hist"].to_list()
      if isinstance(feats["hist"], tf.RaggedTensor)
      else feats["hist"].numpy().tolist()
    )
    labels.extend(zip(*(labs[s].numpy().tolist() for s in ("click", "cart", "purchase"))))
  return users, hists, labels


def test_reads_every_row_once_with_cumulative_labels(tmp_path):
  _write_toy_dataset(str(tmp_path))
  ds = input_pipeline.make_dataset(str(tmp_path), "train", batch_size=4)
  users, hists, labels = _collect(ds)
  assert sorted(users) == list(range(10))
  for user, hist, (c, a, p) in zip(users, hists, labels):
    assert hist == list(range(user % 4))
    assert c >= a >= p
    assert c == user % 2
  assert input_pipeline.count_examples(str(tmp_path), "train") == 10


def test_metadata_only_on_request_and_dense_padding(tmp_path):
  _write_toy_dataset(str(tmp_path))
  feats, _ = next(iter(input_pipeline.make_dataset(str(tmp_path), "train", batch_size=10)))
  assert "sample_id" not in feats and "oracle/click" not in feats
  feats, _ = next(
    iter(
      input_pipeline.make_dataset(
        str(tmp_path), "train", batch_size=10, with_metadata=True, dense_padded=True
      )
    )
  )
  assert feats["sample_id"].dtype == tf.string
  np.testing.assert_allclose(feats["oracle/cart"], 0.25)
  hist = feats["hist"].numpy()
  assert hist.shape == (10, 3)
  lengths = (hist != F.PAD_ID).sum(axis=1)
  np.testing.assert_array_equal(lengths, feats["user_id"].numpy() % 4)


def test_seeded_shuffle_is_reproducible_and_complete(tmp_path):
  _write_toy_dataset(str(tmp_path), num_rows=40)

  def order(seed):
    ds = input_pipeline.make_dataset(
      str(tmp_path), "train", batch_size=8, shuffle=True, seed=seed, shuffle_buffer=40
    )
    return _collect(ds)[0]

  first = order(1)
  assert first == order(1)
  assert sorted(first) == list(range(40))
  assert first != sorted(first)


def test_input_context_shards_files(tmp_path):
  _write_toy_dataset(str(tmp_path), num_rows=12, num_shards=2)
  seen = []
  for pipeline_id in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id)
    seen.append(
      _collect(
        input_pipeline.make_dataset(str(tmp_path), "train", batch_size=5, input_context=ctx)
      )[0]
    )
  assert sorted(seen[0] + seen[1]) == list(range(12))
  assert not set(seen[0]) & set(seen[1])


def test_missing_split_names_the_pattern(tmp_path):
  _write_toy_dataset(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no 'test' shards"):
    input_pipeline.make_dataset(str(tmp_path), "test", batch_size=4)
