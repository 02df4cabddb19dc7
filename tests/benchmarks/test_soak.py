"""Tests of benchmarks/soak.py: kill moments, the kill itself, the comparisons,
and one tiny soak round end to end (slow)."""

import os
import sys
import time

import numpy as np
import pytest

from tafe_tf.benchmarks import soak


def test_kill_times_are_uniform_inside_the_reference_duration():
  rng = np.random.default_rng(0)
  times = np.array([soak.draw_kill_time(rng, 4.0) for _ in range(4000)])
  assert times.min() >= 0 and times.max() < 4.0
  assert abs(times.mean() - 2.0) < 0.1
  # Same seed, same moments.
  again = np.random.default_rng(0)
  assert soak.draw_kill_time(again, 4.0) == times[0]


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan")])
def test_kill_time_rejects_an_empty_duration(duration):
  with pytest.raises(ValueError, match="duration_s must be > 0"):
    soak.draw_kill_time(np.random.default_rng(0), duration)


def test_records_digest_is_a_multiset_digest():
  a, b, c = b"alpha", b"beta", b"gamma"
  assert soak.records_digest([a, b, c]) == soak.records_digest([c, a, b])
  assert soak.records_digest([a, b]) != soak.records_digest([a, b, b])
  assert soak.records_digest([a, b]) != soak.records_digest([a, c])
  assert soak.records_digest([]) != soak.records_digest([b""])


def test_compare_mappings_names_differing_and_missing_keys():
  ref = {"rows": 3, "seconds": 1.0, "shards": {"a": 1}, "only_ref": 0}
  got = {"rows": 3, "seconds": 2.5, "shards": {"a": 2}, "only_got": 0}
  assert soak.compare_mappings(ref, got, ["seconds"]) == ["only_got", "only_ref", "shards"]
  assert soak.compare_mappings(ref, dict(ref, seconds=9.0), ["seconds"]) == []
  assert soak.compare_mappings(ref, dict(ref, seconds=9.0)) == ["seconds"]


def test_prediction_difference_matches_rows_by_id():
  ref = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
  # The same rows in another order, one value moved by 0.05.
  got = np.array([[0.5, 0.6], [0.1, 0.25], [0.3, 0.4]])
  diff = soak.prediction_difference(["a", "b", "c"], ref, ["c", "a", "b"], got)
  assert diff == pytest.approx(0.05)
  assert soak.prediction_difference(["a", "b", "c"], ref, ["a", "b", "c"], ref) == 0.0


@pytest.mark.parametrize(
  "got_ids,message",
  [(["a", "b", "d"], "the ids differ: 2 on one side only"), (["a", "a", "b"], "got: repeated ids")],
)
def test_prediction_difference_refuses_unmatched_ids(got_ids, message):
  ref = np.zeros((3, 2))
  with pytest.raises(ValueError, match=message):
    soak.prediction_difference(["a", "b", "c"], ref, got_ids, ref)


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie is dead for our purpose; /proc says so on Linux.
  with open(f"/proc/{pid}/stat") as f:
    return f.read().split(") ")[1][0] != "Z"


def test_a_kill_reaches_the_whole_process_group(tmp_path):
  # A parent that starts a sleeping child (as launch.convert starts its workers).
  pid_file = tmp_path / "child.pid"
  script = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
    "time.sleep(60)\n"
  )
  log = str(tmp_path / "log.txt")
  start = time.monotonic()
  result = soak.run_attempt([sys.executable, "-c", script], log, kill_after_s=1.5)
  assert result["killed"] and result["returncode"] is None
  assert time.monotonic() - start < 15
  child = int(pid_file.read_text())
  assert not _pid_alive(child)
  assert "killed after" in open(log).read()


def test_an_attempt_that_ends_first_is_not_killed(tmp_path):
  log = str(tmp_path / "log.txt")
  result = soak.run_attempt([sys.executable, "-c", "print('done')"], log, kill_after_s=30)
  assert result == {"killed": False, "returncode": 0, "seconds": result["seconds"]}
  assert "done" in open(log).read()
  failed = soak.soak_stage(
    [sys.executable, "-c", "import sys; print('bad input'); sys.exit(2)"],
    log,
    np.random.default_rng(0),
    duration_s=30.0,
    kills=2,
  )
  # It ended before its kill moment: no kill, one attempt, its failure reported.
  assert failed["kills"] == 0 and failed["attempts"] == 1
  assert failed["returncode"] == 2 and failed["failed"].endswith("bad input")


@pytest.mark.slow
def test_one_soak_round_ends_equal_to_the_reference(tmp_path):
  results = soak.benchmark(str(tmp_path), rounds=1, seed=3, num_train=3000, num_test=600, kills=1)
  convert, train = results["results"]
  table = soak.table(results)
  assert "rounds survived" in table and "round  stage" in table
  assert convert["stage"] == "convert" and convert["failed"] is None
  assert convert["files_differ"] == [] and convert["report_differs"] == [], table
  assert convert["rows_per_split"] == results["reference"]["rows_per_split"]
  assert train["stage"] == "train" and train["failed"] is None
  assert train["optimizer_steps"] == results["reference"]["optimizer_steps"]
  assert train["report_differs"] == [], table
  if train["resumed_from_step"] > 0 and not train["equal"]:
    # Whether the kill landed after a checkpoint depends on the machine's speed.
    pytest.xfail(
      "known: a resumed launch.train restarts its input at the first batch, not where the"
      f" killed run stopped (step {train['resumed_from_step']}); docs/benchmarks.md, Soak"
    )
  assert train["max_abs_prediction_difference"] <= results["tolerance"], table
  assert results["ok"] and results["rounds_survived"] == 1
