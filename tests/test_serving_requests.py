"""Example serving requests: the exact JSON bodies launch.export writes, sent
to the exported signatures, answer what the model itself predicts."""

import json
import os
import re

import multistep_testdata as testdata
import numpy as np
import pytest
import tensorflow as tf
from cli_runner import ROOT, run_module

from tafe_tf import config as config_lib
from tafe_tf import serving_requests, training
from tafe_tf.data import convert
from tafe_tf.data.synthetic import config as synthetic_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A trained ESMM run, exported by launch.export with its request examples."""
  root = tmp_path_factory.mktemp("serving_requests")
  data_dir = str(root / "data")
  schema = testdata.make_dataset_dir(data_dir, num_train=64, num_test=16)
  testdata.write_split(data_dir, schema, "validation", testdata.random_rows(schema, 16, seed=3))
  model_dir = str(root / "run")
  training.train(
    data_dir,
    model_dir,
    config_lib.RunConfig.create(
      "esmm",
      hparams=dict(embedding_dim=4, tower_units=[4], seed=0),
      epochs=1,
      steps_per_epoch=2,
      batch_size=32,
      verbose=0,
    ),
  )
  export_dir = str(root / "export")
  result = run_module(
    "launch.export",
    f"--model_dir={model_dir}",
    f"--export_dir={export_dir}",
    "--version=1",
    "--write_request_examples",
  )
  assert result.returncode == 0, result.stderr
  requests = os.path.join(export_dir, "requests")
  assert result.stdout.split() == [
    os.path.join(export_dir, "1"),
    os.path.join(requests, "serving_default.json"),
    os.path.join(requests, "serving_examples.json"),
  ]
  assert sorted(os.listdir(export_dir)) == ["1", "requests"]
  bodies = {}
  for name in ("serving_default", "serving_examples"):
    with open(os.path.join(requests, f"{name}.json"), encoding="utf-8") as f:
      bodies[name] = json.load(f)
  model = training.load_trained_model(model_dir)
  return tf.saved_model.load(os.path.join(export_dir, "1")), bodies, model


def _send(loaded, body):
  signature = loaded.signatures[body["signature_name"]]
  outputs = signature(**serving_requests.body_tensors(body, signature))
  return {k: v.numpy() for k, v in outputs.items()}


def test_both_bodies_answer_the_models_own_probabilities(exported):
  loaded, bodies, model = exported
  features = serving_requests.body_tensors(
    bodies["serving_default"], loaded.signatures["serving_default"]
  )
  own = {k: v.numpy() for k, v in model(features, training=False).items()}
  by_features = _send(loaded, bodies["serving_default"])
  by_examples = _send(loaded, bodies["serving_examples"])
  assert set(by_features) == set(by_examples) == set(own)
  for name in ("p_click", "q_click", "p_cart", "q_cart"):
    assert by_features[name].shape == (2,)
    assert np.all((by_features[name] > 0) & (by_features[name] < 1)), name
    np.testing.assert_allclose(by_features[name], own[name], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(by_examples[name], own[name], rtol=1e-5, atol=1e-7)
  # Chained: p_cart = p_click * q_cart.
  np.testing.assert_allclose(
    by_features["p_cart"], by_features["p_click"] * by_features["q_cart"], rtol=1e-5
  )


def test_the_grpc_request_of_each_body_carries_the_same_tensors(exported):
  pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed")
  loaded, bodies, _ = exported
  for name, body in bodies.items():
    request = serving_requests.predict_request(body, "esmm")
    assert (request.model_spec.name, request.model_spec.signature_name) == ("esmm", name)
    signature = loaded.signatures[name]
    expected = serving_requests.body_tensors(body, signature)
    assert set(request.inputs) == set(expected)
    for key, proto in request.inputs.items():
      np.testing.assert_array_equal(tf.make_ndarray(proto), expected[key].numpy())
    sent = {
      k: tf.constant(tf.make_ndarray(v), dtype=expected[k].dtype) for k, v in request.inputs.items()
    }
    outputs = signature(**sent)
    for key, value in _send(loaded, body).items():
      np.testing.assert_array_equal(outputs[key].numpy(), value)


def _doc_bodies():
  """``(schema name, signature) -> body`` of each JSON block in docs/serving.md
  that follows a ``<!-- request: <schema> <signature> -->`` marker."""
  text = open(os.path.join(ROOT, "docs", "serving.md"), encoding="utf-8").read()
  found = re.findall(r"<!-- request: (\w+) (\w+) -->\n```json\n(.*?)\n```", text, re.S)
  return {(schema, signature): json.loads(block) for schema, signature, block in found}


def test_the_docs_show_the_generated_requests_of_both_schemas():
  schemas = {
    "synthetic": synthetic_config.synthetic_schema(synthetic_config.SyntheticConfig()),
    "ali_ccp": convert.build_schema(convert.FORMATS["ali_ccp"](), {}),
  }
  expected = {
    (name, signature): body
    for name, schema in schemas.items()
    for signature, body in serving_requests.rest_bodies(schema).items()
  }
  assert _doc_bodies() == expected
