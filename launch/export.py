r"""Exports a trained model as a SavedModel for TF Serving.

    python -m launch.export --model_dir=runs/tafe-synthetic --export_dir=/models/tafe

writes ``EXPORT_DIR/<version>/`` atomically (see ``tafe_tf.export``).
"""

from __future__ import annotations

import os

from absl import flags

from tafe_tf import export, training
from tafe_tf.launch import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", "", "Trained model directory (launch.train).")
flags.DEFINE_string("export_dir", "", "Base directory of the servable's versions.")
flags.DEFINE_integer(
  "version", None, "Version number (default: seconds since the epoch).", lower_bound=1
)
flags.DEFINE_string(
  "model_name", "", "model_spec.name in the warm-up requests (default: the model's name)."
)


def main(argv):
  del argv  # checked by common.run
  common.require_model_dir(FLAGS.model_dir)
  if not FLAGS.export_dir:
    raise common.UserError("--export_dir is required")
  if FLAGS.version is not None:
    existing = os.path.join(FLAGS.export_dir, str(FLAGS.version))
    if os.path.exists(existing):  # fail before loading the model
      raise common.UserError(f"export version {existing} already exists")
  try:
    # Shared: refused while a training writes into the directory.
    with training.model_dir_lock(FLAGS.model_dir, shared=True):
      print(_export())
  except (FileExistsError, ValueError) as e:
    raise common.UserError(str(e)) from None


def _export() -> str:
  try:
    run = training.read_run_config(FLAGS.model_dir)
    schema = training.model_dir_schema(FLAGS.model_dir)
    model = training.load_trained_model(FLAGS.model_dir)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise common.UserError(f"--model_dir={FLAGS.model_dir}: {e}") from None
  return export.export_saved_model(
    model,
    schema,
    FLAGS.export_dir,
    version=FLAGS.version,
    model_name=FLAGS.model_name or run.model.name,
  )


def run() -> None:
  """Console-script entry point (``tafe-export``)."""
  common.run(main)


if __name__ == "__main__":
  run()
