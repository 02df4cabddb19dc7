"""The feature schema: one declaration drives parsing, model inputs and serving.

A :class:`Schema` lists the input fields of a dataset and the ordered conversion
steps (``click``, ``purchase``, ...). Every other part of the package reads it:

* :func:`tf_example_spec` (what a serialized example holds) and
  :mod:`tafe_tf.example_codec`, which encodes it (converters, generator, tests),
* :mod:`tafe_tf.input_pipeline` (parsing into ``(features, labels)``),
* the embedding front end (a table per field; the model sets the widths),
* the serving signature (:func:`serving_input_signature`).

Ids are *raw* everywhere outside the model (the ids as the data has them); the
mapping to embedding rows happens inside the graph (:class:`IdLookup` modes below),
so a served model takes raw ids and an unseen id lands on the out-of-vocabulary
row 0 instead of failing.

Serialized form of one example (``tf.train.Example``):

=====================  =========================================================
key                    value
=====================  =========================================================
``<field>``            int64 (``id``), int64 list (``weighted_ids``) or float
                       list of length ``dim`` (``dense``)
``<field>_weight``     float list, one weight per id (``weighted_ids`` only)
``label/<step>``       int64 0/1, the *cumulative* label y_t (all steps up to t
                       happened)
``oracle/<step>``      float, the true conditional probability q_t (synthetic
                       data only; never a model input)
``sample_id``          bytes (where the data has one)
=====================  =========================================================
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tensorflow as tf
from absl import logging

from tafe_tf import files

SCHEMA_FILENAME = "schema.json"
# Padding id for multi-valued fields in dense (padded) form; never a real id.
PAD_ID = -1
WEIGHT_SUFFIX = "_weight"
LABEL_PREFIX = "label/"
ORACLE_PREFIX = "oracle/"
SAMPLE_ID_KEY = "sample_id"
# Largest magnitude of a dense value or weight the package accepts. Converted
# data holds log counts and scaled values; a value past this is an encoding or
# unit error upstream, and at such inputs a model answers a saturated constant
# that looks plausible. Serving rejects it (and NaN, +-inf) instead, and the
# converters skip and count a row holding one (value_fits, below).
MAX_ABS_VALUE = 1e9
# Ids are int64 in the serialized form and in the model's lookups: an id past
# these bounds would wrap (2^64 + 5 reads back as 5, 2^63 + 5 as negative).
MIN_ID = -(1 << 63)
MAX_ID = (1 << 63) - 1


def id_fits(value: int) -> bool:
  """Whether ``value`` is an id the package can hold (an int64)."""
  return MIN_ID <= value <= MAX_ID


def value_fits(value: float) -> bool:
  """Whether ``value`` is a dense value or weight the package accepts: finite
  and at most :data:`MAX_ABS_VALUE` in magnitude (False for NaN and +-inf)."""
  return -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE


# The per-field width schema.json files carried before widths moved into the
# model's hyperparameters (read, noted and ignored; never written).
_OLD_WIDTH_KEY = "embedding_dim"

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class FieldKind(str, enum.Enum):
  """What a field holds."""

  ID = "id"  # one integer id per example
  WEIGHTED_IDS = "weighted_ids"  # a variable-length list of ids, a weight each
  DENSE = "dense"  # a fixed-length float vector


class LookupKind(str, enum.Enum):
  """How a raw id becomes an embedding row (row 0 is out-of-vocabulary)."""

  IDENTITY = "identity"  # ids 0..num_ids-1 -> rows 1..num_ids; others -> 0
  VOCABULARY = "vocabulary"  # i-th line of vocabulary_file -> row i+1; others -> 0
  HASH = "hash"  # row = 1 + fingerprint(id) mod num_ids


@dataclasses.dataclass(frozen=True)
class FieldSpec:
  """One input field.

  Attributes:
    name: Feature key (letters, digits, underscore; starts with a letter).
    kind: A :class:`FieldKind`.
    lookup: A :class:`LookupKind` (id kinds only).
    num_ids: Number of distinct in-vocabulary ids (identity: the id range; hash:
      the number of buckets; vocabulary: the number of lines in the file).
      The embedding table has ``num_ids + 1`` rows (row 0 = OOV). A
      vocabulary may be empty (0): every id of the field is then OOV.
    vocabulary_file: Path of the vocabulary, one id a line, relative to the
      schema's directory unless absolute (vocabulary lookup only).
    dim: Length of a dense field's vector.
    group: Free-form tag (``user``, ``item``, ``context``, ``cross``), used by
      the synthetic generator and reports; no effect on the model.
  """

  name: str
  kind: FieldKind
  lookup: Optional[LookupKind] = None
  num_ids: int = 0
  vocabulary_file: Optional[str] = None
  dim: int = 1
  group: str = ""

  def __post_init__(self):
    object.__setattr__(self, "kind", FieldKind(self.kind))
    if self.lookup is not None:
      object.__setattr__(self, "lookup", LookupKind(self.lookup))
    if not _NAME_RE.match(self.name):
      raise ValueError(
        f"field name {self.name!r}: use letters, digits and '_', starting with a letter"
      )
    if self.kind == FieldKind.DENSE:
      if self.dim < 1:
        raise ValueError(f"field {self.name!r}: dense dim must be >= 1")
      return
    if self.lookup is None:
      raise ValueError(f"field {self.name!r}: an id field needs a lookup")
    if self.lookup == LookupKind.VOCABULARY and not self.vocabulary_file:
      raise ValueError(f"field {self.name!r}: vocabulary lookup needs vocabulary_file")
    # An empty vocabulary (every training id rare) is legal: all ids are OOV.
    least = 0 if self.lookup == LookupKind.VOCABULARY else 1
    if self.num_ids < least:
      raise ValueError(f"field {self.name!r}: num_ids must be >= {least}, got {self.num_ids}")

  @property
  def is_id(self) -> bool:
    return self.kind in (FieldKind.ID, FieldKind.WEIGHTED_IDS)

  @property
  def num_rows(self) -> int:
    """Rows of the embedding table, the OOV row 0 included."""
    return self.num_ids + 1

  @property
  def weight_key(self) -> str:
    return self.name + WEIGHT_SUFFIX

  def to_json(self) -> Dict[str, Any]:
    out = {"name": self.name, "kind": self.kind.value}
    if self.kind == FieldKind.DENSE:
      out.update(dim=self.dim)
    else:
      out.update(lookup=self.lookup.value, num_ids=self.num_ids)
      if self.vocabulary_file:
        out["vocabulary_file"] = self.vocabulary_file
    if self.group:
      out["group"] = self.group
    return out


@dataclasses.dataclass(frozen=True)
class Schema:
  """Fields and ordered conversion steps of one dataset.

  Attributes:
    name: Dataset name (``synthetic``, ``ali_ccp``, ``aliexpress``, ...).
    fields: The input fields, in model order.
    steps: Ordered step names; step t can only happen after step t-1.
    user_field: Name of the field that identifies a user (for GAUC), if any.
    has_sample_id: Whether examples carry ``sample_id``.
    has_oracle: Whether examples carry ``oracle/<step>`` (synthetic data).
    directory: Where the schema file lives (resolves vocabulary paths); not
      serialized.
  """

  name: str
  fields: Tuple[FieldSpec, ...]
  steps: Tuple[str, ...]
  user_field: Optional[str] = None
  has_sample_id: bool = False
  has_oracle: bool = False
  directory: Optional[str] = dataclasses.field(default=None, compare=False)

  def __post_init__(self):
    object.__setattr__(
      self, "fields", tuple(f if isinstance(f, FieldSpec) else FieldSpec(**f) for f in self.fields)
    )
    object.__setattr__(self, "steps", tuple(self.steps))
    if len(self.steps) < 2:
      raise ValueError(f"schema {self.name!r}: needs at least 2 steps, got {list(self.steps)}")
    for step in self.steps:
      if not _NAME_RE.match(step):
        raise ValueError(f"step name {step!r}: use letters, digits and '_'")
    if len(set(self.steps)) != len(self.steps):
      raise ValueError(f"schema {self.name!r}: duplicate step names {self.steps}")
    if not self.fields:
      raise ValueError(f"schema {self.name!r}: has no fields")
    keys = set()
    for f in self.fields:
      for key in (f.name, f.weight_key) if f.kind == FieldKind.WEIGHTED_IDS else (f.name,):
        if key in keys or key == SAMPLE_ID_KEY:
          raise ValueError(f"schema {self.name!r}: feature key {key!r} is used twice")
        keys.add(key)
      if f.vocabulary_file is not None:
        _check_vocabulary_file(self.name, f)
    if self.user_field is not None and self.user_field not in self.field_names:
      raise ValueError(f"schema {self.name!r}: user_field {self.user_field!r} is not a field")

  # --- access -------------------------------------------------------------

  @property
  def field_names(self) -> List[str]:
    return [f.name for f in self.fields]

  @property
  def num_steps(self) -> int:
    return len(self.steps)

  def field(self, name: str) -> FieldSpec:
    for f in self.fields:
      if f.name == name:
        return f
    raise KeyError(f"schema {self.name!r} has no field {name!r}")

  def fields_of(self, kind: FieldKind) -> List[FieldSpec]:
    return [f for f in self.fields if f.kind == kind]

  def vocabulary_path(self, spec: FieldSpec) -> str:
    """Absolute path of a field's vocabulary file."""
    if spec.vocabulary_file is None:
      raise ValueError(f"field {spec.name!r} has no vocabulary file")
    if self.directory is None:
      return spec.vocabulary_file
    return os.path.join(self.directory, spec.vocabulary_file)

  # --- (de)serialization ---------------------------------------------------

  def to_json(self) -> Dict[str, Any]:
    return {
      "name": self.name,
      "steps": list(self.steps),
      "fields": [f.to_json() for f in self.fields],
      "user_field": self.user_field,
      "has_sample_id": self.has_sample_id,
      "has_oracle": self.has_oracle,
    }

  @classmethod
  def from_json(cls, obj: Mapping[str, Any], directory: Optional[str] = None) -> "Schema":
    try:
      fields = [dict(f) for f in obj["fields"]]
      widths = {f["name"]: f.pop(_OLD_WIDTH_KEY) for f in fields if _OLD_WIDTH_KEY in f}
      if widths:
        # Older converters wrote embedding widths into the schema; they are
        # model hyperparameters now. The data itself is unchanged, so it stays
        # usable without reconverting: note what is ignored instead of failing.
        logging.warning(
          "schema %r%s: ignoring the embedding_dim of fields %s (embedding "
          "widths are model hyperparameters now: embedding_dim, "
          "field_embedding_dims)",
          obj.get("name"),
          f" in {directory}" if directory else "",
          widths,
        )
      return cls(
        name=obj["name"],
        steps=tuple(obj["steps"]),
        fields=tuple(FieldSpec(**f) for f in fields),
        user_field=obj.get("user_field"),
        has_sample_id=bool(obj.get("has_sample_id", False)),
        has_oracle=bool(obj.get("has_oracle", False)),
        directory=directory,
      )
    except (KeyError, TypeError) as e:
      raise ValueError(f"not a valid schema: {e}") from e

  def save(self, directory: str) -> str:
    """Writes ``directory/schema.json`` atomically; returns its path."""
    tf.io.gfile.makedirs(directory)
    return files.write_json_atomic(
      os.path.join(directory, SCHEMA_FILENAME), self.to_json(), sort_keys=False
    )

  @classmethod
  def load(cls, path: str) -> "Schema":
    """Reads a schema from ``path`` (a schema.json or a directory holding one)."""
    if tf.io.gfile.isdir(path):
      path = os.path.join(path, SCHEMA_FILENAME)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"no schema file at {path}")
    with tf.io.gfile.GFile(path) as f:
      try:
        obj = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    try:
      return cls.from_json(obj, directory=os.path.dirname(path))
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from e


