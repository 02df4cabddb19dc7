"""Faults around the trainer and the evaluation: each case's exact outcome.

A second training into a busy model directory, a schema that does not
describe the shards, a corrupt shard, labels that are not cumulative, missing
validation shards, sample ids that are not UTF-8 or repeat, and the empty
``backup/`` a finished run used to leave. Each is a one-line error naming the
file (or directory, or example) and nothing that looks complete is left.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from cli_runner import ROOT, module_command, run_module, subprocess_env

from tafe_tf import config as config_lib
from tafe_tf import evaluation, input_pipeline, training
from tafe_tf import features as features_lib
from tafe_tf.data import synthetic, writer

TINY = dict(embedding_dim=4, tower_units=(8,), seed=0)
TINY_FLAGS = ["--model=esmm", "--embedding_dim=4", "--tower_units=8", "--dataset=tfrecord"]


def _run_config(**settings):
  settings = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 64, "verbose": 0, **settings}
  return config_lib.RunConfig.create("esmm", hparams=TINY, **settings)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_dataset(
    out,
    synthetic.SyntheticConfig(seed=3),
    num_train=600,
    num_validation=200,
    num_test=200,
    num_shards=2,
  )
  return out


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
  """A finished tiny run on ``dataset``."""
  model_dir = str(tmp_path_factory.mktemp("trained") / "run")
  training.train(dataset, model_dir, _run_config())
  return model_dir


def _copy(dataset, tmp_path):
  out = str(tmp_path / "data")
  shutil.copytree(dataset, out)
  return out


def _records(data_dir, split):
  paths = input_pipeline.list_split_files(data_dir, split)
  return [
    r.numpy() for r in tf.data.TFRecordDataset(paths, compression_type=input_pipeline.COMPRESSION)
  ]


def _rewrite_split(data_dir, split, edit):
  """Rewrites ``split`` as one shard, ``edit(index, example)`` applied to
  every record, and the report's manifest with it; returns the shard."""
  examples = [tf.train.Example.FromString(r) for r in _records(data_dir, split)]
  for path in input_pipeline.list_split_files(data_dir, split):
    os.remove(path)
  with writer.ShardedWriter(data_dir, split, 1) as w:
    for i, example in enumerate(examples):
      edit(i, example)
      w.write(example.SerializeToString())
  report = writer.read_report(data_dir)
  writer.write_report(data_dir, {k: v for k, v in report.items() if k != "shards"})
  return input_pipeline.list_split_files(data_dir, split)[0]


def _edit_schema(data_dir, change):
  path = os.path.join(data_dir, "schema.json")
  schema = json.load(open(path))
  change(schema)
  with open(path, "w") as f:
    json.dump(schema, f)


def _one_line(proc):
  """The one error line of a command that failed as a user error (exit 2, no
  traceback; TensorFlow's start-up banner aside)."""
  errors = [l for l in proc.stderr.splitlines() if ": error: " in l]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return errors[0]


# --- item 8: one training per model directory -----------------------------------


def test_a_second_training_into_the_same_model_dir_fails_at_once(dataset, tmp_path):
  # Before: both exited 0 and interleaved history.csv (a second header).
  model_dir = str(tmp_path / "run")
  flags = [
    f"--data_dir={dataset}",
    f"--model_dir={model_dir}",
    "--steps_per_epoch=100000",
    "--batch_size=8",
    "--evaluate=false",
    "--export=false",
    *TINY_FLAGS,
  ]
  first = subprocess.Popen(
    module_command("launch.train", *flags),
    cwd=ROOT,
    env=subprocess_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  lock = os.path.join(model_dir, training.LOCK_FILENAME)
  try:
    deadline = time.time() + 120
    while time.time() < deadline and not (
      os.path.exists(os.path.join(model_dir, "run.json"))
      and open(lock).read().strip() == str(first.pid)
    ):
      assert first.poll() is None
      time.sleep(0.2)
    started = time.time()
    second = run_module("launch.train", *flags)
    took = time.time() - started
    assert _one_line(second) == (
      f"train.py: error: {model_dir} is in use by a training, pid {first.pid}: one process "
      "at a time trains into a model directory; wait for it to finish, or use another "
      "--model_dir"
    )
    assert took < 60  # at once: no data read, no model built (the import is most of it)
    assert first.poll() is None  # the first one trains on, undisturbed
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
  # The kernel released the killed holder's lock: nothing blocks the next run.
  with training.model_dir_lock(model_dir):
    assert open(lock).read().strip() == str(os.getpid())
  assert open(lock).read() == ""


_HOLD = r"""
import sys
from tafe_tf import training
with training.model_dir_lock(sys.argv[1], shared=sys.argv[2] == "shared"):
  print("held", flush=True)
  sys.stdin.read()
"""


def _holder(model_dir, mode):
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLD, model_dir, mode],
    cwd=ROOT,
    env=subprocess_env(),
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  assert proc.stdout.readline() == "held\n"
  return proc


