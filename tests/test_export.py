"""SavedModel export: signatures, numbers, raw ids, warm-up file, atomicity.

Tiny models (4-wide embeddings, a few eager train steps) on the tiny schema of
``tests/multistep_testdata.py``: identity, vocabulary and hash ids, a weighted
multi-valued field and a dense field.
"""

import contextlib
import os
import re
import subprocess
import sys
import time
from typing import Dict

import multistep_testdata as testdata
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import example_codec, export, models
from tafe_tf import features as features_lib

TINY_HPARAMS = dict(embedding_dim=4, num_experts=2, expert_units=(8,), tower_units=(4,), seed=1)
TWO_STEP_OUTPUTS = {"p_click", "q_click", "p_cart", "q_cart", "ctr", "cvr", "ctcvr"}
THREE_STEP_OUTPUTS = {"p_click", "q_click", "p_cart", "q_cart", "p_purchase", "q_purchase"}
# (model, steps) of every export the tests use; built on first use.
CASES = {"tafe": ("tafe", 2), "mmoe": ("mmoe", 2), "tafe_3_steps": ("tafe", 3)}
OTHER_MODELS = ("esmm", "ple", "aitm", "shared_bottom")


class Batch:
  """One batch of rows in the three forms the model sees."""

  def __init__(self, schema: features_lib.Schema, rows):
    self.serialized = [
      example_codec.make_example(schema, f, l).SerializeToString() for f, l, _ in rows
    ]
    parsed = tf.io.parse_example(
      tf.constant(self.serialized), features_lib.tf_example_spec(schema, with_metadata=False)
    )
    self.ragged, self.labels = features_lib.split_labels(parsed, schema)
    self.padded = features_lib.to_dense_padded(self.ragged, schema)


class Exported:
  """A trained tiny model, its schema, a batch and its export."""

  def __init__(self, root: str, name: str, num_steps: int):
    self.schema = testdata.tiny_schema(os.path.join(root, "schema"), num_steps)
    train = Batch(self.schema, testdata.random_rows(self.schema, 64, seed=1))
    self.batch = Batch(self.schema, testdata.random_rows(self.schema, 32, seed=2))
    self.model = models.build_model(name, self.schema, **testdata.hparams_for(name, **TINY_HPARAMS))
    # Eager: three steps cost less than tracing a train step.
    self.model.compile(optimizer=tf.keras.optimizers.Adam(0.05), run_eagerly=True)
    self.model.fit(tf.data.Dataset.from_tensors((train.padded, train.labels)).repeat(3), verbose=0)
    self.path = export.export_saved_model(
      self.model, self.schema, os.path.join(root, "export"), version=1, model_name=f"tiny_{name}"
    )

  def keras(self, features) -> Dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in self.model(features).items()}


class Exports:
  """Builds each export once per module: a :data:`CASES` key, or a model
  name (two steps)."""

  def __init__(self, factory):
    self._factory = factory
    self._built = {}

  def get(self, case: str) -> Exported:
    if case not in self._built:
      name, steps = CASES.get(case, (case, 2))
      self._built[case] = Exported(str(self._factory.mktemp(case)), name, steps)
    return self._built[case]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  return Exports(tmp_path_factory)


def _assert_outputs_equal(actual, expected, atol=1e-6):
  assert set(actual) == set(expected)
  for key in expected:
    np.testing.assert_allclose(
      np.asarray(actual[key]), expected[key], rtol=0, atol=atol, err_msg=key
    )


def _numpy(outputs):
  return {k: v.numpy() for k, v in outputs.items()}


def _cli_env():
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return env


def _saved_model_cli(*args: str) -> subprocess.Popen:
  """Starts ``saved_model_cli`` (seconds of TensorFlow import each)."""
  return subprocess.Popen(
    [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=_cli_env(),
  )


def _stdout(proc: subprocess.Popen) -> str:
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-3000:]
  return out


