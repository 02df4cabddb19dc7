"""SavedModel export for TF Serving.

Layout written (TF Serving serves the highest numeric version)::

    EXPORT_DIR/<version>/saved_model.pb
    EXPORT_DIR/<version>/variables/...
    EXPORT_DIR/<version>/assets/...                       (vocabularies)
    EXPORT_DIR/<version>/assets.extra/tf_serving_warmup_requests

Signatures:

* ``serving_default``: raw features as dense tensors
  (:func:`tafe_tf.features.serving_input_signature`: ids int64 [batch],
  multi-valued ids int64 [batch, max_len] padded with -1 plus float32 weights
  [batch, max_len] (the weight of a -1 entry is ignored), dense float32
  [batch, dim]) -> float32 [batch] ``p_<step>`` and ``q_<step>`` (and ``ctr``,
  ``cvr``, ``ctcvr`` for two steps). Ids are raw: an id the model never saw
  lands on the out-of-vocabulary row, and a multi-valued field may be empty
  (``max_len`` 0, or only -1 entries).
* ``serving_examples``: ``examples``, serialized ``tf.train.Example`` [batch] in
  the dataset's own form (labels and metadata ignored) -> the same outputs.

A REST request to ``serving_default`` (``POST /v1/models/<name>:predict``),
one row, an empty history padded with -1::

    {"signature_name": "serving_default",
     "inputs": {"user": [3], "hist": [[-1]], "hist_weight": [[0.0]],
                "price": [[0.1, -0.4]], ...}}

and to ``serving_examples``:
``{"signature_name": "serving_examples", "inputs": {"examples": [{"b64":
"<base64 of a serialized tf.train.Example>"}]}}``.

The export is written into a temporary sibling directory (``.tmp-*``, a name TF
Serving ignores) and renamed into place last
(:func:`tafe_tf.files.atomic_directory`), so a failed export never leaves a
version directory behind; the staging directories of killed exports
(``.tmp-<version>-*``, no writer holding them) are removed by the next export
into the same directory. The export directory must be on a local file system
(the rename is what makes it atomic).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from tafe_tf import features as features_lib
from tafe_tf import files

SERVING_DEFAULT = "serving_default"
SERVING_EXAMPLES = "serving_examples"
EXAMPLES_KEY = "examples"
WARMUP_DIRNAME = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
# What follows files.STAGING_PREFIX in the name of a version being staged.
STAGING_NAME = r"\d+-"


class ServingFunctions:
  """The two serving functions of a trained model.

  Args:
    model: A multi-step model called on a features dict, returning named
      ``[batch]`` outputs.
    schema: The schema it was trained with.

  Attributes:
    serve_features: ``tf.function`` of the ``serving_default`` signature.
    serve_examples: ``tf.function`` of the ``serving_examples`` signature.
  """

  def __init__(self, model: tf.keras.Model, schema: features_lib.Schema):
    self.model = model
    self.schema = schema
    self.input_signature = features_lib.serving_input_signature(schema)
    self.serve_features = tf.function(self._serve_features, input_signature=[self.input_signature])
    self.serve_examples = tf.function(
      self._serve_examples, input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_KEY)]
    )

  def signatures(self) -> Dict[str, Any]:
    """``signature name -> concrete function`` (traces both functions)."""
    return {
      SERVING_DEFAULT: self.serve_features.get_concrete_function(),
      SERVING_EXAMPLES: self.serve_examples.get_concrete_function(),
    }

  def _outputs(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    outputs = self.model(dict(features), training=False)
    return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}

  def _checked(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """``features``, gated on checks that fail a request naming the inputs.

    Without them a client error (a field with fewer rows, weights of another
    width than their ids) fails deep inside the model with an anonymous shape
    error. The messages list the inputs in the order of the sizes the runtime
    prints after them.
    """
    keys = list(self.input_signature)
    # Two assert ops in all: one per input measurably slowed batch-1 calls.
    sizes = tf.stack([tf.shape(features[k], out_type=tf.int64)[0] for k in keys])
    checks = [
      tf.debugging.assert_equal(
        sizes,
        sizes[0],
        summarize=len(keys),
        message=f"inputs must have the same batch size; sizes in the order {', '.join(keys)}:",
      )
    ]
    weighted = self.schema.fields_of(features_lib.FieldKind.WEIGHTED_IDS)
    if weighted:
      checks.append(
        tf.debugging.assert_equal(
          tf.concat([tf.shape(features[f.name], out_type=tf.int64) for f in weighted], 0),
          tf.concat([tf.shape(features[f.weight_key], out_type=tf.int64) for f in weighted], 0),
          summarize=2 * len(weighted),
          message="multi-valued ids and their weights must have the same "
          "shape (one weight per id, padding included); shapes of "
          f"{', '.join(f.name for f in weighted)} vs "
          f"{', '.join(f.weight_key for f in weighted)}:",
        )
      )
    checks.append(self._values_check(features))
    # The model's ops depend on the checks, so none runs before they pass.
    with tf.control_dependencies(checks):
      return {k: tf.identity(v) for k, v in features.items()}

  def _values_check(self, features: Mapping[str, tf.Tensor]) -> tf.Operation:
    """Fails a request with NaN, +-inf or a magnitude above
    :data:`~tafe_tf.features.MAX_ABS_VALUE` in any dense value or weight
    (padding weights included); the message names the float inputs."""
    keys = [k for k, s in self.input_signature.items() if s.dtype == tf.float32]
    if not keys:
      return tf.no_op()
    values = tf.concat([tf.reshape(features[k], [-1]) for k in keys], 0)
    # is_finite first: abs(NaN) <= bound is False too, but say which it is.
    ok = tf.reduce_all(tf.math.is_finite(values) & (tf.abs(values) <= features_lib.MAX_ABS_VALUE))
    return tf.debugging.Assert(
      ok,
      [
        f"float inputs must be finite with magnitude <= "
        f"{features_lib.MAX_ABS_VALUE:g} (NaN, inf or a huge value in one of: "
        f"{', '.join(keys)})"
      ],
    )

  def _serve_features(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return self._outputs(self._checked(features))

  def _serve_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    spec = features_lib.tf_example_spec(self.schema, with_labels=False, with_metadata=False)
    parsed = tf.io.parse_example(examples, spec)
    dense = features_lib.to_dense_padded(parsed, self.schema)
    with tf.control_dependencies([self._values_check(dense)]):
      dense = {k: tf.identity(v) for k, v in dense.items()}
    return self._outputs(dense)


def next_version(export_dir: str) -> int:
  """Seconds since the epoch, or one more than the highest existing version.

  Versions must increase (TF Serving serves the highest), also for two
  exports within the same second.
  """
  now = int(time.time())
  return max([now] + [v + 1 for v in _versions(export_dir)])


def export_saved_model(
  model: tf.keras.Model,
  schema: features_lib.Schema,
  export_dir: str,
  version: Optional[int] = None,
  warmup_batch: Optional[Mapping[str, Any]] = None,
  model_name: str = "tafe",
) -> str:
  """Writes ``export_dir/<version>`` for TF Serving, atomically.

  Only what serving needs is written: the weights, the two signatures and the
  vocabularies (no optimizer state, no traced Keras layer functions).

  Args:
    model: A trained multi-step Keras model (called on a features dict).
    schema: The schema it was trained with.
    export_dir: Base directory of the servable's versions (created if needed).
    version: Version number >= 1; default: :func:`next_version`.
    warmup_batch: Features in the serving form (``serving_default``'s input
      names; arrays or nested lists, cast to the signature's dtypes) for the
      warm-up request; default: a two-row dummy batch.
    model_name: ``model_spec.name`` written into the warm-up request (TF
      Serving's ``--model_name``).

  Returns:
    The path of the version directory.

  Raises:
    FileExistsError: if the version already exists (versions are immutable),
      or if ``export_dir`` is a file.
    ValueError: on a version < 1 or a warm-up batch that does not match the
      signature.
  """
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise FileExistsError(f"export directory {export_dir} is a file")
  version = next_version(export_dir) if version is None else int(version)
  if version < 1:
    raise ValueError(f"export version must be >= 1, got {version}")
  final = os.path.join(export_dir, str(version))
  if os.path.exists(final):
    raise FileExistsError(f"export version {final} already exists")
  for path in files.remove_stale_staging(export_dir, STAGING_NAME):
    logging.warning("removed %s, left by an interrupted export", path)
  # Checked before anything is written: a bad warm-up batch fails fast.
  warmup_inputs = warmup_request_inputs(
    schema, warmup_batch if warmup_batch is not None else features_lib.dummy_batch(schema)
  )
  with files.atomic_directory(final) as staging:
    signatures = ServingFunctions(model, schema).signatures()
    # save_traces=False: TF Serving only runs the signatures; tracing every
    # Keras layer's call for Keras' own reloading would make the export several
    # times slower and the graph several times larger.
    model.save(
      staging,
      overwrite=True,
      save_format="tf",
      include_optimizer=False,
      save_traces=False,
      signatures=signatures,
    )
    write_warmup_requests(
      os.path.join(staging, WARMUP_DIRNAME, WARMUP_FILENAME), warmup_inputs, model_name=model_name
    )
  return final


def warmup_request_inputs(
  schema: features_lib.Schema, batch: Mapping[str, Any]
) -> Dict[str, np.ndarray]:
  """``batch`` as arrays of exactly ``serving_default``'s input dtypes.

  TF Serving replays the warm-up request against the signature when it loads
  the model, and a request whose keys or dtypes do not match (a float64 array,
  say) fails the load; so this checks keys and ranks and casts the dtypes.

  Args:
    schema: The model's schema.
    batch: ``input name -> array-like`` (tensors, arrays or nested lists).

  Returns:
    ``input name -> np.ndarray`` in the signature's dtypes.

  Raises:
    ValueError: naming missing or unknown inputs, or an input of the wrong rank
      or width.
  """
  spec = features_lib.serving_input_signature(schema)
  missing = sorted(set(spec) - set(batch))
  unknown = sorted(set(batch) - set(spec))
  if missing or unknown:
    raise ValueError(
      f"warm-up batch does not match {SERVING_DEFAULT}: missing "
      f"inputs {missing}, unknown inputs {unknown}"
    )
  out = {}
  for key, tensor_spec in spec.items():
    try:
      array = np.asarray(batch[key], dtype=tensor_spec.dtype.as_numpy_dtype)
    except (TypeError, ValueError) as e:  # e.g. rows of unequal length
      raise ValueError(
        f"warm-up input {key!r}: not an array of {tensor_spec.dtype.name}: {e}"
      ) from None
    if not tensor_spec.shape.is_compatible_with(array.shape):
      raise ValueError(
        f"warm-up input {key!r}: shape {list(array.shape)} does "
        f"not fit {tensor_spec.shape} of {SERVING_DEFAULT}"
      )
    out[key] = array
  return out


def write_warmup_requests(
  path: str, inputs: Mapping[str, np.ndarray], model_name: str, num_requests: int = 1
) -> None:
  """Writes TF Serving warm-up records: ``PredictionLog`` protos, one a record.

  Args:
    path: Usually ``<version>/assets.extra/tf_serving_warmup_requests``.
    inputs: ``input name -> array`` of one ``serving_default`` request, in the
      signature's dtypes (:func:`warmup_request_inputs`).
    model_name: ``model_spec.name`` of the request.
    num_requests: How many times the request is written (TF Serving replays
      each record once).
  """
  # The serving protos come with tensorflow-serving-api; imported here so that
  # training does not need that package.
  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

  # pylint: enable=g-import-not-at-top
  tf.io.gfile.makedirs(os.path.dirname(path))
  request = predict_pb2.PredictRequest(
    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SERVING_DEFAULT)
  )
  for key, value in inputs.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
  with tf.io.TFRecordWriter(path) as writer:
    for _ in range(num_requests):
      writer.write(log.SerializeToString())


def read_warmup_requests(path: str) -> List[Any]:
  """The ``PredictionLog`` records of a warm-up file, in order."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_log_pb2

  # pylint: enable=g-import-not-at-top
  logs = []
  for record in tf.data.TFRecordDataset(path):
    logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
  return logs


def _versions(export_dir: str) -> List[int]:
  """The numeric version directories under ``export_dir`` (none if absent)."""
  if not os.path.isdir(export_dir):
    return []
  return [
    int(d)
    for d in os.listdir(export_dir)
    if d.isdigit() and os.path.isdir(os.path.join(export_dir, d))
  ]


def latest_version(export_dir: str) -> str:
  """Path of the highest numeric version under ``export_dir``."""
  versions = _versions(export_dir)
  if not versions:
    raise FileNotFoundError(f"no exported version in {export_dir}")
  return os.path.join(export_dir, str(max(versions)))


def directory_size(path: str) -> Dict[str, int]:
  """Bytes of an export: ``total`` and per top-level entry (``variables``,
  ``saved_model.pb``, ``assets``, ...)."""
  sizes: Dict[str, int] = {}
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      top = os.path.relpath(full, path).split(os.sep)[0]
      sizes[top] = sizes.get(top, 0) + os.path.getsize(full)
  sizes["total"] = sum(sizes.values())
  return sizes
