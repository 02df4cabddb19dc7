"""Tests of the contract every model follows (tafe_tf.models.base)."""

import json
import logging

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import input_pipeline, losses, models


@pytest.fixture(name="data", scope="module")
def _data(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tiny"))
  schema = td.make_dataset_dir(directory, num_steps=2, num_train=96, num_test=32)
  return schema, directory


def test_model_names_and_unknown_name():
  assert models.MODEL_NAMES == (
    "tafe",
    "esmm",
    "mmoe",
    "ple",
    "aitm",
    "shared_bottom",
    "escm2",
    "dcmt",
  )
  with pytest.raises(
    ValueError,
    match="unknown model 'mmoee'; valid names: tafe, esmm, mmoe, ple, aitm, shared_bottom, "
    "escm2, dcmt$",
  ):
    models.model_class("mmoee")


def test_unknown_hparam_is_one_line_naming_the_models_hparams(data):
  schema, _ = data
  esmm = (
    "calibration_weight, conditional_normalization, conditional_weight, cross_layers, "
    "cross_projection_dim, dropout, embedding_dim, entire_space_weight, field_embedding_dims, "
    "fused_embedding, interaction, seed, step_weights, "
    "tower_units, tpu_embedding, tpu_embedding_learning_rate, "
    "train_metrics"
  )
  with pytest.raises(ValueError) as info:
    models.build_model("esmm", schema, expert_unit=(4,))
  assert str(info.value) == (
    f"esmm takes no hyperparameter 'expert_unit'; its hyperparameters: {esmm}"
  )
  # Names another model takes are no exception: nothing is silently dropped.
  with pytest.raises(ValueError) as info:
    models.build_model("esmm", schema, num_levels=3, num_experts=9)
  assert str(info.value) == (
    f"esmm takes no hyperparameters 'num_experts', 'num_levels'; its hyperparameters: {esmm}"
  )
  with pytest.raises(
    ValueError,
    match="^mmoe takes no hyperparameter 'num_levels'; its hyperparameters: calibration_weight, ",
  ):
    models.build_model("mmoe", schema, num_levels=3)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_model_takes_every_field_of_its_hparams(data, name):
  schema, _ = data
  hparams = dict(models.hparams_class(name)().to_json(), embedding_dim=4, seed=3)
  model = models.build_model(name, schema, **hparams)
  assert model.MODEL_NAME == name
  config = json.loads(json.dumps(model.get_config()))
  assert config["model"] == name and config["schema"] == schema.to_json()
  assert config["hparams"] == hparams
  assert model.embedding.output_dim == 4 * 4 + 4  # 4 id fields, 1 projection


def test_one_default_per_hparam_in_its_dataclass():
  base = models.BaseHParams()
  assert base.embedding_dim == 16 and base.seed is None
  # PLE's documented defaults, not another layer's.
  ple = models.hparams_class("ple")()
  assert (ple.num_experts, ple.num_levels, ple.expert_units) == (2, 2, (64, 32))
  assert models.hparams_class("aitm")().calibration_weight == 0.6


def test_config_rebuilds_the_same_seeded_model(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=16)
  model = models.build_model(
    "shared_bottom", schema, seed=5, expert_units=(8,), step_weights=(1.0, 2.0)
  )
  config = json.loads(json.dumps(model.get_config()))
  rebuilt = models.build_model(config["model"], schema, **config["hparams"])
  from_config = models.MultiStepModel.from_config(config)
  assert rebuilt.hparams == model.hparams == from_config.hparams
  for other in (rebuilt, from_config):
    np.testing.assert_array_equal(other(feats)["p_cart"].numpy(), model(feats)["p_cart"].numpy())
  different = models.build_model("shared_bottom", schema, seed=6, expert_units=(8,))
  assert not np.array_equal(different(feats)["p_cart"].numpy(), model(feats)["p_cart"].numpy())


def test_compute_loss_is_the_dtl_loss_and_updates_step_metrics(data):
  schema, directory = data
  feats, labels = td.first_batch(directory, batch_size=32)
  model = models.build_model("aitm", schema, seed=0, tower_units=(8,))
  loss = model.compute_loss((feats, labels))
  logits = model.step_logits(feats)
  y = np.stack([labels["click"].numpy(), labels["cart"].numpy()], axis=1)
  p = 1.0 / (1.0 + np.exp(-logits.numpy().astype(np.float64)))
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  expected = (bce.sum(1) + 0.6 * np.maximum(p[:, 1] - p[:, 0], 0)).mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  names = [m.name for m in model.metrics]
  assert names == [
    "auc/click",
    "logloss/click",
    "pcoc/click",
    "auc/cart",
    "logloss/cart",
    "pcoc/cart",
    "auc_conditional/cart",
    "loss",
    "regularization_loss",
    "total_loss",
  ]
  results = model.step_metrics.results()
  np.testing.assert_allclose(results["pcoc/click"], p[:, 0].sum() / y[:, 0].sum(), rtol=1e-4)


def test_losses_dtl_matches_model_configuration(data):
  schema, _ = data
  model = models.build_model("tafe", schema, chained=False, calibration_weight=0.2)
  assert model.dtl_loss == losses.DTLLoss(2, chained=False, calibration_weight=0.2)
  with pytest.raises(ValueError, match="conditional_weight > 0 needs chained"):
    models.build_model("mmoe", schema, conditional_weight=0.5)


def test_fit_logs_step_metrics_and_evaluate_returns_them(data):
  schema, directory = data
  tf.keras.utils.set_random_seed(0)
  model = models.build_model("shared_bottom", schema, seed=0, expert_units=(8,), tower_units=(4,))
  history = td.fit(model, directory, epochs=2, batch_size=32)
  assert {"loss", "auc/click", "auc_conditional/cart", "pcoc/cart"} <= set(history)
  test = tafe_tf.input_pipeline.make_dataset(directory, "test", 16)
  result = model.evaluate(test, verbose=0, return_dict=True)
  assert np.isfinite(result["loss"]) and 0.0 <= result["auc/click"] <= 1.0


def test_gate_weights_empty_without_gates(data):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=4)
  for name in ("esmm", "aitm", "shared_bottom"):
    assert models.build_model(name, schema).gate_weights(feats) == {}


