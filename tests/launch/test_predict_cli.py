"""launch.predict as a user runs it: a model (dir or export) and a split in, a CSV out."""

import csv

import multistep_testdata as testdata
import pytest
from cli_runner import run_module

import tafe_tf  # noqa: F401
from tafe_tf import config as config_lib
from tafe_tf import export, training


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("predict")
  data_dir = str(root / "data")
  schema = testdata.make_dataset_dir(data_dir, num_train=64, num_test=21)
  testdata.write_split(data_dir, schema, "validation", testdata.random_rows(schema, 16, seed=3))
  model_dir = str(root / "run")
  result = training.train(
    data_dir,
    model_dir,
    config_lib.RunConfig.create(
      "mmoe",
      hparams=dict(embedding_dim=4, num_experts=2, expert_units=[4], tower_units=[4], seed=0),
      epochs=1,
      steps_per_epoch=1,
      batch_size=32,
      verbose=0,
    ),
  )
  export_dir = str(root / "export")
  export.export_saved_model(result.model, result.schema, export_dir, version=3)
  return {"data": data_dir, "model": model_dir, "export": export_dir, "root": root}


def _rows(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.reader(f))


def test_the_export_scores_a_split_into_a_csv(run):
  # (tests/test_prediction.py: the model dir and its export write the same file.)
  out = str(run["root"] / "e.csv")
  result = run_module(
    "launch.predict",
    f"--export_dir={run['export']}",
    f"--input={run['data']}",
    "--split=test",
    f"--output={out}",
    "--batch_size=8",
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f"21 rows (row, p_ and q_ per step) -> {out}"
  assert result.stderr == ""  # TensorFlow's noise is off by default
  rows = _rows(out)
  assert rows[0] == ["row", "p_click", "q_click", "p_cart", "q_cart"]
  assert [r[0] for r in rows[1:]] == [str(i) for i in range(21)]
  assert all(0.0 < float(v) < 1.0 for r in rows[1:] for v in r[1:])


@pytest.mark.slow
def test_the_model_dir_scores_the_same_csv(run):
  out = str(run["root"] / "m.csv")
  result = run_module(
    "launch.predict",
    f"--model_dir={run['model']}",
    f"--input={run['data']}",
    f"--output={out}",
    "--batch_size=8",
  )
  assert result.returncode == 0, result.stderr
  if not (run["root"] / "e.csv").exists():
    test_the_export_scores_a_split_into_a_csv(run)
  assert _rows(out) == _rows(str(run["root"] / "e.csv"))


@pytest.mark.parametrize(
  "flags, message",
  [
    (
      ["--model_dir={model}", "--export_dir={export}", "--output=x.csv"],
      "give one of --model_dir and --export_dir",
    ),
    (
      ["--model_dir={model}", "--input={data}", "--split=nope", "--output=x.csv"],
      "--input={data} --split=nope: no 'nope' shards (nope-*-of-*.tfrecord.gz) in {data}",
    ),
  ],
)
def test_bad_flags_fail_with_one_clear_line(run, flags, message):
  values = {k: run[k] for k in ("model", "export", "data", "root")}
  result = run_module("launch.predict", *[f.format(**values) for f in flags])
  assert result.returncode == 2, result.stderr
  [line] = result.stderr.splitlines()
  assert line.startswith("predict.py: error: " + message.format(**values)), line
