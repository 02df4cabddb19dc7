"""Real-data converters: input files -> one dataset directory.

One function per format (:func:`convert_ali_ccp`, :func:`convert_ali_ccp_processed`,
:func:`convert_aliexpress`, :func:`convert_paddle_esmm`, :func:`convert_columns`
for any CSV / TSV through a column spec, and :func:`convert_tfrecords` for
``tf.train.Example`` TFRecords through one), all on one engine,
:func:`convert`. It writes what :mod:`tafe_tf.input_pipeline` reads::

  OUT/schema.json                 fields, steps, vocabulary lookups
  OUT/vocab/<field>.txt           raw ids seen > min_count times in TRAIN, most
                                  frequent first
  OUT/<split>-NNNNN-of-NNNNN.tfrecord.gz
  OUT/report.json                 written last: rows read, written, skipped, ...

Ids stay raw in the TFRecords (the model maps them through the vocabulary in
its graph); a missing single-valued field is written as -1, which no
vocabulary holds, so it lands on the OOV row. Labels are cumulative.

Each input file is cut into byte ranges at line starts (a TFRecord file is read
whole: records cannot be found from a byte offset), one per worker process
(``spawn``ed, so TensorFlow is never forked); a worker parses its range, writes
its own subset of the split's shards and counts the train ids; the parent merges
the counts and skips, then writes vocabularies, schema and report. A failed
run deletes the shards it wrote and leaves no report.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
import time
from concurrent import futures
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

from tafe_tf import example_codec, input_pipeline
from tafe_tf import features as features_lib
from tafe_tf.data import ali_ccp, column_spec, csv_formats, line_format, tfrecord_format, vocabulary
from tafe_tf.data import writer as writer_lib
from tafe_tf.data.line_format import FieldKind, LineFormat, Row, SplitInput

FORMATS = {
  "ali_ccp": ali_ccp.RawAliCcp,
  "ali_ccp_processed": csv_formats.ProcessedAliCcp,
  "aliexpress": csv_formats.AliExpress,
  "paddle_esmm": csv_formats.PaddleEsmm,
}
_NEWLINE_CHUNK = 1 << 24


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
  """How to convert.

  Attributes:
    min_count: Train ids seen this many times or fewer stay out of the
      vocabulary (OOV). 0 keeps every id seen.
    validation_fraction: Share of the train file's rows held out as the
      validation split (by a hash of the format's hold-out key: the visit for
      raw Ali-CCP, the search for AliExpress), for formats without a
      validation file.
    num_shards: Shards per split.
    strict: Stop at the first bad line with a ValueError naming file, line and
      field, instead of skipping and counting it.
    workers: Worker processes (0: one per CPU). A file gets at most one per
      ``min_bytes_per_worker`` bytes and one per shard.
    min_bytes_per_worker: Smallest byte range worth a worker process.
    compression_level: zlib level of the gzip shards (1: fastest; the
      conversion is bound by it: level 6 costs ~2.5x the time of level 1 for
      files ~30% smaller).
  """

  min_count: int = vocabulary.DEFAULT_MIN_COUNT
  validation_fraction: float = 0.1
  num_shards: int = 8
  strict: bool = False
  workers: int = 0
  min_bytes_per_worker: int = 16 << 20
  compression_level: int = 1

  def __post_init__(self):
    if self.min_count < 0:
      raise ValueError(f"min_count must be >= 0, got {self.min_count}")
    if not 0.0 <= self.validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
    if self.num_shards < 1:
      raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
    if self.workers < 0:
      raise ValueError(f"workers must be >= 0, got {self.workers}")
    if self.min_bytes_per_worker < 1:
      raise ValueError(f"min_bytes_per_worker must be >= 1, got {self.min_bytes_per_worker}")
    if not 0 <= self.compression_level <= 9:
      raise ValueError(f"compression_level must be in [0, 9], got {self.compression_level}")


def build_schema(fmt: LineFormat, vocabulary_sizes: Mapping[str, int]) -> features_lib.Schema:
  """The format's schema; id fields use ``vocab/<field>.txt`` lookups.

  A field whose vocabulary is empty (every train id rare) declares
  ``num_ids=0``: all its ids map to the OOV row. (Embedding widths are the
  model's hyperparameters, not the schema's.)
  """
  fields = []
  for t in fmt.fields():
    if t.kind == FieldKind.DENSE:
      fields.append(features_lib.FieldSpec(name=t.name, kind=t.kind, dim=t.dim, group=t.group))
    else:
      fields.append(
        features_lib.FieldSpec(
          name=t.name,
          kind=t.kind,
          lookup=features_lib.LookupKind.VOCABULARY,
          num_ids=int(vocabulary_sizes.get(t.name, 0)),
          vocabulary_file=vocabulary.vocabulary_file(t.name),
          group=t.group,
        )
      )
  return features_lib.Schema(
    name=fmt.name,
    fields=tuple(fields),
    steps=fmt.steps,
    user_field=fmt.user_field,
    has_sample_id=fmt.has_sample_id,
  )


# --- one worker: a byte range of one file ------------------------------------


@dataclasses.dataclass
class _Task:
  fmt: LineFormat
  split_input: SplitInput
  context: Any
  start: int
  end: int
  first_line: int
  shard_indices: List[int]
  out_dir: str
  options: ConvertOptions


@dataclasses.dataclass
class _Result:
  rows_read: int
  rows_per_split: Dict[str, int]
  positives: Dict[str, Dict[str, int]]
  skip_counts: Dict[str, int]
  skip_first_lines: Dict[str, List[str]]
  counters: Dict[str, vocabulary.IdCounter]
  facts: Dict[str, Any]
  shared_problems: Dict[Tuple[str, int], Tuple[str, str]]


class _RowWriter:
  """Encodes rows, routes them to split writers and counts train ids."""

  def __init__(self, schema: features_lib.Schema, writers: Mapping[str, writer_lib.ShardedWriter]):
    self.encoder = example_codec.ExampleEncoder(schema)
    self.has_sample_id = schema.has_sample_id
    self.writers = writers
    self.counters = {f.name: vocabulary.IdCounter() for f in schema.fields if f.is_id}
    self._single = {f.name for f in schema.fields_of(FieldKind.ID)}
    # (name, counter, single-valued) of every id field, for the hot loop.
    self._counted = [
      (f.name, self.counters[f.name], f.kind == FieldKind.ID) for f in schema.fields if f.is_id
    ]
    self.rows = {split: 0 for split in writers}
    self.steps = schema.steps
    self.positives = {split: {step: 0 for step in schema.steps} for split in writers}

  def write(self, row: Row, split: str) -> None:
    encoder = self.encoder
    parts = [encoder.encode_fields(row.features), encoder.encode_labels(row.labels)]
    if row.shared is not None:
      if row.shared.encoded is None:
        row.shared.encoded = encoder.encode_fields(row.shared.features)
      parts.append(row.shared.encoded)
    if self.has_sample_id:
      parts.append(encoder.encode_sample_id(row.sample_id or b""))
    self.writers[split].write(encoder.example(*parts))
    self.rows[split] += 1
    positives = self.positives[split]
    for step, y in zip(self.steps, row.labels):
      positives[step] += y
    if split == line_format.TRAIN:
      self._count(row)

  def _count(self, row: Row) -> None:
    features = row.features
    for name, counter, single in self._counted:
      value = features.get(name)
      if value is None:  # a field of the shared part
        continue
      counter.add((value,) if single else value[0])
    if row.shared is not None:
      row.shared.train_rows += 1

  def count_shared(self, shared: line_format.SharedFeatures) -> None:
    """Counts a shared row's ids once per train row that used it."""
    if not shared.train_rows:
      return
    for name, value in shared.features.items():
      counter = self.counters.get(name)
      if counter is not None:
        ids = (value,) if name in self._single else value[0]
        counter.add_weighted(ids, shared.train_rows)
    shared.train_rows = 0


