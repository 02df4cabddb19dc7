"""Training examples/s under distribution strategies, one vs two of each.

The library behind ``launch.benchmark_distribution``. Two pairs, each at the
same global batch:

* one device vs MirroredStrategy over 2 logical CPU devices (this process,
  the CPU split before TensorFlow starts: :func:`benchmark` does it first);
* MultiWorkerMirroredStrategy with 1 worker vs 2 worker processes on
  localhost (``TF_CONFIG`` on loopback ports,
  :func:`tafe_tf.benchmarks.local_cluster.run_local_workers`). Each worker
  runs a command given by the caller that ends in :func:`worker`, times its
  own steps and reports examples/s of the global batch; the slower worker's
  rate is the pair's.

Every rate is the steady state (:func:`tafe_tf.benchmarks.timing.time_strategy`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Sequence

from tafe_tf import distribution, files
from tafe_tf import features as features_lib
from tafe_tf.benchmarks import local_cluster, timing
from tafe_tf.data import synthetic

PARTS = ("devices", "workers")
# Train batches parsed and cached per run (every step reuses them).
NUM_CACHED_BATCHES = 8
CAPTION = (
  "Training examples/s of {model} at global batch {batch} (steady state: "
  "best of {repeats} windows of {steps} steps after {warmup} warm-up "
  "steps). The {cpus} CPU cores of this machine are shared by every "
  "replica and worker, so a second replica or worker cannot add compute: "
  "the ratios show the overhead of each strategy, not a speed-up. Load "
  "average (1 min) before/after: {load_before:.2f}/{load_after:.2f}."
)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every configuration trains.

  Attributes:
    model: A model name; ``hparams`` its build_model keyword arguments.
    global_batch: Examples per step over all replicas and workers (even).
    steps, warmup, repeats: See :func:`tafe_tf.benchmarks.timing.time_steady_steps`.
  """

  model: str = "esmm"
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  global_batch: int = 512
  steps: int = 50
  warmup: int = 5
  repeats: int = 3

  def __post_init__(self):
    if self.global_batch % 2:
      raise ValueError(
        f"global batch {self.global_batch} must be even (2 replicas or workers split it)"
      )


# (data dir, output dir) -> the command of every worker process.
WorkerCommand = Callable[[str, str], Sequence[str]]


def ensure_data(data_dir: str, settings: Settings) -> str:
  """The synthetic dataset of the runs (absolute: workers may run elsewhere)."""
  data_dir = os.path.abspath(data_dir)
  synthetic.ensure_dataset(
    data_dir, synthetic.SyntheticConfig(seed=0), NUM_CACHED_BATCHES * settings.global_batch, 0, 0
  )
  return data_dir


def time_under(strategy: Any, data_dir: str, settings: Settings) -> Dict[str, Any]:
  """:func:`tafe_tf.benchmarks.timing.time_strategy` of the settings."""
  schema = features_lib.Schema.load(data_dir)
  dataset = timing.cached_batches(data_dir, settings.global_batch, NUM_CACHED_BATCHES)
  return timing.time_strategy(
    settings.model,
    schema,
    dataset,
    {"seed": 0, **dict(settings.hparams)},
    strategy,
    settings.global_batch,
    settings.steps,
    settings.warmup,
    settings.repeats,
  )


def _device_rows(data_dir: str, settings: Settings) -> List[Dict[str, Any]]:
  rows = []
  for configuration, strategy_name in (
    ("one_device", "one_device"),
    ("mirrored_2_devices", "mirrored"),
  ):
    row = time_under(distribution.get_strategy(strategy_name), data_dir, settings)
    rows.append({"configuration": configuration, "pair": "devices", "workers": 1, **row})
  if rows[1]["replicas"] != 2:
    raise RuntimeError(
      f"MirroredStrategy ran {rows[1]['replicas']} replicas, not the 2 logical CPU devices"
    )
  return rows


