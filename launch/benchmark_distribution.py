r"""Training examples/s under distribution strategies, one vs two of each.

Two pairs, each at the same global batch:

* one device vs MirroredStrategy over 2 logical CPU devices (this process,
  the CPU split before TensorFlow starts);
* MultiWorkerMirroredStrategy with 1 worker vs 2 worker processes on
  localhost (``TF_CONFIG`` on loopback ports). The workers are subprocesses
  of this one (``--role=worker``); each times its own steps and reports
  examples/s of the global batch; the slower worker's rate is the pair's.

Every rate is the steady state: train batches parsed once and cached, warm-up
steps that trace, then the fastest of ``--repeats`` windows of ``--steps``
steps inside one ``fit`` (:func:`tafe_tf.benchmarks.timing.time_steady_steps`), so
tracing, ``fit``'s set-up and process start-up are not in it. On a machine
whose replicas or workers share the same few cores this shows the overhead
of a strategy (synchronisation, splitting batches, collectives), not a
speed-up::

    python -m launch.benchmark_distribution --output=/tmp/distribution.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Sequence

from absl import app
from absl import flags

from tafe_tf.launch import common

from tafe_tf.data import synthetic
from tafe_tf import distribution
from tafe_tf import features as features_lib
from tafe_tf import models
from tafe_tf.benchmarks import timing
from tafe_tf import files
from tafe_tf.benchmarks import local_cluster

PARTS = ("devices", "workers")
# Train batches parsed and cached per run (every step reuses them).
NUM_CACHED_BATCHES = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTION = (
    "Training examples/s of {model} at global batch {batch} (steady state: "
    "best of {repeats} windows of {steps} steps after {warmup} warm-up "
    "steps). The {cpus} CPU cores of this machine are shared by every "
    "replica and worker, so a second replica or worker cannot add compute: "
    "the ratios show the overhead of each strategy, not a speed-up. Load "
    "average (1 min) before/after: {load_before:.2f}/{load_after:.2f}.")

_MODEL = flags.DEFINE_enum("model", "esmm", list(models.MODEL_NAMES),
                           "Model to train.")
_HPARAMS = flags.DEFINE_string("hparams", "{}",
                               "JSON of build_model keyword arguments.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Synthetic dataset directory (written when missing or "
    "different; default: a folder under the system temp dir).")
_GLOBAL_BATCH = flags.DEFINE_integer(
    "global_batch", 512, "Examples per step over all replicas and workers "
    "(the same in both configurations of a pair; even: 2 replicas split it).",
    lower_bound=2)
_STEPS = flags.DEFINE_integer("steps", 50, "Train steps per timed window.",
                              lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed train steps first "
                               "(tracing).", lower_bound=1)
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "Timed windows per configuration; the fastest counts (the "
    "CPUs may be shared: the best window is the least disturbed one).",
    lower_bound=1)
_PARTS = flags.DEFINE_multi_enum("parts", list(PARTS), list(PARTS),
                                 "Pairs to time.")
_WORKER_TIMEOUT_S = flags.DEFINE_float(
    "worker_timeout_s", 300.0, "Seconds a multi-worker configuration may take "
    "(its processes' start-up included) before its workers are killed and "
    "the benchmark fails.", lower_bound=0.0)
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON.")
_ROLE = flags.DEFINE_enum(
    "role", "benchmark", ["benchmark", "worker"], "benchmark: run the "
    "benchmark; worker: one worker process of a multi-worker configuration "
    "(started by the benchmark, with TF_CONFIG set).")
_WORKER_OUTPUT_DIR = flags.DEFINE_string(
    "worker_output_dir", None, "--role=worker: where worker <i> writes "
    "worker-<i>.json.")


def _data_dir() -> str:
  # Absolute: the workers run from the repository root.
  data_dir = os.path.abspath(_DATA_DIR.value or os.path.join(
      tempfile.gettempdir(), "tafe_benchmark_distribution_synthetic"))
  synthetic.ensure_dataset(data_dir, synthetic.SyntheticConfig(seed=0),
                           NUM_CACHED_BATCHES * _GLOBAL_BATCH.value, 0, 0)
  return data_dir


def _time(strategy: Any, data_dir: str) -> Dict[str, Any]:
  """Times the flags' model under ``strategy``."""
  schema = features_lib.Schema.load(data_dir)
  dataset = timing.cached_batches(data_dir, _GLOBAL_BATCH.value,
                                  NUM_CACHED_BATCHES)
  return timing.time_strategy(
      _MODEL.value, schema, dataset, {"seed": 0, **json.loads(_HPARAMS.value)},
      strategy, _GLOBAL_BATCH.value, _STEPS.value, _WARMUP.value,
      _REPEATS.value)


def _device_rows(data_dir: str) -> List[Dict[str, Any]]:
  rows = []
  for configuration, strategy_name in (("one_device", "one_device"),
                                       ("mirrored_2_devices", "mirrored")):
    row = _time(distribution.get_strategy(strategy_name), data_dir)
    rows.append({"configuration": configuration, "pair": "devices",
                 "workers": 1, **row})
  if rows[1]["replicas"] != 2:
    raise RuntimeError(f"MirroredStrategy ran {rows[1]['replicas']} replicas, "
                       "not the 2 logical CPU devices")
  return rows


