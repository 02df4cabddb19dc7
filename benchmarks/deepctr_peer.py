"""DeepCTR's ESMM, MMOE and PLE built from our schema, for the speed peer.

DeepCTR (``pip install --no-deps deepctr==0.9.4``, the ``benchmark`` extra) is
optional: :func:`version` is None without it and nothing else here is usable.

The peer gets the same fields with the same embedding widths, the same expert,
gate and tower sizes as our model of the same name at its defaults (read from
our ``HParams`` dataclasses, not restated), the same batch and the same
batches: an id field is a ``SparseFeat`` fed ``id + 1`` (row 0 is the
out-of-vocabulary / padding row on both sides), a weighted multi-id field a
``VarLenSparseFeat`` with weights (mean combiner, padded to the longest list
of the cached batches), a dense field a ``DenseFeat``. DeepCTR has no L2 in
our models, so its embedding L2 is set to 0.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import models as models_lib

PEER_MODELS = ("esmm", "mmoe", "ple")


def version() -> Optional[str]:
  """DeepCTR's version, or None when it is not installed."""
  try:
    import deepctr  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return deepctr.__version__


def _check_schema(schema: features_lib.Schema) -> None:
  if schema.num_steps != 2:
    raise ValueError(
      f"DeepCTR's models have two tasks; the schema has "
      f"{schema.num_steps} steps {list(schema.steps)}"
    )
  for spec in schema.fields:
    if spec.is_id and spec.lookup != features_lib.LookupKind.IDENTITY:
      raise ValueError(
        f"field {spec.name!r}: the DeepCTR peer takes identity "
        f"lookups only, not {spec.lookup.value!r}"
      )


def feature_columns(
  schema: features_lib.Schema,
  maxlen: Dict[str, int],
  embedding_dim: int = models_lib.BaseHParams.embedding_dim,
) -> List[object]:
  """DeepCTR feature columns of ``schema``'s fields.

  Args:
    schema: A two-step schema with identity lookups.
    maxlen: Padded length of each weighted multi-id field.
    embedding_dim: Width of every id embedding (default: our models').
  """
  from deepctr import feature_column as fc  # pylint: disable=g-import-not-at-top

  _check_schema(schema)
  columns = []
  for spec in schema.fields:
    if spec.kind == features_lib.FieldKind.ID:
      columns.append(fc.SparseFeat(spec.name, spec.num_rows, embedding_dim=embedding_dim))
    elif spec.kind == features_lib.FieldKind.WEIGHTED_IDS:
      columns.append(
        fc.VarLenSparseFeat(
          fc.SparseFeat(spec.name, spec.num_rows, embedding_dim=embedding_dim),
          maxlen=maxlen[spec.name],
          combiner="mean",
          weight_name=spec.weight_key,
          weight_norm=False,
        )
      )
    else:
      columns.append(fc.DenseFeat(spec.name, spec.dim))
  return columns


def _rows(ids: np.ndarray, num_ids: int) -> np.ndarray:
  """Identity lookup as our front end does it: id -> id + 1, else row 0."""
  ok = (ids >= 0) & (ids < num_ids)
  return np.where(ok, ids + 1, 0).astype(np.int32)


def convert_batch(
  features: Dict[str, tf.Tensor],
  labels: Dict[str, tf.Tensor],
  schema: features_lib.Schema,
  maxlen: Dict[str, int],
):
  """One of our ``(features, labels)`` batches in DeepCTR's input form.

  Returns:
    ``(inputs, (y_1, y_2))``: numpy arrays keyed by DeepCTR input name, and
    the two cumulative labels as ``[B, 1]`` float32 (ESMM's CTR and CTCVR).
  """
  inputs = {}
  for spec in schema.fields:
    value = features[spec.name]
    if spec.kind == features_lib.FieldKind.ID:
      inputs[spec.name] = _rows(value.numpy().reshape(-1, 1), spec.num_ids)
    elif spec.kind == features_lib.FieldKind.WEIGHTED_IDS:
      width = maxlen[spec.name]
      ids = value.to_tensor(default_value=features_lib.PAD_ID, shape=[None, width]).numpy()
      weights = features[spec.weight_key].to_tensor(default_value=0.0, shape=[None, width]).numpy()
      inputs[spec.name] = _rows(ids, spec.num_ids)
      inputs[spec.weight_key] = weights[..., None].astype(np.float32)
    else:
      inputs[spec.name] = value.numpy().astype(np.float32).reshape(-1, spec.dim)
  y = tuple(labels[s].numpy().astype(np.float32).reshape(-1, 1) for s in schema.steps)
  return inputs, y


def peer_dataset(
  dataset: tf.data.Dataset, schema: features_lib.Schema, num_batches: int
) -> Tuple[tf.data.Dataset, Dict[str, int]]:
  """The first ``num_batches`` of ``dataset`` converted, cached, repeated.

  Returns:
    ``(dataset, maxlen)``: batches of :func:`convert_batch`'s form, and the
    padded length of each weighted multi-id field (for :func:`build_peer`).
  """
  batches = list(dataset.take(num_batches))
  maxlen = max_lengths(batches, schema)
  converted = [convert_batch(f, l, schema, maxlen) for f, l in batches]
  peer = tf.data.Dataset.from_tensors(converted[0])
  for batch in converted[1:]:
    peer = peer.concatenate(tf.data.Dataset.from_tensors(batch))
  return peer.cache().repeat(), maxlen


def max_lengths(batches, schema: features_lib.Schema) -> Dict[str, int]:
  """Longest list of each weighted multi-id field over ``batches`` (>= 1)."""
  out = {}
  for spec in schema.fields_of(features_lib.FieldKind.WEIGHTED_IDS):
    out[spec.name] = max(
      1, max(int(tf.reduce_max(f[spec.name].row_lengths()).numpy()) for f, _ in batches)
    )
  return out


def build_peer(
  name: str, schema: features_lib.Schema, maxlen: Dict[str, int], learning_rate: float = 1e-3
) -> tf.keras.Model:
  """DeepCTR's ``name`` model at our model's default sizes, compiled.

  Args:
    name: One of :data:`PEER_MODELS`.
    schema: A two-step schema with identity lookups (e.g. the synthetic one).
    maxlen: Padded length per weighted multi-id field (:func:`peer_dataset`).
    learning_rate: Adam learning rate (binary cross-entropy per task).
  """
  from deepctr import models as peer_models  # pylint: disable=g-import-not-at-top

  if name not in PEER_MODELS:
    raise ValueError(f"no DeepCTR peer for {name!r}; peers: {PEER_MODELS}")
  hp = models_lib.model_class(name).HParams()
  columns = feature_columns(schema, maxlen, hp.embedding_dim)
  common = dict(l2_reg_embedding=0.0, seed=0, task_names=tuple(schema.steps))
  if name == "esmm":
    model = peer_models.ESMM(columns, tower_dnn_hidden_units=hp.tower_units, **common)
  elif name == "mmoe":
    model = peer_models.MMOE(
      columns,
      num_experts=hp.num_experts,
      expert_dnn_hidden_units=hp.expert_units,
      tower_dnn_hidden_units=hp.tower_units,
      **common,
    )
  else:
    model = peer_models.PLE(
      columns,
      shared_expert_num=hp.num_experts,
      specific_expert_num=hp.experts_per_task,
      num_levels=hp.num_levels,
      expert_dnn_hidden_units=hp.expert_units,
      tower_dnn_hidden_units=hp.tower_units,
      **common,
    )
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss=["binary_crossentropy"] * 2)
  return model
