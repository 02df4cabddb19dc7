"""Serving latency and size of the exported SavedModel.

The library behind ``launch.benchmark_serving`` and the serving column of
``launch.benchmark``: :func:`export_and_time` exports a model with
:func:`tafe_tf.export.export_saved_model`, loads the export back with
``tf.saved_model.load`` and times its signatures per batch size (p50 / p99 /
mean milliseconds of one call, outputs fetched) on requests made of real test
rows (padded multi-valued fields for ``serving_default``, serialized
``tf.train.Example`` protos for ``serving_examples``). :func:`measure` adds
the model: trained briefly on synthetic data, or a trained model directory.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

from tafe_tf import config as config_lib
from tafe_tf import export, training
from tafe_tf import features as features_lib
from tafe_tf.benchmarks import timing
from tafe_tf.data import synthetic

SIGNATURES = (export.SERVING_DEFAULT, export.SERVING_EXAMPLES)


def export_and_time(
  model: tf.keras.Model,
  schema: features_lib.Schema,
  data_dir: str,
  export_dir: str,
  model_name: str,
  batch_sizes: Sequence[int],
  num_calls: int,
  warmup_calls: int,
  signatures: Sequence[str] = SIGNATURES,
) -> Dict[str, Any]:
  """Exports ``model`` under ``export_dir``, loads it back, times it.

  Args:
    model, schema: The trained model and its schema.
    data_dir: Dataset whose test rows make the requests.
    export_dir: Base directory of the export (a version folder goes in it).
    model_name: ``model_spec.name`` of the export's warm-up requests.
    batch_sizes: Rows per request.
    num_calls, warmup_calls: Timed calls per batch size and signature, after
      untimed ones.
    signatures: Signatures timed.

  Returns:
    ``export_path``, ``export_bytes`` (per part and ``total``),
    ``export_seconds``, ``load_seconds``, ``trainable_parameters`` and
    ``results``: per batch size and signature ``{"signature",
    "batch_size", "latency_ms", "rows_per_second"}``.

  Raises:
    FileNotFoundError: ``data_dir`` has no test split.
  """
  start = time.perf_counter()
  path = export.export_saved_model(model, schema, export_dir, model_name=model_name)
  export_seconds = time.perf_counter() - start
  start = time.perf_counter()
  loaded = tf.saved_model.load(path)
  load_seconds = time.perf_counter() - start
  rows: List[Dict[str, Any]] = []
  for batch_size in batch_sizes:
    inputs, serialized = timing.request_batches(data_dir, schema, batch_size)
    arguments = {export.SERVING_DEFAULT: inputs, export.SERVING_EXAMPLES: {"examples": serialized}}
    for signature in signatures:
      call = functools.partial(loaded.signatures[signature], **arguments[signature])
      ms = timing.latency_ms(call, num_calls, warmup_calls)
      rows.append(
        {
          "signature": signature,
          "batch_size": batch_size,
          "latency_ms": ms,
          "rows_per_second": batch_size / ms["mean"] * 1000.0,
        }
      )
  return {
    "export_path": path,
    "export_bytes": export.directory_size(path),
    "export_seconds": export_seconds,
    "load_seconds": load_seconds,
    "trainable_parameters": timing.trainable_parameters(model),
    "results": rows,
  }


def serving_default_latency(
  model: tf.keras.Model,
  schema: features_lib.Schema,
  data_dir: str,
  model_name: str,
  batch_sizes: Sequence[int],
  num_calls: int,
) -> Dict[str, Dict[str, float]]:
  """Batch size (a string) -> latency of ``serving_default``
  (:func:`export_and_time` into a temporary folder, 10 warm-up calls)."""
  export_dir = tempfile.mkdtemp(prefix="tafe_benchmark_export_")
  try:
    result = export_and_time(
      model,
      schema,
      data_dir,
      export_dir,
      model_name,
      batch_sizes,
      num_calls,
      warmup_calls=10,
      signatures=(export.SERVING_DEFAULT,),
    )
  finally:
    shutil.rmtree(export_dir, ignore_errors=True)
  return {str(r["batch_size"]): r["latency_ms"] for r in result["results"]}


def train_briefly(
  data_dir: str,
  model_dir: str,
  model: str,
  num_steps: int,
  train_steps: int,
  batch_size: int,
  hparams: Mapping[str, Any],
) -> tf.keras.Model:
  """Trains ``model`` for ``train_steps`` steps on synthetic data of
  ``num_steps`` steps in ``data_dir`` (written when missing).

  Raises:
    ValueError: ``data_dir`` holds another dataset, or a bad hyperparameter.
  """
  synthetic.ensure_dataset(
    data_dir,
    synthetic.SyntheticConfig(num_steps=num_steps, seed=0),
    num_train=train_steps * batch_size,
    num_validation=4096,
    num_test=4096,
  )
  config = config_lib.RunConfig.create(
    model,
    hparams=hparams,
    seed=0,
    epochs=1,
    batch_size=batch_size,
    steps_per_epoch=train_steps,
    verbose=0,
  )
  return training.train(data_dir, model_dir, config).model


def measure(
  model_dir: Optional[str],
  data_dir: str,
  model: str,
  batch_sizes: Sequence[int],
  num_calls: int,
  warmup_calls: int,
  export_dir: Optional[str] = None,
  num_steps: int = 2,
  train_steps: int = 50,
  train_batch_size: int = 512,
  hparams: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
  """:func:`export_and_time` of a trained ``model_dir``, or of ``model``
  trained briefly (:func:`train_briefly`) when ``model_dir`` is None.

  Args:
    model_dir: A trained model directory, or None.
    data_dir: The dataset of the requests (and of the brief training).
    model: Model name trained briefly (ignored with ``model_dir``).
    batch_sizes, num_calls, warmup_calls: See :func:`export_and_time`.
    export_dir: Keep the export here (default: a temporary folder, deleted;
      ``export_path`` is then None).
    num_steps, train_steps, train_batch_size, hparams: Of the brief training.

  Returns:
    :func:`export_and_time`'s result with the model, its settings and the
    machine (CPUs, load, versions).
  """
  work_dir = tempfile.mkdtemp(prefix="tafe_benchmark_serving_")
  try:
    if model_dir:
      trained = training.load_trained_model(model_dir)
      model = training.read_run_config(model_dir).model.name
      schema_dir = model_dir
    else:
      schema_dir = os.path.join(work_dir, "run")
      trained = train_briefly(
        data_dir, schema_dir, model, num_steps, train_steps, train_batch_size, hparams or {}
      )
    schema = training.model_dir_schema(schema_dir)
    result = export_and_time(
      trained,
      schema,
      data_dir,
      export_dir or os.path.join(work_dir, "export"),
      model,
      batch_sizes,
      num_calls,
      warmup_calls,
    )
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  result.update(
    model=model,
    model_dir=model_dir or None,
    hparams=trained.get_config()["hparams"],
    num_steps=len(schema.steps),
    data_dir=data_dir,
    num_calls=num_calls,
    warmup_calls=warmup_calls,
    cpu_count=os.cpu_count(),
    # Other processes share the CPUs; the load says how much.
    load_average_1min=os.getloadavg()[0],
    tensorflow=tf.__version__,
    python=platform.python_version(),
  )
  if not export_dir:
    result["export_path"] = None  # deleted with the work dir
  return result


def table(result: Mapping[str, Any]) -> str:
  """The model, the export's size and a row per signature and batch size."""
  size = result["export_bytes"]
  parts = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in sorted(size.items()) if k != "total")
  lines = [
    f"model {result['model']}, T = {result['num_steps']}, "
    f"{result['trainable_parameters']:,} trainable weights; "
    f"{result['cpu_count']} CPUs (load {result['load_average_1min']:.1f}), "
    f"TensorFlow {result['tensorflow']}",
    f"export {size['total'] / 1e6:.2f} MB ({parts}), written in "
    f"{result['export_seconds']:.1f} s, loaded in "
    f"{result['load_seconds']:.1f} s",
    f"{'signature':<18}{'batch':>7}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'rows/s':>12}",
  ]
  for r in result["results"]:
    ms = r["latency_ms"]
    lines.append(
      f"{r['signature']:<18}{r['batch_size']:>7d}"
      f"{ms['p50']:>10.3f}{ms['p99']:>10.3f}{ms['mean']:>10.3f}"
      f"{r['rows_per_second']:>12.0f}"
    )
  return "\n".join(lines)
