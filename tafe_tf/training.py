"""Training a multi-step model with ``model.fit``: checkpoints, resume, best epoch.

A *model directory* is self-contained; everything needed to rebuild, resume,
evaluate and export a run lives in it::

    run.json            the run's tafe_tf.config.RunConfig (+ provenance)
    schema/             the dataset's schema.json and vocabularies (copied)
    backup/             tf.keras.callbacks.BackupAndRestore state (resume after a
                        crash, mid-epoch with checkpoint_every_steps); removed by
                        Keras when training ends
    checkpoints/        weights after every epoch (epoch-001, ...)
    best/               weights of the epoch best on validation + best.json
    calibration.json    the per-step calibration fitted on validation after
                        training (tafe_tf.calibration), applied on load
    history.csv         per-epoch losses and metrics (appended across resumes)
    logs/               TensorBoard
    train_report.json   what happened: epochs, best epoch, its validation metrics
    .lock               held (``flock``) by the process training into it

A rerun into the same directory resumes the same run, returns a finished one
without training, and refuses another run (:func:`run_state`). One process at
a time trains into a directory (:func:`model_dir_lock`).

Id-heavy click logs overfit after one epoch (the "one-epoch phenomenon"), so
the weights kept at the end are those of the epoch with the best validation
loss, not the last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import tempfile
from importlib import metadata
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

from tafe_tf import calibration as calibration_lib
from tafe_tf import config as config_lib
from tafe_tf import distribution, files, input_pipeline, progress
from tafe_tf import features as features_lib
from tafe_tf import metrics as metrics_lib
from tafe_tf import models as models_lib
from tafe_tf.models import base as models_base

RUN_FILENAME = "run.json"
TRAIN_REPORT_FILENAME = "train_report.json"
HISTORY_FILENAME = "history.csv"
BEST_DIRNAME = "best"
BEST_WEIGHTS = "weights"
BACKUP_DIRNAME = "backup"
# Not in RUN_FILES: --overwrite must not remove the lock it runs under.
LOCK_FILENAME = ".lock"
# What a run writes into its model directory (what overwrite removes);
# eval/ and export/ are launch.train's defaults for evaluation and export.
RUN_FILES = (
  RUN_FILENAME,
  "schema",
  BACKUP_DIRNAME,
  "checkpoints",
  BEST_DIRNAME,
  HISTORY_FILENAME,
  "logs",
  TRAIN_REPORT_FILENAME,
  calibration_lib.CALIBRATION_FILENAME,
  "eval",
  "export",
)
# run_state: the model directory holds no run, this run unfinished, finished.
NEW, RESUME, FINISHED = "new", "resume", "finished"
# Locks this process holds: real path of the model dir -> [fd, depth].
_HELD_LOCKS: Dict[str, List[int]] = {}


@dataclasses.dataclass
class TrainResult:
  # Holds the best epoch's weights; under MultiWorkerMirroredStrategy it is
  # a model built outside the strategy (evaluating or exporting it runs no
  # collective, so the chief can do it alone).
  model: models_lib.MultiStepModel
  schema: features_lib.Schema
  best_epoch: int
  best_value: float
  history: Dict[str, list]
  steps_per_epoch: int
  # False on the non-chief workers of a multi-worker run (they write nothing
  # into the model directory and should not evaluate or export).
  is_chief: bool = True
  # True when model_dir already held this run, finished: nothing was trained
  # (the model is the one it kept; history is empty).
  already_finished: bool = False


def monitor_names(steps: Sequence[str]) -> List[str]:
  """The validation quantities ``monitor`` may name for a schema's steps."""
  names = list(models_base.LOSS_LOG_NAMES) + metrics_lib.step_metric_names(steps)
  return [f"val_{name}" for name in names]


