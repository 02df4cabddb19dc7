r"""Training throughput, FLOPs and FLOP utilisation of every model.

Every model trains on the same synthetic data through the same front end, with
batches parsed once and cached in memory (the input pipeline is measured by
``launch/benchmark_data.py``), so the numbers are the model's own cost:

* examples/s of ``model.fit`` train steps in the steady state (after warm-up
  steps that trace, and without ``fit``'s per-call set-up; all models timed
  in turns, the fastest of ``--repeats`` rounds each, since the CPUs may be
  shared),
* forward matrix-product FLOPs per example (:mod:`tafe_tf.benchmarks.flops`),
* model FLOP utilisation: ``3 * forward FLOPs * examples/s`` over the float32
  matmul rate measured on the same machine (square matmuls, best of a few).

    python -m launch.benchmark_training --batch_size=2048 --steps=20 \
        --output=/tmp/benchmark_training.json

``--embedding=both`` also times every model with one table per field (the
per-field layout) against the fused tables. ``--profile_top=N`` then profiles
a few train steps of every model (:mod:`tafe_tf.benchmarks.profiling`) and prints, and
writes to the JSON, its N costliest op types and ops: where the step goes.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import List

from absl import flags

from tafe_tf.launch import common

from tafe_tf.data import synthetic
from tafe_tf import features as features_lib
from tafe_tf import models
from tafe_tf.benchmarks import profiling
from tafe_tf.benchmarks import timing
from tafe_tf.benchmarks import flops as flops_lib
from tafe_tf import files

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Synthetic dataset directory (written when missing or "
    "different; default: a folder under the system temp dir).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 2, "Conversion steps T.")
_MODELS = flags.DEFINE_list("models", list(models.MODEL_NAMES),
                            "Models to time.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 2048, "Examples per step.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed train steps per model.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed train steps (tracing).")
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "Timed runs of --steps steps per model; the fastest counts "
    "(the CPUs may be shared: the best run is the least disturbed one).")
_EMBEDDING = flags.DEFINE_enum("embedding", "fused",
                               ["fused", "per_field", "both"],
                               "Embedding table layout(s) to time.")
_HPARAMS = flags.DEFINE_string("hparams", "{}",
                               "JSON of hparams given to every model.")
_PROFILE_TOP = flags.DEFINE_integer(
    "profile_top", 0, "Profile --steps train steps of every model and report "
    "its N costliest op types and ops (0: no profile).", lower_bound=0)
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON.")


def main(argv: List[str]) -> None:
  del argv
  data_dir = _DATA_DIR.value or os.path.join(
      tempfile.gettempdir(), f"tafe_benchmark_synthetic_t{_NUM_STEPS.value}")
  config = synthetic.SyntheticConfig(num_steps=_NUM_STEPS.value, seed=0)
  num_batches = 8
  synthetic.ensure_dataset(data_dir, config,
                           num_batches * _BATCH_SIZE.value, 0, 0)
  schema = features_lib.Schema.load(data_dir)
  dataset = timing.cached_batches(data_dir, _BATCH_SIZE.value, num_batches)
  sample_features, _ = next(iter(dataset))
  sample = features_lib.to_dense_padded(sample_features, schema)
  peak = flops_lib.matmul_flops_per_second()
  hparams = json.loads(_HPARAMS.value)
  layouts = {"fused": [True], "per_field": [False],
             "both": [True, False]}[_EMBEDDING.value]
  # All models are built first and timed in turns (fair under a changing
  # load on shared CPUs).
  runs = {(name, fused): (timing.compile_for_timing(
      name, schema, dict(hparams, fused_embedding=fused, seed=0)), dataset)
          for name in _MODELS.value for fused in layouts}
  seconds = timing.interleaved_fit_seconds(runs, _STEPS.value, _WARMUP.value,
                                           _REPEATS.value)
  rows = []
  for name in _MODELS.value:
    for fused in layouts:
      model = runs[(name, fused)][0]
      row = timing.speed_row(name, model, sample, seconds[(name, fused)],
                             _STEPS.value, _BATCH_SIZE.value)
      row["embedding"] = "fused" if fused else "per_field"
      if _PROFILE_TOP.value:
        profile = profiling.profile_fit_steps(model, dataset, _STEPS.value,
                                              warmup=1)
        print(f"--- {name} ({row['embedding']}) profile\n"
              + profile.format(_PROFILE_TOP.value))
        row["profile"] = {
            "step_ms": profile.step_ms, "kernel_ms": profile.kernel_ms,
            "matmul_ms": profile.matmul_ms,
            "by_type": profile.top_types(_PROFILE_TOP.value),
            "by_op": [{"op": op, "type": t, "ms": ms}
                      for op, t, ms in profile.by_op[:_PROFILE_TOP.value]]}
      row["mfu"] = (row["train_flops_per_example"]
                    * row["examples_per_second"] / peak)
      rows.append(row)
  print(f"matmul rate: {peak / 1e9:.1f} GFLOP/s; batch {_BATCH_SIZE.value}; "
        f"{os.cpu_count()} CPUs; T = {_NUM_STEPS.value}")
  print(f"{'model':<14}{'embedding':<11}{'examples/s':>12}{'ms/step':>9}"
        f"{'MFLOP/ex':>10}{'params':>10}{'MFU':>8}")
  for r in rows:
    print(f"{r['model']:<14}{r['embedding']:<11}"
          f"{r['examples_per_second']:>12.0f}{r['step_ms']:>9.1f}"
          f"{r['forward_flops_per_example'] / 1e6:>10.3f}"
          f"{r['trainable_parameters']:>10d}{100 * r['mfu']:>7.2f}%")
  if _OUTPUT.value:
    result = {"matmul_flops_per_second": peak,
              "batch_size": _BATCH_SIZE.value, "num_steps": _NUM_STEPS.value,
              "cpu_count": os.cpu_count(), "hparams": hparams,
              "timed_steps": _STEPS.value, "repeats": _REPEATS.value,
              "results": rows}
    files.write_json_atomic(_OUTPUT.value, result)


def run() -> None:
  """Entry point: flags parsed by absl, user errors as one line."""
  common.run(main)


if __name__ == "__main__":
  run()
