"""A plain ESMM: what a user writes in an afternoon, the bar every model must beat.

No package model code: one 16-wide embedding table per field in which every
id seen in the train split has a row (no frequency cut; unseen ids share row
0), histories and other multi-valued fields pooled by their weighted mean over
the first 40 ids, two ReLU towers 256-128-64, pCTCVR = pCTR * pCVR, binary
cross-entropy on CTR and CTCVR, Adam 1e-3, batches of 2048, and the epoch
with the lowest validation loss kept. It reads a converted dataset directory
through :func:`tafe_tf.input_pipeline.make_dataset`, so it sees exactly the
rows the package's models see.

  result = train_and_evaluate(DATA, epochs=2, seed=0, truth_dir=RAW)
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import input_pipeline
from tafe_tf.data import realistic

EMBEDDING_DIM = 16
MAX_IDS = 40
TOWER = (256, 128, 64)
# Sorts after every real id: keeps a field's table non-empty.
_SENTINEL = np.iinfo(np.int64).max


def _id_fields(schema: features_lib.Schema) -> List[features_lib.FieldSpec]:
  return [f for f in schema.fields if f.is_id]


def _capped(
  feats: Mapping[str, Any], f: features_lib.FieldSpec
) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
  """A field's ids (``[B]``, or ``[B, 40]`` padded with weight 0) and weights."""
  if f.kind == features_lib.FieldKind.ID:
    return feats[f.name], None
  shape = [None, MAX_IDS]
  return (
    feats[f.name][:, :MAX_IDS].to_tensor(-1, shape=shape),
    feats[f.weight_key][:, :MAX_IDS].to_tensor(0.0, shape=shape),
  )


def build_id_maps(data_dir: str, schema: features_lib.Schema) -> Dict[str, np.ndarray]:
  """The sorted distinct raw ids of every id field in the train split."""
  seen: Dict[str, List[np.ndarray]] = {f.name: [] for f in _id_fields(schema)}
  for feats, _ in input_pipeline.make_dataset(data_dir, "train", 8192, schema):
    for f in _id_fields(schema):
      ids, weights = _capped(feats, f)
      ids = ids.numpy() if weights is None else ids.numpy()[weights.numpy() > 0]
      seen[f.name].append(np.unique(ids))
  return {name: np.unique(np.concatenate(parts + [[_SENTINEL]])) for name, parts in seen.items()}


