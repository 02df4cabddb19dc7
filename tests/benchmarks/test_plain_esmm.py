"""The plain ESMM learns on a realistic member and keeps every train id."""

import pytest

from tafe_tf.benchmarks import plain_esmm
from tafe_tf.data import convert, realistic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  raw = str(tmp_path_factory.mktemp("raw"))
  realistic.write_member("base", raw, 20_000, 6_000)
  out = str(tmp_path_factory.mktemp("converted"))
  report = convert.convert_ali_ccp(raw, out, min_count=0, workers=1, num_shards=2)
  return raw, out, report


def test_one_epoch_beats_chance_and_keeps_every_train_id(dataset):
  raw, out, report = dataset
  result = plain_esmm.train_and_evaluate(out, epochs=1, seed=0, batch_size=256, truth_dir=raw)
  test = result["test"]
  assert test["rows"] == report["rows_per_split"]["test"]
  assert test["auc/click"] > 0.6
  assert 0.5 < test["pcoc/click"] < 2.0
  assert result["kept_epoch"] == 1 and len(result["validation"]) == 1
  assert set(result["oracle"]) == set(test)
  # min_count=0 vocabularies list every train id: one row each (+ the sentinel).
  sizes = report["vocabulary_sizes"]
  for field in ("user_id", "item_id", "item_shop", "position"):
    assert result["table_rows"][field] == sizes[field] + 1


@pytest.mark.slow  # 13 s; the test above trains it too
def test_kept_epoch_is_the_lowest_validation_loss(dataset):
  _, out, _ = dataset
  result = plain_esmm.train_and_evaluate(out, epochs=2, seed=1)
  losses = [v["loss"] for v in result["validation"]]
  assert result["kept_epoch"] == 1 + losses.index(min(losses))
  assert "auc/cvr_entire_space" not in result["test"]  # no truth given
