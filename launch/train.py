r"""Trains a multi-step conversion model, evaluates it and exports it.

With no flags this is the package's main job: generate (or reuse) the built-in
synthetic two-step data, train TAFE, keep the epoch best on validation, print a
per-step table of AUC against the oracle AUC, write the evaluation report and
plots, and export a SavedModel for TF Serving::

    python -m launch.train

On converted real data (see ``python -m launch.convert``)::

    python -m launch.train --model=ple --dataset=ali_ccp \
        --data_dir=/data/ali_ccp_tfrecords --model_dir=runs/ple_aliccp

Any hyperparameter of the chosen model (docs/models.md) goes in ``--hparams``;
a previous run's ``run.json`` repeats it (flags given as well override it)::

    python -m launch.train --model=tafe --hparams='{"transfer": "none", "top_k": 2}'
    python -m launch.train --config=runs/tafe-synthetic/run.json --model_dir=runs/again

Rerunning the same command after a crash resumes from the last checkpoint; a
finished run is reported and left alone; another run in the same
``--model_dir`` is refused (``--overwrite`` replaces it). docs/training.md has
the configuration tree.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Dict, Optional

from absl import flags, logging

from tafe_tf import config as config_lib
from tafe_tf import hparams as hparams_lib
from tafe_tf.launch import common

# Loaded at first use, in main: --help stays free of TensorFlow.
distribution = common.lazy_import("tafe_tf.distribution")
export = common.lazy_import("tafe_tf.export")
files = common.lazy_import("tafe_tf.files")
input_pipeline = common.lazy_import("tafe_tf.input_pipeline")
reporting = common.lazy_import("tafe_tf.reporting")
training = common.lazy_import("tafe_tf.training")
synthetic = common.lazy_import("tafe_tf.data.synthetic")

FLAGS = flags.FLAGS
_default = config_lib.setting_default

_RUN = common.flag_group(__name__, "What to run")
# What to run: the whole config from a file, the model and its hparams.
flags.DEFINE_string(
  "config",
  "",
  "A run.json (any run's) to start from: the whole run config; flags given as well override it.",
  module_name=_RUN,
)
flags.DEFINE_enum(
  "model", config_lib.ModelConfig.name, list(hparams_lib.MODEL_NAMES), "Model.", module_name=_RUN
)
flags.DEFINE_string(
  "hparams",
  "",
  "JSON object of the model's "
  "hyperparameters (any of them, docs/models.md), over its "
  "defaults (or --config's), e.g. "
  '\'{"transfer": "none", "top_k": 2}\'.',
  module_name=_RUN,
)
flags.DEFINE_string(
  "model_dir", "", "Run directory (default: runs/<model>-<dataset>).", module_name=_RUN
)
flags.DEFINE_bool(
  "overwrite",
  False,
  "Remove a previous run's files from --model_dir first (else another run there is an error).",
  module_name=_RUN,
)
_DATA = common.flag_group(__name__, "Data")
# Data.
flags.DEFINE_enum(
  "dataset",
  _default("dataset"),
  list(config_lib.DATASETS),
  "synthetic (generated into --data_dir, or a cache dir), or a "
  "converted dataset directory given by --data_dir.",
  module_name=_DATA,
)
flags.DEFINE_string(
  "data_dir",
  _default("data_dir"),
  "Dataset directory "
  "(schema.json + shards). For --dataset=synthetic: where to "
  "generate it (default: ~/.cache/tafe_tf/synthetic-"
  "<steps>step-seed<seed>).",
  module_name=_DATA,
)
flags.DEFINE_integer(
  "synthetic_steps",
  _default("synthetic_steps"),
  "Steps of the synthetic chain.",
  lower_bound=2,
  upper_bound=4,
  module_name=_DATA,
)
flags.DEFINE_integer(
  "synthetic_train_rows",
  _default("synthetic_train_rows"),
  "Synthetic train rows.",
  lower_bound=1,
  module_name=_DATA,
)
flags.DEFINE_integer(
  "synthetic_eval_rows",
  _default("synthetic_eval_rows"),
  "Synthetic validation and test rows (each).",
  lower_bound=1,
  module_name=_DATA,
)
flags.DEFINE_float(
  "synthetic_conflict",
  _default("synthetic_conflict"),
  "Conflict between steps in the synthetic truth (default: the generator's).",
  module_name=_DATA,
)
_TRAINING = common.flag_group(__name__, "Training")
# Training.
flags.DEFINE_integer("epochs", _default("epochs"), "Epochs.", lower_bound=1, module_name=_TRAINING)
flags.DEFINE_integer(
  "batch_size",
  _default("batch_size"),
  "Examples per replica per step.",
  lower_bound=1,
  module_name=_TRAINING,
)
flags.DEFINE_float(
  "learning_rate",
  _default("learning_rate"),
  "Adam learning rate.",
  lower_bound=0,
  module_name=_TRAINING,
)
flags.DEFINE_integer(
  "seed",
  _default("seed"),
  "The run seed: shuffling, the synthetic data, and the model unless --hparams sets its seed.",
  module_name=_TRAINING,
)
flags.DEFINE_bool(
  "shuffle", _default("shuffle"), "Shuffle the training split.", module_name=_TRAINING
)
flags.DEFINE_integer(
  "checkpoint_every_steps",
  _default("checkpoint_every_steps"),
  "Also checkpoint mid-epoch every N steps (0: at epoch ends only).",
  lower_bound=0,
  module_name=_TRAINING,
)
flags.DEFINE_integer(
  "steps_per_epoch",
  _default("steps_per_epoch"),
  "Steps per epoch (default: one pass over the training split).",
  lower_bound=1,
  module_name=_TRAINING,
)
flags.DEFINE_string(
  "monitor",
  _default("monitor"),
  "Validation quantity that picks the kept epoch.",
  module_name=_TRAINING,
)
flags.DEFINE_enum(
  "calibration",
  _default("calibration"),
  list(config_lib.CALIBRATIONS),
  "Per-step calibration fitted on validation after training, kept in the model and the export:"
  " entire_space (p_t on every row), conditional (q_t where the previous step happened), none.",
  module_name=_TRAINING,
)
flags.DEFINE_enum(
  "verbose",
  str(_default("verbose")),
  [str(v) for v in config_lib.VERBOSITIES],
  "Keras progress output: 0 none, 1 bar, 2 a line per epoch.",
  module_name=_TRAINING,
)
_DISTRIBUTION = common.flag_group(__name__, "Distribution")
# Distribution.
flags.DEFINE_enum(
  "strategy",
  _default("strategy"),
  list(config_lib.STRATEGY_NAMES),
  "Distribution strategy (docs/distribution.md). multi_worker "
  "and parameter_server read the cluster from TF_CONFIG; with "
  "parameter_server the worker and ps tasks run this same "
  "command and serve.",
  module_name=_DISTRIBUTION,
)
flags.DEFINE_string(
  "tpu",
  _default("tpu_address"),
  "TPU name or grpc:// address (--strategy=tpu; default: TPU_NAME or the local TPU VM).",
  module_name=_DISTRIBUTION,
)
flags.DEFINE_integer(
  "cpu_devices",
  _default("cpu_devices"),
  "Split the CPU "
  "into N logical devices (0: no split), e.g. to run "
  "--strategy=mirrored with N replicas on a host without "
  "GPUs.",
  lower_bound=0,
  module_name=_DISTRIBUTION,
)
flags.DEFINE_enum(
  "mixed_precision",
  _default("precision"),
  list(config_lib.PRECISIONS),
  "Keras dtype policy; the loss and probabilities stay float32, mixed_float16 adds loss scaling.",
  module_name=_DISTRIBUTION,
)
flags.DEFINE_bool(
  "jit_compile",
  _default("jit_compile"),
  "Compile the training step with XLA (id lookups move into the input pipeline).",
  module_name=_DISTRIBUTION,
)
flags.DEFINE_integer(
  "min_shard_bytes",
  _default("min_shard_bytes"),
  "Smallest variable shard (parameter_server).",
  lower_bound=1,
  module_name=_DISTRIBUTION,
)
_AFTER = common.flag_group(__name__, "After training")
# After training.
flags.DEFINE_bool(
  "evaluate", _default("evaluate"), "Evaluate on the test split after training.", module_name=_AFTER
)
flags.DEFINE_bool(
  "export", _default("export"), "Export a SavedModel after training.", module_name=_AFTER
)
flags.DEFINE_string(
  "export_dir",
  _default("export_dir"),
  "Export base directory (default: <model_dir>/export).",
  module_name=_AFTER,
)
_SHORTCUTS = common.flag_group(__name__, "Hyperparameter shortcuts (or set them in --hparams)")
# Shortcuts for common hyperparameters; None: the model's default (its
# HParams dataclass). A model that lacks one rejects it.
flags.DEFINE_integer(
  "embedding_dim",
  None,
  "hparams embedding_dim: width of every id embedding.",
  lower_bound=1,
  module_name=_SHORTCUTS,
)
flags.DEFINE_integer(
  "num_experts",
  None,
  "hparams num_experts (TAFE, MMoE, PLE).",
  lower_bound=1,
  module_name=_SHORTCUTS,
)
flags.DEFINE_list(
  "expert_units", None, "hparams expert_units: expert MLP widths.", module_name=_SHORTCUTS
)
flags.DEFINE_list(
  "tower_units", None, "hparams tower_units: task tower MLP widths.", module_name=_SHORTCUTS
)
flags.DEFINE_integer(
  "num_levels", None, "hparams num_levels (TAFE, PLE).", lower_bound=1, module_name=_SHORTCUTS
)
flags.DEFINE_float(
  "dropout", None, "hparams dropout.", lower_bound=0, upper_bound=0.9, module_name=_SHORTCUTS
)
flags.DEFINE_bool(
  "train_metrics",
  None,
  "hparams train_metrics: also compute "
  "the step metrics in training steps; off: on validation "
  "only, up to ~2x faster training steps on CPU.",
  module_name=_SHORTCUTS,
)

# flag -> (run setting, flag value -> setting value).
_SETTING_FLAGS: Dict[str, Any] = {
  name: (name, None)
  for name in (
    "dataset",
    "data_dir",
    "synthetic_steps",
    "synthetic_train_rows",
    "synthetic_eval_rows",
    "synthetic_conflict",
    "epochs",
    "batch_size",
    "learning_rate",
    "seed",
    "shuffle",
    "checkpoint_every_steps",
    "steps_per_epoch",
    "monitor",
    "calibration",
    "strategy",
    "cpu_devices",
    "jit_compile",
    "min_shard_bytes",
    "evaluate",
    "export",
    "export_dir",
  )
}
_SETTING_FLAGS.update(
  tpu=("tpu_address", None), mixed_precision=("precision", None), verbose=("verbose", int)
)
_HPARAM_FLAGS: Dict[str, Optional[Callable[[Any, str], Any]]] = {
  "embedding_dim": None,
  "num_experts": None,
  "num_levels": None,
  "dropout": None,
  "train_metrics": None,
  "expert_units": common.int_tuple,
  "tower_units": common.int_tuple,
}


def _hparams_from_flags() -> Dict[str, Any]:
  """--hparams and the hyperparameter shortcut flags given, merged."""
  out: Dict[str, Any] = {}
  if FLAGS.hparams:
    try:
      out = json.loads(FLAGS.hparams)
    except json.JSONDecodeError as e:
      raise common.UserError(f"--hparams: not JSON: {e}") from None
    if not isinstance(out, dict):
      raise common.UserError(
        f"--hparams: expected a JSON object of hyperparameters, got {FLAGS.hparams}"
      )
  for name, convert in _HPARAM_FLAGS.items():
    if not FLAGS[name].present:
      continue
    if name in out:
      raise common.UserError(f"--{name} and --hparams both set {name}; give it once")
    value = FLAGS[name].value
    out[name] = convert(value, name) if convert else value
  return out


def run_config_from_flags() -> config_lib.RunConfig:
  """The run's config: --config's file (or the defaults), overridden by the
  flags given on the command line. A --model other than the file's starts
  from that model's default hyperparameters."""
  try:
    if FLAGS.config:
      if not os.path.isfile(FLAGS.config):
        raise common.UserError(f"--config={FLAGS.config}: no such file")
      try:
        config = config_lib.RunConfig.from_json(files.read_json(FLAGS.config))
      except ValueError as e:  # also not JSON
        raise common.UserError(f"--config={FLAGS.config}: {e}") from None
    else:
      config = config_lib.RunConfig()
    model = config.model
    if FLAGS["model"].present and FLAGS.model != model.name:
      model = config_lib.ModelConfig(FLAGS.model)
    hparams = _hparams_from_flags()
    settings = {}
    for flag, (setting, convert) in _SETTING_FLAGS.items():
      if FLAGS[flag].present:
        value = FLAGS[flag].value
        settings[setting] = convert(value) if convert else value
    return config_lib.RunConfig(
      data=config.data,
      model=model.with_hparams(hparams),
      training=config.training,
      distribution=config.distribution,
      export=config.export,
    ).replace(**settings)
  except ValueError as e:
    raise common.UserError(str(e)) from None


