"""Every command's --help: without TensorFlow, its flags grouped by purpose."""

import subprocess
import sys

import pytest
from cli_runner import ROOT, module_command, subprocess_env

COMMANDS = ("train", "evaluate", "export", "predict", "convert")

# Runs a command's --help in this process and reports what it imported.
_HELP = """
import sys
from tafe_tf.launch import common, {name} as command
try:
  common.parse_flags(['{name}', '{flag}'], command.main)
except SystemExit as e:
  print('exit', e.code, 'tensorflow' in sys.modules)
"""


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_help_imports_no_tensorflow(name, flag):
  proc = subprocess.run(
    [sys.executable, "-c", _HELP.format(name=name, flag=flag)],
    cwd="/",
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1] == "exit 0 False"
  assert "--verbosity" in proc.stdout
  assert proc.stderr == ""


def test_train_help_lists_its_flags_in_groups():
  proc = subprocess.run(
    module_command("launch.train", "--help"),
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.split("\nflags:\n", 1)[1].splitlines()
  titles = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
  assert titles == [
    "What to run:",
    "Data:",
    "Training:",
    "Distribution:",
    "After training:",
    "Hyperparameter shortcuts (or set them in --hparams):",
  ]

  def group(title):
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return {line.split(":")[0].strip() for line in lines[start:end] if line.startswith("  --")}

  assert group("Data:") == {
    "--data_dir",
    "--dataset",
    "--synthetic_conflict",
    "--synthetic_eval_rows",
    "--synthetic_steps",
    "--synthetic_train_rows",
  }
  assert {"--strategy", "--mixed_precision", "--tpu"} <= group("Distribution:")
  assert "--epochs" in group("Training:") and "--model" in group("What to run:")


def test_predict_help_names_both_model_flags():
  proc = subprocess.run(
    module_command("launch.predict", "--help"),
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("Scores rows with a trained model into a CSV")
  model = proc.stdout.split("Model (one of the two):\n", 1)[1].split("\n\n", 1)[0]
  assert "  --model_dir: " in model and "  --export_dir: " in model
