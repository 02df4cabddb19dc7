"""Files that appear whole or not at all, and the JSON every file here uses.

Every file the package writes for a reader goes to a temporary name first and
is renamed into place only when the writer finished, so a crash leaves the old
file (or none), never half of one:

* text (schemas, vocabularies, reports, ``run.json``, prediction CSVs):
  :func:`atomic_text_file`;
* files written by another writer (TFRecord shards): the writer writes
  :func:`incomplete_path`, then :func:`publish` or :func:`discard`;
* directories (a SavedModel version): :func:`atomic_directory`.

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
import shutil
import tempfile
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow as tf

INCOMPLETE_SUFFIX = ".incomplete"
# Prefix of a directory being staged (TF Serving ignores names not numeric).
STAGING_PREFIX = ".tmp-"


def incomplete_path(path: str) -> str:
  """Where ``path`` is written until :func:`publish` renames it into place."""
  return path + INCOMPLETE_SUFFIX


def publish(path: str) -> str:
  """Renames the finished :func:`incomplete_path` of ``path`` over ``path``;
  returns ``path``."""
  tf.io.gfile.rename(incomplete_path(path), path, overwrite=True)
  return path


def discard(path: str) -> None:
  """Deletes the :func:`incomplete_path` of ``path``, if there is one."""
  tmp = incomplete_path(path)
  if tf.io.gfile.exists(tmp):
    tf.io.gfile.remove(tmp)


@contextlib.contextmanager
def atomic_text_file(path: str) -> Iterator[Any]:
  """Yields a writable text file that becomes ``path`` when the block succeeds.

  An exception in the block deletes the temporary file and leaves any old
  ``path`` as it was. The parent directory is created when missing.
  """
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  try:
    with tf.io.gfile.GFile(incomplete_path(path), "w") as f:
      yield f
  except BaseException:
    discard(path)
    raise
  publish(path)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields an empty staging directory that becomes ``path`` when the block
  succeeds.

  The staging directory is a sibling of ``path`` named
  ``<STAGING_PREFIX><basename>-<random>``; an exception in the block (or in
  the final rename) deletes it. ``path`` must not exist yet, and must be on a
  local file system: the rename is what makes the directory appear whole.

  Raises:
    FileExistsError: when ``path`` exists by the time the block finished.
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.path.basename(path)}-", dir=parent)
  # mkdtemp makes it 0700: a server running as another user (TF Serving) could
  # not read it. Give it the mode os.makedirs would (0755 under umask 022).
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(staging, 0o777 & ~umask)
  try:
    yield staging
    if os.path.exists(path):  # os.rename would replace an empty directory
      raise FileExistsError(f"{path} already exists")
    os.rename(staging, path)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


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
