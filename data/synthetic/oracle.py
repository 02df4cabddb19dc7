"""The Bayes ceiling: AUCs of the true probabilities, per split and step.

The AUC of the true ``p_t = q_1 * ... * q_t`` against y_t is the best any
model can reach on the data (the oracle AUC); :class:`SplitStats` gathers it,
the label rates and the mean true p_t of a split while it is written, for the
dataset's ``report.json``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from tafe_tf import features as features_lib
from tafe_tf import metrics


def _auc_or_none(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
  if labels.shape[0] == 0:
    return None
  auc = metrics.roc_auc(labels, scores)
  return None if math.isnan(auc) else auc


def oracle_auc(
  labels: Mapping[str, np.ndarray], oracle: Mapping[str, np.ndarray], steps: Sequence[str]
) -> Dict[str, Optional[float]]:
  """Entire-space oracle AUC per step: AUC of the true ``p_t = prod q`` vs y_t.

  Args:
    labels: ``step -> [N]`` cumulative labels y_t.
    oracle: ``step -> [N]`` true conditional probabilities q_t.
    steps: Step names in order.

  Returns:
    ``step -> AUC`` (exact, ties half); None where a class is absent.
  """
  p = np.ones(np.asarray(oracle[steps[0]]).shape[0])
  out = {}
  for step in steps:
    p = p * np.asarray(oracle[step], dtype=np.float64)
    out[step] = _auc_or_none(np.asarray(labels[step]), p)
  return out


def oracle_conditional_auc(
  labels: Mapping[str, np.ndarray], oracle: Mapping[str, np.ndarray], steps: Sequence[str]
) -> Dict[str, Optional[float]]:
  """Oracle AUC of q_t against y_t on the rows that reached step t-1 (t >= 2;
  for the purchase step of a 2-step funnel: the CVR AUC on clicked rows)."""
  out = {}
  for previous, step in zip(steps[:-1], steps[1:]):
    reached = np.asarray(labels[previous]) == 1
    out[step] = _auc_or_none(np.asarray(labels[step])[reached], np.asarray(oracle[step])[reached])
  return out


class SplitStats:
  """Running per-split statistics for report.json (AUCs on the first rows)."""

  def __init__(self, steps: Sequence[str], auc_max_rows: int):
    self.steps = tuple(steps)
    self.auc_max_rows = auc_max_rows
    self.rows = 0
    self.label_sums = np.zeros(len(steps))
    self.p_sums = np.zeros(len(steps))
    self.auc_rows = 0
    self._labels: List[np.ndarray] = []
    self._q: List[np.ndarray] = []

  def add(self, batch: Mapping[str, Any]) -> None:
    y = np.stack([batch[features_lib.label_key(s)] for s in self.steps], 1)
    q = np.stack([batch[features_lib.oracle_key(s)] for s in self.steps], 1)
    self.rows += y.shape[0]
    self.label_sums += y.sum(axis=0)
    self.p_sums += np.cumprod(q, axis=1).sum(axis=0)
    take = min(y.shape[0], self.auc_max_rows - self.auc_rows)
    if take > 0:
      self._labels.append(y[:take].astype(np.int8))
      self._q.append(q[:take])
      self.auc_rows += take

  def to_json(self) -> Dict[str, Any]:
    def per_step(values) -> Dict[str, Optional[float]]:
      return dict(zip(self.steps, values))

    out: Dict[str, Any] = {"rows": self.rows, "auc_rows": self.auc_rows}
    if self.rows == 0:
      out.update(
        label_rate=per_step([None] * len(self.steps)),
        mean_true_p=per_step([None] * len(self.steps)),
        oracle_auc=per_step([None] * len(self.steps)),
        oracle_conditional_auc={s: None for s in self.steps[1:]},
      )
      return out
    y = np.concatenate(self._labels)
    q = np.concatenate(self._q)
    labels = {s: y[:, t] for t, s in enumerate(self.steps)}
    oracle = {s: q[:, t] for t, s in enumerate(self.steps)}
    out.update(
      label_rate=per_step((self.label_sums / self.rows).tolist()),
      mean_true_p=per_step((self.p_sums / self.rows).tolist()),
      oracle_auc=oracle_auc(labels, oracle, self.steps),
      oracle_conditional_auc=oracle_conditional_auc(labels, oracle, self.steps),
    )
    return out
