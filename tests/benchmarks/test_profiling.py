"""Tests of tafe_tf/profiling.py: an op-level profile of real fit steps."""

import multistep_testdata
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import input_pipeline, models
from tafe_tf.benchmarks import profiling


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("data"))
  schema = multistep_testdata.make_dataset_dir(data_dir, num_train=128)
  ds = input_pipeline.make_dataset(data_dir, "train", 32, drop_remainder=True, repeat=True)
  return schema, ds.take(2).cache().repeat()


def test_profile_of_a_training_step_names_its_matmuls_and_gathers(dataset):
  schema, ds = dataset
  model = models.build_model("esmm", schema, seed=0, tower_units=[16, 8])
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
  profile = profiling.profile_fit_steps(model, ds, steps=3, warmup=2)
  assert profile.steps == 3 and profile.step_ms > 0
  types = dict(profile.by_type)
  # The towers' matmuls (forward and gradient) and the embedding gather are
  # kernels of every ESMM train step.
  assert any("MatMul" in t for t in types), sorted(types)
  assert 0 < profile.matmul_ms < profile.kernel_ms
  assert profile.matmul_ms == pytest.approx(
    sum(ms for t, ms in types.items() if "MatMul" in t or "Einsum" in t)
  )
  assert any("Gather" in t for t in types), sorted(types)
  # Per-type and per-op totals are the same time, sorted largest first.
  assert np.isclose(sum(types.values()), profile.kernel_ms)
  assert np.isclose(sum(ms for _, _, ms in profile.by_op), profile.kernel_ms)
  op_ms = [ms for _, _, ms in profile.by_op]
  assert op_ms == sorted(op_ms, reverse=True)
  assert any(name.startswith("towers/") for name, _, _ in profile.by_op)
  top = profile.top_types(2)
  assert [r["type"] for r in top] == [t for t, _ in profile.by_type[:2]]
  assert sum(r["fraction"] for r in profile.top_types(len(types))) == (pytest.approx(1.0))
  text = profile.format(3)
  assert "kernel time" in text and profile.by_type[0][0] in text


def test_profile_needs_a_step(dataset):
  _, ds = dataset
  with pytest.raises(ValueError, match="steps must be >= 1"):
    profiling.profile_fit_steps(tf.keras.Sequential(), ds, steps=0)
