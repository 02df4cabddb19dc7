"""Files that appear whole or not at all, and the JSON every file here uses.

Every file the package writes for a reader (schemas, vocabularies, reports,
``run.json``, prediction CSVs) goes through :func:`atomic_text_file`: the text
goes to ``<path>.incomplete`` and is renamed over ``<path>`` only when the
writer finished, so a crash leaves the old file (or none), never half of one.
Readers never look at ``*.incomplete`` names.

JSON is strict (:func:`json_safe`): NaN and infinities become ``null`` and
numpy scalars plain numbers, since Python's ``json`` would write ``NaN``,
which other JSON readers reject.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow as tf

INCOMPLETE_SUFFIX = ".incomplete"


@contextlib.contextmanager
def atomic_text_file(path: str) -> Iterator[Any]:
  """Yields a writable text file that becomes ``path`` when the block succeeds.

  An exception in the block deletes the temporary file and leaves any old
  ``path`` as it was. The parent directory is created when missing.
  """
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  tmp = path + INCOMPLETE_SUFFIX
  try:
    with tf.io.gfile.GFile(tmp, "w") as f:
      yield f
  except BaseException:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise
  tf.io.gfile.rename(tmp, path, overwrite=True)


def json_safe(obj: Any) -> Any:
  """``obj`` with NaN and infinities as None and numpy scalars and arrays as
  Python values, recursively through dicts, lists and tuples."""
  if isinstance(obj, Mapping):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return json_safe(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  return obj


def write_json_atomic(path: str, obj: Any, sort_keys: bool = True) -> str:
  """Writes ``obj`` as strict, indented JSON to ``path`` atomically; returns
  ``path``."""
  with atomic_text_file(path) as f:
    json.dump(json_safe(obj), f, indent=2, sort_keys=sort_keys, allow_nan=False)
    f.write("\n")
  return path


def read_json(path: str) -> Any:
  """The JSON value in ``path`` (any ``tf.io.gfile`` path)."""
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)
