"""TFDS builders: tfds.load works from manual_dir and matches the converter."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readback  # noqa: E402  (tests/data helper)
import tensorflow_datasets as tfds  # noqa: E402

import tafe_tf.data.tfds  # noqa: E402,F401  (registers the builders)
from tafe_tf.data import (
  convert,  # noqa: E402
  synthetic,  # noqa: E402
)
from tafe_tf.data.tfds import line_builder  # noqa: E402

FIXTURES = readback.FIXTURES


def _load(name, data_dir, manual_dir=None, config=None, split=None):
  builder = tfds.builder(name, data_dir=data_dir, **({"config": config} if config else {}))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder, builder.as_dataset(split=split, shuffle_files=False)


def _by_key(rows, key):
  return {r[key]: r for r in rows}


def test_ali_ccp_paddle_matches_converter(tmp_path):
  source = os.path.join(FIXTURES, "ali_ccp_paddle_esmm")
  config = line_builder.LineFormatConfig(
    name="paddle_half", format_name="paddle_esmm", validation_fraction=0.5
  )
  builder, splits = _load("ali_ccp", str(tmp_path / "tfds"), source, config)
  out = str(tmp_path / "out")
  report = convert.convert_paddle_esmm(source, out, min_count=0, validation_fraction=0.5)
  for split in ("train", "validation", "test"):
    assert builder.info.splits[split].num_examples == (report["rows_per_split"][split])
    want = _by_key(readback.read_split(out, split), "sample_id")
    for example in tfds.as_numpy(splits[split]):
      sample_id = example["sample_id"].decode()
      row = want[sample_id]
      assert example["label"]["click"] == row["label/click"]
      assert example["label"]["purchase"] == row["label/purchase"]
      assert example["user_id"] == row["user_id"]
      assert example["item_brand"] == row["item_brand"]
      assert example["hist_shop"]["ids"].tolist() == row["hist_shop"][0]
      assert example["hist_shop"]["weights"].tolist() == row["hist_shop"][1]


def test_aliexpress_and_processed_ali_ccp_load(tmp_path):
  ds = tfds.load(
    "aliexpress",
    split="test",
    data_dir=str(tmp_path / "tfds"),
    download_and_prepare_kwargs={
      "download_config": tfds.download.DownloadConfig(
        manual_dir=os.path.join(FIXTURES, "aliexpress")
      )
    },
  )
  rows = list(tfds.as_numpy(ds))
  assert len(rows) == 100
  assert rows[0]["numerical"].shape == (63,)
  assert sum(int(r["label"]["click"]) for r in rows) == 6
  builder, splits = _load(
    "ali_ccp/processed", str(tmp_path / "tfds"), os.path.join(FIXTURES, "ali_ccp_processed")
  )
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
    "train": 100,
    "validation": 50,
    "test": 50,
  }
  first = next(iter(tfds.as_numpy(splits["validation"])))
  assert first["hist_category_value"].shape == (1,)


def test_manual_dir_is_required(tmp_path):
  builder = tfds.builder("ali_ccp/raw", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(AssertionError, match="needs a Tianchi login"):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "nowhere"))
    )


def test_synthetic_matches_generator(tmp_path):
  builder, splits = _load("synthetic_conversions/tiny", str(tmp_path / "tfds"))
  assert builder.info.splits["train"].num_examples == 2000
  config = builder.builder_config
  batch = next(synthetic.generate_batches(config.synthetic, "validation", 500, batch_size=500))
  want = {sid: i for i, sid in enumerate(batch["sample_id"])}
  for example in tfds.as_numpy(splits["validation"]):
    i = want[example["sample_id"].decode()]
    assert example["user_id"] == batch["user_id"][i]
    assert example["label"]["purchase"] == batch["label/purchase"][i]
    np.testing.assert_allclose(example["oracle"]["click"], batch["oracle/click"][i], rtol=1e-6)
    assert example["hist_brand"]["ids"].tolist() == (batch["hist_brand"].row(i).tolist())
