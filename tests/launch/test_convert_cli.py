"""python -m launch.convert: the same conversion, and one-line errors."""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
  return subprocess.run(
    [sys.executable, "-m", "launch.convert", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_converts_and_prints_summary(tmp_path):
  out = str(tmp_path / "out")
  result = _run(
    "--format=aliexpress",
    f"--raw_dir={os.path.join(FIXTURES, 'aliexpress')}",
    f"--out_dir={out}",
    "--min_count=0",
    "--num_shards=2",
    "--validation_fraction=0.2",
  )
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  assert summary["rows_written"] == report["rows_written"] == 200
  assert report["options"]["validation_fraction"] == 0.2
  assert report["rows_per_split"]["test"] == 100


def test_bad_flags_fail_with_one_line(tmp_path):
  for args, expected in [
    (
      ["--format=xml", f"--raw_dir={tmp_path}", f"--out_dir={tmp_path}"],
      "convert.py: error: flag --format=xml: value should be one of "
      "<ali_ccp|ali_ccp_processed|aliexpress|paddle_esmm|csv|tsv|tfrecord>",
    ),
    (
      ["--format=aliexpress", "--raw_dir=/no/such/dir", f"--out_dir={tmp_path}"],
      "convert.py: error: flag --raw_dir=/no/such/dir: --raw_dir must be an existing folder",
    ),
    (
      ["--format=aliexpress", f"--raw_dir={tmp_path}", f"--out_dir={tmp_path}", "--min_count=-2"],
      "convert.py: error: flag --min_count=-2: -2 is not a non-negative integer",
    ),
    (
      ["--format=aliexpress", "--no_such_flag"],
      "convert.py: error: Unknown command line flag 'no_such_flag'",
    ),
    (
      ["--format=aliexpress", f"--raw_dir={tmp_path}", f"--out_dir={tmp_path}", "stray"],
      "convert.py: error: unexpected arguments: stray",
    ),
  ]:
    result = _run(*args)
    assert result.returncode == 2, (args, result.stderr)
    assert result.stderr.splitlines() == [expected], args


def test_bad_input_fails_with_one_line_and_no_tensorflow_banner(tmp_path):
  # TensorFlow is loaded before the input is read: its start-up banner (and
  # C++ logs) would come first on stderr unless filtered.
  result = _run("--format=ali_ccp", f"--raw_dir={tmp_path}", f"--out_dir={tmp_path / 'out'}")
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
    f"convert.py: error: {tmp_path}: missing input file(s) "
    "sample_skeleton_train.csv, common_features_train.csv"
  ]


def test_help_answers_fast_without_tensorflow():
  start = time.perf_counter()
  result = _run("--help")
  seconds = time.perf_counter() - start
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("Converts a real dataset's files")
  for flag in ("--format", "--raw_dir", "--out_dir", "--min_count"):
    assert f"  {flag}: " in result.stdout, flag
  assert result.stderr == ""
  assert seconds < 2.0, seconds  # TensorFlow alone takes 3-8 s to import


def test_help_path_does_not_import_tensorflow():
  code = (
    "import sys\n"
    "from tafe_tf.launch import common, convert\n"
    "try:\n"
    "  common.parse_flags(['convert', '--helpfull'], convert.main)\n"
    "except SystemExit as e:\n"
    "  print(e.code, 'tensorflow' in sys.modules)\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=60
  )
  assert proc.returncode == 0, proc.stderr
  assert "--raw_dir" in proc.stdout and "--verbosity" in proc.stdout
  assert proc.stdout.splitlines()[-1] == "0 False"
