"""Per-step Platt calibration of a trained model, fitted on held-out rows.

A model trained to its best validation epoch can still predict too many or too
few conversions (on id-heavy logs, rare ids the model memorised make it
over-confident). :func:`fit_step_calibration` fits, for each step t, the
logistic regression ``y ~ sigmoid(a_t l_t + b_t)`` of the step's label on its
uncalibrated logit ``l_t``, on the rows where that logit's likelihood lives:

* chained heads (``l_t`` is the conditional logit of q_t): step 1 on every
  row, step t > 1 on the rows where step t-1 happened (the chain's likelihood,
  docs/models.md), so ``q_t`` is calibrated where it is defined;
* independent heads (``l_t`` is the entire-space logit of p_t): every row.

The fitted ``(a_t, b_t)`` go into the model's
:class:`~tafe_tf.layers.probabilities.StepCalibration` layer (so the exported
SavedModel serves calibrated probabilities) and into ``calibration.json`` of
the model directory. Each fit is a two-parameter Newton iteration in float64
with a small ridge toward the identity (``a = 1, b = 0``), so a step with few
positives moves little; a step without both labels keeps the identity.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import losses as losses_lib

CALIBRATION_FILENAME = "calibration.json"
# Ridge toward the identity, in units of one row's log-likelihood: with
# thousands of rows it is negligible; with a handful it keeps (a, b) near
# (1, 0).
_RIDGE = 1.0


@dataclasses.dataclass(frozen=True)
class StepFit:
  """One step's fitted map ``a l + b`` and what it was fitted on."""

  step: str
  scale: float
  shift: float
  rows: int
  positives: int

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def fit_platt(
  logits: np.ndarray, labels: np.ndarray, ridge: float = _RIDGE, iterations: int = 50
) -> Tuple[float, float]:
  """``(a, b)`` minimising ``sum BCE(y, sigmoid(a l + b)) + ridge/2 ((a-1)^2 + b^2)``.

  Args:
    logits: ``[N]`` uncalibrated logits.
    labels: ``[N]`` 0/1 labels.
    ridge: Strength of the pull toward the identity.
    iterations: Newton steps at most (it converges in a handful).

  Returns:
    The identity ``(1.0, 0.0)`` when the labels are all 0 or all 1.
  """
  x = np.asarray(logits, np.float64)
  y = np.asarray(labels, np.float64)
  if x.size == 0 or y.min() == y.max():
    return 1.0, 0.0
  theta = np.array([1.0, 0.0])
  prior = np.array([1.0, 0.0])
  features = np.stack([x, np.ones_like(x)], axis=1)
  for _ in range(iterations):
    z = features @ theta
    p = 1.0 / (1.0 + np.exp(-z))
    gradient = features.T @ (p - y) + ridge * (theta - prior)
    hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(2)
    step = np.linalg.solve(hessian, gradient)
    theta = theta - step
    if np.max(np.abs(step)) < 1e-10:
      break
  return float(theta[0]), float(theta[1])


def collect_logits(model: Any, dataset: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
  """``(uncalibrated logits [N, T], cumulative labels [N, T])`` of every batch."""
  steps = model.steps
  logits_fn = tf.function(lambda x: model.uncalibrated_step_logits(x, training=False))
  logits: List[np.ndarray] = []
  labels: List[np.ndarray] = []
  for batch in dataset:
    features, batch_labels = batch[0], batch[1]
    logits.append(logits_fn(features).numpy())
    labels.append(losses_lib.stack_labels(batch_labels, steps).numpy())
  if not logits:
    raise ValueError("cannot calibrate on an empty split")
  return np.concatenate(logits), np.concatenate(labels)


def fit_step_calibration(model: Any, dataset: tf.data.Dataset) -> List[StepFit]:
  """Fits and sets ``model.calibration`` on ``dataset`` (the module docstring).

  Args:
    model: A :class:`~tafe_tf.models.base.MultiStepModel`.
    dataset: Batches of ``(features, labels)`` of held-out rows (the
      validation split).

  Returns:
    One :class:`StepFit` per step, in step order.
  """
  logits, labels = collect_logits(model, dataset)
  fits = []
  for t, step in enumerate(model.steps):
    rows = np.ones(labels.shape[0], bool)
    if model.chained and t > 0:
      rows = labels[:, t - 1] > 0
    scale, shift = fit_platt(logits[rows, t], labels[rows, t])
    fits.append(StepFit(step, scale, shift, int(rows.sum()), int(labels[rows, t].sum())))
  set_calibration(model, fits)
  return fits


def set_calibration(model: Any, fits: List[StepFit]) -> None:
  """Puts fitted maps into the model's calibration layer."""
  if [f.step for f in fits] != list(model.steps):
    raise ValueError(
      f"calibration is for steps {[f.step for f in fits]}, the model has {list(model.steps)}"
    )
  model.calibration.scale.assign([f.scale for f in fits])
  model.calibration.shift.assign([f.shift for f in fits])


def fits_from_json(obj: Any) -> List[StepFit]:
  """The fits of a ``calibration.json`` (``{"steps": [StepFit...]}``)."""
  return [StepFit(**step) for step in obj["steps"]]