def test_mixed_precision_keeps_outputs_and_loss_float32(data):
  schema, directory = data
  feats, labels = td.first_batch(directory, batch_size=8)
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = models.build_model("tafe", schema, seed=0)
    outputs = model(feats)
    loss = model.compute_loss((feats, labels))
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  assert model.embedding.compute_dtype == "float16"
  assert {v.dtype for v in outputs.values()} == {tf.float32}
  assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())


def test_mixed_float16_training_scales_the_loss(data, caplog):
  schema, directory = data
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    tf.keras.utils.set_random_seed(0)
    model = models.build_model("mmoe", schema, seed=0, expert_units=(8,), tower_units=(4,))
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
      history = td.fit(model, directory, epochs=2, batch_size=32)
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
  # tfrs's own train_step would make the optimizer warn on every trace.
  assert "You forgot to call LossScaleOptimizer" not in caplog.text
  assert np.isfinite(history["loss"]).all()
  assert history["loss"][-1] < history["loss"][0]
  assert int(model.optimizer.iterations.numpy()) == 2 * 3


def test_logged_losses_are_means_over_all_batches(tmp_path):
  """val_loss (which picks the kept epoch) averages every validation example,
  not just the last batch, as tfrs alone would report."""
  schema = td.make_dataset_dir(str(tmp_path), num_steps=2, num_train=40, num_test=40)
  model = models.build_model("esmm", schema, embedding_dim=4, seed=0)
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
  dataset = input_pipeline.make_dataset(str(tmp_path), "test", batch_size=16)
  per_example = []
  for feats, labels in dataset:  # batches of 16, 16 and 8
    logits = model.step_logits(feats)
    y = losses.stack_labels(labels, model.steps)
    per_example.append(model.dtl_loss.per_example(y, logits).numpy())
  per_example = np.concatenate(per_example)
  assert len(per_example) == 40
  logs = model.evaluate(dataset, return_dict=True, verbose=0)
  np.testing.assert_allclose(logs["loss"], per_example.mean(), rtol=1e-5)
  np.testing.assert_allclose(logs["total_loss"], per_example.mean(), rtol=1e-5)
  assert logs["regularization_loss"] == 0.0


def test_train_metrics_off_keeps_them_for_validation_only(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_steps=2, num_train=64, num_test=32)
  model = models.build_model("mmoe", schema, embedding_dim=4, seed=0, train_metrics=False)
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
  train = input_pipeline.make_dataset(str(tmp_path), "train", batch_size=32)
  test = input_pipeline.make_dataset(str(tmp_path), "test", batch_size=32)
  history = model.fit(train, validation_data=test, epochs=1, verbose=0).history
  assert history["loss"][0] > 0
  # Not computed, so not logged, in training; validation computes them.
  assert "auc/click" not in history and "logloss/click" not in history
  assert 0.0 < history["val_auc/click"][0] < 1.0
  assert history["val_logloss/click"][0] > 0
  assert model.get_config()["hparams"]["train_metrics"] is False


