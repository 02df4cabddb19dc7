"""Training progress that fits 100 columns: :class:`CompactProgress`.

Keras' progress bar prints every logged value, which for a multi-step model
(losses, and AUC, logloss and PCOC per step, for training and validation) made
lines of several hundred columns. This bar shows the epoch, the steps, the
time, and a few chosen values (the loss, the validation loss and the
monitored quantity); every value is still in ``history.csv`` and TensorBoard.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

WIDTH = 100
# A terminal's in-place updates, at most this often.
_UPDATE_SECONDS = 0.5


def format_line(
  head: str, logs: Mapping[str, Any], shown: Sequence[str], width: int = WIDTH
) -> str:
  """``head`` then ``name value`` of each of ``shown`` present in ``logs``,
  as many as fit in ``width`` columns (in order)."""
  line = head
  for name in shown:
    if name not in logs:
      continue
    item = f"  {name} {float(logs[name]):.4f}"
    if len(line) + len(item) > width:
      break
    line += item
  return line[:width]


class CompactProgress(tf.keras.callbacks.ProgbarLogger):
  """A progress line per epoch of at most :data:`WIDTH` columns.

  A ``ProgbarLogger`` (so Keras adds no bar of its own); ``fit``'s
  ``verbose`` decides as for Keras: 0 silent, 1 a line updated in place on a
  terminal (elsewhere, printed once per epoch), 2 a line per epoch.

  Args:
    shown: Log names to show, in order, as many as fit (default: ``loss``
      and ``val_loss``).
    stream: Where to write (default: ``sys.stdout`` when writing).
  """

  def __init__(self, shown: Sequence[str] = ("loss", "val_loss"), stream: Optional[Any] = None):
    super().__init__(count_mode="steps")
    self.shown: List[str] = list(dict.fromkeys(shown))
    self._stream = stream
    self._start = 0.0
    self._last_update = 0.0
    self._epoch = 0

  def _out(self) -> Any:
    return self._stream or sys.stdout

  def _head(self, step: int, seconds: float) -> str:
    of = f"/{self.target}" if self.target else ""
    return f"epoch {self._epoch + 1}/{self.epochs}  step {step}{of}  {seconds:.0f}s"

  def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    self._epoch = epoch
    self._start = self._last_update = time.monotonic()

  def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    out = self._out()
    if self.verbose != 1 or not getattr(out, "isatty", lambda: False)():
      return
    now = time.monotonic()
    if now - self._last_update < _UPDATE_SECONDS:
      return
    self._last_update = now
    line = format_line(self._head(batch + 1, now - self._start), _numbers(logs), self.shown)
    out.write("\r" + line.ljust(WIDTH)[:WIDTH])
    out.flush()

  def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    if not self.verbose:
      return
    out = self._out()
    steps = self.target or "?"
    head = self._head(steps, time.monotonic() - self._start)
    line = format_line(head, _numbers(logs), self.shown)
    tty = self.verbose == 1 and getattr(out, "isatty", lambda: False)()
    out.write(("\r" + line.ljust(WIDTH)[:WIDTH].rstrip() if tty else line) + "\n")
    out.flush()

  # Evaluation and prediction inside fit stay silent, as with Keras' own bar.
  def on_test_begin(self, logs=None) -> None:
    pass

  def on_test_batch_end(self, batch, logs=None) -> None:
    pass

  def on_test_end(self, logs=None) -> None:
    pass

  def on_predict_begin(self, logs=None) -> None:
    pass

  def on_predict_batch_end(self, batch, logs=None) -> None:
    pass

  def on_predict_end(self, logs=None) -> None:
    pass


def _numbers(logs: Optional[Mapping[str, Any]]) -> Dict[str, float]:
  """The numeric logs as floats (read only when a line is printed)."""
  out = {}
  for name, value in (logs or {}).items():
    if hasattr(value, "fetch"):  # a parameter-server run's RemoteValue
      value = value.fetch()
    try:
      out[name] = float(value)
    except (TypeError, ValueError):
      continue
  return out