def check_trainable(data_dir: str, schema: features_lib.Schema, monitor: str) -> None:
  """Fails before any work (not after an epoch) when ``monitor`` names no
  validation quantity, or the train or validation split is missing, empty,
  incomplete (:func:`~tafe_tf.input_pipeline.list_split_files`) or not
  described by ``schema`` (:func:`~tafe_tf.input_pipeline.check_schema`).

  Raises:
    ValueError: one line saying which and what to do.
  """
  valid = monitor_names(schema.steps)
  if monitor not in valid:
    raise ValueError(f"--monitor={monitor}: not a validation quantity; one of {', '.join(valid)}")
  for split in ("train", "validation"):
    try:
      input_pipeline.check_schema(data_dir, split, schema)
      with input_pipeline.naming_bad_files(data_dir, [split], schema):
        rows = split_size(data_dir, split)  # may count: a pass over the files
    except FileNotFoundError as e:
      raise ValueError(
        f"{e}; convert with a validation hold-out (e.g. --validation_fraction=0.1)"
        if split == "validation" and "no 'validation' shards" in str(e)
        else str(e)
      ) from None
    if rows == 0:
      raise ValueError(
        f"{data_dir}: the {split} split is empty"
        + (
          "; convert with a larger --validation_fraction, or more data"
          if split == "validation"
          else ""
        )
      )


def split_size(data_dir: str, split: str) -> int:
  """Examples in a split: from report.json when it says, else by counting."""
  path = os.path.join(data_dir, "report.json")
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      report = json.load(f)
    per_split = report.get("rows_per_split") or {}
    if split in per_split:
      return int(per_split[split])
  return input_pipeline.count_examples(data_dir, split)


def copy_schema(schema: features_lib.Schema, model_dir: str) -> features_lib.Schema:
  """Copies the schema and its vocabularies into ``model_dir/schema``."""
  target = os.path.join(model_dir, "schema")
  tf.io.gfile.makedirs(target)
  for spec in schema.fields:
    if spec.lookup == features_lib.LookupKind.VOCABULARY:
      source = schema.vocabulary_path(spec)
      dest = os.path.join(target, spec.vocabulary_file)
      tf.io.gfile.makedirs(os.path.dirname(dest))
      if os.path.abspath(source) != os.path.abspath(dest):
        tf.io.gfile.copy(source, dest, overwrite=True)
  schema.save(target)
  return features_lib.Schema.load(target)


class KeepBestEpoch(tf.keras.callbacks.Callback):
  """Saves the weights of the epoch best on ``monitor`` into ``best_dir``.

  The best value and epoch live in ``best_dir/best.json`` so that a resumed
  run keeps comparing against the best of the epochs before the crash.
  """

  def __init__(self, best_dir: str, monitor: str = "val_loss"):
    super().__init__()
    # Every worker of a multi-worker run saves (saving reads replicated
    # variables collectively); non-chief workers pass a scratch directory.
    self.best_dir = best_dir
    self.monitor = monitor
    self.lower_is_better = "loss" in monitor.rsplit("/", 1)[0]
    self.best_epoch = 0
    self.best_value = math.inf if self.lower_is_better else -math.inf
    path = os.path.join(best_dir, "best.json")
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        state = json.load(f)
      self.best_epoch, self.best_value = state["epoch"], state["value"]

  def _better(self, value: float) -> bool:
    if math.isnan(value):
      return False
    return value < self.best_value if self.lower_is_better else (value > self.best_value)

  def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, Any]] = None):
    logs = logs or {}
    if self.monitor not in logs:
      raise KeyError(
        f"cannot pick the best epoch: {self.monitor!r} is not logged (logged: {sorted(logs)})"
      )
    value = float(logs[self.monitor])
    if self._better(value):
      self.best_epoch, self.best_value = epoch + 1, value
      tf.io.gfile.makedirs(self.best_dir)
      self.model.save_weights(os.path.join(self.best_dir, BEST_WEIGHTS))
      files.write_json_atomic(
        os.path.join(self.best_dir, "best.json"),
        {"epoch": self.best_epoch, "value": value, "monitor": self.monitor, "logs": _floats(logs)},
      )


class RecordStartStep(tf.keras.callbacks.Callback):
  """Remembers the optimizer step training (re)started from.

  Placed after BackupAndRestore, whose ``on_train_begin`` restores the backup:
  a value above 0 means this run resumed an interrupted one.
  """

  def __init__(self):
    super().__init__()
    self.start_step = 0

  def on_train_begin(self, logs=None):
    self.start_step = int(self.model.optimizer.iterations.numpy())


def _floats(logs: Mapping[str, Any]) -> Dict[str, float]:
  return {k: float(v) for k, v in logs.items()}


