"""Tests specific to ESCM2 (every model's shared contract: test_every_model.py)."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import losses, models

MODEL = "escm2"
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


def _numpy_regulariser(y, logits, imputed, variant, weight, floor):
  """The ESCM2 term per example in float64, from the formulas of the docs."""
  q = _sigmoid(logits)
  p = np.cumprod(q, axis=1)
  total = np.zeros(len(y))
  for t in range(1, y.shape[1]):
    o = y[:, t - 1]
    propensity = np.clip(p[:, t - 1], floor, 1.0)
    error = _bce(y[:, t], q[:, t])
    if variant == "ips":
      total += o * error / propensity
    else:
      e_hat = imputed[:, t - 1]
      residual = error - e_hat
      total += e_hat + o * residual / propensity + o * residual**2 / propensity
  return weight * total


@pytest.mark.parametrize("variant", ["ips", "dr"])
def test_regulariser_and_loss_values_against_numpy(tiny, variant):
  schema, feats, labels = tiny
  # A floor of 0.5 clips about half the initial propensities (~0.5 or less).
  model = models.build_model(
    MODEL, schema, escm2_variant=variant, propensity_floor=0.5, counterfactual_weight=0.7, **SMALL
  )
  logits, _, aux = model._forward_aux(feats, False)
  y = losses.stack_labels(labels, model.steps)
  assert y.numpy()[:, 0].sum() > 5 and (y.numpy()[:, 0] < 1).sum() > 5  # both kinds of rows
  extra = model._extra_loss(y, logits, aux, False).numpy()
  imputed = aux["imputed_error"].numpy().astype(np.float64) if variant == "dr" else None
  expected = _numpy_regulariser(
    y.numpy().astype(np.float64), logits.numpy().astype(np.float64), imputed, variant, 0.7, 0.5
  )
  np.testing.assert_allclose(extra, expected, rtol=1e-5)
  if variant == "dr":
    assert (imputed > 0).all() and imputed.shape == (64, len(model.steps) - 1)
  # compute_loss: the mean over ALL impressions of DTL + the regulariser.
  dtl = model.dtl_loss.per_example(y, logits).numpy()
  np.testing.assert_allclose(
    float(model.compute_loss((feats, labels))), (dtl + expected).mean(), rtol=1e-5
  )


@pytest.mark.parametrize("variant", ["ips", "dr"])
def test_propensity_is_a_stop_gradient_the_ctr_tower_gets_nothing(tiny, variant):
  schema, feats, labels = tiny
  model = models.build_model(MODEL, schema, escm2_variant=variant, **SMALL)
  y = losses.stack_labels(labels, model.steps)
  with tf.GradientTape() as tape:
    logits, _, aux = model._forward_aux(feats, True)
    extra = tf.reduce_mean(model._extra_loss(y, logits, aux, True))
  variables = model.towers.trainable_variables
  grads = tape.gradient(extra, [variables, model.embedding.trainable_variables])
  for var, grad in zip(variables, grads[0]):
    grad = tf.convert_to_tensor(grad).numpy()  # [G = T towers, ...]
    assert not grad[0].any(), var.name  # the first step's (CTR) tower
    assert grad[1:].any(), var.name  # every later step's tower learns
  assert any(tf.convert_to_tensor(g).numpy().any() for g in grads[1])


def test_defaults_are_ips_and_serving_has_no_imputation(tiny):
  schema, feats, _ = tiny
  ips = models.build_model(MODEL, schema, seed=0)
  hp = ips.hparams
  assert (hp.escm2_variant, hp.counterfactual_weight, hp.propensity_floor) == ("ips", 0.5, 0.01)
  # The counterfactual term replaces the naive click-space CVR loss.
  assert hp.conditional_weight == 0.0 and ips.dtl_loss.conditional_weight == 0.0
  assert ips.chained
  outputs = ips(feats)
  assert set(outputs) == set(models.build_model("esmm", schema)(feats))
  assert ips.imputation is None and not any("imputation" in v.name for v in ips.variables)
  dr = models.build_model(MODEL, schema, escm2_variant="dr", seed=0)
  dr(feats)
  assert dr.imputation is not None
  # The serving path is ESMM's: same towers, same seed, same outputs.
  for name, value in dr(feats).items():
    np.testing.assert_array_equal(value.numpy(), outputs[name].numpy(), err_msg=name)


def test_bad_hparams_are_one_line_errors(tiny):
  schema, _, _ = tiny
  with pytest.raises(ValueError, match=r"^escm2_variant must be one of \('ips', 'dr'\), got 'x'$"):
    models.build_model(MODEL, schema, escm2_variant="x")
  with pytest.raises(ValueError, match=r"^propensity_floor must be in \(0, 1\], got 0.0$"):
    models.build_model(MODEL, schema, propensity_floor=0.0)
  with pytest.raises(ValueError, match="^counterfactual_weight must be >= 0, got -1.0$"):
    models.build_model(MODEL, schema, counterfactual_weight=-1.0)
