"""Tests of the realistic-family quality benchmark (tafe_tf.benchmarks.realistic_quality)."""

import json
import os

import pytest

import tafe_tf  # noqa: F401
from tafe_tf.benchmarks import realistic_quality as rq

TINY = rq.Variant(
  "esmm", "esmm_tiny", hparams={"tower_units": [8], "embedding_dim": 4}, settings={"epochs": 1}
)


def test_parse_variant():
  assert rq.parse_variant("esmm") == rq.Variant("esmm")
  v = rq.parse_variant(
    'lik=tafe:{"hparams": {"conditional_weight": 1.0}, "settings": {"epochs": 1}}'
  )
  assert (v.name, v.model, dict(v.hparams), dict(v.settings)) == (
    "lik",
    "tafe",
    {"conditional_weight": 1.0},
    {"epochs": 1},
  )
  with pytest.raises(ValueError, match="unknown keys \\['hparam'\\]"):
    rq.parse_variant('x=tafe:{"hparam": {}}')


def test_grid_scores_against_the_truth_and_a_rerun_reuses_finished_runs(tmp_path):
  run_dir = str(tmp_path / "run")
  lines = []
  results = rq.run_grid(
    ["base"], [0], [TINY], run_dir, num_train=4000, num_test=3000, log=lines.append
  )
  (record,) = results
  assert record["variant"] == "esmm_tiny" and record["kept_epoch"] == 1
  test, oracle = record["test"], record["oracle"]
  assert test["rows"] == oracle["rows"] > 2900  # the test split, aligned with its truth
  assert 0.5 < oracle["auc/click"] <= 1 and 0 < test["auc/click"] < 1
  assert set(rq.METRICS) <= set(test)
  with open(os.path.join(run_dir, "results.jsonl")) as f:
    assert [json.loads(line)["variant"] for line in f] == ["esmm_tiny"]
  # A rerun trains nothing: the finished record comes back as it was.
  again = rq.run_grid(
    ["base"], [0], [TINY], run_dir, num_train=4000, num_test=3000, log=lines.append
  )
  assert len(lines) == 1 and [r["test"] for r in again] == [test]
  summary = rq.write_summary(results, run_dir)
  rows = {r["variant"]: r for r in summary["rows"]}
  assert rows["esmm_tiny"]["auc/click"][0] == pytest.approx(test["auc/click"])
  assert rows["oracle"]["auc/click"][0] == pytest.approx(oracle["auc/click"])
  table = open(os.path.join(run_dir, "summary.md")).read()
  assert "| base | esmm_tiny | 1 |" in table and "| base | oracle | 1 |" in table


def test_summary_means_standard_errors_and_paired_deltas():
  def record(seed, variant, auc):
    test = {m: 0.5 for m in rq.METRICS}
    test["auc/click"] = test["auc/purchase"] = auc
    return {"member": "m", "seed": seed, "variant": variant, "test": test, "oracle": test}

  results = [
    record(0, rq.PLAIN, 0.60),
    record(1, rq.PLAIN, 0.70),
    record(0, "tafe", 0.62),
    record(1, "tafe", 0.73),
  ]
  rows = {r["variant"]: r for r in rq.summarize(results)}
  mean, se = rows["tafe"]["auc/click"]
  assert mean == pytest.approx(0.675) and se == pytest.approx(0.055)
  # Paired by seed: the deltas 0.02 and 0.03.
  mean, se = rows["tafe"]["delta/auc/click"]
  assert mean == pytest.approx(0.025) and se == pytest.approx(0.005)
