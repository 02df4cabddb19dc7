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

Prints a one-line summary; ``OUT/report.json`` has the details. Bad flags and
bad input end with one line on stderr, ``convert.py: error: ...``, and exit
status 2 (no traceback).
"""

from __future__ import annotations

import json
import os
from typing import List

from absl import flags

from tafe_tf.launch import common

# Loaded in main: --help stays free of TensorFlow.
convert = common.lazy_import("tafe_tf.data.convert")

FLAGS = flags.FLAGS
flags.DEFINE_enum(
  "format", None, ["ali_ccp", "ali_ccp_processed", "aliexpress", "paddle_esmm"], "Input format."
)
flags.DEFINE_string("raw_dir", None, "Folder holding the input files.")
flags.DEFINE_string("out_dir", None, "Dataset directory to write.")
flags.DEFINE_integer(
  "min_count", 10, "Train ids seen this many times or fewer map to the OOV row.", lower_bound=0
)
flags.DEFINE_float(
  "validation_fraction",
  0.1,
  "Share of train rows held out as validation (formats without a validation file).",
  lower_bound=0.0,
  upper_bound=0.999999,
)
flags.DEFINE_integer("num_shards", 8, "Shards per split.", lower_bound=1)
flags.DEFINE_boolean(
  "strict", False, "Stop at the first bad line instead of skipping and counting it."
)
flags.DEFINE_integer("workers", 0, "Worker processes (0: one per CPU).", lower_bound=0)
flags.DEFINE_integer(
  "cache_rows", 4096, "ali_ccp: common rows each worker keeps parsed.", lower_bound=1
)
flags.DEFINE_integer(
  "compression_level",
  1,
  "zlib level of the gzip shards (1: fastest; 6: ~30% smaller, ~2.5x slower).",
  lower_bound=0,
  upper_bound=9,
)

flags.mark_flags_as_required(["format", "raw_dir", "out_dir"])
flags.register_validator(
  "raw_dir",
  lambda path: path is None or os.path.isdir(path),
  message="--raw_dir must be an existing folder",
)


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
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
    report = convert.CONVERTERS[FLAGS.format](FLAGS.raw_dir, FLAGS.out_dir, **options)
  except (OSError, ValueError) as e:  # a missing, empty or bad input; out_dir unwritable
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
