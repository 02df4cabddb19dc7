"""Evaluation plots as PNG files: calibration, ROC, training curves, gates.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global
backend switch, no display needed) and written through ``tf.io.gfile``, so a
path may be local or a bucket. Every function returns the path it wrote.

Arrays are batch-major with one column per step (``[N, T]``), as in
:class:`tafe_tf.evaluation.Predictions`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from matplotlib import figure as figure_lib
from matplotlib import ticker
from matplotlib.backends import backend_agg

from tafe_tf import metrics as metrics_lib

_PANEL_INCHES = 4.0
_MAX_PANEL_COLUMNS = 3
_CSV_MISSING = ("", "NA", "nan", "NaN")  # CSVLogger writes NA for absent keys


def new_figure(
  num_panels: int,
  panel_size: Tuple[float, float] = (_PANEL_INCHES, _PANEL_INCHES),
  max_columns: int = _MAX_PANEL_COLUMNS,
) -> Tuple[figure_lib.Figure, List[Any]]:
  """An Agg figure (no pyplot state) with ``num_panels`` axes on a grid."""
  cols = min(num_panels, max_columns)
  rows = math.ceil(num_panels / cols)
  fig = figure_lib.Figure(
    figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained"
  )
  backend_agg.FigureCanvasAgg(fig)
  axes = [fig.add_subplot(rows, cols, i + 1) for i in range(num_panels)]
  return fig, axes


def save_figure(fig: figure_lib.Figure, path: str) -> str:
  """Writes ``fig`` as a PNG to ``path`` (any tf.io.gfile path); returns it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(buffer.getvalue())
  return path


def _step_columns(
  steps: Sequence[str], **arrays: Optional[np.ndarray]
) -> Dict[str, Optional[np.ndarray]]:
  """Checks that the given arrays are ``[N, len(steps)]`` and alike in shape."""
  out = {}
  shape = None
  for name, value in arrays.items():
    if value is None:
      out[name] = None
      continue
    value = np.asarray(value)
    if value.ndim != 2 or value.shape[1] != len(steps):
      raise ValueError(
        f"{name} must be [N, {len(steps)}] for steps {list(steps)}, got shape {value.shape}"
      )
    if shape is not None and value.shape != shape:
      raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
    shape = value.shape
    out[name] = value
  return out


def plot_reliability(
  labels: np.ndarray,
  probs: np.ndarray,
  steps: Sequence[str],
  path: str,
  num_bins: int = 20,
  strategy: str = "quantile",
  uncalibrated_probs: Optional[np.ndarray] = None,
) -> str:
  """Reliability diagram per step: mean predicted vs observed rate per bin.

  Args:
    labels: ``[N, T]`` cumulative 0/1 labels.
    probs: ``[N, T]`` entire-space probabilities p_t.
    steps: Step names (panel titles).
    path: PNG file to write.
    num_bins, strategy: As :func:`tafe_tf.metrics.reliability_curve`.
    uncalibrated_probs: ``[N, T]`` the same model's p_t before its
      calibration (:mod:`tafe_tf.calibration`), drawn as a second curve:
      the before/after picture.

  Returns:
    ``path``.
  """
  arrays = _step_columns(steps, labels=labels, probs=probs)
  before = None
  if uncalibrated_probs is not None:
    before = _step_columns(steps, labels=labels, probs=uncalibrated_probs)["probs"]
  fig, axes = new_figure(len(steps))
  for t, (ax, step) in enumerate(zip(axes, steps)):
    y, p = arrays["labels"][:, t], arrays["probs"][:, t]
    curve = metrics_lib.reliability_curve(y, p, num_bins, strategy)
    curves = [(curve, "model" if before is None else "calibrated", p)]
    if before is not None:
      curves.append(
        (
          metrics_lib.reliability_curve(y, before[:, t], num_bins, strategy),
          "uncalibrated",
          before[:, t],
        )
      )
    # Axes fit the data: late-step probabilities live near 0.
    top = 1.05 * max(
      max(max(c.mean_predicted.max(), c.observed_rate.max()) for c, _, _ in curves), 1e-12
    )
    ax.plot([0, top], [0, top], linestyle="--", color="gray", label="perfectly calibrated")
    for c, name, values in curves:
      ax.plot(
        c.mean_predicted,
        c.observed_rate,
        marker="o",
        label=f"{name} (PCOC {metrics_lib.pcoc(y, values):.3f})",
      )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title(f"{step}: {len(curve.count)} {strategy} bins")
    ax.legend(loc="upper left", fontsize="small")
  return save_figure(fig, path)