# --- serialized-example contract --------------------------------------------


def _check_vocabulary_file(schema_name: str, spec: FieldSpec) -> None:
  """A schema's vocabularies live inside its directory: relative paths that
  stay there. Otherwise training would copy files to or from anywhere (a
  ``../..`` path writes outside the model dir) and export would pack them."""
  path = spec.vocabulary_file
  parts = path.replace("\\", "/").split("/")
  if (
    os.path.isabs(path)
    or path.startswith("\\")
    or ".." in parts
    or not (os.path.normpath(path).strip(". /"))
  ):
    raise ValueError(
      f"schema {schema_name!r}: field {spec.name!r}: vocabulary_file "
      f"{path!r} must be a relative path inside the dataset directory "
      "(no '..', not absolute)"
    )


def label_key(step: str) -> str:
  return LABEL_PREFIX + step


def oracle_key(step: str) -> str:
  return ORACLE_PREFIX + step


def tf_example_spec(
  schema: Schema, with_labels: bool = True, with_metadata: bool = True
) -> Dict[str, Any]:
  """The ``tf.io.parse_example`` spec of a serialized example.

  Multi-valued fields parse as ``tf.RaggedTensor`` (ids int64, weights float32).

  Args:
    schema: The dataset schema.
    with_labels: Include ``label/<step>`` (required, int64).
    with_metadata: Include ``sample_id`` and ``oracle/<step>`` where the schema
      says the data has them.
  """
  spec: Dict[str, Any] = {}
  for f in schema.fields:
    if f.kind == FieldKind.ID:
      spec[f.name] = tf.io.FixedLenFeature([], tf.int64)
    elif f.kind == FieldKind.WEIGHTED_IDS:
      spec[f.name] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
      spec[f.weight_key] = tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64)
    else:
      spec[f.name] = tf.io.FixedLenFeature([f.dim], tf.float32)
  if with_labels:
    for step in schema.steps:
      spec[label_key(step)] = tf.io.FixedLenFeature([], tf.int64)
  if with_metadata:
    if schema.has_sample_id:
      spec[SAMPLE_ID_KEY] = tf.io.FixedLenFeature([], tf.string, default_value="")
    if schema.has_oracle:
      for step in schema.steps:
        spec[oracle_key(step)] = tf.io.FixedLenFeature([], tf.float32)
  return spec


