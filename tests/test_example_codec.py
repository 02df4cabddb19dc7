"""The Example codec: what it writes parses back to exactly what went in.

Both encoders (row by row and column-wise) are checked against
``tf.io.parse_example`` with :func:`tafe_tf.features.tf_example_spec`, against
a reference proto built with the protobuf API, and against each other (the
same bytes for the same rows).
"""

import numpy as np
import pytest
import tensorflow as tf

from tafe_tf import example_codec
from tafe_tf import features as features_lib
from tafe_tf.data import synthetic

K = features_lib.FieldKind

SCHEMA = features_lib.Schema(
  name="t",
  fields=(
    features_lib.FieldSpec(
      "user", K.ID, lookup="vocabulary", num_ids=3, vocabulary_file="vocab/user.txt"
    ),
    features_lib.FieldSpec("hist", K.WEIGHTED_IDS, lookup="hash", num_ids=10),
    features_lib.FieldSpec("price", K.DENSE, dim=3),
    features_lib.FieldSpec("shop", K.ID, lookup="hash", num_ids=10),
  ),
  steps=("click", "cart", "purchase"),
  has_sample_id=True,
  has_oracle=True,
)

# Every case the wire format distinguishes: empty lists, negative and extreme
# ids (10-byte varints), lists past the struct/numpy and the Python/C++ packing
# thresholds, an empty and a non-ASCII sample id. Floats are float32 values, so
# a parse gives them back exactly.
ROWS = [
  dict(
    values={
      "user": 7,
      "hist": ([1, 2, 300_000_000_000], [0.5, 1.0, 2.25]),
      "price": [0.125, -2.0, 3.5],
      "shop": 0,
    },
    labels=(1, 1, 0),
    sample_id="train-00000001",
    oracle=(0.25, 0.5, 0.75),
  ),
  dict(
    values={"user": -1, "hist": ([], []), "price": [0.0, 0.0, -0.0], "shop": -(2**63)},
    labels=(0, 0, 0),
    sample_id="",
    oracle=(0.0, 1.0, 0.5),
  ),
  dict(
    values={"user": 2**63 - 1, "hist": ([-5], [1.0]), "price": [1e9, -1e-9, 3.0], "shop": 127},
    labels=(1, 0, 0),
    sample_id="é-2",
    oracle=(1e-8, 0.125, 0.999),
  ),
  dict(
    values={
      "user": 128,
      "hist": (list(range(-150, 150)), [i / 8 for i in range(300)]),
      "price": [1.0, 2.0, 3.0],
      "shop": 300,
    },
    labels=(1, 1, 1),
    sample_id="s" * 300,
    oracle=(0.5, 0.5, 0.5),
  ),
]


def _f32(values):
  return np.asarray(values, np.float32).tolist()


def _encode_row(encoder, row):
  return encoder.encode_row(row["values"], row["labels"], row["sample_id"].encode(), row["oracle"])


def _batch(rows):
  """The rows as the numpy columns of :func:`example_codec.serialize_batch`."""
  batch = {}
  for f in SCHEMA.fields:
    if f.kind == K.WEIGHTED_IDS:
      lengths = [len(r["values"][f.name][0]) for r in rows]
      splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
      for key, dtype, part in ((f.name, np.int64, 0), (f.weight_key, np.float32, 1)):
        batch[key] = example_codec.RaggedColumn(
          np.asarray([v for r in rows for v in r["values"][f.name][part]], dtype), splits
        )
    else:
      batch[f.name] = np.asarray(
        [r["values"][f.name] for r in rows], np.int64 if f.kind == K.ID else np.float32
      )
  for t, step in enumerate(SCHEMA.steps):
    batch[features_lib.label_key(step)] = np.asarray([r["labels"][t] for r in rows], np.int64)
    batch[features_lib.oracle_key(step)] = np.asarray([r["oracle"][t] for r in rows], np.float64)
  batch[features_lib.SAMPLE_ID_KEY] = np.asarray([r["sample_id"] for r in rows])
  return batch


def _reference(row):
  """The row as a proto built field by field with the protobuf API."""

  def ints(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

  def floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=v))

  values = row["values"]
  feats = {
    "user": ints([values["user"]]),
    "shop": ints([values["shop"]]),
    "hist": ints(values["hist"][0]),
    "hist_weight": floats(values["hist"][1]),
    "price": floats(values["price"]),
    "sample_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["sample_id"].encode()])),
  }
  for t, step in enumerate(SCHEMA.steps):
    feats[features_lib.label_key(step)] = ints([row["labels"][t]])
    feats[features_lib.oracle_key(step)] = floats([row["oracle"][t]])
  return tf.train.Example(features=tf.train.Features(feature=feats))


def _check_parsed(records, rows):
  parsed = tf.io.parse_example(tf.constant(records), features_lib.tf_example_spec(SCHEMA))
  assert parsed["user"].numpy().tolist() == [r["values"]["user"] for r in rows]
  assert parsed["shop"].numpy().tolist() == [r["values"]["shop"] for r in rows]
  assert parsed["hist"].to_list() == [r["values"]["hist"][0] for r in rows]
  assert parsed["hist_weight"].to_list() == [_f32(r["values"]["hist"][1]) for r in rows]
  assert parsed["price"].numpy().tolist() == [_f32(r["values"]["price"]) for r in rows]
  for t, step in enumerate(SCHEMA.steps):
    assert parsed[features_lib.label_key(step)].numpy().tolist() == [r["labels"][t] for r in rows]
    assert parsed[features_lib.oracle_key(step)].numpy().tolist() == _f32(
      [r["oracle"][t] for r in rows]
    )
  assert parsed["sample_id"].numpy().tolist() == [r["sample_id"].encode() for r in rows]


