r"""Evaluates a trained model on one split: report JSON, predictions CSV, plots.

    python -m launch.evaluate --model_dir=runs/tafe-synthetic \
        --data_dir=~/.cache/tafe_tf/synthetic-2step-seed0 --split=test \
        --output=runs/tafe-synthetic/test.json --predictions=runs/tafe-synthetic/test.csv

``--output`` is one flat JSON object keyed ``auc/<step>``, ``logloss/<step>``,
``pcoc/<step>``, ``auc_conditional/<step>``, ``gauc/<step>``, ``oracle_auc/<step>``,
``oracle_gap/<step>`` (see ``tafe_tf.evaluation``). PNG plots go next to it:
reliability and ROC per step, training curves from the run's history, and the
mean gate weights per step over experts (models with gates).
"""

from __future__ import annotations

import os

from absl import flags, logging

from tafe_tf.launch import common

# Loaded at first use, in main: --help stays free of TensorFlow.
input_pipeline = common.lazy_import("tafe_tf.input_pipeline")
reporting = common.lazy_import("tafe_tf.reporting")
training = common.lazy_import("tafe_tf.training")

FLAGS = flags.FLAGS

_INPUT = common.flag_group(__name__, "What to evaluate")
_OUTPUT = common.flag_group(__name__, "Output")
flags.DEFINE_string("model_dir", "", "Trained model directory (launch.train).", module_name=_INPUT)
flags.DEFINE_string(
  "data_dir",
  "",
  "Dataset directory (default: the one the model was trained on).",
  module_name=_INPUT,
)
flags.DEFINE_string("split", "test", "Split to evaluate.", module_name=_INPUT)
flags.DEFINE_integer(
  "batch_size", 4096, "Evaluation batch size.", lower_bound=1, module_name=_INPUT
)
flags.DEFINE_string(
  "output", "", "Report JSON (default: <model_dir>/eval/<split>.json).", module_name=_OUTPUT
)
flags.DEFINE_string(
  "predictions", "", "Per-example CSV: sample_id, p_<step>, q_<step>.", module_name=_OUTPUT
)


def main(argv):
  del argv  # checked by common.run
  common.require_model_dir(FLAGS.model_dir)
  try:
    run = training.read_run_config(FLAGS.model_dir)
  except ValueError as e:
    raise common.UserError(f"--model_dir={FLAGS.model_dir}: {e}") from None
  data_dir = FLAGS.data_dir or run.data.data_dir
  common.require_dataset_dir(data_dir)
  try:
    # Shared: refused while a training writes into the directory.
    with training.model_dir_lock(FLAGS.model_dir, shared=True):
      _evaluate(data_dir)
  except ValueError as e:
    raise common.UserError(str(e)) from None


def _evaluate(data_dir: str) -> None:
  try:
    schema = training.model_dir_schema(FLAGS.model_dir)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise common.UserError(f"--model_dir={FLAGS.model_dir}: {e}") from None
  try:
    input_pipeline.check_schema(data_dir, FLAGS.split, schema)
  except FileNotFoundError as e:
    raise common.UserError(f"--split={FLAGS.split}: {e}") from None
  except ValueError as e:  # e.g. another dataset's shards
    raise common.UserError(f"--data_dir={data_dir}: {e}") from None
  try:
    model = training.load_trained_model(FLAGS.model_dir)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise common.UserError(f"--model_dir={FLAGS.model_dir}: {e}") from None
  output_dir = (
    os.path.dirname(os.path.abspath(FLAGS.output))
    if FLAGS.output
    else os.path.join(FLAGS.model_dir, "eval")
  )
  logging.info("evaluating %s on %s/%s", FLAGS.model_dir, data_dir, FLAGS.split)
  try:
    reporting.evaluate_and_write(
      model,
      schema,
      data_dir,
      FLAGS.split,
      output_dir,
      output=FLAGS.output or None,
      predictions_csv=FLAGS.predictions or None,
      model_dir=FLAGS.model_dir,
      batch_size=FLAGS.batch_size,
    )
  except ValueError as e:  # a corrupt shard, a sample_id not UTF-8 or repeated
    raise common.UserError(f"--split={FLAGS.split}: {e}") from None


def run() -> None:
  """Console-script entry point (``tafe-evaluate``)."""
  common.run(main)


if __name__ == "__main__":
  run()
