"""Model FLOPs from the traced graph: matrix products counted exactly.

Every matrix product of a traced function (``MatMul``, ``BatchMatMul*`` and
``Einsum``, which is how experts, gates and towers run) is counted from its
static shapes as ``2 * (product of all index sizes)`` (one multiply and one add
per term). Element-wise ops, gathers, segment sums and softmaxes are left out:
they are memory-bound and a few percent of the total for these models. A
training step costs about 3x the forward count (the backward pass is two
products per forward product), the usual convention for model FLOP
utilisation.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, Mapping

import tensorflow as tf

_BATCH_MATMULS = ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
TRAINING_FLOPS_PER_FORWARD = 3


def _static_dims(tensor: tf.Tensor, op: tf.Operation) -> list:
  dims = tensor.shape.as_list() if tensor.shape.rank is not None else None
  if dims is None or any(d is None for d in dims):
    raise ValueError(
      f"op {op.name} ({op.type}) has a non-static input shape "
      f"{tensor.shape}; trace with concrete batch shapes"
    )
  return dims


def _einsum_flops(op: tf.Operation) -> int:
  equation = op.get_attr("equation").decode()
  inputs, _ = equation.replace(" ", "").split("->")
  sizes: Dict[str, int] = {}
  for labels, tensor in zip(inputs.split(","), op.inputs):
    if "." in labels:
      raise ValueError(
        f"op {op.name}: ellipsis einsum {equation!r} is not supported by the FLOP counter"
      )
    for label, dim in zip(labels, _static_dims(tensor, op)):
      sizes[label] = max(sizes.get(label, 1), dim)
  total = 2
  for dim in sizes.values():
    total *= dim
  return total


def _matmul_flops(op: tf.Operation) -> int:
  a, b = (_static_dims(t, op) for t in op.inputs[:2])
  if op.type == "MatMul":
    m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
    n = b[0] if op.get_attr("transpose_b") else b[1]
    return 2 * m * k * n
  adj_a = op.get_attr("adj_x")
  adj_b = op.get_attr("adj_y")
  m, k = (a[-1], a[-2]) if adj_a else (a[-2], a[-1])
  n = b[-2] if adj_b else b[-1]
  out = _static_dims(op.outputs[0], op)
  batch = 1
  for d in out[:-2]:
    batch *= d
  return 2 * batch * m * k * n


def graph_matmul_flops(operations: Iterable[tf.Operation]) -> int:
  """Sum of the matrix-product FLOPs of ``operations`` (see the module doc)."""
  total = 0
  for op in operations:
    if op.type == "Einsum":
      total += _einsum_flops(op)
    elif op.type == "MatMul" or op.type in _BATCH_MATMULS:
      total += _matmul_flops(op)
  return total


def function_flops(fn: Callable[..., Any], *args: Any) -> int:
  """Matrix-product FLOPs of one call of ``fn(*args)``, traced with the
  static shapes of ``args`` (pass concrete tensors of the batch size wanted)."""
  concrete = tf.function(fn).get_concrete_function(*args)
  return graph_matmul_flops(concrete.graph.get_operations())


def forward_flops_per_example(model: Any, features: Mapping[str, tf.Tensor]) -> float:
  """Forward matrix-product FLOPs per example of a multi-step model.

  Args:
    model: A :class:`tafe_tf.models.MultiStepModel`.
    features: A batch in the padded (dense) form, e.g.
      ``features.to_dense_padded(batch, schema)``; ragged inputs would hide the
      batch size from the trace.
  """
  ragged = sorted(k for k, v in features.items() if isinstance(v, tf.RaggedTensor))
  if ragged:
    raise ValueError(
      f"features {ragged} are ragged; pass the padded form (tafe_tf.features.to_dense_padded)"
    )
  dense = {k: v for k, v in features.items() if v.dtype != tf.string}
  batch = int(next(iter(dense.values())).shape[0])
  flops = function_flops(lambda f: model.step_logits(f, training=False), dense)
  return flops / batch


def matmul_flops_per_second(n: int = 1024, repeats: int = 5, calls: int = 10) -> float:
  """Best measured float32 FLOP/s of ``n x n`` matmuls on this machine."""
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])

  @tf.function
  def chain(x):
    for _ in range(calls):
      x = tf.matmul(x, b) * 1e-3
    return x

  chain(a).numpy()  # trace and warm up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    chain(a).numpy()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n**3 * calls / best
