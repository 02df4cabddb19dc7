"""tafe_tf.prediction: scoring a split into a predictions CSV, streaming and atomic."""

import csv
import math
import os

import multistep_testdata as testdata
import numpy as np
import pytest

from tafe_tf import config as config_lib
from tafe_tf import evaluation, example_codec, export, input_pipeline, prediction, training
from tafe_tf import features as features_lib
from tafe_tf.data import writer

N_TEST = 37
BAD_KEY = b"\xffid\xfe"  # not UTF-8


def _with_sample_ids(schema):
  return features_lib.Schema(
    schema.name,
    schema.fields,
    schema.steps,
    user_field=schema.user_field,
    has_sample_id=True,
    directory=schema.directory,
  )


def _write(data_dir, split, records):
  with writer.ShardedWriter(data_dir, split, 2) as w:
    for record in records:
      w.write(record)
  report = writer.read_report(data_dir) or {}
  writer.write_report(
    data_dir, {"rows_per_split": {**report.get("rows_per_split", {}), split: len(records)}}
  )


def _examples(schema, rows, labelled=True, keys=None):
  out = []
  for i, (feats, labels, _) in enumerate(rows):
    example = example_codec.make_example(schema, feats, labels)
    if keys is not None:
      example.features.feature[features_lib.SAMPLE_ID_KEY].bytes_list.value[:] = [keys[i]]
    if not labelled:
      for step in schema.steps:
        del example.features.feature[features_lib.label_key(step)]
    out.append(example)
  return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  """A labelled dataset with sample ids (one not UTF-8) to train on, the
  same test rows unlabelled, and the same rows without ids."""
  root = tmp_path_factory.mktemp("prediction")
  labelled = str(root / "labelled")
  schema = _with_sample_ids(testdata.tiny_schema(labelled))
  schema.save(labelled)  # the tiny schema (and its vocabulary), with sample ids
  keys = [f"s{i},é".encode() for i in range(N_TEST)]
  keys[5] = BAD_KEY
  for split, n, seed in (("train", 96, 1), ("validation", 32, 3), ("test", N_TEST, 2)):
    rows = testdata.random_rows(schema, n, seed=seed)
    ids = keys if split == "test" else [f"{split}{i}".encode() for i in range(n)]
    records = [e.SerializeToString() for e in _examples(schema, rows, keys=ids)]
    _write(labelled, split, records)
  test_rows = testdata.random_rows(schema, N_TEST, seed=2)
  unlabelled = str(root / "unlabelled")
  _with_sample_ids(testdata.tiny_schema(unlabelled)).save(unlabelled)
  _write(
    unlabelled,
    "test",
    [e.SerializeToString() for e in _examples(schema, test_rows, labelled=False, keys=keys)],
  )
  no_ids = str(root / "no_ids")
  plain = testdata.tiny_schema(no_ids)
  _write(no_ids, "test", [e.SerializeToString() for e in _examples(plain, test_rows)])
  model_dir = str(root / "run")
  training.train(
    labelled,
    model_dir,
    config_lib.RunConfig.create(
      "esmm",
      hparams=dict(embedding_dim=4, tower_units=[4], seed=0),
      epochs=1,
      steps_per_epoch=2,
      batch_size=32,
      verbose=0,
    ),
  )
  return {"labelled": labelled, "unlabelled": unlabelled, "no_ids": no_ids, "model": model_dir}


@pytest.fixture(scope="module")
def model(dirs):
  return training.load_trained_model(dirs["model"])


def _read(path):
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _score(model, data_dir, path, batch_size=8):
  schema = model.input_schema
  source = prediction.ConvertedSplit(data_dir, "test")
  return prediction.predict_to_csv(
    source, prediction.model_scorer(model, schema), schema.steps, path, batch_size=batch_size
  )


