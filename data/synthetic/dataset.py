"""Synthetic datasets on disk: written once, reused while they match.

:func:`write_dataset` writes a dataset directory (schema, sharded TFRecords,
``report.json`` last, as the converters do); :func:`ensure_dataset` reuses a
directory whose report records the same generator version, config and sizes.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping

import tensorflow as tf
from absl import logging

from tafe_tf import example_codec, input_pipeline
from tafe_tf import features as features_lib
from tafe_tf.data import writer
from tafe_tf.data.synthetic import config as config_lib
from tafe_tf.data.synthetic import oracle, sampling
from tafe_tf.data.synthetic.config import DATASET_NAME, SyntheticConfig

# Bump when a change to the generator changes the rows a config produces, so
# that ensure_dataset rewrites datasets written by an older generator.
GENERATOR_VERSION = 1


def write_dataset(
  out_dir: str,
  config: SyntheticConfig,
  num_train: int,
  num_validation: int,
  num_test: int,
  num_shards: int = 4,
  batch_size: int = 8192,
  auc_max_rows: int = 2_000_000,
) -> Dict[str, Any]:
  """Writes a complete synthetic dataset directory.

  ``schema.json`` first, then each split's shards through
  :class:`tafe_tf.data.writer.ShardedWriter`, then ``report.json`` last (a directory
  without it is incomplete; an existing one is removed before anything else is
  written).

  Raises:
    ValueError: on invalid sizes, or when ``out_dir`` holds another dataset
      (its ``schema.json`` names something other than ``synthetic``).

  Args:
    out_dir: Target directory (created if needed).
    config: The dataset definition.
    num_train, num_validation, num_test: Rows per split (>= 0).
    num_shards: Shards per split.
    batch_size: Rows generated and encoded at a time (memory, not content).
    auc_max_rows: Oracle AUCs use the first this-many rows of a split, so that
      memory stays bounded for huge splits (recorded as ``auc_rows``).

  Returns:
    The report: ``config``, ``steps``, ``step_rates``, ``num_shards`` and per
    split ``rows``, ``label_rate`` (empirical y_t rate), ``mean_true_p``,
    ``oracle_auc`` (p_t vs y_t), ``oracle_conditional_auc`` (q_t vs y_t on rows
    with y_{t-1} = 1), ``auc_rows``; plus ``seconds`` and ``rows_per_second``.
  """
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}
  for split, n in sizes.items():
    sampling.check_count(f"num_{split}", n, 0)
  sampling.check_count("num_shards", num_shards, 1)
  sampling.check_count("auc_max_rows", auc_max_rows, 0)
  _check_not_another_dataset(out_dir)
  tf.io.gfile.makedirs(out_dir)
  report_path = os.path.join(out_dir, writer.REPORT_FILENAME)
  if tf.io.gfile.exists(report_path):
    tf.io.gfile.remove(report_path)
  schema = config_lib.synthetic_schema(config)
  schema.save(out_dir)
  started = time.perf_counter()
  splits = {}
  for split, n in sizes.items():
    stats = oracle.SplitStats(schema.steps, auc_max_rows)
    with writer.ShardedWriter(out_dir, split, num_shards) as shards:
      for batch in sampling.generate_batches(config, split, n, batch_size):
        for record in example_codec.serialize_batch(schema, batch):
          shards.write(record)
        stats.add(batch)
    splits[split] = stats.to_json()
    logging.info("synthetic %s: %d rows written to %s", split, n, out_dir)
  seconds = time.perf_counter() - started
  total = sum(sizes.values())
  report = {
    "dataset": DATASET_NAME,
    "generator_version": GENERATOR_VERSION,
    "config": config.to_json(),
    "steps": list(schema.steps),
    "step_rates": list(config.conditional_rates()),
    "num_shards": num_shards,
    "splits": splits,
    "seconds": round(seconds, 3),
    "rows_per_second": round(total / seconds, 1) if seconds > 0 else None,
  }
  return writer.write_report(out_dir, report)


def _check_not_another_dataset(out_dir: str) -> None:
  """Refuses to write over a directory that holds another dataset."""
  path = os.path.join(out_dir, features_lib.SCHEMA_FILENAME)
  if not tf.io.gfile.exists(path):
    return
  name = features_lib.Schema.load(path).name
  if name != DATASET_NAME:
    raise ValueError(
      f"{out_dir} holds dataset {name!r}, not synthetic data; refusing to overwrite it"
    )


def _is_complete(
  data_dir: str, config: SyntheticConfig, sizes: Mapping[str, int], num_shards: int
) -> bool:
  """Whether ``data_dir`` holds exactly this config's dataset, complete."""
  try:
    report = writer.read_report(data_dir)
  except ValueError:  # a corrupt report.json: rewrite
    return False
  if not report or report.get("generator_version") != GENERATOR_VERSION:
    return False
  if report.get("config") != config.to_json():
    return False
  if report.get("num_shards") != num_shards:
    return False
  splits = report.get("splits", {})
  if any(splits.get(s, {}).get("rows") != n for s, n in sizes.items()):
    return False
  if not tf.io.gfile.exists(os.path.join(data_dir, features_lib.SCHEMA_FILENAME)):
    return False
  return all(
    len(tf.io.gfile.glob(os.path.join(data_dir, input_pipeline.shard_pattern(s)))) == num_shards
    for s in sizes
  )


def ensure_dataset(
  out_dir: str,
  config: SyntheticConfig,
  num_train: int,
  num_validation: int,
  num_test: int,
  num_shards: int = 4,
) -> str:
  """Returns ``out_dir`` holding ``config``'s dataset, writing it if needed.

  An existing directory is reused when its ``report.json`` records the same
  generator version, config, row counts and shard count and its schema and
  shards are there; otherwise the dataset is (re)written.
  """
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}
  if _is_complete(out_dir, config, sizes, num_shards):
    logging.info("reusing synthetic dataset at %s", out_dir)
    return out_dir
  write_dataset(out_dir, config, num_train, num_validation, num_test, num_shards=num_shards)
  return out_dir