def test_readers_share_the_lock_and_training_excludes_them(tmp_path):
  model_dir = str(tmp_path / "run")
  busy = (
    "{} is in use by {}: one process at a time trains into a model directory; wait for "
    "it to finish, or use another --model_dir"
  )
  trainer = _holder(model_dir, "exclusive")
  try:
    for shared in (True, False):
      with pytest.raises(
        ValueError, match=re.escape(busy.format(model_dir, f"a training, pid {trainer.pid}"))
      ):
        with training.model_dir_lock(model_dir, shared=shared):
          pass
  finally:
    trainer.kill()
    trainer.wait()
  reader = _holder(model_dir, "shared")
  try:
    with training.model_dir_lock(model_dir, shared=True):  # readers at once: fine
      pass
    with pytest.raises(
      ValueError, match=re.escape(busy.format(model_dir, "an evaluation or export"))
    ):
      with training.model_dir_lock(model_dir):
        pass
  finally:
    reader.stdin.close()
    assert reader.wait(timeout=30) == 0
  # Reentrant within a process (launch.train holds it around training.train).
  with training.model_dir_lock(model_dir):
    with training.model_dir_lock(model_dir):
      pass
    assert open(os.path.join(model_dir, training.LOCK_FILENAME)).read().strip() == str(os.getpid())


@pytest.mark.slow  # launch.* subprocesses; the library-level cases run by default
def test_evaluate_and_export_refuse_a_model_dir_being_trained(trained, tmp_path):
  with training.model_dir_lock(trained):  # this process "trains"
    evaluate = run_module("launch.evaluate", f"--model_dir={trained}")
    export = run_module(
      "launch.export", f"--model_dir={trained}", f"--export_dir={tmp_path}/export"
    )
  for program, proc in (("evaluate.py", evaluate), ("export.py", export)):
    assert _one_line(proc) == (
      f"{program}: error: {trained} is in use by a training, pid {os.getpid()}: one "
      "process at a time trains into a model directory; wait for it to finish, or use "
      "another --model_dir"
    )
  assert not os.path.exists(tmp_path / "export")


# --- item 13: bad data fails before training, in one line naming the file --------


@pytest.mark.parametrize(
  "change,problem",
  [
    # The case: plain ids under a weighted_ids declaration.
    (
      lambda f: dict(f, kind="weighted_ids"),
      "weighted_ids field '{name}' holds 1 ids but 0 weights in '{name}_weight' (one "
      "weight per id)",
    ),
    (
      lambda f: {"name": f["name"], "kind": "dense", "dim": 1},
      "'{name}' is int64_list, the schema reads float_list",
    ),
  ],
)
def test_a_schema_that_does_not_fit_the_shards_fails_before_training(
  dataset, tmp_path, change, problem
):
  data_dir = _copy(dataset, tmp_path)
  schema = json.load(open(os.path.join(data_dir, "schema.json")))
  index = next(i for i, f in enumerate(schema["fields"]) if f["kind"] == "id")
  name = schema["fields"][index]["name"]
  _edit_schema(data_dir, lambda s: s["fields"].__setitem__(index, change(s["fields"][index])))
  shard = input_pipeline.list_split_files(data_dir, "train")[0]
  model_dir = str(tmp_path / "run")
  with pytest.raises(ValueError) as e:
    training.train(data_dir, model_dir, _run_config())
  assert str(e.value) == (
    f"{shard}: record 0 does not match the schema ({problem.format(name=name)}); the "
    "schema.json is not the one these shards were written with"
  )
  assert not os.path.exists(model_dir)


