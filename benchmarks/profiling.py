"""Where a training step's time goes: an op-level CPU/GPU profile of ``fit``.

:func:`profile_fit_steps` runs a few ``fit`` steps under the TensorFlow
profiler and aggregates the kernel events of the trace (the XSpace protobuf
the profiler writes) by op type and by op name. It answers "which ops make the
step slow" without TensorBoard, e.g. for ``launch.benchmark_training
--profile_top=N``.

Times are kernel times summed over the executor's threads, per step: on a
2-core CPU they can add up to about twice the step's wall time, and ops that
ran in parallel both count. Ops fused by XLA appear as one event each.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import tensorflow as tf

# TensorFlow-internal path of the profiler's trace format.
from tensorflow.tsl.profiler.protobuf import xplane_pb2

# Trace lines that carry the executor's kernel events ("tf_Compute/<id>" on
# CPU, "TensorFlow Ops" on a GPU host plane); event names are "<op>:<type>".
_KERNEL_LINE_PREFIXES = ("tf_Compute", "TensorFlow Ops", "tf_XLA")


@dataclasses.dataclass(frozen=True)
class StepProfile:
  """Kernel time per training step, in milliseconds.

  Attributes:
    steps: Profiled train steps.
    step_ms: Wall time of a profiled step (profiler overhead included).
    kernel_ms: Kernel time per step, summed over threads.
    by_type: ``(op type, ms per step)``, largest first.
    by_op: ``(op name, op type, ms per step)``, largest first.
  """

  steps: int
  step_ms: float
  kernel_ms: float
  by_type: Tuple[Tuple[str, float], ...]
  by_op: Tuple[Tuple[str, str, float], ...]

  @property
  def matmul_ms(self) -> float:
    """Kernel time of matrix products (MatMul, BatchMatMul, Einsum kinds)."""
    return sum(ms for t, ms in self.by_type if "MatMul" in t or "Einsum" in t)

  def top_types(self, n: int) -> List[Dict[str, float]]:
    """The ``n`` costliest op types as ``{"type", "ms", "fraction"}``."""
    return [{"type": t, "ms": ms, "fraction": ms / self.kernel_ms} for t, ms in self.by_type[:n]]

  def format(self, n: int) -> str:
    """A text table of the ``n`` costliest op types and ops."""
    lines = [
      f"{self.steps} profiled steps, {self.step_ms:.1f} ms/step wall, "
      f"{self.kernel_ms:.1f} ms/step kernel time (summed over threads)"
      f", of which matrix products {self.matmul_ms:.1f} ms "
      f"({100 * self.matmul_ms / self.kernel_ms:.1f}%)",
      f"{'ms/step':>9} {'share':>6}  op type",
    ]
    lines += [f"{ms:>9.2f} {100 * ms / self.kernel_ms:>5.1f}%  {t}" for t, ms in self.by_type[:n]]
    lines += [f"{'ms/step':>9} {'share':>6}  op (type)"]
    lines += [
      f"{ms:>9.2f} {100 * ms / self.kernel_ms:>5.1f}%  {name} ({t})"
      for name, t, ms in self.by_op[:n]
    ]
    return "\n".join(lines)


def kernel_times(xspace_path: str) -> Dict[Tuple[str, str], float]:
  """Total picoseconds per ``(op name, op type)`` in a profiler XSpace file."""
  space = xplane_pb2.XSpace()
  with open(xspace_path, "rb") as f:
    space.ParseFromString(f.read())
  totals: Dict[Tuple[str, str], float] = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not line.name.startswith(_KERNEL_LINE_PREFIXES):
        continue
      for event in line.events:
        name = names.get(event.metadata_id, "")
        if ":" not in name or "::" in name:  # executor bookkeeping
          continue
        op, op_type = name.rsplit(":", 1)
        totals[(op, op_type)] += event.duration_ps
  return dict(totals)


def profile_fit_steps(
  model: tf.keras.Model, dataset: tf.data.Dataset, steps: int, warmup: int = 3
) -> StepProfile:
  """Profiles ``steps`` ``fit`` steps of a compiled model.

  Args:
    model: A compiled Keras model.
    dataset: Repeated batches ``fit`` accepts (cache them, so that parsing
      does not run inside the profiled steps).
    steps: Profiled train steps (>= 1).
    warmup: Untimed steps first (tracing).

  Returns:
    The kernel times per step.

  Raises:
    ValueError: when ``steps < 1`` or the trace has no kernel events.
  """
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  model.fit(dataset, epochs=1, steps_per_epoch=max(1, warmup), verbose=0)
  logdir = tempfile.mkdtemp(prefix="tafe_profile_")
  try:
    tf.profiler.experimental.start(logdir)
    start = tf.timestamp()
    try:
      model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    finally:
      wall = float(tf.timestamp() - start)
      tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    totals: Dict[Tuple[str, str], float] = collections.Counter()
    for path in paths:
      totals.update(kernel_times(path))
  finally:
    shutil.rmtree(logdir, ignore_errors=True)
  if not totals:
    raise ValueError("the profiler trace has no kernel events")
  per_step = 1e-9 / steps  # picoseconds -> ms per step
  by_type: Dict[str, float] = collections.Counter()
  for (_, op_type), ps in totals.items():
    by_type[op_type] += ps * per_step
  by_op = sorted(((op, t, ps * per_step) for (op, t), ps in totals.items()), key=lambda x: -x[2])
  return StepProfile(
    steps=steps,
    step_ms=1000.0 * wall / steps,
    kernel_ms=sum(by_type.values()),
    by_type=tuple(sorted(by_type.items(), key=lambda x: -x[1])),
    by_op=tuple(by_op),
  )
