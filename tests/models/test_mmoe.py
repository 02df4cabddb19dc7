"""Tests specific to MMoE (every model's shared contract: test_every_model.py)."""

import multistep_testdata as td
import numpy as np

import tafe_tf  # noqa: F401
from tafe_tf import models

MODEL = "mmoe"


def test_one_gate_per_step_over_all_experts(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_steps=3, num_train=32, num_test=8)
  feats, _ = td.first_batch(str(tmp_path), batch_size=16)
  model = models.build_model(MODEL, schema, num_experts=6, top_k=3, seed=0)
  gates = {k: v.numpy() for k, v in model.gate_weights(feats).items()}
  assert set(gates) == {f"level0/{s}" for s in schema.steps}
  for weights in gates.values():
    assert weights.shape == (16, 6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert (np.count_nonzero(weights, axis=-1) == 3).all()
