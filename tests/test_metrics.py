"""Tests of tafe_tf.metrics: exact numpy metrics and streaming StepMetrics."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tafe_tf  # noqa: F401
from tafe_tf import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_force_auc(labels, scores, weights=None):
  """Pairwise count: P(positive > negative) + 0.5 P(tie), weighted by pairs."""
  labels = np.asarray(labels, bool)
  scores = np.asarray(scores, np.float64)
  weights = np.ones(len(labels)) if weights is None else np.asarray(weights)
  sp, wp = scores[labels], weights[labels]
  sn, wn = scores[~labels], weights[~labels]
  pair = wp[:, None] * wn[None, :]
  wins = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
  return float((pair * wins).sum() / pair.sum())


def sample_steps(rng, n, num_steps=2, low=0.001, high=0.5):
  """Conditional probabilities q, chained p and consistent cumulative labels."""
  q = rng.uniform(low, high, size=(n, num_steps)).astype(np.float32)
  p = np.cumprod(q, axis=1)
  events = rng.uniform(size=(n, num_steps)) < q
  y = np.cumprod(events, axis=1).astype(np.float32)
  return y, p, q


# --- roc_auc -----------------------------------------------------------------


def test_roc_auc_hand_example_is_exact_fraction():
  # Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs won.
  assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_roc_auc_ties_get_half_credit():
  # Positive 0.5 ties negative 0.5 (1/2) and beats 0.2; positive 0.9 beats both.
  assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 3.5 / 4
  assert metrics.roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_roc_auc_sample_weights_equal_repeated_rows():
  labels = [0, 0, 1, 1, 1]
  scores = [0.2, 0.6, 0.5, 0.6, 0.9]
  weights = [3, 1, 2, 0, 1]
  repeated = np.repeat(np.arange(5), weights)
  expected = metrics.roc_auc(np.asarray(labels)[repeated], np.asarray(scores)[repeated])
  # Hand count: positive 0.5 (x2) beats 3 of 4 negative weight, 0.9 beats all 4.
  assert expected == pytest.approx((2 * 3 + 1 * 4) / (3 * 4))
  assert metrics.roc_auc(labels, scores, sample_weight=weights) == (
    pytest.approx(expected, abs=1e-15)
  )


def test_roc_auc_matches_brute_force_on_random_data_with_ties():
  rng = np.random.default_rng(7)
  for n in (2, 17, 600):
    labels = rng.uniform(size=n) < 0.3
    labels[:2] = [True, False]
    scores = np.round(rng.normal(size=n) + labels, 1)  # rounding makes ties
    weights = rng.uniform(0.0, 2.0, size=n)
    assert metrics.roc_auc(labels, scores) == pytest.approx(
      brute_force_auc(labels, scores), abs=1e-12
    )
    assert metrics.roc_auc(labels, scores, weights) == pytest.approx(
      brute_force_auc(labels, scores, weights), abs=1e-12
    )


def test_roc_auc_depends_only_on_order():
  rng = np.random.default_rng(1)
  labels = rng.uniform(size=1000) < 0.2
  probs = rng.uniform(0.01, 0.99, size=1000)
  logits = np.log(probs) - np.log1p(-probs)
  assert metrics.roc_auc(labels, probs) == metrics.roc_auc(labels, logits)
  assert metrics.roc_auc(labels, -probs) == pytest.approx(
    1.0 - metrics.roc_auc(labels, probs), abs=1e-12
  )


def test_roc_auc_is_nan_without_both_classes():
  assert math.isnan(metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
  assert math.isnan(metrics.roc_auc([1, 1], [0.1, 0.2]))
  # Zero weight on the only negative removes it.
  assert math.isnan(metrics.roc_auc([1, 0], [0.1, 0.2], sample_weight=[1, 0]))


def test_roc_auc_rejects_bad_input_with_clear_messages():
  with pytest.raises(ValueError, match=re.escape("labels must be 0 or 1; index 2 holds 2")):
    metrics.roc_auc([0, 1, 2], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match=re.escape("scores must be finite; index 1 holds nan")):
    metrics.roc_auc([0, 1], [0.1, float("nan")])
  with pytest.raises(ValueError, match=re.escape("labels and scores differ in length: 3 vs 2")):
    metrics.roc_auc([0, 1, 1], [0.1, 0.2])
  with pytest.raises(
    ValueError, match=re.escape("sample_weight must be finite and >= 0; index 0 holds -1.0")
  ):
    metrics.roc_auc([0, 1], [0.1, 0.2], sample_weight=[-1, 1])
  with pytest.raises(ValueError, match="must be 1-D"):
    metrics.roc_auc([[0, 1]], [[0.1, 0.2]])


def test_roc_auc_is_fast_on_millions_of_rows():
  rng = np.random.default_rng(0)
  n = 2_000_000
  labels = rng.uniform(size=n) < 0.05
  scores = (rng.normal(size=n) + labels).astype(np.float32)
  import time  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  auc = metrics.roc_auc(labels, scores)
  elapsed = time.perf_counter() - start
  # N(1, 1) vs N(0, 1): AUC = Phi(1 / sqrt(2)) = 0.7602.
  assert auc == pytest.approx(0.7602, abs=0.003)
  assert elapsed < 10.0


# --- group_auc ---------------------------------------------------------------


def test_group_auc_hand_example():
  # User a (3 rows): AUC 1/2. User b (2 rows): AUC 1. User c: one class only.
  labels = [1, 0, 0, 1, 0, 0, 0]
  scores = [0.9, 0.5, 0.95, 0.3, 0.1, 0.4, 0.7]
  users = [5, 5, 5, 9, 9, 2, 2]
  expected = (3 * 0.5 + 2 * 1.0) / 5
  assert metrics.group_auc(labels, scores, users) == pytest.approx(expected, abs=1e-15)
  names = np.array(["a", "a", "a", "b", "b", "c", "c"])
  assert metrics.group_auc(labels, scores, names) == pytest.approx(expected, abs=1e-15)


def test_group_auc_matches_per_group_loop_on_random_data():
  rng = np.random.default_rng(3)
  n = 3000
  users = rng.integers(0, 150, size=n)
  labels = rng.uniform(size=n) < 0.25
  scores = np.round(rng.normal(size=n) + 0.7 * labels + 0.01 * users, 1)
  total, weight = 0.0, 0
  for u in np.unique(users):
    rows = users == u
    if labels[rows].any() and not labels[rows].all():
      total += rows.sum() * brute_force_auc(labels[rows], scores[rows])
      weight += rows.sum()
  assert metrics.group_auc(labels, scores, users) == pytest.approx(total / weight, abs=1e-12)
  # Shuffling rows changes nothing.
  perm = rng.permutation(n)
  assert metrics.group_auc(labels[perm], scores[perm], users[perm]) == (
    pytest.approx(total / weight, abs=1e-12)
  )


def test_group_auc_is_nan_when_no_group_has_both_classes():
  assert math.isnan(metrics.group_auc([1, 0, 1], [0.2, 0.3, 0.4], [1, 2, 3]))


def test_group_auc_rejects_misshaped_groups():
  with pytest.raises(ValueError, match=re.escape("groups must have shape (2,), got (3,)")):
    metrics.group_auc([0, 1], [0.1, 0.2], [1, 1, 1])


# --- roc_curve ---------------------------------------------------------------


def test_roc_curve_points_and_area():
  curve = metrics.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
  np.testing.assert_allclose(curve.false_positive_rate, [0, 0, 0.5, 0.5, 1])
  np.testing.assert_allclose(curve.true_positive_rate, [0, 0.5, 0.5, 1, 1])
  rng = np.random.default_rng(2)
  labels = rng.uniform(size=5000) < 0.1
  scores = np.round(rng.normal(size=5000) + labels, 2)
  full = metrics.roc_curve(labels, scores, max_points=None)
  assert np.trapezoid(full.true_positive_rate, full.false_positive_rate) == (
    pytest.approx(metrics.roc_auc(labels, scores), abs=1e-12)
  )
  thin = metrics.roc_curve(labels, scores, max_points=50)
  assert len(thin.false_positive_rate) <= 50
  assert (thin.false_positive_rate[0], thin.true_positive_rate[0]) == (0, 0)
  assert (thin.false_positive_rate[-1], thin.true_positive_rate[-1]) == (1, 1)
  with pytest.raises(ValueError, match="needs both positive and negative"):
    metrics.roc_curve([1, 1], [0.2, 0.3])


# --- logloss, pcoc, reliability ----------------------------------------------


def test_logloss_hand_computation_and_clipping():
  assert metrics.logloss([1, 0], [0.8, 0.1]) == pytest.approx(
    -(math.log(0.8) + math.log(0.9)) / 2, rel=1e-12
  )
  # Certain and wrong: clipped at 1e-7, not infinite.
  assert metrics.logloss([1, 0], [0.0, 1.0]) == pytest.approx(
    -math.log(metrics.LOGLOSS_EPS), rel=1e-6
  )
  with pytest.raises(
    ValueError, match=re.escape("probabilities must lie in [0, 1]; index 1 holds 1.5")
  ):
    metrics.logloss([1, 0], [0.5, 1.5])


def test_pcoc_hand_example_and_no_positives():
  # Mean prediction 0.375 over observed rate 0.5.
  assert metrics.pcoc([1, 0, 0, 1], [0.5, 0.25, 0.25, 0.5]) == 0.75
  assert math.isnan(metrics.pcoc([0, 0], [0.1, 0.2]))


def test_reliability_curve_uniform_bins_hand_example():
  labels = [0, 0, 1, 1, 1, 0]
  probs = [0.05, 0.15, 0.2, 0.7, 0.9, 0.95]
  curve = metrics.reliability_curve(labels, probs, num_bins=2, strategy="uniform")
  np.testing.assert_allclose(curve.mean_predicted, [0.4 / 3, 2.55 / 3])
  np.testing.assert_allclose(curve.observed_rate, [1 / 3, 2 / 3])
  np.testing.assert_array_equal(curve.count, [3, 3])
  # 4 uniform bins: [0.5, 0.75) holds 0.7 alone; [0.25, 0.5) is empty: dropped.
  curve = metrics.reliability_curve(labels, probs, num_bins=4, strategy="uniform")
  np.testing.assert_array_equal(curve.count, [3, 1, 2])


def test_reliability_curve_quantile_bins_have_equal_counts():
  rng = np.random.default_rng(4)
  probs = rng.beta(0.5, 50.0, size=10_000)  # skewed, rare-event-like
  labels = rng.uniform(size=10_000) < probs
  curve = metrics.reliability_curve(labels, probs, num_bins=10)
  np.testing.assert_array_equal(curve.count, np.full(10, 1000))
  assert np.all(np.diff(curve.mean_predicted) > 0)
  # Labels drawn from probs: every bin is calibrated within sampling noise.
  np.testing.assert_allclose(curve.observed_rate, curve.mean_predicted, atol=0.02)
  constant = metrics.reliability_curve([0, 1, 1], [0.3, 0.3, 0.3])
  np.testing.assert_array_equal(constant.count, [3])
  with pytest.raises(
    ValueError, match=re.escape("strategy must be one of ('quantile', 'uniform'), got 'log'")
  ):
    metrics.reliability_curve([0, 1], [0.1, 0.2], strategy="log")


# --- streaming metrics -------------------------------------------------------


def exact_step_metrics(y, p, q, steps):
  out = {}
  for t, step in enumerate(steps):
    out[f"auc/{step}"] = metrics.roc_auc(y[:, t], p[:, t])
    out[f"logloss/{step}"] = metrics.logloss(y[:, t], p[:, t])
    out[f"pcoc/{step}"] = metrics.pcoc(y[:, t], p[:, t])
    if t > 0:
      reached = y[:, t - 1] == 1
      out[f"auc_conditional/{step}"] = metrics.roc_auc(y[reached, t], q[reached, t])
  return out


def assert_close_to_exact(streamed, exact):
  assert list(streamed) == list(exact)
  for name, value in exact.items():
    # AUC: threshold buckets 0.016 wide in logit; the rest is float32 rounding.
    tolerance = 1e-3 if name.startswith("auc") else 1e-5
    assert streamed[name] == pytest.approx(value, rel=tolerance, abs=tolerance), name


def test_step_metrics_names_in_order():
  sm = metrics.StepMetrics(["click", "cart", "buy"])
  assert [m.name for m in sm.metrics] == [
    "auc/click",
    "logloss/click",
    "pcoc/click",
    "auc/cart",
    "logloss/cart",
    "pcoc/cart",
    "auc_conditional/cart",
    "auc/buy",
    "logloss/buy",
    "pcoc/buy",
    "auc_conditional/buy",
  ]


def test_step_metrics_match_numpy_over_batches_then_reset():
  rng = np.random.default_rng(5)
  steps = ["click", "cart", "buy"]
  y, p, q = sample_steps(rng, 6000, num_steps=3)
  sm = metrics.StepMetrics(steps)
  update = tf.function(sm.update_state)
  for start in range(0, 6000, 1000):
    rows = slice(start, start + 1000)
    update({s: y[rows, t] for t, s in enumerate(steps)}, p[rows], q[rows])
  assert_close_to_exact(sm.results(), exact_step_metrics(y, p, q, steps))
  sm.reset_state()
  rows = slice(0, 1000)
  update({s: y[rows, t] for t, s in enumerate(steps)}, p[rows], q[rows])
  assert_close_to_exact(sm.results(), exact_step_metrics(y[rows], p[rows], q[rows], steps))


def test_logit_auc_resolves_rare_event_probabilities():
  # Probabilities ~1e-4: Keras's default thresholds (even in p) see one bucket.
  rng = np.random.default_rng(6)
  n = 200_000
  logits = rng.normal(-9.0, 1.0, size=n)
  p = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
  labels = (rng.uniform(size=n) < 30 * p).astype(np.float32)
  exact = metrics.roc_auc(labels, p)
  ours = metrics.LogitAUC()
  ours.update_state(labels, p)
  default = tf.keras.metrics.AUC(num_thresholds=200)
  default.update_state(labels, p)
  assert float(ours.result()) == pytest.approx(exact, abs=1e-3)
  assert abs(float(default.result()) - exact) > 0.1


def test_pcoc_metric_is_nan_without_positives_and_weighted():
  m = metrics.Pcoc()
  m.update_state([0.0, 0.0], [0.1, 0.2])
  assert math.isnan(float(m.result()))
  m.update_state([1.0, 1.0], [0.5, 0.3], sample_weight=[1.0, 0.0])
  assert float(m.result()) == pytest.approx((0.1 + 0.2 + 0.5) / 1.0)


def test_step_metrics_config_round_trip_and_missing_labels():
  sm = metrics.StepMetrics(["click", "buy"], auc_num_thresholds=500, name="sm")
  clone = metrics.StepMetrics.from_config(sm.get_config())
  assert clone.steps == ("click", "buy")
  assert clone.auc_num_thresholds == 500
  assert [m.name for m in clone.metrics] == [m.name for m in sm.metrics]
  assert clone.metrics[0].num_thresholds == 500
  auc = metrics.LogitAUC(300, logit_range=8.0, name="auc/x")
  assert metrics.LogitAUC.from_config(auc.get_config()).get_config() == (auc.get_config())
  with pytest.raises(KeyError, match=re.escape("labels miss steps ['buy']; have ['click']")):
    sm.update_state({"click": tf.zeros([2])}, tf.zeros([2, 2]), tf.zeros([2, 2]))


class _ChainedLogistic(tfrs.Model):
  """A real two-step chained model: one logit per step from a dense input."""

  def __init__(self, steps):
    super().__init__()
    self.steps = list(steps)
    self.logits = tf.keras.layers.Dense(len(steps))
    self.step_metrics = metrics.StepMetrics(steps)

  def call(self, features, training=False):
    q = tf.math.sigmoid(self.logits(features["x"]))
    return q, tf.math.cumprod(q, axis=1)

  def compute_loss(self, inputs, training=False):
    features, labels = inputs
    q, p = self(features, training=training)
    self.step_metrics.update_state(labels, p, q)
    y = tf.stack([labels[s] for s in self.steps], axis=1)
    return tf.reduce_mean(tf.keras.losses.binary_crossentropy(y, p))


@pytest.mark.parametrize("seed", [0, 1])
def test_step_metrics_are_logged_by_fit_and_evaluate(seed):
  tf.keras.utils.set_random_seed(seed)
  rng = np.random.default_rng(8)
  steps = ["click", "buy"]
  x = rng.normal(scale=4.0, size=(512, 3)).astype(np.float32)
  y, _, _ = sample_steps(rng, 512)
  ds = tf.data.Dataset.from_tensor_slices(
    ({"x": x}, {s: y[:, t] for t, s in enumerate(steps)})
  ).batch(128)
  model = _ChainedLogistic(steps)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
  history = model.fit(ds, validation_data=ds, epochs=1, verbose=0)
  names = [m.name for m in model.step_metrics.metrics]
  assert set(names) <= set(history.history)
  assert {"val_" + n for n in names} <= set(history.history)
  # evaluate() resets the metrics first, so it reports this pass alone.
  logged = model.evaluate(ds, verbose=0, return_dict=True)
  q, p = (a.numpy() for a in model({"x": x}))
  exact = exact_step_metrics(y, p, q, steps)
  assert_close_to_exact({n: logged[n] for n in names}, exact)
  # Metric state is not part of the model's weights (checkpoints, optimizer).
  weights = {w.ref() for w in model.weights}
  assert not any(v.ref() in weights for m in model.step_metrics.metrics for v in m.variables)


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tafe_tf
    import tensorflow as tf
    from tafe_tf import metrics
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
      sm = metrics.StepMetrics(["click", "buy"])
    rng = np.random.default_rng(9)
    q = rng.uniform(0.001, 0.5, size=(4000, 2)).astype(np.float32)
    p = np.cumprod(q, axis=1)
    y = np.cumprod(rng.uniform(size=(4000, 2)) < q, axis=1).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(
        ({"click": y[:, 0], "buy": y[:, 1]}, p, q)).batch(500)

    @tf.function
    def step(batch):
      strategy.run(sm.update_state, args=batch)

    for batch in strategy.experimental_distribute_dataset(ds):
      step(batch)
    json.dump({"replicas": strategy.num_replicas_in_sync,
               "results": sm.results(), "y": y.tolist(), "p": p.tolist(),
               "q": q.tolist()}, sys.stdout)
""")