def _indexed(
  data_dir: str,
  split: str,
  schema: features_lib.Schema,
  id_maps: Mapping[str, np.ndarray],
  batch_size: int,
  shuffle: bool = False,
  seed: Optional[int] = None,
) -> tf.data.Dataset:
  """Batches of embedding rows (id at sorted position i -> row i + 1, unseen
  ids -> 0), weights, labels and sample ids."""
  tables = {name: tf.constant(ids) for name, ids in id_maps.items()}

  def index(feats, labels):
    out = {}
    for f in _id_fields(schema):
      ids, weights = _capped(feats, f)
      flat = tf.reshape(ids, [-1])
      pos = tf.minimum(
        tf.searchsorted(tables[f.name], flat, out_type=tf.int64),
        tf.size(tables[f.name], tf.int64) - 1,
      )
      rows = tf.where(tf.gather(tables[f.name], pos) == flat, pos + 1, 0)
      out[f.name] = tf.reshape(rows, tf.shape(ids))
      if weights is not None:
        out[f.weight_key] = weights
    out["sample_id"] = feats.get("sample_id", tf.fill(tf.shape(labels["click"]), ""))
    return out, labels

  ds = input_pipeline.make_dataset(
    data_dir, split, batch_size, schema, shuffle=shuffle, seed=seed, with_metadata=True
  )
  return ds.map(index, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


class PlainEsmm(tf.keras.Model):
  """Embeddings -> concatenation -> CTR and CVR towers; pCTCVR = pCTR * pCVR."""

  def __init__(self, schema: features_lib.Schema, sizes: Mapping[str, int]):
    super().__init__()
    self.fields = _id_fields(schema)
    self.tables = {
      f.name: tf.keras.layers.Embedding(sizes[f.name] + 1, EMBEDDING_DIM) for f in self.fields
    }
    self.towers = [
      tf.keras.Sequential(
        [tf.keras.layers.Dense(n, activation="relu") for n in TOWER] + [tf.keras.layers.Dense(1)]
      )
      for _ in range(2)
    ]

  def call(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    parts = []
    for f in self.fields:
      e = self.tables[f.name](inputs[f.name])
      if f.kind == features_lib.FieldKind.WEIGHTED_IDS:
        w = inputs[f.weight_key]
        e = tf.reduce_sum(e * w[:, :, None], axis=1) / tf.maximum(
          tf.reduce_sum(w, axis=1, keepdims=True), 1e-6
        )
      parts.append(e)
    x = tf.concat(parts, axis=-1)
    p_click, p_cvr = (tf.sigmoid(t(x)[:, 0]) for t in self.towers)
    return {"click": p_click, "cvr": p_cvr, "purchase": p_click * p_cvr}


def _loss(labels: Mapping[str, tf.Tensor], p: Mapping[str, tf.Tensor]) -> tf.Tensor:
  bce = tf.keras.losses.binary_crossentropy
  return tf.reduce_mean(bce(labels["click"][:, None], p["click"][:, None])) + tf.reduce_mean(
    bce(labels["purchase"][:, None], p["purchase"][:, None])
  )


def _predict(model: PlainEsmm, ds: tf.data.Dataset) -> Dict[str, np.ndarray]:
  """pCTR, pCVR, labels and sample ids of a whole split."""
  out: Dict[str, List[np.ndarray]] = {
    k: [] for k in ("p_click", "p_cvr", "click", "buy", "sample_id")
  }
  predict = tf.function(lambda x: model(x, training=False))
  for x, y in ds:
    p = predict(x)
    for key, value in (
      ("p_click", p["click"]),
      ("p_cvr", p["cvr"]),
      ("click", y["click"]),
      ("buy", y["purchase"]),
      ("sample_id", x["sample_id"]),
    ):
      out[key].append(value.numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def _scores(
  pred: Mapping[str, np.ndarray], truth: Optional[Mapping[str, np.ndarray]] = None
) -> Dict[str, float]:
  """Test metrics; with the truth also the entire-space CVR AUC."""
  rows = dict(pred) if truth is None else truth
  return realistic.prediction_metrics(rows, pred["p_click"], pred["p_cvr"])


def train_and_evaluate(
  data_dir: str,
  epochs: int = 1,
  seed: int = 0,
  batch_size: int = 2048,
  learning_rate: float = 1e-3,
  truth_dir: Optional[str] = None,
) -> Dict[str, Any]:
  """Trains the plain ESMM on a converted dataset and scores its test split.

  Args:
    data_dir: A converted dataset directory (train, validation, test splits).
    epochs: Epochs to run; the one with the lowest validation loss is kept.
    seed: Seed of the initial weights and the shuffling.
    batch_size, learning_rate: Adam's batch and step size.
    truth_dir: The raw folder of a :mod:`tafe_tf.data.realistic` member: adds
      the entire-space CVR AUC and the oracle's scores on the same rows.

  Returns:
    ``test`` (``auc/click``, ``auc/purchase``, ``auc/cvr_clicked``,
    ``pcoc/click``, ``pcoc/purchase``, ``rows``; with the truth
    ``auc/cvr_entire_space``), ``validation`` per epoch (loss and AUCs),
    ``kept_epoch``, ``table_rows`` per field, ``seconds``; with the truth
    ``oracle``.
  """
  began = time.time()
  tf.keras.utils.set_random_seed(seed)
  schema = features_lib.Schema.load(data_dir)
  id_maps = build_id_maps(data_dir, schema)
  model = PlainEsmm(schema, {k: v.size for k, v in id_maps.items()})
  optimizer = tf.keras.optimizers.Adam(learning_rate)

  @tf.function
  def train_step(x, y):
    with tf.GradientTape() as tape:
      loss = _loss(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

  validation, best = [], None
  for epoch in range(1, epochs + 1):
    for x, y in _indexed(
      data_dir, "train", schema, id_maps, batch_size, shuffle=True, seed=seed + epoch
    ):
      train_step(x, y)
    pred = _predict(model, _indexed(data_dir, "validation", schema, id_maps, batch_size))
    loss = float(
      _loss(
        {"click": pred["click"], "purchase": pred["buy"]},
        {"click": pred["p_click"], "purchase": pred["p_click"] * pred["p_cvr"]},
      )
    )
    validation.append({"epoch": epoch, "loss": loss, **_scores(pred)})
    if best is None or loss < best[0]:
      best = (loss, epoch, model.get_weights())
  model.set_weights(best[2])
  pred = _predict(model, _indexed(data_dir, "test", schema, id_maps, batch_size))
  result: Dict[str, Any] = {
    "validation": validation,
    "kept_epoch": best[1],
    "table_rows": {k: int(v.size) for k, v in id_maps.items()},
  }
  if truth_dir is None:
    result["test"] = _scores(pred)
  else:
    truth = realistic.read_truth(truth_dir, "test")
    if schema.has_sample_id:
      truth = realistic.align_truth(truth, pred["sample_id"].astype(np.int64))
    else:  # file order: a dataset converted to one shard by one worker
      truth = realistic.align_truth(truth)
    result["test"] = _scores(pred, truth)
    result["oracle"] = realistic.oracle_metrics(truth)
  result["seconds"] = round(time.time() - began, 1)
  return result
