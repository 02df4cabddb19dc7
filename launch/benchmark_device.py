r"""Everything a GPU changes, checked and timed in one call of a few minutes.

On the GPUs it finds (else the CPU, with smaller batches), most important
first (:mod:`tafe_tf.benchmarks.device`):

1. every model's training examples/s at batch sizes doubling from 2048 to
   65536 on a GPU (256 to 2048 on a CPU), float32, no XLA; a model's sweep
   stops at its first out-of-memory batch, and the largest batch that fits
   is recorded;
2. the input pipeline's examples/s (``make_dataset``, parsing included)
   against the fastest step's, at the smallest and largest batch;
3. mixed_float16 against float32, and 4. the XLA-compiled step, at each
   model's largest fitting batch;
5. an Ali-CCP-shaped dataset (the realistic family's raw files, converted
   as a user does): its input rate and every model's rate on it;
6. MirroredStrategy over the visible GPUs (skipped on one);
7. mixed_float16 with XLA;
8. the train step of ``--stage_models`` split into its stages (input, id
   lookup, embedding gather + pooling and its backward, the dense network,
   the optimizer's updates), each timed alone against the memory bandwidth
   or the matmul rate measured in the same run
   (:mod:`tafe_tf.benchmarks.stages`), on the Ali-CCP-shaped data.

Every measurement builds the model as ``launch.train`` does, trains on
cached parsed batches, runs ``--warmup_steps`` untimed steps (tracing, XLA
compilation) and times steps for ``--seconds_per_measurement``. What does
not fit the ``--budget_seconds`` left is recorded as skipped, with the
reason; an out-of-memory or other TensorFlow error of one configuration is
recorded as its result, and the run goes on::

    python -m launch.benchmark_device

prints a table and writes it (``table.txt``) and the numbers
(``device.json``) into ``--run_dir`` (default
``runs/benchmark-device-<UTC time>``), and the JSON to ``--output`` if
given.
"""

from __future__ import annotations

from typing import List

from absl import flags

from tafe_tf import config as config_lib
from tafe_tf.launch import common

device = common.lazy_import("tafe_tf.benchmarks.device")

FLAGS = flags.FLAGS

flags.DEFINE_list("models", list(common.MODEL_NAMES), "Models to time.")
flags.DEFINE_list(
  "batch_sizes",
  [],
  "The sweep's batch sizes, ascending (default: 2048 to 65536 doubling on a GPU, "
  "256 to 2048 on a CPU).",
)
flags.DEFINE_list(
  "precisions",
  ["float32", "mixed_float16"],
  f"Dtype policies to compare (float32 is the baseline); any of {', '.join(config_lib.PRECISIONS)}.",
)
flags.DEFINE_list("xla", ["off", "on"], "XLA (jit_compile) modes to compare: off, on.")
flags.DEFINE_float(
  "seconds_per_measurement", 3.0, "Timed window of each measurement.", lower_bound=0.01
)
flags.DEFINE_float(
  "budget_seconds",
  420.0,
  "The whole run's time; measurements that do not fit what is left are skipped (recorded).",
  lower_bound=1.0,
)
flags.DEFINE_integer(
  "warmup_steps", 3, "Untimed train steps before each window (tracing, XLA).", lower_bound=1
)
flags.DEFINE_integer(
  "ali_ccp_rows",
  50_000,
  "Impressions of the Ali-CCP-shaped dataset (0: no Ali-CCP part).",
  lower_bound=0,
)
flags.DEFINE_integer(
  "cpu_devices",
  0,
  "Without a GPU, split the CPU into this many logical devices (MirroredStrategy over "
  "them; 0: no split).",
  lower_bound=0,
)
flags.DEFINE_string("hparams", "{}", "JSON of build_model keyword arguments given to every model.")
flags.DEFINE_list(
  "stage_models", ["tafe", "ple"], "Models whose train step is split into stages (last part)."
)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.", lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Data and model seed.", lower_bound=0)
flags.DEFINE_string(
  "work_dir", None, "Where the datasets go (default: a temporary folder, deleted afterwards)."
)
common.define_report_flags("device")

_XLA_MODES = {"off": False, "on": True}


def _settings():
  unknown_xla = sorted(set(FLAGS.xla) - set(_XLA_MODES))
  if unknown_xla:
    raise common.UserError(f"--xla: unknown {unknown_xla}; valid: off, on")
  try:
    return device.Settings(
      models=tuple(FLAGS.models),
      batch_sizes=common.int_tuple(FLAGS.batch_sizes, "batch_sizes"),
      precisions=tuple(FLAGS.precisions),
      xla_modes=tuple(_XLA_MODES[x] for x in FLAGS.xla),
      seconds_per_measurement=FLAGS.seconds_per_measurement,
      budget_seconds=FLAGS.budget_seconds,
      warmup_steps=FLAGS.warmup_steps,
      ali_ccp_rows=FLAGS.ali_ccp_rows,
      cpu_devices=FLAGS.cpu_devices,
      hparams=common.json_flag(FLAGS.hparams, "hparams"),
      stage_models=tuple(FLAGS.stage_models),
      learning_rate=FLAGS.learning_rate,
      seed=FLAGS.seed,
    )
  except ValueError as e:
    raise common.UserError(f"--{e}") from None


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  settings = _settings()
  try:
    result = device.benchmark(settings, FLAGS.work_dir or None)
  except ValueError as e:  # e.g. an unknown hyperparameter
    raise common.UserError(str(e).splitlines()[0]) from None
  common.report("device", result, device.table(result))


def run() -> None:
  """Entry point (``python -m launch.benchmark_device``)."""
  common.run(main)


if __name__ == "__main__":
  run()
