"""Id counting with bounded memory, and the vocabulary files built from counts.

A vocabulary file lists raw ids one per line, most frequent first (ties: the
smaller id first, so files are reproducible); line i becomes embedding row i+1
inside the model and every id not in the file the out-of-vocabulary row 0.
Converters count the ids of the TRAIN split only and leave out ids seen
``min_count`` times or fewer, so that rare ids share the OOV row.
"""

from __future__ import annotations

import array
import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import files

VOCAB_DIR = "vocab"
DEFAULT_MIN_COUNT = 10
# A vocabulary line: an int64 written as write_vocabulary does (no sign but
# "-", no space, no "_": the one form, so no two lines spell one id).
_ENTRY = re.compile(r"-?[0-9]+")
_MAX_DIGITS = len(str(features_lib.MIN_ID))


class IdCounter:
  """Counts int64 ids; memory grows with the distinct ids, not with the adds.

  Adds go to a flat buffer; when it holds ``buffer_size`` ids it is folded into
  sorted ``(ids, counts)`` arrays with one ``np.unique``. 100M adds over 1M
  distinct ids therefore need about 16 MB of counts plus the buffer.
  """

  def __init__(self, buffer_size: int = 1 << 18):
    if buffer_size < 1:
      raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    self.buffer_size = buffer_size
    self._ids = np.zeros(0, np.int64)
    self._counts = np.zeros(0, np.int64)
    # Weight-1 adds (one row at a time, the hot path) land in a typed array;
    # weighted adds as array chunks.
    self._flat = array.array("q")
    self._chunk_ids: List[np.ndarray] = []
    self._chunk_weights: List[np.ndarray] = []
    self._chunked = 0

  def add(self, ids: Iterable[int]) -> None:
    """Counts every id of ``ids`` once (a repeated id counts again).

    Raises:
      ValueError: an id outside int64 (readers refuse those first:
        :func:`tafe_tf.data.line_format.parse_id`).
    """
    try:
      self._flat.extend(ids)
    except OverflowError:
      raise ValueError(f"ids outside int64 cannot be counted: {list(ids)[:5]}") from None
    if len(self._flat) >= self.buffer_size:
      self._fold()

  def add_weighted(self, ids: np.ndarray, weight: int) -> None:
    """Counts every id of ``ids`` ``weight`` times (ids as :meth:`add`)."""
    try:
      ids = np.asarray(ids, dtype=np.int64).ravel()
    except OverflowError:
      raise ValueError(f"ids outside int64 cannot be counted: {list(ids)[:5]}") from None
    if ids.size == 0 or weight == 0:
      return
    self._chunk_ids.append(ids)
    self._chunk_weights.append(np.full(ids.size, weight, np.int64))
    self._chunked += ids.size
    if self._chunked >= self.buffer_size:
      self._fold()

  def _fold(self) -> None:
    if not self._flat and not self._chunked:
      return
    flat = np.frombuffer(self._flat, dtype=np.int64) if self._flat else (np.zeros(0, np.int64))
    ids = np.concatenate([self._ids, flat] + self._chunk_ids)
    weights = np.concatenate([self._counts, np.ones(flat.size, np.int64)] + self._chunk_weights)
    self._ids, inverse = np.unique(ids, return_inverse=True)
    self._counts = np.bincount(inverse.ravel(), weights=weights, minlength=self._ids.size).astype(
      np.int64
    )
    self._flat = array.array("q")
    self._chunk_ids, self._chunk_weights, self._chunked = [], [], 0

  def merge(self, other: "IdCounter") -> None:
    """Adds the counts of ``other`` to this counter."""
    ids, counts = other.counts()
    if ids.size:
      self._chunk_ids.append(ids)
      self._chunk_weights.append(counts)
      self._chunked += ids.size
      self._fold()

  def counts(self) -> Tuple[np.ndarray, np.ndarray]:
    """``(ids, counts)``: distinct ids ascending and how often each was seen."""
    self._fold()
    return self._ids, self._counts

  def __getstate__(self):  # pickled between worker processes: fold first
    self._fold()
    return {"buffer_size": self.buffer_size, "ids": self._ids, "counts": self._counts}

  def __setstate__(self, state):
    self.__init__(state["buffer_size"])
    self._ids, self._counts = state["ids"], state["counts"]