def _parse_show_all(text: str):
  """``saved_model_cli show --all`` -> ``{signature: {inputs, outputs,
  method}}`` with ``inputs``/``outputs`` as ``key -> (dtype, shape)``."""
  signatures = {}
  for block in re.split(r"^signature_def\['", text, flags=re.M)[1:]:
    name, body = block.split("']:", 1)
    entry = {"inputs": {}, "outputs": {}, "method": None}
    for kind, key, dtype, shape in re.findall(
      r"(inputs|outputs)\['([^']+)'\] tensor_info:\s*dtype: (\w+)\s*"
      r"shape: (\([^)]*\)|unknown_rank)",
      body,
    ):
      entry[kind][key] = (dtype, shape)
    method = re.search(r"Method name is: (\S*)", body)
    entry["method"] = method.group(1) if method else None
    signatures[name] = entry
  return signatures


@contextlib.contextmanager
def _vocabulary_moved_away(schema: features_lib.Schema):
  """Moves the schema's vocabulary file aside while the block runs."""
  path = schema.vocabulary_path(schema.field("item"))
  aside = path + ".moved"
  os.rename(path, aside)
  try:
    yield
  finally:
    os.rename(aside, path)


# --- signatures -----------------------------------------------------------


@pytest.fixture(scope="module")
def cli_runs(exports, tmp_path_factory):
  """``saved_model_cli show --all`` and ``run`` on the tafe export, both at
  once, in fresh processes that cannot see the original vocabulary (the
  export must carry its own copy).

  Returns ``(show stdout, run inputs, run output dir)``.
  """
  exported = exports.get("tafe")
  work = tmp_path_factory.mktemp("saved_model_cli")
  inputs = {k: v.numpy() for k, v in exported.batch.padded.items()}
  npz = str(work / "inputs.npz")
  np.savez(npz, **inputs)
  outdir = str(work / "outputs")
  with _vocabulary_moved_away(exported.schema):
    show = _saved_model_cli("show", "--dir", exported.path, "--all")
    run = _saved_model_cli(
      "run",
      "--dir",
      exported.path,
      "--tag_set",
      "serve",
      "--signature_def",
      "serving_default",
      "--inputs",
      ";".join(f"{k}={npz}[{k}]" for k in inputs),
      "--outdir",
      outdir,
    )
    shown = _stdout(show)
    _stdout(run)
  return shown, inputs, outdir


def test_saved_model_cli_shows_both_signatures_with_dtypes_and_shapes(cli_runs):
  shown = _parse_show_all(cli_runs[0])
  assert set(shown) == {"__saved_model_init_op", export.SERVING_DEFAULT, export.SERVING_EXAMPLES}
  outputs = {key: ("DT_FLOAT", "(-1)") for key in TWO_STEP_OUTPUTS}
  assert shown["serving_default"] == {
    "inputs": {
      "user": ("DT_INT64", "(-1)"),
      "item": ("DT_INT64", "(-1)"),
      "shop": ("DT_INT64", "(-1)"),
      "hist": ("DT_INT64", "(-1, -1)"),
      "hist_weight": ("DT_FLOAT", "(-1, -1)"),
      "price": ("DT_FLOAT", "(-1, 2)"),
    },
    "outputs": outputs,
    "method": "tensorflow/serving/predict",
  }
  assert shown["serving_examples"] == {
    "inputs": {"examples": ("DT_STRING", "(-1)")},
    "outputs": outputs,
    "method": "tensorflow/serving/predict",
  }


def test_saved_model_cli_run_gives_the_keras_numbers_without_the_vocabulary(exports, cli_runs):
  exported = exports.get("tafe")
  _, inputs, outdir = cli_runs
  expected = exported.keras(inputs)
  served = {k: np.load(os.path.join(outdir, f"{k}.npy")) for k in expected}
  # Known and unseen item ids both, so the equality covers the vocabulary
  # lookup (a missing or wrong vocabulary would move the known ones to OOV).
  known = np.isin(inputs["item"], testdata.VOCABULARY)
  assert known.any() and not known.all()
  _assert_outputs_equal(served, expected)