def _worker_command(output_dir: str, data_dir: str) -> List[str]:
  return [sys.executable, "-m", "launch.benchmark_distribution",
          "--role=worker", f"--worker_output_dir={output_dir}",
          f"--data_dir={data_dir}", f"--model={_MODEL.value}",
          f"--hparams={_HPARAMS.value}",
          f"--global_batch={_GLOBAL_BATCH.value}", f"--steps={_STEPS.value}",
          f"--warmup={_WARMUP.value}", f"--repeats={_REPEATS.value}"]


def _worker_rows(data_dir: str, work_dir: str) -> List[Dict[str, Any]]:
  rows = []
  for num_workers in (1, 2):
    output_dir = os.path.join(work_dir, f"workers-{num_workers}")
    try:
      # From the repository root, so that python -m finds this module.
      local_cluster.run_local_workers(
          _worker_command(output_dir, data_dir), num_workers,
          _WORKER_TIMEOUT_S.value, output_dir,
          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), cwd=ROOT)
    except (TimeoutError, RuntimeError) as e:
      raise SystemExit(f"launch.benchmark_distribution: error: the "
                       f"{num_workers}-worker configuration failed: {e}"
                       ) from None
    per_worker = []
    for i in range(num_workers):
      with open(os.path.join(output_dir, f"worker-{i}.json")) as f:
        per_worker.append(json.load(f))
    # A synchronous cluster runs at the pace of its slowest worker.
    slowest = dict(min(per_worker, key=lambda r: r["examples_per_second"]))
    rows.append({
        "configuration": f"multi_worker_{num_workers}", "pair": "workers",
        "workers": num_workers, "slowest_worker": slowest.pop("worker"),
        **slowest, "per_worker_examples_per_second": [
            r["examples_per_second"] for r in per_worker]})
  return rows


def _print_table(result: Dict[str, Any]) -> None:
  print(result["caption"])
  print(f"{'configuration':<20}{'strategy':<30}{'replicas':>9}{'workers':>8}"
        f"{'batch':>7}{'examples/s':>12}{'ms/step':>9}{'vs 1':>7}")
  for r in result["results"]:
    print(f"{r['configuration']:<20}{r['strategy']:<30}{r['replicas']:>9d}"
          f"{r['workers']:>8d}{r['global_batch']:>7d}"
          f"{r['examples_per_second']:>12.0f}{r['step_ms']:>9.1f}"
          f"{r['relative_to_one']:>7.2f}")


def _benchmark(parts: Sequence[str]) -> Dict[str, Any]:
  if "devices" in parts:
    # Before anything runs in TensorFlow (the data writer included).
    distribution.split_cpu(2)
  load_before = os.getloadavg()
  data_dir = _data_dir()
  rows = []
  if "devices" in parts:
    rows += _device_rows(data_dir)
  if "workers" in parts:
    with tempfile.TemporaryDirectory(prefix="tafe-bench-workers-") as work:
      rows += _worker_rows(data_dir, work)
  # Each pair's first row is its single device or worker.
  first = {}
  for r in rows:
    first.setdefault(r["pair"], r["examples_per_second"])
    r["relative_to_one"] = r["examples_per_second"] / first[r["pair"]]
  load_after = os.getloadavg()
  settings = {"model": _MODEL.value, "hparams": json.loads(_HPARAMS.value),
              "global_batch": _GLOBAL_BATCH.value, "steps": _STEPS.value,
              "warmup": _WARMUP.value, "repeats": _REPEATS.value}
  caption = CAPTION.format(
      model=_MODEL.value, batch=_GLOBAL_BATCH.value, repeats=_REPEATS.value,
      steps=_STEPS.value, warmup=_WARMUP.value, cpus=os.cpu_count(),
      load_before=load_before[0], load_after=load_after[0])
  return {"caption": caption, **settings, "cpu_count": os.cpu_count(),
          "load_average": {"before": list(load_before),
                           "after": list(load_after)},
          "data_dir": data_dir, "results": rows}


def _worker() -> None:
  if not _WORKER_OUTPUT_DIR.value or not _DATA_DIR.value:
    raise SystemExit("launch.benchmark_distribution: error: --role=worker "
                     "needs --worker_output_dir and --data_dir")
  strategy = distribution.get_strategy("multi_worker")
  row = _time(strategy, _DATA_DIR.value)
  role = distribution.worker_role(strategy)
  path = os.path.join(_WORKER_OUTPUT_DIR.value, f"worker-{role.task_id}.json")
  files.write_json_atomic(path, {"worker": role.task_id, **row})


def main(argv: List[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    json.loads(_HPARAMS.value)
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--hparams is not valid JSON ({e.msg} at character "
                         f"{e.pos}): {_HPARAMS.value!r}") from None
  if _GLOBAL_BATCH.value % 2:
    raise app.UsageError(f"--global_batch={_GLOBAL_BATCH.value} must be even "
                         "(2 replicas or workers split it)")
  if _ROLE.value == "worker":
    _worker()
    return
  result = _benchmark(_PARTS.value)
  _print_table(result)
  if _OUTPUT.value:
    files.write_json_atomic(_OUTPUT.value, result)


def run() -> None:
  """Entry point: flags parsed by absl, user errors as one line."""
  common.run(main)


if __name__ == "__main__":
  run()
