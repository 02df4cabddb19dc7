"""Tests of raw id -> embedding row mapping (identity, vocabulary, hash)."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import features as features_lib  # noqa: E402
from tafe_tf.layers import id_lookup  # noqa: E402


def _field(lookup, num_ids, **kw):
  return features_lib.FieldSpec("f", "id", lookup, num_ids=num_ids, **kw)


def test_identity_maps_range_and_sends_the_rest_to_oov():
  layer = id_lookup.IdLookup(_field("identity", 5))
  ids = tf.constant([0, 1, 4, 5, -1, 99, -7], tf.int64)
  np.testing.assert_array_equal(layer(ids).numpy(), [1, 2, 5, 0, 0, 0, 0])


def test_identity_keeps_shape_of_padded_input():
  layer = id_lookup.IdLookup(_field("identity", 3))
  rows = layer(tf.constant([[0, 2], [3, -1]], tf.int64))
  np.testing.assert_array_equal(rows.numpy(), [[1, 3], [0, 0]])


def test_vocabulary_line_i_is_row_i_plus_one(tmp_path):
  schema = td.tiny_schema(str(tmp_path))
  spec = schema.field("item")
  layer = id_lookup.IdLookup(spec, schema.vocabulary_path(spec))
  ids = tf.constant(td.VOCABULARY + [5, -1], tf.int64)
  expected = list(range(1, len(td.VOCABULARY) + 1)) + [0, 0]
  np.testing.assert_array_equal(layer(ids).numpy(), expected)


def test_vocabulary_reads_only_num_ids_lines(tmp_path):
  path = tmp_path / "v.txt"
  path.write_text("10\n20\n30\n")
  layer = id_lookup.IdLookup(_field("vocabulary", 2, vocabulary_file=str(path)), str(path))
  np.testing.assert_array_equal(layer(tf.constant([10, 20, 30], tf.int64)).numpy(), [1, 2, 0])


def test_vocabulary_shorter_than_num_ids_is_an_error_naming_the_file(tmp_path):
  path = tmp_path / "short.txt"
  path.write_text("10\n20\n")
  with pytest.raises(tf.errors.InvalidArgumentError, match="short.txt"):
    id_lookup.IdLookup(_field("vocabulary", 3, vocabulary_file=str(path)), str(path))


def test_vocabulary_missing_file_is_an_error(tmp_path):
  path = str(tmp_path / "none.txt")
  with pytest.raises(FileNotFoundError, match="field 'f'.*none.txt"):
    id_lookup.IdLookup(_field("vocabulary", 3, vocabulary_file=path), path)


def test_hash_is_one_plus_fingerprint_bucket_and_pad_is_oov():
  layer = id_lookup.IdLookup(_field("hash", 7))
  ids = tf.constant([0, 1, 123456789, 2**40, -5, features_lib.PAD_ID], tf.int64)
  rows = layer(ids).numpy()
  buckets = tf.strings.to_hash_bucket_fast(tf.strings.as_string(ids[:5]), 7).numpy()
  np.testing.assert_array_equal(rows[:5], buckets + 1)
  assert rows[5] == 0
  assert rows[:5].min() >= 1 and rows[:5].max() <= 7


def test_hash_spreads_ids_over_all_buckets():
  layer = id_lookup.IdLookup(_field("hash", 10))
  rows = layer(tf.range(2000, dtype=tf.int64)).numpy()
  counts = np.bincount(rows, minlength=11)
  assert counts[0] == 0
  assert counts[1:].min() > 120  # 200 expected per bucket


def test_dense_field_is_rejected():
  spec = features_lib.FieldSpec("price", "dense", dim=2)
  with pytest.raises(ValueError, match="'price' is 'dense', not an id field"):
    id_lookup.IdLookup(spec)


def test_config_round_trip(tmp_path):
  schema = td.tiny_schema(str(tmp_path))
  spec = schema.field("item")
  layer = id_lookup.IdLookup(spec, schema.vocabulary_path(spec))
  td.assert_config_round_trip(layer, tf.constant([1000, 1007, 3], tf.int64))


def test_empty_vocabulary_sends_every_id_to_the_oov_row(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_text("")
  field = features_lib.FieldSpec("rare", "id", "vocabulary", num_ids=0, vocabulary_file=str(path))
  lookup = id_lookup.IdLookup(field, vocabulary_path=str(path))
  rows = lookup(tf.constant([0, 7, -1, 123456789], tf.int64))
  np.testing.assert_array_equal(rows.numpy(), [0, 0, 0, 0])
