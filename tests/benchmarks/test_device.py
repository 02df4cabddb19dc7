"""Tests of the device benchmark (benchmarks/device.py, launch/benchmark_device.py).

The decisions (where a sweep stops, the largest batch that fits, what the
next measurement costs) are pure functions over measured records and are
tested on records; the timer on a tiny Keras model; the whole run end to end
on the CPU, through the command line.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from cli_runner import run_module

import tafe_tf  # noqa: F401
from tafe_tf.benchmarks import device, stages


def _sweep(model, batch, status, rate=None, seconds=4.0, window=3.0):
  return {
    "part": "sweep",
    "data": "synthetic",
    "model": model,
    "batch_size": batch,
    "status": status,
    "examples_per_second": rate if status == "ok" else None,
    "seconds": seconds,
    "window_seconds": window if status == "ok" else 0.0,
  }


def test_doubling_and_the_default_batch_sizes():
  assert device.doubling(256, 2048) == (256, 512, 1024, 2048)
  assert device.doubling(3, 20) == (3, 6, 12)
  assert device.DEFAULT_BATCH_SIZES["GPU"] == (2048, 4096, 8192, 16384, 32768, 65536)
  assert device.DEFAULT_BATCH_SIZES["CPU"] == (256, 512, 1024, 2048)
  with pytest.raises(ValueError, match="1 <= low <= high"):
    device.doubling(8, 4)


def test_a_sweep_stops_at_the_first_out_of_memory_batch():
  sizes = device.DEFAULT_BATCH_SIZES["GPU"]
  records = [
    _sweep("tafe", 2048, "ok", 100.0),
    _sweep("esmm", 2048, "ok", 300.0),
    _sweep("tafe", 4096, "ok", 150.0),
    _sweep("esmm", 4096, "ok", 250.0),
    _sweep("tafe", 8192, "oom"),
  ]
  assert device.first_oom_batch(records, "tafe") == 8192
  assert device.first_oom_batch(records, "esmm") is None
  # Nothing above the OOM batch runs; what is not measured yet does otherwise.
  assert device.remaining_sweep(records, "tafe", sizes) == ([], [16384, 32768, 65536])
  assert device.remaining_sweep(records, "esmm", sizes) == ([8192, 16384, 32768, 65536], [])
  assert device.largest_fitting_batch(records, "tafe") == 4096
  assert device.largest_fitting_batch(records, "mmoe") is None
  assert device.sweep_summary(records, ["tafe", "esmm", "mmoe"]) == {
    "tafe": {
      "largest_batch": 4096,
      "first_oom_batch": 8192,
      "best_examples_per_second": 150.0,
      "best_batch": 4096,
    },
    "esmm": {
      "largest_batch": 4096,
      "first_oom_batch": None,
      "best_examples_per_second": 300.0,
      "best_batch": 2048,
    },
    "mmoe": {
      "largest_batch": None,
      "first_oom_batch": None,
      "best_examples_per_second": None,
      "best_batch": None,
    },
  }
  # Other parts' records do not count for the sweep.
  other = dict(_sweep("esmm", 2048, "oom"), part="precision")
  assert device.first_oom_batch(records + [other], "esmm") is None


def test_out_of_memory_is_told_from_other_errors():
  assert device.is_out_of_memory(
    tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
  )
  # XLA's allocator says it in an InternalError.
  assert device.is_out_of_memory(
    tf.errors.InternalError(None, None, "RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB")
  )
  assert not device.is_out_of_memory(tf.errors.InvalidArgumentError(None, None, "bad shape"))


def test_the_expected_cost_of_a_measurement_is_the_window_plus_the_setup_seen():
  assert device.expected_seconds([], "sweep", 3.0) == 6.0
  records = [
    _sweep("esmm", 64, "ok", 1.0, seconds=5.0, window=3.0),
    dict(_sweep("esmm", 64, "ok", 1.0, seconds=23.0, window=3.0), part="xla"),
    {"part": "input", "status": "ok", "seconds": 100.0, "window_seconds": 3.0},
  ]
  assert device.expected_seconds(records, "sweep", 3.0) == 5.0
  assert device.expected_seconds(records, "xla", 3.0) == 23.0
  # A part not seen yet: the mean set-up of every training measurement.
  assert device.expected_seconds(records, "precision", 3.0) == 3.0 + 11.0


def test_fastest_rate_takes_the_baseline_at_that_data_and_batch():
  records = [
    _sweep("esmm", 64, "ok", 10.0),
    _sweep("tafe", 64, "ok", 4.0),
    _sweep("esmm", 128, "ok", 20.0),
    dict(_sweep("esmm", 64, "ok", 99.0), part="xla"),
    dict(_sweep("esmm", 64, "ok", 7.0), part="ali_ccp", data="ali_ccp"),
  ]
  assert device.fastest_rate(records, "synthetic", 64) == 10.0
  assert device.fastest_rate(records, "ali_ccp", 64) == 7.0
  assert device.fastest_rate(records, "synthetic", 256) is None


def _settings(**changes):
  values = dict(
    models=("esmm",),
    batch_sizes=(32, 64),
    precisions=("float32",),
    xla_modes=(False,),
    seconds_per_measurement=1.0,
    budget_seconds=10.0,
    warmup_steps=1,
    ali_ccp_rows=0,
    cpu_devices=0,
    hparams={},
    stage_models=(),
    learning_rate=1e-3,
    seed=0,
  )
  values.update(changes)
  return device.Settings(**values)


@pytest.mark.parametrize(
  "changes,message",
  [
    ({"models": ("esmm", "dlrm")}, r"models: unknown \['dlrm'\]"),
    ({"precisions": ("float64",)}, r"precisions: unknown \['float64'\]"),
    ({"stage_models": ("dcn",)}, r"stage_models: unknown \['dcn'\]"),
    ({"batch_sizes": (64, 32)}, "distinct, ascending"),
    ({"warmup_steps": 0}, "warmup_steps must be >= 1"),
  ],
)
def test_settings_reject_bad_values(changes, message):
  _settings()  # the valid base
  with pytest.raises(ValueError, match=message):
    _settings(**changes)


def test_the_window_clock_times_steps_after_the_warmup():
  model = tf.keras.Sequential([tf.keras.layers.Dense(4, "relu"), tf.keras.layers.Dense(1)])
  model.compile(optimizer="sgd", loss="mse")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 3)).astype("float32")
  data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(8).repeat()
  steps, seconds = device.timed_fit(model, data, warmup=3, seconds=0.2)
  assert steps >= device.MIN_TIMED_STEPS and seconds >= 0.2
  # The fit ran the warm-up and the timed steps, and stopped there.
  assert int(model.optimizer.iterations) == 3 + steps


def _run(tmp_path, *args):
  out = tmp_path / "out.json"
  result = run_module(
    "launch.benchmark_device",
    f"--run_dir={tmp_path / 'run'}",
    f"--output={out}",
    f"--work_dir={tmp_path / 'work'}",
    *args,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert json.loads((tmp_path / "run" / "device.json").read_text()) == report
  assert (tmp_path / "run" / "table.txt").read_text().strip() in result.stdout
  assert report["command"].startswith("python -m launch.benchmark_device ")
  return report, result.stdout


def test_a_budget_too_small_for_anything_records_every_measurement_skipped(tmp_path):
  report, stdout = _run(
    tmp_path,
    "--models=esmm,tafe",
    "--batch_sizes=32,64",
    "--precisions=float32,mixed_float16",
    "--xla=off,on",
    "--ali_ccp_rows=500",
    "--stage_models=esmm",
    "--budget_seconds=1",
  )
  assert report["measurements"] == []
  assert report["device"]["kind"] == "CPU" and report["batch_sizes"] == [32, 64]
  skipped = report["skipped"]
  # In the order of importance, each with its reason.
  assert [s["part"] for s in skipped] == (
    ["sweep"] * 4 + ["input"] * 2 + ["precision"] * 2 + ["xla"] * 2
  ) + ["ali_ccp", "mirrored"] + ["precision_xla"] * 2 + ["stages"]
  sweep = [(s["model"], s["batch_size"]) for s in skipped if s["part"] == "sweep"]
  assert sweep == [("esmm", 32), ("tafe", 32), ("esmm", 64), ("tafe", 64)]
  assert all(s["reason"].startswith("budget") for s in skipped[:6])
  assert {s["reason"] for s in skipped if s["part"] in ("precision", "xla", "stages")} == {
    "no batch of the sweep trained"
  }
  assert skipped[-4]["reason"] == "1 logical CPU device visible"
  assert report["sweep"]["tafe"]["largest_batch"] is None
  assert "skipped (15):" in stdout


@pytest.mark.slow  # ~2 min on 2 shared cores
def test_every_part_runs_end_to_end_on_the_cpu(tmp_path):
  models, batches = ["esmm", "tafe"], [32, 64]
  report, stdout = _run(
    tmp_path,
    f"--models={','.join(models)}",
    f"--batch_sizes={','.join(map(str, batches))}",
    "--precisions=float32,mixed_float16",
    "--xla=off,on",
    "--seconds_per_measurement=0.3",
    "--warmup_steps=1",
    "--ali_ccp_rows=800",
    "--cpu_devices=2",
    "--stage_models=esmm",
    "--budget_seconds=3000",
  )
  name = report["device"]["name"]
  assert report["device"]["kind"] == "CPU" and name
  assert report["skipped"] == []
  records = report["measurements"]
  trains = [r for r in records if r["part"] not in ("input", "stages")]
  for r in records:
    assert r["status"] == "ok" and r["examples_per_second"] > 0 and r["seconds"] > 0
  for r in trains:
    assert r["device"] == name and r["timed_steps"] >= device.MIN_TIMED_STEPS
    assert r["warmup_steps"] >= 1 and 0 < r["mfu"] < 1
    assert r["examples_per_second"] == pytest.approx(
      r["timed_steps"] * r["batch_size"] / r["window_seconds"]
    )

  def of(part):
    return [r for r in records if r["part"] == part]

  # One sweep entry per model x batch, baseline precision, no XLA, one device.
  assert sorted((r["model"], r["batch_size"]) for r in of("sweep")) == sorted(
    (m, b) for m in models for b in batches
  )
  assert {(r["precision"], r["xla"], r["replicas"]) for r in of("sweep")} == {("float32", False, 1)}
  for m in models:
    assert report["sweep"][m]["largest_batch"] == 64
    assert report["sweep"][m]["first_oom_batch"] is None
  # The comparisons at the largest fitting batch.
  assert {(r["model"], r["batch_size"], r["precision"], r["xla"]) for r in of("precision")} == {
    (m, 64, "mixed_float16", False) for m in models
  }
  assert {(r["model"], r["precision"], r["xla"]) for r in of("xla")} == {
    (m, "float32", True) for m in models
  }
  assert {(r["model"], r["precision"], r["xla"]) for r in of("precision_xla")} == {
    (m, "mixed_float16", True) for m in models
  }
  assert {(r["model"], r["replicas"], r["strategy"]) for r in of("mirrored")} == {
    (m, 2, "MirroredStrategy") for m in models
  }
  # The Ali-CCP-shaped data, converted, at a batch it holds twice.
  ali = report["data"]["ali_ccp"]
  train_rows = ali["rows_per_split"]["train"]
  assert ali["impressions"] == 800 and 0 < train_rows < 800
  assert ali["convert_impressions_per_second"] > 0
  assert 2 * ali["batch_size"] <= train_rows
  assert sorted(r["model"] for r in of("ali_ccp")) == models
  # The input pipeline against the fastest step at the same data and batch.
  reads = {(r["data"], r["batch_size"]): r for r in of("input")}
  assert set(reads) == {("synthetic", 32), ("synthetic", 64), ("ali_ccp", ali["batch_size"])}
  for (data, batch), r in reads.items():
    fastest = max(
      t["examples_per_second"]
      for t in of("sweep") + of("ali_ccp")
      if t["data"] == data and t["batch_size"] == batch
    )
    assert r["fastest_step_examples_per_second"] == fastest
    assert r["input_over_step"] == pytest.approx(r["examples_per_second"] / fastest)
  # The stages of ESMM's step, on the Ali-CCP-shaped data at its batch.
  (split,) = of("stages")
  assert (split["model"], split["data"], split["batch_size"]) == (
    "esmm",
    "ali_ccp",
    ali["batch_size"],
  )
  breakdown = split["breakdown"]
  assert [s["stage"] for s in breakdown["stages"]] == list(stages.STAGES)
  assert split["examples_per_second"] == pytest.approx(
    1000.0 * split["batch_size"] / breakdown["step_ms"]
  )
  assert "largest fit" in stdout and "mirrored x2" in stdout and "embedding_backward" in stdout


def test_a_bad_flag_is_one_line(tmp_path):
  result = run_module(
    "launch.benchmark_device", "--batch_sizes=128,64", f"--run_dir={tmp_path / 'run'}"
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    "benchmark_device.py: error: --batch_sizes must be distinct, ascending and >= 1, got [128, 64]"
  ]
  assert not (tmp_path / "run").exists()
