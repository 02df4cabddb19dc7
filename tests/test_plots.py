"""Tests of tafe_tf.plots: valid, non-blank PNGs; inputs parsed right."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import image as image_lib

import tafe_tf  # noqa: F401
from tafe_tf import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = ("click", "buy")


def assert_png_with_content(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  pixels = image_lib.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
  # A blank canvas has one colour; a drawn plot has many.
  assert pixels[..., :3].var() > 1e-3
  assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20


def sample(n=4000, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.uniform(0.01, 0.6, size=(n, 2))
  y = np.cumprod(rng.uniform(size=(n, 2)) < q, axis=1).astype(np.float32)
  oracle_p = np.cumprod(q, axis=1)
  model_p = np.cumprod(np.clip(q + rng.normal(scale=0.1, size=q.shape), 0.001, 0.999), axis=1)
  return y, model_p, oracle_p


def test_reliability_plot(tmp_path):
  y, p, _ = sample()
  path = str(tmp_path / "plots" / "reliability.png")
  assert plots.plot_reliability(y, p, STEPS, path, num_bins=10) == path
  assert_png_with_content(path)


def test_roc_plot_with_oracle_and_with_a_single_class_step(tmp_path):
  y, p, oracle = sample()
  path = plots.plot_roc(y, p, STEPS, str(tmp_path / "roc.png"), oracle_probs=oracle)
  assert_png_with_content(path)
  y_no_buy = y.copy()
  y_no_buy[:, 1] = 0
  assert_png_with_content(plots.plot_roc(y_no_buy, p, STEPS, str(tmp_path / "roc_one_class.png")))


def test_plots_reject_misshaped_inputs(tmp_path):
  y, p, _ = sample(100)
  with pytest.raises(
    ValueError,
    match=re.escape("probs must be [N, 3] for steps ['click', 'cart', 'buy'], got shape (100, 2)"),
  ):
    plots.plot_roc(np.zeros((100, 3)), p, ["click", "cart", "buy"], str(tmp_path / "x.png"))
  with pytest.raises(ValueError, match=re.escape("probs has shape (50, 2), expected (100, 2)")):
    plots.plot_reliability(y, p[:50], STEPS, str(tmp_path / "x.png"))


def test_training_curves_from_history_dict(tmp_path):
  history = {
    "loss": [0.5, 0.4, 0.35],
    "val_loss": [0.52, 0.45, 0.44],
    "auc/click": [0.6, 0.65, 0.68],
    "val_auc/click": [0.6, 0.63, 0.64],
  }
  path = plots.plot_training_curves(history, str(tmp_path / "curves.png"))
  assert_png_with_content(path)
  with pytest.raises(
    ValueError,
    match=re.escape("metrics ['auc/buy'] not in the history; it has ['loss', 'auc/click']"),
  ):
    plots.plot_training_curves(history, str(tmp_path / "x.png"), metrics=["auc/buy"])


def test_training_curves_from_a_real_csv_logger_file(tmp_path):
  tf.keras.utils.set_random_seed(0)
  x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.float32)
  model = tf.keras.Sequential([tf.keras.layers.Dense(1, activation="sigmoid")])
  model.compile(
    optimizer="adam", loss="binary_crossentropy", metrics=[tf.keras.metrics.AUC(name="auc/click")]
  )
  log_path = str(tmp_path / "history.csv")
  history = model.fit(
    x,
    y,
    validation_data=(x, y),
    epochs=3,
    verbose=0,
    callbacks=[tf.keras.callbacks.CSVLogger(log_path)],
  )
  log = plots.read_training_log(log_path)
  np.testing.assert_array_equal(log["epoch"], [0, 1, 2])
  np.testing.assert_allclose(log["val_auc/click"], history.history["val_auc/click"], rtol=1e-6)
  path = plots.plot_training_curves(
    log_path, str(tmp_path / "curves.png"), metrics=["loss", "auc/click"]
  )
  assert_png_with_content(path)


def test_read_training_log_resumed_epochs_and_missing_values(tmp_path):
  path = tmp_path / "history.csv"
  # A run resumed at epoch 1 appends it again; CSVLogger writes NA for gaps.
  path.write_text("epoch,loss,val_loss\n0,0.5,0.6\n1,0.9,NA\n1,0.4,0.55\n2,0.3,\n")
  log = plots.read_training_log(str(path))
  np.testing.assert_array_equal(log["epoch"], [0, 1, 2])
  np.testing.assert_array_equal(log["loss"], [0.5, 0.4, 0.3])
  np.testing.assert_array_equal(log["val_loss"][:2], [0.6, 0.55])
  assert np.isnan(log["val_loss"][2])


def test_read_training_log_names_file_line_and_column(tmp_path):
  path = tmp_path / "history.csv"
  path.write_text("epoch,loss\n0,0.5\n1,oops\n")
  with pytest.raises(
    ValueError, match=re.escape(f"{path}:3: column 'loss': 'oops' is not a number")
  ):
    plots.read_training_log(str(path))
  path.write_text("epoch,loss\n0,0.5,7\n")
  with pytest.raises(ValueError, match=re.escape(f"{path}:2: 3 cells, header has 2")):
    plots.read_training_log(str(path))
  path.write_text("loss\n0.5\n")
  with pytest.raises(
    ValueError, match=re.escape(f"{path}:1: no 'epoch' column in header ['loss']")
  ):
    plots.read_training_log(str(path))


def test_mean_gate_weights_groups_levels_and_averages():
  gates = {
    "level0/click": np.array([[0.2, 0.8], [0.6, 0.4]]),
    "level0/buy": tf.constant([[1.0, 0.0], [0.0, 1.0]]),
    "level1/click": np.array([[0.1, 0.2, 0.7]]),
  }
  means = plots.mean_gate_weights(gates)
  assert list(means) == ["level0", "level1"]
  assert list(means["level0"]) == ["click", "buy"]
  np.testing.assert_allclose(means["level0"]["click"], [0.4, 0.6])
  np.testing.assert_allclose(means["level0"]["buy"], [0.5, 0.5])
  np.testing.assert_allclose(means["level1"]["click"], [0.1, 0.2, 0.7])
  with pytest.raises(
    ValueError,
    match=re.escape("gate 'level0/click' must be [N, num_experts] with N > 0, got shape (3,)"),
  ):
    plots.mean_gate_weights({"level0/click": np.ones(3)})


def test_gate_weights_heatmap_with_ragged_expert_counts(tmp_path):
  rng = np.random.default_rng(1)

  def softmax(n, k):
    z = np.exp(rng.normal(size=(n, k)))
    return z / z.sum(axis=1, keepdims=True)

  # PLE-like: task gates over 3 experts, the shared gate over 5.
  gates = {
    "level0/click": softmax(200, 3),
    "level0/buy": softmax(200, 3),
    "level0/shared": softmax(200, 5),
    "level1/click": softmax(200, 3),
    "level1/buy": softmax(200, 3),
  }
  path = plots.plot_gate_weights(gates, str(tmp_path / "gates.png"))
  assert_png_with_content(path)
  with pytest.raises(ValueError, match="no gate weights to plot"):
    plots.plot_gate_weights({}, str(tmp_path / "none.png"))
  assert sorted(os.listdir(tmp_path)) == ["gates.png"]