def select_vocabulary(
  counter: IdCounter, min_count: int = DEFAULT_MIN_COUNT, exclude: Iterable[int] = ()
) -> np.ndarray:
  """Ids seen more than ``min_count`` times, most frequent first.

  Args:
    counter: Counts of the train split.
    min_count: Ids seen this many times or fewer are left out (they land on
      the OOV row). 0 keeps every id seen.
    exclude: Ids that never enter a vocabulary: the missing-value id -1, or an
      id that already means "rare" in preprocessed data.

  Returns:
    int64 array of the ids in vocabulary order.
  """
  if min_count < 0:
    raise ValueError(f"min_count must be >= 0, got {min_count}")
  ids, counts = counter.counts()
  keep = counts > min_count
  excluded = np.asarray(list(exclude), np.int64)
  if excluded.size:
    keep &= ~np.isin(ids, excluded)
  ids, counts = ids[keep], counts[keep]
  order = np.lexsort((ids, -counts))  # count descending, then id ascending
  return ids[order]


def cutoff_summary(
  counter: IdCounter, min_count: int = DEFAULT_MIN_COUNT, exclude: Iterable[int] = ()
) -> Dict[str, int]:
  """What the frequency cut-off does to one field's train ids.

  Args: as :func:`select_vocabulary` (``exclude``: ids not counted at all,
    such as the missing-value id -1).

  Returns:
    ``ids_seen`` (distinct ids), ``ids_oov`` (of those, seen ``min_count``
    times or fewer: they map to the OOV row), ``occurrences`` (train
    occurrences of all seen ids) and ``occurrences_oov`` (of the OOV ones).
  """
  ids, counts = counter.counts()
  excluded = np.asarray(list(exclude), np.int64)
  if excluded.size:
    counts = counts[~np.isin(ids, excluded)]
  rare = counts <= min_count
  return {
    "ids_seen": int(counts.size),
    "ids_oov": int(rare.sum()),
    "occurrences": int(counts.sum()),
    "occurrences_oov": int(counts[rare].sum()),
  }


def vocabulary_file(field_name: str) -> str:
  """A field's vocabulary path relative to the dataset directory."""
  return f"{VOCAB_DIR}/{field_name}.txt"


def write_vocabulary(path: str, ids: np.ndarray) -> None:
  """Writes ids one per line (through a temporary file and a rename)."""
  text = "".join(f"{i}\n" for i in np.asarray(ids).tolist())
  with files.atomic_text_file(path) as f:
    f.write(text)  # also for no ids: GFile creates the file on first write


def read_vocabulary(path: str) -> np.ndarray:
  """Reads a vocabulary file back as an int64 array (line order kept).

  Raises:
    ValueError: naming the file and line of an entry that is not an integer.
  """
  ids = []
  with tf.io.gfile.GFile(path) as f:
    for number, line in enumerate(f, start=1):
      text = line.rstrip("\r\n")
      if not _ENTRY.fullmatch(text):
        raise ValueError(f"{path}:{number}: vocabulary entry {text[:40]!r} is not an integer id")
      value = int(text) if len(text) <= _MAX_DIGITS else None
      if value is None or not features_lib.id_fits(value):
        raise ValueError(f"{path}:{number}: vocabulary entry {text[:40]!r} does not fit int64")
      ids.append(value)
  return np.asarray(ids, np.int64)


def write_vocabularies(
  out_dir: str,
  counters: Mapping[str, IdCounter],
  min_count: int = DEFAULT_MIN_COUNT,
  exclude: Optional[Mapping[str, Iterable[int]]] = None,
) -> Dict[str, int]:
  """Writes ``vocab/<field>.txt`` for every counter; returns field -> size."""
  sizes = {}
  for name, counter in counters.items():
    ids = select_vocabulary(counter, min_count, (exclude or {}).get(name, ()))
    write_vocabulary(os.path.join(out_dir, vocabulary_file(name)), ids)
    sizes[name] = int(ids.size)
  return sizes
