r"""Soak: conversion and training killed at random moments, rerun, compared.

The library behind ``launch.benchmark_soak``. It writes one small realistic
member (:func:`tafe_tf.data.realistic.write_member`), then

1. reference: converts it once with ``launch.convert --format=ali_ccp`` and
   trains ESMM on that with ``launch.train`` (2 epochs, a checkpoint every 5
   steps, no shuffle, ``TF_DETERMINISTIC_OPS=1``), each uninterrupted, in a
   child process; their wall times are the kill windows;
2. each round, for each stage: starts the same command into a fresh folder
   (convert: a new out dir; train: a new model dir on the reference data), kills
   its whole process group with SIGKILL at a moment drawn uniformly from the
   reference run's duration, reruns the same command into the same folder
   (``kills`` times, fewer when a run finishes before its kill moment), then
   reruns it once more without a kill, to the end;
3. compares each round's final output with the reference: the conversion's
   ``report.json`` (all but ``seconds``), every shard's records as a multiset
   (a SHA-256 of the sorted record digests) and the schema and vocabulary
   files byte for byte; the training's ``train_report.json`` step counts and
   kept epoch, and the kept model's p and q on the reference test split
   (max abs difference against ``tolerance``).

A kill that leaves a process of its group alive, a rerun that fails, or a
final output that differs is reported, not hidden: the result says which
round and stage, and ``ok`` is false.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import evaluation, files, input_pipeline, training
from tafe_tf import features as features_lib
from tafe_tf.data import realistic

MEMBER = "base"
STAGES = ("convert", "train")
# Keys of report.json that may differ between equal conversions.
VOLATILE_REPORT_KEYS = ("seconds",)
SHARD_SUFFIX = ".tfrecord.gz"
# Seconds a killed process group may take to vanish.
_REAP_S = 10.0


def draw_kill_time(rng: np.random.Generator, duration_s: float) -> float:
  """A kill moment, seconds after the start, uniform in ``[0, duration_s)``."""
  if not duration_s > 0:
    raise ValueError(f"duration_s must be > 0, got {duration_s}")
  return float(rng.uniform(0.0, duration_s))


def run_attempt(
  command: Sequence[str],
  log_path: str,
  kill_after_s: Optional[float] = None,
  env: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
  """Runs ``command`` in its own process group, output appended to ``log_path``.

  With ``kill_after_s``, the whole group gets SIGKILL that many seconds after
  the start unless the command ends first.

  Returns:
    ``killed`` (bool), ``returncode`` (None when killed), ``seconds``.

  Raises:
    RuntimeError: A process of the killed group outlived the kill by
      ``_REAP_S`` seconds (say a worker that left its group).
  """
  with open(log_path, "ab") as log:
    log.write(f"\n$ {' '.join(command)}  (kill after {kill_after_s} s)\n".encode())
    log.flush()
    start = time.perf_counter()
    process = subprocess.Popen(
      list(command),
      stdout=log,
      stderr=subprocess.STDOUT,
      env=dict(env) if env is not None else None,
      start_new_session=True,  # its own group: the kill reaches its workers
    )
    try:
      returncode = process.wait(timeout=kill_after_s)
      return {"killed": False, "returncode": returncode, "seconds": time.perf_counter() - start}
    except subprocess.TimeoutExpired:
      pass
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    seconds = time.perf_counter() - start
    log.write(f"--- killed after {seconds:.2f} s\n".encode())
  _wait_group_gone(process.pid)
  return {"killed": True, "returncode": None, "seconds": seconds}


def _wait_group_gone(pgid: int) -> None:
  deadline = time.monotonic() + _REAP_S
  while True:
    try:
      os.killpg(pgid, 0)
    except ProcessLookupError:
      return
    if time.monotonic() > deadline:
      raise RuntimeError(f"process group {pgid} still has processes {_REAP_S} s after SIGKILL")
    time.sleep(0.05)


def _tail(path: str, lines: int = 5) -> str:
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-lines:]).strip()


def soak_stage(
  command: Sequence[str],
  log_path: str,
  rng: np.random.Generator,
  duration_s: float,
  kills: int,
  env: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
  """Runs ``command`` killed up to ``kills`` times, then once to the end.

  Each attempt gets a kill moment from :func:`draw_kill_time`; an attempt
  that ends before it counts as finished (no more kills). A finished attempt
  with a nonzero exit status is a failure.

  Returns:
    ``kills`` delivered, ``kill_times_s`` drawn for them, ``attempts``,
    ``returncode`` of the last attempt, ``failed`` (its output tail when it
    failed, else None), ``seconds`` in all.
  """
  delivered: List[float] = []
  attempts = 0
  seconds = 0.0
  result: Dict[str, Any] = {}
  for _ in range(kills):
    kill_at = draw_kill_time(rng, duration_s)
    attempts += 1
    result = run_attempt(command, log_path, kill_at, env)
    seconds += result["seconds"]
    if not result["killed"]:
      break
    delivered.append(round(kill_at, 3))
  if not attempts or result["killed"]:
    attempts += 1
    result = run_attempt(command, log_path, None, env)
    seconds += result["seconds"]
  failed = None if result["returncode"] == 0 else _tail(log_path)
  return {
    "kills": len(delivered),
    "kill_times_s": delivered,
    "attempts": attempts,
    "returncode": result["returncode"],
    "failed": failed,
    "seconds": round(seconds, 3),
  }


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def records_digest(records: Sequence[bytes]) -> str:
  """SHA-256 over the sorted SHA-256 digests of ``records``: equal for equal
  multisets of records, whatever their order."""
  digests = sorted(hashlib.sha256(r).digest() for r in records)
  return hashlib.sha256(b"".join(digests)).hexdigest()


def dataset_fingerprint(data_dir: str) -> Dict[str, Dict[str, Any]]:
  """What a converted dataset holds, by file name (relative to ``data_dir``).

  Shards (``*.tfrecord.gz``): ``records`` and ``digest``
  (:func:`records_digest`, so order inside a shard does not matter);
  ``schema.json`` and every file under ``vocab/``: ``sha256`` of the bytes.
  """
  out: Dict[str, Dict[str, Any]] = {}
  for name in sorted(os.listdir(data_dir)):
    path = os.path.join(data_dir, name)
    if name.endswith(SHARD_SUFFIX):
      records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
      out[name] = {"records": len(records), "digest": records_digest(records)}
  schema = features_lib.SCHEMA_FILENAME
  out[schema] = {"sha256": _sha256(os.path.join(data_dir, schema))}
  vocab_dir = os.path.join(data_dir, "vocab")
  if os.path.isdir(vocab_dir):
    for name in sorted(os.listdir(vocab_dir)):
      out[f"vocab/{name}"] = {"sha256": _sha256(os.path.join(vocab_dir, name))}
  return out


def compare_mappings(
  reference: Mapping[str, Any], got: Mapping[str, Any], ignore: Sequence[str] = ()
) -> List[str]:
  """Top-level keys whose values differ (missing on one side included),
  sorted, ``ignore`` left out; ``[]`` when equal."""
  keys = (set(reference) | set(got)) - set(ignore)
  return sorted(k for k in keys if reference.get(k, _MISSING) != got.get(k, _MISSING))


_MISSING = object()


def prediction_difference(
  reference_ids: Sequence[str], reference: np.ndarray, got_ids: Sequence[str], got: np.ndarray
) -> float:
  """Max abs difference of two prediction arrays (``[N, K]``) matched by id.

  Raises:
    ValueError: The ids differ (as sets), repeat, or do not match the rows.
  """
  reference, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
  for ids, values, what in ((reference_ids, reference, "reference"), (got_ids, got, "got")):
    if len(ids) != len(values):
      raise ValueError(f"{what}: {len(ids)} ids for {len(values)} rows")
    if len(set(ids)) != len(ids):
      raise ValueError(f"{what}: repeated ids")
  if set(reference_ids) != set(got_ids):
    only = sorted(set(reference_ids) ^ set(got_ids))
    raise ValueError(f"the ids differ: {len(only)} on one side only, e.g. {only[0]!r}")
  if reference.shape[1:] != got.shape[1:]:
    raise ValueError(f"shapes differ: {reference.shape} and {got.shape}")
  if not len(reference_ids):
    return 0.0
  order_ref, order_got = np.argsort(np.asarray(reference_ids)), np.argsort(np.asarray(got_ids))
  return float(np.max(np.abs(reference[order_ref] - got[order_got])))


def predict(model_dir: str, data_dir: str, split: str = "test") -> Tuple[List[str], np.ndarray]:
  """Sample ids and ``[N, 2T]`` predictions (p then q per step) of the model
  kept in ``model_dir`` on ``data_dir``'s ``split``."""
  model = training.load_trained_model(model_dir)
  schema = training.model_dir_schema(model_dir)
  dataset = input_pipeline.make_dataset(data_dir, split, 4096, schema=schema, with_metadata=True)
  predictions = evaluation.predict_dataset(model, dataset, schema)
  tf.keras.backend.clear_session()
  return [str(s) for s in predictions.sample_ids], np.concatenate(
    [predictions.p, predictions.q], axis=1
  )


