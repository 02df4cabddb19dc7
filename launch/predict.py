r"""Scores rows with a trained model into a CSV: row key, p_<step>, q_<step>.

    python -m launch.predict --model_dir=runs/tafe-synthetic \
        --input=~/.cache/tafe_tf/synthetic-2step-seed0 --split=test --output=preds.csv

or through an exported SavedModel, exactly what TF Serving serves::

    python -m launch.predict --export_dir=runs/tafe-synthetic/export \
        --input=DATA_DIR --split=test --output=preds.csv

or raw files, read through the column spec they were converted with
(``--format=csv|tsv|tfrecord --spec``, docs/data.md "Your own columns")::

    python -m launch.predict --model_dir=runs/shop --format=csv --spec=logs.json \
        --input='new/*.csv' --output=preds.csv

Without ``--format``, ``--input`` is a converted dataset directory
(``launch.convert``); its rows may carry labels or not (labels are ignored).
The key column is ``sample_id`` where the data has ids (bytes that are not
UTF-8 are written as ``\xNN`` escapes, and counted), else ``row``, the 0-based
position in file order.

With ``--format``, ``--input`` is a file or glob (files in name order): the
label columns may be absent; a bad line is skipped and counted (``--strict``:
stops) as ``launch.convert`` does, and the summary line counts them by reason.
The key column is ``sample_id`` (the spec's ``key_column``), else ``line``
(``record`` for TFRecords): ``<file>:<number>``, from 1 in each file.

Rows are scored and written a batch at a time (bounded memory); the output
appears only once complete (``<output>.incomplete`` until then).
"""

from __future__ import annotations

import os

from absl import flags, logging

from tafe_tf.launch import common

# Loaded at first use, in main: --help stays free of TensorFlow.
prediction = common.lazy_import("tafe_tf.prediction")
raw_rows = common.lazy_import("tafe_tf.data.raw_rows")
training = common.lazy_import("tafe_tf.training")

FLAGS = flags.FLAGS

_MODEL = common.flag_group(__name__, "Model (one of the two)")
_INPUT = common.flag_group(__name__, "Rows to score")
_OUTPUT = common.flag_group(__name__, "Output")
flags.DEFINE_string("model_dir", "", "Trained model directory (launch.train).", module_name=_MODEL)
flags.DEFINE_string(
  "export_dir",
  "",
  "An exported SavedModel: a version directory, or the export base directory (its newest).",
  module_name=_MODEL,
)
flags.DEFINE_string(
  "input",
  "",
  "Converted dataset directory (launch.convert) to score; with --format, raw files (a glob).",
  module_name=_INPUT,
)
flags.DEFINE_string("split", "test", "Split of a converted --input to score.", module_name=_INPUT)
flags.DEFINE_enum(
  "format",
  None,
  ["csv", "tsv", "tfrecord"],
  "Score raw files of this format (--input is a glob), read through --spec.",
  module_name=_INPUT,
)
flags.DEFINE_string(
  "spec", "", "Column spec JSON file (launch.convert --spec) of the raw files.", module_name=_INPUT
)
flags.DEFINE_bool(
  "strict",
  False,
  "Raw files: stop at the first bad line instead of skipping and counting it.",
  module_name=_INPUT,
)
flags.DEFINE_integer(
  "batch_size", 4096, "Rows scored at once (and held in memory).", lower_bound=1, module_name=_INPUT
)
flags.DEFINE_string("output", "", "Predictions CSV to write.", module_name=_OUTPUT)


def main(argv):
  del argv  # checked by common.run
  if bool(FLAGS.model_dir) == bool(FLAGS.export_dir):
    raise common.UserError("give one of --model_dir and --export_dir")
  if not FLAGS.output:
    raise common.UserError("--output is required")
  if os.path.isdir(FLAGS.output):
    raise common.UserError(f"--output={FLAGS.output} is a directory")
  source = _raw_source() if FLAGS.format else _converted_source()
  if FLAGS.model_dir:
    common.require_model_dir(FLAGS.model_dir)
    try:
      schema = training.model_dir_schema(FLAGS.model_dir)
      model = training.load_trained_model(FLAGS.model_dir)
      prediction.check_inputs(schema, source.schema)
    except (FileNotFoundError, ValueError, KeyError) as e:
      raise common.UserError(f"--model_dir={FLAGS.model_dir}: {e}") from None
    scorer, steps = prediction.model_scorer(model, schema), list(schema.steps)
    fields = schema.field_names
  else:
    if not os.path.isdir(FLAGS.export_dir):
      raise common.UserError(f"--export_dir={FLAGS.export_dir}: no such directory")
    try:
      scorer = prediction.SavedModelScorer(FLAGS.export_dir)
      scorer.check_inputs(source.schema)
      steps = scorer.steps(source.schema)
    except (FileNotFoundError, ValueError) as e:
      raise common.UserError(f"--export_dir={FLAGS.export_dir}: {e}") from None
    fields = [f.name for f in source.schema.fields if f.name in scorer.inputs]
  if FLAGS.format:
    source.encode_only(fields)  # what the model reads
  logging.info("scoring %s into %s", source.description, FLAGS.output)
  try:
    summary = prediction.predict_to_csv(
      source,
      scorer,
      steps,
      FLAGS.output,
      batch_size=FLAGS.batch_size,
      progress=lambda rows: logging.info("%d rows scored", rows),
    )
  except ValueError as e:
    raise common.UserError(str(e)) from None
  escaped = (
    f"; {summary.escaped_keys} {summary.key_column}s not UTF-8, written with \\x escapes"
    if summary.escaped_keys
    else ""
  )
  read = f"; {source.read_summary()}" if FLAGS.format else ""
  print(
    f"{summary.rows} rows ({summary.key_column}, p_ and q_ per step) -> "
    f"{summary.path}{escaped}{read}"
  )


def _converted_source():
  """The split of the converted dataset directory --input."""
  for name in ("spec", "strict"):
    if FLAGS[name].present:
      raise common.UserError(f"--{name}: only with --format (raw files)")
  common.require_dataset_dir(FLAGS.input, flag="--input")
  try:
    return prediction.ConvertedSplit(FLAGS.input, FLAGS.split)
  except (FileNotFoundError, ValueError) as e:
    raise common.UserError(f"--input={FLAGS.input} --split={FLAGS.split}: {e}") from None


def _raw_source():
  """The raw files --input, read through --spec."""
  if not FLAGS.spec:
    raise common.UserError(f"--format={FLAGS.format} reads the files through --spec=FILE: give it")
  if not FLAGS.input:
    raise common.UserError("--input is required (a file or glob)")
  if FLAGS["split"].present:
    raise common.UserError("--split: only for a converted dataset directory (without --format)")
  try:
    spec = raw_rows.load_spec(FLAGS.spec, FLAGS.format)
    paths = raw_rows.input_files(FLAGS.input)
  except FileNotFoundError as e:
    raise common.UserError(f"--input={FLAGS.input}: {e}") from None
  except ValueError as e:
    raise common.UserError(str(e)) from None
  try:
    return raw_rows.RawRows(raw_rows.spec_format(spec, FLAGS.format), paths, strict=FLAGS.strict)
  except ValueError as e:
    raise common.UserError(str(e)) from None


def run() -> None:
  """Console-script entry point (``tafe-predict``)."""
  common.run(main)


if __name__ == "__main__":
  run()