# --- numbers ---------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_loaded_signatures_give_the_keras_numbers(exports, case):
  exported = exports.get(case)
  loaded = tf.saved_model.load(exported.path)
  expected = exported.keras(exported.batch.padded)
  _assert_outputs_equal(exported.keras(exported.batch.ragged), expected)
  from_features = _numpy(loaded.signatures[export.SERVING_DEFAULT](**exported.batch.padded))
  from_examples = _numpy(
    loaded.signatures[export.SERVING_EXAMPLES](examples=tf.constant(exported.batch.serialized))
  )
  _assert_outputs_equal(from_features, expected)
  _assert_outputs_equal(from_examples, expected)
  steps = exported.schema.steps
  assert set(expected) == (TWO_STEP_OUTPUTS if len(steps) == 2 else THREE_STEP_OUTPUTS)
  for key, value in from_features.items():
    assert value.dtype == np.float32 and value.shape == (32,), key
    assert np.all((value >= 0) & (value <= 1)), key
  if len(steps) == 2:
    np.testing.assert_array_equal(from_features["ctr"], from_features["p_click"])
    np.testing.assert_array_equal(from_features["cvr"], from_features["q_cart"])
    np.testing.assert_array_equal(from_features["ctcvr"], from_features["p_cart"])
  if exported.model.chained:
    for prev, step in zip(steps, steps[1:]):
      assert np.all(from_features[f"p_{step}"] <= from_features[f"p_{prev}"])
      np.testing.assert_allclose(
        from_features[f"p_{step}"],
        from_features[f"p_{prev}"] * from_features[f"q_{step}"],
        rtol=1e-5,
      )


@pytest.mark.parametrize("name", OTHER_MODELS)
def test_every_other_model_exports_with_the_keras_numbers(exports, name):
  exported = exports.get(name)
  loaded = tf.saved_model.load(exported.path)
  expected = exported.keras(exported.batch.padded)
  _assert_outputs_equal(
    _numpy(loaded.signatures[export.SERVING_DEFAULT](**exported.batch.padded)), expected
  )
  _assert_outputs_equal(
    _numpy(
      loaded.signatures[export.SERVING_EXAMPLES](examples=tf.constant(exported.batch.serialized))
    ),
    expected,
  )


def test_vocabulary_travels_as_an_asset(exports):
  exported = exports.get("tafe")
  with open(os.path.join(exported.path, "assets", "item.txt")) as f:
    assert [int(line) for line in f] == testdata.VOCABULARY
  expected = exported.keras(exported.batch.padded)
  with _vocabulary_moved_away(exported.schema):
    loaded = tf.saved_model.load(exported.path)
    served = _numpy(loaded.signatures[export.SERVING_DEFAULT](**exported.batch.padded))
  _assert_outputs_equal(served, expected)


