"""launch.train as a user runs it: resume after SIGKILL, one-line errors."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import multistep_testdata as td
import numpy as np
import pytest
from cli_runner import ROOT, module_command, run_module, subprocess_env

from tafe_tf import config as config_lib
from tafe_tf import hparams as hparams_lib
from tafe_tf import input_pipeline, models, training
from tafe_tf.data import synthetic

TINY_MODEL = [
  "--embedding_dim=4",
  "--num_experts=2",
  "--expert_units=16",
  "--tower_units=8",
  "--batch_size=64",
]


def _train_cmd(*flags):
  return module_command("launch.train", *flags)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_dataset(
    out,
    synthetic.SyntheticConfig(seed=3),
    num_train=4000,
    num_validation=500,
    num_test=500,
    num_shards=2,
  )
  return out


@pytest.mark.slow  # long (multi-process or a full run); -m slow runs it
def test_killed_run_resumes_and_ends_with_the_same_step_count(data_dir, tmp_path):
  model_dir = str(tmp_path / "run")
  cmd = _train_cmd(
    f"--data_dir={data_dir}",
    "--dataset=tfrecord",
    f"--model_dir={model_dir}",
    "--epochs=2",
    "--steps_per_epoch=40",
    "--checkpoint_every_steps=5",
    "--evaluate=false",
    "--export=false",
    *TINY_MODEL,
  )
  proc = subprocess.Popen(
    cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  backup = os.path.join(model_dir, "backup")
  deadline = time.time() + 240
  try:
    # Kill as soon as the first mid-epoch backup is complete: the checkpoint
    # state file ("checkpoint") is written after the data and index files.
    while time.time() < deadline and proc.poll() is None:
      if os.path.isdir(backup) and any("checkpoint" in files for _, _, files in os.walk(backup)):
        break
      time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert not os.path.exists(os.path.join(model_dir, "train_report.json"))

  done = run_module(*cmd[2:], timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.load(open(os.path.join(model_dir, "train_report.json")))
  assert report["optimizer_steps"] == 2 * 40
  assert 0 < report["resumed_from_step"] < 80
  assert report["resumed_from_step"] % 5 == 0
  # Keras deletes the backup of a finished run (an empty folder may stay).
  assert not [f for _, _, files in os.walk(backup) for f in files]
  epochs = [
    line.split(",")[0]
    for line in open(os.path.join(model_dir, "history.csv")).read().splitlines()[1:]
  ]
  assert epochs[-1] == "1"  # epochs are 0-based in Keras' CSV log


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--model=nope"], "--model"),
    (
      ["--dataset=ali_ccp", "--data_dir=/no/such/dir"],
      "error: --data_dir=/no/such/dir: no such directory",
    ),
    (["--dataset=aliexpress"], "error: --data_dir is required"),
    (["--expert_units=64,x"], "error: --expert_units: expected integers"),
    (["--epochs=0"], "--epochs"),
    (["stray_argument"], "error: unexpected arguments: stray_argument"),
  ],
)
def test_bad_flags_fail_before_work_with_one_clear_line(flags, message):
  proc = run_module("launch.train", *flags, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


def test_dataset_flag_must_match_the_converted_data(data_dir):
  proc = run_module("launch.train", "--dataset=aliexpress", f"--data_dir={data_dir}", timeout=120)
  assert proc.returncode == 2
  assert (
    f"error: --data_dir={data_dir} holds dataset 'synthetic', not 'aliexpress'"
  ) in proc.stderr


FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.mark.parametrize(
  "fmt,dataset,fixture",
  [
    # 21 s: the processed Ali-CCP rows take the same path in the fast suite.
    pytest.param("aliexpress", "aliexpress", "aliexpress", marks=pytest.mark.slow),
    ("ali_ccp_processed", "ali_ccp", "ali_ccp_processed"),
  ],
)
def test_real_fixture_rows_convert_train_evaluate_and_export(fmt, dataset, fixture, tmp_path):
  """The README's real-data path on real rows: convert, train, evaluate."""
  data_dir = str(tmp_path / "data")
  convert = run_module(
    "launch.convert",
    f"--format={fmt}",
    f"--raw_dir={os.path.join(FIXTURES, fixture)}",
    f"--out_dir={data_dir}",
    "--min_count=0",
    "--validation_fraction=0.3",
    "--num_shards=1",
    "--workers=1",
    timeout=120,
  )
  assert convert.returncode == 0, convert.stderr[-2000:]
  model_dir = str(tmp_path / "run")
  train = run_module(
    "launch.train",
    f"--dataset={dataset}",
    f"--data_dir={data_dir}",
    f"--model_dir={model_dir}",
    "--epochs=1",
    "--batch_size=16",
    "--embedding_dim=4",
    "--num_experts=2",
    "--expert_units=8",
    "--tower_units=4",
    timeout=300,
  )
  assert train.returncode == 0, train.stderr[-3000:]
  report = json.load(open(os.path.join(model_dir, "eval", "test.json")))
  for step in ("click", "purchase"):
    assert 0.0 < report[f"logloss/{step}"] < 5.0
    assert f"oracle_auc/{step}" not in report  # real data: no oracle
  assert report["num_examples"] > 0
  exports = os.listdir(os.path.join(model_dir, "export"))
  assert len(exports) == 1 and exports[0].isdigit()


