r"""Quality benchmark: every model on the realistic family, against a plain ESMM and the oracle.

Writes each member of :data:`tafe_tf.data.realistic.FAMILY` (raw Ali-CCP or
AliExpress files with a hidden truth), converts it as ``launch.convert`` does,
trains every model as ``launch.train`` does at its defaults (plus any
``--variants``) and scores the test split against the truth
(:mod:`tafe_tf.benchmarks.realistic_quality`)::

  python -m launch.benchmark_quality --members=base,conflict --seeds=0,1,2

prints mean +- standard error over the seeds of CTR, CTCVR, click-space and
entire-space CVR AUC and PCOC per (member, model), with each model's paired
difference to the plain ESMM, and writes ``results.jsonl`` (one line per run,
as it finishes: a rerun with the same ``--run_dir`` skips the finished ones),
``summary.md``, ``table.txt`` and ``quality.json`` into ``--run_dir``.
A variant is ``label=model:{"hparams": {...}, "settings": {...},
"convert_options": {...}}``, e.g.
``--variants='tafe_mc0=tafe:{"convert_options": {"min_count": 0}}'``.
"""

from __future__ import annotations

from typing import List

from absl import flags

from tafe_tf.launch import common

realistic_quality = common.lazy_import("tafe_tf.benchmarks.realistic_quality")

FLAGS = flags.FLAGS

flags.DEFINE_list(
  "members", ["base", "conflict", "selection", "sparse", "aliexpress_shaped"], "Family members."
)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each redraws the member's world and rows).")
flags.DEFINE_list(
  "models", list(common.MODEL_NAMES), "Package models at their defaults (with the plain ESMM)."
)
flags.DEFINE_multi_string("variants", [], "More variants: label=model:{json} (see the docstring).")
flags.DEFINE_integer("num_train", 200_000, "Train impressions per member.", lower_bound=1000)
flags.DEFINE_integer("num_test", 250_000, "Test impressions per member.", lower_bound=1000)
common.define_report_flags("quality")


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  unknown = sorted(set(FLAGS.models) - set(common.MODEL_NAMES))
  if unknown:
    raise common.UserError(f"--models: unknown {', '.join(unknown)}")
  try:
    seeds = [int(s) for s in FLAGS.seeds]
    variants = realistic_quality.default_variants(FLAGS.models) + [
      realistic_quality.parse_variant(v) for v in FLAGS.variants
    ]
  except ValueError as e:
    raise common.UserError(f"--seeds/--variants: {e}") from None
  run_dir = common.run_dir("quality")
  results = realistic_quality.run_grid(
    FLAGS.members, seeds, variants, run_dir, FLAGS.num_train, FLAGS.num_test
  )
  summary = realistic_quality.write_summary(results, run_dir)
  common.report("quality", summary, realistic_quality.format_table(summary["rows"]))


def run() -> None:
  """Console-script entry point."""
  common.run(main)


if __name__ == "__main__":
  run()
