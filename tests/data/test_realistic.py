"""The realistic family: raw files the package's converters read, a truth that
matches them row for row, and knobs that do what they say."""

import dataclasses
import filecmp
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readback  # noqa: E402  (tests/data helper)

from tafe_tf.data import (
  convert,  # noqa: E402
  realistic,  # noqa: E402
)

BASE = realistic.FAMILY["base"]
NUM_TRAIN, NUM_TEST = 20_000, 6_000


@pytest.fixture(scope="module")
def member(tmp_path_factory):
  """The base member, raw and converted (every id kept)."""
  raw = str(tmp_path_factory.mktemp("raw"))
  report = realistic.write_member("base", raw, NUM_TRAIN, NUM_TEST)
  out = str(tmp_path_factory.mktemp("converted"))
  converted = convert.convert_ali_ccp(raw, out, min_count=0, workers=1, num_shards=2)
  return raw, out, report, converted


def _truth(config, num_rows, tmp_path, name):
  out = str(tmp_path / name)
  realistic.write_member(config, out, num_rows, 1000)
  return realistic.read_truth(out, "train")


def test_converter_skips_only_the_planted_rows(member):
  _, _, report, converted = member
  planted = sum(s["buy_without_click"] for s in report["splits"].values())
  assert planted == 2  # 20 per million, at least one per split
  assert converted["skipped"] == {"buy_without_click": planted}
  assert converted["rows_read"] == NUM_TRAIN + NUM_TEST
  assert converted["rows_written"] == NUM_TRAIN + NUM_TEST - planted
  assert converted["rows_per_split"]["test"] == NUM_TEST - 1


def test_label_rates_near_the_targets(member):
  _, _, report, _ = member
  train = report["splits"]["train"]
  # The intercepts are solved on the train rows: the truth hits the targets.
  assert train["mean_q_click"] == pytest.approx(BASE.target_ctr, rel=1e-6)
  assert train["mean_q_purchase_given_click"] == pytest.approx(BASE.target_cvr, rel=1e-6)
  clicks = sum(s["clicks"] for s in report["splits"].values())
  buys = sum(s["buys"] for s in report["splits"].values())
  assert clicks / (NUM_TRAIN + NUM_TEST) == pytest.approx(BASE.target_ctr, abs=0.005)
  assert buys / clicks == pytest.approx(BASE.target_cvr, abs=0.03)


def test_truth_matches_converted_test_rows_and_oracle_beats_chance(member):
  raw, out, _, _ = member
  truth = realistic.read_truth(raw, "test")
  rows = readback.read_split(out, "test")
  ids = [int(r["sample_id"]) for r in rows]
  aligned = realistic.align_truth(truth, ids)
  np.testing.assert_array_equal(aligned["click"], [r["label/click"] for r in rows])
  np.testing.assert_array_equal(
    aligned["buy"] & aligned["click"], [r["label/purchase"] for r in rows]
  )
  oracle = realistic.oracle_metrics(truth, ids)
  assert oracle["rows"] == NUM_TEST - 1
  assert oracle["auc/click"] > 0.65
  assert oracle["auc/purchase"] > 0.7
  assert oracle["auc/cvr_entire_space"] > 0.6
  with pytest.raises(ValueError, match="0 unknown, 0 repeated, 1 kept rows missing"):
    realistic.align_truth(truth, ids[1:])
  with pytest.raises(ValueError, match="1 unknown, 0 repeated, 0 kept rows"):
    realistic.align_truth(truth, ids + [10**12])


def test_crosses_carry_the_history_weight_of_the_item_attribute(member):
  _, out, _, _ = member
  base = realistic.FIELD_BASE
  checked = 0
  for row in readback.read_split(out, "validation")[:300]:
    category = row["item_category"] - base["206"]
    history = dict(zip(*row["hist_category"]))
    expected = history.get(base["109_14"] + category)
    ids, weights = row["cross_category"]
    if expected is None:
      assert ids == []
    else:
      assert ids == [base["508"] + category]
      assert weights[0] == pytest.approx(expected, rel=1e-5)
      checked += 1
  assert checked > 50


