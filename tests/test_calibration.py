"""Tests of the per-step Platt calibration (tafe_tf.calibration)."""

import json
import os

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import calibration, evaluation, input_pipeline, metrics, models, reporting, training
from tafe_tf import config as config_lib


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_platt_fit_recovers_a_known_map():
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 2.0, 200_000)
  labels = rng.random(logits.size) < _sigmoid(0.5 * logits - 1.0)
  scale, shift = calibration.fit_platt(logits, labels)
  assert abs(scale - 0.5) < 0.02 and abs(shift + 1.0) < 0.03
  # Fitted on its own logits' map, the mean prediction equals the label rate.
  np.testing.assert_allclose(_sigmoid(scale * logits + shift).mean(), labels.mean(), rtol=2e-3)


def test_entire_space_fit_recovers_a_known_map_under_a_parent_probability():
  # p = c * sigmoid(a l + b): the fit of a chained step in entire space.
  rng = np.random.default_rng(1)
  logits = rng.normal(0.0, 1.5, 300_000)
  parent = rng.uniform(0.02, 0.6, logits.size)
  labels = rng.random(logits.size) < parent * _sigmoid(1.3 * logits - 0.5)
  scale, shift = calibration.fit_platt(logits, labels, parent)
  assert abs(scale - 1.3) < 0.05 and abs(shift + 0.5) < 0.05
  # The score equations make served and observed conversions agree.
  served = parent * _sigmoid(scale * logits + shift)
  np.testing.assert_allclose(served.sum(), labels.sum(), rtol=0.01)


def test_platt_fit_without_both_labels_is_the_identity():
  assert calibration.fit_platt(np.array([0.3, -1.0]), np.zeros(2)) == (1.0, 0.0)
  assert calibration.fit_platt(np.array([0.3, -1.0]), np.ones(2)) == (1.0, 0.0)
  assert calibration.fit_platt(np.zeros(0), np.zeros(0)) == (1.0, 0.0)


@pytest.fixture(name="data", scope="module")
def _data(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("calibration"))
  schema = td.make_dataset_dir(directory, num_steps=2, num_train=256, num_test=64)
  td.write_split(directory, schema, "validation", td.random_rows(schema, 512, seed=3))
  return schema, directory


def test_chained_steps_are_fitted_on_their_likelihood_rows(data):
  schema, directory = data
  model = models.build_model("esmm", schema, seed=0, tower_units=(4,))
  dataset = input_pipeline.make_dataset(directory, "validation", 128, schema)
  raw, labels = calibration.collect_logits(model, dataset)
  fits = calibration.fit_step_calibration(model, dataset, "conditional")
  clicks = labels[:, 0] > 0
  assert [f.step for f in fits] == list(schema.steps)
  assert fits[0].rows == labels.shape[0] and fits[1].rows == int(clicks.sum())
  assert fits[1].positives == int(labels[clicks, 1].sum())
  expected = calibration.fit_platt(raw[clicks, 1], labels[clicks, 1])
  np.testing.assert_allclose((fits[1].scale, fits[1].shift), expected, rtol=1e-6)
  # The model now serves the calibrated logits.
  features, _ = next(iter(dataset))
  np.testing.assert_allclose(
    model.step_logits(features).numpy(),
    model.uncalibrated_step_logits(features).numpy() * [f.scale for f in fits]
    + [f.shift for f in fits],
    rtol=1e-5,
    atol=1e-6,
  )
  # Entire space: step 2's p = calibrated p_1 * sigmoid(a l_2 + b) on every row.
  fits = calibration.fit_step_calibration(model, dataset, "entire_space")
  assert [f.rows for f in fits] == [labels.shape[0]] * 2
  p1 = _sigmoid(fits[0].scale * raw[:, 0] + fits[0].shift)
  expected = calibration.fit_platt(raw[:, 1], labels[:, 1], p1)
  np.testing.assert_allclose((fits[1].scale, fits[1].shift), expected, rtol=1e-6)
  # Independent heads: every step on every row.
  mmoe = models.build_model("mmoe", schema, seed=0, expert_units=(4,), tower_units=(4,))
  fits = calibration.fit_step_calibration(mmoe, dataset, "conditional")
  assert [f.rows for f in fits] == [labels.shape[0]] * 2
  with pytest.raises(ValueError, match="space must be one of entire_space, conditional"):
    calibration.fit_step_calibration(mmoe, dataset, "clicks")


