"""The synthetic generator: truth, determinism, encoding, datasets on disk."""

import dataclasses
import glob
import itertools
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import input_pipeline
from tafe_tf.data import synthetic, writer

# Small id ranges keep the ground truth cheap to build; the defaults are tested
# where their values matter (rates, skew).
SMALL = synthetic.SyntheticConfig(
  num_users=2_000, num_items=1_000, num_categories=40, num_shops=100, num_brands=80, seed=3
)


def _one_batch(config, split, n):
  """All ``n`` rows of a split in a single batch dict."""
  batches = list(synthetic.generate_batches(config, split, n, batch_size=n))
  assert len(batches) == 1
  return batches[0]


def _columns_equal(a, b):
  """Whether two batch dicts hold the same keys and values."""
  if sorted(a) != sorted(b):
    return False
  for key in a:
    x, y = a[key], b[key]
    if isinstance(x, synthetic.RaggedColumn):
      if not (np.array_equal(x.values, y.values) and np.array_equal(x.row_splits, y.row_splits)):
        return False
    elif not np.array_equal(x, y):
      return False
  return True


def _concat_batches(batches):
  out = {}
  for key, first in batches[0].items():
    if isinstance(first, synthetic.RaggedColumn):
      values = np.concatenate([b[key].values for b in batches])
      lengths = np.concatenate([b[key].row_lengths for b in batches])
      out[key] = synthetic.RaggedColumn(values, np.concatenate([[0], np.cumsum(lengths)]))
    else:
      out[key] = np.concatenate([b[key] for b in batches])
  return out


# --- configuration and schema -------------------------------------------------


@pytest.mark.parametrize(
  "num_steps, names",
  [
    (2, ("click", "purchase")),
    (3, ("click", "cart", "purchase")),
    (4, ("click", "cart", "checkout", "purchase")),
  ],
)
def test_step_names(num_steps, names):
  assert synthetic.step_names(num_steps) == names
  assert synthetic.SyntheticConfig(num_steps=num_steps).steps == names


def test_step_names_rejects_other_lengths():
  with pytest.raises(
    ValueError,
    match=r"^num_steps must be one of "
    r"\[2, 3, 4\], got 5$",
  ):
    synthetic.step_names(5)


def test_config_json_round_trip():
  config = synthetic.SyntheticConfig(num_steps=3, seed=7, conflict=2.5, step_rates=[0.05, 0.4, 0.3])
  assert config.step_rates == (0.05, 0.4, 0.3)  # a list is stored as a tuple
  text = json.dumps(config.to_json())
  assert synthetic.SyntheticConfig.from_json(json.loads(text)) == config
  default = synthetic.SyntheticConfig()
  assert synthetic.SyntheticConfig.from_json(default.to_json()) == default
  assert default.conditional_rates() == (0.10, 0.20)
  # numpy numbers are stored as Python ones, so the JSON form stays valid.
  from_numpy = synthetic.SyntheticConfig(seed=np.int64(3), conflict=2)
  assert json.loads(json.dumps(from_numpy.to_json()))["conflict"] == 2.0
  assert from_numpy == synthetic.SyntheticConfig(seed=3, conflict=2.0)
  assert config.conditional_rates() == (0.05, 0.4, 0.3)


