"""What every absl entry point shares: running, quiet logs, one-line errors.

:func:`run` is the one way an entry point runs (``python -m launch.X`` and the
console scripts alike):

* ``--help`` / ``-h`` / ``--helpshort`` / ``--helpfull`` print the module's
  doc and its flags and exit 0, before TensorFlow is imported;
* flag errors (unknown flag, bad enum value, a bound) and :class:`UserError`
  from ``main`` print one line, ``<program>: error: <message>``, without a
  traceback or the usage text, and exit 2;
* TensorFlow's log noise is off unless asked for: its C++ logs
  (``TF_CPP_MIN_LOG_LEVEL=3`` unless set in the environment), the start-up
  banner its libraries print while loading, and its Python logger below
  ERROR; our own absl logging shows warnings. ``--verbosity=0`` (``-v 0``,
  absl's flag) brings all of it back, ``-v 1`` adds debug logs.

Fast ``--help`` needs an entry module that does not import TensorFlow when
it is imported: it defines its flags with absl only and names its heavy
modules with :func:`lazy_import`, which loads them at their first attribute
use (in ``main``, after the flags are parsed and TensorFlow is imported
quietly). An entry module that imports TensorFlow at the top still gets the
one-line errors and quiet C++ logs; only its ``--help`` is slower.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging as std_logging
import os
import re
import sys
import tempfile
import time
import types
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence

from absl import app, flags, logging

# Set before anything can import TensorFlow (an entry module may import it
# right after this one); what the user set stays.
_USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATASETS = ("synthetic", "ali_ccp", "aliexpress", "tfrecord")
# The schema names launch.convert writes for each real dataset (tfrecord: any).
DATASET_SCHEMAS = {
  "ali_ccp": ("ali_ccp", "ali_ccp_processed", "ali_ccp_paddle_esmm"),
  "aliexpress": ("aliexpress",),
}
# tafe_tf.models.MODEL_NAMES, for flag definitions that must not import
# TensorFlow (tests/launch/test_common.py keeps the two equal).
MODEL_NAMES = ("tafe", "esmm", "mmoe", "ple", "aitm", "shared_bottom", "escm2", "dcmt")

_HELP = {
  "--help": False,
  "-help": False,
  "--helpshort": False,
  "-h": False,
  "-?": False,
  "--helpfull": True,
  "-helpfull": True,
}
# Lines TensorFlow's libraries print to stderr while loading, before its
# logging is set up: the absl notice and INFO/WARNING records ("I0000 ...").
_BANNER = re.compile(
  r"^(WARNING: All log messages before absl::InitializeLog"
  r"|[IW]\d{4} [\d:. ]+\d+ [\w.]+:\d+\] )"
)


class UserError(Exception):
  """A mistake in the command line or its inputs; printed as one line."""


def lazy_import(name: str) -> types.ModuleType:
  """Module ``name``, loaded at the first use of one of its attributes.

  For entry modules whose import must stay light (``--help`` without
  TensorFlow): ``convert = common.lazy_import("tafe_tf.data.convert")`` at
  the top, ``convert.CONVERTERS`` in ``main``. Its parent packages are
  imported now (they must be light).
  """
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  if spec is None:
    raise ImportError(f"no module named {name!r}")
  spec.loader = importlib.util.LazyLoader(spec.loader)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


_features = lazy_import("tafe_tf.features")
_files = lazy_import("tafe_tf.files")


def run(main: Callable[[Sequence[str]], None]) -> None:
  """Parses the flags and runs ``main`` (see the module doc); exits."""

  def guarded(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      fail(f"unexpected arguments: {' '.join(argv[1:])}")
    _quiet_logs(_is_quiet())
    try:
      main(argv)
    except UserError as e:
      fail(str(e))

  app.run(guarded, flags_parser=lambda argv: parse_flags(argv, main))


def parse_flags(argv: List[str], main: Callable[..., None]) -> List[str]:
  """``flags.FLAGS(argv)``, with help and flag errors handled as :func:`run`
  says (help of ``main``'s module); returns the arguments left."""
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg in _HELP:
      try:
        print(help_text(main, full=_HELP[arg]), flush=True)
      except BrokenPipeError:  # e.g. --help | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      sys.exit(0)
  try:
    args = flags.FLAGS(argv)
  except flags.Error as e:
    fail("; ".join(line.strip() for line in str(e).splitlines() if line.strip()))
  if _is_quiet():
    # app.run raises an unset verbosity to INFO; quiet keeps WARNING.
    flags.FLAGS.verbosity = logging.WARNING
  return args


def help_text(main: Callable[..., None], full: bool = False) -> str:
  """The doc of ``main``'s module and its flags (``full``: every flag)."""
  name = main.__module__
  doc = (sys.modules[name].__doc__ or "").strip("\n")
  # absl files flags defined in __main__ under the script's path.
  key = sys.argv[0] if name == "__main__" else name
  flag_text = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(key)
  return (
    f"{doc}\n\nflags:\n{flag_text}\n\nTry --helpfull for every flag, -v 0 for TensorFlow's logs."
  )


def fail(message: str) -> None:
  """Prints ``<program>: error: <message>`` on stderr and exits with 2."""
  program = os.path.basename(sys.argv[0]) if sys.argv else "tafe"
  if program in ("__main__.py", "-m", "-c", ""):
    program = "tafe"
  print(f"{program}: error: {message}", file=sys.stderr)
  sys.exit(2)


def _is_quiet() -> bool:
  verbosity = flags.FLAGS["verbosity"]
  return verbosity.using_default_value or verbosity.value < logging.INFO


def _quiet_logs(quiet: bool) -> None:
  """Imports TensorFlow, its banner filtered out when ``quiet``."""
  if not quiet:
    if _USER_TF_LOG_LEVEL is None:
      os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # if TF is not loaded yet
    importlib.import_module("tensorflow")
    return
  if "tensorflow" not in sys.modules:
    with _filtered_stderr():
      importlib.import_module("tensorflow")
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
  """File descriptor 2 into a file; its lines, less the banner, back after.

  The banner comes from C++ before TensorFlow reads its log level, so only
  the descriptor can catch it; anything else written meanwhile (a real
  error) is passed on.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [
        line
        for line in captured.read().decode(errors="replace").splitlines(keepends=True)
        if not _BANNER.match(line)
      ]
      sys.stderr.write("".join(kept))


def require_dataset_dir(data_dir: str, flag: str = "--data_dir"):
  """The :class:`tafe_tf.features.Schema` of a dataset directory, or a
  :class:`UserError` naming ``flag``."""
  if not data_dir:
    raise UserError(f"{flag} is required")
  if not os.path.isdir(data_dir):
    raise UserError(f"{flag}={data_dir}: no such directory")
  try:
    return _features.Schema.load(data_dir)
  except FileNotFoundError:
    raise UserError(
      f"{flag}={data_dir}: no {_features.SCHEMA_FILENAME} there; convert "
      "raw data first with python -m launch.convert"
    ) from None
  except ValueError as e:
    raise UserError(f"{flag}={data_dir}: {e}") from None


def require_model_dir(model_dir: str) -> None:
  """A :class:`UserError` unless ``model_dir`` holds a trained run."""
  if not model_dir:
    raise UserError("--model_dir is required")
  if not os.path.isfile(os.path.join(model_dir, "run.json")):
    raise UserError(
      f"--model_dir={model_dir}: not a trained model "
      "directory (no run.json); train with python -m "
      "launch.train first"
    )


def int_tuple(values: Sequence[str], flag: str) -> tuple:
  """``values`` (a list flag) as positive integers, or a :class:`UserError`."""
  try:
    out = tuple(int(v) for v in values)
  except ValueError:
    raise UserError(f"--{flag}: expected integers, got {list(values)}") from None
  if any(v < 1 for v in out):
    raise UserError(f"--{flag}: sizes must be >= 1, got {list(out)}")
  return out


def json_flag(value: str, flag: str) -> dict:
  """A JSON-object flag's value, or a :class:`UserError` naming ``flag``."""
  try:
    out = json.loads(value)
  except ValueError as e:
    raise UserError(f"--{flag}: not JSON: {e}") from None
  if not isinstance(out, dict):
    raise UserError(f"--{flag}: expected a JSON object, got {value!r}")
  return out


def command_line(module: str) -> str:
  """``python -m <module>`` and this process's arguments, for reports."""
  return " ".join([f"python -m {module}"] + sys.argv[1:])


def default_run_dir(name: str, now: Optional[float] = None) -> str:
  """``runs/benchmark-<name>-<UTC time>``: where a benchmark writes."""
  stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
  return os.path.join("runs", f"benchmark-{name}-{stamp}")


def define_report_flags(name: str) -> None:
  """``--run_dir`` and ``--output`` of benchmark ``name`` (:func:`report`)."""
  flags.DEFINE_string(
    "run_dir", "", f"Folder the results go to (default: runs/benchmark-{name}-<UTC time>)."
  )
  flags.DEFINE_string("output", "", "Also write the results' JSON here.")


def run_dir(name: str) -> str:
  """``--run_dir``, set to :func:`default_run_dir` of ``name`` if empty (so
  that later calls name the same folder)."""
  if not flags.FLAGS.run_dir:
    flags.FLAGS.run_dir = default_run_dir(name)
  return flags.FLAGS.run_dir


def report(name: str, result: Mapping[str, Any], table: str) -> str:
  """Prints ``table``; writes it and ``result`` into the run directory.

  Writes ``<run dir>/table.txt`` and ``<run dir>/<name>.json`` (strict
  JSON, with ``command``: the command line of ``launch.benchmark_<name>``),
  and the JSON to ``--output`` too when given. Returns the run dir.
  """
  result = dict(result, command=command_line(f"launch.benchmark_{name}"))
  out = run_dir(name)
  os.makedirs(out, exist_ok=True)
  print(table)
  with _files.atomic_text_file(os.path.join(out, "table.txt")) as f:
    f.write(table + "\n")
  safe = _files.json_safe(result)
  for path in [os.path.join(out, f"{name}.json")] + (
    [flags.FLAGS.output] if flags.FLAGS.output else []
  ):
    _files.write_json_atomic(path, safe)
  print(f"results: {out}")
  return out
