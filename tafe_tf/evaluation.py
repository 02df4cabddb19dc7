"""Batch evaluation: run a model over a dataset, then exact metrics and files.

:func:`predict_dataset` collects labels, predictions and metadata of a whole
split into numpy (:class:`Predictions`); :func:`compute_report` turns them into
one flat ``name -> number`` dict with the exact metrics of
:mod:`tafe_tf.metrics`; :func:`write_predictions_csv` and
:func:`write_report_json` write them out atomically (a temporary file renamed
into place, so a crash never leaves a half-written file under the final name).

Report keys, per step ``<step>`` (t = 1..T):

===========================  ================================================
``auc/<step>``               AUC of p_t against y_t, all impressions
``logloss/<step>``           log loss of p_t
``pcoc/<step>``              mean p_t / observed rate of y_t
``auc_conditional/<step>``   t > 1: AUC of q_t against y_t on rows with
                             y_{t-1} = 1 (e.g. CVR AUC on clicks)
``gauc/<step>``              impression-weighted per-user AUC of p_t (when the
                             schema names a user field)
``oracle_auc/<step>``        AUC of the true p_t (product of the oracle q) (when
                             the data has an oracle: synthetic data)
``oracle_gap/<step>``        ``oracle_auc - auc``: the distance to the Bayes
                             ceiling
``num_examples``             rows evaluated
===========================  ================================================
"""

from __future__ import annotations

import csv
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import files
from tafe_tf import metrics as metrics_lib

_CSV_CHUNK_ROWS = 100_000


@dataclasses.dataclass
class Predictions:
  """Labels, predictions and metadata of a split; columns in step order.

  Attributes:
    labels: ``[N, T]`` float32 cumulative labels y_t (0/1).
    p: ``[N, T]`` float32 entire-space probabilities p_t.
    q: ``[N, T]`` float32 conditional probabilities q_t.
    user_ids: ``[N]`` ids of the schema's user field, or None.
    sample_ids: ``[N]`` str sample ids, or None.
    oracle_q: ``[N, T]`` float32 true conditional probabilities, or None.
  """

  labels: np.ndarray
  p: np.ndarray
  q: np.ndarray
  user_ids: Optional[np.ndarray] = None
  sample_ids: Optional[np.ndarray] = None
  oracle_q: Optional[np.ndarray] = None

  def __post_init__(self):
    for name in ("labels", "p", "q", "user_ids", "sample_ids", "oracle_q"):
      value = getattr(self, name)
      if value is not None:
        setattr(self, name, np.asarray(value))
    if self.labels.ndim != 2:
      raise ValueError(f"labels must be [N, T], got shape {self.labels.shape}")
    for name in ("p", "q", "oracle_q"):
      value = getattr(self, name)
      if value is not None and value.shape != self.labels.shape:
        raise ValueError(f"{name} has shape {value.shape}, labels {self.labels.shape}")
    for name in ("user_ids", "sample_ids"):
      value = getattr(self, name)
      if value is not None and value.shape != (self.num_examples,):
        raise ValueError(f"{name} has shape {value.shape}, expected ({self.num_examples},)")

  @property
  def num_examples(self) -> int:
    return int(self.labels.shape[0])

  @property
  def num_steps(self) -> int:
    return int(self.labels.shape[1])

  @property
  def oracle_p(self) -> Optional[np.ndarray]:
    """``[N, T]`` true entire-space probabilities (product of q), or None."""
    if self.oracle_q is None:
      return None
    return np.cumprod(self.oracle_q.astype(np.float64), axis=1)


def _check_num_steps(predictions: Predictions, steps: Sequence[str]) -> None:
  if len(steps) != predictions.num_steps:
    raise ValueError(
      f"{len(steps)} steps {list(steps)} but predictions have {predictions.num_steps} columns"
    )


def _predict_fn(
  model: tf.keras.Model, steps: Sequence[str]
) -> Callable[[Dict[str, tf.Tensor]], Any]:
  """A tf.function: model features -> (p [B, T], q [B, T])."""

  @tf.function(reduce_retracing=True)
  def predict_step(features):
    outputs = model(features, training=False)
    wanted = [f"{kind}_{step}" for step in steps for kind in ("p", "q")]
    missing = [k for k in wanted if k not in outputs]
    if missing:
      raise ValueError(f"model outputs miss {missing}; it returned {sorted(outputs)}")
    p = tf.stack([tf.reshape(outputs[f"p_{s}"], [-1]) for s in steps], axis=1)
    q = tf.stack([tf.reshape(outputs[f"q_{s}"], [-1]) for s in steps], axis=1)
    return tf.cast(p, tf.float32), tf.cast(q, tf.float32)

  return predict_step


