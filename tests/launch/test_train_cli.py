"""launch.train as a user runs it: resume after SIGKILL, one-line errors."""

import json
import os
import signal
import subprocess
import time

import pytest

from tafe_tf.data import synthetic

from cli_runner import ROOT, module_command, run_module, subprocess_env

TINY_MODEL = ["--embedding_dim=4", "--num_experts=2", "--expert_units=16",
              "--tower_units=8", "--batch_size=64"]


def _train_cmd(*flags):
  return module_command("launch.train", *flags)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_dataset(out, synthetic.SyntheticConfig(seed=3),
                          num_train=4000, num_validation=500, num_test=500,
                          num_shards=2)
  return out


def test_killed_run_resumes_and_ends_with_the_same_step_count(data_dir,
                                                              tmp_path):
  model_dir = str(tmp_path / "run")
  cmd = _train_cmd(f"--data_dir={data_dir}", "--dataset=tfrecord",
                   f"--model_dir={model_dir}", "--epochs=2",
                   "--steps_per_epoch=40", "--checkpoint_every_steps=5",
                   "--evaluate=false", "--export=false", *TINY_MODEL)
  proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  backup = os.path.join(model_dir, "backup")
  deadline = time.time() + 240
  try:
    # Kill as soon as the first mid-epoch backup is complete: the checkpoint
    # state file ("checkpoint") is written after the data and index files.
    while time.time() < deadline and proc.poll() is None:
      if os.path.isdir(backup) and any(
          "checkpoint" in files for _, _, files in os.walk(backup)):
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
  epochs = [line.split(",")[0] for line in open(
      os.path.join(model_dir, "history.csv")).read().splitlines()[1:]]
  assert epochs[-1] == "1"  # epochs are 0-based in Keras' CSV log


@pytest.mark.parametrize("flags,message", [
    (["--model=nope"], "--model"),
    (["--dataset=ali_ccp", "--data_dir=/no/such/dir"],
     "error: --data_dir=/no/such/dir: no such directory"),
    (["--dataset=aliexpress"], "error: --data_dir is required"),
    (["--expert_units=64,x"], "error: --expert_units: expected integers"),
    (["--epochs=0"], "--epochs"),
    (["stray_argument"], "error: unexpected arguments: stray_argument"),
])
def test_bad_flags_fail_before_work_with_one_clear_line(flags, message):
  proc = run_module("launch.train", *flags, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


def test_dataset_flag_must_match_the_converted_data(data_dir):
  proc = run_module("launch.train", "--dataset=aliexpress",
                    f"--data_dir={data_dir}", timeout=120)
  assert proc.returncode == 2
  assert (f"error: --data_dir={data_dir} holds dataset 'synthetic', not "
          "'aliexpress'") in proc.stderr


FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.mark.parametrize("fmt,dataset,fixture", [
    ("aliexpress", "aliexpress", "aliexpress"),
    ("ali_ccp_processed", "ali_ccp", "ali_ccp_processed"),
])
def test_real_fixture_rows_convert_train_evaluate_and_export(
    fmt, dataset, fixture, tmp_path):
  """The README's real-data path on real rows: convert, train, evaluate."""
  data_dir = str(tmp_path / "data")
  convert = run_module(
      "launch.convert", f"--format={fmt}",
      f"--raw_dir={os.path.join(FIXTURES, fixture)}", f"--out_dir={data_dir}",
      "--min_count=0", "--validation_fraction=0.3", "--num_shards=1",
      "--workers=1", timeout=120)
  assert convert.returncode == 0, convert.stderr[-2000:]
  model_dir = str(tmp_path / "run")
  train = run_module(
      "launch.train", f"--dataset={dataset}", f"--data_dir={data_dir}",
      f"--model_dir={model_dir}", "--epochs=1", "--batch_size=16",
      "--embedding_dim=4", "--num_experts=2", "--expert_units=8",
      "--tower_units=4", timeout=300)
  assert train.returncode == 0, train.stderr[-3000:]
  report = json.load(open(os.path.join(model_dir, "eval", "test.json")))
  for step in ("click", "purchase"):
    assert 0.0 < report[f"logloss/{step}"] < 5.0
    assert f"oracle_auc/{step}" not in report  # real data: no oracle
  assert report["num_examples"] > 0
  exports = os.listdir(os.path.join(model_dir, "export"))
  assert len(exports) == 1 and exports[0].isdigit()

