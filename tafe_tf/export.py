"""SavedModel export for TF Serving.

Layout written (TF Serving serves the highest numeric version)::

    EXPORT_DIR/<version>/saved_model.pb
    EXPORT_DIR/<version>/variables/...
    EXPORT_DIR/<version>/assets/...                       (vocabularies)
    EXPORT_DIR/<version>/assets.extra/tf_serving_warmup_requests

Signatures:

* ``serving_default``: raw features as dense tensors
  (:func:`tafe_tf.features.serving_input_signature`: ids int64 [batch], multi-valued
  ids int64 [batch, max_len] padded with -1 plus float32 weights, dense float32
  [batch, dim]) -> float32 [batch] ``p_<step>`` and ``q_<step>`` (and ``ctr``,
  ``cvr``, ``ctcvr`` for two steps).
* ``serving_examples``: ``examples``, serialized ``tf.train.Example`` [batch] in
  the dataset's own form (labels not needed) -> the same outputs.

The export is written into a temporary sibling directory and renamed into place
last, so a failed export never leaves a version directory that TF Serving would
load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Dict, Mapping, Optional

import numpy as np
import tafe_tf  # noqa: F401
import tensorflow as tf

from tafe_tf import features as features_lib

SERVING_DEFAULT = "serving_default"
SERVING_EXAMPLES = "serving_examples"
WARMUP_FILENAME = "tf_serving_warmup_requests"


class ServingModule(tf.Module):
  """Wraps a trained model with the two serving functions."""

  def __init__(self, model: tf.keras.Model, schema: features_lib.Schema):
    super().__init__(name="tafe_serving")
    self.model = model
    self._schema = schema
    self.serve_features = tf.function(
        self._serve_features,
        input_signature=[features_lib.serving_input_signature(schema)])
    self.serve_examples = tf.function(
        self._serve_examples,
        input_signature=[tf.TensorSpec([None], tf.string, name="examples")])

  def _outputs(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    outputs = self.model(dict(features), training=False)
    return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}

  def _serve_features(self, features: Dict[str, tf.Tensor]
                      ) -> Dict[str, tf.Tensor]:
    return self._outputs(features)

  def _serve_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    spec = features_lib.tf_example_spec(self._schema, with_labels=False,
                                        with_metadata=False)
    parsed = tf.io.parse_example(examples, spec)
    return self._outputs(features_lib.to_dense_padded(parsed, self._schema))


def export_saved_model(model: tf.keras.Model,
                       schema: features_lib.Schema,
                       export_dir: str,
                       version: Optional[int] = None,
                       warmup_batch: Optional[Mapping[str, np.ndarray]] = None,
                       model_name: str = "tafe") -> str:
  """Writes ``export_dir/<version>`` for TF Serving; returns that path.

  Args:
    model: A trained multi-step model (called on a features dict).
    schema: The schema it was trained with.
    export_dir: Base directory of the servable's versions.
    version: Version number; default: seconds since the epoch (increasing).
    warmup_batch: Features in the serving form for the warm-up request;
      default: a small dummy batch.
    model_name: ``model_spec.name`` written into the warm-up requests.

  Raises:
    FileExistsError: if the version already exists (versions are immutable).
  """
  version = int(version if version is not None else time.time())
  final = os.path.join(export_dir, str(version))
  if tf.io.gfile.exists(final):
    raise FileExistsError(f"export version {final} already exists")
  tf.io.gfile.makedirs(export_dir)
  staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
  try:
    module = ServingModule(model, schema)
    signatures = {
        SERVING_DEFAULT: module.serve_features.get_concrete_function(),
        SERVING_EXAMPLES: module.serve_examples.get_concrete_function(),
    }
    tf.saved_model.save(module, staging, signatures=signatures)
    batch = warmup_batch if warmup_batch is not None else {
        k: v.numpy() for k, v in features_lib.dummy_batch(schema).items()}
    write_warmup_requests(os.path.join(staging, "assets.extra", WARMUP_FILENAME),
                          batch, model_name=model_name)
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


def write_warmup_requests(path: str, batch: Mapping[str, np.ndarray],
                          model_name: str, num_requests: int = 1) -> None:
  """Writes TF Serving warm-up ``PredictionLog`` records for one batch."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import model_pb2
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_log_pb2
  # pylint: enable=g-import-not-at-top
  tf.io.gfile.makedirs(os.path.dirname(path))
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name,
                                     signature_name=SERVING_DEFAULT))
  for key, value in batch.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
  log = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))
  with tf.io.TFRecordWriter(path) as writer:
    for _ in range(num_requests):
      writer.write(log.SerializeToString())


def latest_version(export_dir: str) -> str:
  """Path of the highest numeric version under ``export_dir``."""
  versions = [int(d) for d in tf.io.gfile.listdir(export_dir)
              if d.strip("/").isdigit()]
  if not versions:
    raise FileNotFoundError(f"no exported version in {export_dir}")
  return os.path.join(export_dir, str(max(versions)))