def resolve_data_dir(config: config_lib.RunConfig) -> str:
  """The dataset directory, generating the synthetic set when needed."""
  data = config.data
  if data.dataset != "synthetic":
    schema = common.require_dataset_dir(data.data_dir)
    if schema.name not in common.DATASET_SCHEMAS.get(data.dataset, (schema.name,)):
      raise common.UserError(
        f"--data_dir={data.data_dir} holds dataset {schema.name!r}, not {data.dataset!r}"
      )
    return data.data_dir
  kwargs = {"num_steps": data.synthetic_steps, "seed": config.training.seed}
  if data.synthetic_conflict is not None:
    kwargs["conflict"] = data.synthetic_conflict
  data_dir = data.data_dir or os.path.join(
    os.path.expanduser("~"),
    ".cache",
    "tafe_tf",
    f"synthetic-{data.synthetic_steps}step-seed{config.training.seed}",
  )
  logging.info("synthetic data in %s", data_dir)
  try:
    return synthetic.ensure_dataset(
      data_dir,
      synthetic.SyntheticConfig(**kwargs),
      num_train=data.synthetic_train_rows,
      num_validation=data.synthetic_eval_rows,
      num_test=data.synthetic_eval_rows,
    )
  except ValueError as e:  # e.g. a bad conflict
    raise common.UserError(f"synthetic data: {e}") from None


