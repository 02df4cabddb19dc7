"""Flag helpers shared by the absl entry points.

User errors (a missing directory, an unknown dataset) raise ``app.UsageError``,
which absl prints as one line without a traceback.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app
from absl import flags

import tafe_tf  # noqa: F401
from tafe_tf import features as features_lib

DATASETS = ("synthetic", "ali_ccp", "aliexpress", "tfrecord")


def require_dataset_dir(data_dir: str, flag: str = "--data_dir") -> features_lib.Schema:
  """Returns the schema of a dataset directory, or fails with one clear line."""
  if not data_dir:
    raise app.UsageError(f"{flag} is required")
  if not os.path.isdir(data_dir):
    raise app.UsageError(f"{flag}={data_dir}: no such directory")
  try:
    return features_lib.Schema.load(data_dir)
  except FileNotFoundError:
    raise app.UsageError(
        f"{flag}={data_dir}: no {features_lib.SCHEMA_FILENAME} there; convert "
        "raw data first with python -m launch.convert") from None
  except ValueError as e:
    raise app.UsageError(f"{flag}={data_dir}: {e}") from None


def require_model_dir(model_dir: str) -> None:
  if not model_dir:
    raise app.UsageError("--model_dir is required")
  if not os.path.isfile(os.path.join(model_dir, "run.json")):
    raise app.UsageError(f"--model_dir={model_dir}: not a trained model "
                         "directory (no run.json); train with python -m "
                         "launch.train first")


def int_tuple(values: Sequence[str], flag: str) -> tuple:
  try:
    out = tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f"--{flag}: expected integers, got {list(values)}"
                         ) from None
  if any(v < 1 for v in out):
    raise app.UsageError(f"--{flag}: sizes must be >= 1, got {list(out)}")
  return out


def define_positive_int(name: str, default: int, help_text: str,
                        allow_zero: bool = False) -> None:
  flags.DEFINE_integer(name, default, help_text,
                       lower_bound=0 if allow_zero else 1)
