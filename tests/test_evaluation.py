"""Tests of tafe_tf.evaluation: predicting a dataset, the report, the files."""

import csv
import json
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import evaluation, example_codec, input_pipeline, metrics
from tafe_tf import features as features_lib
from tafe_tf.data import writer as writer_lib

STEPS = ("click", "buy")


# --- predict_dataset ---------------------------------------------------------


def make_schema():
  return features_lib.Schema(
    name="tiny",
    fields=(
      features_lib.FieldSpec("user", "id", lookup="identity", num_ids=20, group="user"),
      features_lib.FieldSpec("hist", "weighted_ids", lookup="hash", num_ids=50),
      features_lib.FieldSpec("price", "dense", dim=2),
    ),
    steps=STEPS,
    user_field="user",
    has_sample_id=True,
    has_oracle=True,
  )


class TinyModel(tf.keras.Model):
  """A real model with the package's output contract (p_<step>, q_<step>)."""

  def __init__(self, steps, outputs=("p", "q")):
    super().__init__()
    self.steps = list(steps)
    self.outputs_kept = outputs
    self.user_embedding = tf.keras.layers.Embedding(21, 3)
    self.logits = tf.keras.layers.Dense(len(steps))

  def call(self, features, training=False):
    leaked = [k for k in features if k.startswith("oracle/") or k == features_lib.SAMPLE_ID_KEY]
    if leaked:
      raise ValueError(f"the model must not see {leaked}")
    user = tf.clip_by_value(features["user"], 0, 20)
    history = tf.reduce_sum(features["hist_weight"], axis=1)
    x = tf.concat(
      [self.user_embedding(user), features["price"], tf.reshape(history, [-1, 1])], axis=1
    )
    q = tf.math.sigmoid(self.logits(x))
    p = tf.math.cumprod(q, axis=1)
    out = {}
    for t, step in enumerate(self.steps):
      if "p" in self.outputs_kept:
        out[f"p_{step}"] = p[:, t]
      if "q" in self.outputs_kept:
        out[f"q_{step}"] = q[:, t]
    return out


@pytest.fixture(name="tiny_data")
def fixture_tiny_data(tmp_path):
  """50 examples in one shard (order preserved) and what was written."""
  schema = make_schema()
  rng = np.random.default_rng(0)
  n = 50
  written = {
    "user": rng.integers(0, 25, size=n),  # some out of vocabulary
    "price": rng.normal(size=(n, 2)).astype(np.float32),
    "hist": [rng.integers(0, 1000, size=k) for k in rng.integers(0, 4, size=n)],
    "oracle": rng.uniform(0.05, 0.95, size=(n, 2)).astype(np.float32),
    "sample_id": np.array([f's{i},"é"' for i in range(n)]),
  }
  written["hist_weight"] = [
    rng.uniform(0.5, 2.0, size=len(h)).astype(np.float32) for h in written["hist"]
  ]
  click = rng.uniform(size=n) < 0.5
  buy = click & (rng.uniform(size=n) < 0.5)
  written["labels"] = np.stack([click, buy], axis=1).astype(np.float32)
  schema.save(str(tmp_path))
  with writer_lib.ShardedWriter(str(tmp_path), "test", num_shards=1) as w:
    for i in range(n):
      example = example_codec.make_example(
        schema,
        {
          "user": written["user"][i],
          "price": written["price"][i],
          "hist": (written["hist"][i], written["hist_weight"][i]),
        },
        {"click": int(click[i]), "buy": int(buy[i])},
        sample_id=written["sample_id"][i],
        oracle={"click": written["oracle"][i, 0], "buy": written["oracle"][i, 1]},
      )
      w.write(example.SerializeToString())
  writer_lib.write_report(str(tmp_path), {"rows_per_split": {"test": n}})
  return str(tmp_path), schema, written