def main(argv):
  del argv  # checked by common.run
  config = run_config_from_flags()
  if config.distribution.cpu_devices:
    distribution.split_cpu(config.distribution.cpu_devices)
  if config.distribution.strategy == "parameter_server":
    try:
      task_type = (distribution.tf_config().get("task") or {}).get("type")
    except ValueError as e:
      raise common.UserError(str(e)) from None
    if task_type in ("worker", "ps"):
      # The same command on every task: workers and ps serve the chief.
      logging.info("serving as %s until killed", task_type)
      distribution.serve()
      return
  data_dir = resolve_data_dir(config)
  model_dir = FLAGS.model_dir or os.path.join("runs", f"{config.model.name}-{config.data.dataset}")
  with contextlib.ExitStack() as stack:
    try:
      if config.export.evaluate:  # before training, not after it
        input_pipeline.check_schema(data_dir, "test", common.require_dataset_dir(data_dir))
      # The chief holds the model directory through evaluation and export too.
      if distribution.configured_role(config.distribution.strategy).is_chief:
        stack.enter_context(training.model_dir_lock(model_dir))
    except FileNotFoundError as e:
      raise common.UserError(f"{e}; --evaluate=false trains without the test evaluation") from None
    except ValueError as e:  # a schema that does not fit, a busy model dir
      raise common.UserError(str(e)) from None
    _train_evaluate_export(config, data_dir, model_dir)


