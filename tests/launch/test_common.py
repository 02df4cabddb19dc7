"""launch/common.py: what every entry point shares."""

import os
import subprocess
import sys

import pytest

from tafe_tf import models
from tafe_tf.launch import common


def test_model_names_without_tensorflow_are_the_models():
  assert common.MODEL_NAMES == models.MODEL_NAMES == tuple(models._MODELS)


def test_default_run_dir_is_under_runs_with_the_utc_time():
  assert common.default_run_dir("serving", now=0) == os.path.join(
    "runs", "benchmark-serving-19700101-000000"
  )


def test_json_flag_errors_name_the_flag():
  assert common.json_flag('{"a": [1]}', "hparams") == {"a": [1]}
  with pytest.raises(common.UserError, match=r"^--hparams: not JSON: "):
    common.json_flag("{a}", "hparams")
  with pytest.raises(
    common.UserError,
    match=r"^--hparams: expected a JSON "
    r"object, got '\[1\]'$",
  ):
    common.json_flag("[1]", "hparams")


_FILTER = r"""
import os
from tafe_tf.launch import common
with common._filtered_stderr():
  os.write(2, b"WARNING: All log messages before absl::InitializeLog() is "
              b"called are written to STDERR\n")
  os.write(2, b"I0000 00:00:1796190980.995344   30573 port.cc:153] oneDNN "
              b"custom operations are on.\n")
  os.write(2, b"W0000 00:00:1796190981.065221   30573 cpu_feature_guard.cc"
              b":227] This TensorFlow binary is optimized\n")
  os.write(2, b"a real error\n")
os.write(2, b"after\n")
"""


def test_the_banner_is_filtered_and_everything_else_kept():
  proc = subprocess.run([sys.executable, "-c", _FILTER], capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0
  assert proc.stderr == "a real error\nafter\n"


def test_importing_the_package_and_common_loads_no_tensorflow():
  code = (
    "import sys, tafe_tf\nfrom tafe_tf.launch import common\n"
    "from tafe_tf.benchmarks import names\n"
    "print('tensorflow' in sys.modules)\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=60
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "False"
