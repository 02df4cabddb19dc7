"""Tests of benchmarks/timing.py's train-step timers on tiny Keras models."""

import math

import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.benchmarks import timing


def _model_and_data(width):
  model = tf.keras.Sequential([tf.keras.layers.Dense(width, "relu"), tf.keras.layers.Dense(1)])
  model.compile(optimizer="sgd", loss="mse")
  rng = np.random.default_rng(width)
  x = rng.normal(size=(64, 4)).astype("float32")
  y = rng.normal(size=(64, 1)).astype("float32")
  return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()


def test_interleaved_timing_runs_each_model_the_documented_steps():
  runs = {"narrow": _model_and_data(2), ("wide", 1): _model_and_data(32)}
  seconds = timing.interleaved_fit_seconds(runs, steps=3, warmup=2, repeats=2)
  assert set(seconds) == {"narrow", ("wide", 1)}
  assert all(0 < s < math.inf for s in seconds.values())
  # warmup, then per round one untimed set-up step and the timed steps.
  for model, _ in runs.values():
    assert int(model.optimizer.iterations) == 2 + 2 * (1 + 3)


@pytest.mark.parametrize("steps,warmup,repeats", [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_timers_reject_empty_runs(steps, warmup, repeats):
  model, data = _model_and_data(2)
  with pytest.raises(ValueError, match="must be >= 1"):
    timing.interleaved_fit_seconds({"m": (model, data)}, steps, warmup, repeats)
  with pytest.raises(ValueError, match="must be >= 1"):
    timing.time_steady_steps(model, data, steps, warmup, repeats)
