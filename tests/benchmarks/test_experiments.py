"""Tests of tafe_tf/experiments.py and tafe_tf/deepctr_peer.py (no training)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import features as features_lib
from tafe_tf import files, models
from tafe_tf.benchmarks import deepctr_peer, experiments, names
from tafe_tf.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(variant, seed, auc_purchase, gap_purchase, epoch=1):
  return experiments.RunResult(
    scenario="conflict",
    variant=variant,
    seed=seed,
    best_epoch=epoch,
    train_seconds=1.0,
    metrics={
      "auc/click": 0.7,
      "auc/purchase": auc_purchase,
      "oracle_gap/purchase": gap_purchase,
      "pcoc/purchase": float("nan"),
    },
  )


def test_stat_mean_sample_std_and_standard_error():
  s = experiments.stat([1.0, 2.0, 3.0, float("nan")])
  assert s.n == 3 and s.mean == pytest.approx(2.0)
  assert s.std == pytest.approx(1.0)  # ddof 1
  assert s.sem == pytest.approx(1.0 / math.sqrt(3))
  assert experiments.stat([0.5]) == experiments.Stat(0.5, 0.0, 0.0, 1)
  assert experiments.stat([float("nan")]).n == 0


def test_summarize_groups_by_scenario_and_variant():
  runs = [
    _run("tafe", 0, 0.80, 0.02, epoch=1),
    _run("tafe", 1, 0.82, 0.01, epoch=2),
    _run("mmoe", 0, 0.70, 0.10),
  ]
  summary = experiments.summarize(runs)
  tafe = summary["conflict"]["tafe"]
  assert tafe["auc/purchase"].mean == pytest.approx(0.81)
  assert tafe["auc/purchase"].std == pytest.approx(math.sqrt(2) * 0.01)
  assert tafe["best_epoch"].mean == pytest.approx(1.5)
  assert tafe["pcoc/purchase"].n == 0
  assert summary["conflict"]["mmoe"]["auc/purchase"].n == 1


def test_check_targets_needs_two_standard_errors_in_conflict():
  runs = (
    [_run("tafe", s, 0.80 + 0.001 * s, 0.02) for s in range(3)]
    + [_run("mmoe", s, 0.79 + 0.001 * s, 0.03) for s in range(3)]
    + [_run("esmm", s, 0.70, 0.10) for s in range(3)]
    + [_run("tafe-no_transfer", s, 0.99, 0.0) for s in range(3)]
  )
  checks = experiments.check_targets(experiments.summarize(runs), {"conflict": "purchase"})
  assert [(c.target, c.met) for c in checks] == [
    ("purchase AUC > best baseline + 2 SE", True),
    ("purchase oracle gap smallest", True),
  ]
  assert "vs mmoe 0.7910" in checks[0].detail  # ablations are no baseline
  close = [_run("tafe", s, 0.80 + 0.01 * s, 0.02) for s in range(3)] + [
    _run("mmoe", s, 0.80, 0.01) for s in range(3)
  ]
  checks = experiments.check_targets(experiments.summarize(close), {"conflict": "purchase"})
  assert [c.met for c in checks] == [False, False]


def test_variant_hparams_and_grid_validation():
  assert experiments.variant_hparams("tafe-no_transfer") == ("tafe", {"transfer": "none"})
  assert experiments.variant_hparams("shared_bottom") == ("shared_bottom", {})
  with pytest.raises(ValueError, match="unknown ablation 'nope'"):
    experiments.variant_hparams("tafe-nope")
  scenario = experiments.Scenario("conflict", experiments.SYNTHETIC_SCENARIOS["conflict"])
  with pytest.raises(ValueError, match="unknown model 'gbdt'"):
    experiments.GridConfig(scenarios=[scenario], models=["gbdt"])
  with pytest.raises(ValueError, match=r"unknown ablations \['x'\]"):
    experiments.GridConfig(scenarios=[scenario], ablations=["x"])
  with pytest.raises(ValueError, match="not in the grid's scenarios"):
    experiments.GridConfig(scenarios=[scenario], ablation_scenarios=["two_step"])
  with pytest.raises(ValueError, match="exactly one"):
    experiments.Scenario("x")
  config = experiments.GridConfig(
    scenarios=[scenario], models=["tafe", "esmm"], ablations=["top_k_2"]
  )
  assert experiments.grid_variants(config) == [
    ("conflict", "tafe"),
    ("conflict", "esmm"),
    ("conflict", "tafe-top_k_2"),
  ]


def test_every_ablation_changes_the_built_tafe():
  schema = synthetic.synthetic_schema(synthetic.SyntheticConfig(num_steps=2))
  default = models.build_model("tafe", schema).get_config()["hparams"]
  for name in experiments.ABLATIONS:
    _, extra = experiments.variant_hparams(f"tafe-{name}", num_steps=2)
    hparams = models.build_model("tafe", schema, **extra).get_config()["hparams"]
    changed = {k for k in hparams if hparams[k] != default[k]}
    assert changed == set(extra), name
  assert experiments.variant_hparams("tafe-click_space_cvr", num_steps=3) == (
    "tafe",
    {"entire_space_weight": 0.0, "conditional_weight": 1.0},
  )


def test_replace_sections_keeps_other_sections_byte_for_byte():
  text = "# Benchmarks\n\n## Serving\n\nkeep  me\n\n## Comparison\n\nold\n\n## Data\n\nalso kept\n"
  out = experiments.replace_sections(text, {"Comparison": "new\n", "Speed": "fast\n"})
  assert out == (
    "# Benchmarks\n\n## Serving\n\nkeep  me\n\n## Comparison\n\n"
    "new\n\n## Data\n\nalso kept\n\n## Speed\n\nfast\n"
  )
  assert experiments.replace_sections(out, {"Comparison": "new\n"}) == out


def test_json_safe_turns_non_finite_into_none():
  assert files.json_safe(
    {"a": [np.float32(1.5), float("nan")], "b": (np.int64(2), float("inf"))}
  ) == {"a": [1.5, None], "b": [2, None]}


def test_tables_render_means_stds_and_missing_peer():
  summary = experiments.summarize([_run("tafe", 0, 0.8, 0.02), _run("tafe", 1, 0.9, 0.01)])
  table = experiments.comparison_table(summary["conflict"], ["click", "purchase"])
  lines = table.splitlines()
  assert lines[0].startswith("| variant | n | auc click | auc purchase |")
  assert "| tafe | 2 | 0.7000 ± 0.0000 | 0.8500 ± 0.0707 |" in lines[2]
  assert lines[2].endswith("| - | 1.0 |")  # pcoc all NaN, epoch 1
  speed = {
    "rows": [
      {
        "model": "ple",
        "implementation": "tafe_tf",
        "examples_per_second": 3000.0,
        "forward_flops_per_example": 2e5,
        "mfu": 0.05,
        "trainable_parameters": 10,
        "serving_ms": {"1": {"p50": 1.25}},
      },
      {
        "model": "ple",
        "implementation": "deepctr",
        "examples_per_second": 1000.0,
        "status": "ok",
        "trainable_parameters": 9,
      },
      {"model": "mmoe", "implementation": "deepctr", "status": "not installed"},
    ]
  }
  rows = experiments.speed_table(speed).splitlines()
  assert rows[2] == ("| ple | tafe_tf | 3,000 | 3.00 | 3.00 | 0.200 | 5.00% | 10 | 1.25 |")
  assert rows[4] == "| mmoe | deepctr | not installed | - | - | - | - | - | - |"
  checks = experiments.speed_checks(dict(speed, rows=speed["rows"][:2]))
  assert [(c.target, c.met) for c in checks] == [
    ("ple >= 2x DeepCTR PLE", True),
    ("ple MFU >= 40%", False),
  ]


def test_peer_batch_conversion_matches_our_id_lookup():
  pytest.importorskip(
    "deepctr",
    reason="the optional DeepCTR peer (pip install '.[benchmark]' --no-deps) is not installed",
  )
  schema = features_lib.Schema(
    name="t",
    steps=("click", "purchase"),
    fields=(
      features_lib.FieldSpec(
        name="item",
        kind=features_lib.FieldKind.ID,
        lookup=features_lib.LookupKind.IDENTITY,
        num_ids=5,
      ),
      features_lib.FieldSpec(
        name="hist",
        kind=features_lib.FieldKind.WEIGHTED_IDS,
        lookup=features_lib.LookupKind.IDENTITY,
        num_ids=5,
      ),
      features_lib.FieldSpec(name="price", kind=features_lib.FieldKind.DENSE, dim=1),
    ),
  )
  feats = {
    "item": tf.constant([0, 4, 7]),
    "hist": tf.ragged.constant([[1, 2], [], [9]]),
    "hist_weight": tf.ragged.constant([[0.5, 1.0], [], [2.0]]),
    "price": tf.constant([[1.0], [2.0], [3.0]]),
  }
  labels = {"click": tf.constant([1, 0, 1]), "purchase": tf.constant([1, 0, 0])}
  maxlen = deepctr_peer.max_lengths([(feats, labels)], schema)
  assert maxlen == {"hist": 2}
  inputs, y = deepctr_peer.convert_batch(feats, labels, schema, maxlen)
  np.testing.assert_array_equal(inputs["item"], [[1], [5], [0]])
  np.testing.assert_array_equal(inputs["hist"], [[2, 3], [0, 0], [0, 0]])
  np.testing.assert_allclose(inputs["hist_weight"][..., 0], [[0.5, 1.0], [0, 0], [2.0, 0]])
  np.testing.assert_array_equal(y[1], [[1], [0], [0]])
  three = features_lib.Schema(name="t", steps=("a", "b", "c"), fields=schema.fields)
  with pytest.raises(ValueError, match="two tasks; the schema has 3 steps"):
    deepctr_peer.feature_columns(three, maxlen)


def test_peer_is_optional(tmp_path):
  blocker = tmp_path / "deepctr"
  blocker.mkdir()
  (blocker / "__init__.py").write_text("raise ImportError('blocked')\n")
  result = subprocess.run(
    [
      sys.executable,
      "-c",
      "import tafe_tf\nfrom tafe_tf.benchmarks import deepctr_peer\nprint(deepctr_peer.version())",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
    env=dict(os.environ, PYTHONPATH=f"{tmp_path}:{ROOT}", TF_CPP_MIN_LOG_LEVEL="2"),
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == "None"


def test_default_epoch_monitor_is_the_last_steps_validation_auc():
  assert experiments.GridConfig(scenarios=(), ablations=()).monitor == (experiments.LAST_STEP_AUC)
  assert experiments.resolve_monitor(experiments.LAST_STEP_AUC, ("click", "cart", "purchase")) == (
    "val_auc/purchase"
  )
  assert experiments.resolve_monitor("val_loss", ("click", "purchase")) == ("val_loss")


def test_names_without_tensorflow_are_the_experiments():
  assert names.SCENARIOS == tuple(experiments.SYNTHETIC_SCENARIOS)
  assert names.ABLATIONS == tuple(experiments.ABLATIONS)
  assert experiments.ABLATION_WHAT is names.ABLATION_WHAT
