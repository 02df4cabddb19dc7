"""tafe-tf: Task Aware Feature Extraction for multi-step conversion estimation.

Importing this package selects Keras 2 (``tf-keras``) for ``tf.keras``, which
TensorFlow Recommenders needs. The switch is the environment variable
``TF_USE_LEGACY_KERAS=1``; TensorFlow reads it once, the first time
``tf.keras`` is touched, so it must be set before that happens.
"""

import importlib.util as _importlib_util
import os as _os
import sys as _sys

_KERAS_HINT = (
  "tafe_tf needs Keras 2 (the 'tf-keras' package) behind tf.keras, but tf.keras "
  "was already resolved to Keras 3 in this process. Import tafe_tf before anything "
  "touches tf.keras, or set TF_USE_LEGACY_KERAS=1 in the environment before "
  "starting Python, and install tf-keras matching your TensorFlow minor version "
  "(pip install 'tf-keras==<tensorflow version>')."
)


def _select_legacy_keras() -> None:
  """Sets TF_USE_LEGACY_KERAS=1; checks tf.keras is Keras 2 if TF is loaded.

  TensorFlow itself is not imported here: every module that needs it imports
  it, after this has run, so ``import tafe_tf`` stays cheap for the command
  lines' ``--help``. If TensorFlow was imported first, tf.keras may already be
  Keras 3, which this checks at once.
  """
  previous = _os.environ.get("TF_USE_LEGACY_KERAS")
  if previous is not None and previous.strip().lower() not in ("1", "true"):
    if "tensorflow" in _sys.modules:
      raise ImportError(
        f"TF_USE_LEGACY_KERAS={previous!r} is set and TensorFlow is already imported. {_KERAS_HINT}"
      )
  _os.environ["TF_USE_LEGACY_KERAS"] = "1"
  if _importlib_util.find_spec("tf_keras") is None:
    raise ImportError(
      "tafe_tf needs the 'tf-keras' package (Keras 2). Install it pinned to "
      "your TensorFlow minor version: pip install 'tf-keras==2.21.*'."
    )
  if "tensorflow" not in _sys.modules:
    return  # the variable set above decides tf.keras when TF is imported
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  # tf.keras is a lazy loader: ask where its Layer class really comes from.
  layer_module = tf.keras.layers.Layer.__module__
  if not layer_module.startswith("tf_keras"):
    raise ImportError(
      f"tf.keras resolves to {layer_module.split('.')[0]!r}, not 'tf_keras'. {_KERAS_HINT}"
    )


_select_legacy_keras()

__version__ = "0.1.0"
