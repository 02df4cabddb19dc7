r"""Data benchmarks: raw Ali-CCP conversion and tf.data read throughput.

Writes a raw-format Ali-CCP pair (``sample_skeleton_train.csv`` +
``common_features_train.csv``) with realistic shapes (about 58 impressions per
common row, hundreds of behaviour entries per common row, Zipf item ids) to a
work folder, converts it with ``python -m launch.convert`` in a child process
while sampling the resident memory of the whole process tree, then reads the
train split back through :func:`tafe_tf.input_pipeline.make_dataset`
(:mod:`tafe_tf.benchmarks.data_throughput`).

  python -m launch.benchmark_data --impressions=1000000

prints a table and writes it (``table.txt``) and the numbers (``data.json``)
into ``--run_dir`` (default ``runs/benchmark-data-<UTC time>``), and the JSON
to ``--output`` if given.
"""

from __future__ import annotations

import tempfile
from typing import List

from absl import flags

from tafe_tf.launch import common

data_throughput = common.lazy_import("tafe_tf.benchmarks.data_throughput")

FLAGS = flags.FLAGS

flags.DEFINE_integer("impressions", 1_000_000, "Skeleton rows to generate.", lower_bound=1)
flags.DEFINE_integer(
  "impressions_per_user", 58, "Mean impressions per common row (Ali-CCP: ~58).", lower_bound=1
)
flags.DEFINE_integer(
  "history_entries", 600, "Mean behaviour entries per common row.", lower_bound=0
)
flags.DEFINE_integer("workers", 0, "Converter worker processes (0: one per CPU).", lower_bound=0)
flags.DEFINE_integer("num_shards", 8, "Shards per split.", lower_bound=1)
flags.DEFINE_integer("read_batch_size", 2048, "Batch size of the read test.", lower_bound=1)
flags.DEFINE_string(
  "work_dir",
  None,
  "Where to write the raw files and the dataset (default: a temporary folder, deleted afterwards).",
)
flags.DEFINE_integer("seed", 0, "Generator seed.")
common.define_report_flags("data")


def _benchmark(work_dir: str) -> dict:
  try:
    return data_throughput.benchmark(
      work_dir,
      FLAGS.impressions,
      FLAGS.impressions_per_user,
      FLAGS.history_entries,
      FLAGS.workers,
      FLAGS.num_shards,
      FLAGS.read_batch_size,
      FLAGS.seed,
    )
  except RuntimeError as e:  # the conversion failed
    raise common.UserError(str(e).splitlines()[0]) from None


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  if FLAGS.work_dir:
    results = _benchmark(FLAGS.work_dir)
  else:
    with tempfile.TemporaryDirectory(prefix="tafe_bench_data_") as work_dir:
      results = _benchmark(work_dir)
  common.report("data", results, data_throughput.table(results))


def run() -> None:
  """Console-script entry point."""
  common.run(main)


if __name__ == "__main__":
  run()