def _train_evaluate_export(config: config_lib.RunConfig, data_dir: str, model_dir: str) -> None:
  """Trains, then (the chief) evaluates on the test split and exports."""
  try:
    result = training.train(data_dir, model_dir, config, overwrite=FLAGS.overwrite)
  except ValueError as e:  # e.g. a model dir of another run, a corrupt shard
    raise common.UserError(str(e)) from None
  if not result.is_chief:
    return  # the chief reports, evaluates and exports
  monitor = config.training.monitor
  if result.already_finished:
    print(
      f"{model_dir} holds this run, finished (kept epoch "
      f"{result.best_epoch}, {monitor} = {result.best_value:.6f}): nothing "
      "to do (--overwrite trains it again)"
    )
    return
  print(
    f"Kept epoch {result.best_epoch} of {config.training.epochs} "
    f"({monitor} = {result.best_value:.6f}); model dir: {model_dir}"
  )
  if config.export.evaluate:
    try:
      reporting.evaluate_and_write(
        result.model,
        result.schema,
        data_dir,
        split="test",
        output_dir=os.path.join(model_dir, "eval"),
        model_dir=model_dir,
      )
    except ValueError as e:  # e.g. a corrupt test shard, a sample_id not UTF-8
      raise common.UserError(f"evaluation on the test split: {e}") from None
  if config.export.export:
    try:
      path = export.export_saved_model(
        result.model,
        result.schema,
        config.export.export_dir or os.path.join(model_dir, "export"),
        model_name=config.model.name,
      )
    except (FileExistsError, ValueError) as e:  # e.g. --export_dir is a file
      raise common.UserError(str(e)) from None
    print(f"SavedModel for TF Serving: {path}")


def run() -> None:
  """Console-script entry point (``tafe-train``)."""
  common.run(main)


if __name__ == "__main__":
  run()