def _convert_range(task: _Task) -> _Result:
  """Converts the lines starting in ``[task.start, task.end)`` of one file.

  Raises:
    OSError: reading or writing failed (disk full, ...), with TensorFlow's
      message: its own errors lose it when sent back from a worker process.
  """
  try:
    return _convert_range_or_raise(task)
  except tf.errors.OpError as e:
    raise OSError(e.message) from None


def _convert_range_or_raise(task: _Task) -> _Result:
  fmt, split_input, options = task.fmt, task.split_input, task.options
  skips = writer_lib.SkipCounter(strict=options.strict)
  reader = fmt.reader(split_input, task.context, skips)
  splits = [split_input.split] + ([line_format.VALIDATION] if split_input.holdout else [])
  schema = build_schema(fmt, {})
  rows_read = 0
  with contextlib.ExitStack() as stack:
    writers = {
      split: stack.enter_context(
        writer_lib.ShardedWriter(
          task.out_dir, split, options.num_shards, task.shard_indices, options.compression_level
        )
      )
      for split in splits
    }
    row_writer = _RowWriter(schema, writers)
    reader.on_evict = row_writer.count_shared
    fraction = options.validation_fraction if split_input.holdout else 0.0
    for number, line in fmt.read_range(split_input.path, task.start, task.end, task.first_line):
      rows_read += 1
      row = reader.parse(line, number)
      if row is None:
        continue
      split = split_input.split
      if fraction and line_format.is_held_out(row.holdout_key, fraction):
        split = line_format.VALIDATION
      row_writer.write(row, split)
    reader.close()
  return _Result(
    rows_read=rows_read,
    rows_per_split=row_writer.rows,
    positives=row_writer.positives,
    skip_counts=skips.counts,
    skip_first_lines=skips.first_lines,
    counters=row_writer.counters,
    facts=reader.facts(),
    shared_problems=reader.shared_problems(),
  )