def convert_command(raw_dir: str, out_dir: str) -> List[str]:
  """``launch.convert`` of the raw member into ``out_dir``."""
  return [
    sys.executable,
    "-m",
    "tafe_tf.launch.convert",
    "--format=ali_ccp",
    f"--raw_dir={raw_dir}",
    f"--out_dir={out_dir}",
  ]


def train_command(data_dir: str, model_dir: str) -> List[str]:
  """``launch.train`` of ESMM, deterministic enough to compare: no shuffle,
  a checkpoint every 5 steps (so that kills land between checkpoints)."""
  return [
    sys.executable,
    "-m",
    "tafe_tf.launch.train",
    "--dataset=ali_ccp",
    f"--data_dir={data_dir}",
    f"--model_dir={model_dir}",
    "--model=esmm",
    "--epochs=2",
    "--checkpoint_every_steps=5",
    "--noshuffle",
    "--noexport",
    "--noevaluate",
    "--verbose=0",
  ]


def child_env() -> Dict[str, str]:
  """This process's environment with deterministic TensorFlow ops."""
  return dict(os.environ, TF_DETERMINISTIC_OPS="1", PYTHONHASHSEED="0")


_TRAIN_REPORT_KEYS = ("optimizer_steps", "epochs", "steps_per_epoch", "best_epoch")


