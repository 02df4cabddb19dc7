"""Your own columns from the command line: --infer_spec, then convert -> train
-> predict -> export with the README's commands; bad specs and flags are one
line on stderr, exit 2."""

import csv
import json
import os
import random

import pytest
from cli_runner import run_module

# Columns of a user's own naming: a key, a user, two id columns (one of
# strings), a weighted list, a dense value, an ignored column, two labels.
HEADER = "request_id,uid,item,city,tags,price,comment,is_click,is_buy"


def _rows(n, start, seed):
  rnd = random.Random(seed)
  lines = []
  for i in range(n):
    click = rnd.random() < 0.4
    buy = click and rnd.random() < 0.4
    tags = "|".join(
      f"{rnd.randint(1, 9)}:{rnd.randint(1, 4) / 2}" for _ in range(rnd.randint(0, 3))
    )
    lines.append(
      f"q{start + i},{rnd.randint(1, 40)},{rnd.randint(100, 120)},"
      f"{rnd.choice(['paris', 'rome', 'oslo'])},{tags},{rnd.random() * 10:.3f},"
      f"{rnd.choice(['ok', 'late'])},{int(click)},{int(buy)}"
    )
  return lines


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  raw_dir = tmp_path_factory.mktemp("raw")
  train = _rows(240, 0, seed=1)
  # Planted bad lines: wrong column count, an unparsable number, a buy
  # without a click, a missing key (train.csv lines 3-6).
  bad = [
    "q900,1,100,rome,1:1,2.0,ok,1",
    "q901,1,100,rome,1:1,two,ok,0,0",
    "q902,1,100,rome,1:1,2.0,ok,0,1",
    ",1,100,rome,1:1,2.0,ok,0,0",
  ]
  with open(raw_dir / "train.csv", "w") as f:
    f.write("\n".join([HEADER, train[0]] + bad + train[1:]) + "\n")
  with open(raw_dir / "test.csv", "w") as f:
    f.write("\n".join([HEADER] + _rows(30, 1000, seed=2)) + "\n")
  return raw_dir


def test_infer_spec_writes_a_proposal_and_says_why(raw, tmp_path):
  spec = str(tmp_path / "spec.json")
  result = run_module(
    "launch.convert", "--format=csv", "--infer_spec", f"--raw_dir={raw}", f"--spec={spec}"
  )
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert [line.split(":")[0] for line in lines[:-1]] == HEADER.split(",")
  assert lines[-1].startswith(f"wrote {spec} from 244 rows of {raw / 'train.csv'}: edit it")
  with open(spec) as f:
    proposal = json.load(f)
  assert proposal == {
    "name": "custom",
    "delimiter": ",",
    "files": {"train": "train.csv", "test": "test.csv"},
    "id_columns": [
      "uid",
      "item",
      {"column": "city", "hash": True},
      {"column": "comment", "hash": True},
    ],
    "list_columns": [{"column": "tags", "weights": "inline", "separator": "|"}],
    "dense_columns": ["price"],
    "steps": [{"name": "click", "column": "is_click"}, {"name": "buy", "column": "is_buy"}],
    "key_column": "request_id",
    "group_column": "uid",
    "user_column": "uid",
  }
  again = run_module(
    "launch.convert", "--format=csv", "--infer_spec", f"--raw_dir={raw}", f"--spec={spec}"
  )
  assert again.returncode == 2
  assert again.stderr.splitlines() == [
    f"convert.py: error: --spec={spec} exists: remove it or give another path"
  ]


@pytest.mark.slow
def test_convert_train_predict_export(raw, tmp_path):
  spec_path = str(tmp_path / "spec.json")
  with open(spec_path, "w") as f:
    json.dump(
      {
        "files": {"train": "train.csv", "test": "test.csv"},
        "id_columns": ["uid", "item", {"column": "city", "hash": True}],
        "list_columns": [{"column": "tags", "separator": "|", "weights": "inline"}],
        "dense_columns": ["price"],
        "steps": [{"name": "click", "column": "is_click"}, {"name": "buy", "column": "is_buy"}],
        "key_column": "request_id",
        "user_column": "uid",
      },
      f,
    )
  data = str(tmp_path / "data")
  convert = run_module(
    "launch.convert",
    "--format=csv",
    f"--spec={spec_path}",
    "--steps=click:is_click,purchase:is_buy",  # a flag replaces the spec's key
    "--group_column=uid",
    f"--raw_dir={raw}",
    f"--out_dir={data}",
    "--min_count=0",
    "--validation_fraction=0.3",
    "--num_shards=2",
  )
  assert convert.returncode == 0, convert.stderr
  summary = json.loads(convert.stdout.strip().splitlines()[-1])
  assert summary["skipped"] == {
    "bad_value": 1,
    "missing_key": 1,
    "purchase_without_click": 1,
    "wrong_field_count": 1,
  }
  assert summary["rows_written"] == 240 + 30
  model_dir = str(tmp_path / "run")
  train = run_module(
    "launch.train",
    "--model=tafe",
    "--dataset=tfrecord",
    f"--data_dir={data}",
    f"--model_dir={model_dir}",
    "--epochs=1",
    "--batch_size=32",
    "--embedding_dim=4",
    "--noevaluate",
    "--noexport",
  )
  assert train.returncode == 0, train.stderr[-3000:]
  preds = str(tmp_path / "preds.csv")
  predict = run_module(
    "launch.predict", f"--model_dir={model_dir}", f"--input={data}", f"--output={preds}"
  )
  assert predict.returncode == 0, predict.stderr[-3000:]
  with open(preds, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["sample_id", "p_click", "q_click", "p_purchase", "q_purchase"]
  assert sorted(r[0] for r in rows[1:]) == sorted(f"q{1000 + i}" for i in range(30))
  assert all(0.0 < float(v) < 1.0 for r in rows[1:] for v in r[1:])
  export = run_module(
    "launch.export", f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'export'}"
  )
  assert export.returncode == 0, export.stderr[-3000:]
  versions = os.listdir(tmp_path / "export")
  assert len(versions) == 1 and versions[0].isdigit()


@pytest.mark.parametrize(
  "spec, flags, message",
  [
    (
      {"files": {"train": "train.csv"}, "id_columns": ["uid"], "steps": [], "color": "red"},
      [],
      "{spec}: color: unknown key (known: name, delimiter, files, id_columns,",
    ),
    (None, ["--id_columns=uid", "--list_columns=tags"], "--list_columns: 'tags' is not column:"),
  ],
)
def test_bad_specs_and_flags_are_one_line(raw, tmp_path, spec, flags, message):
  spec_path = str(tmp_path / "spec.json")
  args = ["--format=csv", f"--raw_dir={raw}", f"--out_dir={tmp_path / 'out'}", *flags]
  if spec is not None:
    with open(spec_path, "w") as f:
      json.dump(spec, f)
    args.append(f"--spec={spec_path}")
  result = run_module("launch.convert", *args)
  assert result.returncode == 2, result.stderr
  assert len(result.stderr.splitlines()) == 1, result.stderr
  assert message.format(spec=spec_path, raw=raw) in result.stderr
  assert not os.path.exists(tmp_path / "out" / "report.json")
