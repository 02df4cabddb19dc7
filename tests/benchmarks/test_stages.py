"""Tests of benchmarks/stages.py: the work each stage must do, the timers,
and the stage breakdown of a tiny model on synthetic data."""

import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import features as features_lib
from tafe_tf import models
from tafe_tf.benchmarks import stages, timing
from tafe_tf.data import synthetic

BATCH = 64


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("stages") / "synthetic")
  synthetic.ensure_dataset(out, synthetic.SyntheticConfig(num_steps=2, seed=0), 4 * BATCH, 0, 0)
  return out


def test_stage_work_counts_the_gathered_rows_and_every_variable(data_dir):
  schema = features_lib.Schema.load(data_dir)
  model = models.build_model("esmm", schema, embedding_dim=8, tower_units=[4], seed=0)
  features, _ = next(iter(timing.cached_batches(data_dir, BATCH, 1)))
  looked_up = model.preprocess(features)
  model(looked_up)
  work = stages.stage_work(model, looked_up, BATCH, forward_flops_per_example=100.0)
  # One 8-wide row per raw id (ragged lists included), plus the output.
  ids = 0
  for f in schema.fields:
    if f.is_id:
      value = features[f.name]
      ids += int(tf.size(value.flat_values if isinstance(value, tf.RaggedTensor) else value))
  gather = 4 * (8 * ids + BATCH * model.embedding.output_dim)
  assert work["embedding"] == {"bytes": gather}
  assert work["embedding_backward"] == {"bytes": 2 * gather}
  # Adam: variable and two moments, each read and written, 4 bytes each.
  tables = sum(int(np.prod(v.shape)) for v in model.embedding.tables.values())
  params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert work["update_tables"] == {"bytes": 24 * tables}
  assert work["update_dense"] == {"bytes": 24 * (params - tables)}
  assert 0 < tables < params
  assert work["dense"] == {"flops": 3 * 100.0 * BATCH}


def test_seconds_per_call_and_the_probes():
  assert stages.seconds_per_call(tf.function(lambda x: x * 2), [tf.ones([8])], 3, 2) > 0
  with pytest.raises(ValueError, match="calls and repeats must be >= 1"):
    stages.seconds_per_call(tf.function(lambda x: x), [tf.ones([1])], 0, 1)
  assert stages.memory_bandwidth(num_floats=1 << 20, repeats=2) > 1e8  # > 0.1 GB/s


@pytest.mark.slow  # ~30 s on 2 shared cores
def test_every_stage_is_timed_against_its_limit(data_dir):
  result = stages.measure(
    data_dir,
    "esmm",
    {"embedding_dim": 8, "tower_units": [4], "seed": 0},
    BATCH,
    calls=2,
    repeats=1,
    step_steps=2,
    input_seconds=0.2,
  )
  rows = {r["stage"]: r for r in result["stages"]}
  assert list(rows) == list(stages.STAGES)
  assert result["step_ms"] > 0 and result["call_overhead_ms"] > 0
  assert result["memory_bytes_per_second"] > 0 and result["matmul_flops_per_second"] > 0
  for name, r in rows.items():
    assert r["ms"] >= 0 and r["share"] == pytest.approx(r["ms"] / result["step_ms"])
    if name in stages.MEMORY_STAGES:
      assert r["limit"] == result["memory_bytes_per_second"] and r["bytes"] > 0
    elif name == "dense":
      assert r["limit"] == result["matmul_flops_per_second"] and r["flops"] > 0
    else:
      assert "limit" not in r
    if "limit" in r and r["ms"] > 0:
      unit = "bytes" if "bytes" in r else "flops"
      assert r["achieved"] == pytest.approx(r[unit] / (r["ms"] / 1000.0))
      assert r["fraction"] == pytest.approx(r["achieved"] / r["limit"])
  assert result["stages_ms"] == pytest.approx(sum(r["ms"] for n, r in rows.items() if n != "input"))
  assert "embedding_backward" in stages.table([result])
