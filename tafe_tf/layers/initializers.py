"""Seeded weight initializers shared by the layers.

Keras 2 initializers built with a seed return the same values on every call, so
a layer that creates several weights from one ``seed`` must give each weight
its own derived seed; :func:`derive_seed` does that. ``seed=None`` keeps the
initializers unseeded (drawn from TensorFlow's global generator).
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

_SEED_MODULUS = 2**31 - 1


def derive_seed(seed: Optional[int], salt: int) -> Optional[int]:
  """A per-weight seed from a layer seed and a small integer ``salt``.

  Returns None when ``seed`` is None. Different salts give different seeds; the
  mapping is fixed, so a seeded model is rebuilt bit for bit.
  """
  if seed is None:
    return None
  return (int(seed) * 1_000_003 + 7919 * (int(salt) + 1)) % _SEED_MODULUS


def glorot_uniform(
  fan_in: int, fan_out: int, seed: Optional[int]
) -> tf.keras.initializers.Initializer:
  """Glorot-uniform for one ``fan_in x fan_out`` matrix of a stacked kernel.

  Keras' own GlorotUniform treats leading kernel axes as a receptive field and
  would shrink the scale of a ``[groups, experts, in, out]`` kernel; this keeps
  the scale of a single ``[in, out]`` Dense kernel.
  """
  limit = math.sqrt(6.0 / float(fan_in + fan_out))
  return tf.keras.initializers.RandomUniform(-limit, limit, seed=seed)


def embedding_uniform(seed: Optional[int]) -> tf.keras.initializers.Initializer:
  """The Keras Embedding default: uniform in [-0.05, 0.05]."""
  return tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=seed)
