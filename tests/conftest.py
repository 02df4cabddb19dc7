"""Shared test set-up: quiet TensorFlow, Keras 2, repo root importable."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import tafe_tf  # noqa: E402,F401  (selects Keras 2 first)

FIXTURES = os.path.join(os.path.dirname(ROOT), "shared", "data", "fixtures")

# Shared test data builders (multistep_testdata) import by plain name.
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
  sys.path.insert(0, TESTS)
