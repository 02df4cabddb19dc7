"""Scoring rows into a predictions CSV: the library behind ``launch.predict``.

Three parts, each replaceable:

* a **source** (:class:`RecordSource`) yields batches of serialized
  ``tf.train.Example`` in a dataset's form, labelled or not (labels and the
  oracle are ignored; ``sample_id``, where the schema has it, is the row
  key). :class:`ConvertedSplit` reads one split of a converted dataset
  directory, in file order. A :class:`KeyedRecordSource` names its rows
  itself: ``tafe_tf.data.raw_rows.RawRows`` encodes the rows of raw CSV, TSV
  or TFRecord files read through a column spec, keyed by the spec's key
  column or the line.
* a **scorer** (:data:`Scorer`) maps such a batch to the model's named
  outputs. Both scorers run the serving path: :func:`model_scorer` traces the
  exported ``serving_examples`` function (:class:`tafe_tf.export
  .ServingFunctions`) over a trained Keras model, :class:`SavedModelScorer`
  calls that signature of an exported SavedModel, so offline scores are what
  TF Serving answers.
* the **writer**, :class:`tafe_tf.evaluation.PredictionsCsvWriter` (the one
  that ``launch.evaluate --predictions`` uses): the key column (``sample_id``,
  or ``row``, the 0-based position in the source, when the data has no ids),
  then ``p_<step>`` and ``q_<step>`` per step.

:func:`predict_to_csv` streams: one batch in memory at a time, rows written
as they are scored, into ``<output>.incomplete``, renamed to the output only
when every row is written (a crash leaves no file that looks complete, and an
older output stays as it was).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tafe_tf import evaluation, export, files, input_pipeline
from tafe_tf import features as features_lib

ROW_KEY = "row"
DEFAULT_BATCH_SIZE = 4096


class RecordSource(Protocol):
  """Batches of serialized ``tf.train.Example`` in ``schema``'s form."""

  schema: features_lib.Schema
  description: str

  def batches(self, batch_size: int) -> Iterator[tf.Tensor]:
    """String tensors ``[<= batch_size]``, in a fixed order."""
    ...


class KeyedRecordSource(Protocol):
  """Batches of serialized ``tf.train.Example`` with a key per row, named
  ``key_column`` in the CSV."""

  schema: features_lib.Schema
  description: str
  key_column: str

  def keyed_batches(self, batch_size: int) -> Iterator[Tuple[tf.Tensor, Sequence[str]]]:
    """``(string tensor [<= batch_size], its rows' keys)``, in a fixed order."""
    ...


