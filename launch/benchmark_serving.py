r"""Serving latency and size of the exported SavedModel.

Trains a model briefly on the built-in synthetic data (or loads a trained
``--model_dir``), exports it with :func:`tafe_tf.export.export_saved_model`,
loads the export back with ``tf.saved_model.load`` and times its signatures
per batch size: p50 / p99 / mean milliseconds of one call (outputs fetched)
over ``--num_calls`` calls after ``--warmup_calls`` untimed ones, on requests
made of real test rows (padded multi-valued fields for ``serving_default``,
serialized ``tf.train.Example`` protos for ``serving_examples``). Also the
size of the export, per part (:mod:`tafe_tf.benchmarks.serving`).

    python -m launch.benchmark_serving --model=tafe --batch_sizes=1,64,1024

prints a table and writes it (``table.txt``) and the numbers
(``serving.json``) into ``--run_dir`` (default
``runs/benchmark-serving-<UTC time>``), and the JSON to ``--output`` if given.
"""

from __future__ import annotations

import os
import tempfile
from typing import List

from absl import flags

from tafe_tf.launch import common

serving = common.lazy_import("tafe_tf.benchmarks.serving")
training = common.lazy_import("tafe_tf.training")

FLAGS = flags.FLAGS

flags.DEFINE_enum(
  "model", "tafe", list(common.MODEL_NAMES), "Model to train briefly (ignored with --model_dir)."
)
flags.DEFINE_string(
  "model_dir", "", "A trained model directory (launch.train) to export instead of training one."
)
flags.DEFINE_string(
  "data_dir",
  "",
  "Dataset whose test rows make the requests. With "
  "--model_dir: default its training data. Without: where the synthetic "
  "data is generated (default: a folder under the system temp dir).",
)
flags.DEFINE_list("batch_sizes", ["1", "64", "1024"], "Rows per request.")
flags.DEFINE_integer("num_calls", 200, "Timed calls per batch size and signature.", lower_bound=1)
flags.DEFINE_integer("warmup_calls", 20, "Untimed calls first.", lower_bound=0)
flags.DEFINE_integer("num_steps", 2, "Steps of the synthetic funnel.", lower_bound=2, upper_bound=4)
flags.DEFINE_integer("train_steps", 50, "Optimizer steps of the brief training.", lower_bound=1)
flags.DEFINE_integer("train_batch_size", 512, "Batch size of the brief training.", lower_bound=1)
flags.DEFINE_string("hparams", "{}", "JSON of model hyperparameters for the brief training.")
flags.DEFINE_string(
  "export_dir", "", "Keep the export here (default: a temporary folder, deleted)."
)
common.define_report_flags("serving")


def _data_dir() -> str:
  """The requests' dataset: the flag, the model's, or the synthetic cache."""
  if FLAGS.data_dir:
    return FLAGS.data_dir
  if FLAGS.model_dir:
    return training.read_run_config(FLAGS.model_dir).data.data_dir
  return os.path.join(tempfile.gettempdir(), f"tafe_benchmark_serving_synthetic_t{FLAGS.num_steps}")


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  batch_sizes = common.int_tuple(FLAGS.batch_sizes, "batch_sizes")
  hparams = common.json_flag(FLAGS.hparams, "hparams")
  if FLAGS.model_dir:
    common.require_model_dir(FLAGS.model_dir)
  data_dir = _data_dir()
  if FLAGS.model_dir and not os.path.isdir(data_dir):
    raise common.UserError(
      f"--data_dir={data_dir}: no such directory (the test rows of the "
      "model's dataset make the requests; pass --data_dir)"
    )
  try:
    result = serving.measure(
      FLAGS.model_dir or None,
      data_dir,
      FLAGS.model,
      batch_sizes,
      FLAGS.num_calls,
      FLAGS.warmup_calls,
      FLAGS.export_dir or None,
      FLAGS.num_steps,
      FLAGS.train_steps,
      FLAGS.train_batch_size,
      hparams,
    )
  # No test split or weights; another dataset there; a bad hyperparameter.
  except (FileNotFoundError, ValueError) as e:
    raise common.UserError(str(e)) from None
  common.report("serving", result, serving.table(result))


def run() -> None:
  """Console-script entry point."""
  common.run(main)


if __name__ == "__main__":
  run()