# --- the parent ---------------------------------------------------------------


def byte_ranges(path: str, pieces: int) -> List[Tuple[int, int, int]]:
  """Cuts a file into up to ``pieces`` ranges at line starts.

  Returns:
    ``(start, end, first line number)`` per range, in file order.
  """
  size = os.path.getsize(path)
  starts = [0]
  with open(path, "rb") as f:
    for k in range(1, pieces):
      f.seek(size * k // pieces)
      f.readline()
      position = f.tell()
      if starts[-1] < position < size:
        starts.append(position)
    ends = starts[1:] + [size]
    first_lines, line = [], 1
    f.seek(0)
    for start, end in zip(starts, ends):
      first_lines.append(line)
      remaining = end - start
      while remaining > 0:
        chunk = f.read(min(_NEWLINE_CHUNK, remaining))
        line += chunk.count(b"\n")
        remaining -= len(chunk)
  return list(zip(starts, ends, first_lines))


# prctl(2) option: the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
  """Worker initializer: a converter killed with SIGKILL takes its workers
  with it, instead of leaving them to run on (holding memory) and publish
  shards into a directory that no report will ever mark complete. Linux only;
  elsewhere the missing report.json still keeps readers away."""
  if not sys.platform.startswith("linux"):
    return
  ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent_pid:  # the parent died before prctl took effect
    os.kill(os.getpid(), signal.SIGKILL)


def _run_split(
  fmt: LineFormat,
  split_inputs: Sequence[SplitInput],
  context: Any,
  out_dir: str,
  options: ConvertOptions,
) -> List[List[_Result]]:
  """Converts the files of one split (several when a format's file names are
  globs); returns each file's results, in order.

  The split's ``num_shards`` shards are dealt out over every byte range of
  every file, so no two workers write the same shard.

  Raises:
    ValueError: the split has more files than ``num_shards``.
  """
  if len(split_inputs) > options.num_shards:
    raise ValueError(
      f"{len(split_inputs)} {split_inputs[0].split} files but --num_shards={options.num_shards}:"
      " give at least one shard per file"
    )
  workers = options.workers or os.cpu_count() or 1
  budget = options.num_shards // len(split_inputs)  # byte ranges per file
  file_ranges = []
  for split_input in split_inputs:
    size = os.path.getsize(split_input.path)
    if not fmt.splittable:  # records cannot be found from a byte offset
      file_ranges.append([(0, size, 1)])
      continue
    pieces = max(1, min(workers, budget, size // options.min_bytes_per_worker))
    file_ranges.append(byte_ranges(split_input.path, pieces))
  total = sum(len(r) for r in file_ranges)
  tasks, owner = [], []
  for k, (split_input, ranges) in enumerate(zip(split_inputs, file_ranges)):
    for start, end, first_line in ranges:
      w = len(tasks)
      tasks.append(
        _Task(
          fmt,
          split_input,
          context,
          start,
          end,
          first_line,
          list(range(w, options.num_shards, total)),
          out_dir,
          options,
        )
      )
      owner.append(k)
  if len(tasks) == 1:
    results = [_convert_range(tasks[0])]
  else:
    # An executor (unlike multiprocessing.Pool) fails instead of hanging when a
    # worker process dies.
    with futures.ProcessPoolExecutor(
      min(len(tasks), workers),
      mp_context=multiprocessing.get_context("spawn"),
      initializer=_die_with_parent,
      initargs=(os.getpid(),),
    ) as pool:
      results = list(pool.map(_convert_range, tasks))
  per_file: List[List[_Result]] = [[] for _ in split_inputs]
  for k, result in zip(owner, results):
    per_file[k].append(result)
  return per_file


def _remove_outputs(out_dir: str, splits: Sequence[str]) -> None:
  """Deletes the report and every (partial) shard of ``splits``."""
  paths = [os.path.join(out_dir, writer_lib.REPORT_FILENAME)]
  for split in splits:
    pattern = os.path.join(out_dir, input_pipeline.shard_pattern(split))
    paths += tf.io.gfile.glob(pattern) + tf.io.gfile.glob(pattern + ".*")
  for path in paths:
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def _merge_skips(
  into: writer_lib.SkipCounter, counts: Mapping[str, int], first_lines: Mapping[str, List[str]]
) -> None:
  """Adds a worker's skips (ranges arrive in file order, so lines stay sorted)."""
  for reason, count in counts.items():
    into.counts[reason] = into.counts.get(reason, 0) + count
    kept = into.first_lines.setdefault(reason, [])
    kept.extend(first_lines.get(reason, [])[: into.keep_first - len(kept)])


def convert(
  fmt: LineFormat, source_dir: str, out_dir: str, options: Optional[ConvertOptions] = None
) -> Dict[str, Any]:
  """Converts the files of ``fmt`` under ``source_dir`` into ``out_dir``.

  Args:
    fmt: The input format.
    source_dir: Folder holding the format's files.
    out_dir: Dataset directory to write (created; a previous dataset of the
      same splits is replaced).
    options: :class:`ConvertOptions`.

  Returns:
    The report (also written to ``out_dir/report.json``, last): ``rows_read``,
    ``rows_written``, ``rows_per_split``, ``positives_per_split``, ``skipped``,
    ``skipped_first_lines``, ``vocabulary_sizes``, ``empty_vocabularies``,
    ``vocabulary_cutoff``, ``warnings`` (also logged) and format facts.

  Raises:
    FileNotFoundError: an input file is missing.
    ValueError: in strict mode, the first bad line (file, line and field); in
      any mode, an empty input file, or a CSV file whose header is not the
      format's.
    OSError: ``out_dir`` is a file or cannot be created, or reading or
      writing failed (disk full, ...): one line naming the path; the partial
      shards are removed and no report is written.
  """
  options = options or ConvertOptions()
  began = time.time()
  inputs = fmt.inputs(source_dir)
  for split_input in inputs:  # before any work, not after the train file
    line_format.check_header(fmt, split_input.path)
  splits = sorted(
    {s.split for s in inputs}
    | ({line_format.VALIDATION} if any(s.holdout for s in inputs) else set())
  )
  _make_out_dir(out_dir)
  try:
    # No completion marker while we write, and no shard of an earlier dataset
    # here (of any split: a split this run does not write must not survive).
    _remove_outputs(out_dir, ("*",))
    report = _convert_files(fmt, inputs, splits, out_dir, options)
    report["seconds"] = round(time.time() - began, 3)
    report = writer_lib.write_report(out_dir, report)
  except BaseException as e:
    try:
      _remove_outputs(out_dir, splits)
      removed = "its partial shards removed"
    except (OSError, tf.errors.OpError):  # keep the first error
      removed = "some partial shards could not be removed"
    if isinstance(e, (OSError, tf.errors.OpError)) and not isinstance(e, FileNotFoundError):
      detail = e.message if isinstance(e, tf.errors.OpError) else str(e)
      raise OSError(f"converting into {out_dir} failed, {removed}: {detail}") from None
    raise
  for warning in report["warnings"]:
    logging.warning("%s: %s", out_dir, warning)
  return report


def _make_out_dir(out_dir: str) -> None:
  if tf.io.gfile.exists(out_dir) and not tf.io.gfile.isdir(out_dir):
    raise NotADirectoryError(f"out_dir {out_dir} is a file, not a directory")
  try:
    tf.io.gfile.makedirs(out_dir)
  except tf.errors.OpError as e:  # a parent is a file, no permission, ...
    raise OSError(f"cannot create out_dir {out_dir}: {e.message}") from None


def _convert_files(
  fmt: LineFormat,
  inputs: Sequence[SplitInput],
  splits: Sequence[str],
  out_dir: str,
  options: ConvertOptions,
) -> Dict[str, Any]:
  """Writes shards, vocabularies and schema; returns the report (less its
  ``seconds``), which the caller writes."""
  skips = writer_lib.SkipCounter(strict=options.strict)
  context = fmt.prepare(inputs, skips)
  per_input: List[Tuple[SplitInput, List[_Result]]] = []
  for split in dict.fromkeys(s.split for s in inputs):  # file order within a split
    of_split = [s for s in inputs if s.split == split]
    per_input += zip(of_split, _run_split(fmt, of_split, context, out_dir, options))
  results = [result for _, file_results in per_input for result in file_results]

  rows_per_split = {split: 0 for split in splits}
  positives = {split: {step: 0 for step in fmt.steps} for split in splits}
  counters = {t.name: vocabulary.IdCounter() for t in fmt.fields() if t.kind != FieldKind.DENSE}
  facts: Dict[str, Any] = {}
  problems: Dict[Tuple[str, int], Tuple[str, str]] = {}
  for result in results:
    _merge_skips(skips, result.skip_counts, result.skip_first_lines)
    line_format.merge_counts(rows_per_split, result.rows_per_split)
    line_format.merge_counts(positives, result.positives)
    line_format.merge_counts(facts, result.facts)
    for name, counter in result.counters.items():
      counters[name].merge(counter)
    problems.update(result.shared_problems)
  # A bad shared row counts once, however many workers met it.
  for (path, number), (reason, detail) in sorted(problems.items()):
    skips.skip(reason, path, number, detail)

  excluded = {name: fmt.excluded_ids(name) for name in counters}
  sizes = vocabulary.write_vocabularies(out_dir, counters, options.min_count, excluded)
  cutoff = {
    name: vocabulary.cutoff_summary(counter, options.min_count, excluded[name])
    for name, counter in counters.items()
  }
  schema = build_schema(fmt, sizes)
  schema.save(out_dir)
  rows_read = {s.path: sum(r.rows_read for r in file_results) for s, file_results in per_input}
  warnings = [
    w
    for w in (
      _empty_split_warning(inputs, rows_read, rows_per_split, options),
      _empty_vocabulary_warning(sizes, cutoff, options.min_count),
    )
    if w
  ]
  return {
    "format": fmt.name,
    "inputs": _input_paths(inputs),
    "rows_read": sum(rows_read.values()),
    "rows_written": sum(rows_per_split.values()),
    "rows_per_split": rows_per_split,
    "positives_per_split": positives,
    "vocabulary_sizes": sizes,
    "empty_vocabularies": sorted(n for n, size in sizes.items() if not size),
    "vocabulary_cutoff": cutoff,
    "warnings": warnings,
    "options": dataclasses.asdict(options),
    **fmt.report_facts(context),
    **facts,
    **skips.to_json(),
  }


def _input_paths(inputs: Sequence[SplitInput]) -> Dict[str, Any]:
  """``split -> absolute path`` (a list of paths for a split of several files)."""
  paths: Dict[str, List[str]] = {}
  for s in inputs:
    paths.setdefault(s.split, []).append(os.path.abspath(s.path))
  return {split: p[0] if len(p) == 1 else p for split, p in paths.items()}


def _empty_split_warning(
  inputs: Sequence[SplitInput],
  rows_read: Mapping[str, int],
  rows_per_split: Mapping[str, int],
  options: ConvertOptions,
) -> Optional[str]:
  """One line naming every split with no rows and why, or None."""
  notes = []
  for split, rows in rows_per_split.items():
    if rows:
      continue
    source = [s for s in inputs if s.split == split]
    if not source:  # validation held out of the train file
      if options.validation_fraction == 0:
        why = "validation_fraction is 0"
      else:
        why = (
          f"no train row fell in the validation_fraction={options.validation_fraction:g} hold-out"
        )
      notes.append(f"{split} ({why}: raise --validation_fraction)")
      continue
    name = ", ".join(os.path.basename(s.path) for s in source)
    read = sum(rows_read[s.path] for s in source)
    written = rows + (rows_per_split.get(line_format.VALIDATION, 0) if source[0].holdout else 0)
    if not read:
      why = f"{name} has no data rows"
    elif written:
      why = f"every row of {name} was held out for validation: lower --validation_fraction"
    else:
      why = f"all {read} data rows of {name} were skipped: see skipped in report.json"
    notes.append(f"{split} ({why})")
  return f"empty split(s), 0 rows written: {'; '.join(notes)}" if notes else None


def _empty_vocabulary_warning(
  sizes: Mapping[str, int], cutoff: Mapping[str, Mapping[str, int]], min_count: int
) -> Optional[str]:
  """One line naming every field whose vocabulary is empty and why, or None."""
  empty = sorted(name for name, size in sizes.items() if not size)
  if not empty:
    return None
  rare = [name for name in empty if cutoff[name]["ids_seen"]]
  absent = [name for name in empty if not cutoff[name]["ids_seen"]]
  notes = []
  if rare:
    notes.append(
      f"{', '.join(rare)}: every train id seen <= {min_count} times "
      f"(lower --min_count={min_count} to keep ids)"
    )
  if absent:
    notes.append(f"{', '.join(absent)}: no train row has an id")
  return f"empty vocabularies, every id maps to the OOV row: {'; '.join(notes)}"


def convert_ali_ccp(
  raw_dir: str, out_dir: str, cache_rows: int = ali_ccp.DEFAULT_CACHE_ROWS, **options: Any
) -> Dict[str, Any]:
  """Raw Tianchi Ali-CCP (``sample_skeleton_*.csv`` + ``common_features_*.csv``)."""
  return convert(ali_ccp.RawAliCcp(cache_rows), raw_dir, out_dir, ConvertOptions(**options))


def convert_ali_ccp_processed(source_dir: str, out_dir: str, **options: Any) -> Dict[str, Any]:
  """Processed Ali-CCP CSV (``train.csv``, ``test.csv``, optional ``val.csv``)."""
  return convert(csv_formats.ProcessedAliCcp(), source_dir, out_dir, ConvertOptions(**options))


def convert_aliexpress(source_dir: str, out_dir: str, **options: Any) -> Dict[str, Any]:
  """Processed AliExpress CSV (``train.csv``, ``test.csv``)."""
  return convert(csv_formats.AliExpress(), source_dir, out_dir, ConvertOptions(**options))


def convert_paddle_esmm(source_dir: str, out_dir: str, **options: Any) -> Dict[str, Any]:
  """PaddleRec ESMM token files (``train.txt``, ``test.txt``)."""
  return convert(csv_formats.PaddleEsmm(), source_dir, out_dir, ConvertOptions(**options))


def convert_columns(
  spec: column_spec.ColumnSpec, source_dir: str, out_dir: str, **options: Any
) -> Dict[str, Any]:
  """Any CSV / TSV with a header, read through a column spec
  (:mod:`tafe_tf.data.column_spec`; the files are ``spec.files`` in ``source_dir``)."""
  return convert(csv_formats.SpecFormat(spec), source_dir, out_dir, ConvertOptions(**options))


def convert_tfrecords(
  spec: column_spec.ColumnSpec, source_dir: str, out_dir: str, **options: Any
) -> Dict[str, Any]:
  """Existing ``tf.train.Example`` TFRecords (gzip or not) read through a column
  spec: its column names are the feature names (:mod:`tafe_tf.data.tfrecord_format`;
  one worker per file)."""
  return convert(
    tfrecord_format.TFRecordFormat(spec), source_dir, out_dir, ConvertOptions(**options)
  )


CONVERTERS = {
  "ali_ccp": convert_ali_ccp,
  "ali_ccp_processed": convert_ali_ccp_processed,
  "aliexpress": convert_aliexpress,
  "paddle_esmm": convert_paddle_esmm,
}
