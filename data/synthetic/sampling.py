"""Rows of a synthetic split, streamed as batches of numpy columns.

Determinism: rows come in chunks of :data:`CHUNK_ROWS`, each from its own random
stream seeded by ``(seed, split, chunk)``; the same config, split and row count
give the same rows (and the same shard bytes), a longer run starts with the rows
of a shorter one, and the batch size changes only how rows are grouped. The
feature draws come before the label draws in each chunk, so ``num_steps``
changes the labels but not the features of a row.

Batches (:func:`generate_batches`) are dicts of numpy columns keyed like the
serialized examples (:mod:`tafe_tf.features`):

=======================  =====================================================
key                      value
=======================  =====================================================
``<id field>``           int64 ``[b]``
``<weighted field>``     ``RaggedColumn`` of int64 ids
``<field>_weight``       ``RaggedColumn`` of float32 weights, log(1+count)
``price``                float32 ``[b, 1]`` (standardized log price)
``label/<step>``         int64 ``[b]``, cumulative label y_t
``oracle/<step>``        float64 ``[b]``, true conditional probability q_t
``sample_id``            str ``[b]``, ``<split>-<row index, 8 digits>``
=======================  =====================================================

``RaggedColumn`` is :class:`tafe_tf.example_codec.RaggedColumn`: the batches are
what :func:`tafe_tf.example_codec.serialize_batch` encodes.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import numpy as np

from tafe_tf.data.synthetic import truth as truth_lib
from tafe_tf.data.synthetic.config import CHUNK_ROWS, SPLITS, SyntheticConfig


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def check_count(name: str, value: Any, minimum: int) -> None:
  """Raises ValueError unless ``value`` is an int (not a bool) >= ``minimum``."""
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def generate_batches(
  config: SyntheticConfig, split: str, num_rows: int, batch_size: int = 8192
) -> Iterator[Dict[str, Any]]:
  """Streams the first ``num_rows`` rows of ``split`` as numpy column batches.

  Args:
    config: The dataset definition.
    split: ``train``, ``validation`` or ``test`` (independent row streams over
      the same users, items and truth).
    num_rows: Rows to produce (>= 0).
    batch_size: Rows per batch (the last may be smaller); does not change the
      rows.

  Yields:
    Batch dicts as described in the module doc. Memory is bounded by
    ``batch_size`` + :data:`CHUNK_ROWS` rows, whatever ``num_rows``.
  """
  _check_split(split)
  check_count("num_rows", num_rows, 0)
  check_count("batch_size", batch_size, 1)
  truth = truth_lib.ground_truth(config)
  pending: List[truth_lib.Draws] = []
  pending_rows = 0
  emitted = 0
  for chunk in range(-(-num_rows // CHUNK_ROWS)):
    take = min(CHUNK_ROWS, num_rows - chunk * CHUNK_ROWS)
    pending.append(truth.draw_chunk(split, chunk).slice(0, take))
    pending_rows += take
    if pending_rows < batch_size:
      continue
    draws = truth_lib.Draws.concat(pending)
    start = 0
    while pending_rows - start >= batch_size:
      yield truth.batch(draws.slice(start, start + batch_size), split, emitted)
      start += batch_size
      emitted += batch_size
    pending = [draws.slice(start, pending_rows)]
    pending_rows -= start
  if pending_rows:
    yield truth.batch(truth_lib.Draws.concat(pending), split, emitted)
