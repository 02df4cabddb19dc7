"""Shared test set-up: quiet TensorFlow, Keras 2 selected before anything.

The package is imported as installed (``pip install -e .``): ``tafe_tf``,
``tafe_tf.data``, ``tafe_tf.launch``, ``tafe_tf.benchmarks``. The repository
root is deliberately not put on ``sys.path``, so a test that imports the
repository's ``data`` or ``launch`` folders by their bare names fails as it
would for a user.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tafe_tf  # noqa: E402,F401  (selects Keras 2 first)

# Shared test data builders (multistep_testdata) import by plain name.
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
  sys.path.insert(0, TESTS)
