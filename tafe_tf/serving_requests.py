"""Example TF Serving requests of a schema: REST bodies and gRPC requests.

:func:`example_rows` makes two rows in ``serving_default``'s form from the
schema alone (ids the model knows where the schema has a vocabulary, an empty
list padded with -1 in the second row, small dense values);
:func:`rest_bodies` turns them into the JSON bodies of ``POST
/v1/models/<name>:predict`` for both signatures of :mod:`tafe_tf.export`
(``serving_examples`` gets the same rows as base64 ``tf.train.Example``), and
:func:`write_request_examples` writes those files next to an export
(``launch.export --write_request_examples``). :func:`predict_request` makes
the gRPC ``PredictRequest`` of a body (needs ``tensorflow-serving-api``);
:func:`body_tensors` reads a body back as the tensors a signature takes, as
TF Serving's REST API does. docs/serving.md shows the result for the synthetic
and the Ali-CCP schemas.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Dict, List, Mapping

import numpy as np
import tensorflow as tf

from tafe_tf import example_codec, export, files
from tafe_tf import features as features_lib

REQUESTS_DIRNAME = "requests"
NUM_ROWS = 2
_FieldKind = features_lib.FieldKind


def _known_ids(schema: features_lib.Schema, spec: features_lib.FieldSpec, n: int) -> List[int]:
  """``n`` raw ids of ``spec`` that its lookup keeps in range: the first
  vocabulary lines (when the file is at hand), else 1, 2, ... modulo num_ids."""
  if spec.lookup == features_lib.LookupKind.VOCABULARY and spec.num_ids > 0:
    path = schema.vocabulary_path(spec)
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        head = [line.strip() for _, line in zip(range(n), f)]
      if len(head) == n and all(h.lstrip("-").isdigit() for h in head):
        return [int(h) for h in head]
  return [(1 + i) % spec.num_ids if spec.num_ids else 1 + i for i in range(n)]


def example_rows(schema: features_lib.Schema) -> Dict[str, np.ndarray]:
  """Two rows in ``serving_default``'s form (:func:`tafe_tf.features
  .serving_input_signature`): the first with two ids in every list, the
  second with an empty list (one -1 padding entry, its weight ignored)."""
  rows: Dict[str, np.ndarray] = {}
  for spec in schema.fields:
    if spec.kind == _FieldKind.ID:
      rows[spec.name] = np.asarray(_known_ids(schema, spec, NUM_ROWS), np.int64)
    elif spec.kind == _FieldKind.WEIGHTED_IDS:
      first, second = _known_ids(schema, spec, 2)
      rows[spec.name] = np.asarray([[first, second], [features_lib.PAD_ID] * 2], np.int64)
      rows[spec.weight_key] = np.asarray([[1.0, 0.5], [0.0, 0.0]], np.float32)
    else:
      values = np.linspace(-0.5, 0.5, NUM_ROWS * spec.dim, dtype=np.float32)
      rows[spec.name] = np.round(values, 3).reshape(NUM_ROWS, spec.dim)
  return rows


def serialized_examples(schema: features_lib.Schema, rows: Mapping[str, np.ndarray]) -> List[bytes]:
  """The rows of :func:`example_rows` as ``tf.train.Example`` bytes in the
  dataset's form (features only; padding dropped from lists)."""
  encoder = example_codec.ExampleEncoder(schema)
  out = []
  for i in range(len(rows[schema.fields[0].name])):
    values: Dict[str, Any] = {}
    for spec in schema.fields:
      if spec.kind == _FieldKind.ID:
        values[spec.name] = int(rows[spec.name][i])
      elif spec.kind == _FieldKind.WEIGHTED_IDS:
        ids, weights = rows[spec.name][i], rows[spec.weight_key][i]
        keep = ids != features_lib.PAD_ID
        values[spec.name] = ([int(v) for v in ids[keep]], [float(w) for w in weights[keep]])
      else:
        values[spec.name] = [float(v) for v in rows[spec.name][i]]
    out.append(encoder.example(encoder.encode_fields(values, schema.field_names)))
  return out


def rest_bodies(schema: features_lib.Schema) -> Dict[str, Dict[str, Any]]:
  """``signature name -> JSON body`` of a REST predict request (columnar
  ``inputs``) for both exported signatures, on the same rows."""
  rows = example_rows(schema)
  return {
    export.SERVING_DEFAULT: {
      "signature_name": export.SERVING_DEFAULT,
      "inputs": {k: _json_values(v) for k, v in rows.items()},
    },
    export.SERVING_EXAMPLES: {
      "signature_name": export.SERVING_EXAMPLES,
      "inputs": {
        export.EXAMPLES_KEY: [
          {"b64": base64.b64encode(e).decode("ascii")} for e in serialized_examples(schema, rows)
        ]
      },
    },
  }


def _json_values(array: np.ndarray) -> Any:
  """Nested lists; float32 values as the shortest decimals that round back
  to them (0.167, not 0.16699999570846558)."""
  if array.dtype == np.float32:
    return (
      [_json_values(row) for row in array]
      if array.ndim > 1
      else [float(np.format_float_positional(v, unique=True)) for v in array]
    )
  return array.tolist()


def body_tensors(body: Mapping[str, Any], signature: Any) -> Dict[str, tf.Tensor]:
  """A REST body's ``inputs`` as tensors of ``signature``'s dtypes
  (``{"b64": ...}`` decoded), as TF Serving's REST API reads them."""
  specs = signature.structured_input_signature[1]
  out = {}
  for name, value in body["inputs"].items():
    if specs[name].dtype == tf.string:
      value = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in value]
    out[name] = tf.constant(value, dtype=specs[name].dtype)
  return out


def predict_request(body: Mapping[str, Any], model_name: str) -> Any:
  """The gRPC ``tensorflow.serving.PredictRequest`` of a REST body.

  Needs ``tensorflow-serving-api`` (imported here: training and export do not).
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import model_pb2, predict_pb2

  # pylint: enable=g-import-not-at-top
  request = predict_pb2.PredictRequest(
    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=body["signature_name"])
  )
  for name, value in body["inputs"].items():
    if name == export.EXAMPLES_KEY:
      value = np.asarray([base64.b64decode(v["b64"]) for v in value], dtype=object)
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return request


def write_request_examples(export_dir: str, schema: features_lib.Schema) -> List[str]:
  """Writes ``EXPORT_DIR/requests/<signature>.json``, the REST bodies of
  :func:`rest_bodies`, atomically (TF Serving ignores a folder whose name is
  not a number); returns their paths."""
  paths = []
  for signature, body in rest_bodies(schema).items():
    path = os.path.join(export_dir, REQUESTS_DIRNAME, f"{signature}.json")
    files.write_json_atomic(path, body, sort_keys=False)
    paths.append(path)
  return paths
