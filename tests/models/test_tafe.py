"""Tests specific to TAFE (every model's shared contract: test_every_model.py)."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import models

MODEL = "tafe"


@pytest.fixture(name="tiny", scope="module")
def _tiny(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tiny"))
  schema = td.make_dataset_dir(directory, num_steps=3, num_train=64, num_test=8)
  feats, labels = td.first_batch(directory, batch_size=32)
  return schema, feats, labels


def test_gate_weights_per_level_and_step(tiny):
  schema, feats, _ = tiny
  model = models.build_model(
    MODEL, schema, num_levels=2, num_experts=5, experts_per_task=2, top_k=2, seed=0
  )
  gates = {k: v.numpy() for k, v in model.gate_weights(feats).items()}
  steps = schema.steps
  expected = {f"level{l}/{s}" for l in (0, 1) for s in steps}
  expected |= {f"level{l}/{s}/mix" for l in (0, 1) for s in steps}
  expected |= {"level0/shared"}
  assert set(gates) == expected
  for name, weights in gates.items():
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6, err_msg=name)
    if name.endswith("/mix"):
      assert weights.shape == (32, 3)  # 2 own experts + the shared one
    else:
      assert weights.shape == (32, 5)
      assert (np.count_nonzero(weights, axis=-1) == 2).all(), name
  # Sample-wise and task-aware: rows and steps use experts differently.
  assert not np.allclose(gates["level0/click"], gates["level0/cart"])
  assert not np.allclose(gates["level0/click"][0], gates["level0/click"][1])


SWITCHES = [
  dict(field_interaction=False),
  dict(transfer="attention"),
  dict(transfer="none"),
  dict(transfer_stop_gradient=True),
  dict(gated_towers=False),
  dict(experts_per_task=0),
  dict(task_indicators=False),
  dict(gate_units=()),
  dict(chained=False, calibration_weight=0.5),
  dict(conditional_weight=0.5, step_weights=(1.0, 2.0, 3.0)),
  dict(num_levels=3, top_k=1),
]


@pytest.mark.parametrize(
  "switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_every_switch_trains(tiny, switches):
  schema, feats, labels = tiny
  model = models.build_model(
    MODEL, schema, seed=1, embedding_dim=4, expert_units=(8,), tower_units=(4,), **switches
  )
  with tf.GradientTape() as tape:
    loss = model.compute_loss((feats, labels), training=True)
  grads = tape.gradient(loss, model.trainable_variables)
  assert np.isfinite(loss.numpy())
  assert all(g is not None for g in grads)
  assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
  td.check_output_contract(model, {k: v.numpy() for k, v in model(feats).items()})
  assert model.chained is switches.get("chained", True)


@pytest.mark.parametrize(
  "transfer, stop, reaches",
  [
    ("gated", False, True),
    ("attention", False, True),
    ("gated", True, False),
    ("none", False, False),
  ],
)
def test_transfer_carries_gradient_from_step_two_to_tower_one(tiny, transfer, stop, reaches):
  schema, feats, _ = tiny
  model = models.build_model(MODEL, schema, transfer=transfer, transfer_stop_gradient=stop, seed=0)
  model(feats)
  tower_one = model.towers[0].hidden.trainable_variables
  with tf.GradientTape() as tape:
    logit_two = tf.reduce_sum(model.step_logits(feats)[:, 1])
  grads = tape.gradient(logit_two, tower_one)
  # Step one's logit enters the stacked logits too, so its gradient is an
  # exact zero (not None) when nothing flows through the transfer.
  assert all((float(tf.reduce_sum(tf.abs(g))) > 0) == reaches for g in grads)


def test_invalid_switches(tiny):
  schema, _, _ = tiny
  with pytest.raises(ValueError, match="transfer must be one of"):
    models.build_model(MODEL, schema, transfer="concat")
  with pytest.raises(ValueError, match="TAFE needs num_levels >= 1"):
    models.build_model(MODEL, schema, num_levels=0)


def test_field_interaction_needs_one_width(tmp_path):
  schema = td.tiny_schema(str(tmp_path))
  with pytest.raises(ValueError, match=r"\['user'\] are not"):
    models.build_model(MODEL, schema, field_interaction=True, field_embedding_dims={"user": 4})
  models.build_model(MODEL, schema, field_interaction=True, field_embedding_dims={"user": 16})