def _reference_run(command: Sequence[str], log_path: str, env: Mapping[str, str]) -> float:
  result = run_attempt(command, log_path, None, env)
  if result["returncode"] != 0:
    raise RuntimeError(f"the reference run failed: {' '.join(command)}\n{_tail(log_path)}")
  return result["seconds"]


def benchmark(
  work_dir: str,
  rounds: int,
  seed: int = 0,
  num_train: int = 40_000,
  num_test: int = 10_000,
  kills: int = 2,
  tolerance: float = 1e-4,
) -> Dict[str, Any]:
  """Writes the member, runs the references, then ``rounds`` soak rounds.

  Args:
    work_dir: Folder for everything (raw files, datasets, model dirs, logs).
    rounds: Soak rounds (each: both stages).
    seed: Seed of the kill moments (the member's data has its own seed).
    num_train, num_test: Impressions per raw split.
    kills: Kills per stage per round (fewer when a run ends first).
    tolerance: Largest max abs prediction difference counted as equal.

  Returns:
    The settings, the reference durations and counts, one entry per round and
    stage (kills, attempts, equal or what differs, the prediction difference),
    a summary, ``ok`` and the wall time.
  """
  if rounds < 1 or kills < 1:
    raise ValueError(f"rounds and kills must be >= 1, got {rounds}, {kills}")
  start = time.perf_counter()
  rng = np.random.default_rng(seed)
  env = child_env()
  raw_dir = os.path.join(work_dir, "raw")
  realistic.write_member(MEMBER, raw_dir, num_train, num_test)
  log = os.path.join(work_dir, "reference.log")
  ref_data = os.path.join(work_dir, "reference-data")
  ref_model = os.path.join(work_dir, "reference-model")
  durations = {"convert": _reference_run(convert_command(raw_dir, ref_data), log, env)}
  durations["train"] = _reference_run(train_command(ref_data, ref_model), log, env)
  ref_report = files.read_json(os.path.join(ref_data, input_pipeline.REPORT_FILENAME))
  ref_fingerprint = dataset_fingerprint(ref_data)
  ref_train = files.read_json(os.path.join(ref_model, training.TRAIN_REPORT_FILENAME))
  ref_ids, ref_predictions = predict(ref_model, ref_data)
  results: List[Dict[str, Any]] = []
  for r in range(rounds):
    out_dir = os.path.join(work_dir, f"round-{r}-data")
    entry = soak_stage(
      convert_command(raw_dir, out_dir),
      os.path.join(work_dir, f"round-{r}-convert.log"),
      rng,
      durations["convert"],
      kills,
      env,
    )
    entry.update(round=r, stage="convert")
    if entry["failed"] is None:
      report = files.read_json(os.path.join(out_dir, input_pipeline.REPORT_FILENAME))
      entry["report_differs"] = compare_mappings(ref_report, report, VOLATILE_REPORT_KEYS)
      entry["files_differ"] = compare_mappings(ref_fingerprint, dataset_fingerprint(out_dir))
      entry["rows_per_split"] = report["rows_per_split"]
      entry["equal"] = not entry["report_differs"] and not entry["files_differ"]
    else:
      entry["equal"] = False
    results.append(entry)
    model_dir = os.path.join(work_dir, f"round-{r}-model")
    entry = soak_stage(
      train_command(ref_data, model_dir),
      os.path.join(work_dir, f"round-{r}-train.log"),
      rng,
      durations["train"],
      kills,
      env,
    )
    entry.update(round=r, stage="train")
    if entry["failed"] is None:
      report = files.read_json(os.path.join(model_dir, training.TRAIN_REPORT_FILENAME))
      entry["resumed_from_step"] = report.get("resumed_from_step")
      entry["optimizer_steps"] = report.get("optimizer_steps")
      entry["report_differs"] = [
        k for k in _TRAIN_REPORT_KEYS if report.get(k, _MISSING) != ref_train.get(k, _MISSING)
      ]
      entry["best_value_difference"] = abs(
        float(report["best_value"]) - float(ref_train["best_value"])
      )
      ids, values = predict(model_dir, ref_data)
      entry["max_abs_prediction_difference"] = prediction_difference(
        ref_ids, ref_predictions, ids, values
      )
      entry["equal"] = (
        not entry["report_differs"] and entry["max_abs_prediction_difference"] <= tolerance
      )
    else:
      entry["equal"] = False
    results.append(entry)
  summary = {}
  for stage in STAGES:
    mine = [e for e in results if e["stage"] == stage]
    summary[stage] = {
      "kills": sum(e["kills"] for e in mine),
      "rounds_equal": sum(bool(e["equal"]) for e in mine),
      "rounds_failed": sum(e["failed"] is not None for e in mine),
    }
  differences = [
    e["max_abs_prediction_difference"]
    for e in results
    if e.get("max_abs_prediction_difference") is not None
  ]
  summary["train"]["max_abs_prediction_difference"] = max(differences) if differences else None
  return {
    "member": MEMBER,
    "num_train": num_train,
    "num_test": num_test,
    "rounds": rounds,
    "kills_per_stage_per_round": kills,
    "seed": seed,
    "tolerance": tolerance,
    "reference": {
      "seconds": {k: round(v, 3) for k, v in durations.items()},
      "rows_per_split": ref_report["rows_per_split"],
      "shards": sum(1 for k in ref_fingerprint if k.endswith(SHARD_SUFFIX)),
      "optimizer_steps": ref_train["optimizer_steps"],
    },
    "results": results,
    "summary": summary,
    "rounds_survived": sum(
      all(e["equal"] for e in results if e["round"] == r) for r in range(rounds)
    ),
    "ok": all(e["equal"] for e in results),
    "wall_seconds": round(time.perf_counter() - start, 1),
  }


