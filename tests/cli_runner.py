"""Running the package's absl entry points as a user does: in a subprocess."""

import os
import subprocess
import sys
from typing import Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra: str) -> Dict[str, str]:
  """This environment, quiet TensorFlow, and the repository importable."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def module_command(module: str, *args: str) -> list:
  return [sys.executable, "-m", module, *args]


def run_module(
  module: str, *args: str, timeout: float = 300, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
  """Runs ``python -m module args...`` from the repository root."""
  return subprocess.run(
    module_command(module, *args),
    cwd=ROOT,
    env=env or subprocess_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
