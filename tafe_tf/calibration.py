"""Per-step Platt calibration of a trained model, fitted on held-out rows.

A model trained to its best validation epoch can still predict too many or too
few conversions (on id-heavy logs, rare ids the model memorised make it
over-confident: TAFE's purchase PCOC was 1.18 on a realistic member before
calibration). :func:`fit_step_calibration` fits, for each step t, a map
``l_t -> a_t l_t + b_t`` of the step's uncalibrated logit by maximum
likelihood on the validation split, in one of two spaces:

* ``entire_space`` (the default): step t's entire-space probability
  ``p_t = p_{t-1} sigmoid(a_t l_t + b_t)`` (chained heads; ``p_{t-1}`` the
  calibrated previous steps) against ``y_t`` on every row. This is what a
  PCOC measures (served p_t over observed conversions), so it is the one fit
  that targets it;
* ``conditional``: chained step t > 1's ``q_t`` against ``y_t`` on the rows
  where step t-1 happened (the chain's likelihood, docs/models.md).

Independent heads (``l_t`` the entire-space logit of p_t) fit p_t on every
row in both. The fitted ``(a_t, b_t)`` go into the model's
:class:`~tafe_tf.layers.probabilities.StepCalibration` layer (so the exported
SavedModel serves calibrated probabilities) and into ``calibration.json`` of
the model directory. Each fit is a two-parameter Fisher scoring in float64
with a small ridge toward the identity (``a = 1, b = 0``), so a step with few
positives moves little; a step without both labels keeps the identity.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import losses as losses_lib

CALIBRATION_FILENAME = "calibration.json"
ENTIRE_SPACE = "entire_space"
CONDITIONAL = "conditional"
SPACES = (ENTIRE_SPACE, CONDITIONAL)
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
  logits: np.ndarray,
  labels: np.ndarray,
  parent_p: Optional[np.ndarray] = None,
  ridge: float = _RIDGE,
  iterations: int = 100,
) -> Tuple[float, float]:
  """``(a, b)`` minimising ``sum BCE(y, c sigmoid(a l + b)) + ridge/2 ((a-1)^2 + b^2)``.

  Args:
    logits: ``[N]`` uncalibrated logits.
    labels: ``[N]`` 0/1 labels.
    parent_p: ``[N]`` probabilities ``c`` the calibrated probability is
      multiplied with (the previous steps' p_{t-1}, for an entire-space fit of
      a chained step); None: 1 (plain Platt scaling).
    ridge: Strength of the pull toward the identity.
    iterations: Fisher-scoring steps at most (it converges in a handful).

  Returns:
    The identity ``(1.0, 0.0)`` when the labels are all 0 or all 1.
  """
  x = np.asarray(logits, np.float64)
  y = np.asarray(labels, np.float64)
  c = np.ones_like(x) if parent_p is None else np.clip(np.asarray(parent_p, np.float64), 1e-12, 1)
  if x.size == 0 or y.min() == y.max():
    return 1.0, 0.0
  prior = np.array([1.0, 0.0])
  theta = prior.copy()
  features = np.stack([x, np.ones_like(x)], axis=1)

  def objective(theta: np.ndarray) -> float:
    p = np.clip(c / (1.0 + np.exp(-(features @ theta))), 1e-15, 1 - 1e-15)
    nll = -np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))
    return float(nll + 0.5 * ridge * np.sum((theta - prior) ** 2))

  value = objective(theta)
  for _ in range(iterations):
    s = 1.0 / (1.0 + np.exp(-(features @ theta)))
    one_minus_p = np.maximum(1.0 - c * s, 1e-15)
    # dBCE/dz and the Fisher information E[d2BCE/dz2] = c s (1-s)^2 / (1 - c s)
    # (>= 0: the expected Hessian, so every step is a descent direction).
    dz = -(y * (1 - s) - (1 - y) * c * s * (1 - s) / one_minus_p)
    info = c * s * (1 - s) ** 2 / one_minus_p
    gradient = features.T @ dz + ridge * (theta - prior)
    hessian = (features * info[:, None]).T @ features + ridge * np.eye(2)
    step = np.linalg.solve(hessian, gradient)
    # Halve the step until the objective does not rise (c < 1 is not convex).
    for _ in range(30):
      candidate = theta - step
      new_value = objective(candidate)
      if new_value <= value + 1e-12:
        break
      step = step / 2
    theta, value = candidate, new_value
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


def fit_step_calibration(
  model: Any, dataset: tf.data.Dataset, space: str = ENTIRE_SPACE
) -> List[StepFit]:
  """Fits and sets ``model.calibration`` on ``dataset`` (the module docstring).

  Args:
    model: A :class:`~tafe_tf.models.base.MultiStepModel`.
    dataset: Batches of ``(features, labels)`` of held-out rows (the
      validation split).
    space: ``"entire_space"`` or ``"conditional"`` (chained heads; the same
      for independent ones).

  Returns:
    One :class:`StepFit` per step, in step order.
  """
  if space not in SPACES:
    raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
  logits, labels = collect_logits(model, dataset)
  fits = []
  parent_p = np.ones(labels.shape[0])
  for t, step in enumerate(model.steps):
    rows = np.ones(labels.shape[0], bool)
    parent = None
    if model.chained and t > 0:
      if space == CONDITIONAL:
        rows = labels[:, t - 1] > 0
      else:
        parent = parent_p
    scale, shift = fit_platt(logits[rows, t], labels[rows, t], parent)
    fits.append(StepFit(step, scale, shift, int(rows.sum()), int(labels[rows, t].sum())))
    parent_p = parent_p / (1.0 + np.exp(-(scale * logits[:, t] + shift)))
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


def is_fitted(model: Any) -> bool:
  """Whether ``model``'s calibration is other than the identity."""
  layer = getattr(model, "calibration", None)
  if layer is None:
    return False
  return bool(np.any(layer.scale.numpy() != 1.0) or np.any(layer.shift.numpy() != 0.0))


@contextlib.contextmanager
def uncalibrated(model: Any) -> Iterator[Any]:
  """``with uncalibrated(model):`` the model serves its uncalibrated
  probabilities (the identity map) inside the block; its fitted map is put
  back on exit, also after an error. For before/after comparisons."""
  layer = model.calibration
  scale, shift = layer.scale.numpy(), layer.shift.numpy()
  layer.scale.assign(np.ones_like(scale))
  layer.shift.assign(np.zeros_like(shift))
  try:
    yield model
  finally:
    layer.scale.assign(scale)
    layer.shift.assign(shift)
