"""Tests of MMoE: learning, outputs, save/restore, three steps."""


import numpy as np
import pytest
import tafe_tf  # noqa: F401
import tensorflow as tf

import multistep_testdata as td

from tafe_tf import features as features_lib  # noqa: E402
from tafe_tf import models  # noqa: E402

MODEL = "mmoe"


@pytest.fixture(name="trained", scope="module")
def _trained(tmp_path_factory):
  """The model after 2 epochs on 8000 synthetic rows (T = 2)."""
  data_dir, report = td.learning_dataset(str(tmp_path_factory.mktemp("data")))
  tf.keras.utils.set_random_seed(0)
  model = models.build_model(MODEL, features_lib.Schema.load(data_dir),
                             **td.LEARNING_HPARAMS)
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


def test_three_steps_fit_and_loss_drops(tmp_path):
  model, history = td.three_step_fit(MODEL, str(tmp_path))
  assert history["loss"][-1] < 0.9 * history["loss"][0], history["loss"]
  _, outputs = td.predict_split(model, str(tmp_path))
  td.check_output_contract(model, outputs)
  assert model.chained is False


def test_one_gate_per_step_over_all_experts(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_steps=3, num_train=32,
                               num_test=8)
  feats, _ = td.first_batch(str(tmp_path), batch_size=16)
  model = models.build_model(MODEL, schema, num_experts=6, top_k=3, seed=0)
  gates = {k: v.numpy() for k, v in model.gate_weights(feats).items()}
  assert set(gates) == {f"level0/{s}" for s in schema.steps}
  for weights in gates.values():
    assert weights.shape == (16, 6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert (np.count_nonzero(weights, axis=-1) == 3).all()
