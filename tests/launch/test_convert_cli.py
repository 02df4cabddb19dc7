"""python -m launch.convert: the same conversion, and one-line errors."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "launch.convert", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def test_converts_and_prints_summary(tmp_path):
  out = str(tmp_path / "out")
  result = _run("--format=aliexpress",
                f"--raw_dir={os.path.join(FIXTURES, 'aliexpress')}",
                f"--out_dir={out}", "--min_count=0", "--num_shards=2",
                "--validation_fraction=0.2")
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  assert summary["rows_written"] == report["rows_written"] == 200
  assert report["options"]["validation_fraction"] == 0.2
  assert report["rows_per_split"]["test"] == 100


def _error_lines(result):
  return [l for l in result.stderr.splitlines()
          if l.strip() and "Traceback" not in l]


def test_bad_flags_fail_with_one_line(tmp_path):
  for args, expected in [
      (["--format=csv", f"--raw_dir={tmp_path}", f"--out_dir={tmp_path}"],
       "FATAL Flags parsing error: flag --format=csv: value should be one of"),
      (["--format=aliexpress", "--raw_dir=/no/such/dir",
        f"--out_dir={tmp_path}"],
       "FATAL Flags parsing error: flag --raw_dir=/no/such/dir: --raw_dir must "
       "be an existing folder"),
      (["--format=aliexpress", f"--raw_dir={tmp_path}", f"--out_dir={tmp_path}",
        "--min_count=-2"],
       "FATAL Flags parsing error: flag --min_count=-2: -2 is not a"),
  ]:
    result = _run(*args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert _error_lines(result)[0].startswith(expected), result.stderr


def test_bad_input_fails_with_one_line(tmp_path):
  result = _run("--format=ali_ccp", f"--raw_dir={tmp_path}",
                f"--out_dir={tmp_path / 'out'}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines() if "launch.convert" in l]
  assert lines == [f"launch.convert: error: {tmp_path}: missing input file(s) "
                   "sample_skeleton_train.csv, common_features_train.csv"]
