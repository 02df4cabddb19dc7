r"""Converts a real dataset's files into a dataset directory (TFRecords).

  python -m launch.convert --format=ali_ccp --raw_dir=RAW --out_dir=OUT

The command-line face of :mod:`tafe_tf.data.convert` (the same code path as the
library functions and the TFDS builders). Formats and the files each expects in
``--raw_dir``:

  ali_ccp            sample_skeleton_train.csv, common_features_train.csv
                     (+ optional sample_skeleton_test.csv, common_features_test.csv)
  ali_ccp_processed  train.csv, test.csv (+ optional val.csv)
  aliexpress         train.csv, test.csv
  paddle_esmm        train.txt, test.txt
  csv, tsv           any files with a header, read through a column spec:
                     --spec=spec.json (docs/data.md, "Your own columns") and/or
                     the flags --files, --id_columns, --list_columns,
                     --dense_columns, --steps, --key_column, --group_column,
                     --user_column (given with --spec, a flag replaces that key)
  tfrecord           tf.train.Example TFRecord files (gzip or not), read through
                     the same spec: its column names are the feature names
                     (default files train.tfrecord, test.tfrecord; one worker
                     per file)

  python -m launch.convert --format=csv --infer_spec --raw_dir=RAW --spec=spec.json

reads the header and the first 10,000 rows of the train file and writes a
proposed spec to edit (one line per column says what it became and why).

Prints a one-line summary; ``OUT/report.json`` has the details. Bad flags and
bad input end with one line on stderr, ``convert.py: error: ...``, and exit
status 2 (no traceback).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from absl import flags

from tafe_tf.data import column_spec  # no TensorFlow
from tafe_tf.launch import common

# Loaded in main: --help stays free of TensorFlow.
convert = common.lazy_import("tafe_tf.data.convert")
csv_formats = common.lazy_import("tafe_tf.data.csv_formats")
files_lib = common.lazy_import("tafe_tf.files")

FLAGS = flags.FLAGS
_PUBLIC_FORMATS = ["ali_ccp", "ali_ccp_processed", "aliexpress", "paddle_esmm"]
_IO = common.flag_group(__name__, "Input and output")
_SPEC = common.flag_group(__name__, "Your own columns (--format=csv, tsv or tfrecord)")
_CONVERSION = common.flag_group(__name__, "Conversion")
flags.DEFINE_enum(
  "format", None, _PUBLIC_FORMATS + ["csv", "tsv", "tfrecord"], "Input format.", module_name=_IO
)
flags.DEFINE_string("raw_dir", None, "Folder holding the input files.", module_name=_IO)
flags.DEFINE_string("out_dir", None, "Dataset directory to write.", module_name=_IO)
flags.DEFINE_string(
  "spec",
  "",
  "Column spec JSON file (csv/tsv/tfrecord): read, or written by --infer_spec.",
  module_name=_SPEC,
)
flags.DEFINE_boolean(
  "infer_spec",
  False,
  "Propose a spec from the train file's header and first rows, write it to --spec, and stop.",
  module_name=_SPEC,
)
flags.DEFINE_list(
  "files",
  None,
  "split:file name or glob in --raw_dir (default train:train.<format>,test:test.<format>).",
  module_name=_SPEC,
)
flags.DEFINE_list(
  "id_columns", None, "Id columns; column:hash for string ids (hashed).", module_name=_SPEC
)
flags.DEFINE_list(
  "list_columns",
  None,
  "List columns, column:separator[:inline | :weight column], e.g. tags:|.",
  module_name=_SPEC,
)
flags.DEFINE_list("dense_columns", None, "Dense (float) columns.", module_name=_SPEC)
flags.DEFINE_list(
  "steps",
  None,
  "step:label column, in chain order, e.g. click:is_click,purchase:is_buy.",
  module_name=_SPEC,
)
flags.DEFINE_string(
  "key_column", None, "Column written as each row's sample_id.", module_name=_SPEC
)
flags.DEFINE_string(
  "group_column",
  None,
  "Validation hold-out unit (default: the key column, else the line).",
  module_name=_SPEC,
)
flags.DEFINE_string("user_column", None, "The id column naming the user (GAUC).", module_name=_SPEC)
flags.DEFINE_string("name", None, "The dataset's (schema's) name.", module_name=_SPEC)
flags.DEFINE_integer(
  "min_count",
  10,
  "Train ids seen this many times or fewer map to the OOV row.",
  lower_bound=0,
  module_name=_CONVERSION,
)
flags.DEFINE_float(
  "validation_fraction",
  0.1,
  "Share of train rows held out as validation (formats without a validation file).",
  lower_bound=0.0,
  upper_bound=0.999999,
  module_name=_CONVERSION,
)
flags.DEFINE_integer("num_shards", 8, "Shards per split.", lower_bound=1, module_name=_CONVERSION)
flags.DEFINE_boolean(
  "strict",
  False,
  "Stop at the first bad line instead of skipping and counting it.",
  module_name=_CONVERSION,
)
flags.DEFINE_integer(
  "workers", 0, "Worker processes (0: one per CPU).", lower_bound=0, module_name=_CONVERSION
)
flags.DEFINE_integer(
  "cache_rows",
  4096,
  "ali_ccp: common rows each worker keeps parsed.",
  lower_bound=1,
  module_name=_CONVERSION,
)
flags.DEFINE_integer(
  "compression_level",
  1,
  "zlib level of the gzip shards (1: fastest; 6: ~30% smaller, ~2.5x slower).",
  lower_bound=0,
  upper_bound=9,
  module_name=_CONVERSION,
)

flags.mark_flags_as_required(["format", "raw_dir"])
flags.register_validator(
  "raw_dir",
  lambda path: path is None or os.path.isdir(path),
  message="--raw_dir must be an existing folder",
)

# Spec keys each flag sets (a flag given replaces the key of --spec).
_SPEC_FLAGS = (
  "files",
  "id_columns",
  "list_columns",
  "dense_columns",
  "steps",
  "key_column",
  "group_column",
  "user_column",
  "name",
)


def _pairs(values: List[str], flag: str, what: str) -> List[List[str]]:
  out = []
  for value in values:
    parts = value.split(":")
    if not all(parts):
      raise common.UserError(f"--{flag}={','.join(values)}: {value!r} is not {what}")
    out.append(parts)
  return out


def _flag_keys() -> Dict[str, Any]:
  """The spec keys given as flags (JSON form)."""
  given = {name for name in _SPEC_FLAGS if FLAGS[name].present}
  out: Dict[str, Any] = {}
  if "files" in given:
    files = {}
    for parts in _pairs(FLAGS.files, "files", "split:file"):
      if len(parts) != 2:
        raise common.UserError(f"--files: {':'.join(parts)!r} is not split:file")
      files[parts[0]] = parts[1]
    out["files"] = files
  if "id_columns" in given:
    out["id_columns"] = []
    for parts in _pairs(FLAGS.id_columns, "id_columns", "column or column:hash"):
      if len(parts) == 1:
        out["id_columns"].append(parts[0])
      elif len(parts) == 2 and parts[1] == "hash":
        out["id_columns"].append({"column": parts[0], "hash": True})
      else:
        raise common.UserError(f"--id_columns: {':'.join(parts)!r} is not column or column:hash")
  if "list_columns" in given:
    out["list_columns"] = []
    for value in FLAGS.list_columns:
      column, _, rest = value.partition(":")  # (a ":" separator needs the spec file)
      separator, _, weights = rest.partition(":")
      if not column or not separator:
        raise common.UserError(
          f"--list_columns: {value!r} is not column:separator[:inline | :weight column]"
        )
      entry: Dict[str, Any] = {"column": column, "separator": separator}
      if weights == "inline":
        entry["weights"] = "inline"
      elif weights:
        entry["weight_column"] = weights
      out["list_columns"].append(entry)
  if "dense_columns" in given:
    out["dense_columns"] = list(FLAGS.dense_columns)
  if "steps" in given:
    out["steps"] = []
    for parts in _pairs(FLAGS.steps, "steps", "step:column"):
      if len(parts) > 2:
        raise common.UserError(f"--steps: {':'.join(parts)!r} is not step:column")
      out["steps"].append({"name": parts[0], "column": parts[-1]})
  for key in ("key_column", "group_column", "user_column", "name"):
    if key in given:
      out[key] = getattr(FLAGS, key)
  return out


def _spec_json(infer: bool) -> Dict[str, Any]:
  """The spec's JSON form: --spec (unless inferring), then the flags over it."""
  delimiter = column_spec.FORMAT_DELIMITERS.get(FLAGS.format)  # None: TFRecords have none
  obj: Dict[str, Any] = {}
  if FLAGS.spec and not infer:
    try:
      obj = column_spec.read_spec_object(FLAGS.spec, FLAGS.format)
    except OSError as e:
      raise common.UserError(f"--spec={FLAGS.spec}: {e.strerror or e}") from None
    except column_spec.SpecError as e:
      raise common.UserError(str(e)) from None
  if delimiter:
    obj.setdefault("delimiter", delimiter)
  obj.setdefault("files", {"train": f"train.{FLAGS.format}", "test": f"test.{FLAGS.format}"})
  obj.update(_flag_keys())
  return obj


