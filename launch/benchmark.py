r"""The comparison benchmark: accuracy with error bars, ablation, speed.

Trains every model on every scenario with several seeds (the best epoch on
validation kept), evaluates on the test split, runs TAFE's ablations, times
train steps of our models against DeepCTR's on identical batches
(:func:`tafe_tf.benchmarks.experiments.run_benchmark`), and writes into
``--run_dir`` (default ``runs/benchmark-comparison-<UTC time>``):

* ``benchmark.json``: every run, the summary and the speed rows;
* ``benchmark_auc.png``, ``benchmark_throughput.png``,
  ``benchmark_gates_<scenario>.png``;
* ``benchmarks.md``: ``docs/benchmarks.md`` with its "Comparison",
  "Ablation" and "Speed" sections replaced (other sections kept as they are).

The repository's ``docs/`` changes only with ``--update_docs``: then the
JSON, the plots and the three sections go to ``--docs_dir`` too.

    python -m launch.benchmark                       # the default grid
    python -m launch.benchmark --quick --run_dir=/tmp/b
    python -m launch.benchmark --update_docs         # refresh docs/
    python -m launch.benchmark --data_dir=/data/ali_ccp --scenarios= \
        --ablations= --speed=false                   # a converted dataset

``--quick`` shrinks every size not given explicitly (2 models, 1 scenario,
2 seeds, a few thousand rows) so that the run takes a few minutes or less.
"""

from __future__ import annotations

import os
import shutil
from typing import List, Mapping

from absl import flags

from tafe_tf.benchmarks import names
from tafe_tf.launch import common

experiments = common.lazy_import("tafe_tf.benchmarks.experiments")

FLAGS = flags.FLAGS
DOC = "benchmarks.md"
# What --update_docs copies from the run directory into --docs_dir.
DOC_FILES = ("benchmark.json", "benchmark_auc.png", "benchmark_throughput.png")

flags.DEFINE_bool("quick", False, "A tiny grid (see the module doc).")
flags.DEFINE_list("models", list(common.MODEL_NAMES), "Models compared.")
flags.DEFINE_list(
  "scenarios", list(names.SCENARIOS), f"Synthetic scenarios ({', '.join(names.SCENARIOS)})."
)
flags.DEFINE_string("data_dir", "", "Also a converted dataset (Ali-CCP, AliExpress) as a scenario.")
flags.DEFINE_integer("seeds", 3, "Seeds per (scenario, model): 0..N-1.", lower_bound=1)
flags.DEFINE_list("ablations", list(names.ABLATIONS), "TAFE ablations.")
flags.DEFINE_list("ablation_scenarios", ["conflict"], "Scenarios the ablations run on.")
flags.DEFINE_integer("num_train", 50_000, "Synthetic train rows.", lower_bound=1)
flags.DEFINE_integer(
  "num_eval", 20_000, "Synthetic validation and test rows (each).", lower_bound=1
)
flags.DEFINE_integer("epochs", 2, "Epochs per run (best kept).", lower_bound=1)
flags.DEFINE_integer("batch_size", 1024, "Training batch.", lower_bound=1)
flags.DEFINE_float("learning_rate", 2e-3, "Adam rate.", lower_bound=0)
flags.DEFINE_string(
  "monitor",
  names.LAST_STEP_AUC,
  "Validation quantity that picks each "
  f"run's epoch: {names.LAST_STEP_AUC} (val_auc/<last step> of each "
  "scenario), or any logged one, e.g. val_loss, val_logloss/purchase.",
)
flags.DEFINE_string("hparams", "{}", "JSON of common model hyperparameters.")
flags.DEFINE_bool("speed", True, "Measure the speed section.")
flags.DEFINE_list("speed_models", None, "Our models timed (default: --models).")
flags.DEFINE_list("peer_models", ["esmm", "mmoe", "ple"], "DeepCTR models timed.")
flags.DEFINE_integer("speed_batch_size", 2048, "Speed batch.", lower_bound=1)
flags.DEFINE_integer("speed_steps", 20, "Timed steps per run.", lower_bound=1)
flags.DEFINE_integer("speed_repeats", 3, "Timed runs (best kept).", lower_bound=1)
flags.DEFINE_integer("serving_calls", 100, "Timed serving calls per batch size.", lower_bound=1)
flags.DEFINE_string(
  "run_dir",
  "",
  "JSON, plots and benchmarks.md go here (default: runs/benchmark-comparison-<UTC time>).",
)
flags.DEFINE_alias("output_dir", "run_dir")
flags.DEFINE_bool(
  "update_docs",
  False,
  "Also refresh --docs_dir: its "
  "benchmark.json, benchmark_*.png and the three sections of "
  "its benchmarks.md.",
)
flags.DEFINE_string(
  "docs_dir",
  "docs",
  "The documentation --update_docs "
  "refreshes; also the page the run dir's benchmarks.md "
  "starts from.",
)
flags.DEFINE_string("markdown", "", "Also replace the sections in this document ('': none).")
flags.DEFINE_string(
  "work_dir", "", "Datasets and runs (default: a folder under the system temp dir)."
)

