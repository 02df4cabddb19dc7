"""Quality on the realistic family: every model against the plain ESMM and the oracle.

For each member of :data:`tafe_tf.data.realistic.FAMILY` and each seed (the
seed redraws the member's world, its rows and the models' initial weights),
the member's raw files are written, converted with ``launch.convert``'s code
path, and every variant is trained with ``tafe_tf.training.train`` as
``launch.train`` does (its defaults unless the variant says otherwise), then
scored on the test split against the hidden truth. A variant is a model with
overrides of its hyperparameters, the training settings or the converter's
options, so each default can be measured against its alternatives on data
nobody tuned to::

  results = run_grid(["base", "conflict"], seeds=[0, 1, 2],
                     variants=[Variant("tafe"), Variant("esmm"), PLAIN_ESMM],
                     run_dir="runs/quality")
  print(format_table(summarize(results)))

Results are mean and standard error over the seeds (a difference below two
standard errors is noise).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from tafe_tf import config as config_lib
from tafe_tf import evaluation, files, input_pipeline, training
from tafe_tf.benchmarks import plain_esmm
from tafe_tf.data import convert, realistic

PLAIN = "plain_esmm"
METRICS = (
  "auc/click",
  "auc/purchase",
  "auc/cvr_clicked",
  "auc/cvr_entire_space",
  "pcoc/click",
  "pcoc/purchase",
)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One thing to train: a model and what differs from the package defaults.

  Attributes:
    model: A package model name, or ``"plain_esmm"``
      (:mod:`tafe_tf.benchmarks.plain_esmm`, trained for ``epochs`` epochs).
    label: Its name in the tables (default: the model name).
    hparams: Hyperparameters over the model's defaults.
    settings: Training settings over ``RunConfig``'s defaults
      (``epochs``, ``learning_rate``, ``batch_size``, ...).
    convert_options: Converter options over ``ConvertOptions``' defaults
      (``min_count``, ``validation_fraction``).
  """

  model: str
  label: str = ""
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  convert_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def name(self) -> str:
    return self.label or self.model


PLAIN_ESMM = Variant(PLAIN, settings={"epochs": 2})


def member_config(member: str, seed: int) -> realistic.RealisticConfig:
  """Member ``member`` with its world and rows redrawn from ``seed`` (seed 0
  is the member as published in the family)."""
  config = realistic.resolve(member)
  if seed:
    config = dataclasses.replace(config, seed=config.seed * 1000 + seed)
  return config


def prepare(
  member: str,
  seed: int,
  work_dir: str,
  num_train: int,
  num_test: int,
  convert_options: Mapping[str, Any],
) -> Tuple[str, str]:
  """Writes and converts one member (reused when already complete).

  Returns:
    ``(raw_dir, data_dir)``.
  """
  config = member_config(member, seed)
  raw_dir = os.path.join(work_dir, f"raw-{member}-s{seed}-{num_train}-{num_test}")
  if not os.path.exists(os.path.join(raw_dir, realistic.REPORT_FILE)):
    shutil.rmtree(raw_dir, ignore_errors=True)
    realistic.write_member(config, raw_dir, num_train=num_train, num_test=num_test)
  options = "-".join(f"{k}{v}" for k, v in sorted(convert_options.items())) or "defaults"
  data_dir = os.path.join(work_dir, f"data-{member}-s{seed}-{num_train}-{num_test}-{options}")
  if not os.path.exists(os.path.join(data_dir, input_pipeline.REPORT_FILENAME)):
    if config.output_format == "aliexpress":
      # No row key in the format: one shard written by one worker keeps the
      # file order, which is how the test rows meet their truth.
      convert.convert_aliexpress(
        raw_dir, data_dir, **{"num_shards": 1, "workers": 1, **convert_options}
      )
    else:
      convert.convert_ali_ccp(raw_dir, data_dir, **convert_options)
  return raw_dir, data_dir