# --- the run config: --hparams, --config, reruns ------------------------------

TINY_RUN = [
  "--dataset=synthetic",
  "--synthetic_train_rows=2000",
  "--synthetic_eval_rows=300",
  "--epochs=1",
  "--batch_size=256",
  "--noevaluate",
  "--noexport",
  "--embedding_dim=4",
]
# Same floating-point results in two processes (the --config repeat).
DETERMINISTIC = subprocess_env(TF_DETERMINISTIC_OPS="1")


def _without_provenance(run):
  return {k: v for k, v in run.items() if k != "provenance"}


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


@pytest.fixture(scope="module")
def tafe_run(tmp_path_factory):
  """A finished tiny TAFE run with transfer off: (command flags, model dir)."""
  root = tmp_path_factory.mktemp("tafe_run")
  flags = [
    f"--data_dir={root / 'synthetic'}",
    "--model=tafe",
    '--hparams={"transfer": "none", "expert_units": [8], "tower_units": [4]}',
    *TINY_RUN,
  ]
  model_dir = str(root / "run")
  proc = run_module("launch.train", *flags, f"--model_dir={model_dir}", env=DETERMINISTIC)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return flags, model_dir


def test_hparams_are_recorded_in_run_json_which_is_the_config(tafe_run):
  _, model_dir = tafe_run
  run = json.load(open(os.path.join(model_dir, "run.json")))
  assert run["model"]["name"] == "tafe"
  assert run["model"]["hparams"]["transfer"] == "none"
  assert run["model"]["hparams"]["expert_units"] == [8]
  assert run["model"]["hparams"]["embedding_dim"] == 4  # the shortcut flag
  assert run["model"]["hparams"]["num_experts"] == 4  # TAFEHParams' default
  assert run["training"]["epochs"] == 1 and run["export"]["evaluate"] is False
  assert os.path.isabs(run["data"]["data_dir"])
  assert set(run["provenance"]) == {"tafe_tf_version", "tensorflow_version"}
  rebuilt = config_lib.RunConfig.from_json(run)
  assert rebuilt.to_json() == _without_provenance(run)


def test_config_repeats_a_run(tafe_run, tmp_path):
  _, first = tafe_run
  again = str(tmp_path / "again")
  proc = run_module(
    "launch.train",
    f"--config={os.path.join(first, 'run.json')}",
    f"--model_dir={again}",
    env=DETERMINISTIC,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = [json.load(open(os.path.join(d, "run.json"))) for d in (first, again)]
  assert _without_provenance(runs[0]) == _without_provenance(runs[1])
  reports = [json.load(open(os.path.join(d, "train_report.json"))) for d in (first, again)]
  assert reports[0]["best_value"] == pytest.approx(reports[1]["best_value"], abs=1e-6)
  data_dir = runs[0]["data"]["data_dir"]
  feats, _ = next(iter(input_pipeline.make_dataset(data_dir, "test", 16)))
  predictions = [
    training.load_trained_model(d)(feats)["p_purchase"].numpy() for d in (first, again)
  ]
  np.testing.assert_allclose(predictions[0], predictions[1], atol=1e-6)


def test_identical_finished_rerun_exits_0_without_training(tafe_run):
  flags, model_dir = tafe_run
  history = _read(os.path.join(model_dir, "history.csv"))
  report = _read(os.path.join(model_dir, "train_report.json"))
  proc = run_module(
    "launch.train", *flags, f"--model_dir={model_dir}", "--verbose=0"
  )  # verbosity is no part of the run
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"{model_dir} holds this run, finished" in proc.stdout
  assert _read(os.path.join(model_dir, "history.csv")) == history
  assert _read(os.path.join(model_dir, "train_report.json")) == report


def test_another_run_in_the_same_dir_fails_naming_the_keys(tafe_run):
  flags, model_dir = tafe_run
  changed = [f for f in flags if not f.startswith("--hparams")]
  proc = run_module("launch.train", *changed, "--epochs=2", f"--model_dir={model_dir}")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].endswith(
    f": error: {model_dir} holds a different run (differing: "
    "model.hparams.expert_units, model.hparams.tower_units, "
    "model.hparams.transfer, training.epochs); use a new --model_dir, or "
    "--overwrite to replace that run"
  )
  assert "Traceback" not in proc.stderr


