"""Small schemas and batches for the layer and model tests.

Imported by putting ``tests/models/`` on ``sys.path`` (pytest runs with
``--import-mode=importlib``, so test modules are not packages)::

    sys.path.insert(0, <repo>/tests/models); import multistep_testdata

The layer tests (``tests/layers/``) use it too.

The tiny schema covers every field kind and every lookup kind: identity,
vocabulary (a file written next to the schema) and hash ids, a weighted
multi-valued field, a projected dense field. Labels come from a known logistic
truth, so tests can check learning against it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import example_codec, input_pipeline
from tafe_tf import features as features_lib
from tafe_tf.data import writer

STEP_NAMES = ("click", "cart", "purchase", "pay")
VOCABULARY = [1000 + 7 * i for i in range(30)]  # raw item ids, one per line


def tiny_schema(directory: str, num_steps: int = 2) -> features_lib.Schema:
  """A schema with all field and lookup kinds, saved in ``directory``."""
  os.makedirs(os.path.join(directory, "vocab"), exist_ok=True)
  with open(os.path.join(directory, "vocab", "item.txt"), "w") as f:
    f.write("".join(f"{v}\n" for v in VOCABULARY))
  fields = [
    features_lib.FieldSpec("user", "id", "identity", num_ids=50),
    features_lib.FieldSpec(
      "item", "id", "vocabulary", num_ids=len(VOCABULARY), vocabulary_file="vocab/item.txt"
    ),
    features_lib.FieldSpec("shop", "id", "hash", num_ids=20),
    features_lib.FieldSpec("hist", "weighted_ids", "identity", num_ids=40),
    features_lib.FieldSpec("price", "dense", dim=2),
  ]
  schema = features_lib.Schema("tiny", fields, STEP_NAMES[:num_steps], user_field="user")
  schema.save(directory)
  return features_lib.Schema.load(directory)


def random_rows(
  schema: features_lib.Schema, n: int, seed: int, signal: float = 3.0
) -> List[Tuple[dict, dict, List[float]]]:
  """``n`` rows ``(features, labels, true q)`` of the tiny schema.

  The true conditional logit of every step is a function of the user id,
  the item's vocabulary position and the history (strong when ``signal`` is
  large); step t's labels are drawn in order: y_t = y_{t-1} * Bernoulli(q_t).
  """
  rng = np.random.default_rng(seed)
  truth = np.random.default_rng(12345)  # the same hidden truth for all seeds
  user_effect = truth.normal(size=(50, schema.num_steps))
  item_effect = truth.normal(size=(len(VOCABULARY) + 1, schema.num_steps))
  hist_effect = truth.normal(size=(40, schema.num_steps))
  rows = []
  for _ in range(n):
    user = int(rng.integers(0, 55))  # a few out-of-range ids -> OOV row
    item_pos = int(rng.integers(0, len(VOCABULARY) + 1))
    item = VOCABULARY[item_pos] if item_pos < len(VOCABULARY) else 999_999  # unseen id
    length = int(rng.integers(0, 4))
    hist_ids = [int(i) for i in rng.integers(0, 40, size=length)]
    hist_w = [float(w) for w in rng.uniform(0.5, 2.0, size=length)]
    price = [float(v) for v in rng.normal(size=2)]
    logit = (
      user_effect[min(user, 49)]
      + item_effect[item_pos]
      + (hist_effect[hist_ids].mean(0) if length else 0.0)
      + price[0]
    ) * signal / 2.0 - np.arange(schema.num_steps) * 0.5
    q = 1.0 / (1.0 + np.exp(-logit))
    labels, alive = {}, 1
    for t, step in enumerate(schema.steps):
      alive = alive * int(rng.uniform() < q[t])
      labels[step] = alive
    feats = {
      "user": user,
      "item": item,
      "shop": int(rng.integers(0, 10**9)),
      "hist": (hist_ids, hist_w),
      "price": price,
    }
    rows.append((feats, labels, [float(v) for v in q]))
  return rows


def write_split(
  data_dir: str,
  schema: features_lib.Schema,
  split: str,
  rows: Sequence[Tuple[dict, dict, List[float]]],
  num_shards: int = 1,
) -> None:
  """Writes rows as a split of ``data_dir`` through the package's writer."""
  with writer.ShardedWriter(data_dir, split, num_shards) as w:
    for feats, labels, _ in rows:
      w.write(example_codec.make_example(schema, feats, labels).SerializeToString())
  # The completion marker readers require, listing every split written so far.
  report = writer.read_report(data_dir) or {}
  rows_per_split = {**report.get("rows_per_split", {}), split: len(rows)}
  writer.write_report(data_dir, {"rows_per_split": rows_per_split})