def build_and_compile(
  model_name: str,
  schema: features_lib.Schema,
  hparams: Mapping[str, Any],
  learning_rate: float,
  strategy: tf.distribute.Strategy,
  precision: str = "float32",
  jit_compile: bool = False,
) -> models_lib.MultiStepModel:
  """Builds ``model_name`` in ``strategy``'s scope under ``precision``'s
  policy, compiled with Adam (``jit_compile``: XLA train/test steps)."""
  with strategy.scope(), distribution.precision_policy(precision):
    model = models_lib.build_model(model_name, schema, **dict(hparams))
    # Built before fit: BackupAndRestore restores into existing variables,
    # and the optimizer must see the loss-only ones too.
    model.build_variables()
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
  return model


def _datasets(
  data_dir: str,
  split_sizes: Tuple[int, int],
  schema: features_lib.Schema,
  config: config_lib.RunConfig,
  strategy: tf.distribute.Strategy,
  model: models_lib.MultiStepModel,
  global_batch: int,
  skip_batches: int = 0,
) -> Tuple[Any, Any, Dict[str, Any]]:
  """``(train, validation, extra fit kwargs)`` for ``strategy``; the
  training split starts ``skip_batches`` batches in (a resumed run).

  Mirrored, multi-worker and TPU: ``tf.data`` datasets of global batches;
  Keras splits each over the replicas and, on several workers, auto-shards the
  input by file. Parameter server: ``DatasetCreator``s building each worker's
  pipeline from its ``InputContext`` (its files, per-replica batches), with
  the step counts Keras needs for them.
  """
  compiled = config.distribution.jit_compile or distribution.is_tpu(strategy)
  prepare = distribution.compiled_step_inputs(model, schema) if compiled else None
  common = dict(schema=schema, dense_padded=compiled, drop_remainder=compiled)

  def make(
    split: str,
    batch: int,
    training: bool,
    input_context: Optional[tf.distribute.InputContext] = None,
    repeat: Optional[bool] = None,
  ) -> tf.data.Dataset:
    ds = input_pipeline.make_dataset(
      data_dir,
      split,
      batch,
      shuffle=training and config.training.shuffle,
      repeat=training if repeat is None else repeat,
      seed=config.training.seed,
      input_context=input_context,
      **common,
    )
    if training and skip_batches:
      ds = ds.skip(skip_batches)
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE) if prepare else ds

  if not distribution.is_parameter_server(strategy):
    return (make("train", global_batch, True), make("validation", global_batch, False), {})

  def creator(split: str, training: bool) -> Callable[..., tf.data.Dataset]:
    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
      return make(
        split,
        input_context.get_per_replica_batch_size(global_batch),
        training,
        input_context,
        repeat=True,
      )

    return dataset_fn

  validation_steps = max(1, math.ceil(split_sizes[1] / global_batch))
  return (
    tf.keras.utils.experimental.DatasetCreator(creator("train", True)),
    tf.keras.utils.experimental.DatasetCreator(creator("validation", False)),
    {"validation_steps": validation_steps},
  )


def resolve_run_config(
  config: config_lib.RunConfig, data_dir: str, strategy: tf.distribute.Strategy
) -> config_lib.RunConfig:
  """The config a run records: the absolute data directory it trains on and,
  under a TPUStrategy, the id tables in TPU embedding memory (updated at the
  run's learning rate), so that evaluation and export rebuild the same
  layer."""
  config = config.replace(data_dir=os.path.abspath(data_dir))
  if distribution.is_tpu(strategy) and not config.model.hparams.tpu_embedding:
    config = dataclasses.replace(
      config,
      model=config.model.with_hparams(
        {"tpu_embedding": True, "tpu_embedding_learning_rate": config.training.learning_rate}
      ),
    )
  return config