def test_overwrite_replaces_the_previous_run(tafe_run, tmp_path):
  flags, model_dir = tafe_run
  target = str(tmp_path / "run")
  shutil.copytree(model_dir, target)
  changed = [f for f in flags if not f.startswith("--hparams")]
  proc = run_module(
    "launch.train",
    *changed,
    "--model=esmm",
    '--hparams={"tower_units": [4]}',
    "--overwrite",
    f"--model_dir={target}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  run = json.load(open(os.path.join(target, "run.json")))
  assert run["model"] == {
    "name": "esmm",
    "hparams": dict(models.hparams_class("esmm")().to_json(), embedding_dim=4, tower_units=[4]),
  }
  # One epoch of the new run only: the old history went with the old run.
  assert len(_read(os.path.join(target, "history.csv")).splitlines()) == 2


@pytest.mark.parametrize(
  "flags,message",
  [
    (
      ["--model=mmoe", '--hparams={"num_levels": 3}'],
      "error: model.hparams: mmoe takes no hyperparameter 'num_levels'; its "
      "hyperparameters: "
      + ", ".join(sorted(f.name for f in dataclasses.fields(hparams_lib.MMoEHParams))),
    ),
    (
      ["--model=esmm", "--num_experts=2"],
      "error: model.hparams: esmm takes no hyperparameter 'num_experts'",
    ),
    (['--hparams={"transfer": "none"'], "error: --hparams: not JSON: "),
    (["--hparams=[1]"], "error: --hparams: expected a JSON object"),
    (
      ['--hparams={"top_k": "two"}'],
      "error: model.hparams.top_k: expected null or an integer, got 'two'",
    ),
    (
      ['--hparams={"dropout": 0.1}', "--dropout=0.2"],
      "error: --dropout and --hparams both set dropout; give it once",
    ),
    (["--config=/no/such/run.json"], "error: --config=/no/such/run.json: no such file"),
  ],
)
def test_config_errors_are_one_line_before_any_work(flags, message):
  proc = run_module("launch.train", *flags, "--model_dir=/nonexistent/x", timeout=120)
  assert proc.returncode == 2
  assert message in proc.stderr.strip().splitlines()[-1]
  assert "Traceback" not in proc.stderr
  assert not os.path.exists("/nonexistent/x")


# Each model's hparams, every field set to a value other than its default,
# parsed by launch.train's own flag handling (no training: one process).
_PARSE_ALL = r"""
import json, sys
from absl import flags
from tafe_tf import models
from tafe_tf.launch import train
cases = json.loads(sys.argv[1])
out = {}
for name, hparams in cases.items():
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["train", f"--model={name}", "--hparams=" + json.dumps(hparams)])
  out[name] = train.run_config_from_flags().to_json()["model"]
print("RESULT " + json.dumps(out))
"""


def test_every_hparam_of_every_model_is_reachable_with_hparams():
  cases = {name: td.non_default_hparams(name) for name in models.MODEL_NAMES}
  proc = subprocess.run(
    [sys.executable, "-c", _PARSE_ALL, json.dumps(cases)],
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  for name, hparams in cases.items():
    assert result[name] == {"name": name, "hparams": hparams}
    assert all(hparams[k] != v for k, v in models.hparams_class(name)().to_json().items())
