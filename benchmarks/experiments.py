"""The comparison benchmark: scenario x model x seed grids, ablations, speed.

The library behind ``launch.benchmark``:

* :func:`run_grid` trains every (scenario, variant, seed) with
  :func:`tafe_tf.training.train` (best epoch on validation loss) and evaluates
  the kept weights on the test split with :mod:`tafe_tf.evaluation`; one
  :class:`RunResult` per run.
* :func:`summarize` turns runs into mean, standard deviation and standard error
  per (scenario, variant, metric); :func:`check_targets` states the issue's
  targets against them.
* :func:`measure_speed` times train steps of our models and of DeepCTR's ESMM,
  MMoE and PLE on identical cached batches (:mod:`tafe_tf.benchmarks.deepctr_peer`),
  FLOPs and their share of the measured matmul rate, ``tf.data`` throughput and
  serving latency of the exported SavedModel.
* :func:`markdown_sections` renders the "Comparison", "Ablation" and "Speed"
  sections of ``docs/benchmarks.md``; :func:`replace_sections` puts them in.
* :func:`run_benchmark` does all of it, writing the JSON and plots into one
  folder.

A *variant* is a model name (``tafe``, ``mmoe``, ...) or an ablated TAFE
(``tafe-<ablation>``, :data:`ABLATIONS`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from tafe_tf import config as config_lib
from tafe_tf import evaluation, files, input_pipeline, plots, reporting, training
from tafe_tf import features as features_lib
from tafe_tf import models as models_lib
from tafe_tf.benchmarks import deepctr_peer, names, serving, timing
from tafe_tf.data import synthetic
from tafe_tf.layers import transfer as transfer_lib

# Synthetic scenarios: the default two-step funnel, three steps, and a strong
# conflict (clickbait raises clicks and lowers every later step).
SYNTHETIC_SCENARIOS: Dict[str, synthetic.SyntheticConfig] = {
  "two_step": synthetic.SyntheticConfig(num_steps=2),
  "three_step": synthetic.SyntheticConfig(num_steps=3),
  "conflict": synthetic.SyntheticConfig(num_steps=2, conflict=3.0),
}

LAST_STEP_AUC = names.LAST_STEP_AUC


def resolve_monitor(monitor: str, steps: Sequence[str]) -> str:
  """``val_auc/<last step>`` for :data:`LAST_STEP_AUC`, else ``monitor``."""
  return f"val_auc/{steps[-1]}" if monitor == LAST_STEP_AUC else monitor


# TAFE with one part changed: ablation name -> TAFE hyperparameters (a
# callable value is called with the scenario's number of steps).
ABLATIONS: Dict[str, Dict[str, Any]] = {
  "no_field_interaction": {"field_interaction": False},
  "no_task_indicators": {"task_indicators": False},
  "no_task_experts": {"experts_per_task": 0},
  "no_transfer": {"transfer": transfer_lib.NONE},
  # Top-k gating is off by default (dense gates): this variant turns it on.
  "top_k_2": {"top_k": 2},
  "independent_heads": {"chained": False},
  # The classic CVR training: step t > 1 learns q_t only on the rows where
  # step t-1 happened (clicks), not p_t over all impressions: the sample
  # selection bias the entire-space DTL loss avoids.
  "click_space_cvr": {"entire_space_weight": 0.0, "conditional_weight": 1.0},
}

ABLATION_WHAT = names.ABLATION_WHAT

REFERENCE_MODEL = "tafe"
# Metric kinds reported per step, in table order.
METRIC_KINDS = ("auc", "oracle_gap", "auc_conditional", "logloss", "pcoc")


@dataclasses.dataclass(frozen=True)
class Scenario:
  """Data one grid row trains on.

  Attributes:
    name: Row label.
    synthetic: The generator config (synthetic data), or None.
    data_dir: A converted dataset directory (None: written for ``synthetic``).
  """

  name: str
  synthetic: Optional[synthetic.SyntheticConfig] = None
  data_dir: Optional[str] = None

  def __post_init__(self):
    if (self.synthetic is None) == (self.data_dir is None):
      raise ValueError(
        f"scenario {self.name!r}: give exactly one of a synthetic config or a data_dir"
      )


@dataclasses.dataclass
class GridConfig:
  """What :func:`run_grid` runs.

  Attributes:
    scenarios: Data to train on.
    models: Model names (:data:`tafe_tf.models.MODEL_NAMES`).
    ablations: :data:`ABLATIONS` names, run on ``ablation_scenarios``.
    ablation_scenarios: Scenario names the ablations run on.
    seeds: Seeds of weights and shuffling (the data is fixed per scenario).
    num_train, num_eval: Synthetic rows in train, and in each of validation
      and test.
    epochs: Epochs per run; the best on validation loss is kept.
    batch_size: Examples per step.
    learning_rate: Adam learning rate.
    hparams: Hyperparameters given to every model (so names every model
      takes: :class:`tafe_tf.models.BaseHParams`'s).
    monitor: Validation quantity that picks each run's epoch
      (:class:`tafe_tf.config.TrainingConfig`), or :data:`LAST_STEP_AUC`.
    work_dir: Datasets and run directories go here.
  """

  scenarios: Sequence[Scenario]
  models: Sequence[str] = models_lib.MODEL_NAMES
  ablations: Sequence[str] = tuple(ABLATIONS)
  ablation_scenarios: Sequence[str] = ("conflict",)
  seeds: Sequence[int] = (0, 1, 2)
  num_train: int = 50_000
  num_eval: int = 20_000
  epochs: int = 2
  batch_size: int = 1024
  learning_rate: float = 2e-3
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  monitor: str = LAST_STEP_AUC
  work_dir: str = dataclasses.field(
    default_factory=lambda: os.path.join(tempfile.gettempdir(), "tafe_benchmark")
  )

  def __post_init__(self):
    for name in self.models:
      models_lib.model_class(name)  # ValueError naming the valid names
    unknown = sorted(set(self.ablations) - set(ABLATIONS))
    if unknown:
      raise ValueError(f"unknown ablations {unknown}; valid: {', '.join(ABLATIONS)}")
    names = [s.name for s in self.scenarios]
    if len(set(names)) != len(names):
      raise ValueError(f"scenario names repeat: {names}")
    missing = sorted(set(self.ablation_scenarios) - set(names)) if (self.ablations) else []
    if missing:
      raise ValueError(f"ablation scenarios {missing} are not in the grid's scenarios {names}")
    if not self.seeds:
      raise ValueError("at least one seed is needed")


@dataclasses.dataclass
class RunResult:
  """One trained and evaluated run.

  Attributes:
    scenario, variant, seed: What ran (``variant``: a model name or
      ``tafe-<ablation>``).
    best_epoch: Epoch kept (best on the validation monitor).
    train_seconds: Wall time of training, validation included.
    metrics: :func:`tafe_tf.evaluation.compute_report` on the test split.
  """

  scenario: str
  variant: str
  seed: int
  best_epoch: int
  train_seconds: float
  metrics: Dict[str, float]

  def to_json(self) -> Dict[str, Any]:
    return files.json_safe(dataclasses.asdict(self))


def variant_name(model: str, ablation: Optional[str] = None) -> str:
  return f"{model}-{ablation}" if ablation else model


def variant_hparams(variant: str, num_steps: int = 2) -> Tuple[str, Dict[str, Any]]:
  """``(model name, extra hyperparameters)`` of a variant name, for a
  scenario of ``num_steps`` steps."""
  model, _, ablation = variant.partition("-")
  if ablation and ablation not in ABLATIONS:
    raise ValueError(f"unknown ablation {ablation!r} in variant {variant!r}")
  return model, {
    k: v(num_steps) if callable(v) else v for k, v in ABLATIONS.get(ablation, {}).items()
  }


def scenario_data_dir(scenario: Scenario, config: GridConfig) -> str:
  """The dataset of a scenario, written (once) for synthetic ones."""
  if scenario.data_dir is not None:
    return scenario.data_dir
  data_dir = os.path.join(config.work_dir, "data", scenario.name)
  return synthetic.ensure_dataset(
    data_dir, scenario.synthetic, config.num_train, config.num_eval, config.num_eval
  )


def grid_variants(config: GridConfig) -> List[Tuple[str, str]]:
  """``(scenario, variant)`` pairs of the grid, in run order."""
  pairs = []
  for scenario in config.scenarios:
    pairs += [(scenario.name, m) for m in config.models]
    if scenario.name in config.ablation_scenarios:
      pairs += [(scenario.name, variant_name(REFERENCE_MODEL, a)) for a in config.ablations]
  return pairs


def train_and_evaluate(
  data_dir: str, model_dir: str, variant: str, seed: int, config: GridConfig
) -> Tuple[Any, RunResult]:
  """Trains one variant (fresh ``model_dir``) and evaluates it on test.

  Returns:
    ``(trained model, result)``; ``result.scenario`` is left empty.
  """
  steps = features_lib.Schema.load(data_dir).steps
  model_name, extra = variant_hparams(variant, len(steps))
  shutil.rmtree(model_dir, ignore_errors=True)  # never resume a stale run
  # The run seed seeds the model too (its hparams leave seed unset).
  run_config = config_lib.RunConfig.create(
    model_name,
    hparams=dict(config.hparams, **extra),
    epochs=config.epochs,
    batch_size=config.batch_size,
    learning_rate=config.learning_rate,
    seed=seed,
    monitor=resolve_monitor(config.monitor, steps),
    verbose=0,
  )
  start = time.perf_counter()
  trained = training.train(data_dir, model_dir, run_config)
  seconds = time.perf_counter() - start
  test = input_pipeline.make_dataset(
    data_dir, "test", 4096, schema=trained.schema, with_metadata=True
  )
  predictions = evaluation.predict_dataset(trained.model, test, trained.schema)
  metrics = evaluation.compute_report(predictions, trained.schema.steps)
  return trained.model, RunResult(
    scenario="",
    variant=variant,
    seed=seed,
    best_epoch=trained.best_epoch,
    train_seconds=seconds,
    metrics=metrics,
  )


def run_grid(config: GridConfig) -> Tuple[List[RunResult], Dict[str, Dict[str, np.ndarray]]]:
  """Trains and evaluates every (scenario, variant, seed) of ``config``.

  Returns:
    ``(runs, gates)``: one :class:`RunResult` per run, and per scenario the
    mean gate weights of the reference model's first seed
    (:func:`tafe_tf.plots.mean_gate_weights` form, flattened to
    ``'<level>/<step>' -> [K]``).
  """
  runs: List[RunResult] = []
  gates: Dict[str, Dict[str, np.ndarray]] = {}
  data_dirs = {s.name: scenario_data_dir(s, config) for s in config.scenarios}
  for scenario, variant in grid_variants(config):
    for seed in config.seeds:
      model_dir = os.path.join(config.work_dir, "runs", scenario, f"{variant}-seed{seed}")
      model, result = train_and_evaluate(data_dirs[scenario], model_dir, variant, seed, config)
      result.scenario = scenario
      runs.append(result)
      logging.info(
        "%s %s seed %d: epoch %d, %.1f s, %s",
        scenario,
        variant,
        seed,
        result.best_epoch,
        result.train_seconds,
        {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("auc/")},
      )
      if variant == REFERENCE_MODEL and scenario not in gates:
        per_sample = reporting.split_gate_weights(
          model, data_dirs[scenario], "test", model.input_schema, 4096
        )
        gates[scenario] = {
          (f"{level}/{step}" if level else step): weights
          for level, steps in plots.mean_gate_weights(per_sample).items()
          for step, weights in steps.items()
        }
  return runs, gates


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean, sample standard deviation (ddof 1; 0 for one run), standard error
  and count of one metric over seeds."""

  mean: float
  std: float
  sem: float
  n: int

  def to_json(self) -> Dict[str, float]:
    return dataclasses.asdict(self)


def stat(values: Sequence[float]) -> Stat:
  """:class:`Stat` of the finite ``values`` (NaN mean when none is)."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
  if v.size == 0:
    return Stat(float("nan"), float("nan"), float("nan"), 0)
  std = float(v.std(ddof=1)) if v.size > 1 else 0.0
  return Stat(float(v.mean()), std, std / math.sqrt(v.size), int(v.size))


def summarize(runs: Sequence[RunResult]) -> Dict[str, Dict[str, Dict[str, Stat]]]:
  """``scenario -> variant -> metric -> Stat`` over seeds.

  Metrics are those of the runs' reports plus ``best_epoch`` and
  ``train_seconds``.
  """
  grouped: Dict[Tuple[str, str], List[RunResult]] = {}
  for run in runs:
    grouped.setdefault((run.scenario, run.variant), []).append(run)
  out: Dict[str, Dict[str, Dict[str, Stat]]] = {}
  for (scenario, variant), group in grouped.items():
    keys = sorted({k for r in group for k in r.metrics})
    stats = {k: stat([r.metrics.get(k, float("nan")) for r in group]) for k in keys}
    stats["best_epoch"] = stat([r.best_epoch for r in group])
    stats["train_seconds"] = stat([r.train_seconds for r in group])
    out.setdefault(scenario, {})[variant] = stats
  return out


@dataclasses.dataclass(frozen=True)
class TargetCheck:
  """One target of the issue, stated against the numbers."""

  scenario: str
  target: str
  met: bool
  detail: str


def check_targets(
  summary: Mapping[str, Mapping[str, Mapping[str, Stat]]], last_steps: Mapping[str, str]
) -> List[TargetCheck]:
  """The accuracy targets of the issue, per scenario.

  * the reference model's last-step (purchase) AUC above the best baseline's
    by more than two standard errors of the difference in ``conflict``, and
    not below it (mean difference >= -2 SE) elsewhere;
  * its oracle gap on the last step below every baseline's (synthetic data).

  Args:
    summary: From :func:`summarize`.
    last_steps: Scenario -> name of its last step.
  """
  checks: List[TargetCheck] = []
  for scenario, variants in summary.items():
    if REFERENCE_MODEL not in variants:
      continue
    step = last_steps[scenario]
    ours = variants[REFERENCE_MODEL]
    baselines = {v: s for v, s in variants.items() if v != REFERENCE_MODEL and "-" not in v}
    if not baselines:
      continue
    key = f"auc/{step}"
    best_name = max(baselines, key=lambda v: baselines[v][key].mean)
    best = baselines[best_name][key]
    diff = ours[key].mean - best.mean
    se = math.sqrt(ours[key].sem ** 2 + best.sem**2)
    strict = scenario == "conflict"
    met = diff > 2 * se if strict else diff >= -2 * se
    checks.append(
      TargetCheck(
        scenario,
        f"{step} AUC "
        + ("> best baseline + 2 SE" if strict else "not below best baseline (-2 SE)"),
        bool(met and ours[key].n > 1 and best.n > 1),
        f"{REFERENCE_MODEL} {ours[key].mean:.4f} vs {best_name} "
        f"{best.mean:.4f}: diff {diff:+.4f}, SE {se:.4f} (n = {ours[key].n})",
      )
    )
    gap = f"oracle_gap/{step}"
    if gap in ours:
      worst = {v: s[gap].mean for v, s in baselines.items() if gap in s}
      smallest = min(worst, key=worst.get)
      checks.append(
        TargetCheck(
          scenario,
          f"{step} oracle gap smallest",
          bool(ours[gap].mean < worst[smallest]),
          f"{REFERENCE_MODEL} {ours[gap].mean:.4f} vs smallest baseline "
          f"{smallest} {worst[smallest]:.4f}",
        )
      )
  return checks


# --- speed --------------------------------------------------------------------


@dataclasses.dataclass
class SpeedConfig:
  """What :func:`measure_speed` times.

  Attributes:
    models: Our models to time.
    peer_models: DeepCTR models to time (``esmm``, ``mmoe``, ``ple``).
    batch_size: Examples per train step (both sides).
    steps, warmup, repeats: Timed steps per run, untimed steps first, runs
      (the fastest counts).
    num_batches: Distinct cached batches cycled through.
    serving_batch_sizes: Request sizes of the serving latency.
    serving_calls: Timed serving calls per batch size.
    hparams: Common hyperparameters of our models.
  """

  models: Sequence[str] = models_lib.MODEL_NAMES
  peer_models: Sequence[str] = ("esmm", "mmoe", "ple")
  batch_size: int = 2048
  steps: int = 20
  warmup: int = 3
  repeats: int = 3
  num_batches: int = 8
  serving_batch_sizes: Sequence[int] = (1, 256)
  serving_calls: int = 100
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def measure_speed(data_dir: str, config: SpeedConfig) -> Dict[str, Any]:
  """Train speed of our models and DeepCTR's on the same batches, and more.

  Returns:
    ``matmul_flops_per_second``, ``input_examples_per_second``, ``peer``
    (DeepCTR version or None), ``load_average`` (1 minute, at the end) and
    ``rows``: per model ``{"model", "implementation" ("tafe_tf"/"deepctr"),
    "examples_per_second", "step_ms", "trainable_parameters"}``, ours also
    ``forward_flops_per_example``, ``mfu`` and ``serving_ms`` (batch size ->
    latency), peers ``status`` ("ok" or why not).
  """
  peer_version = deepctr_peer.version()

  def peers(dataset, schema):
    if peer_version is None or not config.peer_models:
      return {}
    peer_data, maxlen = deepctr_peer.peer_dataset(dataset, schema, config.num_batches)
    return {
      ("deepctr", name): (deepctr_peer.build_peer(name, schema, maxlen), peer_data)
      for name in config.peer_models
    }

  speed = timing.train_speed(
    data_dir,
    {("tafe_tf", name): (name, dict(config.hparams, seed=0)) for name in config.models},
    config.batch_size,
    config.steps,
    config.warmup,
    config.repeats,
    config.num_batches,
    peers,
  )
  input_rate = timing.input_examples_per_second(data_dir, config.batch_size)
  rows: List[Dict[str, Any]] = []
  for name in config.models:
    row = dict(speed.rows[("tafe_tf", name)], implementation="tafe_tf")
    row["serving_ms"] = serving.serving_default_latency(
      speed.models[("tafe_tf", name)],
      speed.schema,
      data_dir,
      name,
      config.serving_batch_sizes,
      config.serving_calls,
    )
    rows.append(row)
  for name in config.peer_models:
    row = {"model": name, "implementation": "deepctr"}
    if peer_version is None:
      row["status"] = "not installed"
    else:
      peer = speed.models[("deepctr", name)]
      peer_seconds = speed.seconds[("deepctr", name)]
      row.update(
        status="ok",
        examples_per_second=(config.steps * config.batch_size / peer_seconds),
        step_ms=1000.0 * peer_seconds / config.steps,
        trainable_parameters=timing.trainable_parameters(peer),
      )
    rows.append(row)
  return {
    "matmul_flops_per_second": speed.matmul_flops_per_second,
    "input_examples_per_second": input_rate,
    "peer": peer_version,
    "batch_size": config.batch_size,
    "timed_steps": config.steps,
    "repeats": config.repeats,
    "cpu_count": os.cpu_count(),
    "load_average": os.getloadavg()[0],
    "rows": rows,
  }


def speed_checks(speed: Mapping[str, Any]) -> List[TargetCheck]:
  """The speed targets: our PLE and TAFE >= 2x DeepCTR's PLE examples/s; every
  model's FLOP utilisation >= 40% of the matmul rate."""
  ours = {r["model"]: r for r in speed["rows"] if r["implementation"] == "tafe_tf"}
  peers = {
    r["model"]: r
    for r in speed["rows"]
    if r["implementation"] == "deepctr" and r.get("status") == "ok"
  }
  checks = []
  if "ple" in peers:
    for name in ("ple", "tafe"):
      if name in ours:
        ratio = ours[name]["examples_per_second"] / peers["ple"]["examples_per_second"]
        checks.append(
          TargetCheck("speed", f"{name} >= 2x DeepCTR PLE", ratio >= 2.0, f"ratio {ratio:.2f}")
        )
  for name, row in ours.items():
    checks.append(
      TargetCheck("speed", f"{name} MFU >= 40%", row["mfu"] >= 0.4, f"MFU {100 * row['mfu']:.2f}%")
    )
  return checks


def run_benchmark(
  config: GridConfig, speed_config: Optional[SpeedConfig], out_dir: str, command: str
) -> Tuple[Dict[str, Any], Dict[str, str]]:
  """The whole comparison benchmark, its numbers and plots in ``out_dir``.

  Runs the grid, summarizes it, checks the targets, measures speed (on the
  first two-step scenario) when ``speed_config`` is given, and writes
  ``out_dir/benchmark.json``, ``benchmark_auc.png``,
  ``benchmark_throughput.png`` (with speed) and
  ``benchmark_gates_<scenario>.png``.

  Returns:
    ``(result, sections)``: what ``benchmark.json`` holds, and the markdown
    sections (:func:`markdown_sections`) crediting ``command``.

  Raises:
    ValueError: speed asked for without a two-step scenario.
  """
  runs, gates = run_grid(config)
  summary = summarize(runs)
  data_dirs = {s.name: scenario_data_dir(s, config) for s in config.scenarios}
  steps: Dict[str, List[str]] = {
    name: list(features_lib.Schema.load(d).steps) for name, d in data_dirs.items()
  }
  checks = check_targets(summary, {k: v[-1] for k, v in steps.items()})
  speed = None
  if speed_config is not None:
    speed_data = next((d for n, d in data_dirs.items() if len(steps[n]) == 2), None)
    if speed_data is None:
      raise ValueError("speed needs a two-step scenario")
    speed = measure_speed(speed_data, speed_config)
    checks += speed_checks(speed)
  os.makedirs(out_dir, exist_ok=True)
  plot_auc(summary, steps, os.path.join(out_dir, "benchmark_auc.png"))
  if speed is not None:
    plot_throughput(speed, os.path.join(out_dir, "benchmark_throughput.png"))
  for scenario, means in gates.items():
    plots.plot_gate_weights(
      {k: v[None, :] for k, v in means.items()},
      os.path.join(out_dir, f"benchmark_gates_{scenario}.png"),
    )
  result = {
    "command": command,
    "config": {
      "scenarios": [s.name for s in config.scenarios],
      "models": list(config.models),
      "ablations": list(config.ablations),
      "ablation_scenarios": list(config.ablation_scenarios),
      "seeds": list(config.seeds),
      "num_train": config.num_train,
      "num_eval": config.num_eval,
      "epochs": config.epochs,
      "batch_size": config.batch_size,
      "monitor": config.monitor,
      "hparams": dict(config.hparams),
    },
    "runs": [r.to_json() for r in runs],
    "summary": {
      sc: {v: {k: s.to_json() for k, s in stats.items()} for v, stats in variants.items()}
      for sc, variants in summary.items()
    },
    "gates": {sc: {k: v.tolist() for k, v in g.items()} for sc, g in gates.items()},
    "speed": speed,
    "targets": [c.__dict__ for c in checks],
  }
  files.write_json_atomic(os.path.join(out_dir, "benchmark.json"), files.json_safe(result))
  sections = markdown_sections(summary, steps, speed, command, checks, monitor=config.monitor)
  return result, sections


# --- rendering ----------------------------------------------------------------


def _cell(s: Optional[Stat], digits: int = 4) -> str:
  if s is None or s.n == 0 or not math.isfinite(s.mean):
    return "-"
  return f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def _epochs(s: Optional[Stat]) -> str:
  return "-" if s is None or s.n == 0 else f"{s.mean:.1f}"


def comparison_table(variants: Mapping[str, Mapping[str, Stat]], steps: Sequence[str]) -> str:
  """Markdown table: one row per variant, per step AUC, oracle gap,
  conditional AUC, logloss, PCOC (mean ± std over seeds), the chosen epoch."""
  header = ["variant", "n"]
  keys = []
  for step in steps:
    for kind in METRIC_KINDS:
      key = f"{kind}/{step}"
      if any(key in v for v in variants.values()):
        keys.append(key)
        header.append(f"{kind.replace('_', ' ')} {step}")
  header.append("epoch")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
  for variant, stats in variants.items():
    n = max((s.n for s in stats.values()), default=0)
    cells = [variant, str(n)] + [_cell(stats.get(k)) for k in keys]
    cells.append(_epochs(stats.get("best_epoch")))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def speed_table(speed: Mapping[str, Any]) -> str:
  """Markdown table of :func:`measure_speed`'s rows with ratios to DeepCTR."""
  peers = {
    r["model"]: r
    for r in speed["rows"]
    if r["implementation"] == "deepctr" and r.get("status") == "ok"
  }
  sizes = sorted({b for r in speed["rows"] for b in r.get("serving_ms", {})}, key=int)
  header = [
    "model",
    "implementation",
    "examples/s",
    "x DeepCTR same",
    "x DeepCTR PLE",
    "MFLOP/ex (fwd)",
    "MFU",
    "params",
  ] + [f"serve p50 ms (b={b})" for b in sizes]
  lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
  for r in speed["rows"]:
    if r.get("status", "ok") != "ok":
      cells = [r["model"], r["implementation"], r["status"]] + ["-"] * (len(header) - 3)
      lines.append("| " + " | ".join(cells) + " |")
      continue
    rate = r["examples_per_second"]
    same = peers.get(r["model"]) if r["implementation"] == "tafe_tf" else None
    ple = peers.get("ple") if r["implementation"] == "tafe_tf" else None
    cells = [
      r["model"],
      r["implementation"],
      f"{rate:,.0f}",
      f"{rate / same['examples_per_second']:.2f}" if same else "-",
      f"{rate / ple['examples_per_second']:.2f}" if ple else "-",
      (f"{r['forward_flops_per_example'] / 1e6:.3f}" if "forward_flops_per_example" in r else "-"),
      f"{100 * r['mfu']:.2f}%" if "mfu" in r else "-",
      f"{r['trainable_parameters']:,}",
    ]
    cells += [
      f"{r['serving_ms'][b]['p50']:.2f}" if b in r.get("serving_ms", {}) else "-" for b in sizes
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def checks_list(checks: Sequence[TargetCheck]) -> str:
  return "\n".join(
    f"* {'MET' if c.met else 'NOT MET'}: {c.scenario}, {c.target}: {c.detail}" for c in checks
  )


def markdown_sections(
  summary,
  steps: Mapping[str, Sequence[str]],
  speed: Optional[Mapping[str, Any]],
  command: str,
  checks: Sequence[TargetCheck],
  monitor: str = LAST_STEP_AUC,
) -> Dict[str, str]:
  """Bodies of the "Comparison", "Ablation" and "Speed" sections.

  Args:
    summary: From :func:`summarize`.
    steps: Scenario -> its step names.
    speed: From :func:`measure_speed`, or None (not measured).
    command: The command line that produced the numbers.
    checks: Accuracy and speed target checks.
    monitor: The grid's epoch monitor (:attr:`GridConfig.monitor`).
  """
  chosen_on = (
    "the validation AUC of the scenario's last step" if monitor == LAST_STEP_AUC else f"`{monitor}`"
  )
  comparison = [
    f"Produced by `{command}`. Mean ± sample std over seeds; "
    f"`epoch`: mean epoch kept (best on {chosen_on}).",
    "",
  ]
  ablation = [f"Produced by `{command}`, same seeds and data as the comparison.", ""]
  ablation += [f"* `tafe-{k}`: {v}" for k, v in ABLATION_WHAT.items()] + [""]
  has_ablation = False
  for scenario, variants in summary.items():
    base = {v: s for v, s in variants.items() if "-" not in v}
    ablated = {v: s for v, s in variants.items() if "-" in v or v == REFERENCE_MODEL}
    if base:
      comparison += [f"### {scenario}", "", comparison_table(base, steps[scenario]), ""]
    if len(ablated) > 1:
      has_ablation = True
      ablation += [f"### {scenario}", "", comparison_table(ablated, steps[scenario]), ""]
  accuracy = [c for c in checks if c.scenario != "speed"]
  if accuracy:
    comparison += ["Targets:", "", checks_list(accuracy), ""]
  if not has_ablation:
    ablation.append("Not run in this invocation.")
  if speed is None:
    speed_text = [f"Not measured by `{command}`."]
  else:
    speed_text = [
      f"Produced by `{command}`. Batch {speed['batch_size']}; steady "
      "state: every model (ours and DeepCTR's) traced first, then timed "
      f"in turns, the fastest of {speed['repeats']} rounds of "
      f"{speed['timed_steps']} train steps on the same cached batches "
      "(each round's first step, `fit`'s set-up, untimed); DeepCTR "
      f"{speed['peer'] or 'not installed'}. Matmul rate "
      f"{speed['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s; `tf.data` "
      f"(parse, no model) {speed['input_examples_per_second']:,.0f} "
      f"examples/s; {speed['cpu_count']} CPUs, load "
      f"{speed['load_average']:.1f} at the end (shared machine: rates are "
      "noisy). DeepCTR is the `benchmark` extra, installed with "
      "`pip install --no-deps deepctr==0.9.4` (its metadata pins an old "
      "TensorFlow; it runs on TF 2.21 with tf-keras); without it its rows "
      'say "not installed".',
      "",
      speed_table(speed),
      "",
    ]
    speed_checks_ = [c for c in checks if c.scenario == "speed"]
    if speed_checks_:
      speed_text += ["Targets:", "", checks_list(speed_checks_), ""]
  return {
    "Comparison": "\n".join(comparison).rstrip() + "\n",
    "Ablation": "\n".join(ablation).rstrip() + "\n",
    "Speed": "\n".join(speed_text).rstrip() + "\n",
  }


def replace_sections(text: str, sections: Mapping[str, str]) -> str:
  """Replaces (or appends) ``## <title>`` sections of a markdown document.

  A section runs from its ``## `` heading to the next ``## `` heading or the
  end; other sections are kept byte for byte.
  """
  for title, body in sections.items():
    block = f"## {title}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
      text = pattern.sub(lambda _, b=block: b + "\n", text, count=1)
    else:
      text = text.rstrip("\n") + "\n\n" + block
  return text.rstrip("\n") + "\n"


# --- plots --------------------------------------------------------------------


def plot_auc(summary, steps: Mapping[str, Sequence[str]], path: str) -> str:
  """AUC per variant with std error bars, one panel per scenario and step."""
  panels = [(sc, st) for sc in summary for st in steps[sc]]
  fig, axes = plots.new_figure(len(panels), panel_size=(4.2, 3.6), max_columns=len(panels))
  for ax, (scenario, step) in zip(axes, panels):
    variants = [v for v in summary[scenario] if f"auc/{step}" in summary[scenario][v]]
    means = [summary[scenario][v][f"auc/{step}"].mean for v in variants]
    stds = [summary[scenario][v][f"auc/{step}"].std for v in variants]
    colors = [
      "tab:red" if v == REFERENCE_MODEL else ("tab:orange" if "-" in v else "tab:blue")
      for v in variants
    ]
    ax.bar(range(len(variants)), means, yerr=stds, color=colors, capsize=3)
    oracle = summary[scenario][variants[0]].get(f"oracle_auc/{step}")
    if oracle is not None and oracle.n:
      ax.axhline(oracle.mean, color="black", linestyle="--", label="oracle")
      ax.legend(loc="lower right", fontsize="small")
    finite = [m for m in means if math.isfinite(m)]
    if finite:
      low = min(finite) - 2 * max(stds + [0.005])
      high = max(finite + [oracle.mean if oracle is not None and oracle.n else -1]) + 0.01
      ax.set_ylim(low, high)
    ax.set_xticks(range(len(variants)), labels=variants, rotation=60, ha="right", fontsize="small")
    ax.set_title(f"{scenario}: AUC {step}")
  return plots.save_figure(fig, path)


def plot_throughput(speed: Mapping[str, Any], path: str) -> str:
  """Train examples/s bars, ours and DeepCTR's."""
  rows = [r for r in speed["rows"] if "examples_per_second" in r]
  fig, (ax,) = plots.new_figure(1, panel_size=(1.0 + 0.8 * max(1, len(rows)), 3.6))
  labels = [f"{r['model']}\n({r['implementation']})" for r in rows]
  ax.bar(
    range(len(rows)),
    [r["examples_per_second"] for r in rows],
    color=["tab:blue" if r["implementation"] == "tafe_tf" else "tab:gray" for r in rows],
  )
  ax.set_xticks(range(len(rows)), labels=labels, fontsize="small")
  ax.set_ylabel("train examples/s")
  ax.set_title(f"batch {speed['batch_size']}, {speed['cpu_count']} CPUs")
  return plots.save_figure(fig, path)
