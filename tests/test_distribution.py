"""tafe_tf.distribution in one process: names, TF_CONFIG checks, precision,
XLA inputs, local clusters; jit, bfloat16 and float16 training vs float32."""

import json
import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import config as config_lib
from tafe_tf import distribution, input_pipeline, training
from tafe_tf import features as features_lib
from tafe_tf import models as models_lib
from tafe_tf.benchmarks import local_cluster
from tafe_tf.data import synthetic
from tafe_tf.layers import embedding as embedding_lib

TINY = dict(embedding_dim=4, tower_units=(8,), seed=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_dataset(
    out,
    synthetic.SyntheticConfig(seed=3),
    num_train=1500,
    num_validation=300,
    num_test=300,
    num_shards=2,
  )
  return out


def test_unknown_strategy_names_the_valid_ones():
  with pytest.raises(
    ValueError,
    match="unknown strategy 'nccl'; expected one "
    "of auto, one_device, mirrored, multi_worker, tpu, "
    "parameter_server",
  ):
    distribution.get_strategy("nccl")


@pytest.mark.parametrize(
  "name,needed", [("multi_worker", "worker"), ("parameter_server", "chief, worker, ps")]
)
def test_cluster_strategies_need_tf_config(monkeypatch, name, needed):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(
    ValueError, match=f"--strategy={name} needs TF_CONFIG with a cluster holding {needed} tasks"
  ):
    distribution.get_strategy(name)


def test_bad_tf_config_json_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", "{cluster: 1}")
  with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
    distribution.tf_config()


def test_parameter_server_strategy_refuses_a_worker_task(monkeypatch):
  monkeypatch.setenv(
    "TF_CONFIG",
    json.dumps(
      {
        "cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]},
        "task": {"type": "worker", "index": 0},
      }
    ),
  )
  with pytest.raises(ValueError, match="trains in the chief task only; this process is worker:0"):
    distribution.get_strategy("parameter_server")


def test_tf_config_json_names_this_task_in_the_cluster(monkeypatch):
  addresses = local_cluster.loopback_addresses(3)
  assert len(set(addresses)) == 3
  assert all(a.startswith("127.0.0.1:") for a in addresses)
  monkeypatch.setenv(
    "TF_CONFIG",
    local_cluster.tf_config_json({"worker": addresses[:2], "ps": addresses[2:]}, "ps", 0),
  )
  assert distribution.tf_config() == {
    "cluster": {"worker": addresses[:2], "ps": addresses[2:]},
    "task": {"type": "ps", "index": 0},
  }


# Prints "<index> <workers> <own address>" from the TF_CONFIG it was given;
# optionally exits with status 3 x index, or sleeps.
_WORKER = """
import json, os, sys, time
config = json.loads(os.environ["TF_CONFIG"])
index = config["task"]["index"]
print(index, len(config["cluster"]["worker"]),
      config["cluster"]["worker"][index], flush=True)
if sys.argv[1] == "fail":
  sys.exit(3 * index)
time.sleep(float(sys.argv[2]) if index == 0 else 0)
"""


def test_local_workers_each_get_their_task_and_a_log(tmp_path):
  logs = local_cluster.run_local_workers(
    [sys.executable, "-c", _WORKER, "ok", "0"], 2, timeout_s=60, log_dir=str(tmp_path)
  )
  lines = [log.split() for log in logs]
  assert [line[:2] for line in lines] == [["0", "2"], ["1", "2"]]
  assert lines[0][2] != lines[1][2]
  assert open(tmp_path / "worker-1.log").read() == logs[1]


def test_a_failed_local_worker_stops_the_others(tmp_path):
  start = time.monotonic()
  with pytest.raises(
    RuntimeError,
    match=r"worker 1 of 2 exited with status 3; "
    r".*worker-1\.log ends with:\n1 2 127\.0\.0\.1:",
  ):
    # Worker 0 would sleep 60 s: it is killed as soon as worker 1 fails.
    local_cluster.run_local_workers(
      [sys.executable, "-c", _WORKER, "fail", "60"], 2, timeout_s=120, log_dir=str(tmp_path)
    )
  assert time.monotonic() - start < 30


def test_local_workers_past_the_timeout_are_killed(tmp_path):
  start = time.monotonic()
  with pytest.raises(
    TimeoutError,
    match=r"worker\(s\) 0 of 2 still running "
    r"after 2 s \(killed\); .*worker-0\.log ends with:\n0 2 ",
  ):
    local_cluster.run_local_workers(
      [sys.executable, "-c", _WORKER, "ok", "60"], 2, timeout_s=2, log_dir=str(tmp_path)
    )
  assert time.monotonic() - start < 30


def test_auto_and_one_device_without_accelerators_is_the_default_strategy(monkeypatch):
  monkeypatch.delenv("TPU_NAME", raising=False)
  assert not distribution.tpu_resolvable()
  for name in ("auto", "one_device"):
    strategy = distribution.get_strategy(name)
    assert strategy is tf.distribute.get_strategy()
    assert distribution.worker_role(strategy) == distribution.WorkerRole("chief", 0, True)


def test_precision_policy_is_scoped_and_checked():
  before = tf.keras.mixed_precision.global_policy().name
  with distribution.precision_policy("mixed_bfloat16") as policy:
    assert policy.compute_dtype == "bfloat16"
    assert tf.keras.mixed_precision.global_policy().name == "mixed_bfloat16"
  assert tf.keras.mixed_precision.global_policy().name == before
  with pytest.raises(ValueError, match="unknown precision 'float8'"):
    with distribution.precision_policy("float8"):
      pass


def test_padded_length_bucket_is_the_next_power_of_two():
  lengths = tf.constant([0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 1000, 1024, 1025])
  np.testing.assert_array_equal(
    distribution.padded_length_bucket(lengths).numpy(),
    [1, 1, 2, 4, 4, 8, 8, 16, 16, 32, 1024, 1024, 2048],
  )


def _model(schema, name="esmm", **hparams):
  model = models_lib.build_model(name, schema, **{**TINY, **hparams})
  model(features_lib.dummy_batch(schema))
  return model


def test_compiled_step_inputs_give_the_outputs_of_raw_ids(data_dir):
  schema = features_lib.Schema.load(data_dir)
  model = _model(schema, "tafe", num_experts=2, expert_units=(8,))
  raw = next(
    iter(input_pipeline.make_dataset(data_dir, "train", 50, schema=schema, dense_padded=True))
  )
  prepared, _ = distribution.compiled_step_inputs(model, schema)(*raw)
  for f in schema.fields:
    if f.is_id:
      assert f.name not in prepared  # no raw ids (no lookups) left
      assert embedding_lib.ROWS_PREFIX + f.name in prepared
  for f in schema.fields_of(features_lib.FieldKind.WEIGHTED_IDS):
    length = prepared[embedding_lib.ROWS_PREFIX + f.name].shape[1]
    assert length & (length - 1) == 0  # a power of two
  expected, got = model(raw[0]), model(prepared)
  for key in expected:
    np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-5, atol=1e-7)