def expected_outputs(model, written):
  """The model applied to the written features in one padded batch."""
  width = max(len(h) for h in written["hist"])
  padded = np.zeros((len(written["hist"]), width), np.float32)
  for i, weights in enumerate(written["hist_weight"]):
    padded[i, : len(weights)] = weights
  out = model(
    {
      "user": tf.constant(written["user"], tf.int64),
      "price": tf.constant(written["price"]),
      "hist_weight": tf.constant(padded),
    }
  )
  p = np.stack([out[f"p_{s}"].numpy() for s in STEPS], axis=1)
  q = np.stack([out[f"q_{s}"].numpy() for s in STEPS], axis=1)
  return p, q


def test_predict_dataset_collects_everything_in_order(tiny_data):
  data_dir, schema, written = tiny_data
  tf.keras.utils.set_random_seed(0)
  model = TinyModel(STEPS)
  # Batch 16 over 50 rows: the last batch is partial.
  ds = input_pipeline.make_dataset(data_dir, "test", batch_size=16, with_metadata=True)
  predictions = evaluation.predict_dataset(model, ds, schema)
  assert predictions.num_examples == 50
  np.testing.assert_array_equal(predictions.labels, written["labels"])
  np.testing.assert_array_equal(predictions.user_ids, written["user"])
  np.testing.assert_array_equal(predictions.oracle_q, written["oracle"])
  assert predictions.sample_ids.tolist() == written["sample_id"].tolist()
  p, q = expected_outputs(model, written)
  np.testing.assert_allclose(predictions.p, p, rtol=1e-6)
  np.testing.assert_allclose(predictions.q, q, rtol=1e-6)
  np.testing.assert_allclose(
    predictions.p[:, 1], predictions.q[:, 0] * predictions.q[:, 1], rtol=1e-6
  )
  np.testing.assert_allclose(
    predictions.oracle_p[:, 1], written["oracle"][:, 0] * written["oracle"][:, 1], rtol=1e-6
  )


def test_predict_dataset_needs_metadata_the_schema_promises(tiny_data):
  data_dir, schema, _ = tiny_data
  ds = input_pipeline.make_dataset(data_dir, "test", batch_size=16, with_metadata=False)
  with pytest.raises(
    ValueError,
    match=re.escape(
      "batch 0: features miss ['oracle/click', 'oracle/buy', 'sample_id'] "
      "(build the dataset with with_metadata=True)"
    ),
  ):
    evaluation.predict_dataset(TinyModel(STEPS), ds, schema)


def test_predict_dataset_names_missing_model_outputs(tiny_data):
  data_dir, schema, _ = tiny_data
  ds = input_pipeline.make_dataset(data_dir, "test", batch_size=16, with_metadata=True)
  with pytest.raises(
    ValueError,
    match=re.escape("model outputs miss ['q_click', 'q_buy']; it returned ['p_buy', 'p_click']"),
  ):
    evaluation.predict_dataset(TinyModel(STEPS, outputs=("p",)), ds, schema)


def test_predict_dataset_rejects_an_empty_dataset(tiny_data):
  data_dir, schema, _ = tiny_data
  ds = input_pipeline.make_dataset(data_dir, "test", batch_size=16, with_metadata=True).take(0)
  with pytest.raises(ValueError, match=re.escape("the dataset is empty: nothing to evaluate")):
    evaluation.predict_dataset(TinyModel(STEPS), ds, schema)


# --- compute_report ----------------------------------------------------------


def hand_predictions():
  return evaluation.Predictions(
    labels=np.array([[1, 1], [1, 0], [0, 0], [0, 0]], np.float32),
    p=np.array([[0.9, 0.3], [0.4, 0.2], [0.5, 0.05], [0.1, 0.01]], np.float32),
    q=np.array([[0.9, 0.33], [0.4, 0.5], [0.5, 0.1], [0.1, 0.1]], np.float32),
    user_ids=np.array([1, 2, 1, 2]),
    oracle_q=np.array([[0.8, 0.5], [0.6, 0.1], [0.2, 0.5], [0.3, 0.5]], np.float32),
  )


