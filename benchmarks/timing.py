"""Timing helpers shared by the benchmarks: train steps, tf.data, serving.

* :func:`cached_batches` -- parsed train batches cached in memory, so that a
  timed ``fit`` measures the model, not the input pipeline;
* :func:`time_steady_steps` -- seconds per window of train steps inside one
  ``fit`` (no per-``fit`` set-up), and :func:`time_strategy` -- examples/s of
  one of our models under a ``tf.distribute`` strategy with it;
* :func:`interleaved_fit_seconds` -- steady-state seconds of train steps of
  several compiled Keras models (ours and peers), timed in turns;
* :func:`train_speed` -- the speed loop of the benchmarks: our models (and
  peers) on the same cached batches, timed in turns, with examples/s, FLOPs,
  parameters and FLOP utilisation per model (:func:`compile_for_timing`,
  :func:`speed_row`);
* :func:`read_pass` / :func:`input_examples_per_second` -- one pass of the
  ``tf.data`` pipeline;
* :func:`latency_ms` / :func:`request_batches` -- serving calls of an export.

The CPUs may be shared with other jobs: every rate is the best of ``repeats``
runs (the least disturbed one), models compared with each other are timed in
turns (a load change then hits all of them alike), and callers should report
the machine load.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Hashable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import input_pipeline, models, training
from tafe_tf.benchmarks import flops as flops_lib


def cached_batches(data_dir: str, batch_size: int, num_batches: int) -> tf.data.Dataset:
  """``num_batches`` parsed train batches, cached, repeated forever."""
  ds = input_pipeline.make_dataset(data_dir, "train", batch_size, drop_remainder=True, repeat=True)
  return ds.take(num_batches).cache().repeat()


def interleaved_fit_seconds(
  runs: Mapping[Hashable, Tuple[tf.keras.Model, Any]], steps: int, warmup: int, repeats: int
) -> Dict[Hashable, float]:
  """Steady-state seconds of ``steps`` train steps of each model, in turns.

  Every model first trains ``warmup`` untimed steps (tracing); then, in each
  of ``repeats`` rounds, every model runs one ``fit`` whose first step is
  untimed (``fit``'s set-up: ~0.3 s per call on 2 CPUs, as much as 10 steps of
  a small model at batch 512) and whose next ``steps`` steps are timed by
  :func:`time_steady_steps`. A model's time is its fastest round.

  Args:
    runs: Name -> (compiled Keras model, repeated batches ``fit`` accepts).
    steps: Timed train steps per round (>= 1).
    warmup: Untimed steps before the first round (>= 1).
    repeats: Rounds (>= 1).

  Returns:
    Name -> seconds of ``steps`` steps.
  """
  if steps < 1 or warmup < 1 or repeats < 1:
    raise ValueError(f"steps, warmup and repeats must be >= 1, got {steps}, {warmup}, {repeats}")
  for model, dataset in runs.values():
    model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0)
  seconds = {name: float("inf") for name in runs}
  for _ in range(repeats):
    for name, (model, dataset) in runs.items():
      seconds[name] = min(
        seconds[name], time_steady_steps(model, dataset, steps, warmup=1, repeats=1)
      )
  return seconds


class _StepEndClock(tf.keras.callbacks.Callback):
  """``time.perf_counter()`` at the end of every train step."""

  def __init__(self):
    super().__init__()
    # Keep the logs as tensors: converting them each step adds a host sync.
    self._supports_tf_logs = True
    self.times = []

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter())


def time_steady_steps(
  model: tf.keras.Model, dataset: Any, steps: int, warmup: int, repeats: int
) -> float:
  """Seconds of the fastest of ``repeats`` windows of ``steps`` train steps.

  Unlike a ``fit`` per window, everything happens in one ``fit`` of
  ``warmup + repeats * steps`` steps, and the clock reads at step ends: a
  window runs from the end of one step to the end of the step ``steps`` later,
  so neither tracing (the warm-up steps) nor ``fit``'s set-up (callbacks, the
  dataset iterator, distributing the dataset over replicas, which costs ~1 s
  under MirroredStrategy) is in it: the steady state of a long epoch.

  Args:
    model: A compiled Keras model.
    dataset: Repeated batches ``fit`` accepts for ``model`` (under a
      strategy, Keras distributes them).
    steps: Train steps per timed window (>= 1).
    warmup: Untimed steps first (>= 1: the first window starts at the end of
      the last of them).
    repeats: Timed windows; the fastest counts (>= 1).
  """
  if steps < 1 or warmup < 1 or repeats < 1:
    raise ValueError(f"steps, warmup and repeats must be >= 1, got {steps}, {warmup}, {repeats}")
  clock = _StepEndClock()
  model.fit(
    dataset, epochs=1, steps_per_epoch=warmup + repeats * steps, callbacks=[clock], verbose=0
  )
  ends = clock.times[warmup - 1 :: steps]
  return min(b - a for a, b in zip(ends[:-1], ends[1:]))


def time_strategy(
  name: str,
  schema: features_lib.Schema,
  dataset: Any,
  hparams: Mapping[str, Any],
  strategy: tf.distribute.Strategy,
  global_batch: int,
  steps: int,
  warmup: int,
  repeats: int,
  learning_rate: float = 1e-3,
) -> Dict[str, Any]:
  """Steady-state training speed of model ``name`` under ``strategy``.

  The model is built and compiled as ``tafe_tf.training`` does it (in the
  strategy's scope), without training-time step metrics unless ``hparams``
  says ``train_metrics``, and timed with :func:`time_steady_steps`.

  Args:
    name: One of ``tafe_tf.models.MODEL_NAMES``.
    schema: The dataset schema.
    dataset: Repeated batches of ``global_batch`` examples (Keras splits each
      over the strategy's replicas and workers).
    hparams: ``build_model`` keyword arguments.
    strategy: The strategy to train under.
    global_batch: Examples per step over all replicas.
    steps, warmup, repeats: See :func:`time_steady_steps`.
    learning_rate: Adam learning rate.

  Returns:
    ``strategy`` (its class name), ``replicas``, ``global_batch``,
    ``examples_per_step`` (measured: the examples the loss mean counted over
    every replica and worker, over the steps run), ``examples_per_second``
    (of the global batch) and ``step_ms``.
  """
  model = training.build_and_compile(
    name, schema, {"train_metrics": False, **dict(hparams)}, learning_rate, strategy
  )
  seconds = time_steady_steps(model, dataset, steps, warmup, repeats)
  examples_per_step = float(model.loss_means.count()) / (warmup + repeats * steps)
  return {
    "strategy": type(strategy).__name__,
    "replicas": strategy.num_replicas_in_sync,
    "global_batch": global_batch,
    "examples_per_step": examples_per_step,
    "examples_per_second": steps * examples_per_step / seconds,
    "step_ms": 1000.0 * seconds / steps,
  }


def trainable_parameters(model: tf.keras.Model) -> int:
  return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def compile_for_timing(
  name: str, schema: features_lib.Schema, hparams: Mapping[str, Any], learning_rate: float = 1e-3
) -> tf.keras.Model:
  """Model ``name`` compiled with Adam, loss only: no training-time step
  metrics (unless ``hparams`` asks for them), as the peers are compiled."""
  model = models.build_model(name, schema, **{"train_metrics": False, **dict(hparams)})
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
  return model


def speed_row(
  name: str,
  model: tf.keras.Model,
  sample: Mapping[str, tf.Tensor],
  seconds: float,
  steps: int,
  batch_size: int,
) -> Dict[str, Any]:
  """``model``'s speed row from ``steps`` steps of ``batch_size`` taking
  ``seconds``: ``examples_per_second``, ``step_ms``,
  ``forward_flops_per_example``, ``train_flops_per_example``,
  ``trainable_parameters``."""
  forward = flops_lib.forward_flops_per_example(model, sample)
  return {
    "model": name,
    "examples_per_second": steps * batch_size / seconds,
    "step_ms": 1000.0 * seconds / steps,
    "forward_flops_per_example": forward,
    "train_flops_per_example": flops_lib.TRAINING_FLOPS_PER_FORWARD * forward,
    "trainable_parameters": trainable_parameters(model),
  }


@dataclasses.dataclass
class TrainSpeed:
  """What :func:`train_speed` measured.

  Attributes:
    schema: The dataset's schema.
    dataset: The cached, repeated train batches every model trained on.
    matmul_flops_per_second: The float32 matmul rate of this machine.
    models: Key -> the compiled model timed (ours and the peers).
    seconds: Key -> steady-state seconds of the timed steps.
    rows: Key of one of our models -> :func:`speed_row` plus ``mfu`` (train
      FLOPs x examples/s over the matmul rate).
  """

  schema: features_lib.Schema
  dataset: tf.data.Dataset
  matmul_flops_per_second: float
  models: Dict[Hashable, tf.keras.Model]
  seconds: Dict[Hashable, float]
  rows: Dict[Hashable, Dict[str, Any]]


PeerBuilder = Callable[
  [tf.data.Dataset, features_lib.Schema], Mapping[Hashable, Tuple[tf.keras.Model, Any]]
]


def train_speed(
  data_dir: str,
  ours: Mapping[Hashable, Tuple[str, Mapping[str, Any]]],
  batch_size: int,
  steps: int,
  warmup: int,
  repeats: int,
  num_batches: int = 8,
  peers: Optional[PeerBuilder] = None,
) -> TrainSpeed:
  """Steady-state train speed of models on the same cached batches.

  Every model (ours and the peers) is built first and then timed in turns
  (:func:`interleaved_fit_seconds`), so that a change of load on shared CPUs
  favours none of them.

  Args:
    data_dir: Dataset directory; its first ``num_batches`` train batches of
      ``batch_size`` are parsed once and cached.
    ours: Key -> ``(model name, hparams)`` of our models
      (:func:`compile_for_timing`).
    batch_size, num_batches: See above.
    steps, warmup, repeats: See :func:`interleaved_fit_seconds`.
    peers: Optional ``(cached batches, schema) -> {key: (compiled model,
      its batches)}`` of other implementations, timed alongside.
  """
  schema = features_lib.Schema.load(data_dir)
  dataset = cached_batches(data_dir, batch_size, num_batches)
  sample_features, _ = next(iter(dataset))
  sample = features_lib.to_dense_padded(sample_features, schema)
  peak = flops_lib.matmul_flops_per_second()
  runs = {
    key: (compile_for_timing(name, schema, hparams), dataset)
    for key, (name, hparams) in ours.items()
  }
  if peers is not None:
    runs.update(peers(dataset, schema))
  seconds = interleaved_fit_seconds(runs, steps, warmup, repeats)
  rows = {}
  for key, (name, _) in ours.items():
    row = speed_row(name, runs[key][0], sample, seconds[key], steps, batch_size)
    row["mfu"] = row["train_flops_per_example"] * row["examples_per_second"] / peak
    rows[key] = row
  return TrainSpeed(
    schema=schema,
    dataset=dataset,
    matmul_flops_per_second=peak,
    models={k: model for k, (model, _) in runs.items()},
    seconds=seconds,
    rows=rows,
  )


def read_pass(
  data_dir: str, batch_size: int, max_batches: Optional[int] = None
) -> Tuple[int, float]:
  """``(examples, seconds)`` of one pass over the train split through
  ``make_dataset``: parsing included, no shuffling, no model;
  ``max_batches`` caps the pass."""
  ds = input_pipeline.make_dataset(data_dir, "train", batch_size)
  if max_batches:
    ds = ds.take(max_batches)
  examples = 0
  start = time.perf_counter()
  for _, labels in ds:
    examples += int(next(iter(labels.values())).shape[0])
  return examples, time.perf_counter() - start


def input_examples_per_second(
  data_dir: str, batch_size: int, max_batches: Optional[int] = None
) -> float:
  """Examples/s of :func:`read_pass`; ValueError on an empty train split."""
  examples, seconds = read_pass(data_dir, batch_size, max_batches)
  if examples == 0:
    raise ValueError(f"{data_dir}: the train split is empty")
  return examples / seconds


def latency_ms(
  call: Callable[[], Mapping[str, tf.Tensor]], num_calls: int, warmup_calls: int
) -> Dict[str, float]:
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
  return {
    "p50": float(np.percentile(times, 50)),
    "p99": float(np.percentile(times, 99)),
    "mean": float(times.mean()),
    "min": float(times.min()),
  }


def _fetch(outputs: Mapping[str, tf.Tensor]) -> None:
  for value in outputs.values():
    value.numpy()


def request_batches(
  data_dir: str, schema: features_lib.Schema, batch_size: int
) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
  """The first ``batch_size`` test rows (repeated if the split is smaller) as
  ``(serving_default inputs, serialized examples)``.

  Raises:
    FileNotFoundError: when ``data_dir`` has no test split.
  """
  files = input_pipeline.list_split_files(data_dir, "test")
  features, _ = next(
    iter(
      input_pipeline.make_dataset(
        data_dir, "test", batch_size, schema=schema, repeat=True, dense_padded=True
      )
    )
  )
  serialized = next(
    iter(
      tf.data.TFRecordDataset(files, compression_type=input_pipeline.COMPRESSION)
      .repeat()
      .batch(batch_size)
    )
  )
  inputs = {k: features[k] for k in features_lib.serving_input_signature(schema)}
  return inputs, serialized
