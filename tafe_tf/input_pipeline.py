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

Faults in the records themselves (docs/training.md, "Faults"):

* a schema that does not describe the shards (a field of another kind, dtype or
  width, a missing key): :func:`check_schema` compares the first record of a
  split with the schema, before any work (``training.train`` checks train and
  validation, ``launch.evaluate`` its split);
* labels that are not 0/1 or not cumulative (``y_t <= y_{t-1}``: a purchase
  without a click): every parsed batch asserts it (a few vector ops per batch),
  and a failed check, like a corrupt (unreadable) record, is turned into a
  one-line error naming the file and the record by :func:`naming_bad_files`,
  which scans the split's files only once reading has failed.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import struct
import zlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
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
# In the message of the labels' assertion (see naming_bad_files).
LABEL_CHECK = "labels must be 0 or 1 and cumulative"


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
    labels = _checked_labels(labels, schema.steps)
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


def _checked_labels(labels: Dict[str, tf.Tensor], steps: Sequence[str]) -> Dict[str, tf.Tensor]:
  """``labels``, gated on an assertion that they are 0/1 and cumulative."""
  y = tf.stack([labels[s] for s in steps], axis=1)
  ok = tf.reduce_all((y == 0.0) | (y == 1.0)) & tf.reduce_all(y[:, 1:] <= y[:, :-1])
  with tf.control_dependencies([tf.debugging.Assert(ok, [LABEL_CHECK])]):
    return {k: tf.identity(v) for k, v in labels.items()}


def first_record(path: str) -> Optional[bytes]:
  """The first serialized record of a shard (None when it has none).

  Plain Python (gzip and the TFRecord framing), no TensorFlow op: it may run
  before a MultiWorkerMirroredStrategy is built, which must come first.

  Raises:
    ValueError: naming ``path`` when it is not a readable gzip TFRecord file.
  """
  try:
    with tf.io.gfile.GFile(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
      header = f.read(12)  # uint64 length, uint32 masked CRC of the length
      if not header:
        return None
      if len(header) < 12:
        raise EOFError("the file ends inside a record header")
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      if len(data) < length:
        raise EOFError("the file ends inside the first record")
      return data
  except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
    raise ValueError(f"{path}: not a readable gzip TFRecord file ({e})") from None


def check_schema(data_dir: str, split: str, schema: features_lib.Schema) -> None:
  """Fails when the first record of ``split`` does not fit ``schema``.

  A schema that does not describe the shards (say a field declared
  ``weighted_ids`` whose records hold plain ids) otherwise fails deep in the
  first training step with an anonymous shape error.

  Raises:
    ValueError: one line naming the file, the key and what differs.
    FileNotFoundError: as :func:`list_split_files`.
  """
  for path in list_split_files(data_dir, split):
    record = first_record(path)
    if record is None:
      continue  # an empty shard: look at the next one
    try:
      example = tf.train.Example.FromString(record)
    except Exception as e:  # protobuf's DecodeError
      raise ValueError(f"{path}: record 0 is not a tf.train.Example ({e})") from None
    problem = example_mismatch(example, schema)
    if problem:
      raise ValueError(
        f"{path}: record 0 does not match the schema ({problem}); "
        "the schema.json is not the one these shards were written with"
      )
    return


def example_mismatch(example: tf.train.Example, schema: features_lib.Schema) -> Optional[str]:
  """What in ``example`` does not fit ``schema`` (its labels, fields and the
  metadata it promises), or None."""
  feature = example.features.feature
  kinds = {tf.int64: "int64_list", tf.float32: "float_list", tf.string: "bytes_list"}

  def values(key: str) -> Tuple[Optional[str], int]:
    if key not in feature:
      return None, 0
    kind = feature[key].WhichOneof("kind")
    return kind, len(getattr(feature[key], kind).value) if kind else 0

  for key, spec in features_lib.tf_example_spec(schema).items():
    kind, count = values(key)
    if kind is None:
      if isinstance(spec, tf.io.FixedLenFeature) and spec.default_value is None:
        return f"no {key!r}"
      continue
    if kind != kinds[spec.dtype]:
      return f"{key!r} is {kind}, the schema reads {kinds[spec.dtype]}"
    if isinstance(spec, tf.io.FixedLenFeature):
      width = int(np.prod(spec.shape, dtype=np.int64))
      if count != width:
        return f"{key!r} holds {count} values, the schema says {width}"
  for f in schema.fields_of(features_lib.FieldKind.WEIGHTED_IDS):
    ids, weights = values(f.name)[1], values(f.weight_key)[1]
    if ids != weights:
      return (
        f"weighted_ids field {f.name!r} holds {ids} ids but {weights} weights in "
        f"{f.weight_key!r} (one weight per id)"
      )
  return None


def find_bad_record(data_dir: str, split: str, schema: features_lib.Schema) -> Optional[str]:
  """Scans every shard of ``split``; the first fault found, one line naming
  the file and the record (unreadable, or labels not 0/1 or not cumulative),
  or None. A full pass over the split: for after reading failed."""
  spec = {features_lib.label_key(s): tf.io.FixedLenFeature([], tf.int64) for s in schema.steps}
  names = [features_lib.label_key(s) for s in schema.steps]
  for path in list_split_files(data_dir, split):
    start = 0
    try:
      for block in tf.data.TFRecordDataset(path, compression_type=COMPRESSION).batch(READ_BLOCK):
        try:
          parsed = tf.io.parse_example(block, spec)
        except tf.errors.InvalidArgumentError as e:
          return f"{path}: a record in {start}..{start + len(block) - 1}: {_first_line(e)}"
        y = np.stack([parsed[k].numpy() for k in names], axis=1)
        bad = np.flatnonzero(~np.isin(y, (0, 1)).all(axis=1) | (np.diff(y, axis=1) > 0).any(axis=1))
        if bad.size:
          row = y[bad[0]]
          labels = ", ".join(f"{k} = {v}" for k, v in zip(names, row.tolist()))
          return (
            f"{path}: record {start + bad[0]}: {labels}; {LABEL_CHECK} "
            "(a step happens only after the one before it)"
          )
        start += len(block)
    except tf.errors.OpError as e:
      return (
        f"{path}: corrupt, records from {start} on cannot be read ({_first_line(e)}); convert again"
      )
  return None


@contextlib.contextmanager
def naming_bad_files(
  data_dir: str, splits: Sequence[str], schema: features_lib.Schema
) -> Iterator[None]:
  """Turns a read failure in the block (a corrupt record, labels failing
  their check) into a ValueError naming the file and the record, found by
  :func:`find_bad_record` over ``splits``; other errors pass unchanged."""
  try:
    yield
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    if isinstance(e, tf.errors.InvalidArgumentError) and LABEL_CHECK not in str(e):
      raise
    for split in splits:
      fault = find_bad_record(data_dir, split, schema)
      if fault:
        raise ValueError(fault) from None
    raise


def _first_line(error: BaseException) -> str:
  """The first line of a TensorFlow error, without its op decorations."""
  text = getattr(error, "message", None) or str(error)
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", text.strip())
  return text.splitlines()[0].strip() if text.strip() else type(error).__name__