def predict_dataset(
  model: tf.keras.Model, dataset: tf.data.Dataset, schema: features_lib.Schema
) -> Predictions:
  """Runs ``model`` over every batch of ``dataset`` and gathers numpy arrays.

  Args:
    model: Called as ``model(features, training=False)``; returns a dict with
      ``p_<step>`` and ``q_<step>`` (``[B]`` each) for every schema step.
    dataset: Batches of ``(features, labels)`` from
      :func:`tafe_tf.input_pipeline.make_dataset` with ``with_metadata=True``
      (``sample_id`` and ``oracle/<step>`` stay in features where the schema has
      them). Only the model's feature keys are passed to the model: the oracle
      never is.
    schema: The dataset schema.

  Returns:
    A :class:`Predictions` with user ids (``schema.user_field``), sample ids and
    the oracle q where the schema has them.

  Raises:
    ValueError: when the schema promises sample ids or an oracle that the
      batches lack (a dataset built without ``with_metadata=True``), or the
      model misses an output.
  """
  steps = list(schema.steps)
  model_keys = features_lib.model_feature_keys(schema)
  if schema.user_field is not None and (
    schema.field(schema.user_field).kind != features_lib.FieldKind.ID
  ):
    raise ValueError(f"user_field {schema.user_field!r} must be an 'id' field")
  oracle_keys = [features_lib.oracle_key(s) for s in steps] if schema.has_oracle else []
  metadata_keys = oracle_keys + ([features_lib.SAMPLE_ID_KEY] if schema.has_sample_id else [])
  predict_step = _predict_fn(model, steps)

  columns: Dict[str, List[np.ndarray]] = {
    "labels": [],
    "p": [],
    "q": [],
    "user_ids": [],
    "sample_ids": [],
    "oracle_q": [],
  }
  for batch, (features, labels) in enumerate(dataset):
    absent = [k for k in model_keys + metadata_keys if k not in features]
    if absent:
      hint = (
        " (build the dataset with with_metadata=True)" if set(absent) & set(metadata_keys) else ""
      )
      raise ValueError(f"batch {batch}: features miss {absent}{hint}")
    missing_labels = [s for s in steps if s not in labels]
    if missing_labels:
      raise ValueError(f"batch {batch}: labels miss steps {missing_labels}")
    p, q = predict_step({k: features[k] for k in model_keys})
    columns["p"].append(p.numpy())
    columns["q"].append(q.numpy())
    columns["labels"].append(
      np.stack([labels[s].numpy() for s in steps], axis=1).astype(np.float32)
    )
    if schema.user_field is not None:
      columns["user_ids"].append(features[schema.user_field].numpy())
    if schema.has_sample_id:
      columns["sample_ids"].append(features[features_lib.SAMPLE_ID_KEY].numpy())
    if schema.has_oracle:
      oracle = np.stack([features[k].numpy() for k in oracle_keys], axis=1)
      columns["oracle_q"].append(oracle.astype(np.float32))
  if not columns["labels"]:
    raise ValueError("the dataset is empty: nothing to evaluate")

  def joined(name: str) -> Optional[np.ndarray]:
    return np.concatenate(columns[name]) if columns[name] else None

  sample_ids = joined("sample_ids")
  if sample_ids is not None:
    sample_ids = _checked_sample_ids(sample_ids)
  return Predictions(
    labels=joined("labels"),
    p=joined("p"),
    q=joined("q"),
    user_ids=joined("user_ids"),
    sample_ids=sample_ids,
    oracle_q=joined("oracle_q"),
  )


def _checked_sample_ids(raw: np.ndarray) -> np.ndarray:
  """``raw`` sample ids (bytes) as str (one not UTF-8 keeps its bytes as
  ``\\xNN`` escapes, :func:`decode_keys`), checked unique: the predictions
  CSV is keyed by them, and a repeated id would make its rows ambiguous and
  likely means rows were written twice.

  Raises:
    ValueError: one line naming the first repeated id and the example (its
      position in the split's reading order) where it first occurs.
  """
  ids = np.asarray(decode_keys(raw.tolist())[0], dtype=object).astype(str)
  unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
  repeated = np.flatnonzero(counts > 1)
  if repeated.size:
    # The repeated id read first, for a message that does not depend on sorting.
    worst = repeated[np.argmin(first[repeated])]
    raise ValueError(
      f"sample_id {str(unique[worst])!r} occurs {counts[worst]} times (first at example "
      f"{first[worst]}; {repeated.size} ids repeat): sample ids must be unique"
    )
  return np.asarray(ids, dtype=object)