def plot_roc(
  labels: np.ndarray,
  probs: np.ndarray,
  steps: Sequence[str],
  path: str,
  oracle_probs: Optional[np.ndarray] = None,
) -> str:
  """ROC curve per step, with the oracle's ROC (the ceiling) when given.

  Args:
    labels: ``[N, T]`` cumulative 0/1 labels.
    probs: ``[N, T]`` model scores p_t.
    steps: Step names.
    path: PNG file to write.
    oracle_probs: ``[N, T]`` true p_t (synthetic data), or None.

  Returns:
    ``path``. A step whose labels hold one class only gets a panel that says so.
  """
  arrays = _step_columns(steps, labels=labels, probs=probs, oracle_probs=oracle_probs)
  curves = [("model", arrays["probs"])]
  if arrays["oracle_probs"] is not None:
    curves.append(("oracle", arrays["oracle_probs"]))
  fig, axes = new_figure(len(steps))
  for t, (ax, step) in enumerate(zip(axes, steps)):
    y = arrays["labels"][:, t]
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance")
    ax.set_title(step)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if np.all(y == y[0]):
      ax.text(0.5, 0.5, "ROC undefined:\nonly one class", ha="center", va="center")
      continue
    for name, scores in curves:
      roc = metrics_lib.roc_curve(y, scores[:, t])
      auc = metrics_lib.roc_auc(y, scores[:, t])
      ax.plot(roc.false_positive_rate, roc.true_positive_rate, label=f"{name} (AUC {auc:.4f})")
    ax.legend(loc="lower right", fontsize="small")
  return save_figure(fig, path)


def read_training_log(path: str) -> Dict[str, np.ndarray]:
  """Reads a ``tf.keras.callbacks.CSVLogger`` file into ``column -> values``.

  Rows are ordered by ``epoch``; when a resumed run appended an epoch again, its
  last row wins. Empty and ``NA`` cells read as NaN.

  Raises:
    ValueError: naming the file, line and column of a malformed cell or row.
  """
  with tf.io.gfile.GFile(path) as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header or "epoch" not in header:
      raise ValueError(f"{path}:1: no 'epoch' column in header {header}")
    by_epoch: Dict[int, List[float]] = {}
    for line, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) != len(header):
        raise ValueError(f"{path}:{line}: {len(row)} cells, header has {len(header)}")
      values = []
      for column, cell in zip(header, row):
        if cell.strip() in _CSV_MISSING:
          values.append(float("nan"))
          continue
        try:
          values.append(float(cell))
        except ValueError:
          raise ValueError(f"{path}:{line}: column {column!r}: {cell!r} is not a number") from None
      epoch = values[header.index("epoch")]
      if not float(epoch).is_integer():
        raise ValueError(f"{path}:{line}: column 'epoch': {epoch!r} is not an integer")
      by_epoch[int(epoch)] = values
  epochs = sorted(by_epoch)
  table = np.array([by_epoch[e] for e in epochs], dtype=np.float64).reshape(
    len(epochs), len(header)
  )
  return {column: table[:, i] for i, column in enumerate(header)}


def _metric_panels(names: Sequence[str]) -> List[Tuple[str, List[str]]]:
  """Groups ``x`` with ``val_x``: ``[(title, [keys])]`` in first-seen order."""
  panels: Dict[str, List[str]] = {}
  for name in names:
    base = name[len("val_") :] if name.startswith("val_") else name
    panels.setdefault(base, []).append(name)
  return [(base, sorted(keys, key=lambda k: k.startswith("val_"))) for base, keys in panels.items()]