def _package_model(
  variant: Variant, data_dir: str, raw_dir: str, model_dir: str, seed: int
) -> Dict[str, Any]:
  settings = {"seed": seed, "verbose": 0, "evaluate": False, "export": False}
  settings.update(variant.settings)
  run_config = config_lib.RunConfig.create(
    variant.model, hparams=dict(variant.hparams), data_dir=data_dir, **settings
  )
  result = training.train(data_dir, model_dir, run_config, overwrite=True)
  schema = result.schema
  dataset = input_pipeline.make_dataset(data_dir, "test", 8192, schema, with_metadata=True)
  predictions = evaluation.predict_dataset(result.model, dataset, schema)
  truth = realistic.read_truth(raw_dir, "test")
  if predictions.sample_ids is None:  # file order (see prepare)
    truth = realistic.align_truth(truth)
    if truth["click"].size != predictions.num_examples:
      raise ValueError(
        f"{data_dir}: {predictions.num_examples} test rows, the truth keeps {truth['click'].size}"
      )
  else:
    truth = realistic.align_truth(truth, predictions.sample_ids.astype(np.int64))
  test = realistic.prediction_metrics(truth, predictions.p[:, 0], predictions.q[:, 1])
  history = result.history
  return {
    "test": test,
    "oracle": realistic.oracle_metrics(truth),
    "kept_epoch": result.best_epoch,
    "validation": {
      k: float(v[result.best_epoch - 1]) for k, v in history.items() if k.startswith("val_")
    },
  }


def run_variant(
  variant: Variant, data_dir: str, raw_dir: str, model_dir: str, seed: int
) -> Dict[str, Any]:
  """Trains ``variant`` on a converted member and scores its test split.

  Returns:
    ``test`` (the keys of :func:`tafe_tf.data.realistic.prediction_metrics`),
    ``oracle`` (the same keys for the truth), ``kept_epoch``, ``seconds``.
  """
  began = time.time()
  if variant.model == PLAIN:
    out = plain_esmm.train_and_evaluate(
      data_dir, epochs=int(variant.settings.get("epochs", 2)), seed=seed, truth_dir=raw_dir
    )
    out = {"test": out["test"], "oracle": out["oracle"], "kept_epoch": out["kept_epoch"]}
  else:
    out = _package_model(variant, data_dir, raw_dir, model_dir, seed)
  out["seconds"] = round(time.time() - began, 1)
  return out


def run_grid(
  members: Sequence[str],
  seeds: Sequence[int],
  variants: Sequence[Variant],
  run_dir: str,
  num_train: int = 200_000,
  num_test: int = 60_000,
  log: Any = print,
) -> List[Dict[str, Any]]:
  """Every variant on every member and seed; appends each result to
  ``run_dir/results.jsonl`` as it comes (a rerun skips the finished ones).

  Returns:
    One record per (member, seed, variant): ``member``, ``seed``,
    ``variant``, plus :func:`run_variant`'s keys.
  """
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, "results.jsonl")
  done = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        key = (record["member"], record["seed"], record["variant"])
        done[key + (record["num_train"], record.get("num_test"))] = record
  results = []
  for member in members:
    for seed in seeds:
      for variant in variants:
        key = (member, seed, variant.name, num_train, num_test)
        if key in done:
          results.append(done[key])
          continue
        raw_dir, data_dir = prepare(
          member, seed, run_dir, num_train, num_test, variant.convert_options
        )
        model_dir = os.path.join(run_dir, "models", f"{member}-s{seed}-{variant.name}")
        record = {
          "member": member,
          "seed": seed,
          "variant": variant.name,
          "num_train": num_train,
          "num_test": num_test,
          **run_variant(variant, data_dir, raw_dir, model_dir, seed),
        }
        shutil.rmtree(model_dir, ignore_errors=True)
        with open(path, "a") as f:
          f.write(json.dumps(files.json_safe(record)) + "\n")
        results.append(record)
        t = record["test"]
        log(
          f"{member} s{seed} {variant.name}: CTR {t['auc/click']:.4f} CTCVR"
          f" {t['auc/purchase']:.4f} PCOC {t['pcoc/click']:.2f}/{t['pcoc/purchase']:.2f}"
          f" epoch {record['kept_epoch']} {record['seconds']}s"
        )
  return results


