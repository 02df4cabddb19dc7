"""tafe_tf.progress: training progress lines of at most 100 columns."""

import io

import multistep_testdata as testdata

from tafe_tf import config as config_lib
from tafe_tf import progress, training


def test_a_line_keeps_the_values_that_fit_in_order():
  logs = {"loss": 0.5, "val_loss": 0.25, "val_auc/purchase": 0.75}
  line = progress.format_line("epoch 1/2  step 3/3  1s", logs, ["loss", "val_loss", "nope"])
  assert line == "epoch 1/2  step 3/3  1s  loss 0.5000  val_loss 0.2500"
  many = {f"val_auc/step_{i}": 0.5 for i in range(20)}
  line = progress.format_line("epoch 1/2", many, list(many))
  assert len(line) <= progress.WIDTH and line.endswith("0.5000")


class _Captured(io.StringIO):
  def isatty(self):  # a terminal: the in-place updates are exercised too
    return True


def test_training_prints_lines_of_at_most_100_columns(tmp_path, capsys):
  data_dir = str(tmp_path / "data")
  schema = testdata.make_dataset_dir(data_dir, num_steps=4, num_train=64, num_test=16)
  testdata.write_split(data_dir, schema, "validation", testdata.random_rows(schema, 16, seed=3))
  training.train(
    data_dir,
    str(tmp_path / "run"),
    config_lib.RunConfig.create(
      "esmm",
      hparams=dict(embedding_dim=4, tower_units=[4], seed=0),
      epochs=2,
      steps_per_epoch=2,
      batch_size=32,
      monitor="val_auc/pay",
      verbose=2,
    ),
  )
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
  assert [line[:20] for line in lines] == ["epoch 1/2  step 2/2 ", "epoch 2/2  step 2/2 "]
  for line in lines:
    assert len(line) <= 100, line
    assert "  loss " in line and "  val_loss " in line and "  val_auc/pay " in line
  history = open(str(tmp_path / "run" / "history.csv")).readline().strip().split(",")
  assert {"auc/pay", "val_logloss/click", "val_pcoc/cart"} <= set(history)  # all logged


def test_in_place_updates_on_a_terminal_stay_within_100_columns():
  out = _Captured()
  bar = progress.CompactProgress(("loss", "val_loss"), stream=out)
  bar.set_params({"verbose": 1, "epochs": 1, "steps": 3})
  bar.on_epoch_begin(0)
  bar._last_update = -1e9  # (the update interval has passed)
  bar.on_train_batch_end(0, {"loss": 0.75})
  bar.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.25})
  chunks = out.getvalue().split("\r")[1:]
  assert [len(c.rstrip("\n")) <= 100 for c in chunks] == [True, True]
  assert chunks[0].startswith("epoch 1/1  step 1/3") and "loss 0.7500" in chunks[0]
  assert chunks[1].rstrip().endswith("loss 0.5000  val_loss 0.2500") and chunks[1].endswith("\n")
