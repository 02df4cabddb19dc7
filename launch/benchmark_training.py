r"""Training throughput, FLOPs and FLOP utilisation of every model.

Every model trains on the same synthetic data through the same front end, with
batches parsed once and cached in memory (the input pipeline is measured by
``launch/benchmark_data.py``), so the numbers are the model's own cost:

* examples/s of ``model.fit`` train steps in the steady state (after warm-up
  steps that trace, and without ``fit``'s per-call set-up; all models timed
  in turns, the fastest of ``--repeats`` rounds each, since the CPUs may be
  shared),
* forward matrix-product FLOPs per example (:mod:`tafe_tf.benchmarks.flops`),
* model FLOP utilisation: ``3 * forward FLOPs * examples/s`` over the float32
  matmul rate measured on the same machine (square matmuls, best of a few).

    python -m launch.benchmark_training --batch_size=2048 --steps=20

prints a table and writes it (``table.txt``) and the numbers
(``training.json``) into ``--run_dir`` (default
``runs/benchmark-training-<UTC time>``), and the JSON to ``--output`` if given.

``--embedding=both`` also times every model with one table per field (the
per-field layout) against the fused tables. ``--profile_top=N`` then profiles
a few train steps of every model (:mod:`tafe_tf.benchmarks.profiling`) and
prints, and writes to the JSON, its N costliest op types and ops: where the
step goes.
"""

from __future__ import annotations

import os
import tempfile
from typing import List

from absl import flags

from tafe_tf.launch import common

training_speed = common.lazy_import("tafe_tf.benchmarks.training_speed")

FLAGS = flags.FLAGS

flags.DEFINE_string(
  "data_dir",
  None,
  "Synthetic dataset directory (written when missing or "
  "different; default: a folder under the system temp dir).",
)
flags.DEFINE_integer("num_steps", 2, "Conversion steps T.", lower_bound=2, upper_bound=4)
flags.DEFINE_list("models", list(common.MODEL_NAMES), "Models to time.")
flags.DEFINE_integer("batch_size", 2048, "Examples per step.", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Timed train steps per model.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed train steps (tracing).", lower_bound=1)
flags.DEFINE_integer(
  "repeats",
  3,
  "Timed runs of --steps steps per model; the fastest counts "
  "(the CPUs may be shared: the best run is the least disturbed one).",
  lower_bound=1,
)
flags.DEFINE_enum(
  "embedding", "fused", ["fused", "per_field", "both"], "Embedding table layout(s) to time."
)
flags.DEFINE_string("hparams", "{}", "JSON of hparams given to every model.")
flags.DEFINE_integer(
  "profile_top",
  0,
  "Profile --steps train steps of every model and report "
  "its N costliest op types and ops (0: no profile).",
  lower_bound=0,
)
common.define_report_flags("training")


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  hparams = common.json_flag(FLAGS.hparams, "hparams")
  unknown = sorted(set(FLAGS.models) - set(common.MODEL_NAMES))
  if unknown:
    raise common.UserError(f"--models: unknown {unknown}; valid: {', '.join(common.MODEL_NAMES)}")
  data_dir = FLAGS.data_dir or os.path.join(
    tempfile.gettempdir(), f"tafe_benchmark_synthetic_t{FLAGS.num_steps}"
  )
  try:
    result = training_speed.measure(
      data_dir,
      FLAGS.num_steps,
      FLAGS.models,
      FLAGS.embedding,
      hparams,
      FLAGS.batch_size,
      FLAGS.steps,
      FLAGS.warmup,
      FLAGS.repeats,
      FLAGS.profile_top,
    )
  except ValueError as e:  # e.g. an unknown hyperparameter
    raise common.UserError(str(e)) from None
  common.report("training", result, training_speed.table(result))


def run() -> None:
  """Console-script entry point."""
  common.run(main)


if __name__ == "__main__":
  run()