def test_compute_report_hand_example():
  report = evaluation.compute_report(hand_predictions(), STEPS)
  f32 = lambda x: float(np.float32(x))  # the arrays hold float32
  expected = {
    # Clicks 0.9, 0.4 vs non-clicks 0.5, 0.1: 3 of 4 pairs.
    "auc/click": 0.75,
    "logloss/click": -(
      math.log(f32(0.9)) + math.log(f32(0.4)) + math.log(1 - f32(0.5)) + math.log(1 - f32(0.1))
    )
    / 4,
    "pcoc/click": (f32(0.9) + f32(0.4) + f32(0.5) + f32(0.1)) / 2,
    # User 1: (0.9 vs 0.5) = 1; user 2: (0.4 vs 0.1) = 1.
    "gauc/click": 1.0,
    # Oracle p_click 0.8, 0.6 vs 0.2, 0.3.
    "oracle_auc/click": 1.0,
    "oracle_gap/click": 0.25,
    "auc/buy": 1.0,
    "logloss/buy": -(
      math.log(f32(0.3))
      + math.log(1 - f32(0.2))
      + math.log(1 - f32(0.05))
      + math.log(1 - f32(0.01))
    )
    / 4,
    "pcoc/buy": f32(0.3) + f32(0.2) + f32(0.05) + f32(0.01),
    # On clicked rows: buyer q 0.33 below non-buyer q 0.5.
    "auc_conditional/buy": 0.0,
    # User 1 only (user 2 never buys).
    "gauc/buy": 1.0,
    # Oracle p_buy 0.4 vs 0.06, 0.1, 0.15.
    "oracle_auc/buy": 1.0,
    "oracle_gap/buy": 0.0,
    "num_examples": 4,
  }
  assert sorted(report) == sorted(expected)
  for key, value in expected.items():
    assert report[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_compute_report_on_synthetic_data_with_known_oracle():
  rng = np.random.default_rng(11)
  n = 20_000
  logits = rng.normal(size=(n, 2)) * [1.0, 1.5] - [1.5, 1.0]
  oracle_q = (1 / (1 + np.exp(-logits))).astype(np.float32)
  events = rng.uniform(size=(n, 2)) < oracle_q
  labels = np.cumprod(events, axis=1).astype(np.float32)
  # The model sees the truth through noise: it must fall short of the oracle.
  noisy_q = 1 / (1 + np.exp(-(logits + rng.normal(scale=1.0, size=(n, 2)))))
  q = noisy_q.astype(np.float32)
  p = np.cumprod(q, axis=1).astype(np.float32)
  users = rng.integers(0, 500, size=n)
  predictions = evaluation.Predictions(labels, p, q, user_ids=users, oracle_q=oracle_q)
  report = evaluation.compute_report(predictions, STEPS)
  oracle_p = np.cumprod(oracle_q.astype(np.float64), axis=1)
  clicked = labels[:, 0] == 1
  assert report["num_examples"] == n
  assert report["auc_conditional/buy"] == metrics.roc_auc(labels[clicked, 1], q[clicked, 1])
  for t, step in enumerate(STEPS):
    assert report[f"auc/{step}"] == metrics.roc_auc(labels[:, t], p[:, t])
    assert report[f"gauc/{step}"] == metrics.group_auc(labels[:, t], p[:, t], users)
    assert report[f"oracle_auc/{step}"] == metrics.roc_auc(labels[:, t], oracle_p[:, t])
    assert report[f"oracle_gap/{step}"] == (report[f"oracle_auc/{step}"] - report[f"auc/{step}"])
    # Noise of scale 1 on logits of scale 1-1.5 costs several AUC points.
    assert 0.02 < report[f"oracle_gap/{step}"] < 0.2
    # Labels drawn from the oracle: the oracle is calibrated.
    assert metrics.pcoc(labels[:, t], oracle_p[:, t]) == pytest.approx(1.0, abs=0.05)


def test_compute_report_keys_without_users_or_oracle():
  hand = hand_predictions()
  bare = evaluation.Predictions(hand.labels, hand.p, hand.q)
  report = evaluation.compute_report(bare, STEPS)
  assert sorted(report) == sorted(
    [
      "auc/click",
      "logloss/click",
      "pcoc/click",
      "auc/buy",
      "logloss/buy",
      "pcoc/buy",
      "auc_conditional/buy",
      "num_examples",
    ]
  )


def test_compute_report_rejects_step_count_mismatch():
  with pytest.raises(
    ValueError, match=re.escape("3 steps ['click', 'cart', 'buy'] but predictions have 2 columns")
  ):
    evaluation.compute_report(hand_predictions(), ["click", "cart", "buy"])


def test_predictions_reject_misshaped_arrays():
  with pytest.raises(ValueError, match=re.escape("q has shape (4, 1), labels (4, 2)")):
    evaluation.Predictions(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 1)))