def compute_report(predictions: Predictions, steps: Sequence[str]) -> Dict[str, float]:
  """Exact metrics of ``predictions``; the keys are listed in the module doc.

  Args:
    predictions: From :func:`predict_dataset` (or built by hand).
    steps: Step names, one per column.

  Returns:
    A flat dict; values are floats (NaN where a metric is undefined, e.g. no
    positives), ``num_examples`` an int.
  """
  _check_num_steps(predictions, steps)
  y, p, q = predictions.labels, predictions.p, predictions.q
  oracle_p = predictions.oracle_p
  report: Dict[str, float] = {}
  for t, step in enumerate(steps):
    report[f"auc/{step}"] = metrics_lib.roc_auc(y[:, t], p[:, t])
    report[f"logloss/{step}"] = metrics_lib.logloss(y[:, t], p[:, t])
    report[f"pcoc/{step}"] = metrics_lib.pcoc(y[:, t], p[:, t])
    if t > 0:
      reached = y[:, t - 1] == 1
      report[f"auc_conditional/{step}"] = (
        metrics_lib.roc_auc(y[reached, t], q[reached, t]) if reached.any() else float("nan")
      )
    if predictions.user_ids is not None:
      report[f"gauc/{step}"] = metrics_lib.group_auc(y[:, t], p[:, t], predictions.user_ids)
    if oracle_p is not None:
      oracle_auc = metrics_lib.roc_auc(y[:, t], oracle_p[:, t])
      report[f"oracle_auc/{step}"] = oracle_auc
      report[f"oracle_gap/{step}"] = oracle_auc - report[f"auc/{step}"]
  report["num_examples"] = predictions.num_examples
  return report


def prediction_columns(steps: Sequence[str], key_column: Optional[str]) -> List[str]:
  """The CSV header: [``key_column``], then ``p_<step>, q_<step>`` per step."""
  header = [key_column] if key_column else []
  for step in steps:
    header += [f"p_{step}", f"q_{step}"]
  return header


def decode_keys(raw: Sequence[bytes]) -> Tuple[List[str], int]:
  """Row keys (``sample_id`` bytes) as text, and how many were not UTF-8.

  A key that is not UTF-8 keeps its bytes visible as ``\\xNN`` escapes
  (Python's ``backslashreplace``) instead of failing the file or changing
  silently: the count says how many were escaped.
  """
  out, escaped = [], 0
  for key in raw:
    try:
      out.append(key.decode("utf-8"))
    except UnicodeDecodeError:
      out.append(key.decode("utf-8", errors="backslashreplace"))
      escaped += 1
  return out, escaped


class PredictionsCsvWriter:
  """Predictions CSV rows into an open text file, a batch at a time.

  The one writer of per-example predictions (``launch.evaluate
  --predictions`` and ``launch.predict``): a header of
  :func:`prediction_columns`, then per row the key (when there is a key
  column), ``p_<step>`` and ``q_<step>``, with 9 significant digits, which
  reproduce every float32 exactly.

  Args:
    f: A text file open for writing (e.g. from
      :func:`tafe_tf.files.atomic_text_file`).
    steps: Step names, one per column of ``p`` and ``q``.
    key_column: Name of the key column (None: none).
  """

  def __init__(self, f: Any, steps: Sequence[str], key_column: Optional[str]):
    self._writer = csv.writer(f, lineterminator="\n")
    self._steps = list(steps)
    self._key_column = key_column
    self._writer.writerow(prediction_columns(self._steps, key_column))
    self.rows = 0

  def write(self, keys: Optional[Sequence[Any]], p: np.ndarray, q: np.ndarray) -> None:
    """Writes ``len(p)`` rows: ``keys`` (str or int, one per row; None
    without a key column) and ``[rows, T]`` probabilities."""
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != len(self._steps):
      raise ValueError(f"p {p.shape} and q {q.shape} must both be [rows, {len(self._steps)}]")
    if (keys is None) != (self._key_column is None) or (keys is not None and len(keys) != len(p)):
      raise ValueError(f"{len(p)} rows need one key each under {self._key_column!r}")
    columns: List[List[Any]] = [list(keys)] if keys is not None else []
    for t in range(len(self._steps)):
      for values in (p[:, t], q[:, t]):
        columns.append([f"{v:.9g}" for v in values.tolist()])
    self._writer.writerows(zip(*columns))
    self.rows += len(p)


def write_predictions_csv(predictions: Predictions, steps: Sequence[str], path: str) -> str:
  """Writes one row per example: sample id (when present), p and q per step
  (:class:`PredictionsCsvWriter`), atomically. Returns ``path``."""
  _check_num_steps(predictions, steps)
  with_ids = predictions.sample_ids is not None
  with files.atomic_text_file(path) as f:
    writer = PredictionsCsvWriter(f, steps, features_lib.SAMPLE_ID_KEY if with_ids else None)
    # In chunks: formatting 10M rows at once would hold gigabytes of strings.
    for start in range(0, predictions.num_examples, _CSV_CHUNK_ROWS):
      rows = slice(start, start + _CSV_CHUNK_ROWS)
      writer.write(
        predictions.sample_ids[rows].tolist() if with_ids else None,
        predictions.p[rows],
        predictions.q[rows],
      )
  return path


def write_report_json(report: Mapping[str, Any], path: str) -> str:
  """Writes ``report`` as strict JSON (NaN -> null), keys sorted.

  Returns ``path``.
  """
  return files.write_json_atomic(path, report)
