"""Tests specific to DCMT (every model's shared contract: test_every_model.py)."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import losses, models

MODEL = "dcmt"
SMALL = dict(seed=0, embedding_dim=4, tower_units=(8,))


@pytest.fixture(name="tiny", scope="module", params=[2, 3])
def _tiny(request, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp(f"tiny{request.param}"))
  schema = td.make_dataset_dir(directory, num_steps=request.param, num_train=64, num_test=8)
  feats, labels = td.first_batch(directory, batch_size=64)
  return schema, feats, labels


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _bce(y, p):
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _numpy_dcmt(y, logits, counterfactual_logits, weight, constraint_weight, floor):
  """The DCMT terms per example in float64, from the formulas of the docs."""
  q = _sigmoid(logits)
  q_cf = _sigmoid(counterfactual_logits)
  p = np.cumprod(q, axis=1)
  total = np.zeros(len(y))
  for t in range(1, y.shape[1]):
    o = y[:, t - 1]
    propensity = np.clip(p[:, t - 1], floor, 1.0 - floor)
    factual = o / propensity * _bce(y[:, t], q[:, t])
    counterfactual = (1 - o) / (1 - propensity) * _bce(1 - y[:, t], q_cf[:, t - 1])
    constraint = np.abs(q[:, t] + q_cf[:, t - 1] - 1)
    total += weight * (factual + counterfactual) + constraint_weight * constraint
  return total


def test_loss_values_against_numpy(tiny):
  schema, feats, labels = tiny
  # A floor of 0.45 clips part of the initial propensities (~0.5 or less).
  model = models.build_model(
    MODEL, schema, counterfactual_weight=0.8, constraint_weight=0.3, propensity_floor=0.45, **SMALL
  )
  logits, _, aux = model._forward_aux(feats, False)
  y = losses.stack_labels(labels, model.steps)
  assert y.numpy()[:, 0].sum() > 5 and (y.numpy()[:, 0] < 1).sum() > 5  # both kinds of rows
  counterfactual_logits = aux["counterfactual_logits"].numpy().astype(np.float64)
  assert counterfactual_logits.shape == (64, len(model.steps) - 1)
  expected = _numpy_dcmt(
    y.numpy().astype(np.float64),
    logits.numpy().astype(np.float64),
    counterfactual_logits,
    0.8,
    0.3,
    0.45,
  )
  np.testing.assert_allclose(model._extra_loss(y, logits, aux, False).numpy(), expected, rtol=1e-5)
  dtl = model.dtl_loss.per_example(y, logits).numpy()
  np.testing.assert_allclose(
    float(model.compute_loss((feats, labels))), (dtl + expected).mean(), rtol=1e-5
  )


def test_propensity_is_a_stop_gradient_the_ctr_tower_gets_nothing(tiny):
  schema, feats, labels = tiny
  model = models.build_model(MODEL, schema, **SMALL)
  y = losses.stack_labels(labels, model.steps)
  with tf.GradientTape() as tape:
    logits, _, aux = model._forward_aux(feats, True)
    extra = tf.reduce_mean(model._extra_loss(y, logits, aux, True))
  factual, counterfactual = model.towers.trainable_variables, model.counterfactual_towers.variables
  grads = tape.gradient(extra, [factual, counterfactual])
  for var, grad in zip(factual, grads[0]):
    grad = tf.convert_to_tensor(grad).numpy()  # [G = T towers, ...]
    assert not grad[0].any(), var.name  # the first step's (CTR) tower
    assert grad[1:].any(), var.name
  assert all(tf.convert_to_tensor(g).numpy().any() for g in grads[1])


def test_twin_constraint_pulls_the_heads_to_sum_to_one(tiny):
  # Only the constraint (counterfactual_weight 0): training on it alone brings
  # q_t + q*_t to 1 on every row.
  schema, feats, labels = tiny
  model = models.build_model(
    MODEL, schema, counterfactual_weight=0.0, constraint_weight=1.0, **SMALL
  )
  y = losses.stack_labels(labels, model.steps)
  optimizer = tf.keras.optimizers.Adam(0.05)

  def gap():
    logits, _, aux = model._forward_aux(feats, False)
    q = tf.sigmoid(logits[:, 1:]) + tf.sigmoid(aux["counterfactual_logits"])
    return float(tf.reduce_mean(tf.abs(q - 1.0)))

  before = gap()
  for _ in range(60):
    with tf.GradientTape() as tape:
      logits, _, aux = model._forward_aux(feats, True)
      loss = tf.reduce_mean(model._extra_loss(y, logits, aux, True))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
  assert gap() < 0.2 * before, (before, gap())


def test_defaults_follow_the_reference_and_serving_is_the_factual_head(tiny):
  schema, feats, _ = tiny
  model = models.build_model(MODEL, schema, seed=0)
  hp = model.hparams
  assert (hp.counterfactual_weight, hp.constraint_weight, hp.propensity_floor) == (1.0, 1e-3, 0.01)
  assert hp.conditional_weight == 0.0 and model.chained
  outputs = model(feats)
  assert set(outputs) == set(models.build_model("esmm", schema)(feats))
  logits, _, _ = model._forward_aux(feats, False)
  np.testing.assert_array_equal(model.step_logits(feats).numpy(), logits.numpy())


def test_bad_hparams_are_one_line_errors(tiny):
  schema, _, _ = tiny
  with pytest.raises(ValueError, match=r"^propensity_floor must be in \(0, 0.5\), got 0.5$"):
    models.build_model(MODEL, schema, propensity_floor=0.5)
  with pytest.raises(
    ValueError, match="^counterfactual_weight and constraint_weight must be >= 0, got 1.0 and -1.0$"
  ):
    models.build_model(MODEL, schema, constraint_weight=-1.0)