def train(
  data_dir: str,
  model_dir: str,
  config: Optional[config_lib.RunConfig] = None,
  overwrite: bool = False,
) -> TrainResult:
  """Trains ``config``'s model on ``data_dir``'s train split into ``model_dir``.

  Running the same call again after a crash resumes from the last backup and
  ends with the same number of optimizer steps as an uninterrupted run; after
  the run finished it trains nothing and returns the kept model
  (``already_finished``). A model directory holding another run (any
  :meth:`~tafe_tf.config.RunConfig.identity` key differs) is a ValueError
  naming the keys, unless ``overwrite``. The chief holds
  :func:`model_dir_lock` throughout: a second process training into the same
  directory fails at once.

  Under MultiWorkerMirroredStrategy nothing after ``fit`` uses the
  strategy: the workers stop running in lockstep when ``fit`` returns (a
  non-chief exits), so a collective then (restoring into mirrored variables,
  evaluating, exporting) would wait for a peer that is gone. Each worker
  rebuilds the model outside the strategy with its best weights instead.

  Args:
    data_dir: A dataset directory (schema.json + train/validation shards);
      recorded, absolute, as ``data.data_dir``.
    model_dir: Where the run's files go (see the module docstring).
    config: The run (None: :class:`~tafe_tf.config.RunConfig` defaults), e.g.
      ``RunConfig.create("esmm", hparams={...}, epochs=1)``.
    overwrite: First remove a previous run's files (:data:`RUN_FILES`) from
      ``model_dir``.

  Returns:
    A :class:`TrainResult` whose model holds the best epoch's weights.
  """
  config = config or config_lib.RunConfig()
  dist, run = config.distribution, config.training
  strategy = distribution.get_strategy(
    dist.strategy, tpu_address=dist.tpu_address, min_shard_bytes=dist.min_shard_bytes
  )
  if dist.jit_compile and distribution.is_parameter_server(strategy):
    raise ValueError(
      "jit_compile with the parameter_server strategy is not "
      "supported: its embedding lookups run on the ps tasks"
    )
  config = resolve_run_config(config, data_dir, strategy)
  check_trainable(data_dir, features_lib.Schema.load(data_dir), run.monitor)
  role = distribution.worker_role(strategy)
  with model_dir_lock(model_dir) if role.is_chief else contextlib.nullcontext():
    if overwrite and role.is_chief:
      remove_run(model_dir)
    if run_state(model_dir, config) == FINISHED:
      logging.info("%s holds this run, finished: nothing to train", model_dir)
      if role.is_chief:
        _remove_empty_backup(model_dir)
      return _finished_result(
        model_dir, None if distribution.is_multi_worker(strategy) else strategy, role.is_chief
      )
    return _train(data_dir, model_dir, config, strategy, role)


