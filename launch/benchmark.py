r"""The comparison benchmark: accuracy with error bars, ablation, speed.

Trains every model on every scenario with several seeds (the best epoch on
validation kept), evaluates on the test split, runs TAFE's ablations, times
train steps of our models against DeepCTR's on identical batches, and writes:

* ``<output_dir>/benchmark.json``: every run, the summary and the speed rows;
* ``<output_dir>/benchmark_auc.png``, ``benchmark_throughput.png``,
  ``benchmark_gates_<scenario>.png``;
* the "Comparison", "Ablation" and "Speed" sections of ``--markdown``
  (other sections are kept as they are).

    python -m launch.benchmark                       # the default grid
    python -m launch.benchmark --quick --output_dir=/tmp/b --markdown=/tmp/b.md
    python -m launch.benchmark --data_dir=/data/ali_ccp --scenarios= \
        --ablations= --speed=false                   # a converted dataset

``--quick`` shrinks every size not given explicitly (2 models, 1 scenario,
2 seeds, a few thousand rows) so that the run takes a few minutes or less.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List

from absl import flags

from tafe_tf.benchmarks import experiments
from tafe_tf import features as features_lib
from tafe_tf import plots

from tafe_tf.launch import common
from tafe_tf import files

_QUICK = flags.DEFINE_bool("quick", False, "A tiny grid (see the module doc).")
_MODELS = flags.DEFINE_list("models", list(experiments.models_lib.MODEL_NAMES),
                            "Models compared.")
_SCENARIOS = flags.DEFINE_list(
    "scenarios", list(experiments.SYNTHETIC_SCENARIOS),
    f"Synthetic scenarios ({', '.join(experiments.SYNTHETIC_SCENARIOS)}).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Also a converted dataset "
                                "(Ali-CCP, AliExpress) as a scenario.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per (scenario, model): 0..N-1.",
                              lower_bound=1)
_ABLATIONS = flags.DEFINE_list("ablations", list(experiments.ABLATIONS),
                               "TAFE ablations.")
_ABLATION_SCENARIOS = flags.DEFINE_list("ablation_scenarios", ["conflict"],
                                        "Scenarios the ablations run on.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 50_000, "Synthetic train rows.",
                                  lower_bound=1)
_NUM_EVAL = flags.DEFINE_integer("num_eval", 20_000, "Synthetic validation "
                                 "and test rows (each).", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per run (best kept).",
                               lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1024, "Training batch.",
                                   lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-3, "Adam rate.",
                                    lower_bound=0)
_MONITOR = flags.DEFINE_string(
    "monitor", experiments.LAST_STEP_AUC, "Validation quantity that picks "
    f"each run's epoch: {experiments.LAST_STEP_AUC} (val_auc/<last step> of "
    "each scenario), or any logged one, e.g. val_loss, "
    "val_logloss/purchase.")
_HPARAMS = flags.DEFINE_string("hparams", "{}", "JSON of common model "
                               "hyperparameters.")
_SPEED = flags.DEFINE_bool("speed", True, "Measure the speed section.")
_SPEED_MODELS = flags.DEFINE_list("speed_models", None, "Our models timed "
                                  "(default: --models).")
_PEER_MODELS = flags.DEFINE_list("peer_models", ["esmm", "mmoe", "ple"],
                                 "DeepCTR models timed.")
_SPEED_BATCH = flags.DEFINE_integer("speed_batch_size", 2048, "Speed batch.",
                                    lower_bound=1)
_SPEED_STEPS = flags.DEFINE_integer("speed_steps", 20, "Timed steps per run.",
                                    lower_bound=1)
_SPEED_REPEATS = flags.DEFINE_integer("speed_repeats", 3, "Timed runs (best "
                                      "kept).", lower_bound=1)
_SERVING_CALLS = flags.DEFINE_integer("serving_calls", 100, "Timed serving "
                                      "calls per batch size.", lower_bound=1)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "docs", "JSON and PNGs go here.")
_MARKDOWN = flags.DEFINE_string("markdown", "docs/benchmarks.md", "Document "
                                "whose sections are replaced ('' : none).")
_WORK_DIR = flags.DEFINE_string("work_dir", "", "Datasets and runs (default: "
                                "a folder under the system temp dir).")

# --quick: sizes used for every flag not given on the command line.
QUICK = {"models": ["tafe", "mmoe"], "scenarios": ["conflict"], "seeds": 2,
         "ablations": ["no_transfer"], "num_train": 4096, "num_eval": 2048,
         "batch_size": 512, "speed_models": ["tafe", "ple"],
         "peer_models": ["ple"], "speed_batch_size": 512, "speed_steps": 5,
         "speed_repeats": 1, "serving_calls": 20}


def _apply_quick() -> None:
  for name, value in QUICK.items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value


def _scenarios() -> List[experiments.Scenario]:
  out = []
  for name in _SCENARIOS.value:
    if name not in experiments.SYNTHETIC_SCENARIOS:
      raise common.UserError(
          f"--scenarios: unknown scenario {name!r}; valid: "
          f"{', '.join(experiments.SYNTHETIC_SCENARIOS)}")
    out.append(experiments.Scenario(
        name, synthetic=experiments.SYNTHETIC_SCENARIOS[name]))
  if _DATA_DIR.value:
    schema = common.require_dataset_dir(_DATA_DIR.value)
    out.append(experiments.Scenario(schema.name, data_dir=_DATA_DIR.value))
  if not out:
    raise common.UserError("no scenario: give --scenarios or --data_dir")
  return out


def main(argv: List[str]) -> None:
  del argv
  if _QUICK.value:
    _apply_quick()
  try:
    hparams = json.loads(_HPARAMS.value)
  except json.JSONDecodeError as e:
    raise common.UserError(f"--hparams: not JSON: {e}") from None
  scenarios = _scenarios()
  ablation_scenarios = [s for s in _ABLATION_SCENARIOS.value
                        if s in {x.name for x in scenarios}]
  try:
    config = experiments.GridConfig(
        scenarios=scenarios, models=_MODELS.value, ablations=_ABLATIONS.value,
        ablation_scenarios=ablation_scenarios,
        seeds=tuple(range(_SEEDS.value)), num_train=_NUM_TRAIN.value,
        num_eval=_NUM_EVAL.value, epochs=_EPOCHS.value,
        batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
        hparams=hparams, monitor=_MONITOR.value, **({"work_dir": _WORK_DIR.value}
                            if _WORK_DIR.value else {}))
  except ValueError as e:
    raise common.UserError(str(e)) from None
  command = " ".join(["python -m launch.benchmark"] + sys.argv[1:])
  runs, gates = experiments.run_grid(config)
  summary = experiments.summarize(runs)
  data_dirs = {s.name: experiments.scenario_data_dir(s, config)
               for s in scenarios}
  steps: Dict[str, List[str]] = {
      name: list(features_lib.Schema.load(d).steps)
      for name, d in data_dirs.items()}
  checks = experiments.check_targets(summary,
                                     {k: v[-1] for k, v in steps.items()})
  speed = None
  if _SPEED.value:
    speed_data = next((d for n, d in data_dirs.items() if len(steps[n]) == 2),
                      None)
    if speed_data is None:
      raise common.UserError("--speed needs a two-step scenario")
    speed = experiments.measure_speed(speed_data, experiments.SpeedConfig(
        models=_SPEED_MODELS.value or _MODELS.value,
        peer_models=_PEER_MODELS.value, batch_size=_SPEED_BATCH.value,
        steps=_SPEED_STEPS.value, repeats=_SPEED_REPEATS.value,
        serving_calls=_SERVING_CALLS.value, hparams=hparams))
    checks += experiments.speed_checks(speed)
  out = _OUTPUT_DIR.value
  os.makedirs(out, exist_ok=True)
  experiments.plot_auc(summary, steps, os.path.join(out, "benchmark_auc.png"))
  if speed is not None:
    experiments.plot_throughput(speed,
                                os.path.join(out, "benchmark_throughput.png"))
  for scenario, means in gates.items():
    plots.plot_gate_weights({k: v[None, :] for k, v in means.items()},
                            os.path.join(out, f"benchmark_gates_{scenario}.png"))
  result = {
      "command": command, "config": {
          "scenarios": [s.name for s in scenarios], "models": config.models,
          "ablations": list(config.ablations),
          "ablation_scenarios": list(config.ablation_scenarios),
          "seeds": list(config.seeds), "num_train": config.num_train,
          "num_eval": config.num_eval, "epochs": config.epochs,
          "batch_size": config.batch_size, "monitor": config.monitor,
          "hparams": hparams},
      "runs": [r.to_json() for r in runs],
      "summary": {sc: {v: {k: s.to_json() for k, s in stats.items()}
                       for v, stats in variants.items()}
                  for sc, variants in summary.items()},
      "gates": {sc: {k: v.tolist() for k, v in g.items()}
                for sc, g in gates.items()},
      "speed": speed,
      "targets": [c.__dict__ for c in checks]}
  files.write_json_atomic(os.path.join(out, "benchmark.json"),
                           files.json_safe(result))
  sections = experiments.markdown_sections(summary, steps, speed, command,
                                           checks, monitor=config.monitor)
  if _MARKDOWN.value:
    text = (open(_MARKDOWN.value).read() if os.path.exists(_MARKDOWN.value)
            else "# Benchmarks\n")
    with open(_MARKDOWN.value, "w") as f:
      f.write(experiments.replace_sections(text, sections))
  for title, body in sections.items():
    print(f"## {title}\n\n{body}")


def run() -> None:
  """Console-script entry point (``tafe-benchmark``)."""
  common.run(main)


if __name__ == "__main__":
  run()