def test_config_from_json_rejects_unknown_keys():
  with pytest.raises(
    ValueError,
    match=r"^unknown SyntheticConfig keys "
    r"\['colour'\]$",
  ):
    synthetic.SyntheticConfig.from_json({"seed": 1, "colour": "red"})


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(num_steps=5), "SyntheticConfig.num_steps must be one of [2, 3, 4], got 5"),
    (dict(conflict=-1.0), "SyntheticConfig.conflict must be >= 0, got -1.0"),
    (dict(seed=-2), "SyntheticConfig.seed must be >= 0, got -2"),
    (dict(seed=1.5), "SyntheticConfig.seed must be an int, got 1.5"),
    (dict(num_users=True), "SyntheticConfig.num_users must be an int, got True"),
    (dict(num_users=0), "SyntheticConfig.num_users must be >= 1, got 0"),
    (dict(signal=float("nan")), "SyntheticConfig.signal must be a finite number, got nan"),
    (dict(clickbait_rate=1.5), "SyntheticConfig.clickbait_rate must be in [0, 1], got 1.5"),
    (dict(mean_history_events=0.5), "SyntheticConfig.mean_history_events must be >= 1, got 0.5"),
    (
      dict(num_items=10, num_categories=20),
      "SyntheticConfig.num_items (10) must be >= num_categories (20): every category needs an item",
    ),
    (dict(step_rates=(0.1,)), "SyntheticConfig.step_rates needs one rate per step (2), got [0.1]"),
    (dict(step_rates=(0.1, 1.0)), "SyntheticConfig.step_rates must lie in (0, 1), got [0.1, 1.0]"),
    (
      dict(step_rates="0.1,0.2"),
      "SyntheticConfig.step_rates must be a sequence of floats, got '0.1,0.2'",
    ),
  ],
)
def test_invalid_config_values_raise(kwargs, message):
  with pytest.raises(ValueError) as info:
    synthetic.SyntheticConfig(**kwargs)
  assert str(info.value) == message


def test_schema_matches_config():
  config = dataclasses.replace(SMALL, num_steps=3)
  schema = synthetic.synthetic_schema(config)
  assert schema.name == "synthetic"
  assert schema.steps == ("click", "cart", "purchase")
  assert schema.user_field == "user_id"
  assert schema.has_sample_id and schema.has_oracle
  expected_ids = {
    "user_id": 2_000,
    "item_id": 1_000,
    "item_category": 40,
    "hist_category": 40,
    "item_shop": 100,
    "hist_shop": 100,
    "item_brand": 80,
    "hist_brand": 80,
    "position": 10,
    "user_gender": 2,
    "user_category_match": 5,
  }
  for name, num_ids in expected_ids.items():
    spec = schema.field(name)
    assert spec.lookup == features_lib.LookupKind.IDENTITY
    assert spec.num_ids == num_ids, name
  assert [f.name for f in schema.fields_of(features_lib.FieldKind.WEIGHTED_IDS)] == [
    "hist_category",
    "hist_brand",
    "hist_shop",
  ]
  assert [f.name for f in schema.fields_of(features_lib.FieldKind.DENSE)] == ["price"]
  assert all("embedding_dim" not in f for f in schema.to_json()["fields"])
  assert features_lib.Schema.from_json(schema.to_json()) == schema


# --- rows ---------------------------------------------------------------------


def test_rows_are_deterministic_and_batch_size_free():
  a = _one_batch(SMALL, "train", 5_000)
  b = _concat_batches(list(synthetic.generate_batches(SMALL, "train", 5_000, batch_size=777)))
  assert _columns_equal(a, b)
  assert a["sample_id"][0] == "train-00000000"
  assert a["sample_id"][-1] == "train-00004999"


def test_shorter_run_is_a_prefix_of_a_longer_one():
  long = _one_batch(SMALL, "train", 9_000)
  short = _one_batch(SMALL, "train", 5_000)
  for key, column in short.items():
    if isinstance(column, synthetic.RaggedColumn):
      end = long[key].row_splits[5_000]
      assert np.array_equal(column.values, long[key].values[:end])
    else:
      assert np.array_equal(column, long[key][:5_000]), key


def test_streams_without_materializing_the_whole_split():
  # A billion-row split: only the batches taken are ever generated.
  head = list(
    itertools.islice(synthetic.generate_batches(SMALL, "test", 10**9, batch_size=1_000), 3)
  )
  assert _columns_equal(_concat_batches(head), _one_batch(SMALL, "test", 3_000))


