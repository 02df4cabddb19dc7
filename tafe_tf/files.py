"""Files that appear whole or not at all, and the JSON every file here uses.

Every file the package writes for a reader goes to a temporary name first and
is renamed into place only when the writer finished, so a crash leaves the old
file (or none), never half of one:

* text (schemas, vocabularies, reports, ``run.json``, prediction CSVs):
  :func:`atomic_text_file`;
* files written by another writer (TFRecord shards): the writer writes
  :func:`incomplete_path`, then :func:`publish` or :func:`discard`;
* directories (a SavedModel version): :func:`atomic_directory`; a staging
  directory a killed writer left behind is found and removed by
  :func:`remove_stale_staging` (its writer held a ``flock`` on it, which the
  kernel released).

Readers never look at ``*.incomplete`` names.

JSON is strict (:func:`json_safe`): NaN and infinities become ``null`` and
numpy scalars plain numbers, since Python's ``json`` would write ``NaN``,
which other JSON readers reject.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import time
from typing import Any, Iterator, List, Mapping

import numpy as np
import tensorflow as tf

INCOMPLETE_SUFFIX = ".incomplete"
# Prefix of a directory being staged (TF Serving ignores names not numeric).
STAGING_PREFIX = ".tmp-"
# A staging directory younger than this is never stale (it may be one whose
# writer has not locked it yet).
STALE_AFTER_S = 60.0


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
  # Held until the end: the directory is in use (remove_stale_staging).
  fd = os.open(staging, os.O_RDONLY)
  fcntl.flock(fd, fcntl.LOCK_EX)
  try:
    yield staging
    if os.path.exists(path):  # os.rename would replace an empty directory
      raise FileExistsError(f"{path} already exists")
    os.rename(staging, path)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  finally:
    os.close(fd)


def remove_stale_staging(parent: str, name_pattern: str) -> List[str]:
  """Removes the staging directories of :func:`atomic_directory` in
  ``parent`` that a killed writer left: names ``STAGING_PREFIX`` +
  ``name_pattern`` (a regex of what follows the prefix, matched at its
  start), no writer holding them, older than :data:`STALE_AFTER_S`.

  Returns:
    The paths removed.
  """
  removed: List[str] = []
  if not os.path.isdir(parent):
    return removed
  pattern = re.compile(re.escape(STAGING_PREFIX) + name_pattern)
  for name in sorted(os.listdir(parent)):
    path = os.path.join(parent, name)
    if not pattern.match(name) or not os.path.isdir(path) or os.path.islink(path):
      continue
    try:
      fd = os.open(path, os.O_RDONLY)
    except OSError:
      continue
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      if time.time() - os.stat(fd).st_mtime >= STALE_AFTER_S:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    except BlockingIOError:  # a writer is at work in it
      pass
    finally:
      os.close(fd)
  return removed


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