def make_dataset_dir(
  data_dir: str, num_steps: int = 2, num_train: int = 256, num_test: int = 128, signal: float = 3.0
) -> features_lib.Schema:
  """A complete tiny dataset directory (train and test splits)."""
  schema = tiny_schema(data_dir, num_steps)
  write_split(data_dir, schema, "train", random_rows(schema, num_train, seed=1, signal=signal))
  write_split(data_dir, schema, "test", random_rows(schema, num_test, seed=2, signal=signal))
  return schema


def assert_config_round_trip(layer: tf.keras.layers.Layer, inputs, **call_kwargs) -> None:
  """``from_config(get_config())`` rebuilds a layer that, given the original's
  weights, computes the same outputs; the config survives JSON."""
  expected = layer(inputs, **call_kwargs)
  config = json.loads(json.dumps(layer.get_config()))
  clone = type(layer).from_config(config)
  clone(inputs, **call_kwargs)
  clone.set_weights(layer.get_weights())
  tf.nest.map_structure(
    lambda a, b: np.testing.assert_array_equal(a.numpy(), b.numpy()),
    expected,
    clone(inputs, **call_kwargs),
  )


def first_batch(
  data_dir: str,
  split: str = "train",
  batch_size: int = 64,
  dense_padded: bool = False,
  schema: Optional[features_lib.Schema] = None,
) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
  """The first ``(features, labels)`` batch of a split."""
  ds = input_pipeline.make_dataset(
    data_dir, split, batch_size, schema=schema, dense_padded=dense_padded
  )
  return next(iter(ds))


# --- model checks shared by tests/models/test_<model>.py ---------------------

# A small synthetic world with a strong signal: few users and items, so a few
# thousand rows teach a model most of what there is to know.
LEARNING_CONFIG = dict(
  num_users=300,
  num_items=200,
  num_categories=20,
  num_shops=40,
  num_brands=30,
  step_rates=(0.3, 0.3),
  signal=1.5,
  seed=0,
)
LEARNING_HPARAMS = dict(seed=0, embedding_dim=8, expert_units=(32, 16), tower_units=(16,))


def learning_dataset(
  data_dir: str, num_train: int = 8000, num_test: int = 4000
) -> Tuple[str, dict]:
  """Writes the learning test's synthetic data; returns (dir, report)."""
  from tafe_tf.data import synthetic  # pylint: disable=g-import-not-at-top

  config = synthetic.SyntheticConfig(num_steps=2, **LEARNING_CONFIG)
  report = synthetic.write_dataset(
    data_dir, config, num_train=num_train, num_validation=0, num_test=num_test, num_shards=1
  )
  return data_dir, report


def fit(
  model: tf.keras.Model, data_dir: str, epochs: int, batch_size: int, learning_rate: float = 0.01
) -> Dict[str, List[float]]:
  """Compiles and fits ``model`` on the train split; returns the history."""
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
  ds = input_pipeline.make_dataset(data_dir, "train", batch_size, shuffle=True, seed=0)
  return model.fit(ds, epochs=epochs, verbose=0).history


def predict_split(
  model: tf.keras.Model, data_dir: str, split: str = "test", dense_padded: bool = False
) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """(labels [N, T], outputs name -> [N]) of ``model.predict`` on a split."""
  ds = input_pipeline.make_dataset(data_dir, split, 512, dense_padded=dense_padded)
  outputs = model.predict(ds, verbose=0)
  labels = np.concatenate([np.stack([l[s].numpy() for s in model.steps], axis=1) for _, l in ds])
  return labels, outputs


def check_output_contract(model, outputs: Dict[str, np.ndarray]) -> None:
  """Named outputs only; p_t = prod q (chained) and p_t <= p_{t-1} there."""
  names = {f"p_{s}" for s in model.steps} | {f"q_{s}" for s in model.steps}
  if len(model.steps) == 2:
    names |= {"ctr", "cvr", "ctcvr"}
  assert set(outputs) == names
  p = np.stack([outputs[f"p_{s}"] for s in model.steps], axis=1)
  q = np.stack([outputs[f"q_{s}"] for s in model.steps], axis=1)
  assert ((p >= 0) & (p <= 1)).all() and ((q >= 0) & (q <= 1)).all()
  if model.chained:
    np.testing.assert_allclose(p, np.cumprod(q, axis=1), rtol=1e-5, atol=1e-30)
    assert (p[:, 1:] <= p[:, :-1]).all()
  else:
    np.testing.assert_allclose(q[:, 0], p[:, 0])
  if len(model.steps) == 2:
    np.testing.assert_array_equal(outputs["ctr"], p[:, 0])
    np.testing.assert_array_equal(outputs["ctcvr"], p[:, 1])
    np.testing.assert_array_equal(outputs["cvr"], q[:, 1])


