"""launch.export as a user runs it: a model dir in, a TF Serving version out."""

import os
import subprocess

import multistep_testdata as testdata
import numpy as np
import pytest
import tensorflow as tf
from cli_runner import ROOT, module_command, subprocess_env

import tafe_tf  # noqa: F401
from tafe_tf import config as config_lib
from tafe_tf import export, training


def _export_cmd(*flags):
  return module_command("launch.export", *flags)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("data"))
  schema = testdata.make_dataset_dir(out, num_train=128, num_test=32)
  testdata.write_split(out, schema, "validation", testdata.random_rows(schema, 32, seed=3))
  return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_dir):
  out = str(tmp_path_factory.mktemp("run"))
  training.train(
    data_dir,
    out,
    config_lib.RunConfig.create(
      "tafe",
      hparams=dict(embedding_dim=4, num_experts=2, expert_units=[8], tower_units=[4], seed=0),
      epochs=1,
      steps_per_epoch=2,
      batch_size=32,
      verbose=0,
    ),
  )
  return out


def test_export_writes_one_servable_version(data_dir, model_dir, tmp_path):
  export_dir = str(tmp_path / "models" / "tafe")
  proc = subprocess.run(
    _export_cmd(
      f"--model_dir={model_dir}", f"--export_dir={export_dir}", "--version=7", "--model_name=ranker"
    ),
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  version_dir = os.path.join(export_dir, "7")
  assert proc.stdout.strip().splitlines()[-1] == version_dir
  # Only the version: the staging directory was renamed, not copied.
  assert os.listdir(export_dir) == ["7"]
  assert {"saved_model.pb", "variables", "assets", "assets.extra"} <= set(os.listdir(version_dir))
  logs = export.read_warmup_requests(
    os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
  )
  assert [log.predict_log.request.model_spec.name for log in logs] == ["ranker"]

  # The export serves the trained weights: the same numbers as the model
  # rebuilt from the model directory.
  model = training.load_trained_model(model_dir)
  features, _ = testdata.first_batch(data_dir, "test", 32, dense_padded=True)
  expected = {k: v.numpy() for k, v in model(features).items()}
  served = tf.saved_model.load(version_dir).signatures["serving_default"](**features)
  assert set(served) == set(expected)
  for key in expected:
    np.testing.assert_allclose(served[key].numpy(), expected[key], rtol=0, atol=1e-6, err_msg=key)


def test_bad_flags_fail_with_one_clear_line(model_dir, tmp_path):
  existing = tmp_path / "existing" / "3"
  existing.mkdir(parents=True)
  (existing / "saved_model.pb").write_text("a version being served")
  fresh = tmp_path / "fresh"
  cases = [
    (
      ["--model_dir=/no/such/run", f"--export_dir={fresh}"],
      "export.py: error: --model_dir=/no/such/run: not a trained model "
      "directory (no run.json); train with python -m launch.train first",
    ),
    ([f"--model_dir={model_dir}"], "export.py: error: --export_dir is required"),
    (
      [f"--model_dir={model_dir}", f"--export_dir={fresh}", "--version=0"],
      "flag --version=0: 0 is not a positive integer",
    ),
    (
      [f"--model_dir={model_dir}", f"--export_dir={existing.parent}", "--version=3"],
      f"export.py: error: export version {existing} already exists",
    ),
  ]
  # One process per case, all at once: each spends seconds importing
  # TensorFlow before it can fail.
  procs = [
    subprocess.Popen(
      _export_cmd(*flags),
      cwd=ROOT,
      env=subprocess_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for flags, _ in cases
  ]
  for proc, (flags, message) in zip(procs, cases):
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode != 0, flags
    assert "Traceback" not in stderr, (flags, stderr[-3000:])
    matching = [line for line in stderr.splitlines() if message in line]
    assert len(matching) == 1, (flags, stderr[-3000:])
  assert not fresh.exists()
  assert os.listdir(existing.parent) == ["3"]
  assert (existing / "saved_model.pb").read_text() == "a version being served"