# --quick: sizes used for every flag not given on the command line.
QUICK = {
  "models": ["tafe", "mmoe"],
  "scenarios": ["conflict"],
  "seeds": 2,
  "ablations": ["no_transfer"],
  "num_train": 4096,
  "num_eval": 2048,
  "batch_size": 512,
  "speed_models": ["tafe", "ple"],
  "peer_models": ["ple"],
  "speed_batch_size": 512,
  "speed_steps": 5,
  "speed_repeats": 1,
  "serving_calls": 20,
}


def _apply_quick() -> None:
  for name, value in QUICK.items():
    if not FLAGS[name].present:
      FLAGS[name].value = value


def _scenarios() -> List["experiments.Scenario"]:
  out = []
  for name in FLAGS.scenarios:
    if name not in names.SCENARIOS:
      raise common.UserError(
        f"--scenarios: unknown scenario {name!r}; valid: {', '.join(names.SCENARIOS)}"
      )
    out.append(experiments.Scenario(name, synthetic=experiments.SYNTHETIC_SCENARIOS[name]))
  if FLAGS.data_dir:
    schema = common.require_dataset_dir(FLAGS.data_dir)
    out.append(experiments.Scenario(schema.name, data_dir=FLAGS.data_dir))
  if not out:
    raise common.UserError("no scenario: give --scenarios or --data_dir")
  return out


def _configs(hparams: dict):
  """``(GridConfig, SpeedConfig or None)`` of the flags."""
  scenarios = _scenarios()
  try:
    grid = experiments.GridConfig(
      scenarios=scenarios,
      models=FLAGS.models,
      ablations=FLAGS.ablations,
      ablation_scenarios=[s for s in FLAGS.ablation_scenarios if s in {x.name for x in scenarios}],
      seeds=tuple(range(FLAGS.seeds)),
      num_train=FLAGS.num_train,
      num_eval=FLAGS.num_eval,
      epochs=FLAGS.epochs,
      batch_size=FLAGS.batch_size,
      learning_rate=FLAGS.learning_rate,
      hparams=hparams,
      monitor=FLAGS.monitor,
      **({"work_dir": FLAGS.work_dir} if FLAGS.work_dir else {}),
    )
  except ValueError as e:
    raise common.UserError(str(e)) from None
  speed = (
    experiments.SpeedConfig(
      models=FLAGS.speed_models or FLAGS.models,
      peer_models=FLAGS.peer_models,
      batch_size=FLAGS.speed_batch_size,
      steps=FLAGS.speed_steps,
      repeats=FLAGS.speed_repeats,
      serving_calls=FLAGS.serving_calls,
      hparams=hparams,
    )
    if FLAGS.speed
    else None
  )
  return grid, speed


def write_sections(path: str, sections: Mapping[str, str], template: str = "") -> None:
  """Replaces ``sections`` in the document at ``template`` (default:
  ``path``; a bare heading when missing) and writes it to ``path``."""
  source = template or path
  text = open(source, encoding="utf-8").read() if os.path.exists(source) else "# Benchmarks\n"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(experiments.replace_sections(text, sections))


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  if FLAGS.quick:
    _apply_quick()
  grid, speed = _configs(common.json_flag(FLAGS.hparams, "hparams"))
  out = common.run_dir("comparison")
  try:
    result, sections = experiments.run_benchmark(
      grid, speed, out, common.command_line("launch.benchmark")
    )
  except ValueError as e:  # e.g. speed without a two-step scenario
    raise common.UserError(str(e)) from None
  write_sections(os.path.join(out, DOC), sections, template=os.path.join(FLAGS.docs_dir, DOC))
  if FLAGS.markdown:
    write_sections(FLAGS.markdown, sections)
  if FLAGS.update_docs:
    os.makedirs(FLAGS.docs_dir, exist_ok=True)
    for name in DOC_FILES + tuple(f"benchmark_gates_{s}.png" for s in result["gates"]):
      if os.path.exists(os.path.join(out, name)):
        shutil.copyfile(os.path.join(out, name), os.path.join(FLAGS.docs_dir, name))
    write_sections(os.path.join(FLAGS.docs_dir, DOC), sections)
  for title, body in sections.items():
    print(f"## {title}\n\n{body}")
  print(f"results: {out}" + (f"; {FLAGS.docs_dir} updated" if FLAGS.update_docs else ""))


def run() -> None:
  """Console-script entry point (``tafe-benchmark``)."""
  common.run(main)


if __name__ == "__main__":
  run()