def test_lookup_rows_of_ragged_input_gives_identical_embeddings(data_dir):
  schema = features_lib.Schema.load(data_dir)
  layer = embedding_lib.FeatureEmbedding(schema, 8, seed=1)
  raw, _ = next(iter(input_pipeline.make_dataset(data_dir, "train", 40, schema=schema)))
  rows = layer.lookup_rows(raw)
  assert isinstance(rows[embedding_lib.ROWS_PREFIX + "hist_shop"], tf.RaggedTensor)
  np.testing.assert_array_equal(layer(rows).numpy(), layer(raw).numpy())


def test_compiled_step_inputs_reject_ragged_lists(data_dir):
  schema = features_lib.Schema.load(data_dir)
  model = _model(schema)
  raw = next(iter(input_pipeline.make_dataset(data_dir, "train", 8, schema=schema)))
  with pytest.raises(
    ValueError, match="field 'hist_category' is ragged; an XLA-compiled step needs padded lists"
  ):
    distribution.compiled_step_inputs(model, schema)(*raw)


def _train(data_dir, model_dir, **overrides):
  settings = dict(
    epochs=1,
    batch_size=64,
    shuffle=False,
    steps_per_epoch=12,
    learning_rate=1e-2,
    verbose=0,
    strategy="one_device",
  )
  config = config_lib.RunConfig.create("esmm", TINY, **dict(settings, **overrides))
  return training.train(data_dir, model_dir, config)


