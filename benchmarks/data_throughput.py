r"""Data benchmarks: raw Ali-CCP conversion and tf.data read throughput.

The library behind ``launch.benchmark_data``: :func:`write_raw_ali_ccp`
writes a raw-format Ali-CCP pair (``sample_skeleton_train.csv`` +
``common_features_train.csv``) with realistic shapes (about 58 impressions
per common row, hundreds of behaviour entries per common row, Zipf item ids);
:func:`run_conversion` converts it with ``launch.convert`` in a child process
while sampling the resident memory of the whole process tree;
:func:`read_throughput` reads the train split back through
:func:`tafe_tf.input_pipeline.make_dataset`; :func:`benchmark` does all three.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

import numpy as np

from tafe_tf import files
from tafe_tf.benchmarks import timing
from tafe_tf.data import ali_ccp

# Share of each history's entries per field (109_14, 110_14, 127_14, 150_14),
# as in PaddleRec's real rows (117, 342, 209, 191 entries).
_HISTORY_SHARES = (("109_14", 0.14), ("110_14", 0.40), ("127_14", 0.24), ("150_14", 0.22))
_PROFILE_FIELDS = (
  ("121", 100),
  ("122", 14),
  ("124", 3),
  ("125", 8),
  ("126", 4),
  ("127", 4),
  ("128", 3),
  ("129", 5),
)
_CROSS_FIELDS = ("508", "509", "702", "853")


def _log_count(rng: np.random.Generator, size: int) -> np.ndarray:
  return np.round(np.log1p(rng.geometric(0.3, size)), 5)


def write_raw_ali_ccp(
  out_dir: str,
  num_impressions: int,
  impressions_per_user: int = 58,
  history_entries: int = 600,
  seed: int = 0,
  split: str = "train",
) -> Dict[str, int]:
  """Writes a raw-format skeleton/common pair of ``num_impressions`` rows.

  Feature ids are disjoint per field (as in the real data), items are
  Zipf-distributed, click ~4% and buy|click ~3%, with a few buy-without-click
  rows that the converter must skip.

  Returns:
    ``impressions``, ``common_rows``, ``common_entries`` written.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(out_dir, exist_ok=True)
  skeleton_path = os.path.join(out_dir, ali_ccp.SKELETON_FILES[split])
  common_path = os.path.join(out_dir, ali_ccp.COMMON_FILES[split])
  num_users = max(1, num_impressions // impressions_per_user)
  # Impressions per common row: >= 1, mean impressions_per_user.
  per_user = rng.multinomial(num_impressions - num_users, np.full(num_users, 1.0 / num_users)) + 1
  base = {
    field: (k + 1) * 10_000_000
    for k, field in enumerate(
      [f for f, _ in _PROFILE_FIELDS]
      + [f for f, _ in _HISTORY_SHARES]
      + ["101", "205", "206", "207", "210", "216", "301"]
      + list(_CROSS_FIELDS)
    )
  }
  common_entries = 0
  sample_id = 0
  with open(common_path, "w") as common, open(skeleton_path, "w") as skeleton:
    for user in range(num_users):
      key = f"{rng.integers(1 << 62):016x}"
      entries = [("101", base["101"] + user, 1.0)]
      entries += [(f, base[f] + int(rng.integers(n)), 1.0) for f, n in _PROFILE_FIELDS]
      total = int(rng.poisson(history_entries)) if history_entries else 0
      for field, share in _HISTORY_SHARES:
        n = int(total * share)
        ids = base[field] + rng.choice(200_000, size=n, replace=False)
        entries += list(zip([field] * n, ids.tolist(), _log_count(rng, n).tolist()))
      common_entries += len(entries)
      common.write(ali_ccp.format_common_line(key, entries))
      count = int(per_user[user])
      items = np.minimum(rng.zipf(1.3, count), 4_000_000)
      clicks = rng.random(count) < 0.04
      buys = clicks & (rng.random(count) < 0.03)
      buys |= rng.random(count) < 1e-4  # inconsistent rows, to be skipped
      lines = []
      for i in range(count):
        item = int(items[i])
        row = [
          ("205", base["205"] + item, 1.0),
          ("206", base["206"] + item % 5000, 1.0),
          ("207", base["207"] + item % 90_000, 1.0),
          ("216", base["216"] + item % 60_000, 1.0),
          ("301", base["301"] + i % 3, 1.0),
        ]
        row += [("210", base["210"] + (item * 7 + k) % 100_000, 1.0) for k in range(1 + item % 4)]
        row += [
          (f, base[f] + (item + user) % 50_000, 0.69315)
          for f in _CROSS_FIELDS
          if (item + user + len(f)) % 2
        ]
        sample_id += 1
        lines.append(
          ali_ccp.format_skeleton_line(str(sample_id), int(clicks[i]), int(buys[i]), key, row)
        )
      skeleton.write("".join(lines))
  return {"impressions": sample_id, "common_rows": num_users, "common_entries": common_entries}


class _TreeMemorySampler:
  """Samples the summed resident memory of a process and its descendants."""

  def __init__(self, pid: int, interval_s: float = 0.2):
    self.pid = pid
    self.interval_s = interval_s
    self.peak_bytes = 0
    self.peak_single_bytes = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def __enter__(self) -> "_TreeMemorySampler":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()

  def _run(self) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    while not self._stop.is_set():
      sizes = [self._rss(pid, page) for pid in self._tree(self.pid)]
      if sizes:
        self.peak_bytes = max(self.peak_bytes, sum(sizes))
        self.peak_single_bytes = max(self.peak_single_bytes, max(sizes))
      self._stop.wait(self.interval_s)

  @staticmethod
  def _rss(pid: int, page: int) -> int:
    try:
      with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * page
    except (OSError, IndexError, ValueError):
      return 0

  @classmethod
  def _tree(cls, pid: int) -> List[int]:
    out = [pid]
    try:
      for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
          for child in f.read().split():
            out += cls._tree(int(child))
    except OSError:
      pass
    return out


def run_conversion(raw_dir: str, out_dir: str, workers: int, num_shards: int) -> Dict[str, Any]:
  """Runs ``launch.convert`` in a child process; seconds and peak memory.

  Raises:
    RuntimeError: the conversion failed (the message ends with its output).
  """
  # The installed entry point (a process, not an import: benchmarks/ sits
  # below launch/).
  command = [
    sys.executable,
    "-m",
    "tafe_tf.launch.convert",
    "--format=ali_ccp",
    f"--raw_dir={raw_dir}",
    f"--out_dir={out_dir}",
    f"--workers={workers}",
    f"--num_shards={num_shards}",
  ]
  began = time.time()
  cpu_before = _children_cpu_seconds()
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  with _TreeMemorySampler(process.pid) as sampler:
    output, _ = process.communicate()
  seconds = time.time() - began
  # The converter waits for its workers, so their CPU time is included.
  cpu_seconds = _children_cpu_seconds() - cpu_before
  if process.returncode:
    raise RuntimeError(
      f"conversion failed ({process.returncode}):\n{output.decode(errors='replace')[-4000:]}"
    )
  return {
    "seconds": seconds,
    "cpu_seconds": cpu_seconds,
    "peak_rss_mb": sampler.peak_bytes / 2**20,
    "peak_rss_mb_largest_process": sampler.peak_single_bytes / 2**20,
  }


def _children_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def read_throughput(data_dir: str, batch_size: int) -> Dict[str, float]:
  """Examples/s of one pass over the train split through make_dataset."""
  examples, seconds = timing.read_pass(data_dir, batch_size)
  return {
    "examples": examples,
    "seconds": seconds,
    "examples_per_s": examples / seconds if seconds else math.inf,
  }


def benchmark(
  work_dir: str,
  impressions: int,
  impressions_per_user: int = 58,
  history_entries: int = 600,
  workers: int = 0,
  num_shards: int = 8,
  read_batch_size: int = 2048,
  seed: int = 0,
) -> Dict[str, Any]:
  """Generates, converts (:func:`run_conversion`) and reads back
  (:func:`read_throughput`) a raw Ali-CCP pair of ``impressions`` rows in
  ``work_dir`` (``raw/``, ``dataset/``); the numbers of every stage and
  projections to the real 42M impressions."""
  raw_dir = os.path.join(work_dir, "raw")
  out_dir = os.path.join(work_dir, "dataset")
  began = time.time()
  generated = write_raw_ali_ccp(raw_dir, impressions, impressions_per_user, history_entries, seed)
  generate_seconds = time.time() - began
  raw_bytes = sum(os.path.getsize(os.path.join(raw_dir, n)) for n in os.listdir(raw_dir))
  conversion = run_conversion(raw_dir, out_dir, workers, num_shards)
  report = files.read_json(os.path.join(out_dir, "report.json"))
  out_bytes = sum(
    os.path.getsize(os.path.join(out_dir, n))
    for n in os.listdir(out_dir)
    if n.endswith(".tfrecord.gz")
  )
  read = read_throughput(out_dir, read_batch_size)
  impressions_per_s = report["rows_read"] / conversion["seconds"]
  cpu_us = conversion["cpu_seconds"] / report["rows_read"] * 1e6
  cpus = os.cpu_count() or 1
  load = os.getloadavg()
  return {
    "generated": generated,
    "generate_seconds": generate_seconds,
    "raw_mb": raw_bytes / 2**20,
    "tfrecord_mb": out_bytes / 2**20,
    "workers": workers or os.cpu_count(),
    "cpus": os.cpu_count(),
    "conversion": {
      **conversion,
      "impressions_per_s": impressions_per_s,
      "cpu_us_per_impression": cpu_us,
      "rows_read": report["rows_read"],
      "rows_written": report["rows_written"],
      "skipped": report["skipped"],
    },
    "projected_minutes_42m": 42e6 / impressions_per_s / 60,
    # What the same CPU time per impression gives on cores of our own.
    "projected_minutes_42m_dedicated_cores": (
      42e6 * cpu_us * 1e-6 / min(cpus, workers or cpus) / 60
    ),
    "load_average_after": load,
    "read": read,
  }


def table(results: Dict[str, Any]) -> str:
  c, r = results["conversion"], results["read"]
  rows = [
    ("impressions", f"{c['rows_read']:,}"),
    (
      "common entries / row",
      f"{results['generated']['common_entries'] / results['generated']['common_rows']:.0f}",
    ),
    ("raw MB -> TFRecord MB", f"{results['raw_mb']:.0f} -> {results['tfrecord_mb']:.0f}"),
    ("conversion seconds", f"{c['seconds']:.1f}"),
    ("impressions/s", f"{c['impressions_per_s']:,.0f}"),
    ("peak RSS MB (all processes)", f"{c['peak_rss_mb']:.0f}"),
    ("peak RSS MB (largest process)", f"{c['peak_rss_mb_largest_process']:.0f}"),
    ("CPU us / impression", f"{c['cpu_us_per_impression']:.0f}"),
    ("projected minutes, 42M", f"{results['projected_minutes_42m']:.1f}"),
    (
      "projected minutes, 42M, idle cores",
      f"{results['projected_minutes_42m_dedicated_cores']:.1f}",
    ),
    ("load average (1, 5, 15 min)", ", ".join(f"{x:.1f}" for x in results["load_average_after"])),
    ("read examples/s (batch)", f"{r['examples_per_s']:,.0f}"),
  ]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