def _source() -> str:
  given = [f"--{n}" for n in _SPEC_FLAGS if FLAGS[n].present]
  return " + ".join(([FLAGS.spec] if FLAGS.spec else []) + given) or "flags"


def _infer() -> None:
  if not FLAGS.spec:
    raise common.UserError("--infer_spec writes the proposal to --spec=FILE: give --spec")
  if os.path.exists(FLAGS.spec):
    raise common.UserError(f"--spec={FLAGS.spec} exists: remove it or give another path")
  obj = _spec_json(infer=True)
  where = "--files: train" if FLAGS["files"].present else "the default: give --files=train:NAME"
  try:
    train = csv_formats.matching_files(FLAGS.raw_dir, obj["files"].get("train", ""), where)[0]
    header, rows = csv_formats.read_sample(train, obj["delimiter"])
  except (OSError, ValueError) as e:
    raise common.UserError(str(e)) from None
  proposal, lines = column_spec.infer_spec(header, rows, obj["delimiter"], obj["files"])
  proposal.update({k: v for k, v in obj.items() if k not in ("files", "delimiter")})
  for line in lines:
    print(line)
  try:
    spec = column_spec.ColumnSpec.from_json(proposal, FLAGS.spec)
  except column_spec.SpecError as e:
    hint = " (name them with --steps=step:column,...)" if len(proposal["steps"]) < 2 else ""
    raise common.UserError(f"{e}{hint}; nothing written") from None
  files_lib.write_json_atomic(FLAGS.spec, spec.to_json(), sort_keys=False)
  print(
    f"wrote {FLAGS.spec} from {len(rows)} rows of {train}: edit it, then run "
    f"launch.convert --format={FLAGS.format} --spec={FLAGS.spec} --raw_dir=... --out_dir=..."
  )


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  custom = FLAGS.format not in _PUBLIC_FORMATS
  if not custom:
    given = [f"--{n}" for n in _SPEC_FLAGS + ("spec", "infer_spec") if FLAGS[n].present]
    if given:
      raise common.UserError(
        f"{', '.join(given)}: only with --format=csv, --format=tsv or --format=tfrecord"
      )
  if FLAGS.format == "tfrecord" and FLAGS.infer_spec:
    raise common.UserError("--infer_spec: only with --format=csv or --format=tsv")
  if custom and FLAGS.infer_spec:
    _infer()
    return
  if not FLAGS.out_dir:
    raise common.UserError("flag --out_dir must have a value other than None.")
  options = dict(
    min_count=FLAGS.min_count,
    validation_fraction=FLAGS.validation_fraction,
    num_shards=FLAGS.num_shards,
    strict=FLAGS.strict,
    workers=FLAGS.workers,
    compression_level=FLAGS.compression_level,
  )
  if FLAGS.format == "ali_ccp":
    options["cache_rows"] = FLAGS.cache_rows
  try:
    if custom:
      spec = column_spec.ColumnSpec.from_json(_spec_json(infer=False), _source())
      by_format = (
        convert.convert_tfrecords if FLAGS.format == "tfrecord" else convert.convert_columns
      )
      report = by_format(spec, FLAGS.raw_dir, FLAGS.out_dir, **options)
    else:
      report = convert.CONVERTERS[FLAGS.format](FLAGS.raw_dir, FLAGS.out_dir, **options)
  except (OSError, ValueError) as e:  # a missing, empty or bad input or spec; out_dir unwritable
    raise common.UserError(str(e)) from None
  print(
    json.dumps(
      {
        k: report[k]
        for k in ("format", "rows_read", "rows_written", "rows_per_split", "skipped", "seconds")
      }
    )
  )


def run() -> None:
  """Console-script entry point (``tafe-convert``)."""
  common.run(main)


if __name__ == "__main__":
  run()
