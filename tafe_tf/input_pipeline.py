"""TFRecords -> ``tf.data`` of ``(features, labels)`` batches, driven by the schema.

A dataset directory (what the converters and the generator write) holds::

    schema.json
    vocab/<field>.txt                 (vocabulary lookups only)
    <split>-00000-of-00008.tfrecord.gz ...
    report.json                       (what the writer read, wrote and skipped)

``report.json`` is written last, by every writer, and lists each shard with its
size in bytes (``"shards": {split: {file name: bytes}}``). It is the
completion marker, and readers enforce it (:func:`list_split_files`): a
directory without it (a conversion still running, killed or failed), a shard it
does not list (left from an earlier conversion), a missing shard or one of
another size (truncated, replaced) is an error naming the file, never data
read silently.

Batches are parsed after batching (one ``parse_example`` per batch: the fast
path), multi-valued fields come out as ``tf.RaggedTensor`` and labels as float32
``[batch]`` tensors keyed by step name.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import files as files_lib

REPORT_FILENAME = "report.json"
# The report's key of the shard manifest: {split: {file name: bytes}}.
SHARDS_KEY = "shards"
TFRECORD_SUFFIX = ".tfrecord.gz"
COMPRESSION = "GZIP"
# Records read from one file in a row (see make_dataset).
READ_BLOCK = 256


def shard_pattern(split: str) -> str:
  return f"{split}-*-of-*{TFRECORD_SUFFIX}"


def _split_of(name: str) -> str:
  return name.split("-", 1)[0]


def shard_manifest(data_dir: str) -> Dict[str, Dict[str, int]]:
  """``{split: {shard file name: bytes}}`` of every shard now in ``data_dir``
  (what a writer records in ``report.json`` when it has finished)."""
  manifest: Dict[str, Dict[str, int]] = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(data_dir, shard_pattern("*")))):
    name = os.path.basename(path)
    manifest.setdefault(_split_of(name), {})[name] = tf.io.gfile.stat(path).length
  return manifest


def read_complete_report(data_dir: str) -> Dict[str, Any]:
  """The ``report.json`` of a finished dataset directory.

  Raises:
    FileNotFoundError: there is none: the writer has not finished (it is still
      running, was killed, or failed).
    ValueError: it is not valid JSON, or lists no shards (an older writer).
  """
  path = os.path.join(data_dir, REPORT_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"{data_dir} has no {REPORT_FILENAME}, the marker its writer leaves "
      "when it has finished: the conversion is still running, was "
      "interrupted or failed; convert again"
    )
  try:
    report = files_lib.read_json(path)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); convert again") from None
  if not isinstance(report, dict) or not isinstance(report.get(SHARDS_KEY), dict):
    raise ValueError(f"{path} lists no shards (written by an older tafe-tf); convert again")
  return report


def list_split_files(data_dir: str, split: str) -> List[str]:
  """The shard files of ``split``, sorted, checked against ``report.json``.

  Raises:
    FileNotFoundError: no report (unfinished writer), no such split, or a
      listed shard is missing.
    ValueError: a shard the report does not list, or one whose size differs
      from the report's (truncated or replaced).
  """
  listed = read_complete_report(data_dir)[SHARDS_KEY].get(split)
  on_disk = shard_manifest(data_dir).get(split, {})
  if not listed:
    raise FileNotFoundError(f"no '{split}' shards ({shard_pattern(split)}) in {data_dir}")
  unlisted = sorted(set(on_disk) - set(listed))
  if unlisted:
    raise ValueError(
      f"{os.path.join(data_dir, unlisted[0])}: a shard that "
      f"{REPORT_FILENAME} does not list (left from an earlier conversion?); "
      "convert again into this directory, which replaces every split"
    )
  for name, size in sorted(listed.items()):
    path = os.path.join(data_dir, name)
    if name not in on_disk:
      raise FileNotFoundError(f"{path}: listed in {REPORT_FILENAME} but missing; convert again")
    if on_disk[name] != size:
      raise ValueError(
        f"{path}: {on_disk[name]} bytes, {REPORT_FILENAME} "
        f"says {size} (truncated or replaced); convert again"
      )
  return [os.path.join(data_dir, name) for name in sorted(listed)]


def make_dataset(
  data_dir: str,
  split: str,
  batch_size: int,
  schema: Optional[features_lib.Schema] = None,
  shuffle: bool = False,
  shuffle_buffer: int = 100_000,
  repeat: bool = False,
  seed: Optional[int] = None,
  with_metadata: bool = False,
  drop_remainder: bool = False,
  dense_padded: bool = False,
  input_context: Optional[tf.distribute.InputContext] = None,
  num_parallel_reads: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
  """Reads one split as batched ``(features, labels)``.

  Args:
    data_dir: Dataset directory (holds ``schema.json`` and the shards).
    split: ``train``, ``validation`` or ``test``.
    batch_size: Examples per batch (per replica when ``input_context`` is given
      by ``distribute_datasets_from_function``).
    schema: The schema; read from ``data_dir`` when omitted.
    shuffle: Shuffle files and examples (training).
    shuffle_buffer: Examples in the shuffle buffer.
    repeat: Repeat forever (step-based training).
    seed: Shuffle seed: the same seed gives the same order on every run
      (without one, parallel reads may also reorder examples).
    with_metadata: Keep ``sample_id`` and ``oracle/<step>`` in the features
      dict (evaluation); models ignore these keys.
    drop_remainder: Drop a last partial batch (static batch shapes for XLA/TPU).
    dense_padded: Multi-valued fields as padded dense tensors (``PAD_ID``)
      instead of ragged, as the serving signature takes them.
    input_context: Shards files per input pipeline under a distribution
      strategy.
    num_parallel_reads: Files read at once.

  Returns:
    A ``tf.data.Dataset`` of ``(features, labels)``.
  """
  schema = schema or features_lib.Schema.load(data_dir)
  files = list_split_files(data_dir, split)
  # Unseeded shuffling may also let parallel reads deliver out of order (a
  # little faster); a seed promises the same order on every run.
  deterministic = not shuffle or seed is not None
  ds = tf.data.Dataset.from_tensor_slices(files)
  if input_context is not None and input_context.num_input_pipelines > 1:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  # The files are read in parallel in blocks of READ_BLOCK records: a
  # parallel interleave of single records cost ~50 us per record and capped
  # the whole pipeline at ~20k examples/s on 2 CPUs (blocks: ~230k records/s
  # read and gunzipped, docs/benchmarks.md "Data").
  ds = ds.interleave(
    lambda f: tf.data.TFRecordDataset(f, compression_type=COMPRESSION).batch(READ_BLOCK),
    cycle_length=num_parallel_reads if num_parallel_reads > 0 else None,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=deterministic,
  ).unbatch()
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  spec = features_lib.tf_example_spec(schema, with_labels=True, with_metadata=with_metadata)

  def parse(serialized: tf.Tensor) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
    parsed = tf.io.parse_example(serialized, spec)
    feats, labels = features_lib.split_labels(parsed, schema)
    if dense_padded:
      feats = features_lib.to_dense_padded(feats, schema)
    return feats, labels

  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  return ds.prefetch(tf.data.AUTOTUNE)


def count_examples(data_dir: str, split: str) -> int:
  """Counts the serialized examples of a split (a full pass over its files)."""
  files = list_split_files(data_dir, split)
  ds = tf.data.TFRecordDataset(files, compression_type=COMPRESSION)
  return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())
