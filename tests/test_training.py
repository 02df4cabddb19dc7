"""The trainer's pieces that need no subprocess (launch tests cover the rest)."""

import pytest
import tensorflow as tf

from tafe_tf import training


@pytest.mark.parametrize(
  "monitor,values,best",
  [
    ("val_loss", [0.5, 0.4, 0.45], 2),
    ("val_logloss/purchase", [0.3, 0.2, 0.25], 2),
    ("val_auc/purchase", [0.6, 0.7, 0.65], 2),
    ("val_auc/purchase", [0.7, float("nan"), 0.65], 1),
  ],
)
def test_kept_epoch_follows_the_monitor_direction(monitor, values, best, tmp_path):
  keeper = training.KeepBestEpoch(str(tmp_path / "best"), monitor)
  keeper.set_model(tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))]))
  for epoch, value in enumerate(values):
    keeper.on_epoch_end(epoch, {monitor: value})
  assert keeper.best_epoch == best
  resumed = training.KeepBestEpoch(str(tmp_path / "best"), monitor)
  assert resumed.best_epoch == best  # read back from best.json