def test_row_encoder_parses_to_the_input_values():
  encoder = example_codec.ExampleEncoder(SCHEMA)
  _check_parsed([_encode_row(encoder, r) for r in ROWS], ROWS)


def test_batch_encoder_parses_to_the_input_values():
  _check_parsed(example_codec.serialize_batch(SCHEMA, _batch(ROWS)), ROWS)


def test_row_and_batch_encoders_write_the_same_bytes():
  encoder = example_codec.ExampleEncoder(SCHEMA)
  assert example_codec.serialize_batch(SCHEMA, _batch(ROWS)) == [
    _encode_row(encoder, r) for r in ROWS
  ]
  # One row alone: a batch of one is no special case.
  assert example_codec.serialize_batch(SCHEMA, _batch(ROWS[1:2])) == [_encode_row(encoder, ROWS[1])]


@pytest.mark.parametrize("num_steps", [2, 4])
def test_row_and_batch_encoders_agree_on_generated_rows(num_steps):
  config = synthetic.SyntheticConfig(
    num_steps=num_steps, num_users=300, num_items=200, num_categories=20, empty_history_rate=0.3
  )
  schema = synthetic.synthetic_schema(config)
  batch = next(synthetic.generate_batches(config, "train", 300))
  assert (batch["hist_shop"].row_lengths == 0).any()
  encoder = example_codec.ExampleEncoder(schema)
  expected = []
  for i in range(300):
    values = {}
    for f in schema.fields:
      column = batch[f.name]
      values[f.name] = (
        (column.row(i), batch[f.weight_key].row(i)) if f.kind == K.WEIGHTED_IDS else column[i]
      )
    expected.append(
      encoder.encode_row(
        values,
        [batch[features_lib.label_key(s)][i] for s in schema.steps],
        batch[features_lib.SAMPLE_ID_KEY][i].encode(),
        [batch[features_lib.oracle_key(s)][i] for s in schema.steps],
      )
    )
  assert example_codec.serialize_batch(schema, batch) == expected


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
def test_parts_in_any_order_parse_to_the_reference_proto(row):
  encoder = example_codec.ExampleEncoder(SCHEMA)
  # The fields in two parts around the labels, as the Ali-CCP converter does.
  values = row["values"]

  def blob():
    return encoder.example(
      encoder.encode_fields(values, ["hist"]),
      encoder.encode_labels(row["labels"]),
      encoder.encode_fields(values, ["user", "price", "shop"]),
      encoder.encode_sample_id(row["sample_id"].encode()),
      encoder.encode_oracle(row["oracle"]),
    )

  first = blob()
  assert tf.train.Example.FromString(first) == _reference(row)
  assert blob() == first  # memoized entries give the same bytes again


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
def test_make_example_is_the_reference_proto(row):
  example = example_codec.make_example(
    SCHEMA,
    row["values"],
    dict(zip(SCHEMA.steps, row["labels"])),
    sample_id=row["sample_id"],
    oracle=dict(zip(SCHEMA.steps, row["oracle"])),
  )
  assert example == _reference(row)


def test_varint_matches_protobuf():
  for value in [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)]:
    packed = tf.train.Int64List(value=[value]).SerializeToString()
    # Int64List bytes: tag 0x0a, length, varint.
    assert packed[2:] == example_codec.varint(value), value


def test_encoder_errors_name_the_field():
  encoder = example_codec.ExampleEncoder(SCHEMA)
  with pytest.raises(ValueError, match="field 'hist': 2 ids but 1 weights"):
    encoder.encode_fields({"hist": ([1, 2], [1.0])})
  with pytest.raises(ValueError, match="field 'price': expected 3 floats, got 2"):
    encoder.encode_fields({"price": [1.0, 2.0]})


def test_make_example_rejects_inconsistent_rows():
  good = ROWS[0]["values"]
  labels = {"click": 0, "cart": 0, "purchase": 0}
  oracle = {"click": 0.5, "cart": 0.5, "purchase": 0.5}
  with pytest.raises(ValueError, match="label 'purchase' is 1 but an earlier step is 0"):
    example_codec.make_example(SCHEMA, good, dict(labels, click=1, purchase=1), oracle=oracle)
  with pytest.raises(ValueError, match="label 'click' must be 0 or 1, got 2"):
    example_codec.make_example(SCHEMA, good, dict(labels, click=2), oracle=oracle)
  with pytest.raises(ValueError, match="example misses field 'price'"):
    example_codec.make_example(
      SCHEMA, {k: v for k, v in good.items() if k != "price"}, labels, oracle=oracle
    )
  with pytest.raises(ValueError, match="field 'hist': 2 ids but 1 weights"):
    example_codec.make_example(SCHEMA, dict(good, hist=([1, 2], [1.0])), labels, oracle=oracle)
  with pytest.raises(ValueError, match="schema has oracle probabilities but none were given"):
    example_codec.make_example(SCHEMA, good, labels)