def test_sample_weights_multiply_each_examples_loss(data):
  # Keras' (features, labels, sample_weight) convention: sum_b w_b L_b / B.
  schema, directory = data
  model = models.build_model("esmm", schema, seed=0, tower_units=(4,))
  features, labels = next(iter(input_pipeline.make_dataset(directory, "train", 16, schema)))
  weights = tf.constant(np.arange(16) % 3, tf.float32)
  per_example = model.dtl_loss.per_example(
    losses.stack_labels(labels, schema.steps), model.step_logits(features)
  ).numpy()
  weighted = float(model.compute_loss((features, labels, weights)))
  np.testing.assert_allclose(weighted, (per_example * weights.numpy()).sum() / 16, rtol=1e-5)
  np.testing.assert_allclose(
    float(model.compute_loss((features, labels))), per_example.mean(), rtol=1e-5
  )
  # fit takes weighted batches; a weight of 0 everywhere leaves the weights as they are.
  model.compile(tf.keras.optimizers.SGD(1.0))
  before = [v.numpy() for v in model.trainable_variables]
  zero = input_pipeline.make_dataset(directory, "train", 16, schema).map(
    lambda x, y: (x, y, tf.zeros_like(y["click"], tf.float32))
  )
  model.fit(zero.take(2), verbose=0)
  for b, a in zip(before, model.trainable_variables):
    np.testing.assert_array_equal(b, a.numpy())


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_interaction_switch_is_in_every_models_front_end(data, name):
  schema, directory = data
  feats, labels = td.first_batch(directory, batch_size=16)
  small = td.hparams_for(name, seed=0, embedding_dim=4, expert_units=(8,), tower_units=(4,))
  model = models.build_model(name, schema, interaction="cross", cross_layers=1, **small)
  with tf.GradientTape() as tape:
    loss = model.compute_loss((feats, labels), training=True)
  kernels = model.interaction.trainable_variables
  assert len(kernels) == 2  # one full-rank cross layer: W and b
  # The loss reaches the cross layer, so the model's networks start from it.
  assert all(tf.convert_to_tensor(g).numpy().any() for g in tape.gradient(loss, kernels))
  assert model.embed(feats).shape == (16, 4 * 5)
  plain = models.build_model(name, schema, **small)
  plain(feats)
  assert plain.interaction.mode == "none" and not plain.interaction.variables


@pytest.mark.parametrize("hparams", [dict(), dict(field_interaction=False)])
def test_dot_interaction_appends_field_pair_products(data, hparams):
  schema, directory = data
  feats, _ = td.first_batch(directory, batch_size=8)
  for name in ("esmm", "tafe"):
    model = models.build_model(
      name, schema, interaction="dot", embedding_dim=4, seed=0, **td.hparams_for(name, **hparams)
    )
    fields = model.embedding(feats).numpy()  # the embedding's FIELDS output
    assert fields.shape == (8, 5, 4)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    dots = np.stack([(fields[:, i] * fields[:, j]).sum(-1) for i, j in pairs], axis=1)
    np.testing.assert_allclose(
      model.embed(feats).numpy(), np.concatenate([fields.reshape(8, 20), dots], 1), rtol=1e-5
    )
    assert np.isfinite(model(feats)["p_cart"].numpy()).all()


def test_dot_interaction_needs_one_width_and_tafe_takes_both_switches(data):
  schema, directory = data
  with pytest.raises(ValueError) as info:
    models.build_model("mmoe", schema, interaction="dot", field_embedding_dims={"user": 8})
  assert str(info.value) == (
    "interaction='dot' needs one width for every field (dot products of field pairs); "
    "widths: {'user': 8, 'item': 16, 'shop': 16, 'hist': 16, 'price': 16}; "
    "drop field_embedding_dims or use interaction='cross'"
  )
  with pytest.raises(ValueError, match="^interaction must be one of .*, got 'fm'$"):
    models.build_model("esmm", schema, interaction="fm")
  # Cross after TAFE's field interaction, low rank: trains (finite gradients).
  feats, labels = td.first_batch(directory, batch_size=8)
  model = models.build_model("tafe", schema, interaction="cross", cross_projection_dim=3, seed=0)
  with tf.GradientTape() as tape:
    loss = model.compute_loss((feats, labels), training=True)
  grads = tape.gradient(loss, model.interaction.trainable_variables)
  assert [tuple(g.shape) for g in grads] == [(80, 3), (3, 80), (80,)] * 2  # 2 layers: U, V, b
  assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
