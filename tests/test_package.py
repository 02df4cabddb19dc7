"""Importing tafe_tf selects Keras 2, or says clearly why it cannot."""

import os
import subprocess
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tf_keras_is_keras_2():
  assert tf.keras.layers.Layer.__module__.startswith("tf_keras")
  assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


def _run(code):
  env = dict(os.environ)
  env.pop("TF_USE_LEGACY_KERAS", None)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )


def test_import_sets_legacy_keras_in_a_fresh_process():
  proc = _run("import tafe_tf, tensorflow as tf; print(tf.keras.layers.Layer.__module__)")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip().startswith("tf_keras")


def test_import_after_keras_3_fails_with_instructions():
  proc = _run("import tensorflow as tf; tf.keras.layers.Layer; import tafe_tf")
  assert proc.returncode != 0
  assert "ImportError" in proc.stderr
  assert "Import tafe_tf before anything touches tf.keras" in proc.stderr
  assert "TF_USE_LEGACY_KERAS=1" in proc.stderr