# --- model-side views ---------------------------------------------------------


def model_feature_keys(schema: Schema) -> List[str]:
  """The keys of the features dict the models read, in schema order."""
  keys = []
  for f in schema.fields:
    keys.append(f.name)
    if f.kind == FieldKind.WEIGHTED_IDS:
      keys.append(f.weight_key)
  return keys


def serving_input_signature(schema: Schema) -> Dict[str, tf.TensorSpec]:
  """Dense, batch-major inputs that TF Serving's JSON and gRPC APIs carry.

  ``id``: int64 [batch]; ``weighted_ids``: int64 [batch, max_len] padded with
  :data:`PAD_ID` plus float32 [batch, max_len] weights (padding weight ignored);
  ``dense``: float32 [batch, dim].
  """
  sig: Dict[str, tf.TensorSpec] = {}
  for f in schema.fields:
    if f.kind == FieldKind.ID:
      sig[f.name] = tf.TensorSpec([None], tf.int64, name=f.name)
    elif f.kind == FieldKind.WEIGHTED_IDS:
      sig[f.name] = tf.TensorSpec([None, None], tf.int64, name=f.name)
      sig[f.weight_key] = tf.TensorSpec([None, None], tf.float32, name=f.weight_key)
    else:
      sig[f.name] = tf.TensorSpec([None, f.dim], tf.float32, name=f.name)
  return sig