@dataclasses.dataclass
class ConvertedSplit:
  """One split of a converted dataset directory (``launch.convert``),
  checked against its ``report.json`` and read in file order.

  Raises (on construction):
    FileNotFoundError, ValueError: as
      :func:`tafe_tf.input_pipeline.list_split_files` and
      :meth:`tafe_tf.features.Schema.load`.
  """

  data_dir: str
  split: str

  def __post_init__(self):
    self.schema = features_lib.Schema.load(self.data_dir)
    self.files = input_pipeline.list_split_files(self.data_dir, self.split)
    self.description = f"{self.data_dir} split {self.split!r}"

  def batches(self, batch_size: int) -> Iterator[tf.Tensor]:
    ds = tf.data.TFRecordDataset(self.files, compression_type=input_pipeline.COMPRESSION)
    return iter(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


# A scorer: serialized examples [b] -> outputs by name ([b] float32 each).
Scorer = Callable[[tf.Tensor], Dict[str, tf.Tensor]]


def model_scorer(model: tf.keras.Model, schema: features_lib.Schema) -> Scorer:
  """The exported ``serving_examples`` function over a trained model."""
  return export.ServingFunctions(model, schema).serve_examples


class SavedModelScorer:
  """The ``serving_examples`` signature of an exported SavedModel, as a
  :data:`Scorer`.

  Args:
    path: A version directory (``EXPORT_DIR/<version>``) or an export base
      directory (its highest version is used).

  Attributes:
    path: The version directory loaded.
    inputs: ``serving_default``'s input specs by name (the features the model
      reads).
    outputs: The signature's output names, sorted.

  Raises:
    FileNotFoundError: no SavedModel there.
    ValueError: it lacks the export's two signatures.
  """

  def __init__(self, path: str):
    if not tf.saved_model.contains_saved_model(path):
      path = export.latest_version(path)
      if not tf.saved_model.contains_saved_model(path):
        raise FileNotFoundError(f"{path}: no saved_model.pb there")
    self.path = path
    self._loaded = tf.saved_model.load(path)
    missing = [
      name
      for name in (export.SERVING_DEFAULT, export.SERVING_EXAMPLES)
      if name not in self._loaded.signatures
    ]
    if missing:
      raise ValueError(
        f"{path} lacks the signature(s) {', '.join(missing)} (it has "
        f"{', '.join(sorted(self._loaded.signatures)) or 'none'}); export it with launch.export"
      )
    self._signature = self._loaded.signatures[export.SERVING_EXAMPLES]
    self.inputs = dict(
      self._loaded.signatures[export.SERVING_DEFAULT].structured_input_signature[1]
    )
    self.outputs = sorted(self._signature.structured_outputs)

  def __call__(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self._signature(**{export.EXAMPLES_KEY: examples})

  def steps(self, data_schema: features_lib.Schema) -> List[str]:
    """The data's steps, checked: a ``p_``/``q_`` output for each and for no
    other step; else a ValueError naming both."""
    theirs = sorted(k[2:] for k in self.outputs if k.startswith("p_"))
    steps = list(data_schema.steps)
    if sorted(steps) != theirs or any(f"q_{s}" not in self.outputs for s in steps):
      raise ValueError(f"{self.path} predicts steps {theirs}; the data's schema has steps {steps}")
    return steps

  def check_inputs(self, data_schema: features_lib.Schema) -> None:
    """Raises ValueError naming the first input the data cannot feed."""
    have = features_lib.serving_input_signature(data_schema)
    for name, spec in sorted(self.inputs.items()):
      if name not in have:
        raise ValueError(
          f"the SavedModel reads input {name!r}, which the data's schema "
          f"{data_schema.name!r} lacks (its fields: {', '.join(data_schema.field_names)})"
        )
      if have[name].dtype != spec.dtype or not spec.shape.is_compatible_with(have[name].shape):
        raise ValueError(
          f"input {name!r} is {spec.dtype.name} {spec.shape} in the SavedModel but "
          f"{have[name].dtype.name} {have[name].shape} in the data"
        )


def check_inputs(model_schema: features_lib.Schema, data_schema: features_lib.Schema) -> None:
  """Raises ValueError naming the first field the data cannot feed: absent,
  of another kind, or (dense) of another width."""
  for want in model_schema.fields:
    if want.name not in data_schema.field_names:
      raise ValueError(
        f"the model reads field {want.name!r}, which the data's schema "
        f"{data_schema.name!r} lacks (its fields: {', '.join(data_schema.field_names)})"
      )
    have = data_schema.field(want.name)
    if have.kind != want.kind or (
      want.kind == features_lib.FieldKind.DENSE and have.dim != want.dim
    ):
      raise ValueError(
        f"field {want.name!r} is {_describe(want)} for the model but {_describe(have)} in the data"
      )


def _describe(spec: features_lib.FieldSpec) -> str:
  kind = spec.kind.value
  return f"{kind} of width {spec.dim}" if spec.kind == features_lib.FieldKind.DENSE else kind


@dataclasses.dataclass(frozen=True)
class PredictSummary:
  """What :func:`predict_to_csv` wrote.

  Attributes:
    path: The CSV file.
    rows: Data rows written.
    key_column: ``sample_id``, ``row``, or a keyed source's ``key_column``.
    escaped_keys: Keys that were not UTF-8, written with ``\\xNN`` escapes.
  """

  path: str
  rows: int
  key_column: str
  escaped_keys: int


def predict_to_csv(
  source: Union[RecordSource, KeyedRecordSource],
  scorer: Scorer,
  steps: Sequence[str],
  path: str,
  batch_size: int = DEFAULT_BATCH_SIZE,
  progress: Optional[Callable[[int], None]] = None,
) -> PredictSummary:
  """Scores every record of ``source`` and writes the predictions CSV.

  Args:
    source: Where the serialized examples come from (and, for a
      :class:`KeyedRecordSource`, the row keys).
    scorer: :func:`model_scorer` or a :class:`SavedModelScorer`.
    steps: The model's steps, in order: one ``p_``/``q_`` pair each.
    path: The CSV to write (atomically, see the module doc).
    batch_size: Records scored at once (and held in memory).
    progress: Called with the rows written so far after each batch.

  Returns:
    A :class:`PredictSummary`.

  Raises:
    ValueError: the scorer lacks an output of a step, a batch fails the
      serving checks (NaN, a missing field), or the source is empty (no file
      is written then).
  """
  keyed = hasattr(source, "keyed_batches")
  with_ids = source.schema.has_sample_id and not keyed
  if keyed:
    key_column = source.key_column
    batches = source.keyed_batches(batch_size)
  else:
    key_column = features_lib.SAMPLE_ID_KEY if with_ids else ROW_KEY
    batches = ((serialized, None) for serialized in source.batches(batch_size))
  id_spec = {features_lib.SAMPLE_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
  escaped = 0
  with files.atomic_text_file(path) as f:
    writer = evaluation.PredictionsCsvWriter(f, steps, key_column)
    for serialized, given_keys in batches:
      try:
        outputs = scorer(serialized)
      except tf.errors.InvalidArgumentError as e:  # the serving checks' messages
        first = writer.rows
        raise ValueError(
          f"{source.description} rows {first} to {first + len(serialized) - 1}: "
          f"{_error_line(e.message)}"
        ) from None
      p, q = _columns(outputs, steps, "p"), _columns(outputs, steps, "q")
      if given_keys is not None:
        keys = list(given_keys)
      elif with_ids:
        raw = tf.io.parse_example(serialized, id_spec)[features_lib.SAMPLE_ID_KEY]
        keys, bad = evaluation.decode_keys(raw.numpy().tolist())
        escaped += bad
      else:
        keys = list(range(writer.rows, writer.rows + len(p)))
      writer.write(keys, p, q)
      if progress is not None:
        progress(writer.rows)
    if not writer.rows:
      raise ValueError(f"{source.description} holds no rows: nothing to score")
  return PredictSummary(path, writer.rows, key_column, escaped)


def _columns(outputs: Dict[str, tf.Tensor], steps: Sequence[str], kind: str) -> np.ndarray:
  missing = [f"{kind}_{s}" for s in steps if f"{kind}_{s}" not in outputs]
  if missing:
    raise ValueError(f"the model's outputs miss {missing}; it returned {sorted(outputs)}")
  return np.stack([np.reshape(outputs[f"{kind}_{s}"].numpy(), [-1]) for s in steps], axis=1)


def _error_line(message: str) -> str:
  """The line of a TensorFlow runtime error that says what failed (its
  first lines are often "Graph execution error:" and a traceback)."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  for line in lines:
    if "assertion failed" in line or "Feature:" in line:
      return line
  return lines[-1] if lines else message
