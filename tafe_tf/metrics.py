"""Metrics of multi-step conversion models: exact (numpy) and streaming (Keras).

Two families, for two jobs:

* **Exact, numpy** (:func:`roc_auc`, :func:`group_auc`, :func:`logloss`,
  :func:`pcoc`, :func:`reliability_curve`, :func:`roc_curve`): computed once
  over a whole evaluation set held in memory (:mod:`tafe_tf.evaluation`). Sort
  based, O(N log N); seconds for 10M rows. These are the numbers to report.
* **Streaming, Keras** (:class:`StepMetrics`): updated batch by batch inside
  ``tfrs.Model.compute_loss`` so that ``fit``/``evaluate`` log them per epoch
  and they aggregate across replicas under a ``tf.distribute`` strategy. Their
  AUCs are threshold-bucket approximations (see :class:`LogitAUC`).

Conventions: ``labels`` are the cumulative step labels y_t (0/1), ``p`` the
entire-space probabilities p_t, ``q`` the conditional ones q_t; arrays are
batch-major ``[N]`` (or ``[N, T]`` for all steps at once).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

# Probabilities are clipped to [LOGLOSS_EPS, 1 - LOGLOSS_EPS] inside the log
# loss (the metric only, never the training loss): the Keras backend epsilon, so
# that the streaming and the exact log loss agree, and a prediction of exactly 0
# or 1 on the wrong side costs -log(1e-7) ~ 16.1 instead of infinity.
LOGLOSS_EPS = 1e-7

# Streaming AUC buckets. Late-step probabilities are tiny (Ali-CCP purchase:
# ~2e-4 per impression), so thresholds evenly spaced in probability would put
# nearly every prediction in the first bucket. LogitAUC spaces them evenly in
# logit over [-AUC_LOGIT_RANGE, AUC_LOGIT_RANGE] instead: 2000 thresholds give
# buckets 0.016 wide in logit (a 1.6% relative step in p for small p), from
# p ~ 1e-7 to 1 - 1e-7, and keep Keras's O(batch) bucketing path.
AUC_NUM_THRESHOLDS = 2000
AUC_LOGIT_RANGE = 16.0


# --- exact metrics (numpy) ---------------------------------------------------


def _check_labels_and_scores(labels, scores, what: str = "scores") -> Tuple[np.ndarray, np.ndarray]:
  """Validates 1-D 0/1 labels and finite scores of equal length."""
  y = np.asarray(labels)
  s = np.asarray(scores)
  if y.ndim != 1 or s.ndim != 1:
    raise ValueError(f"labels and {what} must be 1-D, got shapes {y.shape} and {s.shape}")
  if y.shape[0] != s.shape[0]:
    raise ValueError(f"labels and {what} differ in length: {y.shape[0]} vs {s.shape[0]}")
  if y.shape[0] == 0:
    raise ValueError("no examples: labels and scores are empty")
  if y.dtype != bool:
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
      raise ValueError(f"labels must be 0 or 1; index {bad[0]} holds {y[bad[0]].item()!r}")
  if not np.issubdtype(s.dtype, np.number):
    raise ValueError(f"{what} must be numeric, got dtype {s.dtype}")
  bad = np.flatnonzero(~np.isfinite(s))
  if bad.size:
    raise ValueError(f"{what} must be finite; index {bad[0]} holds {s[bad[0]].item()!r}")
  return y.astype(bool), s


def _check_probabilities(probs: np.ndarray) -> None:
  bad = np.flatnonzero((probs < 0) | (probs > 1))
  if bad.size:
    raise ValueError(
      f"probabilities must lie in [0, 1]; index {bad[0]} holds {probs[bad[0]].item()!r}"
    )


def _check_weights(sample_weight, n: int) -> np.ndarray:
  w = np.asarray(sample_weight, dtype=np.float64)
  if w.shape != (n,):
    raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
  bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
  if bad.size:
    raise ValueError(
      f"sample_weight must be finite and >= 0; index {bad[0]} holds {w[bad[0]].item()!r}"
    )
  return w


def _tie_blocks(
  keys: Sequence[np.ndarray], y: np.ndarray, w: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Sorts rows by ``keys`` (last key primary) and sums labels per tie block.

  A tie block is a run of rows equal in every key (the same score, and the same
  group for GAUC). Blocks come out in ascending key order.

  Returns:
    ``(order, starts, pos, neg)``: the sorting permutation, the sorted position
    where each block starts, and the positive and negative weight of each block
    (float64).
  """
  # Sort by the first key, then stably by each next one: twice as fast as
  # np.lexsort on 10M rows.
  order = np.argsort(keys[0])
  for key in keys[1:]:
    order = order[np.argsort(key[order], kind="stable")]
  n = order.shape[0]
  new_block = np.zeros(n, dtype=bool)
  new_block[0] = True
  for key in keys:
    k = key[order]
    new_block[1:] |= k[1:] != k[:-1]
  starts = np.flatnonzero(new_block)
  y_sorted = y[order]
  if w is None:
    pos = np.add.reduceat(y_sorted.astype(np.float64), starts)
    neg = np.diff(np.append(starts, n)).astype(np.float64) - pos
  else:
    w_sorted = w[order]
    pos = np.add.reduceat(np.where(y_sorted, w_sorted, 0.0), starts)
    neg = np.add.reduceat(np.where(y_sorted, 0.0, w_sorted), starts)
  return order, starts, pos, neg


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
  return np.cumsum(x) - x


