"""launch.benchmark_serving end to end, tiny: train, export, time, report.

Run as a subprocess: the launch modules define absl flags, and two of them
imported into one pytest process would define ``--output`` twice.
"""

import json
import os

import numpy as np
import pytest
from cli_runner import run_module


def _run(*flags):
  return run_module("launch.benchmark_serving", *flags, timeout=400)


@pytest.mark.slow  # a whole benchmark run; -m slow runs it
def test_benchmark_times_both_signatures_per_batch_size(tmp_path):
  output = tmp_path / "serving.json"
  export_dir = tmp_path / "export"
  proc = _run(
    f"--data_dir={tmp_path / 'data'}",
    "--model=mmoe",
    '--hparams={"embedding_dim": 4, "expert_units": [8], "tower_units": [4], "num_experts": 2}',
    "--train_steps=2",
    "--train_batch_size=32",
    "--batch_sizes=1,7",
    "--num_calls=5",
    "--warmup_calls=1",
    f"--export_dir={export_dir}",
    f"--output={output}",
    f"--run_dir={tmp_path / 'run'}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(output.read_text())
  assert json.loads((tmp_path / "run" / "serving.json").read_text()) == result
  assert result["model"] == "mmoe" and result["num_steps"] == 2
  assert result["hparams"]["embedding_dim"] == 4
  assert [(r["signature"], r["batch_size"]) for r in result["results"]] == [
    ("serving_default", 1),
    ("serving_examples", 1),
    ("serving_default", 7),
    ("serving_examples", 7),
  ]
  for r in result["results"]:
    ms = r["latency_ms"]
    assert 0 < ms["min"] <= ms["p50"] <= ms["p99"]
    np.testing.assert_allclose(r["rows_per_second"], r["batch_size"] * 1000 / ms["mean"])
  # The export it timed is kept where asked, and its size adds up.
  version = result["export_path"]
  assert os.path.dirname(version) == str(export_dir)
  assert os.listdir(export_dir) == [os.path.basename(version)]
  size = result["export_bytes"]
  assert size["total"] == sum(v for k, v in size.items() if k != "total")
  assert size["variables"] == sum(
    os.path.getsize(os.path.join(version, "variables", f))
    for f in os.listdir(os.path.join(version, "variables"))
  )
  assert result["command"].startswith("python -m launch.benchmark_serving ")
  # The printed table has a row per signature and batch size.
  table = [line.split() for line in proc.stdout.splitlines()]
  assert [row[:2] for row in table if row and row[0].startswith("serving_")] == [
    ["serving_default", "1"],
    ["serving_examples", "1"],
    ["serving_default", "7"],
    ["serving_examples", "7"],
  ]


@pytest.mark.slow  # 12 s of subprocesses; tests/launch/test_common.py covers the one-line form
def test_bad_flags_fail_with_one_clear_line(tmp_path):
  for flags, message in [
    (["--batch_sizes=1,x"], "--batch_sizes: expected integers, got ['1', 'x']"),
    (
      ["--model=nope"],
      "flag --model=nope: value should be one of <tafe|esmm|mmoe|ple|aitm|shared_bottom|escm2|dcmt>",
    ),
    (
      ["--hparams={"],
      "--hparams: not JSON: Expecting property name "
      "enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    (
      [f"--model_dir={tmp_path}"],
      f"--model_dir={tmp_path}: not a trained "
      "model directory (no run.json); train with python -m launch.train "
      "first",
    ),
  ]:
    proc = _run(*flags)
    assert proc.returncode == 2, flags
    assert proc.stderr.splitlines() == [f"benchmark_serving.py: error: {message}"], flags
