"""Tests of launch/benchmark_training.py on a tiny run."""

import json
import os
import subprocess
import sys

import pytest

import tafe_tf  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # 13 s; a speed benchmark, not a user path
def test_tiny_run_prints_a_table_and_writes_json(tmp_path):
  output = tmp_path / "bench.json"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.benchmark_training",
      f"--data_dir={tmp_path / 'data'}",
      "--models=shared_bottom,esmm",
      "--embedding=both",
      "--batch_size=32",
      "--steps=2",
      "--warmup=1",
      "--repeats=1",
      "--profile_top=3",
      f"--run_dir={tmp_path / 'run'}",
      f"--output={output}",
      '--hparams={"tower_units": [8]}',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "shared_bottom fused" in " ".join(result.stdout.split())
  report = json.loads(output.read_text())
  assert json.loads((tmp_path / "run" / "training.json").read_text()) == report
  assert report["command"].startswith("python -m launch.benchmark_training ")
  rows = report["results"]
  assert [(r["model"], r["embedding"]) for r in rows] == [
    ("shared_bottom", "fused"),
    ("shared_bottom", "per_field"),
    ("esmm", "fused"),
    ("esmm", "per_field"),
  ]
  for r in rows:
    assert r["examples_per_second"] > 0 and 0 < r["mfu"] < 1
    assert r["train_flops_per_example"] == 3 * r["forward_flops_per_example"]
    # The profile: the 3 costliest op types, shares of the kernel time.
    profile = r["profile"]
    shares = [t["fraction"] for t in profile["by_type"]]
    assert len(shares) == 3 and shares == sorted(shares, reverse=True)
    assert 0 < sum(shares) <= 1 + 1e-9 and profile["kernel_ms"] > 0
    assert len(profile["by_op"]) == 3
    assert 0 < profile["matmul_ms"] < profile["kernel_ms"]
  assert report["hparams"] == {"tower_units": [8]}