def dummy_batch(schema: Schema, batch_size: int = 2) -> Dict[str, tf.Tensor]:
  """A batch in the serving form with every field present (builds variables)."""
  batch: Dict[str, tf.Tensor] = {}
  for f in schema.fields:
    if f.kind == FieldKind.ID:
      batch[f.name] = tf.zeros([batch_size], tf.int64)
    elif f.kind == FieldKind.WEIGHTED_IDS:
      batch[f.name] = tf.zeros([batch_size, 1], tf.int64)
      batch[f.weight_key] = tf.ones([batch_size, 1], tf.float32)
    else:
      batch[f.name] = tf.zeros([batch_size, f.dim], tf.float32)
  return batch


def to_dense_padded(features: Mapping[str, Any], schema: Schema) -> Dict[str, tf.Tensor]:
  """Converts ragged multi-valued fields to the padded serving form."""
  out = dict(features)
  for f in schema.fields_of(FieldKind.WEIGHTED_IDS):
    ids, weights = features[f.name], features[f.weight_key]
    if isinstance(ids, tf.RaggedTensor):
      out[f.name] = ids.to_tensor(default_value=PAD_ID)
      out[f.weight_key] = weights.to_tensor(default_value=0.0)
  return out


def split_labels(
  parsed: Mapping[str, tf.Tensor], schema: Schema
) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
  """Splits a parsed example dict into ``(features, labels)``.

  Labels are float32, keyed by step name. ``sample_id`` and ``oracle/<step>``,
  when parsed, stay in the features dict (models ignore keys they don't read).
  """
  features = {k: v for k, v in parsed.items() if not k.startswith(LABEL_PREFIX)}
  labels = {
    step: tf.cast(parsed[label_key(step)], tf.float32)
    for step in schema.steps
    if label_key(step) in parsed
  }
  return features, labels