def test_same_seed_same_bytes(tmp_path):
  paths = []
  for name, seed in (("a", 5), ("b", 5), ("c", 6)):
    out = str(tmp_path / name)
    realistic.write_member(dataclasses.replace(BASE, seed=seed), out, 3000, 500)
    paths.append(out)
  names = sorted(os.listdir(paths[0]))
  assert names == [
    "common_features_test.csv",
    "common_features_train.csv",
    "realistic.json",
    "sample_skeleton_test.csv",
    "sample_skeleton_train.csv",
    "truth_test.npz",
    "truth_train.npz",
  ]
  _, mismatch, errors = filecmp.cmpfiles(paths[0], paths[1], names, shallow=False)
  assert not mismatch and not errors
  assert not filecmp.cmp(
    os.path.join(paths[0], "sample_skeleton_train.csv"),
    os.path.join(paths[2], "sample_skeleton_train.csv"),
    shallow=False,
  )


def _logit(p):
  return np.log(p) - np.log1p(-p)


def _item_correlation(truth):
  """Correlation over items (>= 5 rows) of mean logit q_click, q_purchase."""
  n = np.bincount(truth["item"])
  keep = n >= 5
  means = [
    np.bincount(truth["item"], _logit(truth[k]))[keep] / n[keep] for k in ("q_click", "q_purchase")
  ]
  return np.corrcoef(*means)[0, 1]


def test_conflict_makes_click_and_buy_disagree_over_items(tmp_path):
  without = _truth(dataclasses.replace(BASE, conflict=0.0), 60_000, tmp_path, "none")
  strong = _truth(dataclasses.replace(BASE, conflict=0.8), 60_000, tmp_path, "strong")
  assert _item_correlation(without) > 0.1
  assert _item_correlation(strong) < -0.3


def _pair_lift(truth):
  """P(two impressions of one visit both clicked) / P(click)^2."""
  n = np.bincount(truth["visit"])
  s = np.bincount(truth["visit"], truth["click"].astype(float))
  both = (s * (s - 1)).sum() / (n * (n - 1)).sum()
  return both / truth["click"].mean() ** 2


def test_visit_intent_correlates_labels_within_a_visit(tmp_path):
  without = _truth(dataclasses.replace(BASE, visit_intent=0.0), 100_000, tmp_path, "none")
  strong = _truth(dataclasses.replace(BASE, visit_intent=1.0), 100_000, tmp_path, "strong")
  assert _pair_lift(strong) > _pair_lift(without) + 0.5


def _click_space_lift(truth):
  """Mean buy propensity of clicked impressions over that of all of them."""
  q_click, q_buy = truth["q_click"], truth["q_purchase"]
  return np.average(q_buy, weights=q_click) / q_buy.mean()


def test_selection_makes_click_space_cvr_overstate_the_entire_space(tmp_path):
  without = _truth(dataclasses.replace(BASE, selection=0.0), 30_000, tmp_path, "none")
  strong = _truth(dataclasses.replace(BASE, selection=1.0), 30_000, tmp_path, "strong")
  # Shared tastes already make clickers likelier buyers (~1.7x); the hidden
  # need doubles that (~3.5x).
  assert _click_space_lift(strong) > 1.5 * _click_space_lift(without)


def test_aliexpress_shaped_member_converts_with_its_truth(tmp_path):
  raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
  report = realistic.write_member("aliexpress_shaped", raw, 4000, 1500)
  assert sorted(os.listdir(raw)) == [
    "realistic.json",
    "test.csv",
    "train.csv",
    "truth_test.npz",
    "truth_train.npz",
  ]
  converted = convert.convert_aliexpress(raw, out, workers=1, num_shards=1)
  assert converted["skipped"] == {"buy_without_click": 2}
  assert converted["rows_per_split"]["test"] == 1499
  truth = realistic.read_truth(raw, "test")
  with open(os.path.join(raw, "test.csv")) as f:
    lines = f.read().splitlines()[1:]
  labels = np.array([line.rsplit(",", 2)[1:] for line in lines], int)
  np.testing.assert_array_equal(labels, np.stack([truth["click"], truth["buy"]], axis=1))
  assert report["splits"]["test"]["clicks"] == int(truth["click"].sum())
  assert realistic.oracle_metrics(truth)["auc/click"] > 0.6


def test_bad_arguments(tmp_path):
  with pytest.raises(
    ValueError, match="unknown realistic member 'nope'; known: aliexpress_shaped, base, conflict"
  ):
    realistic.write_member("nope", str(tmp_path), 10, 10)
  with pytest.raises(ValueError, match="num_train and num_test must be >= 1"):
    realistic.write_member("base", str(tmp_path), 0, 10)
  with pytest.raises(ValueError, match="output_format must be"):
    realistic.RealisticConfig(output_format="csv")
