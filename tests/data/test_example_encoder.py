"""ExampleEncoder: its bytes are the proto that make_example builds."""

import numpy as np
import pytest

import tafe_tf  # noqa: F401
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf.data import example_encoder

K = features_lib.FieldKind

SCHEMA = features_lib.Schema(
    name="t",
    fields=(
        features_lib.FieldSpec("user", K.ID, lookup="vocabulary", num_ids=3,
                               vocabulary_file="vocab/user.txt"),
        features_lib.FieldSpec("hist", K.WEIGHTED_IDS, lookup="hash",
                               num_ids=10),
        features_lib.FieldSpec("price", K.DENSE, dim=3),
    ),
    steps=("click", "purchase"),
    has_sample_id=True)


def _expected(values, labels, sample_id):
  return features_lib.make_example(SCHEMA, values, dict(zip(SCHEMA.steps,
                                                           labels)),
                                   sample_id=sample_id)


@pytest.mark.parametrize("values", [
    {"user": 7, "hist": ([1, 2, 300000000000], [0.5, 1.0, 2.25]),
     "price": [0.1, -2.0, 3.5]},
    {"user": -1, "hist": ([], []), "price": [0.0, 0.0, 0.0]},
    {"user": 0, "hist": ([-5], [1.0]), "price": [1e-9, 1e9, -0.0]},
    {"user": 2**63 - 1, "hist": (list(range(100)), [0.1] * 100),
     "price": [1.0, 2.0, 3.0]},
    {"user": 3, "hist": (np.arange(50, dtype=np.int64),
                         np.linspace(0, 1, 50)), "price": np.ones(3)},
])
@pytest.mark.parametrize("labels", [(0, 0), (1, 0), (1, 1)])
def test_parts_parse_to_make_example_proto(values, labels):
  encoder = example_encoder.ExampleEncoder(SCHEMA)
  # Split the fields into two parts, as the Ali-CCP converter does.
  blob = encoder.example(encoder.encode_fields(values, ["hist"]),
                         encoder.encode_labels(labels),
                         encoder.encode_fields(values, ["user", "price"]),
                         encoder.encode_sample_id(b"s-1"))
  parsed = tf.train.Example.FromString(blob)
  assert parsed == _expected(values, labels, "s-1")
  # Memoized entries give the same bytes the second time.
  again = encoder.example(encoder.encode_fields(values, ["hist"]),
                          encoder.encode_labels(labels),
                          encoder.encode_fields(values, ["user", "price"]),
                          encoder.encode_sample_id(b"s-1"))
  assert again == blob


def test_parse_example_reads_encoded_bytes():
  encoder = example_encoder.ExampleEncoder(SCHEMA)
  rows = [{"user": 1, "hist": ([4, 5], [0.5, 0.25]), "price": [1, 2, 3]},
          {"user": -1, "hist": ([], []), "price": [4, 5, 6]}]
  blobs = [encoder.example(encoder.encode_fields(r), encoder.encode_labels(
      (1, 0)), encoder.encode_sample_id(b"x")) for r in rows]
  parsed = tf.io.parse_example(tf.constant(blobs),
                               features_lib.tf_example_spec(SCHEMA))
  assert parsed["user"].numpy().tolist() == [1, -1]
  assert parsed["hist"].to_list() == [[4, 5], []]
  assert parsed["hist_weight"].to_list() == [[0.5, 0.25], []]
  assert parsed["price"].numpy().tolist() == [[1, 2, 3], [4, 5, 6]]
  assert parsed["label/click"].numpy().tolist() == [1, 1]
  assert parsed["label/purchase"].numpy().tolist() == [0, 0]


def test_varint_matches_protobuf():
  for value in [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -2**63]:
    packed = tf.train.Int64List(value=[value]).SerializeToString()
    # Int64List bytes: tag 0x0a, length, varint.
    assert packed[2:] == example_encoder.varint(value), value


def test_errors_name_the_field():
  encoder = example_encoder.ExampleEncoder(SCHEMA)
  with pytest.raises(ValueError, match="field 'hist': 2 ids but 1 weights"):
    encoder.encode_fields({"hist": ([1, 2], [1.0])})
  with pytest.raises(ValueError, match="field 'price': expected 3 floats, got 2"):
    encoder.encode_fields({"price": [1.0, 2.0]})