def test_unseen_ids_and_empty_multi_valued_fields_are_served(exports):
  exported = exports.get("tafe")
  serve = tf.saved_model.load(exported.path).signatures[export.SERVING_DEFAULT]
  known_item = testdata.VOCABULARY[0]
  price = [[0.3, -0.2]] * 3
  # Row 0: ids the model never saw, history padded with -1 (weights ignored).
  # Row 1: the missing-id marker -1 everywhere: the same OOV rows.
  # Row 2: known ids.
  features = {
    "user": tf.constant([10**12, -1, 3], tf.int64),
    "item": tf.constant([999_999, -1, known_item], tf.int64),
    "shop": tf.constant([77, 77, 77], tf.int64),
    "hist": tf.constant([[-1, -1], [-1, -1], [5, 7]], tf.int64),
    "hist_weight": tf.constant([[0.0, 0.0], [3.0, 0.5], [1.0, 2.0]]),
    "price": tf.constant(price, tf.float32),
  }
  served = _numpy(serve(**features))
  _assert_outputs_equal(served, exported.keras(features))
  for key, value in served.items():
    assert np.all(np.isfinite(value)) and np.all((value > 0) & (value < 1)), key
    np.testing.assert_allclose(value[0], value[1], rtol=0, atol=1e-7, err_msg=key)
  assert abs(served["ctr"][2] - served["ctr"][0]) > 1e-5

  # An empty history as a zero-width tensor (gRPC can carry [batch, 0]).
  empty = dict(
    features,
    user=features["user"][:2],
    item=features["item"][:2],
    shop=features["shop"][:2],
    price=features["price"][:2],
    hist=tf.zeros([2, 0], tf.int64),
    hist_weight=tf.zeros([2, 0], tf.float32),
  )
  _assert_outputs_equal(_numpy(serve(**empty)), {k: v[:2] for k, v in served.items()}, atol=1e-7)

  # The same row as a serialized example with no history at all.
  example = example_codec.make_example(
    exported.schema,
    {"user": 10**12, "item": 999_999, "shop": 77, "hist": ([], []), "price": price[0]},
    {"click": 0, "cart": 0},
  ).SerializeToString()
  from_example = _numpy(
    tf.saved_model.load(exported.path).signatures[export.SERVING_EXAMPLES](
      examples=tf.constant([example])
    )
  )
  _assert_outputs_equal(from_example, {k: v[:1] for k, v in served.items()}, atol=1e-7)


def test_inconsistent_request_is_rejected_naming_the_inputs(exports):
  exported = exports.get("tafe")
  serve = tf.saved_model.load(exported.path).signatures[export.SERVING_DEFAULT]
  good = {k: v[:2] for k, v in exported.batch.padded.items()}
  width = good["hist"].shape[1]
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    serve(**dict(good, hist_weight=good["hist_weight"][:, :0]))
  assert re.search(
    r"multi-valued ids and their weights must have the same shape \(one "
    r"weight per id, padding included\); shapes of hist vs hist_weight:.*"
    rf"\[2 {width}\].*\[2 0\]",
    e.value.message,
  ), e.value.message
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    serve(**dict(good, user=tf.constant([1, 2, 3], tf.int64)))
  assert re.search(
    r"inputs must have the same batch size; sizes in the order user, item, "
    r"shop, hist, hist_weight, price:.*\[3 2 2 2 2 2\]",
    e.value.message,
  ), e.value.message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e30])
@pytest.mark.parametrize("key", ["price", "hist_weight"])
def test_non_finite_or_huge_values_are_rejected_in_both_signatures(exports, key, bad):
  # Without the check these answered a plausible constant (p_click 0.49).
  exported = exports.get("tafe")
  loaded = tf.saved_model.load(exported.path)
  good = {k: v[:2].numpy() for k, v in exported.batch.padded.items()}
  poisoned = dict(good)
  poisoned[key] = good[key].copy()
  poisoned[key][1, 0] = bad
  message = (
    r"float inputs must be finite with magnitude <= 1e\+09 \(NaN, "
    r"inf or a huge value in one of: hist_weight, price\)"
  )
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures[export.SERVING_DEFAULT](**{k: tf.constant(v) for k, v in poisoned.items()})
  # The same value inside a serialized example.
  values = {
    "user": 1,
    "item": 2,
    "shop": 3,
    "hist": ([4], [1.0]),
    "price": [0.5] * good["price"].shape[1],
  }
  if key == "price":
    values["price"] = [bad] + values["price"][1:]
  else:
    values["hist"] = ([4], [bad])
  example = example_codec.make_example(exported.schema, values, {"click": 0, "cart": 0})
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures[export.SERVING_EXAMPLES](examples=tf.constant([example.SerializeToString()]))
  # Finite values at the bound are served.
  poisoned[key][1, 0] = 1e9
  out = loaded.signatures[export.SERVING_DEFAULT](
    **{k: tf.constant(v) for k, v in poisoned.items()}
  )
  assert np.isfinite(out["p_click"].numpy()).all()


