r"""Exports a trained model as a SavedModel for TF Serving.

    python -m launch.export --model_dir=runs/tafe-synthetic --export_dir=/models/tafe

writes ``EXPORT_DIR/<version>/`` atomically (see ``tafe_tf.export``) and prints
its path. ``--write_request_examples`` also writes a REST predict body for each
signature, made from the schema, to ``EXPORT_DIR/requests/<signature>.json``
(docs/serving.md: sending them, and a gRPC client).
"""

from __future__ import annotations

import os
from typing import Any, Tuple

from absl import flags

from tafe_tf.launch import common

# Loaded at first use, in main: --help stays free of TensorFlow.
export = common.lazy_import("tafe_tf.export")
serving_requests = common.lazy_import("tafe_tf.serving_requests")
training = common.lazy_import("tafe_tf.training")

FLAGS = flags.FLAGS

_EXPORT = common.flag_group(__name__, "What to export, where")
_REQUESTS = common.flag_group(__name__, "Requests")
flags.DEFINE_string("model_dir", "", "Trained model directory (launch.train).", module_name=_EXPORT)
flags.DEFINE_string(
  "export_dir", "", "Base directory of the servable's versions.", module_name=_EXPORT
)
flags.DEFINE_integer(
  "version",
  None,
  "Version number (default: seconds since the epoch).",
  lower_bound=1,
  module_name=_EXPORT,
)
flags.DEFINE_bool(
  "write_request_examples",
  False,
  "Also write REST predict bodies for both signatures, made from the schema, to "
  "<export_dir>/requests/<signature>.json (docs/serving.md).",
  module_name=_REQUESTS,
)
flags.DEFINE_string(
  "model_name",
  "",
  "model_spec.name in the warm-up and example requests (default: the model's name).",
  module_name=_REQUESTS,
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
      path, schema = _export()
  except (FileExistsError, ValueError) as e:
    raise common.UserError(str(e)) from None
  print(path)
  if FLAGS.write_request_examples:
    for request in serving_requests.write_request_examples(FLAGS.export_dir, schema):
      print(request)


def _export() -> Tuple[str, Any]:
  """``(export path, the model dir's schema)``."""
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
  ), schema


def run() -> None:
  """Console-script entry point (``tafe-export``)."""
  common.run(main)


if __name__ == "__main__":
  run()
