"""Timing helpers shared by the benchmarks: train steps, tf.data, serving.

* :func:`cached_batches` -- parsed train batches cached in memory, so that a
  timed ``fit`` measures the model, not the input pipeline;
* :func:`time_fit_steps` -- examples/s of ``model.fit`` train steps of any
  compiled Keras model (ours or a peer's), best of a few runs;
* :func:`time_model` -- that, plus FLOPs and parameters, for one of our models;
* :func:`input_examples_per_second` -- one pass of the ``tf.data`` pipeline;
* :func:`latency_ms` / :func:`request_batches` -- serving calls of an export.

The CPUs may be shared with other jobs: every rate is the best of ``repeats``
runs (the least disturbed one), and callers should report the machine load.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import tafe_tf  # noqa: F401
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import input_pipeline
from tafe_tf import models
from tafe_tf.models import flops as flops_lib


def cached_batches(data_dir: str, batch_size: int,
                   num_batches: int) -> tf.data.Dataset:
  """``num_batches`` parsed train batches, cached, repeated forever."""
  ds = input_pipeline.make_dataset(data_dir, "train", batch_size,
                                   drop_remainder=True, repeat=True)
  return ds.take(num_batches).cache().repeat()


def time_fit_steps(model: tf.keras.Model, dataset: tf.data.Dataset,
                   steps: int, warmup: int, repeats: int) -> float:
  """Seconds of the fastest of ``repeats`` ``fit`` runs of ``steps`` steps.

  Args:
    model: A compiled Keras model.
    dataset: Repeated batches ``fit`` accepts for ``model``.
    steps: Timed train steps per run.
    warmup: Untimed steps first (tracing, first allocations).
    repeats: Timed runs; the fastest counts.
  """
  model.fit(dataset, epochs=1, steps_per_epoch=max(1, warmup), verbose=0)
  seconds = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = min(seconds, time.perf_counter() - start)
  return seconds


def trainable_parameters(model: tf.keras.Model) -> int:
  return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def time_model(name: str, schema: features_lib.Schema,
               dataset: tf.data.Dataset, sample: Mapping[str, tf.Tensor],
               hparams: Mapping[str, Any], steps: int, warmup: int,
               batch_size: int, repeats: int,
               learning_rate: float = 1e-3) -> Tuple[tf.keras.Model,
                                                     Dict[str, Any]]:
  """Trains model ``name`` for a few timed steps; its speed and FLOPs.

  Args:
    name: One of ``tafe_tf.models.MODEL_NAMES``.
    schema: The dataset schema.
    dataset: Cached repeated ``(features, labels)`` batches of ``batch_size``.
    sample: One batch in padded form (FLOPs are traced on it).
    hparams: ``build_model`` keyword arguments.
    steps, warmup, repeats: See :func:`time_fit_steps`.
    batch_size: Examples per step of ``dataset``.
    learning_rate: Adam learning rate.

  Returns:
    ``(model, row)``: the (briefly trained) model and ``examples_per_second``,
    ``step_ms``, ``forward_flops_per_example``, ``train_flops_per_example``,
    ``trainable_parameters``.
  """
  # Loss only, no training-time metrics: what the peers compile with.
  model = models.build_model(name, schema,
                             **{"train_metrics": False, **dict(hparams)})
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
  seconds = time_fit_steps(model, dataset, steps, warmup, repeats)
  forward = flops_lib.forward_flops_per_example(model, sample)
  return model, {
      "model": name, "examples_per_second": steps * batch_size / seconds,
      "step_ms": 1000.0 * seconds / steps,
      "forward_flops_per_example": forward,
      "train_flops_per_example": flops_lib.TRAINING_FLOPS_PER_FORWARD * forward,
      "trainable_parameters": trainable_parameters(model)}


def input_examples_per_second(data_dir: str, batch_size: int,
                              max_batches: Optional[int] = None) -> float:
  """Examples/s of one pass over the train split through ``make_dataset``.

  Parsing included, no shuffling, no model; ``max_batches`` caps the pass.
  """
  ds = input_pipeline.make_dataset(data_dir, "train", batch_size)
  if max_batches:
    ds = ds.take(max_batches)
  examples = 0
  start = time.perf_counter()
  for _, labels in ds:
    examples += int(next(iter(labels.values())).shape[0])
  seconds = time.perf_counter() - start
  if examples == 0:
    raise ValueError(f"{data_dir}: the train split is empty")
  return examples / seconds


def latency_ms(call: Callable[[], Mapping[str, tf.Tensor]], num_calls: int,
               warmup_calls: int) -> Dict[str, float]:
  """Milliseconds of ``call()`` with its outputs fetched as numpy arrays.

  Returns:
    ``p50``, ``p99``, ``mean``, ``min`` over ``num_calls`` timed calls made
    after ``warmup_calls`` untimed ones.
  """
  for _ in range(warmup_calls):
    _fetch(call())
  times = np.empty(num_calls)
  for i in range(num_calls):
    start = time.perf_counter()
    _fetch(call())
    times[i] = time.perf_counter() - start
  times *= 1000.0
  return {"p50": float(np.percentile(times, 50)),
          "p99": float(np.percentile(times, 99)),
          "mean": float(times.mean()), "min": float(times.min())}


def _fetch(outputs: Mapping[str, tf.Tensor]) -> None:
  for value in outputs.values():
    value.numpy()


def request_batches(data_dir: str, schema: features_lib.Schema,
                    batch_size: int) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
  """The first ``batch_size`` test rows (repeated if the split is smaller) as
  ``(serving_default inputs, serialized examples)``.

  Raises:
    FileNotFoundError: when ``data_dir`` has no test split.
  """
  files = input_pipeline.list_split_files(data_dir, "test")
  features, _ = next(iter(input_pipeline.make_dataset(
      data_dir, "test", batch_size, schema=schema, repeat=True,
      dense_padded=True)))
  serialized = next(iter(tf.data.TFRecordDataset(
      files, compression_type=input_pipeline.COMPRESSION).repeat().batch(
          batch_size)))
  inputs = {k: features[k]
            for k in features_lib.serving_input_signature(schema)}
  return inputs, serialized