def test_seed_and_split_change_rows_but_not_the_world():
  train = _one_batch(SMALL, "train", 3_000)
  test = _one_batch(SMALL, "test", 3_000)
  other_seed = _one_batch(dataclasses.replace(SMALL, seed=4), "train", 3_000)
  assert not np.array_equal(train["user_id"], test["user_id"])
  assert not np.array_equal(train["user_id"], other_seed["user_id"])
  # The same user has the same profile and history in every split.
  shared = np.intersect1d(train["user_id"], test["user_id"])
  assert shared.size > 50
  for user in shared[:50]:
    i = np.flatnonzero(train["user_id"] == user)[0]
    j = np.flatnonzero(test["user_id"] == user)[0]
    for key in ("user_gender", "user_age", "user_consumption", "user_city_tier", "user_segment"):
      assert train[key][i] == test[key][j]
    assert np.array_equal(train["hist_shop"].row(i), test["hist_shop"].row(j))


def test_attributes_are_functions_of_their_ids():
  batch = _one_batch(SMALL, "train", 6_000)
  for id_key, keys in (
    ("user_id", ["user_gender", "user_age", "user_consumption", "user_city_tier", "user_segment"]),
    ("item_id", ["item_category", "item_shop", "item_brand", "price"]),
  ):
    ids = batch[id_key]
    first = np.unique(ids, return_index=True)
    lookup = dict(zip(first[0].tolist(), first[1].tolist()))
    at = np.asarray([lookup[i] for i in ids.tolist()])
    for key in keys:
      assert np.array_equal(batch[key], batch[key][at]), key
  hist = batch["hist_brand"]
  for i in np.flatnonzero(batch["user_id"] == batch["user_id"][0])[:20]:
    assert np.array_equal(hist.row(i), hist.row(0))


def test_ids_lie_in_their_schema_ranges():
  batch = _one_batch(SMALL, "validation", 4_000)
  for spec in synthetic.synthetic_schema(SMALL).fields:
    if not spec.is_id:
      continue
    column = batch[spec.name]
    values = column.values if isinstance(column, synthetic.RaggedColumn) else column
    assert values.dtype == np.int64
    assert values.min() >= 0 and values.max() < spec.num_ids, spec.name


def test_histories_are_weighted_sets_and_sometimes_empty():
  config = dataclasses.replace(SMALL, empty_history_rate=0.3, max_history=6)
  batch = _one_batch(config, "train", 4_000)
  for name in ("hist_category", "hist_brand", "hist_shop"):
    ids, weights = batch[name], batch[name + "_weight"]
    lengths = ids.row_lengths
    assert np.array_equal(lengths, weights.row_lengths)
    assert (lengths == 0).any() and (lengths > 0).any()
    assert lengths.max() <= 6
    # Weights are log(1 + count) with count >= 1.
    counts = np.expm1(weights.values.astype(np.float64))
    assert np.allclose(counts, np.round(counts), atol=1e-4)
    assert counts.min() >= 1 - 1e-4
    for i in range(200):
      row = ids.row(i)
      assert np.all(np.diff(row) > 0)  # distinct ids, sorted
  # Empty history: empty in every field at once, and a zero category match.
  empty = batch["hist_category"].row_lengths == 0
  assert np.array_equal(empty, batch["hist_shop"].row_lengths == 0)
  assert np.all(batch["user_category_match"][empty] == 0)
  # The cross says whether (and roughly how often) the item's category is in
  # the user's history.
  hist = batch["hist_category"]
  for i in range(500):
    row = hist.row(i)
    hit = np.flatnonzero(row == batch["item_category"][i])
    if hit.size == 0:
      assert batch["user_category_match"][i] == 0
    else:
      count = round(math.expm1(float(batch["hist_category_weight"].row(i)[hit[0]])))
      assert batch["user_category_match"][i] == min(int(math.log2(count)) + 1, 4)


