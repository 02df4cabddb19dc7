r"""Trains a multi-step conversion model, evaluates it and exports it.

With no flags this is the package's main job: generate (or reuse) the built-in
synthetic two-step data, train TAFE, keep the epoch best on validation, print a
per-step table of AUC against the oracle AUC, write the evaluation report and
plots, and export a SavedModel for TF Serving::

    python -m launch.train

On converted real data (see ``python -m launch.convert``)::

    python -m launch.train --model=ple --dataset=ali_ccp \
        --data_dir=/data/ali_ccp_tfrecords --model_dir=runs/ple_aliccp

Rerunning the same command after a crash resumes from the last checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from absl import flags
from absl import logging

from tafe_tf import distribution
from tafe_tf import models as models_lib
from tafe_tf import reporting
from tafe_tf import training

from tafe_tf.launch import common

FLAGS = flags.FLAGS

flags.DEFINE_enum("model", "tafe", list(models_lib.MODEL_NAMES), "Model.")
flags.DEFINE_enum("dataset", "synthetic", list(common.DATASETS),
                  "synthetic (generated into --data_dir, or a cache dir), or a "
                  "converted dataset directory given by --data_dir.")
flags.DEFINE_string("data_dir", "", "Dataset directory (schema.json + shards). "
                    "For --dataset=synthetic: where to generate it (default: "
                    "~/.cache/tafe_tf/synthetic-<steps>step-seed<seed>).")
flags.DEFINE_string("model_dir", "", "Run directory (default: runs/<model>-"
                    "<dataset>).")
flags.DEFINE_integer("epochs", 2, "Epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 2048, "Examples per replica per step.",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the weights, the shuffling and the "
                     "synthetic data.")
flags.DEFINE_enum("strategy", "auto", list(distribution.STRATEGY_NAMES),
                  "Distribution strategy (docs/distribution.md). multi_worker "
                  "and parameter_server read the cluster from TF_CONFIG; with "
                  "parameter_server the worker and ps tasks run this same "
                  "command and serve.")
flags.DEFINE_string("tpu", "", "TPU name or grpc:// address (--strategy=tpu; "
                    "default: TPU_NAME or the local TPU VM).")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into N logical devices "
                     "(0: no split), e.g. to run --strategy=mirrored with N "
                     "replicas on a host without GPUs.", lower_bound=0)
flags.DEFINE_enum("mixed_precision", "float32", list(distribution.PRECISIONS),
                  "Keras dtype policy; the loss and probabilities stay "
                  "float32, mixed_float16 adds loss scaling.")
flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA "
                  "(id lookups move into the input pipeline).")
flags.DEFINE_bool("shuffle", True, "Shuffle the training split.")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint mid-epoch "
                     "every N steps (0: at epoch ends only).", lower_bound=0)
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch (0: one pass over "
                     "the training split).", lower_bound=0)
flags.DEFINE_string("monitor", "val_loss", "Validation quantity that picks the "
                    "kept epoch.")
# Model size.
flags.DEFINE_integer("embedding_dim", 16, "Embedding width of every id field.",
                     lower_bound=1)
flags.DEFINE_integer("num_experts", 4, "Shared experts (TAFE, MMoE, PLE).",
                     lower_bound=1)
flags.DEFINE_list("expert_units", ["128", "64"], "Expert MLP widths.")
flags.DEFINE_list("tower_units", ["64", "32"], "Task tower MLP widths.")
flags.DEFINE_integer("num_levels", 1, "Extraction levels (TAFE, PLE).",
                     lower_bound=1)
flags.DEFINE_float("dropout", 0.0, "Dropout rate.", lower_bound=0,
                   upper_bound=0.9)
flags.DEFINE_bool("train_metrics", True, "Also compute the step metrics (AUC, "
                  "logloss, PCOC) in training steps; off: on validation only, "
                  "up to ~2x faster training steps on CPU.")
# Built-in synthetic data.
flags.DEFINE_integer("synthetic_steps", 2, "Steps of the synthetic chain.",
                     lower_bound=2, upper_bound=4)
flags.DEFINE_integer("synthetic_train_rows", 300_000, "Synthetic train rows.",
                     lower_bound=1)
flags.DEFINE_integer("synthetic_eval_rows", 50_000, "Synthetic validation and "
                     "test rows (each).", lower_bound=1)
flags.DEFINE_float("synthetic_conflict", None, "Conflict between steps in the "
                   "synthetic truth (default: the generator's).")
# What to do after training.
flags.DEFINE_bool("evaluate", True, "Evaluate on the test split after training.")
flags.DEFINE_bool("export", True, "Export a SavedModel after training.")
flags.DEFINE_string("export_dir", "", "Export base directory (default: "
                    "<model_dir>/export).")


def model_hparams() -> Dict[str, Any]:
  return {
      "embedding_dim": FLAGS.embedding_dim,
      "num_experts": FLAGS.num_experts,
      "expert_units": common.int_tuple(FLAGS.expert_units, "expert_units"),
      "tower_units": common.int_tuple(FLAGS.tower_units, "tower_units"),
      "num_levels": FLAGS.num_levels,
      "dropout": FLAGS.dropout,
      "seed": FLAGS.seed,
      "train_metrics": FLAGS.train_metrics,
  }


def resolve_data_dir() -> str:
  """The dataset directory, generating the synthetic set when needed."""
  if FLAGS.dataset != "synthetic":
    schema = common.require_dataset_dir(FLAGS.data_dir)
    if schema.name not in common.DATASET_SCHEMAS.get(FLAGS.dataset,
                                                     (schema.name,)):
      raise common.UserError(f"--data_dir={FLAGS.data_dir} holds dataset "
                           f"{schema.name!r}, not {FLAGS.dataset!r}")
    return FLAGS.data_dir
  from tafe_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  kwargs = {"num_steps": FLAGS.synthetic_steps, "seed": FLAGS.seed}
  if FLAGS.synthetic_conflict is not None:
    kwargs["conflict"] = FLAGS.synthetic_conflict
  config = synthetic.SyntheticConfig(**kwargs)
  data_dir = FLAGS.data_dir or os.path.join(
      os.path.expanduser("~"), ".cache", "tafe_tf",
      f"synthetic-{FLAGS.synthetic_steps}step-seed{FLAGS.seed}")
  logging.info("synthetic data in %s", data_dir)
  return synthetic.ensure_dataset(
      data_dir, config, num_train=FLAGS.synthetic_train_rows,
      num_validation=FLAGS.synthetic_eval_rows,
      num_test=FLAGS.synthetic_eval_rows)


def main(argv):
  del argv  # checked by common.run
  if FLAGS.cpu_devices:
    distribution.split_cpu(FLAGS.cpu_devices)
  if FLAGS.strategy == "parameter_server":
    try:
      task_type = (distribution.tf_config().get("task") or {}).get("type")
    except ValueError as e:
      raise common.UserError(str(e)) from None
    if task_type in ("worker", "ps"):
      # The same command on every task: workers and ps serve the chief.
      logging.info("serving as %s until killed", task_type)
      distribution.serve()
      return
  hparams = model_hparams()
  data_dir = resolve_data_dir()
  model_dir = FLAGS.model_dir or os.path.join("runs",
                                              f"{FLAGS.model}-{FLAGS.dataset}")
  config = training.TrainConfig(
      model=FLAGS.model, hparams=hparams, epochs=FLAGS.epochs,
      batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
      seed=FLAGS.seed, strategy=FLAGS.strategy,
      precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
      shuffle=FLAGS.shuffle, tpu_address=FLAGS.tpu,
      checkpoint_every_steps=FLAGS.checkpoint_every_steps,
      steps_per_epoch=FLAGS.steps_per_epoch or None, monitor=FLAGS.monitor)
  try:
    result = training.train(data_dir, model_dir, config)
  except ValueError as e:  # e.g. a model dir of another run
    raise common.UserError(str(e)) from None
  if not result.is_chief:
    return  # the chief reports, evaluates and exports
  print(f"Kept epoch {result.best_epoch} of {FLAGS.epochs} "
        f"({FLAGS.monitor} = {result.best_value:.6f}); model dir: {model_dir}")
  if FLAGS.evaluate:
    reporting.evaluate_and_write(
        result.model, result.schema, data_dir, split="test",
        output_dir=os.path.join(model_dir, "eval"), model_dir=model_dir)
  if FLAGS.export:
    from tafe_tf import export  # pylint: disable=g-import-not-at-top
    path = export.export_saved_model(
        result.model, result.schema,
        FLAGS.export_dir or os.path.join(model_dir, "export"),
        model_name=FLAGS.model)
    print(f"SavedModel for TF Serving: {path}")


def run() -> None:
  """Console-script entry point (``tafe-train``)."""
  common.run(main)


if __name__ == "__main__":
  run()