def roc_auc(labels, scores, sample_weight=None) -> float:
  """Exact area under the ROC curve (the Mann-Whitney statistic).

  The probability that a random positive scores above a random negative; a tied
  pair counts one half (the average-rank convention). Only the order of the
  scores matters, so probabilities and logits give the same AUC.

  Args:
    labels: ``[N]`` 0/1 (or bool).
    scores: ``[N]`` finite scores.
    sample_weight: Optional ``[N]`` non-negative weights; a pair counts with the
      product of its weights (weight 0 drops a row).

  Returns:
    The AUC in [0, 1]; NaN when either class has no (weighted) examples.
  """
  y, s = _check_labels_and_scores(labels, scores)
  w = None if sample_weight is None else _check_weights(sample_weight, y.shape[0])
  _, _, pos, neg = _tie_blocks([s], y, w)
  total_pos, total_neg = pos.sum(), neg.sum()
  if total_pos <= 0 or total_neg <= 0:
    return float("nan")
  # A positive beats the negatives of all lower blocks, ties half of its own.
  wins = np.dot(pos, _exclusive_cumsum(neg) + 0.5 * neg)
  return float(wins / (total_pos * total_neg))


def group_auc(labels, scores, groups) -> float:
  """GAUC: the impression-weighted mean of per-group AUCs.

  ``sum_g n_g * AUC_g / sum_g n_g`` over the groups (users) that have both a
  positive and a negative; n_g is the group's number of rows. Per-group AUCs are
  exact (ties half credit) and computed in one sort, without a loop over groups.

  Args:
    labels: ``[N]`` 0/1.
    scores: ``[N]`` finite scores.
    groups: ``[N]`` group keys (ints, strings or bytes).

  Returns:
    The GAUC; NaN when no group has both classes.
  """
  y, s = _check_labels_and_scores(labels, scores)
  g = np.asarray(groups)
  if g.shape != y.shape:
    raise ValueError(f"groups must have shape {y.shape}, got {g.shape}")
  if g.dtype.kind not in "biu":
    _, g = np.unique(g, return_inverse=True)
    g = g.reshape(-1)
  order, starts, pos, neg = _tie_blocks([s, g], y, None)
  # Blocks are sorted by group, then score: find each group's first block.
  block_group = g[order[starts]]
  group_first = np.flatnonzero(np.append(True, block_group[1:] != block_group[:-1]))
  blocks_per_group = np.diff(np.append(group_first, block_group.shape[0]))
  cum_neg = _exclusive_cumsum(neg)
  neg_below = cum_neg - np.repeat(cum_neg[group_first], blocks_per_group)
  wins = np.add.reduceat(pos * (neg_below + 0.5 * neg), group_first)
  group_pos = np.add.reduceat(pos, group_first)
  group_neg = np.add.reduceat(neg, group_first)
  valid = (group_pos > 0) & (group_neg > 0)
  if not valid.any():
    return float("nan")
  auc = wins[valid] / (group_pos[valid] * group_neg[valid])
  impressions = group_pos[valid] + group_neg[valid]
  return float(np.dot(auc, impressions) / impressions.sum())


class RocCurve(NamedTuple):
  """ROC points, from (0, 0) to (1, 1), one per distinct score (descending)."""

  false_positive_rate: np.ndarray
  true_positive_rate: np.ndarray