# --- warm-up requests ------------------------------------------------------


def test_warmup_file_parses_back_as_prediction_logs(exports):
  exported = exports.get("tafe")
  logs = export.read_warmup_requests(
    os.path.join(exported.path, "assets.extra", "tf_serving_warmup_requests")
  )
  assert len(logs) == 1
  request = logs[0].predict_log.request
  assert request.model_spec.name == "tiny_tafe"
  assert request.model_spec.signature_name == "serving_default"
  spec = features_lib.serving_input_signature(exported.schema)
  assert set(request.inputs) == set(spec)
  inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
  for key, tensor_spec in spec.items():
    assert request.inputs[key].dtype == tensor_spec.dtype.as_datatype_enum, key
    assert inputs[key].shape[0] == 2, key
  # Replaying the request (what TF Serving does on load) serves it.
  serve = tf.saved_model.load(exported.path).signatures[export.SERVING_DEFAULT]
  _assert_outputs_equal(_numpy(serve(**inputs)), exported.keras(inputs))


def test_warmup_batch_is_cast_to_the_signature_dtypes(exports, tmp_path):
  exported = exports.get("mmoe")
  batch = {
    "user": [1, 60],
    "item": [testdata.VOCABULARY[3], 5],
    "shop": [4, 9],
    "hist": [[2, -1], [-1, -1]],
    "hist_weight": [[1, 0], [0, 0]],  # ints
    "price": np.array([[0.5, 1.5], [2.0, -1.0]]),
  }  # float64
  path = export.export_saved_model(
    exported.model,
    exported.schema,
    str(tmp_path / "export"),
    version=3,
    warmup_batch=batch,
    model_name="m",
  )
  logs = export.read_warmup_requests(
    os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
  )
  request = logs[0].predict_log.request
  assert request.inputs["price"].dtype == tf.float32.as_datatype_enum
  assert request.inputs["hist_weight"].dtype == tf.float32.as_datatype_enum
  assert request.inputs["user"].dtype == tf.int64.as_datatype_enum
  np.testing.assert_array_equal(tf.make_ndarray(request.inputs["hist"]), [[2, -1], [-1, -1]])


@pytest.mark.parametrize(
  "change,message",
  [
    (
      dict(price=None),
      "warm-up batch does not match serving_default: missing inputs ['price'], unknown inputs []",
    ),
    (
      dict(extra=[1, 2]),
      "warm-up batch does not match serving_default: missing inputs [], unknown inputs ['extra']",
    ),
    (
      dict(hist=[1, 2]),
      "warm-up input 'hist': shape [2] does not fit (None, None) of serving_default",
    ),
    (
      dict(price=[[1.0], [2.0]]),
      "warm-up input 'price': shape [2, 1] does not fit (None, 2) of serving_default",
    ),
    (dict(hist=[[1, 2], [3]]), "warm-up input 'hist': not an array of int64"),
  ],
)
def test_bad_warmup_batch_is_refused(exports, change, message):
  exported = exports.get("tafe")
  batch = {k: v.numpy() for k, v in features_lib.dummy_batch(exported.schema).items()}
  for key, value in change.items():
    if value is None:
      del batch[key]
    else:
      batch[key] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    export.warmup_request_inputs(exported.schema, batch)


# --- versions and atomicity ------------------------------------------------


class _FailingModel(tf.keras.Model):
  """Raises when called, so the export fails while tracing the signatures."""

  def call(self, features, training=False):
    raise RuntimeError("model call failed on purpose")


class _FailsAfterSaving(tf.keras.Model):
  """A working model whose ``save`` fails after writing the SavedModel (a
  full disk, say), so the export fails with a half-written directory."""

  def __init__(self):
    super().__init__()
    self.dense = tf.keras.layers.Dense(2)
    self.written = None

  def call(self, features, training=False):
    p = tf.sigmoid(self.dense(features["price"]))
    return {"p_click": p[:, 0], "p_cart": p[:, 0] * p[:, 1]}

  def save(self, filepath, **kwargs):  # pylint: disable=arguments-differ
    super().save(filepath, **kwargs)
    self.written = sorted(os.listdir(filepath))
    raise OSError("disk full on purpose")