def _train(
  data_dir: str,
  model_dir: str,
  config: config_lib.RunConfig,
  strategy: tf.distribute.Strategy,
  role: distribution.WorkerRole,
) -> TrainResult:
  """:func:`train`'s new or resumed run."""
  dist, run = config.distribution, config.training
  # Non-chief workers of a multi-worker run write their own files (logs, the
  # best weights they must save too) into a scratch directory; the backup
  # directory is shared: Keras' BackupAndRestore coordinates it.
  out_dir = (
    model_dir
    if role.is_chief
    else tempfile.mkdtemp(prefix=f"tafe-{role.task_type}-{role.task_id}-")
  )
  tf.io.gfile.makedirs(model_dir)
  schema = features_lib.Schema.load(data_dir)
  if role.is_chief:
    schema = copy_schema(schema, model_dir)
    write_run_config(model_dir, config)
  tf.keras.utils.set_random_seed(run.seed)
  global_batch = run.batch_size * strategy.num_replicas_in_sync
  sizes = (split_size(data_dir, "train"), split_size(data_dir, "validation"))
  steps_per_epoch = run.steps_per_epoch or max(1, math.ceil(sizes[0] / global_batch))
  model = build_and_compile(
    config.model.name,
    schema,
    config.model_hparams().to_json(),
    run.learning_rate,
    strategy,
    dist.precision,
    dist.jit_compile,
  )
  # The training split repeats so that every epoch has exactly
  # steps_per_epoch steps, also after a mid-epoch resume.
  # A resumed run reads on from where the killed one stopped: Keras restores
  # the weights, optimizer and step from backup/, but fit opens a fresh
  # iterator over the repeated training split, so without the skip the
  # remaining steps replayed the first batches (the soak benchmark's
  # predictions differed by 3e-2 after a mid-run kill).
  resumed_steps = backed_up_steps(os.path.join(model_dir, "backup"))
  train_ds, val_ds, fit_kwargs = _datasets(
    data_dir, sizes, schema, config, strategy, model, global_batch, skip_batches=resumed_steps
  )
  best = KeepBestEpoch(os.path.join(out_dir, BEST_DIRNAME), run.monitor)
  start = RecordStartStep()
  callbacks = [
    tf.keras.callbacks.BackupAndRestore(
      os.path.join(model_dir, BACKUP_DIRNAME), save_freq=run.checkpoint_every_steps or "epoch"
    ),
    start,
    tf.keras.callbacks.ModelCheckpoint(
      os.path.join(out_dir, "checkpoints", "epoch-{epoch:03d}"), save_weights_only=True
    ),
    best,
    tf.keras.callbacks.CSVLogger(os.path.join(out_dir, HISTORY_FILENAME), append=True),
    tf.keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq="epoch"),
    # Keras' bar printed every logged value (585 columns); all stay in history.csv.
    progress.CompactProgress(("loss", "val_loss", run.monitor)),
  ]
  try:
    # A corrupt record or labels failing their check: one line naming the file.
    with input_pipeline.naming_bad_files(data_dir, ("train", "validation"), schema):
      history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=run.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=run.verbose,
        **fit_kwargs,
      )
    optimizer_steps = int(model.optimizer.iterations.numpy())
    if best.best_epoch == 0:
      raise RuntimeError(f"no epoch produced a finite {run.monitor}")
    best_weights = os.path.join(out_dir, BEST_DIRNAME, BEST_WEIGHTS)
    if distribution.is_multi_worker(strategy):
      # Outside the strategy: see the docstring of train.
      model = _model_with_weights(config, schema, best_weights)
    else:
      model.load_weights(best_weights)
    calibration = _calibrate(model, data_dir, schema, run, model_dir, role.is_chief)
  finally:
    if not role.is_chief:
      shutil.rmtree(out_dir, ignore_errors=True)
  if role.is_chief:
    _remove_empty_backup(model_dir)
  # Later use (evaluation, export) feeds raw ids: the XLA steps were traced
  # for the pipeline's precomputed rows.
  model.jit_compile = False
  logging.info(
    "kept the weights of epoch %d (best %s = %.6f of %d epochs)",
    best.best_epoch,
    run.monitor,
    best.best_value,
    run.epochs,
  )
  report = {
    "best_epoch": best.best_epoch,
    "monitor": run.monitor,
    "best_value": best.best_value,
    "epochs": run.epochs,
    "steps_per_epoch": steps_per_epoch,
    "global_batch_size": global_batch,
    "optimizer_steps": optimizer_steps,
    "resumed_from_step": start.start_step,
    "num_replicas": strategy.num_replicas_in_sync,
    "strategy": type(strategy).__name__,
    "precision": dist.precision,
    "jit_compile": dist.jit_compile,
    "calibration": calibration,
  }
  if role.is_chief:
    files.write_json_atomic(os.path.join(model_dir, TRAIN_REPORT_FILENAME), report)
  return TrainResult(
    model=model,
    schema=schema,
    best_epoch=best.best_epoch,
    best_value=best.best_value,
    history={k: list(v) for k, v in history.history.items()},
    steps_per_epoch=steps_per_epoch,
    is_chief=role.is_chief,
  )


# The optimizer's step counter in a BackupAndRestore checkpoint.
_BACKUP_STEP_KEY = "model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def backed_up_steps(backup_dir: str) -> int:
  """Optimizer steps held by the newest ``BackupAndRestore`` checkpoint in
  ``backup_dir`` (Keras writes it under ``chief/`` or the worker's folder);
  0 when there is none."""
  for folder in (backup_dir, os.path.join(backup_dir, "chief")):
    path = tf.train.latest_checkpoint(folder) if tf.io.gfile.isdir(folder) else None
    if path:
      reader = tf.train.load_checkpoint(path)
      if reader.has_tensor(_BACKUP_STEP_KEY):
        return int(reader.get_tensor(_BACKUP_STEP_KEY))
  return 0


