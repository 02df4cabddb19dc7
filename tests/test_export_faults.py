"""Faults around the export and the served model: each case's exact outcome.

A killed export leaves a ``.tmp-<version>-*`` staging directory (never a
version directory); the next export into the same directory removes it, and
only it: not one a live export is writing, not a fresh one, not anything
else there. Versions are readable by another user (0755 / 0644).
"""

import os
import signal
import stat
import subprocess
import sys
import time

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf
from cli_runner import ROOT, subprocess_env

from tafe_tf import export, files
from tafe_tf import features as features_lib
from tafe_tf import models as models_lib


@pytest.fixture(scope="module")
def model_and_schema(tmp_path_factory):
  schema = td.tiny_schema(str(tmp_path_factory.mktemp("schema")))
  model = models_lib.build_model("esmm", schema, embedding_dim=4, tower_units=(8,), seed=0)
  model(features_lib.dummy_batch(schema), training=False)
  return model, schema


_STAGE = r"""
import sys
from tafe_tf import files
with files.atomic_directory(sys.argv[1]) as staging:
  open(staging + "/saved_model.pb", "w").write("half")
  print(staging, flush=True)
  sys.stdin.read()
"""


def _staging_writer(final):
  """A process inside files.atomic_directory(final); returns it and its
  staging directory."""
  proc = subprocess.Popen(
    [sys.executable, "-c", _STAGE, final],
    cwd=ROOT,
    env=subprocess_env(),
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  return proc, proc.stdout.readline().strip()


def _age(path, seconds=2 * files.STALE_AFTER_S):
  old = time.time() - seconds
  os.utime(path, (old, old))


def test_a_killed_export_leaves_staging_that_the_next_export_removes(model_and_schema, tmp_path):
  model, schema = model_and_schema
  export_dir = str(tmp_path / "export")
  killed, left = _staging_writer(os.path.join(export_dir, "7"))
  killed.send_signal(signal.SIGKILL)
  killed.wait(timeout=30)
  live, writing = _staging_writer(os.path.join(export_dir, "8"))
  try:
    young = os.path.join(export_dir, ".tmp-9-young")
    foreign = [os.path.join(export_dir, n) for n in (".tmp-notes", ".tmp-x-1", "keep")]
    for path in [young, *foreign]:
      os.makedirs(path)
    for path in [left, writing, *foreign]:
      _age(path)
    # A killed export never leaves a version: TF Serving sees nothing.
    assert export._versions(export_dir) == []
    path = export.export_saved_model(model, schema, export_dir, version=10)
    # Only the killed one: a live writer's (old as it is), a fresh one and
    # names not ours stay.
    assert not os.path.exists(left)
    for kept in [writing, young, *foreign]:
      assert os.path.isdir(kept), kept
    assert export._versions(export_dir) == [10]
    assert tf.saved_model.load(path).signatures[export.SERVING_DEFAULT] is not None
  finally:
    live.stdin.close()
    assert live.wait(timeout=30) == 0
  # The live writer finished: its version is whole and in place.
  assert open(os.path.join(export_dir, "8", "saved_model.pb")).read() == "half"
  assert not os.path.exists(writing)


def test_remove_stale_staging_matches_only_the_given_names(tmp_path):
  for name in (".tmp-1-a", ".tmp-12-b", ".tmp-x-c", ".tmp-1"):
    os.makedirs(tmp_path / name)
    _age(tmp_path / name)
  (tmp_path / ".tmp-2-file").write_text("a file, not a staging directory")
  removed = files.remove_stale_staging(str(tmp_path), export.STAGING_NAME)
  assert removed == [str(tmp_path / ".tmp-1-a"), str(tmp_path / ".tmp-12-b")]
  assert sorted(os.listdir(tmp_path)) == [".tmp-1", ".tmp-2-file", ".tmp-x-c"]
  assert files.remove_stale_staging(str(tmp_path / "absent"), export.STAGING_NAME) == []


def test_versions_are_readable_by_other_users(model_and_schema, tmp_path):
  model, schema = model_and_schema
  umask = os.umask(0o022)
  try:
    path = export.export_saved_model(model, schema, str(tmp_path / "export"), version=1)
  finally:
    os.umask(umask)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
  for root, dirs, names in os.walk(path):
    for d in dirs:
      assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o755, d
    for n in names:
      assert stat.S_IMODE(os.stat(os.path.join(root, n)).st_mode) & 0o044 == 0o044, n


def test_an_empty_request_is_answered_with_empty_outputs(model_and_schema, tmp_path):
  model, schema = model_and_schema
  path = export.export_saved_model(model, schema, str(tmp_path / "export"), version=1)
  serve = tf.saved_model.load(path).signatures[export.SERVING_DEFAULT]
  empty = {
    k: tf.zeros([0] + [1 if d is None else d for d in s.shape[1:]], s.dtype)
    for k, s in features_lib.serving_input_signature(schema).items()
  }
  outputs = serve(**empty)
  assert sorted(outputs) == sorted(
    [f"{kind}_{s}" for s in schema.steps for kind in ("p", "q")] + ["ctr", "cvr", "ctcvr"]
  )
  for name, value in outputs.items():
    assert value.shape == (0,), name
  examples = tf.saved_model.load(path).signatures[export.SERVING_EXAMPLES]
  assert np.asarray(examples(examples=tf.constant([], tf.string))["p_click"]).shape == (0,)
