"""Real strategies across devices and processes on localhost (subprocesses).

MirroredStrategy over 2 logical CPUs vs one device (same weights);
MultiWorkerMirroredStrategy with 2 worker processes: the logged metrics are
the global ones (those of one device on the same weights), the loss that of
one worker, a killed worker a bounded failure; ParameterServerStrategy with 1
chief, 2 ps and 1 worker (the embedding table sharded over both ps tasks).
Clusters run on loopback ports (tafe_tf.distribution's local-cluster helpers).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from cli_runner import ROOT, module_command, subprocess_env

from tafe_tf import export, input_pipeline, training
from tafe_tf import features as features_lib
from tafe_tf import models as models_lib
from tafe_tf.benchmarks import local_cluster
from tafe_tf.data import synthetic

TINY_HPARAMS = dict(embedding_dim=4, tower_units=(8,), seed=0)
TINY = [
  "--model=esmm",
  "--embedding_dim=4",
  "--tower_units=8",
  "--evaluate=false",
  "--export=false",
  "--learning_rate=0.01",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_dataset(
    out,
    synthetic.SyntheticConfig(seed=3),
    num_train=2000,
    num_validation=300,
    num_test=300,
    num_shards=2,
  )
  return out


_MIRRORED = r"""
import json, sys
import tafe_tf
from tafe_tf import config, distribution, training
distribution.split_cpu(2)
import numpy as np
data_dir, out = sys.argv[1], sys.argv[2]
runs = {}
for name, strategy, batch in (("one", "one_device", 64), ("mirrored", "mirrored", 32)):
  run = config.RunConfig.create(
      "esmm", hparams=dict(embedding_dim=4, tower_units=(8,), seed=0),
      epochs=1, batch_size=batch, strategy=strategy, shuffle=False,
      steps_per_epoch=10, learning_rate=1e-2, verbose=0)
  result = training.train(data_dir, f"{out}/{name}", run)
  runs[name] = result
diff = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in
           zip(runs["one"].model.weights, runs["mirrored"].model.weights))
print("RESULT " + json.dumps({
    "max_weight_diff": diff,
    "replicas": json.load(open(f"{out}/mirrored/train_report.json"))["num_replicas"],
    "history": {k: r.history for k, r in runs.items()}}))
"""


def _result(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  return json.loads(line[-1][len("RESULT ") :])


@pytest.mark.slow  # long (multi-process or a full run); -m slow runs it
def test_mirrored_on_two_cpus_gives_the_weights_of_one_device(data_dir, tmp_path):
  proc = subprocess.run(
    [sys.executable, "-c", _MIRRORED, data_dir, str(tmp_path)],
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  result = _result(proc)
  assert result["replicas"] == 2
  # 2 replicas x 32 = the one device's 64: the loss is averaged over the
  # global batch once (a double average would halve every gradient). Only
  # the order of float additions differs.
  assert result["max_weight_diff"] < 1e-5
  one, mirrored = result["history"]["one"], result["history"]["mirrored"]
  assert set(one) == set(mirrored)
  for key in one:  # metrics aggregate over both replicas
    np.testing.assert_allclose(mirrored[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)


def _validation_loss(model_dir, data_dir):
  """Exact mean DTL loss of a trained model over the validation split."""
  import tafe_tf  # noqa: F401  pylint: disable=g-import-not-at-top
  from tafe_tf import input_pipeline, losses, training  # pylint: disable=g-import-not-at-top

  model = training.load_trained_model(model_dir)
  total, count = 0.0, 0
  for features, labels in input_pipeline.make_dataset(data_dir, "validation", 100):
    y = losses.stack_labels(labels, model.steps)
    per_example = model.dtl_loss.per_example(y, model.step_logits(features))
    total += float(np.sum(per_example.numpy()))
    count += int(y.shape[0])
  return total / count


def _launch(flags, tf_config=None, log=None):
  env = subprocess_env(TF_CONFIG=tf_config) if tf_config else subprocess_env()
  return subprocess.Popen(
    module_command("launch.train", *flags),
    cwd=ROOT,
    env=env,
    stdout=log or subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
  )


def _run_two_workers(command, log_dir):
  return local_cluster.run_local_workers(
    command, 2, timeout_s=300, log_dir=str(log_dir), env=subprocess_env(), cwd=ROOT
  )


# Each worker trains 4 steps and validates, recording at every batch what the
# progress bar shows (the batch-end logs) next to the global metric values
# read across workers at that point (model.get_metrics_result(), as Keras
# does at epoch ends); the chief saves the weights.
_LOGGED_METRICS = r"""
import json, sys
import numpy as np
import tafe_tf
import tensorflow as tf
from tafe_tf import distribution, input_pipeline, training
from tafe_tf import features as features_lib
data_dir, out = sys.argv[1], sys.argv[2]
strategy = distribution.get_strategy("multi_worker")
schema = features_lib.Schema.load(data_dir)
tf.keras.utils.set_random_seed(0)
model = training.build_and_compile(
    "esmm", schema, dict(embedding_dim=4, tower_units=(8,), seed=0,
                         train_metrics=False), 1e-2, strategy)