# --- files -------------------------------------------------------------------


def read_csv(path):
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def test_predictions_csv_round_trip(tmp_path):
  rng = np.random.default_rng(12)
  n = 257
  q = rng.uniform(size=(n, 2)).astype(np.float32)
  q[0] = [1e-9, 1.0]  # tiny and extreme values survive too
  p = np.cumprod(q, axis=1)
  ids = np.array([f'id,{i}"q"é' for i in range(n)])
  predictions = evaluation.Predictions(np.zeros((n, 2), np.float32), p, q, sample_ids=ids)
  path = str(tmp_path / "out" / "predictions.csv")
  assert evaluation.write_predictions_csv(predictions, STEPS, path) == path
  header, rows = read_csv(path)
  assert header == ["sample_id", "p_click", "q_click", "p_buy", "q_buy"]
  assert [r[0] for r in rows] == ids.tolist()
  table = np.array([r[1:] for r in rows], dtype=np.float64).astype(np.float32)
  np.testing.assert_array_equal(table[:, 0], p[:, 0])
  np.testing.assert_array_equal(table[:, 1], q[:, 0])
  np.testing.assert_array_equal(table[:, 2], p[:, 1])
  np.testing.assert_array_equal(table[:, 3], q[:, 1])
  assert os.listdir(tmp_path / "out") == ["predictions.csv"]


def test_predictions_csv_without_sample_ids(tmp_path):
  hand = hand_predictions()
  path = evaluation.write_predictions_csv(hand, STEPS, str(tmp_path / "p.csv"))
  header, rows = read_csv(path)
  assert header == ["p_click", "q_click", "p_buy", "q_buy"]
  assert rows[1] == ["0.400000006", "0.400000006", "0.200000003", "0.5"]


def test_failed_csv_write_keeps_the_old_file(tmp_path):
  path = str(tmp_path / "p.csv")
  hand = hand_predictions()
  evaluation.write_predictions_csv(hand, STEPS, path)
  before = open(path, encoding="utf-8").read()
  hand.q = np.full((4, 2), "not a number")  # fails while rows are written
  with pytest.raises(ValueError, match="Unknown format code 'g'"):
    evaluation.write_predictions_csv(hand, STEPS, path)
  assert open(path, encoding="utf-8").read() == before
  assert os.listdir(tmp_path) == ["p.csv"]


def test_report_json_is_strict_json(tmp_path):
  report = {
    "auc/click": 0.75,
    "pcoc/buy": float("nan"),
    "gauc/buy": np.float64(0.5),
    "num_examples": np.int64(4),
  }
  path = evaluation.write_report_json(report, str(tmp_path / "r" / "report.json"))

  def reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")

  with open(path, encoding="utf-8") as f:
    loaded = json.load(f, parse_constant=reject)
  assert loaded == {"auc/click": 0.75, "pcoc/buy": None, "gauc/buy": 0.5, "num_examples": 4}
  assert os.listdir(tmp_path / "r") == ["report.json"]