def _calibrate(
  model: models_lib.MultiStepModel,
  data_dir: str,
  schema: features_lib.Schema,
  run: config_lib.TrainingConfig,
  model_dir: str,
  is_chief: bool,
) -> Optional[List[Dict[str, Any]]]:
  """Fits the kept model's per-step calibration on the validation split
  (every worker alike, outside the strategy's collectives) and writes
  ``calibration.json`` (chief); None when ``run.calibration`` is ``none``."""
  path = os.path.join(model_dir, calibration_lib.CALIBRATION_FILENAME)
  if run.calibration == "none":
    if is_chief and tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
    return None
  validation = input_pipeline.make_dataset(data_dir, "validation", run.batch_size, schema)
  fits = calibration_lib.fit_step_calibration(model, validation, run.calibration)
  for fit in fits:
    logging.info(
      "calibration of %s: logit x %.4f %+.4f (fitted on %d rows, %d positive)",
      fit.step,
      fit.scale,
      fit.shift,
      fit.rows,
      fit.positives,
    )
  out = [fit.to_json() for fit in fits]
  if is_chief:
    files.write_json_atomic(path, {"steps": out})
  return out


def _finished_result(
  model_dir: str, strategy: tf.distribute.Strategy, is_chief: bool
) -> TrainResult:
  """The :class:`TrainResult` of the finished run in ``model_dir``."""
  report = files.read_json(os.path.join(model_dir, TRAIN_REPORT_FILENAME))
  return TrainResult(
    model=load_trained_model(model_dir, strategy),
    schema=model_dir_schema(model_dir),
    best_epoch=report["best_epoch"],
    best_value=report["best_value"],
    history={},
    steps_per_epoch=report["steps_per_epoch"],
    is_chief=is_chief,
    already_finished=True,
  )


def load_trained_model(
  model_dir: str, strategy: Optional[tf.distribute.Strategy] = None
) -> models_lib.MultiStepModel:
  """Rebuilds a trained model from ``model_dir`` (its run.json, through
  :meth:`~tafe_tf.config.RunConfig.from_json`) with its best weights and
  its calibration (``calibration.json``, when the run fitted one)."""
  weights = os.path.join(model_dir, BEST_DIRNAME, BEST_WEIGHTS)
  if not tf.io.gfile.exists(weights + ".index"):
    raise FileNotFoundError(
      f"{model_dir} holds no trained weights ({weights} is missing): train first"
    )
  model = _model_with_weights(
    read_run_config(model_dir), model_dir_schema(model_dir), weights, strategy
  )
  calibration = os.path.join(model_dir, calibration_lib.CALIBRATION_FILENAME)
  if tf.io.gfile.exists(calibration):
    calibration_lib.set_calibration(
      model, calibration_lib.fits_from_json(files.read_json(calibration))
    )
  return model


def _model_with_weights(
  config: config_lib.RunConfig,
  schema: features_lib.Schema,
  weights: str,
  strategy: Optional[tf.distribute.Strategy] = None,
) -> models_lib.MultiStepModel:
  """``config``'s model built in ``strategy``'s scope (default: none), with
  the weights saved at ``weights``; no optimizer (inference only)."""
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = models_lib.build_model(config.model.name, schema, **config.model_hparams().to_json())
  # Build the variables so that restore is immediate.
  model.build_variables()
  model.load_weights(weights).expect_partial()
  return model


def model_dir_schema(model_dir: str) -> features_lib.Schema:
  """The schema copied into a model directory at training time."""
  return features_lib.Schema.load(os.path.join(model_dir, "schema"))


