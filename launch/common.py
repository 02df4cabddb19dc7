"""Flag helpers shared by the absl entry points.

User errors (a missing directory, an unknown dataset) raise :class:`UserError`;
:func:`run` prints them as one line, ``<program>: error: <message>``, without a
traceback or the usage text, and exits with status 2. absl itself rejects
malformed flags (unknown enum values, wrong types) before ``main`` runs.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags

from tafe_tf import features as features_lib

DATASETS = ("synthetic", "ali_ccp", "aliexpress", "tfrecord")
# The schema names launch.convert writes for each real dataset (tfrecord: any).
DATASET_SCHEMAS = {
    "ali_ccp": ("ali_ccp", "ali_ccp_processed", "ali_ccp_paddle_esmm"),
    "aliexpress": ("aliexpress",),
}


class UserError(Exception):
  """A mistake in the command line or its inputs; printed as one line."""


def run(main: Callable[[Sequence[str]], None]) -> None:
  """``app.run(main)``, turning :class:`UserError` into one line and exit 2."""

  def guarded(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      main(argv)
    except UserError as e:
      _fail(str(e))

  app.run(guarded)


def _fail(message: str) -> None:
  program = os.path.basename(sys.argv[0]) if sys.argv else "tafe"
  if program in ("__main__.py", "-m", "-c", ""):
    program = "tafe"
  print(f"{program}: error: {message}", file=sys.stderr)
  sys.exit(2)


def require_dataset_dir(data_dir: str, flag: str = "--data_dir") -> features_lib.Schema:
  """Returns the schema of a dataset directory, or fails with one clear line."""
  if not data_dir:
    raise UserError(f"{flag} is required")
  if not os.path.isdir(data_dir):
    raise UserError(f"{flag}={data_dir}: no such directory")
  try:
    return features_lib.Schema.load(data_dir)
  except FileNotFoundError:
    raise UserError(
        f"{flag}={data_dir}: no {features_lib.SCHEMA_FILENAME} there; convert "
        "raw data first with python -m launch.convert") from None
  except ValueError as e:
    raise UserError(f"{flag}={data_dir}: {e}") from None


def require_model_dir(model_dir: str) -> None:
  if not model_dir:
    raise UserError("--model_dir is required")
  if not os.path.isfile(os.path.join(model_dir, "run.json")):
    raise UserError(f"--model_dir={model_dir}: not a trained model "
                         "directory (no run.json); train with python -m "
                         "launch.train first")


def int_tuple(values: Sequence[str], flag: str) -> tuple:
  try:
    out = tuple(int(v) for v in values)
  except ValueError:
    raise UserError(f"--{flag}: expected integers, got {list(values)}"
                         ) from None
  if any(v < 1 for v in out):
    raise UserError(f"--{flag}: sizes must be >= 1, got {list(out)}")
  return out


def define_positive_int(name: str, default: int, help_text: str,
                        allow_zero: bool = False) -> None:
  flags.DEFINE_integer(name, default, help_text,
                       lower_bound=0 if allow_zero else 1)
