"""The trainer's pieces that need no subprocess (launch tests cover the rest)."""

import os

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

from tafe_tf import config as config_lib
from tafe_tf import features as features_lib
from tafe_tf import models, training


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


@pytest.mark.parametrize(
  "monitor,ok",
  [
    ("val_loss", True),
    ("val_auc_conditional/cart", True),
    ("val_auc", False),
    ("auc/click", False),
  ],
)
def test_a_mistyped_monitor_fails_before_any_work(tmp_path, monitor, ok):
  # Before: a KeyError traceback after a whole epoch.
  data_dir = str(tmp_path / "data")
  schema = td.make_dataset_dir(data_dir)
  td.write_split(data_dir, schema, "validation", td.random_rows(schema, 16, seed=5))
  if ok:
    training.check_trainable(data_dir, schema, monitor)
    return
  with pytest.raises(
    ValueError, match=f"--monitor={monitor}: not a validation quantity; one of val_loss"
  ):
    training.check_trainable(data_dir, schema, monitor)


def test_an_empty_or_missing_validation_split_fails_before_any_work(tmp_path):
  data_dir = str(tmp_path / "data")
  schema = td.make_dataset_dir(data_dir)
  with pytest.raises(ValueError, match="no 'validation' shards.*--validation_fraction"):
    training.check_trainable(data_dir, schema, "val_loss")
  td.write_split(data_dir, schema, "validation", [])
  with pytest.raises(ValueError, match="the validation split is empty"):
    training.check_trainable(data_dir, schema, "val_loss")
  with pytest.raises(ValueError, match="no 'validation' shards|the validation split is empty"):
    training.train(data_dir, str(tmp_path / "model"), config_lib.RunConfig.create("esmm", epochs=1))
  assert not os.path.exists(str(tmp_path / "model" / "run.json"))


@pytest.mark.parametrize("name", ["escm2", "dcmt"])
def test_models_with_loss_only_layers_train_and_reload(tmp_path, name):
  # Before: the optimizer met ESCM2's imputation tower only inside the first
  # step ("cannot recognize variable imputation/..."): compile saw fewer
  # variables than the loss trains.
  data_dir = str(tmp_path / "data")
  schema = td.make_dataset_dir(data_dir)
  td.write_split(data_dir, schema, "validation", td.random_rows(schema, 64, seed=5))
  run = config_lib.RunConfig.create(name, hparams={"tower_units": [4]}, epochs=1, verbose=0)
  result = training.train(data_dir, str(tmp_path / "model"), run)
  loaded = training.load_trained_model(str(tmp_path / "model"))
  features = features_lib.dummy_batch(schema)
  np.testing.assert_allclose(
    loaded(features)["ctcvr"].numpy(), result.model(features)["ctcvr"].numpy(), rtol=1e-5
  )


def test_a_resumed_run_reads_on_from_the_backed_up_step(tmp_path):
  # Before: the resumed fit started the repeated training split from its first
  # batch again, so a killed-and-rerun training saw other batches than an
  # uninterrupted one (predictions 3e-2 apart in the soak benchmark).
  backup = str(tmp_path / "backup")
  assert training.backed_up_steps(backup) == 0
  model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
  model.compile(tf.keras.optimizers.Adam(), "mse")
  xy = (np.zeros((20, 2), np.float32), np.zeros((20, 1), np.float32))
  ds = tf.data.Dataset.from_tensor_slices(xy).batch(2).repeat()
  backup_cb = tf.keras.callbacks.BackupAndRestore(backup, save_freq=3, delete_checkpoint=False)
  model.fit(ds, epochs=1, steps_per_epoch=7, callbacks=[backup_cb], verbose=0)
  assert training.backed_up_steps(backup) == 6  # the last backup, after step 6

  data_dir = str(tmp_path / "data")
  schema = td.make_dataset_dir(data_dir, num_train=64)
  td.write_split(data_dir, schema, "validation", td.random_rows(schema, 16, seed=5))
  run = config_lib.RunConfig.create("esmm", epochs=1, shuffle=True)
  esmm = models.build_model("esmm", schema, seed=0)

  def first_ids(skip):
    train, _, _ = training._datasets(
      data_dir, (64, 16), schema, run, tf.distribute.get_strategy(), esmm, 8, skip_batches=skip
    )
    return [b[0]["user"].numpy().tolist() for b in train.take(3)]

  unskipped = first_ids(0)
  assert first_ids(1)[:2] == unskipped[1:3]