def test_step_metrics_aggregate_across_replicas_under_mirrored_strategy():
  # Logical devices must be set before TensorFlow starts: a fresh process.
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  done = subprocess.run(
    [sys.executable, "-c", _MIRRORED_SCRIPT],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout)
  assert out["replicas"] == 2
  y, p, q = (np.asarray(out[k], np.float32) for k in ("y", "p", "q"))
  assert_close_to_exact(out["results"], exact_step_metrics(y, p, q, ["click", "buy"]))


def test_running_means_weigh_by_examples_and_stay_out_of_weights():

  class Holder(tf.keras.Model):
    def __init__(self):
      super().__init__()
      self.dense = tf.keras.layers.Dense(1)
      self.means = metrics.RunningMeans(["loss", "other"])

    def call(self, x):
      return self.dense(x)

  holder = Holder()
  holder(tf.zeros([1, 2]))
  holder.means.update_state([tf.constant(1.0), tf.constant(5.0)], sample_weight=tf.constant(3.0))
  holder.means.update_state([tf.constant(3.0), tf.constant(5.0)], sample_weight=tf.constant(1.0))
  results = {m.name: float(m.result()) for m in holder.metrics}
  assert results == {"loss": 1.5, "other": 5.0}
  assert len(holder.weights) == 2  # the Dense kernel and bias only
  assert float(holder.means.count()) == 4.0  # examples: 3 + 1
  for m in holder.metrics:
    m.reset_state()
  assert float(holder.means.count()) == 0.0


def test_running_means_need_a_name():
  with pytest.raises(ValueError, match="RunningMeans needs at least one name"):
    metrics.RunningMeans([])
