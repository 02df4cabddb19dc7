"""The feature schema: validation, JSON round trip, serialized-example contract."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tafe_tf import example_codec
from tafe_tf import features as F


def _schema(**kwargs):
  fields = [
    F.FieldSpec("user_id", "id", "identity", num_ids=10),
    F.FieldSpec("hist", "weighted_ids", "vocabulary", num_ids=3, vocabulary_file="vocab/hist.txt"),
    F.FieldSpec("price", "dense", dim=2),
  ]
  defaults = dict(
    name="toy",
    fields=fields,
    steps=("click", "purchase"),
    user_field="user_id",
    has_sample_id=True,
    has_oracle=True,
  )
  defaults.update(kwargs)
  return F.Schema(**defaults)


def test_schema_json_round_trip(tmp_path):
  schema = _schema()
  path = schema.save(str(tmp_path))
  assert os.path.basename(path) == "schema.json"
  loaded = F.Schema.load(str(tmp_path))
  assert loaded == schema
  assert loaded.vocabulary_path(loaded.field("hist")) == os.path.join(
    str(tmp_path), "vocab/hist.txt"
  )
  assert json.load(open(path))["steps"] == ["click", "purchase"]


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(steps=("click",)), "needs at least 2 steps"),
    (dict(steps=("click", "click")), "duplicate step names"),
    (dict(user_field="nobody"), "user_field 'nobody' is not a field"),
    (dict(fields=[]), "has no fields"),
  ],
)
def test_schema_rejects_bad_declarations(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _schema(**kwargs)


def test_field_rejects_bad_declarations():
  with pytest.raises(ValueError, match="needs a lookup"):
    F.FieldSpec("x", "id")
  with pytest.raises(ValueError, match="needs vocabulary_file"):
    F.FieldSpec("x", "id", "vocabulary", num_ids=3)
  with pytest.raises(ValueError, match="num_ids must be >= 1, got 0"):
    F.FieldSpec("x", "id", "hash", num_ids=0)
  with pytest.raises(ValueError, match="num_ids must be >= 0, got -1"):
    F.FieldSpec("x", "id", "vocabulary", num_ids=-1, vocabulary_file="v.txt")
  # An empty vocabulary (every training id rare) is legal: all ids are OOV.
  assert F.FieldSpec("x", "id", "vocabulary", num_ids=0, vocabulary_file="v.txt").num_rows == 1
  with pytest.raises(ValueError, match="use letters"):
    F.FieldSpec("1x", "dense")
  with pytest.raises(ValueError, match="is used twice"):
    _schema(
      fields=[F.FieldSpec("a", "weighted_ids", "hash", num_ids=4), F.FieldSpec("a_weight", "dense")]
    )


def test_load_names_the_file_on_bad_json(tmp_path):
  path = tmp_path / "schema.json"
  path.write_text("{not json")
  with pytest.raises(ValueError, match=str(path)):
    F.Schema.load(str(path))
  with pytest.raises(FileNotFoundError, match="no schema file"):
    F.Schema.load(str(tmp_path / "missing"))


def test_example_round_trip_through_parse_example():
  schema = _schema()
  rows = [
    dict(
      features={"user_id": 3, "hist": ([7, 8], [0.5, 2.0]), "price": [1.5, -2.0]},
      labels={"click": 1, "purchase": 1},
      sample_id="s1",
      oracle={"click": 0.25, "purchase": 0.5},
    ),
    dict(
      features={"user_id": 9, "hist": ([], []), "price": [0.0, 3.0]},
      labels={"click": 0, "purchase": 0},
      sample_id="s2",
      oracle={"click": 0.125, "purchase": 0.75},
    ),
  ]
  serialized = [example_codec.make_example(schema, **r).SerializeToString() for r in rows]
  parsed = tf.io.parse_example(serialized, F.tf_example_spec(schema))
  features, labels = F.split_labels(parsed, schema)
  np.testing.assert_array_equal(features["user_id"], [3, 9])
  assert features["hist"].to_list() == [[7, 8], []]
  assert features["hist_weight"].to_list() == [[0.5, 2.0], []]
  np.testing.assert_allclose(features["price"], [[1.5, -2.0], [0.0, 3.0]])
  np.testing.assert_array_equal(labels["click"], [1.0, 0.0])
  np.testing.assert_array_equal(labels["purchase"], [1.0, 0.0])
  assert labels["click"].dtype == tf.float32
  assert features["sample_id"].numpy().tolist() == [b"s1", b"s2"]
  np.testing.assert_allclose(features["oracle/purchase"], [0.5, 0.75])
  padded = F.to_dense_padded(features, schema)
  np.testing.assert_array_equal(padded["hist"], [[7, 8], [F.PAD_ID, F.PAD_ID]])
  np.testing.assert_array_equal(padded["hist_weight"], [[0.5, 2.0], [0, 0]])


def test_serving_signature_and_dummy_batch_agree():
  schema = _schema()
  sig = F.serving_input_signature(schema)
  assert sorted(sig) == sorted(F.model_feature_keys(schema))
  assert sig["hist"].shape.as_list() == [None, None]
  assert sig["hist"].dtype == tf.int64
  assert sig["price"].shape.as_list() == [None, 2]
  batch = F.dummy_batch(schema, batch_size=3)
  for key, spec in sig.items():
    assert spec.is_compatible_with(batch[key]), key


@pytest.mark.parametrize(
  "path", ["../../../x.txt", "vocab/../../x.txt", "/etc/passwd", "\\\\share\\x.txt", ".", ""]
)
def test_vocabulary_files_must_stay_inside_the_dataset_dir(tmp_path, path):
  # A schema.json with such a path made training copy a file outside the model
  # dir, and export pack any readable file into its assets.
  message = (
    f"field 'hist': vocabulary_file {path!r} must be a relative path inside the dataset directory"
  )
  hist = F.FieldSpec(
    "hist", "weighted_ids", "vocabulary", num_ids=3, vocabulary_file=path or "v.txt"
  )
  if not path:
    hist = {**hist.to_json(), "vocabulary_file": ""}
    with pytest.raises(ValueError):
      F.FieldSpec(**hist)
    return
  with pytest.raises(ValueError, match=re.escape(message)):
    _schema(fields=[hist])
  good = _schema()
  obj = good.to_json()
  obj["fields"][1]["vocabulary_file"] = path
  (tmp_path / "schema.json").write_text(json.dumps(obj))
  with pytest.raises(ValueError, match=re.escape(message)):
    F.Schema.load(str(tmp_path))
