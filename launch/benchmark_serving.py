r"""Serving latency and size of the exported SavedModel.

Trains a model briefly on the built-in synthetic data (or loads a trained
``--model_dir``), exports it with :func:`tafe_tf.export.export_saved_model`,
loads the export back with ``tf.saved_model.load`` and times its signatures
per batch size: p50 / p99 / mean milliseconds of one call (outputs fetched)
over ``--num_calls`` calls after ``--warmup_calls`` untimed ones, on requests
made of real test rows (padded multi-valued fields for ``serving_default``,
serialized ``tf.train.Example`` protos for ``serving_examples``). Also the
size of the export, per part.

    python -m launch.benchmark_serving --model=tafe --batch_sizes=1,64,1024 \
        --output=/tmp/benchmark_serving.json

Prints a table and writes the numbers as JSON to ``--output``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from absl import flags
import numpy as np
import tensorflow as tf

from tafe_tf.data import synthetic
from tafe_tf import config as config_lib
from tafe_tf import export
from tafe_tf import features as features_lib
from tafe_tf import models as models_lib
from tafe_tf.benchmarks import timing
from tafe_tf import training

from tafe_tf.launch import common
from tafe_tf import files

_MODEL = flags.DEFINE_enum("model", "tafe", list(models_lib.MODEL_NAMES),
                           "Model to train briefly (ignored with --model_dir).")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "", "A trained model directory (launch.train) to export "
    "instead of training one.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "Dataset whose test rows make the requests. With "
    "--model_dir: default its training data. Without: where the synthetic "
    "data is generated (default: a folder under the system temp dir).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64", "1024"],
                                 "Rows per request.")
_NUM_CALLS = flags.DEFINE_integer("num_calls", 200, "Timed calls per batch "
                                  "size and signature.", lower_bound=1)
_WARMUP_CALLS = flags.DEFINE_integer("warmup_calls", 20, "Untimed calls "
                                     "first.", lower_bound=0)
_NUM_STEPS = flags.DEFINE_integer("num_steps", 2, "Steps of the synthetic "
                                  "funnel.", lower_bound=2, upper_bound=4)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 50, "Optimizer steps of "
                                    "the brief training.", lower_bound=1)
_TRAIN_BATCH_SIZE = flags.DEFINE_integer("train_batch_size", 512, "Batch size "
                                         "of the brief training.",
                                         lower_bound=1)
_HPARAMS = flags.DEFINE_string("hparams", "{}", "JSON of model "
                               "hyperparameters for the brief training.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", "", "Keep the export here "
                                  "(default: a temporary folder, deleted).")
_OUTPUT = flags.DEFINE_string("output", "", "Write the results as JSON here.")

SIGNATURES = (export.SERVING_DEFAULT, export.SERVING_EXAMPLES)


def request_batches(data_dir: str, schema: features_lib.Schema,
                    batch_size: int) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
  """:func:`tafe_tf.benchmarks.timing.request_batches`, a missing split as a UserError."""
  try:
    return timing.request_batches(data_dir, schema, batch_size)
  except FileNotFoundError as e:
    raise common.UserError(f"--data_dir: {e}") from None


def train_briefly(model_dir: str) -> Tuple[tf.keras.Model, str]:
  """Trains ``--model`` on synthetic data; returns ``(model, data_dir)``."""
  data_dir = _DATA_DIR.value or os.path.join(
      tempfile.gettempdir(),
      f"tafe_benchmark_serving_synthetic_t{_NUM_STEPS.value}")
  rows = _TRAIN_STEPS.value * _TRAIN_BATCH_SIZE.value
  try:
    synthetic.ensure_dataset(
        data_dir, synthetic.SyntheticConfig(num_steps=_NUM_STEPS.value,
                                            seed=0),
        num_train=rows, num_validation=4096, num_test=4096)
  except ValueError as e:  # e.g. --data_dir holds another dataset
    raise common.UserError(f"--data_dir={data_dir}: {e}") from None
  try:
    hparams = json.loads(_HPARAMS.value)
  except json.JSONDecodeError as e:
    raise common.UserError(f"--hparams: not JSON: {e}") from None
  try:
    config = config_lib.RunConfig.create(
        _MODEL.value, hparams=hparams, epochs=1,
        batch_size=_TRAIN_BATCH_SIZE.value,
        steps_per_epoch=_TRAIN_STEPS.value, verbose=0)
    result = training.train(data_dir, model_dir, config)
  except ValueError as e:  # e.g. an unknown hyperparameter
    raise common.UserError(str(e)) from None
  return result.model, data_dir


def load_model_dir(model_dir: str) -> Tuple[tf.keras.Model, str, str]:
  """``(model, model name, data dir)`` of a trained ``--model_dir``."""
  common.require_model_dir(model_dir)
  run = training.read_run_config(model_dir)
  data_dir = _DATA_DIR.value or run.data.data_dir
  if not os.path.isdir(data_dir):
    raise common.UserError(
        f"--data_dir={data_dir}: no such directory (the test rows of the "
        "model's dataset make the requests; pass --data_dir)")
  try:
    model = training.load_trained_model(model_dir)
  except FileNotFoundError as e:
    raise common.UserError(str(e)) from None
  return model, run.model.name, data_dir


def benchmark(model: tf.keras.Model, schema: features_lib.Schema,
              data_dir: str, export_dir: str, model_name: str,
              batch_sizes: Sequence[int]) -> Dict[str, Any]:
  """Exports ``model``, loads it back and times both signatures."""
  start = time.perf_counter()
  path = export.export_saved_model(model, schema, export_dir,
                                   model_name=model_name)
  export_seconds = time.perf_counter() - start
  start = time.perf_counter()
  loaded = tf.saved_model.load(path)
  load_seconds = time.perf_counter() - start
  rows: List[Dict[str, Any]] = []
  serve_features = loaded.signatures[export.SERVING_DEFAULT]
  serve_examples = loaded.signatures[export.SERVING_EXAMPLES]
  for batch_size in batch_sizes:
    inputs, serialized = request_batches(data_dir, schema, batch_size)
    calls = {
        export.SERVING_DEFAULT: functools.partial(serve_features, **inputs),
        export.SERVING_EXAMPLES: functools.partial(serve_examples,
                                                   examples=serialized),
    }
    for signature in SIGNATURES:
      ms = timing.latency_ms(calls[signature], _NUM_CALLS.value, _WARMUP_CALLS.value)
      rows.append({"signature": signature, "batch_size": batch_size,
                   "latency_ms": ms,
                   "rows_per_second": batch_size / ms["mean"] * 1000.0})
  return {
      "export_path": path,
      "export_bytes": export.directory_size(path),
      "export_seconds": export_seconds,
      "load_seconds": load_seconds,
      "trainable_parameters": int(sum(int(np.prod(v.shape))
                                      for v in model.trainable_weights)),
      "results": rows,
  }


def print_table(result: Mapping[str, Any]) -> None:
  size = result["export_bytes"]
  parts = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in sorted(size.items())
                    if k != "total")
  print(f"model {result['model']}, T = {result['num_steps']}, "
        f"{result['trainable_parameters']:,} trainable weights; "
        f"{result['cpu_count']} CPUs (load {result['load_average_1min']:.1f}), "
        f"TensorFlow {result['tensorflow']}")
  print(f"export {size['total'] / 1e6:.2f} MB ({parts}), written in "
        f"{result['export_seconds']:.1f} s, loaded in "
        f"{result['load_seconds']:.1f} s")
  print(f"{'signature':<18}{'batch':>7}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'mean ms':>10}{'rows/s':>12}")
  for r in result["results"]:
    ms = r["latency_ms"]
    print(f"{r['signature']:<18}{r['batch_size']:>7d}{ms['p50']:>10.3f}"
          f"{ms['p99']:>10.3f}{ms['mean']:>10.3f}"
          f"{r['rows_per_second']:>12.0f}")


def main(argv: List[str]) -> None:
  del argv  # checked by common.run
  batch_sizes = common.int_tuple(_BATCH_SIZES.value, "batch_sizes")
  work_dir = tempfile.mkdtemp(prefix="tafe_benchmark_serving_")
  try:
    if _MODEL_DIR.value:
      model, model_name, data_dir = load_model_dir(_MODEL_DIR.value)
      schema = training.model_dir_schema(_MODEL_DIR.value)
    else:
      model_dir = os.path.join(work_dir, "run")
      model, data_dir = train_briefly(model_dir)
      model_name = _MODEL.value
      schema = training.model_dir_schema(model_dir)
    result = benchmark(model, schema, data_dir,
                       _EXPORT_DIR.value or os.path.join(work_dir, "export"),
                       model_name, batch_sizes)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  result.update(
      model=model_name, model_dir=_MODEL_DIR.value or None,
      hparams=model.get_config()["hparams"], num_steps=len(schema.steps),
      data_dir=data_dir, num_calls=_NUM_CALLS.value,
      warmup_calls=_WARMUP_CALLS.value, cpu_count=os.cpu_count(),
      # Other processes share the CPUs; the load says how much.
      load_average_1min=os.getloadavg()[0],
      tensorflow=tf.__version__, python=platform.python_version(),
      command=" ".join(["python -m launch.benchmark_serving"] + sys.argv[1:]))
  if not _EXPORT_DIR.value:
    result["export_path"] = None  # deleted with the work dir
  print_table(result)
  if _OUTPUT.value:
    files.write_json_atomic(_OUTPUT.value, result)


def run() -> None:
  """Entry point: flags parsed by absl, user errors as one line."""
  common.run(main)


if __name__ == "__main__":
  run()