def _worker_rows(
  data_dir: str, work_dir: str, command: WorkerCommand, timeout_s: float
) -> List[Dict[str, Any]]:
  rows = []
  for num_workers in (1, 2):
    output_dir = os.path.join(work_dir, f"workers-{num_workers}")
    try:
      local_cluster.run_local_workers(
        command(data_dir, output_dir), num_workers, timeout_s, output_dir
      )
    except (TimeoutError, RuntimeError) as e:
      raise RuntimeError(f"the {num_workers}-worker configuration failed: {e}") from None
    per_worker = [
      files.read_json(os.path.join(output_dir, f"worker-{i}.json")) for i in range(num_workers)
    ]
    # A synchronous cluster runs at the pace of its slowest worker.
    slowest = dict(min(per_worker, key=lambda r: r["examples_per_second"]))
    rows.append(
      {
        "configuration": f"multi_worker_{num_workers}",
        "pair": "workers",
        "workers": num_workers,
        "slowest_worker": slowest.pop("worker"),
        **slowest,
        "per_worker_examples_per_second": [r["examples_per_second"] for r in per_worker],
      }
    )
  return rows


def benchmark(
  parts: Sequence[str],
  data_dir: str,
  settings: Settings,
  worker_command: WorkerCommand,
  work_dir: str,
  worker_timeout_s: float = 300.0,
) -> Dict[str, Any]:
  """Times the pairs in ``parts`` (:data:`PARTS`).

  Args:
    parts: Pairs to time.
    data_dir: Synthetic dataset directory (written when missing).
    settings: What every configuration trains.
    worker_command: Builds the workers' command; each worker must end in
      :func:`worker` with the same settings, data dir and output dir.
    work_dir: The workers' logs and results go to ``workers-<n>/`` here.
    worker_timeout_s: Seconds a multi-worker configuration may take.

  Returns:
    ``caption``, the settings, ``cpu_count``, ``load_average`` (before,
    after), ``data_dir`` and ``results``: a row per configuration, with
    ``relative_to_one`` (rate over its pair's first row).

  Raises:
    RuntimeError: a configuration failed (workers killed, or a timeout).
  """
  if "devices" in parts:
    # Before anything runs in TensorFlow (the data writer included).
    distribution.split_cpu(2)
  load_before = os.getloadavg()
  data_dir = ensure_data(data_dir, settings)
  rows = []
  if "devices" in parts:
    rows += _device_rows(data_dir, settings)
  if "workers" in parts:
    rows += _worker_rows(data_dir, work_dir, worker_command, worker_timeout_s)
  # Each pair's first row is its single device or worker.
  first = {}
  for r in rows:
    first.setdefault(r["pair"], r["examples_per_second"])
    r["relative_to_one"] = r["examples_per_second"] / first[r["pair"]]
  load_after = os.getloadavg()
  caption = CAPTION.format(
    model=settings.model,
    batch=settings.global_batch,
    repeats=settings.repeats,
    steps=settings.steps,
    warmup=settings.warmup,
    cpus=os.cpu_count(),
    load_before=load_before[0],
    load_after=load_after[0],
  )
  return {
    "caption": caption,
    **dataclasses.asdict(settings),
    "cpu_count": os.cpu_count(),
    "load_average": {"before": list(load_before), "after": list(load_after)},
    "data_dir": data_dir,
    "results": rows,
  }


def worker(data_dir: str, output_dir: str, settings: Settings) -> str:
  """One worker of a multi-worker configuration (``TF_CONFIG`` set): times
  the settings and writes ``output_dir/worker-<i>.json``; returns its path."""
  strategy = distribution.get_strategy("multi_worker")
  row = time_under(strategy, data_dir, settings)
  role = distribution.worker_role(strategy)
  return files.write_json_atomic(
    os.path.join(output_dir, f"worker-{role.task_id}.json"), {"worker": role.task_id, **row}
  )


def table(result: Mapping[str, Any]) -> str:
  """The caption and a row per configuration."""
  lines = [
    result["caption"],
    f"{'configuration':<20}{'strategy':<30}{'replicas':>9}"
    f"{'workers':>8}{'batch':>7}{'examples/s':>12}{'ms/step':>9}"
    f"{'vs 1':>7}",
  ]
  lines += [
    f"{r['configuration']:<20}{r['strategy']:<30}{r['replicas']:>9d}"
    f"{r['workers']:>8d}{r['global_batch']:>7d}"
    f"{r['examples_per_second']:>12.0f}{r['step_ms']:>9.1f}"
    f"{r['relative_to_one']:>7.2f}"
    for r in result["results"]
  ]
  return "\n".join(lines)