def test_a_dense_field_of_another_width_is_named(dataset, tmp_path):
  data_dir = _copy(dataset, tmp_path)
  schema = json.load(open(os.path.join(data_dir, "schema.json")))
  name, dim = next((f["name"], f["dim"]) for f in schema["fields"] if f["kind"] == "dense")
  _edit_schema(
    data_dir, lambda s: next(f for f in s["fields"] if f["name"] == name).update(dim=dim + 1)
  )
  shard = input_pipeline.list_split_files(data_dir, "train")[0]
  with pytest.raises(ValueError) as e:
    training.train(data_dir, str(tmp_path / "run"), _run_config())
  assert str(e.value) == (
    f"{shard}: record 0 does not match the schema ('{name}' holds {dim} values, the "
    f"schema says {dim + 1}); the schema.json is not the one these shards were written with"
  )


@pytest.mark.slow  # launch.* subprocesses; the library-level cases run by default
def test_cli_schema_mismatch_and_missing_validation_shards_are_one_line(dataset, tmp_path):
  # Before: "condition [512], then [0] must be broadcastable" and a
  # FileNotFoundError traceback.
  data_dir = _copy(dataset, tmp_path)
  _edit_schema(
    data_dir,
    lambda s: next(f for f in s["fields"] if f["name"] == "user_id").update(kind="weighted_ids"),
  )
  # launch.train checks the test split it will evaluate first.
  shard = input_pipeline.list_split_files(data_dir, "test")[0]
  proc = run_module(
    "launch.train", f"--data_dir={data_dir}", f"--model_dir={tmp_path}/a", *TINY_FLAGS
  )
  assert _one_line(proc) == (
    f"train.py: error: {shard}: record 0 does not match the schema (weighted_ids field "
    "'user_id' holds 1 ids but 0 weights in 'user_id_weight' (one weight per id)); the "
    "schema.json is not the one these shards were written with"
  )
  assert not os.path.exists(tmp_path / "a" / "run.json")
  data_dir = _copy(dataset, tmp_path / "again")
  gone = input_pipeline.list_split_files(data_dir, "validation")
  for path in gone:
    os.remove(path)
  proc = run_module(
    "launch.train", f"--data_dir={data_dir}", f"--model_dir={tmp_path}/b", *TINY_FLAGS
  )
  assert _one_line(proc) == (
    f"train.py: error: {gone[0]}: listed in report.json but missing; convert again"
  )
  assert not os.path.exists(tmp_path / "b" / "run.json")


def test_a_shard_that_is_not_gzip_fails_before_training(dataset, tmp_path):
  data_dir = _copy(dataset, tmp_path)
  shard = input_pipeline.list_split_files(data_dir, "validation")[0]
  data = bytearray(open(shard, "rb").read())
  data[:4] = b"JUNK"
  open(shard, "wb").write(bytes(data))
  with pytest.raises(ValueError) as e:
    training.train(data_dir, str(tmp_path / "run"), _run_config())
  assert str(e.value) == (
    f"{shard}: not a readable gzip TFRecord file (Not a gzipped file (b'JU'))"
  )


def test_a_corrupt_shard_is_named(dataset, tmp_path):
  # Before: DataLossError "corrupted record at N" naming no file.
  data_dir = _copy(dataset, tmp_path)
  shard = input_pipeline.list_split_files(data_dir, "train")[1]
  data = bytearray(open(shard, "rb").read())
  middle = len(data) // 2
  data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
  open(shard, "wb").write(bytes(data))  # same size: the manifest check passes
  model_dir = str(tmp_path / "run")
  with pytest.raises(ValueError) as e:
    training.train(data_dir, model_dir, _run_config(steps_per_epoch=30))
  assert re.fullmatch(
    re.escape(shard) + r": corrupt, records from \d+ on cannot be read \(.+\); convert again",
    str(e.value),
  ), str(e.value)
  assert not os.path.exists(os.path.join(model_dir, training.TRAIN_REPORT_FILENAME))


# --- item 14: labels inside TFRecords --------------------------------------------


