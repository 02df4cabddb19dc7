"""Tests of launch/benchmark.py: the --quick run end to end, flag errors."""

import json
import math

import tafe_tf  # noqa: F401

import cli_runner


def _benchmark(*args, timeout=300):
  return cli_runner.run_module("launch.benchmark", *args, timeout=timeout)


def _finite(value):
  return isinstance(value, (int, float)) and math.isfinite(value)


def test_quick_run_writes_table_json_plots_and_keeps_other_sections(tmp_path):
  doc = tmp_path / "benchmarks.md"
  doc.write_text("# Benchmarks\n\n## Serving\n\nnot ours\n")
  out = tmp_path / "out"
  result = _benchmark("--quick", f"--output_dir={out}", f"--markdown={doc}",
                      f"--work_dir={tmp_path / 'work'}", timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads((out / "benchmark.json").read_text())
  # 2 models x 1 scenario x 2 seeds, plus 1 ablation x 2 seeds.
  assert sorted((r["variant"], r["seed"]) for r in report["runs"]) == [
      ("mmoe", 0), ("mmoe", 1), ("tafe", 0), ("tafe", 1),
      ("tafe-no_transfer", 0), ("tafe-no_transfer", 1)]
  for run in report["runs"]:
    assert run["scenario"] == "conflict" and run["best_epoch"] in (1, 2)
    for key in ("auc/click", "auc/purchase", "oracle_gap/purchase",
                "auc_conditional/purchase", "logloss/purchase",
                "pcoc/purchase"):
      assert _finite(run["metrics"][key]), (run["variant"], key)
    assert 0.5 < run["metrics"]["oracle_auc/purchase"] <= 1
    assert math.isclose(run["metrics"]["oracle_gap/purchase"],
                        run["metrics"]["oracle_auc/purchase"]
                        - run["metrics"]["auc/purchase"], abs_tol=1e-9)
  tafe = report["summary"]["conflict"]["tafe"]["auc/purchase"]
  values = [r["metrics"]["auc/purchase"] for r in report["runs"]
            if r["variant"] == "tafe"]
  assert tafe["n"] == 2 and math.isclose(tafe["mean"], sum(values) / 2)
  speed = {(r["model"], r["implementation"]): r
           for r in report["speed"]["rows"]}
  assert set(speed) == {("tafe", "tafe_tf"), ("ple", "tafe_tf"),
                        ("ple", "deepctr")}
  for (_, impl), row in speed.items():
    if impl == "tafe_tf":
      assert row["examples_per_second"] > 0 and 0 < row["mfu"] < 1
      assert row["serving_ms"]["1"]["p50"] > 0
    else:
      assert row["status"] in ("ok", "not installed")
  assert report["speed"]["input_examples_per_second"] > 0
  for png in ("benchmark_auc.png", "benchmark_throughput.png",
              "benchmark_gates_conflict.png"):
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
  text = doc.read_text()
  assert text.startswith("# Benchmarks\n\n## Serving\n\nnot ours\n\n")
  for title in ("## Comparison", "## Ablation", "## Speed"):
    assert text.count(title) == 1, title
  comparison = text.split("## Comparison")[1].split("## Ablation")[0]
  table = [l for l in comparison.splitlines() if l.startswith("| ")]
  assert [l.split(" | ")[0] for l in table] == ["| variant", "| tafe",
                                                 "| mmoe"]
  assert all(len(l.split("|")) == len(table[0].split("|")) for l in table)
  assert "purchase AUC > best baseline + 2 SE" in comparison
  assert "| tafe-no_transfer | 2 |" in text


def test_unknown_scenario_is_one_line_error(tmp_path):
  result = _benchmark("--scenarios=moon", f"--output_dir={tmp_path}",
                      "--markdown=", timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "benchmark.py: error: --scenarios: unknown scenario 'moon'; valid: "
      "two_step, three_step, conflict")