def _mean_se(values: Sequence[float]) -> Tuple[float, float]:
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return float("nan"), float("nan")
  mean = float(np.mean(values))
  se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
  return mean, se


def summarize(results: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
  """Mean and standard error over seeds per (member, variant), plus the
  oracle and, per member, each variant's paired difference to the plain ESMM
  (``delta/<metric>``: the same seeds, so the worlds' variance cancels)."""
  groups: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
  for r in results:
    groups.setdefault((r["member"], r["variant"]), []).append(r)
  rows = []
  for (member, variant), records in groups.items():
    row: Dict[str, Any] = {"member": member, "variant": variant, "seeds": len(records)}
    for metric in METRICS:
      row[metric] = _mean_se([r["test"].get(metric) for r in records])
    baseline = {r["seed"]: r for r in groups.get((member, PLAIN), [])}
    for metric in ("auc/click", "auc/purchase"):
      row[f"delta/{metric}"] = _mean_se(
        [
          r["test"][metric] - baseline[r["seed"]]["test"][metric]
          for r in records
          if r["seed"] in baseline
        ]
      )
    rows.append(row)
  for member in sorted({r["member"] for r in results}):
    oracle = [r["oracle"] for r in results if r["member"] == member and r["variant"] == PLAIN]
    oracle = oracle or [r["oracle"] for r in results if r["member"] == member]
    seeds = {}
    for r in results:
      if r["member"] == member:
        seeds[r["seed"]] = r["oracle"]
    row = {"member": member, "variant": "oracle", "seeds": len(seeds)}
    for metric in METRICS:
      row[metric] = _mean_se([o.get(metric) for o in seeds.values()])
    rows.append(row)
  return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """A markdown table: AUCs and PCOCs as mean +- standard error."""

  def cell(value: Any) -> str:
    if not isinstance(value, tuple):
      return ""
    mean, se = value
    if math.isnan(mean):
      return ""
    return f"{mean:.4f}" if math.isnan(se) else f"{mean:.4f} ± {se:.4f}"

  columns = METRICS + ("delta/auc/click", "delta/auc/purchase")
  header = ["member", "variant", "seeds"] + [
    c.replace("auc/", "AUC ").replace("pcoc/", "PCOC ") for c in columns
  ]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    lines.append(
      "| "
      + " | ".join(
        [row["member"], row["variant"], str(row["seeds"])] + [cell(row.get(c)) for c in columns]
      )
      + " |"
    )
  return "\n".join(lines)


def write_summary(results: Sequence[Mapping[str, Any]], run_dir: str) -> Dict[str, Any]:
  """Writes ``summary.json`` and ``summary.md`` into ``run_dir``; returns the summary."""
  rows = summarize(results)
  summary = {"rows": rows, "results": list(results)}
  files.write_json_atomic(os.path.join(run_dir, "summary.json"), files.json_safe(summary))
  with files.atomic_text_file(os.path.join(run_dir, "summary.md")) as f:
    f.write(format_table(rows) + "\n")
  return summary


def parse_variant(text: str) -> Variant:
  """``label=model`` or ``label=model:{json}`` where the JSON object has
  ``hparams``, ``settings`` and ``convert_options`` (any of them)."""
  label, _, rest = text.partition("=")
  if not rest:
    label, rest = "", label
  model, _, spec = rest.partition(":")
  extra = json.loads(spec) if spec else {}
  unknown = set(extra) - {"hparams", "settings", "convert_options"}
  if unknown:
    raise ValueError(f"variant {text!r}: unknown keys {sorted(unknown)}")
  return Variant(
    model,
    label,
    extra.get("hparams", {}),
    extra.get("settings", {}),
    extra.get("convert_options", {}),
  )


def default_variants(models: Sequence[str]) -> List[Variant]:
  """The package models at their defaults, and the plain ESMM."""
  return [Variant(m) for m in models] + [PLAIN_ESMM]


__all__ = [
  "PLAIN_ESMM",
  "Variant",
  "default_variants",
  "format_table",
  "member_config",
  "parse_variant",
  "prepare",
  "run_grid",
  "run_variant",
  "summarize",
  "write_summary",
]
