"""Evaluating a trained model on a split: report JSON, predictions CSV, plots.

The library behind ``launch.evaluate`` and the evaluation that ends
``launch.train``.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Mapping, Optional

import numpy as np

from tafe_tf import calibration, evaluation, input_pipeline, metrics, plots
from tafe_tf import features as features_lib

GATE_BATCHES = 4


def format_table(report: Mapping[str, float], steps) -> str:
  """The per-step table printed after training and evaluation."""
  columns = [
    ("AUC", "auc"),
    ("oracle AUC", "oracle_auc"),
    ("gap", "oracle_gap"),
    ("cond. AUC", "auc_conditional"),
    ("GAUC", "gauc"),
    ("logloss", "logloss"),
    ("PCOC", "pcoc"),
    ("PCOC uncal", "pcoc_uncalibrated"),
  ]
  columns = [(title, key) for title, key in columns if any(f"{key}/{s}" in report for s in steps)]
  header = f"{'step':<10}" + "".join(f"{t:>11}" for t, _ in columns)
  lines = [header, "-" * len(header)]
  for step in steps:
    cells = []
    for _, key in columns:
      value = report.get(f"{key}/{step}")
      cells.append(
        f"{'-':>11}"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:>11.4f}"
      )
    lines.append(f"{step:<10}" + "".join(cells))
  return "\n".join(lines)


def evaluate_and_write(
  model,
  schema: features_lib.Schema,
  data_dir: str,
  split: str,
  output_dir: str,
  output: Optional[str] = None,
  predictions_csv: Optional[str] = None,
  model_dir: Optional[str] = None,
  batch_size: int = 4096,
) -> Dict[str, float]:
  """Evaluates ``model`` on ``split``; writes the report, plots and CSV.

  Args:
    model: A trained multi-step model.
    schema: Its schema.
    data_dir: The dataset directory.
    split: Split to evaluate.
    output_dir: Where the PNG plots (and, by default, the report) go.
    output: Report JSON path (default: ``output_dir/<split>.json``).
    predictions_csv: Optional per-example CSV path.
    model_dir: The run directory, for the training curves.
    batch_size: Evaluation batch size.

  Returns:
    The report.
  """
  dataset = input_pipeline.make_dataset(
    data_dir, split, batch_size, schema=schema, with_metadata=True
  )
  # A corrupt record or labels failing their check: one line naming the file.
  with input_pipeline.naming_bad_files(data_dir, [split], schema):
    predictions = evaluation.predict_dataset(model, dataset, schema)
  report = evaluation.compute_report(predictions, schema.steps)
  uncalibrated_p = None
  if calibration.is_fitted(model):
    # The same rows before the calibration: the before/after of its PCOC.
    with calibration.uncalibrated(model):
      uncalibrated_p = evaluation.predict_dataset(model, dataset, schema).p
    for t, step in enumerate(schema.steps):
      report[f"pcoc_uncalibrated/{step}"] = float(
        metrics.pcoc(predictions.labels[:, t], uncalibrated_p[:, t])
      )
  os.makedirs(output_dir, exist_ok=True)
  output = output or os.path.join(output_dir, f"{split}.json")
  evaluation.write_report_json(report, output)
  if predictions_csv:
    evaluation.write_predictions_csv(predictions, schema.steps, predictions_csv)
  steps = schema.steps
  plots.plot_reliability(
    predictions.labels,
    predictions.p,
    steps,
    os.path.join(output_dir, f"{split}_reliability.png"),
    uncalibrated_probs=uncalibrated_p,
  )
  plots.plot_roc(
    predictions.labels,
    predictions.p,
    steps,
    os.path.join(output_dir, f"{split}_roc.png"),
    oracle_probs=predictions.oracle_p,
  )
  history = os.path.join(model_dir, "history.csv") if model_dir else None
  if history and os.path.isfile(history):
    plots.plot_training_curves(history, os.path.join(output_dir, "training_curves.png"))
  gates = split_gate_weights(model, data_dir, split, schema, batch_size)
  if gates:
    plots.plot_gate_weights(gates, os.path.join(output_dir, "gate_weights.png"))
  print(f"{split} ({report['num_examples']} examples):")
  print(format_table(report, steps))
  print(f"report: {output}")
  return report


def split_gate_weights(
  model, data_dir: str, split: str, schema: features_lib.Schema, batch_size: int
) -> Dict[str, np.ndarray]:
  """Per-sample gate weights of a few batches, concatenated per gate."""
  gather = getattr(model, "gate_weights", None)
  if gather is None:
    return {}
  collected: Dict[str, list] = {}
  dataset = input_pipeline.make_dataset(data_dir, split, batch_size, schema=schema).take(
    GATE_BATCHES
  )
  for feats, _ in dataset:
    for name, weights in gather(feats).items():
      collected.setdefault(name, []).append(weights.numpy())
  return {name: np.concatenate(parts) for name, parts in collected.items()}