def table(results: Mapping[str, Any]) -> str:
  """The rounds as a table, then the summary lines."""
  header = ("round", "stage", "kills", "kill at (s)", "resumed", "equal", "max |dp|", "differs")
  rows = [header]
  for e in results["results"]:
    diff = e.get("max_abs_prediction_difference")
    differs = (e.get("report_differs") or []) + (e.get("files_differ") or [])
    if diff is not None and diff > results["tolerance"]:
      differs.append("predictions")
    if e["failed"] is not None:
      differs = ["rerun failed: " + e["failed"].splitlines()[-1]]
    rows.append(
      (
        str(e["round"]),
        e["stage"],
        str(e["kills"]),
        ", ".join(f"{t:.1f}" for t in e["kill_times_s"]) or "-",
        "-" if e.get("resumed_from_step") is None else str(e["resumed_from_step"]),
        "yes" if e["equal"] else "NO",
        "-" if diff is None else f"{diff:.1e}",
        ", ".join(differs[:4]) + (" ..." if len(differs) > 4 else "") or "-",
      )
    )
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  s, ref = results["summary"], results["reference"]
  lines += [
    "",
    f"reference: convert {ref['seconds']['convert']:.1f} s, train {ref['seconds']['train']:.1f} s"
    f" ({ref['optimizer_steps']} steps), rows {ref['rows_per_split']}",
    f"kills: convert {s['convert']['kills']}, train {s['train']['kills']};"
    f" rounds survived {results['rounds_survived']} of {results['rounds']}",
    f"max abs prediction difference {s['train']['max_abs_prediction_difference']}"
    f" (tolerance {results['tolerance']}); wall {results['wall_seconds']:.0f} s",
  ]
  return "\n".join(lines)
