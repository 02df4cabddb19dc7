"""Training a multi-step model with ``model.fit``: checkpoints, resume, best epoch.

A *model directory* is self-contained; everything needed to rebuild, resume,
evaluate and export a run lives in it::

    run.json            model name, hyper-parameters, training settings
    schema/             the dataset's schema.json and vocabularies (copied)
    backup/             tf.keras.callbacks.BackupAndRestore state (resume after a
                        crash, mid-epoch with checkpoint_every_steps); removed by
                        Keras when training ends
    checkpoints/        weights after every epoch (epoch-001, ...)
    best/               weights of the epoch best on validation + best.json
    history.csv         per-epoch losses and metrics (appended across resumes)
    logs/               TensorBoard
    train_report.json   what happened: epochs, best epoch, its validation metrics

Id-heavy click logs overfit after one epoch (the "one-epoch phenomenon"), so
the weights kept at the end are those of the epoch with the best validation
loss, not the last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from absl import logging
import tensorflow as tf

from tafe_tf import distribution
from tafe_tf import features as features_lib
from tafe_tf import files
from tafe_tf import input_pipeline
from tafe_tf import models as models_lib

RUN_FILENAME = "run.json"
TRAIN_REPORT_FILENAME = "train_report.json"
BEST_DIRNAME = "best"
BEST_WEIGHTS = "weights"


@dataclasses.dataclass
class TrainConfig:
  """How to train.

  Attributes:
    model: One of ``tafe_tf.models.MODEL_NAMES``.
    hparams: Keyword arguments of ``tafe_tf.models.build_model``.
    epochs: Passes over the training split.
    batch_size: Examples per replica per step (global batch = this x replicas).
    learning_rate: Adam learning rate.
    seed: Seeds weights, dropout and shuffling.
    strategy: A ``tafe_tf.distribution.STRATEGY_NAMES`` entry.
    precision: A ``tafe_tf.distribution.PRECISIONS`` entry (mixed precision
      policy of the model's layers).
    jit_compile: Compile the train and evaluation steps with XLA; the id
      lookups then run in the input pipeline (always on for ``tpu``).
    shuffle: Shuffle the training split (False: file order; for runs that must
      see the same batches, e.g. comparing strategies).
    tpu_address: TPU name or address (``tpu`` strategy).
    min_shard_bytes: Smallest variable shard of a parameter-server run.
    checkpoint_every_steps: Also back up mid-epoch every N steps (0: only at
      epoch ends); a killed run resumes from the last backup.
    steps_per_epoch: Steps per epoch; default: the training split's size over
      the global batch, rounded up.
    monitor: Validation quantity that picks the best epoch: lower is better
      for losses (``val_loss``, ``val_logloss/<step>``), higher otherwise
      (``val_auc/<step>``).
    verbose: Keras progress output (1: progress bar, 2: a line per epoch).
  """
  model: str = "tafe"
  hparams: Dict[str, Any] = dataclasses.field(default_factory=dict)
  epochs: int = 2
  batch_size: int = 2048
  learning_rate: float = 2e-3
  seed: int = 0
  strategy: str = "auto"
  precision: str = "float32"
  jit_compile: bool = False
  shuffle: bool = True
  tpu_address: str = ""
  min_shard_bytes: int = distribution.DEFAULT_MIN_SHARD_BYTES
  checkpoint_every_steps: int = 0
  steps_per_epoch: Optional[int] = None
  monitor: str = "val_loss"
  verbose: int = 1

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
  model: models_lib.MultiStepModel
  schema: features_lib.Schema
  best_epoch: int
  best_value: float
  history: Dict[str, list]
  steps_per_epoch: int
  # False on the non-chief workers of a multi-worker run (they write nothing
  # into the model directory and should not evaluate or export).
  is_chief: bool = True


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
    return value < self.best_value if self.lower_is_better else (
        value > self.best_value)

  def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, Any]] = None):
    logs = logs or {}
    if self.monitor not in logs:
      raise KeyError(f"cannot pick the best epoch: {self.monitor!r} is not "
                     f"logged (logged: {sorted(logs)})")
    value = float(logs[self.monitor])
    if self._better(value):
      self.best_epoch, self.best_value = epoch + 1, value
      tf.io.gfile.makedirs(self.best_dir)
      self.model.save_weights(os.path.join(self.best_dir, BEST_WEIGHTS))
      files.write_json_atomic(
          os.path.join(self.best_dir, "best.json"),
          {"epoch": self.best_epoch, "value": value, "monitor": self.monitor,
           "logs": _floats(logs)})


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


def build_and_compile(model_name: str, schema: features_lib.Schema,
                      hparams: Mapping[str, Any], learning_rate: float,
                      strategy: tf.distribute.Strategy,
                      precision: str = "float32",
                      jit_compile: bool = False
                      ) -> models_lib.MultiStepModel:
  """Builds ``model_name`` in ``strategy``'s scope under ``precision``'s
  policy, compiled with Adam (``jit_compile``: XLA train/test steps)."""
  with strategy.scope(), distribution.precision_policy(precision):
    model = models_lib.build_model(model_name, schema, **dict(hparams))
    # Built before fit: BackupAndRestore restores into existing variables.
    model(features_lib.dummy_batch(schema), training=False)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  jit_compile=jit_compile)
  return model


def _datasets(data_dir: str, split_sizes: Tuple[int, int],
              schema: features_lib.Schema, config: TrainConfig,
              strategy: tf.distribute.Strategy,
              model: models_lib.MultiStepModel,
              global_batch: int) -> Tuple[Any, Any, Dict[str, Any]]:
  """``(train, validation, extra fit kwargs)`` for ``strategy``.

  Mirrored, multi-worker and TPU: ``tf.data`` datasets of global batches;
  Keras splits each over the replicas and, on several workers, auto-shards the
  input by file. Parameter server: ``DatasetCreator``s building each worker's
  pipeline from its ``InputContext`` (its files, per-replica batches), with
  the step counts Keras needs for them.
  """
  compiled = config.jit_compile or distribution.is_tpu(strategy)
  prepare = (distribution.compiled_step_inputs(model, schema)
             if compiled else None)
  common = dict(schema=schema, dense_padded=compiled, drop_remainder=compiled)

  def make(split: str, batch: int, training: bool,
           input_context: Optional[tf.distribute.InputContext] = None,
           repeat: Optional[bool] = None) -> tf.data.Dataset:
    ds = input_pipeline.make_dataset(
        data_dir, split, batch, shuffle=training and config.shuffle,
        repeat=training if repeat is None else repeat, seed=config.seed,
        input_context=input_context, **common)
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE) if prepare else ds

  if not distribution.is_parameter_server(strategy):
    return (make("train", global_batch, True),
            make("validation", global_batch, False), {})

  def creator(split: str, training: bool) -> Callable[..., tf.data.Dataset]:
    def dataset_fn(input_context: tf.distribute.InputContext
                   ) -> tf.data.Dataset:
      return make(split, input_context.get_per_replica_batch_size(
          global_batch), training, input_context, repeat=True)
    return dataset_fn

  validation_steps = max(1, math.ceil(split_sizes[1] / global_batch))
  return (tf.keras.utils.experimental.DatasetCreator(creator("train", True)),
          tf.keras.utils.experimental.DatasetCreator(
              creator("validation", False)),
          {"validation_steps": validation_steps})


def train(data_dir: str, model_dir: str, config: TrainConfig) -> TrainResult:
  """Trains ``config.model`` on ``data_dir``'s train split into ``model_dir``.

  Running the same call again after a crash resumes from the last backup and
  ends with the same number of optimizer steps as an uninterrupted run.

  Args:
    data_dir: A dataset directory (schema.json + train/validation shards).
    model_dir: Where the run's files go (see the module docstring).
    config: How to train.

  Returns:
    A :class:`TrainResult` whose model holds the best epoch's weights.
  """
  if config.precision not in distribution.PRECISIONS:
    raise ValueError(f"unknown precision {config.precision!r}; expected one "
                     f"of {', '.join(distribution.PRECISIONS)}")
  strategy = distribution.get_strategy(
      config.strategy, tpu_address=config.tpu_address,
      min_shard_bytes=config.min_shard_bytes)
  if config.jit_compile and distribution.is_parameter_server(strategy):
    raise ValueError("jit_compile with the parameter_server strategy is not "
                     "supported: its embedding lookups run on the ps tasks")
  if distribution.is_tpu(strategy) and "tpu_embedding" not in config.hparams:
    # Tables in TPU embedding memory, updated at the run's learning rate; in
    # the run file, so evaluation and export rebuild the same layer.
    config = dataclasses.replace(config, hparams={
        **config.hparams, "tpu_embedding": True,
        "tpu_embedding_learning_rate": config.learning_rate})
  role = distribution.worker_role(strategy)
  # Non-chief workers of a multi-worker run write their own files (logs, the
  # best weights they must save too) into a scratch directory; the backup
  # directory is shared: Keras' BackupAndRestore coordinates it.
  out_dir = model_dir if role.is_chief else tempfile.mkdtemp(
      prefix=f"tafe-{role.task_type}-{role.task_id}-")
  tf.io.gfile.makedirs(model_dir)
  schema = features_lib.Schema.load(data_dir)
  if role.is_chief:
    schema = copy_schema(schema, model_dir)
    _write_run_file(model_dir, config, data_dir)
  tf.keras.utils.set_random_seed(config.seed)
  global_batch = config.batch_size * strategy.num_replicas_in_sync
  sizes = (split_size(data_dir, "train"), split_size(data_dir, "validation"))
  steps_per_epoch = config.steps_per_epoch or max(
      1, math.ceil(sizes[0] / global_batch))
  model = build_and_compile(config.model, schema, config.hparams,
                            config.learning_rate, strategy, config.precision,
                            config.jit_compile)
  # The training split repeats so that every epoch has exactly
  # steps_per_epoch steps, also after a mid-epoch resume.
  train_ds, val_ds, fit_kwargs = _datasets(data_dir, sizes, schema, config,
                                           strategy, model, global_batch)
  best = KeepBestEpoch(os.path.join(out_dir, BEST_DIRNAME), config.monitor)
  start = RecordStartStep()
  callbacks = [
      tf.keras.callbacks.BackupAndRestore(
          os.path.join(model_dir, "backup"),
          save_freq=config.checkpoint_every_steps or "epoch"),
      start,
      tf.keras.callbacks.ModelCheckpoint(
          os.path.join(out_dir, "checkpoints", "epoch-{epoch:03d}"),
          save_weights_only=True),
      best,
      tf.keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"),
                                   append=True),
      tf.keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"),
                                     update_freq="epoch"),
  ]
  try:
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                        verbose=config.verbose, **fit_kwargs)
    optimizer_steps = int(model.optimizer.iterations.numpy())
    if best.best_epoch == 0:
      raise RuntimeError(f"no epoch produced a finite {config.monitor}")
    model.load_weights(os.path.join(out_dir, BEST_DIRNAME, BEST_WEIGHTS))
  finally:
    if not role.is_chief:
      shutil.rmtree(out_dir, ignore_errors=True)
  # Later use (evaluation, export) feeds raw ids: the XLA steps were traced
  # for the pipeline's precomputed rows.
  model.jit_compile = False
  logging.info("kept the weights of epoch %d (best %s = %.6f of %d epochs)",
               best.best_epoch, config.monitor, best.best_value, config.epochs)
  report = {"best_epoch": best.best_epoch, "monitor": config.monitor,
            "best_value": best.best_value, "epochs": config.epochs,
            "steps_per_epoch": steps_per_epoch, "global_batch_size": global_batch,
            "optimizer_steps": optimizer_steps,
            "resumed_from_step": start.start_step,
            "num_replicas": strategy.num_replicas_in_sync,
            "strategy": type(strategy).__name__,
            "precision": config.precision, "jit_compile": config.jit_compile}
  if role.is_chief:
    files.write_json_atomic(os.path.join(model_dir, TRAIN_REPORT_FILENAME),
                             report)
  return TrainResult(model=model, schema=schema, best_epoch=best.best_epoch,
                     best_value=best.best_value,
                     history={k: list(v) for k, v in history.history.items()},
                     steps_per_epoch=steps_per_epoch, is_chief=role.is_chief)


def load_trained_model(model_dir: str,
                       strategy: Optional[tf.distribute.Strategy] = None
                       ) -> models_lib.MultiStepModel:
  """Rebuilds a trained model from ``model_dir`` with its best weights."""
  run = read_run_file(model_dir)
  schema = model_dir_schema(model_dir)
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = models_lib.build_model(run["model"], schema, **run["hparams"])
  weights = os.path.join(model_dir, BEST_DIRNAME, BEST_WEIGHTS)
  if not tf.io.gfile.exists(weights + ".index"):
    raise FileNotFoundError(f"{model_dir} holds no trained weights ({weights} "
                            "is missing): train first")
  # Build the variables with one dummy batch so that restore is immediate.
  model(features_lib.dummy_batch(schema), training=False)
  model.load_weights(weights).expect_partial()
  return model


def model_dir_schema(model_dir: str) -> features_lib.Schema:
  """The schema copied into a model directory at training time."""
  return features_lib.Schema.load(os.path.join(model_dir, "schema"))


def read_run_file(model_dir: str) -> Dict[str, Any]:
  path = os.path.join(model_dir, RUN_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{model_dir} is not a model directory: no "
                            f"{RUN_FILENAME}")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _write_run_file(model_dir: str, config: TrainConfig, data_dir: str) -> None:
  path = os.path.join(model_dir, RUN_FILENAME)
  # Through JSON, so that tuples compare equal to the lists read back.
  run = json.loads(json.dumps(
      {"model": config.model, "hparams": config.hparams,
       "train": config.to_json(), "data_dir": os.path.abspath(data_dir)}))
  if tf.io.gfile.exists(path):
    previous = read_run_file(model_dir)
    if (previous.get("model"), previous.get("hparams")) != (run["model"],
                                                            run["hparams"]):
      raise ValueError(
          f"{model_dir} holds a run of another model or other hyper-parameters "
          f"({previous.get('model')}, {previous.get('hparams')}); use a new "
          "--model_dir or delete it")
  files.write_json_atomic(path, run)
