"""tafe_tf.files: files and directories appear whole or not at all; strict JSON."""

import json
import os
import stat

import numpy as np
import pytest

from tafe_tf import files


def test_atomic_text_file_replaces_only_on_success(tmp_path):
  path = str(tmp_path / "sub" / "a.txt")
  with files.atomic_text_file(path) as f:
    f.write("first\n")
  with pytest.raises(RuntimeError, match="writer failed"):
    with files.atomic_text_file(path) as f:
      f.write("half of the second")
      raise RuntimeError("writer failed")
  assert open(path).read() == "first\n"
  assert os.listdir(tmp_path / "sub") == ["a.txt"]


def test_publish_and_discard_the_incomplete_name(tmp_path):
  path = str(tmp_path / "shard.tfrecord.gz")
  assert files.incomplete_path(path) == path + ".incomplete"
  with open(files.incomplete_path(path), "w") as f:
    f.write("records")
  assert files.publish(path) == path
  assert os.listdir(tmp_path) == ["shard.tfrecord.gz"]
  with open(files.incomplete_path(path), "w") as f:
    f.write("partial")
  files.discard(path)
  files.discard(path)  # nothing left to discard: no error
  assert os.listdir(tmp_path) == ["shard.tfrecord.gz"]
  assert open(path).read() == "records"


def test_atomic_directory_appears_whole(tmp_path):
  final = str(tmp_path / "export" / "7")
  with files.atomic_directory(final) as staging:
    assert os.path.basename(staging).startswith(".tmp-7-")
    assert os.path.dirname(staging) == str(tmp_path / "export")
    assert not os.path.exists(final)
    with open(os.path.join(staging, "saved_model.pb"), "w") as f:
      f.write("graph")
  assert os.listdir(tmp_path / "export") == ["7"]
  assert os.listdir(final) == ["saved_model.pb"]


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
  final = str(tmp_path / "8")
  with pytest.raises(OSError, match="disk full"):
    with files.atomic_directory(final) as staging:
      with open(os.path.join(staging, "variables"), "w") as f:
        f.write("half")
      raise OSError("disk full")
  assert os.listdir(tmp_path) == []


def test_atomic_directory_never_replaces_an_existing_one(tmp_path):
  final = tmp_path / "9"
  final.mkdir()  # empty: os.rename alone would replace it
  with pytest.raises(FileExistsError, match=f"{final} already exists"):
    with files.atomic_directory(str(final)) as staging:
      with open(os.path.join(staging, "new"), "w") as f:
        f.write("x")
  assert os.listdir(tmp_path) == ["9"]
  assert os.listdir(final) == []


def test_json_is_strict_and_plain(tmp_path):
  obj = {
    "b": float("nan"),
    "a": [np.float32(0.5), np.int64(3), np.bool_(True), float("-inf")],
    "c": np.arange(3),
    "d": (1, "x"),
  }
  assert files.json_safe(obj) == {
    "b": None,
    "a": [0.5, 3, True, None],
    "c": [0, 1, 2],
    "d": [1, "x"],
  }
  path = files.write_json_atomic(str(tmp_path / "r.json"), obj)
  text = open(path).read()
  assert text.startswith('{\n  "a"')  # keys sorted, indented
  assert "NaN" not in text and "Infinity" not in text
  assert files.read_json(path) == json.loads(json.dumps(files.json_safe(obj)))


def test_atomic_directory_gets_the_usual_mode_not_mkdtemps_0700(tmp_path):
  # A TF Serving process running as another user must be able to read exports.
  umask = os.umask(0o022)
  try:
    final = str(tmp_path / "1")
    with files.atomic_directory(final) as staging:
      with open(os.path.join(staging, "saved_model.pb"), "w") as f:
        f.write("x")
    assert stat.S_IMODE(os.stat(final).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.join(final, "saved_model.pb")).st_mode) == 0o644
  finally:
    os.umask(umask)
