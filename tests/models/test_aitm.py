"""Tests specific to AITM (every model's shared contract: test_every_model.py)."""

import multistep_testdata as td

import tafe_tf  # noqa: F401
from tafe_tf import models

MODEL = "aitm"


def test_calibrator_weight_defaults_to_the_reference(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_steps=2, num_train=32, num_test=8)
  model = models.build_model(MODEL, schema)
  assert model.get_config()["hparams"]["calibration_weight"] == 0.6
  assert model.dtl_loss.calibration_weight == 0.6
  assert [t.mode for t in model.transfers] == ["attention"]
  off = models.build_model(MODEL, schema, calibration_weight=0.0)
  assert off.dtl_loss.calibration_weight == 0.0
