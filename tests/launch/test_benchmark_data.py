"""launch.benchmark_data (benchmarks/data_throughput.py): generator shapes and
a tiny end-to-end run."""

import collections
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tafe_tf.benchmarks import data_throughput  # noqa: E402
from tafe_tf.data import ali_ccp  # noqa: E402


def test_generator_writes_valid_raw_files_of_the_asked_shape(tmp_path):
  facts = data_throughput.write_raw_ali_ccp(
    str(tmp_path), 500, impressions_per_user=50, history_entries=300, seed=1
  )
  assert facts["impressions"] == 500 and facts["common_rows"] == 10
  with open(tmp_path / ali_ccp.COMMON_FILES["train"], "rb") as f:
    common = f.readlines()
  with open(tmp_path / ali_ccp.SKELETON_FILES["train"], "rb") as f:
    skeleton = f.readlines()
  assert len(common) == 10 and len(skeleton) == 500
  entries = [int(line.split(b",")[1]) for line in common]
  assert sum(entries) == facts["common_entries"]
  assert 250 < sum(entries) / len(entries) < 350  # ~300 + user and profile
  keys = collections.Counter(line.split(b",")[3] for line in skeleton)
  assert set(keys) == {line.split(b",")[0] for line in common}
  for line in common[:3] + skeleton[:50]:  # every line parses
    *_, feature_num, feature_list = line.rstrip(b"\n").split(b",")
    assert len(ali_ccp.parse_fields(feature_list)) > 0
    assert feature_list.count(b"\x01") + 1 == int(feature_num)


@pytest.mark.slow  # a whole benchmark run; -m slow runs it
def test_tiny_benchmark_run_writes_consistent_json(tmp_path):
  output = tmp_path / "bench.json"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.benchmark_data",
      "--impressions=2000",
      "--history_entries=50",
      "--workers=1",
      "--num_shards=2",
      f"--work_dir={tmp_path / 'work'}",
      f"--output={output}",
      f"--run_dir={tmp_path / 'run'}",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "impressions/s" in result.stdout
  results = json.loads(output.read_text())
  # The run dir holds the same JSON and the printed table.
  assert json.loads((tmp_path / "run" / "data.json").read_text()) == results
  assert (tmp_path / "run" / "table.txt").read_text() in result.stdout
  conversion = results["conversion"]
  assert conversion["rows_read"] == results["generated"]["impressions"] == 2000
  assert conversion["rows_written"] + sum(conversion["skipped"].values()) == 2000
  assert (
    results["read"]["examples"]
    == json.loads((tmp_path / "work" / "dataset" / "report.json").read_text())["rows_per_split"][
      "train"
    ]
  )
  assert conversion["peak_rss_mb"] > 50  # a TensorFlow process was sampled
  assert conversion["impressions_per_s"] == (conversion["rows_read"] / conversion["seconds"])
