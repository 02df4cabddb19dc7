"""Tests of the schema-driven front end (fused and per-field tables)."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import features as features_lib  # noqa: E402
from tafe_tf.layers import embedding  # noqa: E402


@pytest.fixture(name="data")
def _data(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_train=40, num_test=8)
  return schema, str(tmp_path)


def _table_rows(layer, name):
  """The block of table rows that belongs to field ``name``: [num_rows, D]."""
  for group in layer._table_groups:  # pylint: disable=protected-access
    for f in group.fields:
      if f.name == name:
        start = group.offsets[name]
        return layer.tables[group.name].numpy()[start : start + f.num_rows]
  raise KeyError(name)


def test_field_order_and_output_width(data):
  schema, _ = data
  layer = embedding.FeatureEmbedding(schema, 8)
  assert layer.field_names == ["user", "item", "shop", "hist", "price"]
  assert layer.output_dim == 5 * 8


def test_single_valued_fields_are_their_table_rows(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=16)
  layer = embedding.FeatureEmbedding(schema, 8)
  out = layer(feats).numpy().reshape(16, 5, 8)
  users = feats["user"].numpy()
  user_rows = np.where(users < 50, users + 1, 0)
  np.testing.assert_array_equal(out[:, 0], _table_rows(layer, "user")[user_rows])
  items = feats["item"].numpy()
  item_rows = [td.VOCABULARY.index(i) + 1 if i in td.VOCABULARY else 0 for i in items]
  np.testing.assert_array_equal(out[:, 1], _table_rows(layer, "item")[item_rows])


def test_weighted_mean_of_history_by_hand(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=32)
  layer = embedding.FeatureEmbedding(schema, 8)
  out = layer(feats).numpy().reshape(32, 5, 8)[:, 3]
  table = _table_rows(layer, "hist")
  ids = feats["hist"].to_list()
  weights = feats["hist_weight"].to_list()
  assert any(not row for row in ids) and any(row for row in ids)
  for b, (row_ids, row_w) in enumerate(zip(ids, weights)):
    if not row_ids:
      np.testing.assert_array_equal(out[b], np.zeros(8))
      continue
    rows = np.asarray(row_ids) + 1
    expected = (np.asarray(row_w)[:, None] * table[rows]).sum(0) / sum(row_w)
    np.testing.assert_allclose(out[b], expected, rtol=1e-5, atol=1e-7)


def test_dense_projection_by_hand(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=8)
  layer = embedding.FeatureEmbedding(schema, 8)
  out = layer(feats).numpy().reshape(8, 5, 8)[:, 4]
  projection = layer._projections["dense_2x8"]  # pylint: disable=W0212
  kernel, bias = (w.numpy() for w in projection)
  np.testing.assert_allclose(
    out, feats["price"].numpy() @ kernel[0] + bias[0], rtol=1e-5, atol=1e-6
  )


def test_ragged_and_padded_inputs_give_identical_results(data):
  schema, directory = data
  ragged, _ = td.first_batch(directory, batch_size=40)
  padded, _ = td.first_batch(directory, batch_size=40, dense_padded=True)
  assert isinstance(ragged["hist"], tf.RaggedTensor)
  assert not isinstance(padded["hist"], tf.RaggedTensor)
  layer = embedding.FeatureEmbedding(schema, 8)
  np.testing.assert_array_equal(layer(ragged).numpy(), layer(padded).numpy())


def test_pad_ids_inside_ragged_input_are_ignored(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  layer = embedding.FeatureEmbedding(schema, 8)
  ids = tf.ragged.constant([[3, features_lib.PAD_ID], [], [5], [1, 2]], tf.int64)
  weights = tf.ragged.constant([[2.0, 9.0], [], [1.0], [1.0, 3.0]])
  clean_ids = tf.ragged.constant([[3], [], [5], [1, 2]], tf.int64)
  clean_weights = tf.ragged.constant([[2.0], [], [1.0], [1.0, 3.0]])
  with_pad = layer(dict(feats, hist=ids, hist_weight=weights))
  without = layer(dict(feats, hist=clean_ids, hist_weight=clean_weights))
  np.testing.assert_array_equal(with_pad.numpy(), without.numpy())


def test_trailing_empty_histories_give_zero_vectors(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=3)
  layer = embedding.FeatureEmbedding(schema, 8)
  ids = tf.ragged.constant([[3], [], []], tf.int64, row_splits_dtype=tf.int64)
  weights = tf.ragged.constant([[2.0], [], []], row_splits_dtype=tf.int64)
  out = layer(dict(feats, hist=ids, hist_weight=weights)).numpy()
  hist = out.reshape(3, 5, 8)[:, 3]
  np.testing.assert_allclose(hist[0], _table_rows(layer, "hist")[4], rtol=1e-6)
  np.testing.assert_array_equal(hist[1:], np.zeros((2, 8)))


def test_fused_and_per_field_tables_compute_the_same(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=32)
  fused = embedding.FeatureEmbedding(schema, 8, fused=True)
  per_field = embedding.FeatureEmbedding(schema, 8, fused=False)
  fused(feats)
  per_field(feats)
  assert len(fused.tables) == 1
  assert sorted(per_field.tables) == ["table_hist", "table_item", "table_shop", "table_user"]
  # pylint: disable=protected-access
  for group in per_field._table_groups:
    per_field.tables[group.name].assign(_table_rows(fused, group.fields[0].name))
  for target, source in zip(per_field._projections["dense_2x8"], fused._projections["dense_2x8"]):
    target.assign(source)
  # pylint: enable=protected-access
  np.testing.assert_allclose(fused(feats).numpy(), per_field(feats).numpy(), rtol=1e-6, atol=1e-7)


def test_fields_mode_is_the_flat_output_as_tokens(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=8)
  flat = embedding.FeatureEmbedding(schema, 8, seed=3)
  tokens = embedding.FeatureEmbedding(schema, 8, output_mode="fields", seed=3)
  out = tokens(feats)
  assert out.shape == (8, 5, 8)
  np.testing.assert_array_equal(tf.reshape(out, [8, 40]).numpy(), flat(feats).numpy())


def test_fields_mode_needs_one_width(tmp_path):
  mixed = td.tiny_schema(str(tmp_path))
  with pytest.raises(ValueError, match=r"\['shop'\] are not"):
    embedding.FeatureEmbedding(mixed, 8, {"shop": 4}, output_mode="fields")
  layer = embedding.FeatureEmbedding(mixed, 8, {"shop": 4})  # flat: any widths
  assert layer.output_dim == 4 * 8 + 4
  assert len(layer.field_names) == 5


def test_mixed_widths_use_one_table_per_width(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_train=16, num_test=4)
  feats, _ = td.first_batch(str(tmp_path), batch_size=4)
  layer = embedding.FeatureEmbedding(schema, 8, {"shop": 4})
  out = layer(feats)
  assert sorted(layer.tables) == ["table_d4", "table_d8"]
  assert out.shape == (4, 36)
  assert layer.field_names == ["user", "item", "shop", "hist", "price"]


def test_raw_dense_fields_pass_through(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_train=16, num_test=4)
  feats, _ = td.first_batch(str(tmp_path), batch_size=4)
  out = embedding.FeatureEmbedding(schema, 8, {"price": 0})(feats).numpy()
  np.testing.assert_array_equal(out[:, -2:], feats["price"].numpy())


def test_field_widths_are_the_models_with_per_field_overrides(tmp_path):
  schema = td.tiny_schema(str(tmp_path))
  assert embedding.field_widths(schema, 5) == {
    "user": 5,
    "item": 5,
    "shop": 5,
    "hist": 5,
    "price": 5,
  }
  assert embedding.field_widths(schema, 5, {"shop": 3, "price": 0}) == {
    "user": 5,
    "item": 5,
    "shop": 3,
    "hist": 5,
    "price": 0,
  }
  with pytest.raises(ValueError, match="embedding_dim must be >= 1, got 0"):
    embedding.field_widths(schema, 0)
  with pytest.raises(ValueError, match="field 'shop': embedding width must be >= 1, got 0"):
    embedding.field_widths(schema, 5, {"shop": 0})
  with pytest.raises(
    ValueError,
    match=r"field_embedding_dims names \['nope'\]"
    r", not fields of schema 'tiny' \(its fields: user, item, "
    r"shop, hist, price\)",
  ):
    embedding.field_widths(schema, 5, {"nope": 3})


def test_missing_feature_names_the_key(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  del feats["hist_weight"]
  with pytest.raises(KeyError, match="features miss 'hist_weight'"):
    embedding.FeatureEmbedding(schema, 8)(feats)


def test_extra_keys_are_ignored(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  layer = embedding.FeatureEmbedding(schema, 8)
  extra = dict(feats, sample_id=tf.constant(["a", "b", "c", "d"]), **{"oracle/click": tf.ones([4])})
  np.testing.assert_array_equal(layer(feats).numpy(), layer(extra).numpy())


def test_ragged_ids_with_padded_weights_is_an_error(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  bad = dict(feats, hist_weight=feats["hist_weight"].to_tensor())
  with pytest.raises(ValueError, match="'hist': ids and weights must both"):
    embedding.FeatureEmbedding(schema, 8)(bad)


def test_seeded_tables_are_reproducible(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  a = embedding.FeatureEmbedding(schema, 8, seed=7)
  b = embedding.FeatureEmbedding(schema, 8, seed=7)
  c = embedding.FeatureEmbedding(schema, 8, seed=8)
  np.testing.assert_array_equal(a(feats).numpy(), b(feats).numpy())
  assert not np.array_equal(a(feats).numpy(), c(feats).numpy())


def test_gradients_reach_only_the_rows_used(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=8)
  layer = embedding.FeatureEmbedding(schema, 8)
  layer(feats)
  td.assert_gradients_reach_only_rows_used(layer, feats, layer.tables["table_d8"])


def test_config_round_trip(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  td.assert_config_round_trip(embedding.FeatureEmbedding(schema, 8, fused=False), feats)


def test_wrong_shapes_name_the_field(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  layer = embedding.FeatureEmbedding(schema, 8)
  with pytest.raises(
    ValueError,
    match=r"field 'user': expected ids of shape "
    r"\[batch\], got \(4, 1\)",
  ):
    layer(dict(feats, user=feats["user"][:, None]))
  with pytest.raises(
    ValueError,
    match=r"field 'price': expected dense values "
    r"of shape \[batch, 2\], got \(4, 3\)",
  ):
    layer(dict(feats, price=tf.zeros([4, 3])))
  with pytest.raises(ValueError, match="before reading its tables"):
    _ = embedding.FeatureEmbedding(schema, 8).tables