def test_scores_are_the_models_own_with_sample_id_keys(dirs, model, tmp_path):
  path = str(tmp_path / "preds.csv")
  summary = _score(model, dirs["labelled"], path)
  assert (summary.rows, summary.key_column, summary.escaped_keys) == (N_TEST, "sample_id", 1)
  header, rows = _read(path)
  assert header == ["sample_id", "p_click", "q_click", "p_cart", "q_cart"]
  # Two shards, read in file order; the key not UTF-8 shows its bytes escaped.
  expected = {f"s{i},é" for i in range(N_TEST) if i != 5} | {"\\xffid\\xfe"}
  assert {r[0] for r in rows} == expected and len(rows) == N_TEST
  # The model's own predictions, through the evaluation path (ragged input).
  schema = training.model_dir_schema(dirs["model"])
  own = evaluation.predict_dataset(
    model,
    input_pipeline.make_dataset(dirs["labelled"], "test", 16, schema=schema, with_metadata=True),
    schema,
  )
  table = np.array([r[1:] for r in rows], dtype=np.float64)
  np.testing.assert_allclose(table[:, 0::2], own.p, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(table[:, 1::2], own.q, rtol=1e-6, atol=1e-7)
  assert [r[0] for r in rows] == own.sample_ids.tolist()
  assert os.listdir(tmp_path) == ["preds.csv"]


def test_unlabelled_rows_score_the_same_in_any_batch_size(dirs, model, tmp_path):
  _score(model, dirs["labelled"], str(tmp_path / "a.csv"), batch_size=8)
  _score(model, dirs["unlabelled"], str(tmp_path / "b.csv"), batch_size=N_TEST + 5)
  (header_a, rows_a), (header_b, rows_b) = (
    _read(str(tmp_path / "a.csv")),
    _read(str(tmp_path / "b.csv")),
  )
  assert header_a == header_b and [r[0] for r in rows_a] == [r[0] for r in rows_b]
  # Other batch sizes may round the last float32 bit differently.
  np.testing.assert_allclose(
    np.array([r[1:] for r in rows_a], np.float64),
    np.array([r[1:] for r in rows_b], np.float64),
    rtol=1e-6,
  )


def test_rows_without_ids_are_keyed_by_position(dirs, model, tmp_path):
  summary = _score(model, dirs["no_ids"], str(tmp_path / "c.csv"))
  header, rows = _read(str(tmp_path / "c.csv"))
  assert summary.key_column == "row" and header[0] == "row"
  assert [r[0] for r in rows] == [str(i) for i in range(N_TEST)]
  _, with_ids = _read(_score(model, dirs["labelled"], str(tmp_path / "d.csv")).path)
  assert [r[1:] for r in rows] == [r[1:] for r in with_ids]


def test_the_saved_model_scores_exactly_as_the_model(dirs, model, tmp_path):
  schema = training.model_dir_schema(dirs["model"])
  version = export.export_saved_model(model, schema, str(tmp_path / "export"))
  scorer = prediction.SavedModelScorer(str(tmp_path / "export"))  # the newest version
  assert scorer.path == version
  source = prediction.ConvertedSplit(dirs["unlabelled"], "test")
  scorer.check_inputs(source.schema)
  steps = scorer.steps(source.schema)
  assert steps == ["click", "cart"]
  prediction.predict_to_csv(source, scorer, steps, str(tmp_path / "served.csv"), batch_size=16)
  _score(model, dirs["labelled"], str(tmp_path / "model.csv"))
  assert _read(str(tmp_path / "served.csv")) == _read(str(tmp_path / "model.csv"))


def test_a_failing_batch_leaves_no_output_and_keeps_the_old_file(dirs, model, tmp_path):
  schema = training.model_dir_schema(dirs["model"])
  rows = testdata.random_rows(schema, 20, seed=7)
  examples = _examples(schema, rows)
  examples[13].features.feature["price"].float_list.value[:] = [math.nan, 0.0]
  bad = str(tmp_path / "bad")
  testdata.tiny_schema(bad)
  _write(bad, "test", [e.SerializeToString() for e in examples])
  path = str(tmp_path / "out.csv")
  with open(path, "w") as f:
    f.write("old\n")
  source = prediction.ConvertedSplit(bad, "test")
  with pytest.raises(
    ValueError, match=r"split 'test' rows 10 to 19: .*float inputs must be finite"
  ):
    prediction.predict_to_csv(
      source, prediction.model_scorer(model, schema), schema.steps, path, batch_size=10
    )
  assert open(path).read() == "old\n"
  assert sorted(os.listdir(tmp_path)) == ["bad", "out.csv"]


def test_data_without_a_field_the_model_reads_is_refused(dirs, tmp_path):
  schema = training.model_dir_schema(dirs["model"])
  fields = [f for f in schema.fields if f.name != "shop"]
  other = features_lib.Schema("other", fields, schema.steps)
  with pytest.raises(ValueError, match=r"^the model reads field 'shop', which the data's schema"):
    prediction.check_inputs(schema, other)
  wider = features_lib.Schema(
    "wider",
    [features_lib.FieldSpec("price", "dense", dim=3) if f.name == "price" else f for f in fields]
    + [schema.field("shop")],
    schema.steps,
  )
  with pytest.raises(ValueError, match=r"^field 'price' is dense of width 2 for the model but"):
    prediction.check_inputs(schema, wider)


def test_an_export_dir_without_versions_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"^no exported version in "):
    prediction.SavedModelScorer(str(tmp_path))