def plot_training_curves(
  history: Union[Mapping[str, Sequence[float]], str, Any],
  path: str,
  metrics: Optional[Sequence[str]] = None,
) -> str:
  """One panel per metric, training and validation (``val_``) values by epoch.

  Args:
    history: ``History.history`` (``name -> per-epoch values``), a Keras
      ``History`` object, or the path of a ``CSVLogger`` file.
    path: PNG file to write.
    metrics: Base metric names to draw (``loss``, ``auc/click``, ...); default
      all of them.

  Returns:
    ``path``.
  """
  if isinstance(history, str):
    log = read_training_log(history)
    epochs = log.pop("epoch") + 1  # CSVLogger counts from 0
  else:
    log = dict(getattr(history, "history", history))
    lengths = {len(v) for v in log.values()}
    if len(lengths) != 1:
      raise ValueError(f"history columns differ in length: { {k: len(v) for k, v in log.items()} }")
    log = {k: np.asarray(v, dtype=np.float64) for k, v in log.items()}
    epochs = np.arange(1, lengths.pop() + 1)
  panels = _metric_panels(list(log))
  if metrics is not None:
    unknown = sorted(set(metrics) - {base for base, _ in panels})
    if unknown:
      raise ValueError(
        f"metrics {unknown} not in the history; it has {[base for base, _ in panels]}"
      )
    panels = [(base, keys) for base, keys in panels if base in metrics]
  if not panels:
    raise ValueError("history holds no metrics to plot")
  fig, axes = new_figure(len(panels))
  for ax, (base, keys) in zip(axes, panels):
    for key in keys:
      ax.plot(
        epochs, log[key], marker="o", label="validation" if key.startswith("val_") else "training"
      )
    ax.set_title(base)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.legend(fontsize="small")
  return save_figure(fig, path)


def mean_gate_weights(gate_weights: Mapping[str, Any]) -> Dict[str, Dict[str, np.ndarray]]:
  """Averages per-sample gates: ``level -> {step -> [K] mean weights}``.

  Args:
    gate_weights: ``'<level>/<step>' -> [N, K]``, as
      ``MultiStepModel.gate_weights`` returns them; a name without ``/`` is a
      step of an unnamed level.
  """
  levels: Dict[str, Dict[str, np.ndarray]] = {}
  for name, weights in gate_weights.items():
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] == 0:
      raise ValueError(f"gate {name!r} must be [N, num_experts] with N > 0, got shape {w.shape}")
    level, step = name.split("/", 1) if "/" in name else ("", name)
    levels.setdefault(level, {})[step] = w.mean(axis=0)
  return levels


def plot_gate_weights(gate_weights: Mapping[str, Any], path: str) -> str:
  """Heatmap per level of the mean gate weight each step gives each expert.

  Rows are steps (gates), columns experts; a gate with fewer experts than the
  widest one in its level (e.g. PLE task gates vs its shared gate) leaves its
  extra cells blank.

  Args:
    gate_weights: ``'<level>/<step>' -> [N, K]`` per-sample gate weights.
    path: PNG file to write.

  Returns:
    ``path``.
  """
  levels = mean_gate_weights(gate_weights)
  if not levels:
    raise ValueError("no gate weights to plot (the model has no gates)")
  fig, axes = new_figure(len(levels))
  for ax, (level, rows) in zip(axes, levels.items()):
    width = max(len(v) for v in rows.values())
    grid = np.full((len(rows), width), np.nan)
    for i, v in enumerate(rows.values()):
      grid[i, : len(v)] = v
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=np.nanmax(grid), aspect="auto")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_xticks(range(width))
    ax.set_xlabel("expert")
    ax.set_title(f"mean gate weight{': ' + level if level else ''}")
    if grid.size <= 200:  # numbers stay legible
      for (i, k), value in np.ndenumerate(grid):
        if np.isfinite(value):
          ax.text(
            k,
            i,
            f"{value:.2f}",
            ha="center",
            va="center",
            color="white" if value < 0.6 * np.nanmax(grid) else "black",
            fontsize="small",
          )
    fig.colorbar(image, ax=ax)
  return save_figure(fig, path)
