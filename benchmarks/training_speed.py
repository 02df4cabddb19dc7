"""Training throughput, FLOPs and FLOP utilisation of every model.

The library behind ``launch.benchmark_training``: every model trains on the
same synthetic data with batches parsed once and cached
(:func:`tafe_tf.benchmarks.timing.train_speed`, all models timed in turns),
optionally in both embedding layouts (fused tables, one table per field), and
optionally profiled (:mod:`tafe_tf.benchmarks.profiling`).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Sequence

from tafe_tf.benchmarks import profiling, timing
from tafe_tf.data import synthetic

# Embedding layouts by flag value -> fused_embedding hyperparameter values.
LAYOUTS = {"fused": (True,), "per_field": (False,), "both": (True, False)}
NUM_CACHED_BATCHES = 8


def measure(
  data_dir: str,
  num_steps: int,
  models: Sequence[str],
  embedding: str,
  hparams: Mapping[str, Any],
  batch_size: int,
  steps: int,
  warmup: int,
  repeats: int,
  profile_top: int = 0,
) -> Dict[str, Any]:
  """Times ``models`` in the ``embedding`` layouts (:data:`LAYOUTS`).

  Args:
    data_dir: Synthetic dataset directory of ``num_steps`` steps (written
      when missing or different).
    models: Model names.
    embedding: A :data:`LAYOUTS` key.
    hparams: Given to every model.
    batch_size, steps, warmup, repeats: See
      :func:`tafe_tf.benchmarks.timing.train_speed`.
    profile_top: When > 0, also profile ``steps`` train steps of every model
      and keep its ``profile_top`` costliest op types and ops.

  Returns:
    ``matmul_flops_per_second``, the settings and ``results``: per model and
    layout the speed row with ``embedding``, ``mfu`` and maybe ``profile``
    (its text under ``profile_text``).
  """
  synthetic.ensure_dataset(
    data_dir,
    synthetic.SyntheticConfig(num_steps=num_steps, seed=0),
    NUM_CACHED_BATCHES * batch_size,
    0,
    0,
  )
  ours = {
    (name, fused): (name, dict(hparams, fused_embedding=fused, seed=0))
    for name in models
    for fused in LAYOUTS[embedding]
  }
  speed = timing.train_speed(data_dir, ours, batch_size, steps, warmup, repeats, NUM_CACHED_BATCHES)
  rows: List[Dict[str, Any]] = []
  for (name, fused), row in speed.rows.items():
    row = dict(row, embedding="fused" if fused else "per_field")
    if profile_top:
      profile = profiling.profile_fit_steps(
        speed.models[(name, fused)], speed.dataset, steps, warmup=1
      )
      row["profile_text"] = f"--- {name} ({row['embedding']}) profile\n" + profile.format(
        profile_top
      )
      row["profile"] = {
        "step_ms": profile.step_ms,
        "kernel_ms": profile.kernel_ms,
        "matmul_ms": profile.matmul_ms,
        "by_type": profile.top_types(profile_top),
        "by_op": [{"op": op, "type": t, "ms": ms} for op, t, ms in profile.by_op[:profile_top]],
      }
    rows.append(row)
  return {
    "matmul_flops_per_second": speed.matmul_flops_per_second,
    "batch_size": batch_size,
    "num_steps": num_steps,
    "cpu_count": os.cpu_count(),
    "hparams": dict(hparams),
    "timed_steps": steps,
    "repeats": repeats,
    "results": rows,
  }


def table(result: Mapping[str, Any]) -> str:
  """The profiles (if any), then one line per model and layout."""
  lines = [r["profile_text"] for r in result["results"] if "profile_text" in r]
  lines += [
    f"matmul rate: {result['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s; "
    f"batch {result['batch_size']}; {result['cpu_count']} CPUs; "
    f"T = {result['num_steps']}",
    f"{'model':<14}{'embedding':<11}{'examples/s':>12}{'ms/step':>9}"
    f"{'MFLOP/ex':>10}{'params':>10}{'MFU':>8}",
  ]
  lines += [
    f"{r['model']:<14}{r['embedding']:<11}"
    f"{r['examples_per_second']:>12.0f}{r['step_ms']:>9.1f}"
    f"{r['forward_flops_per_example'] / 1e6:>10.3f}"
    f"{r['trainable_parameters']:>10d}{100 * r['mfu']:>7.2f}%"
    for r in result["results"]
  ]
  return "\n".join(lines)