def read_run_config(model_dir: str) -> config_lib.RunConfig:
  """The :class:`~tafe_tf.config.RunConfig` of ``model_dir``'s run.json.

  Raises:
    FileNotFoundError: when there is no run.json.
    ValueError: one line, when it is not a valid run config.
  """
  path = os.path.join(model_dir, RUN_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{model_dir} is not a model directory: no {RUN_FILENAME}")
  try:
    return config_lib.RunConfig.from_json(files.read_json(path))
  except ValueError as e:  # also bad JSON (JSONDecodeError)
    raise ValueError(f"{path}: {e}") from None


def run_state(model_dir: str, config: config_lib.RunConfig) -> str:
  """:data:`NEW` (no run there), :data:`RESUME` (this run, unfinished) or
  :data:`FINISHED` (this run, finished: train_report.json is there).

  Raises:
    ValueError: one line, when ``model_dir`` holds another run (naming the
      differing keys) or an unreadable run.json.
  """
  if not tf.io.gfile.exists(os.path.join(model_dir, RUN_FILENAME)):
    return NEW
  try:
    previous = read_run_config(model_dir)
  except ValueError as e:
    raise ValueError(f"{e}; use a new --model_dir, or --overwrite to replace that run") from None
  differing = config.differences(previous)
  if differing:
    raise ValueError(
      f"{model_dir} holds a different run (differing: "
      f"{', '.join(differing)}); use a new --model_dir, or --overwrite to "
      "replace that run"
    )
  finished = tf.io.gfile.exists(os.path.join(model_dir, TRAIN_REPORT_FILENAME))
  return FINISHED if finished else RESUME


@contextlib.contextmanager
def model_dir_lock(model_dir: str, shared: bool = False) -> Iterator[None]:
  """Holds ``model_dir/.lock`` (``flock``) in the block.

  Exclusive (training; the holder writes its pid into the file) or
  ``shared`` (reading a trained run: evaluation, export; any number at
  once). The kernel releases a lock when its process dies, so a killed run
  never blocks the next. Reentrant within a process. Not on remote file
  systems (a path with ``://``): there the block runs unlocked.

  Raises:
    ValueError: at once, naming the directory and the holder, when another
      process holds it (exclusively, or at all for an exclusive lock).
  """
  if "://" in model_dir:
    yield
    return
  if not shared:
    os.makedirs(model_dir, exist_ok=True)
  key = os.path.realpath(model_dir)
  if key in _HELD_LOCKS:
    _HELD_LOCKS[key][1] += 1
    try:
      yield
    finally:
      _HELD_LOCKS[key][1] -= 1
    return
  path = os.path.join(model_dir, LOCK_FILENAME)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except PermissionError:
    if not shared:
      raise
    # A reader of a directory it may not write (another user's run): lock
    # through a read-only descriptor if there is a lock file, else unlocked.
    try:
      fd = os.open(path, os.O_RDONLY)
    except OSError:
      yield
      return
  try:
    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
    os.close(fd)
    who = f"a training, pid {holder}" if holder else "an evaluation or export"
    raise ValueError(
      f"{model_dir} is in use by {who}: one process at a time trains into a model "
      "directory; wait for it to finish, or use another --model_dir"
    ) from None
  # Only an exclusive holder writes its pid; a shared one clears a pid left
  # by a killed training (no exclusive holder can exist while it holds).
  try:
    os.ftruncate(fd, 0)
  except OSError:  # read-only descriptor (shared)
    pass
  if not shared:
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  _HELD_LOCKS[key] = [fd, 1]
  try:
    yield
  finally:
    del _HELD_LOCKS[key]
    if not shared:
      os.ftruncate(fd, 0)
    os.close(fd)  # releases the flock


def _remove_empty_backup(model_dir: str) -> None:
  """Removes the empty ``backup/`` Keras leaves when training ends (only
  empty: a backup a resume needs stays; a worker still cleaning its own part
  keeps it non-empty)."""
  try:
    os.rmdir(os.path.join(model_dir, BACKUP_DIRNAME))
  except OSError:  # absent, not empty, or a remote file system
    pass


def remove_run(model_dir: str) -> None:
  """Removes a run's files (:data:`RUN_FILES`) from ``model_dir``; anything
  else there stays."""
  for name in RUN_FILES:
    path = os.path.join(model_dir, name)
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def write_run_config(model_dir: str, config: config_lib.RunConfig) -> str:
  """Writes ``model_dir/run.json``: ``config.to_json()`` plus a provenance
  section (package and TensorFlow versions) that readers ignore."""
  run = dict(config.to_json())
  run[config_lib.PROVENANCE] = {
    "tafe_tf_version": _package_version(),
    "tensorflow_version": tf.__version__,
  }
  return files.write_json_atomic(os.path.join(model_dir, RUN_FILENAME), run)


def _package_version() -> str:
  try:
    return metadata.version("tafe-tf")
  except metadata.PackageNotFoundError:
    return "unknown"
