"""Tests of launch/benchmark.py: the --quick run end to end, flag errors."""

import hashlib
import json
import math
import os

import cli_runner
import pytest

import tafe_tf  # noqa: F401

DOCS = os.path.join(cli_runner.ROOT, "docs")


def _benchmark(*args, timeout=300):
  return cli_runner.run_module("launch.benchmark", *args, timeout=timeout)


def _finite(value):
  return isinstance(value, (int, float)) and math.isfinite(value)


def _tree_digest(folder):
  return {
    name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
    for name in sorted(os.listdir(folder))
  }


@pytest.mark.slow  # 46 s; the small run below checks docs/ stays as it is
def test_quick_run_writes_into_its_run_dir_and_leaves_docs_alone(tmp_path):
  docs_before = _tree_digest(DOCS)
  doc = tmp_path / "extra.md"
  doc.write_text("# Benchmarks\n\n## Serving\n\nnot ours\n")
  out = tmp_path / "out"
  result = _benchmark(
    "--quick",
    f"--run_dir={out}",
    f"--markdown={doc}",
    f"--work_dir={tmp_path / 'work'}",
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  # The repository's published tables, JSON and plots are untouched.
  assert _tree_digest(DOCS) == docs_before
  # The run dir's page is the published one with the three sections new.
  page = (out / "benchmarks.md").read_text()
  published = open(os.path.join(DOCS, "benchmarks.md")).read()
  assert page.split("\n## ")[0] == published.split("\n## ")[0]
  assert page.count("## Comparison") == 1
  assert "Produced by `python -m launch.benchmark --quick" in page
  report = json.loads((out / "benchmark.json").read_text())
  # 2 models x 1 scenario x 2 seeds, plus 1 ablation x 2 seeds.
  assert sorted((r["variant"], r["seed"]) for r in report["runs"]) == [
    ("mmoe", 0),
    ("mmoe", 1),
    ("tafe", 0),
    ("tafe", 1),
    ("tafe-no_transfer", 0),
    ("tafe-no_transfer", 1),
  ]
  for run in report["runs"]:
    assert run["scenario"] == "conflict" and run["best_epoch"] in (1, 2)
    for key in (
      "auc/click",
      "auc/purchase",
      "oracle_gap/purchase",
      "auc_conditional/purchase",
      "logloss/purchase",
      "pcoc/purchase",
    ):
      assert _finite(run["metrics"][key]), (run["variant"], key)
    assert 0.5 < run["metrics"]["oracle_auc/purchase"] <= 1
    assert math.isclose(
      run["metrics"]["oracle_gap/purchase"],
      run["metrics"]["oracle_auc/purchase"] - run["metrics"]["auc/purchase"],
      abs_tol=1e-9,
    )
  tafe = report["summary"]["conflict"]["tafe"]["auc/purchase"]
  values = [r["metrics"]["auc/purchase"] for r in report["runs"] if r["variant"] == "tafe"]
  assert tafe["n"] == 2 and math.isclose(tafe["mean"], sum(values) / 2)
  speed = {(r["model"], r["implementation"]): r for r in report["speed"]["rows"]}
  assert set(speed) == {("tafe", "tafe_tf"), ("ple", "tafe_tf"), ("ple", "deepctr")}
  for (_, impl), row in speed.items():
    if impl == "tafe_tf":
      assert row["examples_per_second"] > 0 and 0 < row["mfu"] < 1
      assert row["serving_ms"]["1"]["p50"] > 0
    else:
      assert row["status"] in ("ok", "not installed")
  assert report["speed"]["input_examples_per_second"] > 0
  for png in ("benchmark_auc.png", "benchmark_throughput.png", "benchmark_gates_conflict.png"):
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
  text = doc.read_text()
  assert text.startswith("# Benchmarks\n\n## Serving\n\nnot ours\n\n")
  for title in ("## Comparison", "## Ablation", "## Speed"):
    assert text.count(title) == 1, title
  comparison = text.split("## Comparison")[1].split("## Ablation")[0]
  table = [l for l in comparison.splitlines() if l.startswith("| ")]
  assert [l.split(" | ")[0] for l in table] == ["| variant", "| tafe", "| mmoe"]
  assert all(len(l.split("|")) == len(table[0].split("|")) for l in table)
  assert "purchase AUC > best baseline + 2 SE" in comparison
  assert "| tafe-no_transfer | 2 |" in text


@pytest.mark.slow  # a whole benchmark run; -m slow runs it
@pytest.mark.parametrize("update", [True, False])
def test_update_docs_refreshes_the_docs_dir_and_only_then(tmp_path, update):
  repository_docs = _tree_digest(DOCS)
  docs = tmp_path / "docs"
  docs.mkdir()
  (docs / "benchmarks.md").write_text("# Benchmarks\n\n## Serving\n\nkept\n")
  (docs / "benchmark.json").write_text("{}")
  before = _tree_digest(str(docs))
  out = tmp_path / "out"
  result = _benchmark(
    "--update_docs" if update else "--noupdate_docs",
    f"--docs_dir={docs}",
    f"--run_dir={out}",
    "--scenarios=two_step",
    "--models=esmm",
    "--seeds=1",
    "--ablations=",
    "--speed=false",
    "--num_train=1024",
    "--num_eval=512",
    "--epochs=1",
    "--batch_size=256",
    f"--work_dir={tmp_path / 'work'}",
    timeout=400,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  assert _tree_digest(DOCS) == repository_docs
  if not update:
    assert _tree_digest(str(docs)) == before
    assert (out / "benchmarks.md").is_file() and (out / "benchmark.json").is_file()
    return
  for name in ("benchmark.json", "benchmark_auc.png"):
    assert (docs / name).read_bytes() == (out / name).read_bytes(), name
  assert json.loads((docs / "benchmark.json").read_text())["config"]["models"] == ["esmm"]
  text = (docs / "benchmarks.md").read_text()
  assert text.startswith("# Benchmarks\n\n## Serving\n\nkept\n\n## Comparison")
  assert text == (out / "benchmarks.md").read_text()
  assert "Not measured by `python -m launch.benchmark --update_docs" in text
  assert result.stdout.splitlines()[-1] == f"results: {out}; {docs} updated"


def test_unknown_scenario_is_one_line_error(tmp_path):
  result = _benchmark("--scenarios=moon", f"--run_dir={tmp_path}", timeout=120)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
    (
      "benchmark.py: error: --scenarios: unknown scenario 'moon'; valid: "
      "two_step, three_step, conflict"
    )
  ]
