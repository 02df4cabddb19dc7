"""launch.benchmark_distribution on tiny flags, as a user runs it (subprocess).

absl flags are process-global, hence a subprocess per run (tests/cli_runner.py).
"""

import json
import math

import pytest
from cli_runner import run_module

TINY = [
  '--hparams={"embedding_dim": 4, "tower_units": [8]}',
  "--global_batch=64",
  "--steps=3",
  "--warmup=1",
  "--repeats=2",
]


@pytest.mark.slow  # a whole benchmark run; -m slow runs it
def test_devices_pair_reports_steady_state_rates_at_one_global_batch(tmp_path):
  output = tmp_path / "distribution.json"
  proc = run_module(
    "launch.benchmark_distribution",
    *TINY,
    "--parts=devices",
    f"--data_dir={tmp_path / 'data'}",
    f"--output={output}",
    f"--run_dir={tmp_path / 'run'}",
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / "run" / "distribution.json").read_text() == (output.read_text())
  rows = {r["configuration"]: r for r in json.loads(output.read_text())["results"]}
  assert list(rows) == ["one_device", "mirrored_2_devices"]
  assert [r["replicas"] for r in rows.values()] == [1, 2]
  for r in rows.values():
    assert r["global_batch"] == 64 and r["examples_per_step"] == 64
    assert math.isfinite(r["examples_per_second"])
    assert r["examples_per_second"] > 0
  assert math.isclose(
    rows["mirrored_2_devices"]["relative_to_one"],
    rows["mirrored_2_devices"]["examples_per_second"] / rows["one_device"]["examples_per_second"],
  )


@pytest.mark.slow  # ~27 s: the devices pair above runs in the fast suite
def test_both_pairs_report_steady_state_rates_at_one_global_batch(tmp_path):
  output = tmp_path / "distribution.json"
  proc = run_module(
    "launch.benchmark_distribution",
    *TINY,
    f"--data_dir={tmp_path / 'data'}",
    f"--output={output}",
    f"--run_dir={tmp_path / 'run'}",
    "--worker_timeout_s=240",
    timeout=400,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(output.read_text())
  rows = {r["configuration"]: r for r in result["results"]}
  assert list(rows) == ["one_device", "mirrored_2_devices", "multi_worker_1", "multi_worker_2"]
  assert [(r["pair"], r["replicas"], r["workers"]) for r in rows.values()] == [
    ("devices", 1, 1),
    ("devices", 2, 1),
    ("workers", 1, 1),
    ("workers", 2, 2),
  ]
  assert rows["mirrored_2_devices"]["strategy"] == "MirroredStrategy"
  assert rows["multi_worker_2"]["strategy"] == "CollectiveAllReduceStrategy"
  for r in rows.values():
    assert math.isfinite(r["examples_per_second"])
    assert r["examples_per_second"] > 0
    # Measured, not configured: the examples the loss mean counted over all
    # replicas and workers per step.
    assert r["global_batch"] == 64 and r["examples_per_step"] == 64
    assert math.isclose(r["examples_per_second"], 64 * 1000 / r["step_ms"], rel_tol=1e-9)
  for first, second in (("one_device", "mirrored_2_devices"), ("multi_worker_1", "multi_worker_2")):
    assert rows[first]["global_batch"] == rows[second]["global_batch"]
    assert rows[first]["relative_to_one"] == 1.0
    assert math.isclose(
      rows[second]["relative_to_one"],
      rows[second]["examples_per_second"] / rows[first]["examples_per_second"],
    )
  two = rows["multi_worker_2"]
  assert len(two["per_worker_examples_per_second"]) == 2
  assert two["examples_per_second"] == min(two["per_worker_examples_per_second"])
  assert len(result["load_average"]["before"]) == 3
  assert len(result["load_average"]["after"]) == 3
  assert "overhead of each strategy, not a speed-up" in result["caption"]
  assert result["caption"] in " ".join(proc.stdout.split())
  assert "mirrored_2_devices" in proc.stdout


def test_workers_past_the_timeout_are_killed_and_named(tmp_path):
  # One second is less than a worker needs to start TensorFlow.
  proc = run_module(
    "launch.benchmark_distribution",
    *TINY,
    "--parts=workers",
    f"--data_dir={tmp_path / 'data'}",
    f"--run_dir={tmp_path / 'run'}",
    "--worker_timeout_s=1",
    timeout=200,
  )
  assert proc.returncode == 2
  log = tmp_path / "run" / "workers-1" / "worker-0.log"
  assert proc.stderr.splitlines() == [
    "benchmark_distribution.py: error: the 1-worker configuration failed: "
    f"worker(s) 0 of 1 still running after 1 s (killed); {log} ends with:"
  ]
  assert log.exists()  # kept in the run dir, for a look
