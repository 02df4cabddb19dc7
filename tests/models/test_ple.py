"""Tests specific to PLE (every model's shared contract: test_every_model.py)."""

import multistep_testdata as td
import numpy as np
import pytest

import tafe_tf  # noqa: F401
from tafe_tf import models

MODEL = "ple"


def test_cgc_levels_and_gates(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_steps=3, num_train=32, num_test=8)
  feats, _ = td.first_batch(str(tmp_path), batch_size=16)
  model = models.build_model(MODEL, schema, num_levels=3, num_experts=2, experts_per_task=2, seed=0)
  gates = {k: v.numpy() for k, v in model.gate_weights(feats).items()}
  expected = {f"level{l}/{s}" for l in range(3) for s in schema.steps}
  expected |= {"level0/shared", "level1/shared"}
  assert set(gates) == expected
  for name, weights in gates.items():
    width = 3 * 2 + 2 if name.endswith("shared") else 2 + 2
    assert weights.shape == (16, width), name
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="PLE needs num_levels >= 1 and experts_per_task >= 1"):
    models.build_model(MODEL, schema, experts_per_task=0)