@pytest.mark.parametrize(
  "labels,shown",
  [
    ({"click": 0, "purchase": 1}, "label/click = 0, label/purchase = 1"),  # buy, no click
    ({"click": 2, "purchase": 0}, "label/click = 2, label/purchase = 0"),
  ],
)
def test_labels_that_are_not_0_1_or_not_cumulative_are_named(dataset, tmp_path, labels, shown):
  # Before: a buy without a click trained silently.
  data_dir = _copy(dataset, tmp_path)
  bad = 7

  def edit(i, example):
    if i == bad:
      for step, value in labels.items():
        example.features.feature[f"label/{step}"].int64_list.value[:] = [value]

  shard = _rewrite_split(data_dir, "train", edit)
  with pytest.raises(ValueError) as e:  # 10 steps of 64 read all 600 rows
    training.train(data_dir, str(tmp_path / "run"), _run_config(steps_per_epoch=10))
  assert str(e.value) == (
    f"{shard}: record {bad}: {shown}; labels must be 0 or 1 and cumulative (a step "
    "happens only after the one before it)"
  )


@pytest.mark.slow  # launch.* subprocesses; the library-level cases run by default
def test_evaluation_names_a_bad_label_in_the_test_split(dataset, trained, tmp_path):
  data_dir = _copy(dataset, tmp_path)

  def edit(i, example):
    if i == 150:
      example.features.feature["label/purchase"].int64_list.value[:] = [1]
      example.features.feature["label/click"].int64_list.value[:] = [0]

  shard = _rewrite_split(data_dir, "test", edit)
  proc = run_module(
    "launch.evaluate", f"--model_dir={trained}", f"--data_dir={data_dir}", "--split=test"
  )
  assert _one_line(proc) == (
    f"evaluate.py: error: --split=test: {shard}: record 150: label/click = 0, "
    "label/purchase = 1; labels must be 0 or 1 and cumulative (a step happens only after "
    "the one before it)"
  )
  assert not os.path.exists(os.path.join(trained, "eval", "test.json"))


# --- items 13, 14: sample ids ----------------------------------------------------


def _predict(trained, data_dir):
  model = training.load_trained_model(trained)
  schema = training.model_dir_schema(trained)
  ds = input_pipeline.make_dataset(data_dir, "test", 64, schema=schema, with_metadata=True)
  return evaluation.predict_dataset(model, ds, schema)


def test_repeated_sample_ids_are_one_line(dataset, trained, tmp_path):
  # Before: duplicates passed silently.
  data_dir = _copy(dataset, tmp_path)

  def edit(i, example):
    if i in (10, 99, 120):
      example.features.feature[features_lib.SAMPLE_ID_KEY].bytes_list.value[:] = [b"dup"]

  _rewrite_split(data_dir, "test", edit)
  with pytest.raises(ValueError) as e:
    _predict(trained, data_dir)
  assert str(e.value) == (
    "sample_id 'dup' occurs 3 times (first at example 10; 1 ids repeat): sample ids must be unique"
  )


def test_a_sample_id_not_utf8_keeps_its_bytes_escaped(dataset, trained, tmp_path):
  # Before: a UnicodeDecodeError traceback in launch.evaluate.
  data_dir = _copy(dataset, tmp_path)

  def edit(i, example):
    if i == 42:
      example.features.feature[features_lib.SAMPLE_ID_KEY].bytes_list.value[:] = [b"\xff\xfe-42"]

  _rewrite_split(data_dir, "test", edit)
  ids = _predict(trained, data_dir).sample_ids.tolist()
  assert ids.count("\\xff\\xfe-42") == 1 and len(set(ids)) == 200


def test_clean_sample_ids_pass(dataset, trained):
  predictions = _predict(trained, dataset)
  assert sorted(predictions.sample_ids.tolist()) == [f"test-{i:08d}" for i in range(200)]


# --- item 14: the empty backup/ ---------------------------------------------------


def test_no_empty_backup_is_left_and_a_stale_one_is_removed(trained):
  backup = os.path.join(trained, training.BACKUP_DIRNAME)
  assert not os.path.exists(backup)  # removed when training ended
  os.makedirs(backup)  # as a finished run of an older version left it
  result = training.train(training.read_run_config(trained).data.data_dir, trained, _run_config())
  assert result.already_finished
  assert not os.path.exists(backup)
  # A backup with state in it is never removed (a resume may need it).
  os.makedirs(os.path.join(backup, "chief"))
  training.train(training.read_run_config(trained).data.data_dir, trained, _run_config())
  assert os.path.isdir(os.path.join(backup, "chief"))
  shutil.rmtree(backup)
