"""Tests of TPUFeatureEmbedding on CPU (TFRS' TPUEmbedding off a TPU).

No TPU is available here: these check the CPU side of the layer, which TFRS
makes checkpoint-compatible with the TPU side: same tables, same outputs as
FeatureEmbedding, trainable, serialisable, and a model using it trains,
restores and exports.
"""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import export, input_pipeline, models
from tafe_tf import features as features_lib
from tafe_tf.layers import embedding, tpu_embedding


@pytest.fixture(name="data", scope="module")
def _data(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("data"))
  schema = td.make_dataset_dir(directory, num_train=64, num_test=32)
  return schema, directory


def test_feature_config_mirrors_the_fused_tables(data):
  schema, _ = data
  config = tpu_embedding.tpu_embedding_feature_config(schema, 8)
  layer = embedding.FeatureEmbedding(schema, 8, fused=True)
  layer(features_lib.dummy_batch(schema))
  ids = [f.name for f in schema.fields if f.is_id]
  assert sorted(config) == sorted(ids)
  tables = {c.table.name: c.table for c in config.values()}
  assert {n: (t.vocabulary_size, t.dim) for n, t in tables.items()} == {
    n: tuple(v.shape) for n, v in layer.tables.items()
  }
  assert {c.table.combiner for c in config.values()} == {"mean"}
  # Each field's block starts at its offset and ends inside its table; the
  # blocks of one table follow each other.
  offsets = tpu_embedding.tpu_row_offsets(schema, 8)
  assert sorted(offsets) == sorted(ids)
  for table in tables.values():
    fields = sorted(
      (offsets[name], schema.field(name).num_rows) for name, c in config.items() if c.table is table
    )
    assert fields[0][0] == 0
    for (start, rows), (following, _) in zip(fields, fields[1:] + [(table.vocabulary_size, 0)]):
      assert start + rows == following


@pytest.mark.parametrize("output_mode", [embedding.FLAT, embedding.FIELDS])
def test_same_seed_same_tables_and_outputs_as_feature_embedding(data, output_mode):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=40)
  reference = embedding.FeatureEmbedding(schema, 8, output_mode=output_mode, seed=5)
  layer = tpu_embedding.TPUFeatureEmbedding(schema, 8, output_mode=output_mode, seed=5)
  expected = reference(feats).numpy()
  got = layer(feats).numpy()
  assert sorted(layer.tables) == sorted(reference.tables) == ["table_d8"]
  np.testing.assert_array_equal(
    layer.tables["table_d8"].numpy(), reference.tables["table_d8"].numpy()
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert layer.field_names == reference.field_names


def test_empty_lists_padding_and_precomputed_rows(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  reference = embedding.FeatureEmbedding(schema, 8, seed=1)
  layer = tpu_embedding.TPUFeatureEmbedding(schema, 8, seed=1)
  # A padding id inside a list (weight ignored), an empty list, all-zero
  # weights: zero vectors and means over the real entries only.
  edge = dict(
    feats,
    hist=tf.ragged.constant([[3, features_lib.PAD_ID], [], [5], [1, 2]], tf.int64),
    hist_weight=tf.ragged.constant([[2.0, 9.0], [], [0.0], [1.0, 3.0]]),
  )
  got = layer(edge).numpy().reshape(4, 5, 8)
  np.testing.assert_allclose(got, reference(edge).numpy().reshape(4, 5, 8), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[1:3, 3], np.zeros((2, 8)))
  # Padded lists (the serving input), and the compiled-step input: rows
  # looked up in tf.data, lists padded.
  padded, _ = td.first_batch(directory, batch_size=4, dense_padded=True)
  for inputs in (padded, layer.lookup_rows(padded)):
    np.testing.assert_allclose(
      layer(inputs).numpy(), reference(feats).numpy(), rtol=1e-5, atol=1e-6
    )


def test_tables_are_trainable_and_get_gradients_for_rows_used(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=8)
  layer = tpu_embedding.TPUFeatureEmbedding(schema, 8, seed=0)
  layer(feats)
  table = layer.tables["table_d8"]
  assert any(w is table for w in layer.trainable_weights)
  td.assert_gradients_reach_only_rows_used(layer, feats, table)


def test_config_round_trip(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  layer = tpu_embedding.TPUFeatureEmbedding(schema, 8, seed=3)
  config = layer.get_config()
  assert "fused" not in config
  clone = tpu_embedding.TPUFeatureEmbedding.from_config(config)
  np.testing.assert_array_equal(clone(feats).numpy(), layer(feats).numpy())


def test_model_with_tpu_embedding_trains_restores_and_exports(data, tmp_path):
  schema, directory = data
  model = models.build_model("esmm", schema, seed=0, tower_units=[16], tpu_embedding=True)
  assert isinstance(model.embedding, tpu_embedding.TPUFeatureEmbedding)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
  train = input_pipeline.make_dataset(directory, "train", 16)
  history = model.fit(train, epochs=8, verbose=0).history["loss"]
  assert history[-1] < history[0]
  feats, _ = td.first_batch(directory, "test", batch_size=32)
  expected = model(feats)["ctcvr"].numpy()
  path = str(tmp_path / "weights")
  model.save_weights(path)
  restored = models.build_model("esmm", schema, seed=1, tower_units=[16], tpu_embedding=True)
  restored(feats)
  restored.load_weights(path).expect_partial()  # no optimizer restored
  np.testing.assert_allclose(restored(feats)["ctcvr"].numpy(), expected, rtol=1e-6)
  export_path = export.export_saved_model(model, schema, str(tmp_path / "export"))
  serve = tf.saved_model.load(export_path).signatures[export.SERVING_DEFAULT]
  padded, _ = td.first_batch(directory, "test", batch_size=32, dense_padded=True)
  inputs = {k: padded[k] for k in features_lib.serving_input_signature(schema)}
  np.testing.assert_allclose(serve(**inputs)["ctcvr"].numpy(), expected, rtol=1e-5, atol=1e-6)