class Logged(tf.keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.batches = []
  def _record(self, kind, logs):
    state = self.model.get_metrics_result()
    self.batches.append({"kind": kind,
                         "logged": {k: float(v) for k, v in logs.items()},
                         "global": {k: float(state[k]) for k in logs}})
  def on_train_batch_end(self, batch, logs=None):
    self._record("train", logs)
  def on_test_batch_end(self, batch, logs=None):
    self._record("test", logs)

logged = Logged()
history = model.fit(
    input_pipeline.make_dataset(data_dir, "train", 64, schema=schema,
                                repeat=True),
    validation_data=input_pipeline.make_dataset(data_dir, "validation", 64,
                                                schema=schema),
    epochs=1, steps_per_epoch=4, verbose=0, callbacks=[logged])
role = distribution.worker_role(strategy)
if role.is_chief:
  np.savez(f"{out}/weights.npz", *model.get_weights())
with open(f"{out}/worker-{role.task_id}.json", "w") as f:
  json.dump({"batches": logged.batches,
             "epoch": {k: v[-1] for k, v in history.history.items()}}, f)
"""


def _one_device_evaluation(data_dir, weights_path):
  """evaluate() of the chief's weights on the whole validation split."""
  schema = features_lib.Schema.load(data_dir)
  model = models_lib.build_model("esmm", schema, **TINY_HPARAMS)
  model(features_lib.dummy_batch(schema))
  saved = np.load(weights_path)
  model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
  model.compile()
  return model.evaluate(
    input_pipeline.make_dataset(data_dir, "validation", 64, schema=schema),
    return_dict=True,
    verbose=0,
  )


@pytest.mark.slow  # long (multi-process or a full run); -m slow runs it
def test_two_workers_log_the_global_metrics(data_dir, tmp_path):
  _run_two_workers(
    [sys.executable, "-c", _LOGGED_METRICS, data_dir, str(tmp_path)], tmp_path / "logs"
  )
  workers = [json.load(open(tmp_path / f"worker-{i}.json")) for i in range(2)]
  for worker in workers:
    kinds = [b["kind"] for b in worker["batches"]]
    assert kinds.count("train") == 4 and kinds.count("test") >= 2
    for b in worker["batches"]:
      # Keras' default reduction summed the workers' copies: 2x every value.
      for name, value in b["logged"].items():
        assert value == pytest.approx(b["global"][name], rel=1e-6), (
          b["kind"],
          name,
          value,
          b["global"][name],
        )
    assert worker["epoch"] == workers[0]["epoch"]
  epoch = workers[0]["epoch"]
  # Without training-time step metrics the epoch's training losses are the
  # last step's logs (Keras recomputes them only when every metric is logged).
  last_train = [b for b in workers[0]["batches"] if b["kind"] == "train"][-1]
  for name in ("loss", "total_loss"):
    assert epoch[name] == pytest.approx(last_train["global"][name], rel=1e-6)
  # The validation split of both workers (one file each) is the whole split
  # one device evaluates: same thresholded AUC counts (exact), same loss and
  # logloss sums up to float32 addition order.
  expected = _one_device_evaluation(data_dir, tmp_path / "weights.npz")
  for step in ("click", "purchase"):
    auc = epoch[f"val_auc/{step}"]
    assert 0.0 <= auc <= 1.0
    assert auc == pytest.approx(expected[f"auc/{step}"], abs=1e-6)
    for name in (f"logloss/{step}", f"pcoc/{step}"):
      assert epoch[f"val_{name}"] == pytest.approx(expected[name], rel=1e-5)
  assert epoch["val_auc_conditional/purchase"] == pytest.approx(
    expected["auc_conditional/purchase"], abs=1e-6
  )
  assert epoch["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)


@pytest.mark.slow
def test_two_workers_train_to_the_loss_of_one(data_dir, tmp_path):
  common = [
    f"--data_dir={data_dir}",
    "--dataset=tfrecord",
    "--epochs=1",
    "--steps_per_epoch=20",
    "--shuffle=false",
    *TINY,
  ]
  _run_two_workers(
    module_command(
      "launch.train",
      *common,
      "--strategy=multi_worker",
      "--batch_size=32",
      f"--model_dir={tmp_path}/two",
    ),
    tmp_path / "logs",
  )
  single = _launch(
    [*common, "--strategy=one_device", "--batch_size=64", f"--model_dir={tmp_path}/one"]
  )
  assert single.wait(timeout=300) == 0
  report = json.load(open(f"{tmp_path}/two/train_report.json"))
  assert report["num_replicas"] == 2 and report["global_batch_size"] == 64
  assert report["optimizer_steps"] == 20
  two = _validation_loss(f"{tmp_path}/two", data_dir)
  one = _validation_loss(f"{tmp_path}/one", data_dir)
  # Same global batch and steps; the workers read one file each (auto-shard
  # by file), so batches hold other examples than the single worker's.
  assert abs(two - one) < 0.03, (two, one)


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_instead_of_hanging(data_dir, tmp_path):
  cluster = {"worker": local_cluster.loopback_addresses(2)}
  flags = [
    f"--data_dir={data_dir}",
    "--dataset=tfrecord",
    "--epochs=1",
    "--steps_per_epoch=100000",
    "--strategy=multi_worker",
    "--batch_size=16",
    f"--model_dir={tmp_path}/run",
    *TINY,
  ]
  logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
  workers = [
    _launch(flags, local_cluster.tf_config_json(cluster, "worker", i), logs[i]) for i in range(2)
  ]
  try:
    deadline = time.time() + 240
    # Kill worker 1 once both are training (the progress log shows steps).
    while time.time() < deadline and "loss:" not in open(tmp_path / "worker0.log").read():
      assert workers[0].poll() is None, open(tmp_path / "worker0.log").read()
      time.sleep(0.5)
    os.kill(workers[1].pid, signal.SIGKILL)
    killed_at = time.time()
    code = workers[0].wait(timeout=200)
    waited = time.time() - killed_at
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  assert code != 0
  log = open(tmp_path / "worker0.log").read()
  assert any(
    m in log for m in ("UnavailableError", "DeadlineExceeded", "CancelledError", "peer")
  ), log[-2000:]
  assert waited < 200


_PS_CHIEF = r"""
import json, sys
import tafe_tf
from tafe_tf import config as config_lib, training
data_dir, model_dir = sys.argv[1], sys.argv[2]
config = config_lib.RunConfig.create(
    "esmm", hparams=dict(embedding_dim=4, tower_units=(8,), seed=0),
    epochs=1, batch_size=32, strategy="parameter_server", steps_per_epoch=10,
    verbose=0, min_shard_bytes=64)
result = training.train(data_dir, model_dir, config)
table = result.model.embedding.tables["table_d4"]
print("RESULT " + json.dumps({
    "shards": [[v.device, list(v.shape)] for v in table.variables],
    "shape": list(table.shape), "best_value": result.best_value,
    "steps": int(result.model.optimizer.iterations.numpy())}))
"""


@pytest.mark.slow
def test_parameter_server_shards_the_embedding_over_both_ps(data_dir, tmp_path):
  chief, worker, *ps = local_cluster.loopback_addresses(4)
  cluster = {"chief": [chief], "worker": [worker], "ps": ps}
  serve_flags = [
    f"--data_dir={data_dir}",
    "--dataset=tfrecord",
    "--strategy=parameter_server",
    *TINY,
  ]
  servers = [
    _launch(serve_flags, local_cluster.tf_config_json(cluster, t, i))
    for t, n in (("worker", 1), ("ps", 2))
    for i in range(n)
  ]
  try:
    proc = subprocess.run(
      [sys.executable, "-c", _PS_CHIEF, data_dir, str(tmp_path / "run")],
      cwd=ROOT,
      env=subprocess_env(TF_CONFIG=local_cluster.tf_config_json(cluster, "chief", 0)),
      capture_output=True,
      text=True,
      timeout=400,
    )
  finally:
    for s in servers:
      s.kill()
      s.wait(timeout=30)
  result = _result(proc)
  devices = sorted(d for d, _ in result["shards"])
  assert devices == [
    "/job:ps/replica:0/task:0/device:CPU:0",
    "/job:ps/replica:0/task:1/device:CPU:0",
  ]
  assert sum(s[0] for _, s in result["shards"]) == result["shape"][0]
  assert result["steps"] == 10 and np.isfinite(result["best_value"])


@pytest.mark.slow
def test_two_workers_train_evaluate_and_export_at_the_defaults(data_dir, tmp_path):
  # Before: the non-chief exited after fit, then the chief's export ran a
  # collective (CollectiveReduceV2) and died with UnavailableError.
  model_dir = str(tmp_path / "run")
  flags = [
    f"--data_dir={data_dir}",
    "--dataset=tfrecord",
    "--epochs=2",
    "--steps_per_epoch=5",
    "--model=esmm",
    "--embedding_dim=4",
    "--tower_units=8",
    "--strategy=multi_worker",
    "--batch_size=32",
    f"--model_dir={model_dir}",
  ]
  logs = _run_two_workers(module_command("launch.train", *flags), tmp_path / "logs")
  assert "SavedModel for TF Serving" in logs[0], logs[0][-3000:]
  assert json.load(open(f"{model_dir}/train_report.json"))["num_replicas"] == 2
  assert json.load(open(f"{model_dir}/eval/test.json"))["num_examples"] == 300
  assert not os.path.exists(f"{model_dir}/backup")
  version = export.latest_version(f"{model_dir}/export")
  served = tf.saved_model.load(version).signatures[export.SERVING_EXAMPLES]
  records = [
    r.numpy()
    for r in tf.data.TFRecordDataset(
      input_pipeline.list_split_files(data_dir, "test")[:1], compression_type="GZIP"
    ).take(8)
  ]
  outputs = served(examples=tf.constant(records))
  # The export holds the kept (best) epoch's weights, as launch.export's would.
  model = training.load_trained_model(model_dir)
  schema = training.model_dir_schema(model_dir)
  parsed = tf.io.parse_example(
    tf.constant(records), features_lib.tf_example_spec(schema, with_metadata=False)
  )
  expected = model(features_lib.split_labels(parsed, schema)[0], training=False)
  for step in schema.steps:
    np.testing.assert_allclose(
      outputs[f"p_{step}"].numpy(), expected[f"p_{step}"].numpy(), rtol=1e-5, atol=1e-6
    )