def test_zipf_skew():
  batch = _one_batch(synthetic.SyntheticConfig(), "train", 50_000)
  for key, n in (("user_id", 10_000), ("item_id", 5_000)):
    counts = np.sort(np.bincount(batch[key], minlength=n))[::-1]
    share = counts[: n // 100].sum() / counts.sum()
    assert share > 0.4, (key, share)
  flat = _one_batch(dataclasses.replace(SMALL, user_zipf=0.0), "train", 50_000)
  counts = np.sort(np.bincount(flat["user_id"], minlength=2_000))[::-1]
  assert counts[:20].sum() / counts.sum() < 0.03


# --- ground truth and labels --------------------------------------------------


@pytest.mark.parametrize("num_steps", [2, 3, 4])
def test_labels_are_cumulative_and_match_the_truth(num_steps):
  config = dataclasses.replace(SMALL, num_steps=num_steps)
  batch = _one_batch(config, "train", 40_000)
  steps = config.steps
  y = np.stack([batch[f"label/{s}"] for s in steps], 1)
  q = np.stack([batch[f"oracle/{s}"] for s in steps], 1)
  assert set(np.unique(y)) <= {0, 1}
  assert np.all(np.diff(y, axis=1) <= 0)  # y_t <= y_{t-1}
  assert np.all((q > 0) & (q < 1))
  p = np.cumprod(q, axis=1)
  for t, step in enumerate(steps):
    # Given the features, sum(y_t) is a sum of independent Bernoulli(p_t).
    standard_error = math.sqrt(np.sum(p[:, t] * (1 - p[:, t])))
    assert abs(y[:, t].sum() - p[:, t].sum()) < 4 * standard_error, step
    assert y[:, t].sum() > 0, step
  # Intercepts are solved on another sample: base rates hold approximately.
  rates = config.conditional_rates()
  assert abs(q[:, 0].mean() - rates[0]) < 0.1 * rates[0]
  for t in range(1, num_steps):
    conditional = p[:, t].sum() / p[:, t - 1].sum()
    assert abs(conditional - rates[t]) < 0.1 * rates[t]


def test_step_rates_are_tunable():
  config = dataclasses.replace(SMALL, step_rates=(0.3, 0.05))
  q = _one_batch(config, "train", 20_000)
  p1 = q["oracle/click"]
  p2 = p1 * q["oracle/purchase"]
  assert abs(p1.mean() - 0.3) < 0.03
  assert abs(p2.sum() / p1.sum() - 0.05) < 0.005


def test_conflict_raises_clicks_and_lowers_purchases_of_clickbait():
  config = dataclasses.replace(SMALL, conflict=1.5)
  batch = _one_batch(config, "train", 30_000)
  clickbait = synthetic.ground_truth(config).item_clickbait[batch["item_id"]]
  assert 0.05 < clickbait.mean() < 0.5
  click, purchase = batch["oracle/click"], batch["oracle/purchase"]
  assert click[clickbait].mean() > 1.3 * click[~clickbait].mean()
  assert purchase[clickbait].mean() < 0.85 * purchase[~clickbait].mean()
  top = batch["position"] == 0
  assert click[top].mean() > click[batch["position"] >= 3].mean()
  assert purchase[top].mean() < purchase[batch["position"] >= 3].mean()


@pytest.mark.parametrize("num_steps", [2, 4])
def test_conflict_enters_click_and_later_logits_with_opposite_signs(num_steps):
  base = dataclasses.replace(SMALL, num_steps=num_steps, conflict=0.0)
  strong = dataclasses.replace(base, conflict=3.0)
  draws = synthetic.ground_truth(base).draw_chunk("train", 0)
  args = (draws.users, draws.items, draws.positions)
  shift = synthetic.ground_truth(strong).logits(*args) - synthetic.ground_truth(base).logits(*args)
  # Everything but the conflict (and the re-solved intercepts) is unchanged.
  intercepts = synthetic.ground_truth(strong).intercepts - synthetic.ground_truth(base).intercepts
  component = synthetic.ground_truth(base).conflict_component(draws.items, draws.positions)
  assert component.max() > 1.0 and component.min() == 0.0
  np.testing.assert_allclose(shift[:, 0] - intercepts[0], 3.0 * component, atol=1e-9)
  for t in range(1, num_steps):
    np.testing.assert_allclose(shift[:, t] - intercepts[t], -3.0 * component, atol=1e-9)


def test_oracle_auc_is_the_rank_auc_of_the_chained_truth():
  rng = np.random.default_rng(0)
  # Few distinct values, so that ties are common.
  q1 = rng.choice([0.1, 0.2, 0.5], size=300)
  q2 = rng.choice([0.3, 0.6], size=300)
  y1 = (rng.random(300) < q1).astype(np.int64)
  y2 = y1 * (rng.random(300) < q2)
  steps = ("click", "purchase")
  labels, oracle = {"click": y1, "purchase": y2}, {"click": q1, "purchase": q2}

  def brute_force(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)

  auc = synthetic.oracle_auc(labels, oracle, steps)
  assert auc["click"] == pytest.approx(brute_force(y1, q1), abs=1e-12)
  assert auc["purchase"] == pytest.approx(brute_force(y2, q1 * q2), abs=1e-12)
  conditional = synthetic.oracle_conditional_auc(labels, oracle, steps)
  clicked = y1 == 1
  assert conditional == {
    "purchase": pytest.approx(brute_force(y2[clicked], q2[clicked]), abs=1e-12)
  }
  # No positives: undefined, reported as None.
  assert synthetic.oracle_auc(
    {"click": np.zeros(5, np.int64), "purchase": np.zeros(5, np.int64)},
    {"click": np.full(5, 0.5), "purchase": np.full(5, 0.5)},
    steps,
  ) == {"click": None, "purchase": None}


def test_generate_batches_rejects_bad_arguments():
  with pytest.raises(
    ValueError,
    match=r"^split must be one of \['train', "
    r"'validation', 'test'\], got 'dev'$",
  ):
    next(synthetic.generate_batches(SMALL, "dev", 10))
  with pytest.raises(ValueError, match=r"^num_rows must be an int >= 0, got -1$"):
    next(synthetic.generate_batches(SMALL, "train", -1))
  with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, got 0$"):
    next(synthetic.generate_batches(SMALL, "train", 10, batch_size=0))
  assert list(synthetic.generate_batches(SMALL, "train", 0)) == []


# --- datasets on disk ---------------------------------------------------------


def test_write_then_read_back_equals_generated_rows(tmp_path):
  config = dataclasses.replace(SMALL, num_steps=3, empty_history_rate=0.3)
  out = str(tmp_path / "syn")
  report = synthetic.write_dataset(
    out, config, num_train=700, num_validation=300, num_test=0, num_shards=3
  )
  schema = features_lib.Schema.load(out)
  assert schema == synthetic.synthetic_schema(config)
  for split, n in (("train", 700), ("validation", 300)):
    generated = _one_batch(config, split, n)
    ds = input_pipeline.make_dataset(out, split, batch_size=128, with_metadata=True)
    seen = 0
    for batch_feats, batch_labels in ds:
      # Ragged tensors to RaggedColumns, once per batch.
      feats = {
        k: synthetic.RaggedColumn(v.values.numpy(), v.row_splits.numpy())
        if isinstance(v, tf.RaggedTensor)
        else v.numpy()
        for k, v in batch_feats.items()
      }
      labels = {k: v.numpy() for k, v in batch_labels.items()}
      for i, sample_id in enumerate(feats["sample_id"]):
        j = int(sample_id.decode().split("-")[1])
        assert generated["sample_id"][j] == sample_id.decode()
        for spec in schema.fields:
          if spec.kind == features_lib.FieldKind.WEIGHTED_IDS:
            assert np.array_equal(feats[spec.name].row(i), generated[spec.name].row(j))
            assert np.array_equal(feats[spec.weight_key].row(i), generated[spec.weight_key].row(j))
          else:
            assert np.array_equal(feats[spec.name][i], generated[spec.name][j]), spec.name
        for step in schema.steps:
          assert labels[step][i] == generated[f"label/{step}"][j]
          assert feats[f"oracle/{step}"][i] == np.float32(generated[f"oracle/{step}"][j])
        seen += 1
    assert seen == n
    stats = report["splits"][split]
    assert stats["rows"] == n
    y = {s: generated[f"label/{s}"] for s in schema.steps}
    q = {s: generated[f"oracle/{s}"] for s in schema.steps}
    assert stats["oracle_auc"] == pytest.approx(synthetic.oracle_auc(y, q, schema.steps))
    assert stats["oracle_conditional_auc"].keys() == {"cart", "purchase"}
    p = np.ones(n)
    for step in schema.steps:
      p = p * q[step]
      assert stats["label_rate"][step] == pytest.approx(y[step].mean())
      assert stats["mean_true_p"][step] == pytest.approx(p.mean())
  assert report["splits"]["test"]["rows"] == 0
  assert report["splits"]["test"]["oracle_auc"] == {"click": None, "cart": None, "purchase": None}
  assert input_pipeline.count_examples(out, "test") == 0
  # report.json is the completion marker: written last, equal to the return.
  assert writer.read_report(out) == json.loads(json.dumps(report))
  report_time = os.stat(os.path.join(out, "report.json")).st_mtime_ns
  assert all(
    os.stat(f).st_mtime_ns <= report_time for f in glob.glob(os.path.join(out, "*.tfrecord.gz"))
  )
  assert not glob.glob(os.path.join(out, "*.incomplete"))


def _shard_bytes(data_dir):
  return {
    os.path.basename(f): open(f, "rb").read()
    for f in sorted(glob.glob(os.path.join(data_dir, "*.tfrecord.gz")))
  }


def test_written_bytes_are_deterministic(tmp_path):
  sizes = dict(num_train=500, num_validation=100, num_test=100, num_shards=2)
  synthetic.write_dataset(str(tmp_path / "a"), SMALL, **sizes)
  synthetic.write_dataset(str(tmp_path / "b"), SMALL, **sizes)
  synthetic.write_dataset(str(tmp_path / "c"), dataclasses.replace(SMALL, seed=11), **sizes)
  a, b, c = (_shard_bytes(str(tmp_path / d)) for d in "abc")
  assert len(a) == 6
  assert a == b
  assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_ensure_dataset_reuses_and_rewrites(tmp_path):
  out = str(tmp_path / "syn")
  sizes = (300, 100, 100)
  assert synthetic.ensure_dataset(out, SMALL, *sizes, num_shards=2) == out
  first = _shard_bytes(out)
  stamps = {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in first}
  report_stamp = os.stat(os.path.join(out, "report.json")).st_mtime_ns

  # Same config and sizes: nothing is written.
  synthetic.ensure_dataset(out, SMALL, *sizes, num_shards=2)
  assert {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in first} == stamps
  assert os.stat(os.path.join(out, "report.json")).st_mtime_ns == report_stamp

  # Another config: rewritten, and the report says so.
  strong = dataclasses.replace(SMALL, conflict=3.0)
  synthetic.ensure_dataset(out, strong, *sizes, num_shards=2)
  assert writer.read_report(out)["config"]["conflict"] == 3.0
  assert _shard_bytes(out) != first

  # Other sizes or shard counts: rewritten, stale shards gone.
  synthetic.ensure_dataset(out, strong, 400, 100, 100, num_shards=3)
  assert writer.read_report(out)["splits"]["train"]["rows"] == 400
  assert input_pipeline.count_examples(out, "train") == 400
  assert len(glob.glob(os.path.join(out, "train-*"))) == 3

  # An incomplete directory (no report, as after a crash): rewritten.
  os.remove(os.path.join(out, "report.json"))
  synthetic.ensure_dataset(out, strong, 400, 100, 100, num_shards=3)
  assert writer.read_report(out)["splits"]["validation"]["rows"] == 100

  # A missing shard: rewritten.
  os.remove(glob.glob(os.path.join(out, "test-*"))[0])
  synthetic.ensure_dataset(out, strong, 400, 100, 100, num_shards=3)
  assert input_pipeline.count_examples(out, "test") == 100


def test_refuses_to_overwrite_another_dataset(tmp_path):
  other = features_lib.Schema(
    name="ali_ccp",
    steps=("click", "purchase"),
    fields=(features_lib.FieldSpec(name="item", kind="id", lookup="identity", num_ids=5),),
  )
  other.save(str(tmp_path))
  with pytest.raises(ValueError) as info:
    synthetic.ensure_dataset(str(tmp_path), SMALL, 10, 10, 10)
  assert str(info.value) == (
    f"{tmp_path} holds dataset 'ali_ccp', not synthetic data; refusing to overwrite it"
  )
  assert os.listdir(tmp_path) == ["schema.json"]