def test_failed_export_leaves_no_version_nor_temporary_directory(exports, tmp_path):
  schema = exports.get("tafe").schema
  export_dir = str(tmp_path / "export")
  with pytest.raises(RuntimeError, match="model call failed on purpose"):
    export.export_saved_model(_FailingModel(), schema, export_dir, version=5)
  assert os.listdir(export_dir) == []
  model = _FailsAfterSaving()
  with pytest.raises(OSError, match="disk full on purpose"):
    export.export_saved_model(model, schema, export_dir, version=5)
  assert "saved_model.pb" in model.written and "variables" in model.written
  assert os.listdir(export_dir) == []
  # A bad warm-up batch is refused before anything is written.
  batch = {k: v for k, v in features_lib.dummy_batch(schema).items() if k != "price"}
  with pytest.raises(ValueError, match=r"missing inputs \['price'\]"):
    export.export_saved_model(
      exports.get("tafe").model, schema, str(tmp_path / "other"), version=5, warmup_batch=batch
    )
  assert not os.path.exists(tmp_path / "other")


def test_existing_version_is_refused_and_left_alone(exports):
  exported = exports.get("tafe")
  export_dir = os.path.dirname(exported.path)
  before = sorted(os.listdir(exported.path))
  with pytest.raises(
    FileExistsError, match=f"export version {re.escape(exported.path)} already exists"
  ):
    export.export_saved_model(exported.model, exported.schema, export_dir, version=1)
  assert sorted(os.listdir(exported.path)) == before
  assert os.listdir(export_dir) == ["1"]


def test_export_dir_that_is_a_file_is_refused(exports, tmp_path):
  exported = exports.get("tafe")
  path = tmp_path / "export"
  path.write_text("not a directory")
  with pytest.raises(FileExistsError, match=f"export directory {re.escape(str(path))} is a file"):
    export.export_saved_model(exported.model, exported.schema, str(path))


def test_default_versions_increase_and_latest_is_the_highest(exports, tmp_path):
  export_dir = str(tmp_path / "export")
  with pytest.raises(FileNotFoundError, match="no exported version in"):
    export.latest_version(export_dir)
  os.makedirs(export_dir)
  now = export.next_version(export_dir)
  assert abs(now - time.time()) < 5
  # A version from the future (a clock set ahead), a staging leftover and a
  # stray folder: the next version goes past the highest number only.
  for name in ("7", "99999999999", ".tmp-123-abc", "notes"):
    os.makedirs(os.path.join(export_dir, name))
  assert export.next_version(export_dir) == 100000000000
  exported = exports.get("mmoe")
  path = export.export_saved_model(exported.model, exported.schema, export_dir)
  assert path == os.path.join(export_dir, "100000000000")
  assert export.latest_version(export_dir) == path
  assert export.next_version(export_dir) == 100000000001
  with pytest.raises(ValueError, match="export version must be >= 1, got 0"):
    export.export_saved_model(exported.model, exported.schema, export_dir, version=0)


def test_export_holds_no_optimizer_state(exports):
  exported = exports.get("tafe")
  reader = tf.train.load_checkpoint(os.path.join(exported.path, "variables", "variables"))
  names = list(reader.get_variable_to_shape_map())
  assert not [n for n in names if "optimizer" in n]
  sizes = export.directory_size(exported.path)
  assert sizes["total"] == sum(v for k, v in sizes.items() if k != "total")
  assert sizes["variables"] > 0 and sizes["saved_model.pb"] > 0
  assert sizes["assets"] == os.path.getsize(os.path.join(exported.path, "assets", "item.txt"))
