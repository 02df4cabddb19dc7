"""launch.predict on raw files: a CSV of one's own columns, read through the
spec it was converted with, scores exactly as its converted split does."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from cli_runner import run_module

from tafe_tf import config as config_lib
from tafe_tf import export, prediction, training
from tafe_tf.data import convert, raw_rows

SPEC = {
  "name": "shop_logs",
  "delimiter": ",",
  "files": {"train": "train.csv", "test": "test.csv"},
  "id_columns": ["uid", {"column": "city", "hash": True}],
  "list_columns": [{"column": "tags", "separator": "|", "weights": "inline"}],
  "dense_columns": ["price"],
  "steps": [{"name": "click", "column": "is_click"}, {"name": "purchase", "column": "is_buy"}],
  "key_column": "request_id",
  "group_column": "uid",
  "user_column": "uid",
}
HEADER = ["request_id", "uid", "city", "tags", "price", "comment", "is_click", "is_buy"]
CITIES = ["paris", "rome", "oslo", "lima"]
N_TEST = 23
# Bad test lines (1-based, the header is line 1): skipped at conversion and at scoring.
BAD = {5: "wrong_field_count", 9: "bad_id"}


def _rows(n, seed, prefix):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    click = int(rng.random() < 0.5)
    tags = "|".join(f"{rng.integers(1, 9)}:{rng.random():.3f}" for _ in range(rng.integers(0, 3)))
    rows.append(
      [
        f"{prefix}{i}",
        str(rng.integers(1, 40)),
        CITIES[rng.integers(0, len(CITIES))],
        tags,
        f"{rng.normal():.4f}",
        "ok",
        str(click),
        str(int(click and rng.random() < 0.5)),
      ]
    )
  return rows


def _write_csv(path, header, rows, bad=None):
  lines = [",".join(header)] + [",".join(r) for r in rows]
  for number, reason in sorted((bad or {}).items()):
    line = lines[number - 1].split(",")
    if reason == "wrong_field_count":
      line = line[:-1]
    else:
      line[1] = "x7"  # uid is decimal ids
    lines[number - 1] = ",".join(line)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _read(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.reader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """convert -> train (tiny, 1 epoch) -> the converted test split scored."""
  root = tmp_path_factory.mktemp("predict_raw")
  logs = root / "logs"
  logs.mkdir()
  _write_csv(str(logs / "train.csv"), HEADER, _rows(96, seed=0, prefix="t"))
  test_rows = _rows(N_TEST, seed=1, prefix="q")
  _write_csv(str(logs / "test.csv"), HEADER, test_rows, BAD)
  # The same test rows without the label columns (and without the ignored comment).
  unlabelled = root / "new"
  unlabelled.mkdir()
  _write_csv(str(unlabelled / "part-0.csv"), HEADER[:5], [r[:5] for r in test_rows[:12]], BAD)
  _write_csv(str(unlabelled / "part-1.csv"), HEADER[:5], [r[:5] for r in test_rows[12:]])
  spec_path = str(root / "logs.json")
  with open(spec_path, "w", encoding="utf-8") as f:
    json.dump(SPEC, f)
  data_dir = str(root / "data")
  spec = raw_rows.load_spec(spec_path, "csv")
  report = convert.convert_columns(
    spec, str(logs), data_dir, min_count=0, num_shards=1, workers=1, validation_fraction=0.3
  )
  assert report["skipped"] == {"bad_id": 1, "wrong_field_count": 1}
  model_dir = str(root / "run")
  result = training.train(
    data_dir,
    model_dir,
    config_lib.RunConfig.create(
      "mmoe",
      hparams=dict(embedding_dim=4, num_experts=2, expert_units=[4], tower_units=[4], seed=0),
      epochs=1,
      steps_per_epoch=2,
      batch_size=32,
      verbose=0,
    ),
  )
  scorer = prediction.model_scorer(result.model, result.schema)
  converted = str(root / "converted.csv")
  summary = prediction.predict_to_csv(
    prediction.ConvertedSplit(data_dir, "test"), scorer, list(result.schema.steps), converted
  )
  assert summary.rows == N_TEST - len(BAD)
  return {
    "root": root,
    "spec": spec_path,
    "logs": str(logs),
    "new": str(unlabelled),
    "model_dir": model_dir,
    "result": result,
    "scorer": scorer,
    "converted": _read(converted),
  }


def _score_raw(run, pattern, name, fields=None, strict=False):
  spec = raw_rows.load_spec(run["spec"], "csv")
  source = raw_rows.RawRows(
    raw_rows.spec_format(spec, "csv"), raw_rows.input_files(pattern), fields, strict
  )
  prediction.check_inputs(run["result"].schema, source.schema)
  out = str(run["root"] / name)
  summary = prediction.predict_to_csv(
    source, run["scorer"], list(run["result"].schema.steps), out, batch_size=5
  )
  return source, summary, _read(out)


def _assert_same_predictions(got, want):
  assert got[0] == want[0] == ["sample_id", "p_click", "q_click", "p_purchase", "q_purchase"]
  assert [r[0] for r in got] == [r[0] for r in want]
  np.testing.assert_allclose(
    np.array([r[1:] for r in got[1:]], float),
    np.array([r[1:] for r in want[1:]], float),
    rtol=0,
    atol=1e-6,
  )


@pytest.mark.parametrize("labelled", [True, False])
def test_raw_rows_score_as_their_converted_split(run, labelled):
  pattern = os.path.join(run["logs"], "test.csv") if labelled else os.path.join(run["new"], "*.csv")
  fields = run["result"].schema.field_names
  source, summary, rows = _score_raw(run, pattern, f"raw-{labelled}.csv", fields)
  _assert_same_predictions(rows, run["converted"])
  assert summary.rows == N_TEST - len(BAD)
  assert source.skips.counts == {"bad_id": 1, "wrong_field_count": 1}
  name = "test.csv" if labelled else "part-0.csv"
  assert source.read_summary() == (
    f"{N_TEST} lines read, 2 skipped (bad_id 1: {name}:9; wrong_field_count 1: {name}:5)"
  )


def test_strict_stops_at_the_first_bad_line(run):
  with pytest.raises(ValueError, match=r"test\.csv:5: expected 8 comma-separated fields, got 7"):
    _score_raw(run, os.path.join(run["logs"], "test.csv"), "strict.csv", strict=True)
  assert not os.path.exists(run["root"] / "strict.csv")


def test_a_spec_without_a_key_names_rows_by_file_and_line(run, tmp_path):
  spec = dict(SPEC, key_column="", group_column="")
  spec_path = str(tmp_path / "nokey.json")
  with open(spec_path, "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in spec.items() if v}, f)
  source, _, rows = _score_raw(
    dict(run, spec=spec_path), os.path.join(run["new"], "part-1.csv"), "nokey.csv"
  )
  assert source.key_column == "line"
  path = os.path.join(run["new"], "part-1.csv")
  assert [r[0] for r in rows] == ["line"] + [f"{path}:{n}" for n in range(2, N_TEST - 12 + 2)]
  # Same values as the keyed rows of that file.
  want = {r[0]: r[1:] for r in run["converted"][1:]}
  np.testing.assert_allclose(
    np.array([r[1:] for r in rows[1:]], float),
    np.array([want[f"q{i}"] for i in range(12, N_TEST)], float),
    rtol=0,
    atol=1e-6,
  )


def test_the_cli_scores_raw_files_through_the_export(run):
  export_dir = str(run["root"] / "export")
  export.export_saved_model(run["result"].model, run["result"].schema, export_dir, version=1)
  out = str(run["root"] / "cli.csv")
  pattern = os.path.join(run["new"], "part-*.csv")
  result = run_module(
    "launch.predict",
    f"--export_dir={export_dir}",
    "--format=csv",
    f"--spec={run['spec']}",
    f"--input={pattern}",
    f"--output={out}",
    "--batch_size=4",
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (
    f"{N_TEST - len(BAD)} rows (sample_id, p_ and q_ per step) -> {out}; {N_TEST} lines read,"
    " 2 skipped (bad_id 1: part-0.csv:9; wrong_field_count 1: part-0.csv:5)"
  )
  _assert_same_predictions(_read(out), run["converted"])


def test_tfrecords_without_labels_encode_as_the_same_csv_rows(tmp_path):
  # TFRecords take a weight_column, not inline weights: a spec without the list.
  spec = {k: v for k, v in SPEC.items() if k != "list_columns"}
  spec_path = str(tmp_path / "spec.json")
  with open(spec_path, "w", encoding="utf-8") as f:
    json.dump(spec, f)
  rows = [r[:5] for r in _rows(7, seed=2, prefix="r")]
  _write_csv(str(tmp_path / "a.csv"), HEADER[:5], rows)
  with tf.io.TFRecordWriter(str(tmp_path / "a.tfrecord")) as w:
    for i, (key, uid, city, _, price) in enumerate(rows):
      feature = {
        "request_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
        "uid": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(uid)])),
        "city": tf.train.Feature(bytes_list=tf.train.BytesList(value=[city.encode()])),
        "price": tf.train.Feature(float_list=tf.train.FloatList(value=[float(price)])),
      }
      if i == 3:  # a float_list id: skipped and counted
        feature["uid"] = tf.train.Feature(float_list=tf.train.FloatList(value=[1.5]))
      w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())

  def batches(fmt, name):
    source = raw_rows.RawRows(
      raw_rows.spec_format(raw_rows.load_spec(spec_path, fmt), fmt), [str(tmp_path / name)]
    )
    out = [(e.numpy().tolist(), list(k)) for e, k in source.keyed_batches(3)]
    return source, [x for e, _ in out for x in e], [x for _, k in out for x in k]

  csv_source, csv_examples, csv_keys = batches("csv", "a.csv")
  tfr_source, tfr_examples, tfr_keys = batches("tfrecord", "a.tfrecord")
  assert csv_keys == [f"r{i}" for i in range(7)]
  assert tfr_keys == [k for i, k in enumerate(csv_keys) if i != 3]
  assert tfr_examples == [e for i, e in enumerate(csv_examples) if i != 3]
  assert csv_source.read_summary() == "7 lines read, 0 skipped"
  assert tfr_source.read_summary() == "7 records read, 1 skipped (wrong_type 1: a.tfrecord:4)"