def check_save_and_restore(model, data_dir: str, directory: str) -> None:
  """save_weights and tf.train.Checkpoint restore identical predictions into
  a model rebuilt from ``get_config()``."""
  from tafe_tf import models  # pylint: disable=g-import-not-at-top

  _, expected = predict_split(model, data_dir)
  model.save_weights(os.path.join(directory, "weights"))
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
  checkpoint_path = checkpoint.save(os.path.join(directory, "ckpt", "step"))
  config = json.loads(json.dumps(model.get_config()))
  schema = features_lib.Schema.from_json(config["schema"], config["schema_directory"])
  sample, _ = first_batch(data_dir, batch_size=4)
  for restore in ("weights", "checkpoint"):
    clone = models.build_model(config["model"], schema, **config["hparams"])
    clone(sample)
    before = predict_split(clone, data_dir)[1]
    assert not np.allclose(before[f"p_{model.steps[-1]}"], expected[f"p_{model.steps[-1]}"])
    if restore == "weights":
      # The clone has no optimizer: its saved slots stay unused.
      clone.load_weights(os.path.join(directory, "weights")).expect_partial()
    else:
      tf.train.Checkpoint(model=clone).restore(checkpoint_path).expect_partial()
    _, got = predict_split(clone, data_dir)
    for name, value in expected.items():
      np.testing.assert_array_equal(got[name], value, err_msg=name)


def aucs(labels: np.ndarray, outputs: Dict[str, np.ndarray], steps: Sequence[str]) -> List[float]:
  """Exact AUC of p_t against y_t per step."""
  from tafe_tf import metrics  # pylint: disable=g-import-not-at-top

  return [metrics.roc_auc(labels[:, t], outputs[f"p_{s}"]) for t, s in enumerate(steps)]


def hparams_for(name: str, **hparams) -> Dict[str, object]:
  """The ``hparams`` model ``name`` takes: the tests size every model alike
  (``build_model`` itself rejects a name a model does not take)."""
  from tafe_tf import models  # pylint: disable=g-import-not-at-top

  names = {f.name for f in dataclasses.fields(models.hparams_class(name))}
  return {k: v for k, v in hparams.items() if k in names}


# Valid non-default values where "the default + 1" is not one.
_OTHER_VALUES = {
  "transfer": "none",
  "step_weights": [1.0, 0.5],
  "field_embedding_dims": {"user_id": 8},
  "dropout": 0.25,
  "top_k": 2,
  "experts_per_task": 2,
  "seed": 7,
  "calibration_weight": 0.3,
  "conditional_normalization": "parents",
  "tpu_embedding_learning_rate": 0.01,
  "interaction": "cross",
  "cross_projection_dim": 4,
  "escm2_variant": "dr",
  "propensity_floor": 0.05,
}


def non_default_hparams(name: str) -> Dict[str, object]:
  """Every hyperparameter of model ``name`` set to a valid JSON value other
  than its default (for the synthetic schema: field names are its)."""
  from tafe_tf import models  # pylint: disable=g-import-not-at-top

  out = {}
  for f in dataclasses.fields(models.hparams_class(name)):
    if f.name in _OTHER_VALUES:
      out[f.name] = _OTHER_VALUES[f.name]
    elif isinstance(f.default, bool):
      out[f.name] = not f.default
    elif isinstance(f.default, (int, float)):
      out[f.name] = f.default + (1 if isinstance(f.default, int) else 0.5)
    elif isinstance(f.default, tuple):
      out[f.name] = [3, 2]
    else:
      raise AssertionError(f"no test value for {name}'s {f.name}")
  return out


def three_step_fit(
  name: str, data_dir: str, **hparams
) -> Tuple[tf.keras.Model, Dict[str, List[float]]]:
  """Fits model ``name`` a few epochs on a tiny 3-step dataset written into
  ``data_dir``; returns (model, history)."""
  from tafe_tf import models  # pylint: disable=g-import-not-at-top

  schema = make_dataset_dir(data_dir, num_steps=3, num_train=512, num_test=64)
  tf.keras.utils.set_random_seed(0)
  model = models.build_model(
    name,
    schema,
    **hparams_for(name, seed=0, embedding_dim=4, expert_units=(16,), tower_units=(8,)),
    **hparams,
  )
  history = fit(model, data_dir, epochs=4, batch_size=64, learning_rate=0.02)
  return model, history


def assert_gradients_reach_only_rows_used(
  layer: tf.keras.layers.Layer, features: Dict[str, tf.Tensor], table: tf.Variable
) -> None:
  """The gradient of ``sum(layer(features))`` w.r.t. the tiny schema's id
  ``table`` touches every used ``user`` row (id + 1, OOV row 0) and fewer
  than half of the table's rows."""
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(features))
  grad = tf.convert_to_tensor(tape.gradient(loss, table))
  touched = np.flatnonzero(np.abs(grad.numpy()).sum(1))
  users = features["user"].numpy()
  assert set(np.where(users < 50, users + 1, 0)) <= set(touched)
  assert len(touched) < grad.shape[0] / 2
