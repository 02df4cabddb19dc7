"""The contract every model keeps: it learns, names its outputs, accepts ragged
and padded input alike, restores exactly, and trains on three steps."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import features as features_lib
from tafe_tf import models

# Chained heads (p_t = q_1 ... q_t) or independent entire-space heads.
CHAINED = {
  "tafe": True,
  "esmm": True,
  "mmoe": False,
  "ple": False,
  "aitm": False,
  "shared_bottom": False,
  "escm2": True,
  "dcmt": True,
}
# AUC margin to the oracle that TAFE must stay within (2 epochs, 8000 rows).
TAFE_ORACLE_MARGIN = 0.06


def test_every_model_is_covered():
  assert set(CHAINED) == set(models.MODEL_NAMES)


@pytest.fixture(name="learning_data", scope="module")
def _learning_data(tmp_path_factory):
  return td.learning_dataset(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(name="trained", scope="module", params=models.MODEL_NAMES)
def _trained(request, learning_data):
  """Each model after 2 epochs on 8000 synthetic rows (T = 2)."""
  data_dir, report = learning_data
  tf.keras.utils.set_random_seed(0)
  model = models.build_model(
    request.param,
    features_lib.Schema.load(data_dir),
    **td.hparams_for(request.param, **td.LEARNING_HPARAMS),
  )
  history = td.fit(model, data_dir, epochs=2, batch_size=256)
  return model, history, data_dir, report


def test_learns_the_synthetic_truth(trained):
  model, history, data_dir, report = trained
  assert history["loss"][-1] < history["loss"][0]
  assert "auc/click" in history and "auc/purchase" in history
  labels, outputs = td.predict_split(model, data_dir)
  aucs = td.aucs(labels, outputs, model.steps)
  oracle = report["splits"]["test"]["oracle_auc"]
  # Chance is 0.5; the oracle (true probabilities) is about 0.91 / 0.93.
  assert min(aucs) > 0.8, (aucs, oracle)
  if model.MODEL_NAME == "tafe":  # within a stated margin of the oracle
    for step, auc in zip(model.steps, aucs):
      assert auc > oracle[step] - TAFE_ORACLE_MARGIN, (step, auc, oracle)


def test_output_contract_and_padded_input(trained):
  model, _, data_dir, _ = trained
  _, outputs = td.predict_split(model, data_dir)
  td.check_output_contract(model, outputs)
  _, padded = td.predict_split(model, data_dir, dense_padded=True)
  for name, value in outputs.items():
    np.testing.assert_array_equal(padded[name], value, err_msg=name)


def test_save_and_restore_give_identical_predictions(trained, tmp_path):
  model, _, data_dir, _ = trained
  td.check_save_and_restore(model, data_dir, str(tmp_path))


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_three_steps_fit_and_loss_drops(name, tmp_path):
  model, history = td.three_step_fit(name, str(tmp_path))
  assert history["loss"][-1] < 0.9 * history["loss"][0], history["loss"]
  _, outputs = td.predict_split(model, str(tmp_path))
  td.check_output_contract(model, outputs)
  assert model.chained is CHAINED[name]


def test_keras_native_save_and_load_round_trip(trained, tmp_path):
  # model.save("m.keras") then tf.keras.models.load_model: same predictions,
  # trains on; the SavedModel export loads with load_model too; summary works
  # after fit. (Before: "expected 0 variables" on load, "Unable to restore
  # custom object of class LogitAUC" for the export, summary "not built".)
  model, _, data_dir, _ = trained
  lines = []
  model.summary(print_fn=lines.append)
  assert any("feature_embedding" in line for line in lines), lines
  batch, _ = td.first_batch(data_dir, split="test", batch_size=64)
  expected = {k: v.numpy() for k, v in model(batch, training=False).items()}

  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  assert type(loaded) is type(model)
  assert loaded.get_config() == model.get_config()
  for name, value in loaded(batch, training=False).items():
    np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
  history = td.fit(loaded, data_dir, epochs=1, batch_size=256)
  assert np.isfinite(history["loss"][-1])

  export_dir = str(tmp_path / "saved_model")
  model.save(export_dir, save_format="tf", include_optimizer=False)
  reloaded = tf.keras.models.load_model(export_dir)
  for name, value in reloaded(batch, training=False).items():
    np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
