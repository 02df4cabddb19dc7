r"""Training examples/s under distribution strategies, one vs two of each.

Two pairs, each at the same global batch
(:mod:`tafe_tf.benchmarks.distribution_speed`):

* one device vs MirroredStrategy over 2 logical CPU devices (this process,
  the CPU split before TensorFlow starts);
* MultiWorkerMirroredStrategy with 1 worker vs 2 worker processes on
  localhost (``TF_CONFIG`` on loopback ports). The workers are subprocesses
  of this one (``--role=worker``); each times its own steps and reports
  examples/s of the global batch; the slower worker's rate is the pair's.

Every rate is the steady state: train batches parsed once and cached, warm-up
steps that trace, then the fastest of ``--repeats`` windows of ``--steps``
steps inside one ``fit`` (:func:`tafe_tf.benchmarks.timing.time_steady_steps`),
so tracing, ``fit``'s set-up and process start-up are not in it. On a machine
whose replicas or workers share the same few cores this shows the overhead
of a strategy (synchronisation, splitting batches, collectives), not a
speed-up::

    python -m launch.benchmark_distribution

prints a table and writes it (``table.txt``) and the numbers
(``distribution.json``) into ``--run_dir`` (default
``runs/benchmark-distribution-<UTC time>``), and the JSON to ``--output`` if
given; the workers' logs stay there too (``workers-<n>/``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import List

from absl import flags

from tafe_tf.launch import common

distribution_speed = common.lazy_import("tafe_tf.benchmarks.distribution_speed")

FLAGS = flags.FLAGS
PARTS = ("devices", "workers")  # distribution_speed.PARTS

flags.DEFINE_enum("model", "esmm", list(common.MODEL_NAMES), "Model to train.")
flags.DEFINE_string("hparams", "{}", "JSON of build_model keyword arguments.")
flags.DEFINE_string(
  "data_dir",
  None,
  "Synthetic dataset directory (written when missing or "
  "different; default: a folder under the system temp dir).",
)
flags.DEFINE_integer(
  "global_batch",
  512,
  "Examples per step over all replicas and workers "
  "(the same in both configurations of a pair; even: 2 replicas split it).",
  lower_bound=2,
)
flags.DEFINE_integer("steps", 50, "Train steps per timed window.", lower_bound=1)
flags.DEFINE_integer("warmup", 5, "Untimed train steps first (tracing).", lower_bound=1)
flags.DEFINE_integer(
  "repeats",
  3,
  "Timed windows per configuration; the fastest counts (the "
  "CPUs may be shared: the best window is the least disturbed one).",
  lower_bound=1,
)
flags.DEFINE_multi_enum("parts", list(PARTS), list(PARTS), "Pairs to time.")
flags.DEFINE_float(
  "worker_timeout_s",
  300.0,
  "Seconds a multi-worker configuration may take "
  "(its processes' start-up included) before its workers are killed and "
  "the benchmark fails.",
  lower_bound=0.0,
)
flags.DEFINE_enum(
  "role",
  "benchmark",
  ["benchmark", "worker"],
  "benchmark: run the "
  "benchmark; worker: one worker process of a multi-worker configuration "
  "(started by the benchmark, with TF_CONFIG set).",
)
flags.DEFINE_string(
  "worker_output_dir", None, "--role=worker: where worker <i> writes worker-<i>.json."
)
common.define_report_flags("distribution")

# Flags a worker gets from the benchmark, as given to it.
_WORKER_FLAGS = ("model", "hparams", "global_batch", "steps", "warmup", "repeats")


def _worker_command(data_dir: str, output_dir: str) -> List[str]:
  return [
    sys.executable,
    "-m",
    "tafe_tf.launch.benchmark_distribution",
    "--role=worker",
    f"--worker_output_dir={output_dir}",
    f"--data_dir={data_dir}",
  ] + [f"--{name}={FLAGS[name].value}" for name in _WORKER_FLAGS]


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  try:
    settings = distribution_speed.Settings(
      model=FLAGS.model,
      hparams=common.json_flag(FLAGS.hparams, "hparams"),
      global_batch=FLAGS.global_batch,
      steps=FLAGS.steps,
      warmup=FLAGS.warmup,
      repeats=FLAGS.repeats,
    )
  except ValueError as e:
    raise common.UserError(f"--global_batch: {e}") from None
  if FLAGS.role == "worker":
    if not FLAGS.worker_output_dir or not FLAGS.data_dir:
      raise common.UserError("--role=worker needs --worker_output_dir and --data_dir")
    distribution_speed.worker(FLAGS.data_dir, FLAGS.worker_output_dir, settings)
    return
  data_dir = FLAGS.data_dir or os.path.join(
    tempfile.gettempdir(), "tafe_benchmark_distribution_synthetic"
  )
  try:
    result = distribution_speed.benchmark(
      FLAGS.parts,
      data_dir,
      settings,
      _worker_command,
      common.run_dir("distribution"),
      FLAGS.worker_timeout_s,
    )
  except RuntimeError as e:
    raise common.UserError(str(e).splitlines()[0]) from None
  common.report("distribution", result, distribution_speed.table(result))


def run() -> None:
  """Console-script entry point."""
  common.run(main)


if __name__ == "__main__":
  run()
