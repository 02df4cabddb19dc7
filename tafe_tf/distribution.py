"""Choosing a ``tf.distribute`` strategy by name.

The package trains on TensorFlow's own distribution strategies; this module only
maps a flag value to one of them.
"""

from __future__ import annotations

from typing import Tuple

import tafe_tf  # noqa: F401
import tensorflow as tf

STRATEGY_NAMES: Tuple[str, ...] = ("auto", "one_device", "mirrored")


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
  """Returns the strategy called ``name``.

  Args:
    name: ``auto`` (all local GPUs with MirroredStrategy when there are several,
      else the one device there is), ``one_device`` (TensorFlow's default
      strategy: first GPU, else CPU) or ``mirrored`` (MirroredStrategy over
      every local GPU, or over the CPU).

  Raises:
    ValueError: for an unknown name.
  """
  if name not in STRATEGY_NAMES:
    raise ValueError(f"unknown strategy {name!r}; expected one of "
                     f"{', '.join(STRATEGY_NAMES)}")
  gpus = tf.config.list_logical_devices("GPU")
  if name == "mirrored" or (name == "auto" and len(gpus) > 1):
    return tf.distribute.MirroredStrategy()
  # The default strategy rather than OneDeviceStrategy: it places work on the
  # first GPU all the same, and Keras' BackupAndRestore (resume after a crash)
  # does not support OneDeviceStrategy.
  return tf.distribute.get_strategy()