def _weights(result):
  return [w.numpy().astype(np.float64) for w in result.model.weights]


@pytest.fixture(scope="module")
def float32_run(data_dir, tmp_path_factory):
  return _train(data_dir, str(tmp_path_factory.mktemp("f32")))


@pytest.mark.slow  # long (multi-process or a full run); -m slow runs it
def test_jit_compiled_training_matches_float32(data_dir, float32_run, tmp_path):
  jit = _train(data_dir, str(tmp_path / "jit"), jit_compile=True)
  report = json.load(open(os.path.join(str(tmp_path / "jit"), training.TRAIN_REPORT_FILENAME)))
  assert report["jit_compile"] is True and report["optimizer_steps"] == 12
  # Same batches, same math; only the order of float additions differs.
  for a, b in zip(_weights(float32_run), _weights(jit)):
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
  assert not jit.model.jit_compile  # raw-id use after training stays eager


def test_mixed_bfloat16_training_matches_float32(data_dir, float32_run, tmp_path):
  bf16 = _train(data_dir, str(tmp_path / "bf16"), precision="mixed_bfloat16")
  assert bf16.model.embedding.compute_dtype == "bfloat16"
  outputs = bf16.model(features_lib.dummy_batch(bf16.schema))
  assert {v.dtype for v in outputs.values()} == {tf.float32}
  assert all(w.dtype == tf.float32 for w in bf16.model.weights)
  # bfloat16 keeps 8 bits of mantissa, and Adam turns tiny gradients of rare
  # embedding rows into full-size steps whose sign rounding can flip: compare
  # what the model predicts, not every weight.
  batch, _ = next(
    iter(input_pipeline.make_dataset(data_dir, "validation", 300, schema=bf16.schema))
  )
  expected, got = float32_run.model(batch), bf16.model(batch)
  for key in ("p_click", "p_purchase", "q_purchase"):
    np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=0.05, atol=0.01)
  assert abs(bf16.best_value - float32_run.best_value) < 0.02


def test_mixed_float16_training_on_cpu_matches_float32(data_dir, float32_run, tmp_path):
  f16 = _train(data_dir, str(tmp_path / "f16"), precision="mixed_float16")
  model = f16.model
  assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
  assert model.embedding.compute_dtype == "float16"  # really float16 layers
  assert all(w.dtype == tf.float32 for w in model.weights)
  # Dynamic loss scaling halves its scale (from 2^15) after every step with
  # non-finite gradients, which it skips: none was skipped.
  assert float(model.optimizer.loss_scale) == 2.0**15
  assert int(model.optimizer.iterations) == 12
  for name, values in f16.history.items():
    if "loss" in name:
      assert np.all(np.isfinite(values)), name
  batch, labels = next(
    iter(input_pipeline.make_dataset(data_dir, "validation", 300, schema=f16.schema))
  )
  outputs = model(batch)
  assert {v.dtype for v in outputs.values()} == {tf.float32}
  loss = model.compute_loss((batch, labels))
  assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
  # float16 keeps 11 bits of mantissa: measured differences after 12 steps
  # are at most 1.9e-4 absolute, 0.21% relative (best validation loss 1e-5
  # apart); the bounds leave ~5x room.
  expected = float32_run.model(batch)
  for key in ("p_click", "p_purchase", "q_purchase"):
    np.testing.assert_allclose(outputs[key].numpy(), expected[key].numpy(), rtol=0.01, atol=1e-3)
  assert abs(f16.best_value - float32_run.best_value) < 1e-3
