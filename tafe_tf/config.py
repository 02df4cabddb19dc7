"""One typed configuration tree for a training run: :class:`RunConfig`.

::

    RunConfig
      data: DataConfig                  which dataset (and the built-in
                                        synthetic set's knobs)
      model: ModelConfig                the model's name and its typed HParams
      training: TrainingConfig          epochs, batch size, seed, ...
      distribution: DistributionConfig  strategy, precision, XLA, ...
      export: ExportConfig              what to do after training

Every default lives once, in these dataclasses (the model's in its
``HParams`` dataclass, :mod:`tafe_tf.hparams`). Nothing here imports
TensorFlow: the command lines define their flags from this module and answer
``--help`` without it. ``run.json`` in a model
directory is :meth:`RunConfig.to_json` plus a ``provenance`` section that
:meth:`RunConfig.from_json` accepts and ignores by design, so the file any run
writes is a valid input that repeats it. ``from_json`` is strict: an unknown
key anywhere, or a value of the wrong type, is a one-line ValueError naming
where it is and what is valid.

From Python, :meth:`RunConfig.create` is the short form::

    config.RunConfig.create("esmm", hparams={"tower_units": [8]}, epochs=1)

The library never imports ``tafe_tf.data``: :class:`DataConfig` holds the
synthetic set's knobs as plain values and ``launch.train`` maps them onto
``tafe_tf.data.synthetic``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from tafe_tf import hparams as hparams_lib

DATASETS: Tuple[str, ...] = ("synthetic", "ali_ccp", "aliexpress", "tfrecord")
# The tf.distribute strategies and Keras dtype policies a run can use
# (tafe_tf.distribution maps each onto TensorFlow).
STRATEGY_NAMES: Tuple[str, ...] = (
  "auto",
  "one_device",
  "mirrored",
  "multi_worker",
  "tpu",
  "parameter_server",
)
PRECISIONS: Tuple[str, ...] = ("float32", "mixed_bfloat16", "mixed_float16")
# Variables of a parameter-server run are split into shards of at least this
# many bytes, over at most all ps tasks: embedding tables get sharded, the
# small dense layers stay whole.
DEFAULT_MIN_SHARD_BYTES = 256 << 10
VERBOSITIES: Tuple[int, ...] = (0, 1, 2)
# TrainingConfig.calibration (tafe_tf.calibration has what each fits).
CALIBRATIONS: Tuple[str, ...] = ("none", "conditional", "entire_space")
# The run.json section that records where and with what a run was made; read
# back and ignored (it is no input).
PROVENANCE = "provenance"
SECTIONS: Tuple[str, ...] = ("data", "model", "training", "distribution", "export")

# Field metadata of a setting that does not change what a run computes (how
# much it prints, how often it backs up, where it exports): two runs that
# differ only in these are the same run (see RunConfig.identity).
_NOT_IDENTITY = {"identity": False}


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def _one_of(name: str, value: Any, valid: Tuple[Any, ...]) -> None:
  _check(value in valid, f"{name} must be one of {', '.join(str(v) for v in valid)}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which dataset a run trains on.

  Attributes:
    dataset: One of :data:`DATASETS`: ``synthetic`` (the built-in set,
      generated into ``data_dir`` or a cache directory) or the kind of a
      converted dataset directory (``launch.convert``).
    data_dir: The dataset directory ("" for ``synthetic``: the cache). A run
      records the absolute directory it trained on.
    synthetic_steps: Steps of the synthetic chain (2 to 4).
    synthetic_train_rows: Synthetic train rows.
    synthetic_eval_rows: Synthetic validation and test rows (each).
    synthetic_conflict: Conflict between steps in the synthetic truth (None:
      the generator's default).
  """

  dataset: str = "synthetic"
  data_dir: str = ""
  synthetic_steps: int = 2
  synthetic_train_rows: int = 300_000
  synthetic_eval_rows: int = 50_000
  synthetic_conflict: Optional[float] = None

  def __post_init__(self):
    _one_of("dataset", self.dataset, DATASETS)
    _check(
      2 <= self.synthetic_steps <= 4, f"synthetic_steps must be 2 to 4, got {self.synthetic_steps}"
    )
    _check(
      self.synthetic_train_rows >= 1 and self.synthetic_eval_rows >= 1,
      "synthetic_train_rows and synthetic_eval_rows must be >= 1",
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A model and its hyperparameters.

  Attributes:
    name: One of :data:`tafe_tf.hparams.MODEL_NAMES`.
    hparams: An instance of that model's ``HParams`` dataclass (None: its
      defaults).
  """

  name: str = "tafe"
  hparams: Optional[hparams_lib.BaseHParams] = None

  def __post_init__(self):
    cls = hparams_lib.hparams_class(self.name)
    if self.hparams is None:
      object.__setattr__(self, "hparams", cls())
    _check(
      type(self.hparams) is cls,  # pylint: disable=unidiomatic-typecheck
      f"model {self.name!r} takes {cls.__name__}, got {type(self.hparams).__name__}",
    )

  @classmethod
  def create(cls, name: str = "tafe", hparams: Optional[Mapping[str, Any]] = None) -> "ModelConfig":
    """Model ``name`` with ``hparams`` (JSON values or Python ones) over its
    defaults; ValueError on a name it does not take or a wrong type."""
    hparams_cls = hparams_lib.hparams_class(name)
    return cls(
      name,
      _dataclass_from_json(
        hparams_cls,
        dict(hparams or {}),
        "model.hparams",
        lambda names: hparams_lib.check_hparam_names(name, hparams_cls, names),
      ),
    )

  def with_hparams(self, hparams: Mapping[str, Any]) -> "ModelConfig":
    """This model with ``hparams`` replacing the same-named ones."""
    return self.create(self.name, {**self.hparams.to_json(), **hparams})

  def to_json(self) -> Dict[str, Any]:
    return {"name": self.name, "hparams": self.hparams.to_json()}

  @classmethod
  def from_json(cls, obj: Any) -> "ModelConfig":
    _check_object(obj, "model")
    _check_keys(obj, ("name", "hparams"), "model")
    name = obj.get("name", cls.name)
    _check(
      isinstance(name, str) and name in hparams_lib.MODEL_NAMES,
      f"model.name must be one of {', '.join(hparams_lib.MODEL_NAMES)}; got {name!r}",
    )
    _check_object(obj.get("hparams", {}), "model.hparams")
    return cls.create(name, obj.get("hparams"))


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """How to train.

  Attributes:
    epochs: Passes over the training split.
    batch_size: Examples per replica per step (global batch = this x
      replicas).
    learning_rate: Adam learning rate.
    seed: The run seed: shuffling, the synthetic data, and the model's
      initializers and dropout unless its hparams set ``seed``.
    shuffle: Shuffle the training split (False: file order; for runs that
      must see the same batches, e.g. comparing strategies).
    checkpoint_every_steps: Also back up mid-epoch every N steps (0: only at
      epoch ends); a killed run resumes from the last backup.
    steps_per_epoch: Steps per epoch (None: the training split's size over
      the global batch, rounded up).
    monitor: Validation quantity that picks the best epoch: lower is better
      for losses (``val_loss``, ``val_logloss/<step>``), higher otherwise
      (``val_auc/<step>``).
    verbose: Keras progress output (0: none, 1: progress bar, 2: a line per
      epoch).
    calibration: After training, fit a per-step Platt calibration of the
      kept model on the validation split (:mod:`tafe_tf.calibration`):
      ``entire_space`` (each step's p_t against its labels on every row),
      ``conditional`` (each conditional q_t on the rows where the previous
      step happened) or ``none``. It is part of the model, so the export
      serves calibrated probabilities.
  """

  epochs: int = 2
  batch_size: int = 2048
  learning_rate: float = 2e-3
  seed: int = 0
  shuffle: bool = True
  checkpoint_every_steps: int = dataclasses.field(default=0, metadata=_NOT_IDENTITY)
  steps_per_epoch: Optional[int] = None
  monitor: str = "val_loss"
  verbose: int = dataclasses.field(default=1, metadata=_NOT_IDENTITY)
  calibration: str = "entire_space"

  def __post_init__(self):
    _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
    _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
    _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
    _check(
      self.checkpoint_every_steps >= 0,
      f"checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}",
    )
    _check(
      self.steps_per_epoch is None or self.steps_per_epoch >= 1,
      f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}",
    )
    _one_of("verbose", self.verbose, VERBOSITIES)
    _one_of("calibration", self.calibration, CALIBRATIONS)


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
  """Where and how the steps run (docs/distribution.md).

  Attributes:
    strategy: A :data:`tafe_tf.STRATEGY_NAMES` entry.
    tpu_address: TPU name or address (``tpu``; "": TPU_NAME or the local TPU
      VM).
    cpu_devices: Split the CPU into N logical devices (0: no split), e.g. for
      ``mirrored`` with N replicas on a host without GPUs.
    precision: A :data:`tafe_tf.PRECISIONS` entry (the Keras
      dtype policy of the model's layers).
    jit_compile: Compile the train and evaluation steps with XLA; the id
      lookups then run in the input pipeline (always on for ``tpu``).
    min_shard_bytes: Smallest variable shard of a parameter-server run.
  """

  strategy: str = "auto"
  tpu_address: str = dataclasses.field(default="", metadata=_NOT_IDENTITY)
  cpu_devices: int = 0
  precision: str = "float32"
  jit_compile: bool = False
  min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES

  def __post_init__(self):
    _one_of("strategy", self.strategy, STRATEGY_NAMES)
    _one_of("precision", self.precision, PRECISIONS)
    _check(self.cpu_devices >= 0, f"cpu_devices must be >= 0, got {self.cpu_devices}")
    _check(self.min_shard_bytes >= 1, f"min_shard_bytes must be >= 1, got {self.min_shard_bytes}")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """What ``launch.train`` does after training (no effect on the model).

  Attributes:
    evaluate: Evaluate on the test split.
    export: Export a SavedModel for TF Serving.
    export_dir: Export base directory ("": ``<model_dir>/export``).
  """

  evaluate: bool = dataclasses.field(default=True, metadata=_NOT_IDENTITY)
  export: bool = dataclasses.field(default=True, metadata=_NOT_IDENTITY)
  export_dir: str = dataclasses.field(default="", metadata=_NOT_IDENTITY)


_SECTION_CLASSES: Dict[str, Type[Any]] = {
  "data": DataConfig,
  "training": TrainingConfig,
  "distribution": DistributionConfig,
  "export": ExportConfig,
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines a training run (see the module docstring)."""

  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
  distribution: DistributionConfig = dataclasses.field(default_factory=DistributionConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

  @classmethod
  def create(
    cls, model: str = "tafe", hparams: Optional[Mapping[str, Any]] = None, **settings: Any
  ) -> "RunConfig":
    """The defaults with model ``model``, its ``hparams``, and ``settings``
    (field names of the data, training, distribution and export sections,
    e.g. ``epochs=1, strategy="mirrored"``) replaced."""
    return cls(model=ModelConfig.create(model, hparams)).replace(**settings)

  def replace(self, **settings: Any) -> "RunConfig":
    """A copy with section fields replaced by name (as in :meth:`create`);
    ValueError naming the valid names on an unknown one."""
    owner = setting_sections()
    unknown = sorted(set(settings) - set(owner))
    _check(
      not unknown,
      f"unknown run setting{'s' if len(unknown) > 1 else ''} "
      f"{', '.join(unknown)}; valid settings: {', '.join(sorted(owner))}",
    )
    out = self
    for section in _SECTION_CLASSES:
      mine = {k: v for k, v in settings.items() if owner[k] == section}
      if mine:
        current = _json_fields(getattr(out, section))
        out = dataclasses.replace(
          out,
          **{
            section: _dataclass_from_json(_SECTION_CLASSES[section], {**current, **mine}, section)
          },
        )
    return out

  def model_hparams(self) -> hparams_lib.BaseHParams:
    """The hyperparameters a run builds its model with: ``model.hparams``,
    with ``seed`` the run seed (``training.seed``) where they leave it None."""
    hparams = self.model.hparams
    if hparams.seed is None:
      hparams = dataclasses.replace(hparams, seed=self.training.seed)
    return hparams

  def to_json(self) -> Dict[str, Any]:
    """The whole tree as JSON values (tuples as lists)."""
    out = {name: _json_fields(getattr(self, name)) for name in _SECTION_CLASSES}
    out["model"] = self.model.to_json()
    return {name: out[name] for name in SECTIONS}

  @classmethod
  def from_json(cls, obj: Any) -> "RunConfig":
    """The inverse of :meth:`to_json` (missing keys keep their defaults; the
    ``provenance`` section is ignored); ValueError of one line on an unknown
    key or a wrong type."""
    _check_object(obj, "run config")
    _check_keys(obj, SECTIONS + (PROVENANCE,), "run config")
    sections = {
      name: _dataclass_from_json(section_cls, obj.get(name, {}), name)
      for name, section_cls in _SECTION_CLASSES.items()
    }
    return cls(model=ModelConfig.from_json(obj.get("model", {})), **sections)

  def identity(self) -> Dict[str, Any]:
    """``dotted key -> JSON value`` of every setting that changes what the
    run computes (all but verbosity, backup frequency, TPU address and the
    export section)."""
    out = {}
    for name in SECTIONS:
      section = getattr(self, name)
      if name == "model":
        out["model.name"] = section.name
        out.update({f"model.hparams.{k}": v for k, v in section.hparams.to_json().items()})
        continue
      for f in dataclasses.fields(section):
        if f.metadata.get("identity", True):
          out[f"{name}.{f.name}"] = getattr(section, f.name)
    return out

  def differences(self, other: "RunConfig") -> List[str]:
    """Sorted dotted keys whose values differ between two runs' identities."""
    mine, theirs = self.identity(), other.identity()
    return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))


def setting_sections() -> Dict[str, str]:
  """``setting -> section`` for every field of the data, training,
  distribution and export sections (their names are unique)."""
  return {
    f.name: section for section, cls in _SECTION_CLASSES.items() for f in dataclasses.fields(cls)
  }


def setting_default(name: str) -> Any:
  """The default of setting ``name`` (its dataclass field's)."""
  section = _SECTION_CLASSES[setting_sections()[name]]
  return {f.name: f.default for f in dataclasses.fields(section)}[name]


# --- strict JSON -> dataclass ----------------------------------------------------


def _json_fields(obj: Any) -> Dict[str, Any]:
  """A flat dataclass's fields as JSON values (tuples as lists)."""
  return {f.name: _to_json_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _to_json_value(value: Any) -> Any:
  if isinstance(value, tuple):
    return [_to_json_value(v) for v in value]
  if isinstance(value, dict):
    return {k: _to_json_value(v) for k, v in value.items()}
  return value


def _check_object(obj: Any, where: str) -> None:
  _check(isinstance(obj, dict), f"{where}: expected a JSON object, got {_shown(obj)}")


def _check_keys(obj: Mapping[str, Any], valid: Tuple[str, ...], where: str) -> None:
  unknown = sorted(set(obj) - set(valid))
  _check(
    not unknown,
    f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
    f"{', '.join(repr(k) for k in unknown)}; valid keys: "
    f"{', '.join(sorted(valid))}",
  )


def _dataclass_from_json(
  cls: Type[Any], obj: Any, where: str, check_names: Optional[Any] = None
) -> Any:
  """``cls(**obj)`` with every key known and every value of its field's type.

  Args:
    cls: A flat dataclass (fields of bool, int, float, str, Optional[...],
      Tuple[X, ...] and Dict[str, X] types).
    obj: A JSON object (lists stand for tuples; ints for floats).
    where: The section's dotted name, for the messages.
    check_names: Called with the keys instead of the generic unknown-key check
      (the models' own message).

  Raises:
    ValueError: one line, naming ``where`` and the key.
  """
  _check_object(obj, where)
  fields = {f.name for f in dataclasses.fields(cls)}
  if check_names is None:
    _check_keys(obj, tuple(fields), where)
  else:
    try:
      check_names(obj)
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None
  types = typing.get_type_hints(cls)
  values = {k: _typed(v, types[k], f"{where}.{k}") for k, v in obj.items()}
  try:
    return cls(**values)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


def _typed(value: Any, annotation: Any, where: str) -> Any:
  """``value`` as ``annotation`` (a JSON list as a tuple, an int as a float),
  or a ValueError naming ``where`` and the type expected."""
  origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if origin is typing.Union:
    if value is None:
      return None
    inner = [a for a in args if a is not type(None)]
    try:
      return _typed(value, inner[0], where)
    except ValueError as e:
      if not str(e).startswith(f"{where}: expected "):
        raise  # an element's error names the element
      raise ValueError(f"{where}: expected {_describe(annotation)}, got {_shown(value)}") from None
  fail = ValueError(f"{where}: expected {_describe(annotation)}, got {_shown(value)}")
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise fail
    return tuple(_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
  if origin is dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
      raise fail
    return {k: _typed(v, args[1], f"{where}.{k}") for k, v in value.items()}
  if annotation is bool:
    ok = isinstance(value, bool)
  elif annotation is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif annotation is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  elif annotation is str:
    ok = isinstance(value, str)
  else:
    raise TypeError(f"{where}: unsupported field type {annotation!r}")
  if not ok:
    raise fail
  return value


def _describe(annotation: Any) -> str:
  origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if origin is typing.Union:
    inner = [a for a in args if a is not type(None)]
    return f"null or {_describe(inner[0])}"
  if origin is tuple:
    return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
  if origin is dict:
    return f"an object of {_describe(args[1]).split(' ', 1)[1]}s"
  return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[annotation]


def _shown(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."