def roc_curve(labels, scores, max_points: Optional[int] = 1000) -> RocCurve:
  """The ROC curve of ``scores`` against 0/1 ``labels``.

  Args:
    labels: ``[N]`` 0/1.
    scores: ``[N]`` finite scores.
    max_points: Keep at most this many vertices (evenly spaced along the curve,
      ends kept) so that a plot of 10M rows stays light; None keeps all. The
      trapezoid area of the full curve equals :func:`roc_auc`.

  Raises:
    ValueError: when either class is absent (the curve is undefined).
  """
  y, s = _check_labels_and_scores(labels, scores)
  _, _, pos, neg = _tie_blocks([s], y, None)
  if pos.sum() <= 0 or neg.sum() <= 0:
    raise ValueError("ROC curve needs both positive and negative labels")
  # Thresholds from the highest score down.
  tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / pos.sum()])
  fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / neg.sum()])
  if max_points is not None and fpr.shape[0] > max_points:
    keep = np.unique(np.linspace(0, fpr.shape[0] - 1, max(max_points, 2)).round().astype(np.int64))
    fpr, tpr = fpr[keep], tpr[keep]
  return RocCurve(fpr, tpr)


def logloss(labels, probs) -> float:
  """Mean binary cross-entropy of probabilities ``probs`` vs 0/1 ``labels``.

  Probabilities are clipped to ``[LOGLOSS_EPS, 1 - LOGLOSS_EPS]`` (1e-7) so that
  a confident mistake costs ~16.1 nats instead of infinity; computed in float64.
  """
  y, p = _check_labels_and_scores(labels, probs, what="probabilities")
  _check_probabilities(p)
  p = np.clip(p.astype(np.float64), LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
  return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def pcoc(labels, probs) -> float:
  """Predicted over observed: ``mean(probs) / mean(labels)``; 1 is calibrated.

  Returns NaN when there are no positives.
  """
  y, p = _check_labels_and_scores(labels, probs, what="probabilities")
  _check_probabilities(p)
  positives = np.count_nonzero(y)
  if positives == 0:
    return float("nan")
  return float(p.astype(np.float64).sum() / positives)


class ReliabilityCurve(NamedTuple):
  """Calibration per probability bin (non-empty bins only, ascending).

  Attributes:
    mean_predicted: Mean predicted probability of the bin.
    observed_rate: Fraction of positives in the bin.
    count: Rows in the bin.
  """

  mean_predicted: np.ndarray
  observed_rate: np.ndarray
  count: np.ndarray


RELIABILITY_STRATEGIES = ("quantile", "uniform")


def reliability_curve(
  labels, probs, num_bins: int = 20, strategy: str = "quantile"
) -> ReliabilityCurve:
  """Bins predictions and compares each bin's mean prediction with its rate.

  Args:
    labels: ``[N]`` 0/1.
    probs: ``[N]`` probabilities in [0, 1].
    num_bins: Number of bins (fewer come out when quantile edges coincide or a
      bin is empty).
    strategy: ``quantile`` (bins of equal counts: the right choice for skewed,
      rare-event probabilities) or ``uniform`` (equal widths on [0, 1]).

  Returns:
    A :class:`ReliabilityCurve` over the non-empty bins.
  """
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  if strategy not in RELIABILITY_STRATEGIES:
    raise ValueError(f"strategy must be one of {RELIABILITY_STRATEGIES}, got {strategy!r}")
  y, p = _check_labels_and_scores(labels, probs, what="probabilities")
  _check_probabilities(p)
  p = p.astype(np.float64)
  quantiles = np.linspace(0.0, 1.0, num_bins + 1)
  edges = np.unique(np.quantile(p, quantiles) if strategy == "quantile" else quantiles)
  # Interior edges split the bins; a value on an edge goes to the upper bin.
  bins = np.searchsorted(edges[1:-1], p, side="right")
  size = max(edges.shape[0] - 1, 1)
  count = np.bincount(bins, minlength=size)
  sum_p = np.bincount(bins, weights=p, minlength=size)
  sum_y = np.bincount(bins, weights=y.astype(np.float64), minlength=size)
  keep = count > 0
  return ReliabilityCurve(sum_p[keep] / count[keep], sum_y[keep] / count[keep], count[keep])


# --- streaming metrics (Keras) ------------------------------------------------


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class LogitAUC(tf.keras.metrics.AUC):
  """ROC AUC of probabilities with thresholds spaced evenly in logit space.

  Predictions p are mapped by the monotone
  ``u = (clip(logit p, -r, r) + r) / 2r`` before Keras's evenly spaced
  threshold AUC (its fast O(batch) bucketing), so
  the buckets are even in logit: fine for rare events near 0 and near 1 alike.
  AUC depends only on order, so the transform changes nothing but the buckets;
  scores within one bucket count as tied (half credit), the only approximation.
  """

  def __init__(
    self,
    num_thresholds: int = AUC_NUM_THRESHOLDS,
    logit_range: float = AUC_LOGIT_RANGE,
    name: Optional[str] = None,
    dtype=None,
  ):
    if logit_range <= 0:
      raise ValueError(f"logit_range must be > 0, got {logit_range}")
    super().__init__(
      num_thresholds=num_thresholds,
      curve="ROC",
      summation_method="interpolation",
      name=name,
      dtype=dtype,
    )
    self.logit_range = float(logit_range)

  def update_state(self, y_true, y_pred, sample_weight=None):
    """Accumulates ``[B]`` 0/1 labels against ``[B]`` probabilities."""
    p = tf.cast(y_pred, tf.float32)
    tiny = tf.math.sigmoid(-self.logit_range)
    p = tf.clip_by_value(p, tiny, 1.0 - tiny)
    logit = tf.math.log(p) - tf.math.log1p(-p)
    u = (tf.clip_by_value(logit, -self.logit_range, self.logit_range) + self.logit_range) / (
      2.0 * self.logit_range
    )
    return super().update_state(y_true, u, sample_weight=sample_weight)

  def get_config(self):
    return {
      "num_thresholds": self.num_thresholds,
      "logit_range": self.logit_range,
      "name": self.name,
      "dtype": self.dtype,
    }


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class LogLoss(tf.keras.metrics.Mean):
  """Streaming mean log loss of probabilities, clipped as :func:`logloss`."""

  def update_state(self, y_true, y_pred, sample_weight=None):
    """Accumulates ``[B]`` 0/1 labels against ``[B]`` probabilities."""
    # float64: in float32, 1 - LOGLOSS_EPS rounds to 1 - 1.19e-7, which would
    # make saturated predictions cost 15.9 here but 16.1 in the exact metric.
    y = tf.cast(y_true, tf.float64)
    p = tf.clip_by_value(tf.cast(y_pred, tf.float64), LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
    values = -(y * tf.math.log(p) + (1.0 - y) * tf.math.log1p(-p))
    return super().update_state(tf.cast(values, self.dtype), sample_weight=sample_weight)


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class Pcoc(tf.keras.metrics.Metric):
  """Streaming predicted over observed, ``sum p / sum y``; NaN: no positives."""

  def __init__(self, name: str = "pcoc", dtype=None):
    super().__init__(name=name, dtype=dtype)
    # float64 sums: millions of tiny probabilities added in float32 drift.
    self.sum_predicted = self.add_weight("sum_predicted", initializer="zeros", dtype=tf.float64)
    self.sum_observed = self.add_weight("sum_observed", initializer="zeros", dtype=tf.float64)

  def update_state(self, y_true, y_pred, sample_weight=None):
    """Adds ``[B]`` 0/1 labels and ``[B]`` probabilities (optional weights)."""
    y = tf.cast(tf.reshape(y_true, [-1]), tf.float64)
    p = tf.cast(tf.reshape(y_pred, [-1]), tf.float64)
    if sample_weight is not None:
      w = tf.cast(tf.reshape(sample_weight, [-1]), tf.float64)
      y, p = y * w, p * w
    self.sum_predicted.assign_add(tf.reduce_sum(p))
    self.sum_observed.assign_add(tf.reduce_sum(y))

  def result(self):
    ratio = self.sum_predicted / tf.where(self.sum_observed > 0, self.sum_observed, 1.0)
    nan = tf.constant(float("nan"), tf.float64)
    return tf.cast(tf.where(self.sum_observed > 0, ratio, nan), tf.float32)

  def reset_state(self):
    self.sum_predicted.assign(0.0)
    self.sum_observed.assign(0.0)


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class RunningMeans(tf.keras.layers.Layer):
  """Example-weighted running means of scalars (the losses) for fit's logs.

  Like :class:`StepMetrics`, a layer holding its metrics in a list, so that
  they show up in ``model.metrics`` (logged, reset every epoch, aggregated
  across replicas) but not in the model's weights or checkpoints.
  """

  def __init__(self, names: Sequence[str], **kwargs):
    super().__init__(**kwargs)
    self.names = tuple(names)
    if not self.names:
      raise ValueError("RunningMeans needs at least one name")
    self._means = [tf.keras.metrics.Mean(name=n) for n in self.names]

  def update_state(self, values: Sequence[tf.Tensor], sample_weight: tf.Tensor) -> None:
    """Adds one value per name, each counting ``sample_weight`` examples."""
    for mean, value in zip(self._means, values):
      mean.update_state(value, sample_weight=sample_weight)

  def count(self) -> tf.Tensor:
    """Examples counted since the last reset (the summed ``sample_weight``).

    Read outside ``strategy.run`` under a ``tf.distribute`` strategy, it is
    the count of all replicas and workers together.
    """
    return self._means[0].count.read_value()

  def get_config(self):
    config = super().get_config()
    config.update(names=list(self.names))
    return config


def step_metric_names(steps: Sequence[str]) -> List[str]:
  """The names :class:`StepMetrics` logs, in its order: ``auc/<step>``,
  ``logloss/<step>``, ``pcoc/<step>`` per step and ``auc_conditional/<step>``
  for every step after the first."""
  names = []
  for t, step in enumerate(steps):
    names += [f"auc/{step}", f"logloss/{step}", f"pcoc/{step}"]
    if t > 0:
      names.append(f"auc_conditional/{step}")
  return names


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class StepMetrics(tf.keras.layers.Layer):
  """Per-step streaming metrics, updated inside ``compute_loss`` each batch.

  For every step t: ``auc/<step>`` (p_t vs y_t over all impressions),
  ``logloss/<step>``, ``pcoc/<step>``; for t > 1 also ``auc_conditional/<step>``
  (q_t vs y_t on rows with y_{t-1} = 1, e.g. CVR AUC on clicks).

  Held as an attribute of a Keras model, its metrics show up in
  ``model.metrics`` (Keras tracks metrics set on sub-layers), so
  ``fit``/``evaluate`` log and reset them, and they aggregate over replicas
  under a ``tf.distribute`` strategy when the model is built in the strategy's
  scope. They are not model weights.
  """

  def __init__(self, steps: Sequence[str], auc_num_thresholds: int = AUC_NUM_THRESHOLDS, **kwargs):
    super().__init__(**kwargs)
    self.steps = tuple(steps)
    if len(self.steps) < 1:
      raise ValueError("StepMetrics needs at least one step")
    self.auc_num_thresholds = auc_num_thresholds
    make = {
      "auc": lambda name: LogitAUC(auc_num_thresholds, name=name),
      "logloss": lambda name: LogLoss(name=name),
      "pcoc": lambda name: Pcoc(name=name),
      "auc_conditional": lambda name: LogitAUC(auc_num_thresholds, name=name),
    }
    ordered = [make[name.split("/")[0]](name) for name in step_metric_names(self.steps)]
    # One list attribute: Keras tracks each metric once, in this order.
    self._ordered_metrics = ordered
    self._position = {m.name: i for i, m in enumerate(ordered)}

  def _get(self, name: str) -> tf.keras.metrics.Metric:
    return self._ordered_metrics[self._position[name]]

  def update_state(self, labels: Mapping[str, tf.Tensor], p: tf.Tensor, q: tf.Tensor) -> None:
    """Accumulates one batch.

    Args:
      labels: ``step -> [B]`` cumulative 0/1 labels (float or int).
      p: ``[B, T]`` entire-space probabilities, columns in step order.
      q: ``[B, T]`` conditional probabilities, columns in step order.
    """
    missing = [s for s in self.steps if s not in labels]
    if missing:
      raise KeyError(f"labels miss steps {missing}; have {sorted(labels)}")
    y = [tf.cast(tf.reshape(labels[s], [-1]), tf.float32) for s in self.steps]
    p = tf.convert_to_tensor(p)
    q = tf.convert_to_tensor(q)
    for t, step in enumerate(self.steps):
      self._get(f"auc/{step}").update_state(y[t], p[:, t])
      self._get(f"logloss/{step}").update_state(y[t], p[:, t])
      self._get(f"pcoc/{step}").update_state(y[t], p[:, t])
      if t > 0:
        # Weight y_{t-1}: only rows that reached step t-1 count.
        self._get(f"auc_conditional/{step}").update_state(y[t], q[:, t], sample_weight=y[t - 1])

  def results(self) -> Dict[str, float]:
    """Current values, ``name -> float``."""
    return {m.name: float(m.result()) for m in self._ordered_metrics}

  def reset_state(self) -> None:
    for m in self._ordered_metrics:
      m.reset_state()

  def get_config(self):
    config = super().get_config()
    config.update(steps=list(self.steps), auc_num_thresholds=self.auc_num_thresholds)
    return config
