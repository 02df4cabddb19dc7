r"""Soak: conversion and training killed with SIGKILL at random moments, rerun, compared.

Writes a small realistic Ali-CCP member, converts it and trains ESMM on it once
uninterrupted (the reference), then for ``--rounds`` rounds runs the same
``launch.convert`` (into a fresh out dir) and ``launch.train`` (into a fresh
model dir), each killed with SIGKILL (its whole process group) at a moment
drawn from the reference run's duration, rerun into the same folder
(``--kills`` times), and finished; each final dataset and model is compared
with the reference (:mod:`tafe_tf.benchmarks.soak`)::

  python -m launch.benchmark_soak --rounds=5

prints a table and writes it (``table.txt``) and the numbers (``soak.json``)
into ``--run_dir`` (default ``runs/benchmark-soak-<UTC time>``), and the JSON
to ``--output`` if given. Exits 2 when a round's output differs or a rerun
fails (the table says which).
"""

from __future__ import annotations

import tempfile
from typing import List

from absl import flags

from tafe_tf.launch import common

soak = common.lazy_import("tafe_tf.benchmarks.soak")

FLAGS = flags.FLAGS

flags.DEFINE_integer("rounds", 5, "Soak rounds (each kills both stages).", lower_bound=1)
flags.DEFINE_integer("kills", 2, "Kills per stage per round before the last rerun.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
flags.DEFINE_integer("num_train", 40_000, "Train impressions of the raw member.", lower_bound=1)
flags.DEFINE_integer("num_test", 10_000, "Test impressions of the raw member.", lower_bound=1)
flags.DEFINE_float(
  "tolerance", 1e-4, "Largest max abs prediction difference counted as equal.", lower_bound=0
)
flags.DEFINE_string(
  "work_dir",
  None,
  "Where the raw files, datasets, model dirs and logs go (default: a temporary folder, deleted"
  " afterwards).",
)
common.define_report_flags("soak")


def _benchmark(work_dir: str) -> dict:
  try:
    return soak.benchmark(
      work_dir,
      FLAGS.rounds,
      FLAGS.seed,
      FLAGS.num_train,
      FLAGS.num_test,
      FLAGS.kills,
      FLAGS.tolerance,
    )
  except RuntimeError as e:  # a reference run failed, a killed group lived on
    raise common.UserError(str(e).splitlines()[0]) from None


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  if FLAGS.work_dir:
    results = _benchmark(FLAGS.work_dir)
  else:
    with tempfile.TemporaryDirectory(prefix="tafe_bench_soak_") as work_dir:
      results = _benchmark(work_dir)
  out = common.report("soak", results, soak.table(results))
  if not results["ok"]:
    raise common.UserError(f"a killed and rerun output differs from the reference; see {out}")


def run() -> None:
  """Console-script entry point."""
  common.run(main)


if __name__ == "__main__":
  run()