def test_train_writes_the_calibration_and_loading_applies_it(data, tmp_path):
  schema, directory = data
  model_dir = str(tmp_path / "model")
  run = config_lib.RunConfig.create("esmm", hparams={"tower_units": [4]}, epochs=1, verbose=0)
  result = training.train(directory, model_dir, run)
  stored = json.load(open(os.path.join(model_dir, calibration.CALIBRATION_FILENAME)))
  report = json.load(open(os.path.join(model_dir, training.TRAIN_REPORT_FILENAME)))
  assert report["calibration"] == stored["steps"]
  assert [s["step"] for s in stored["steps"]] == list(schema.steps)
  assert result.model.calibration.scale.numpy().tolist() == pytest.approx(
    [s["scale"] for s in stored["steps"]]
  )
  loaded = training.load_trained_model(model_dir)
  features, _ = next(iter(input_pipeline.make_dataset(directory, "test", 64, schema)))
  np.testing.assert_allclose(
    loaded(features)["ctcvr"].numpy(), result.model(features)["ctcvr"].numpy(), rtol=1e-5
  )
  # Off: no calibration file, the identity.
  off = config_lib.RunConfig.create(
    "esmm", hparams={"tower_units": [4]}, epochs=1, verbose=0, calibration="none"
  )
  result = training.train(directory, model_dir, off, overwrite=True)
  assert not os.path.exists(os.path.join(model_dir, calibration.CALIBRATION_FILENAME))
  assert result.model.calibration.scale.numpy().tolist() == [1.0, 1.0]


def test_calibration_survives_keras_save_and_load(data, tmp_path):
  schema, directory = data
  model = models.build_model("esmm", schema, seed=0, tower_units=(4,))
  dataset = input_pipeline.make_dataset(directory, "validation", 128, schema)
  calibration.fit_step_calibration(model, dataset)
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  np.testing.assert_allclose(
    loaded.calibration.shift.numpy(), model.calibration.shift.numpy(), rtol=1e-6
  )


def test_evaluation_reports_the_pcoc_before_and_after_and_plots_both(data, tmp_path):
  schema, directory = data
  model = models.build_model("esmm", schema, seed=0, tower_units=(4,))
  validation = input_pipeline.make_dataset(directory, "validation", 128, schema)
  calibration.fit_step_calibration(model, validation)
  assert calibration.is_fitted(model)
  fitted = model.calibration.shift.numpy().copy()
  out = str(tmp_path / "eval")
  report = reporting.evaluate_and_write(model, schema, directory, "test", out)
  np.testing.assert_array_equal(model.calibration.shift.numpy(), fitted)  # put back
  test = input_pipeline.make_dataset(directory, "test", 64, schema, with_metadata=True)
  with calibration.uncalibrated(model):
    assert not calibration.is_fitted(model)
    before = evaluation.predict_dataset(model, test, schema)
  for t, step in enumerate(schema.steps):
    assert report[f"pcoc_uncalibrated/{step}"] == pytest.approx(
      metrics.pcoc(before.labels[:, t], before.p[:, t]), rel=1e-5
    )
    assert report[f"pcoc_uncalibrated/{step}"] != pytest.approx(report[f"pcoc/{step}"], rel=1e-4)
  assert os.path.getsize(os.path.join(out, "test_reliability.png")) > 0
  # An uncalibrated model reports no "before".
  plain = models.build_model("esmm", schema, seed=0, tower_units=(4,))
  report = reporting.evaluate_and_write(plain, schema, directory, "test", str(tmp_path / "e2"))
  assert not [k for k in report if k.startswith("pcoc_uncalibrated")]
