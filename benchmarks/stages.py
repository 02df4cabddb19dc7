"""A train step split into its stages, each timed alone against its limit.

On one batch of a converted dataset, :func:`measure` times, each as its own
``tf.function`` called on the same inputs (best of ``repeats`` runs of
``calls`` calls, the last output fetched, so an accelerator's queue is in
the time):

* ``input``: read + parse (``make_dataset``, no model), per batch (it runs
  on the host, overlapping the step through ``tf.data``'s prefetch);
* ``lookup``: the id lookups (``model.preprocess``: hashing, vocabularies);
* ``embedding``: gather + pooling (the embedding layer on the looked-up
  rows), forward;
* ``embedding_backward``: its forward and the gradient to the tables;
* ``dense``: the network above the embeddings, forward and backward: the
  whole model's loss gradient on looked-up rows less ``embedding_backward``;
* ``update_tables`` / ``update_dense``: Adam's update of the embedding
  tables / of the other variables from precomputed gradients;
* ``step``: a whole ``fit`` train step, steady state
  (:func:`tafe_tf.benchmarks.timing.time_steady_steps`), against which the
  stages add up.

Two probes measured in the same run give the limits:
:func:`memory_bandwidth` (a large elementwise copy: bytes read and written
per second) for the gather, pooling and update stages, and the float32
matmul rate (:func:`tafe_tf.benchmarks.flops.matmul_flops_per_second`) for
the dense network. Each stage's ``bytes`` or ``flops`` is what it must at
least move or compute (see :func:`stage_work`); ``achieved`` is that over
its time and ``fraction`` that over the limit.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tafe_tf import features as features_lib
from tafe_tf import input_pipeline, training
from tafe_tf.benchmarks import flops as flops_lib
from tafe_tf.benchmarks import timing
from tafe_tf.layers import embedding as embedding_lib

STAGES = (
  "input",
  "lookup",
  "embedding",
  "embedding_backward",
  "dense",
  "update_tables",
  "update_dense",
)
# Stages whose limit is memory bandwidth; the dense network's is the matmul rate.
MEMORY_STAGES = ("embedding", "embedding_backward", "update_tables", "update_dense")
FLOAT_BYTES = 4
# Adam reads and writes the variable and both moments of every element it
# updates; tf-keras' Adam decays the moments of a whole table even when its
# gradient is sparse (IndexedSlices), so every element of every table counts.
ADAM_ARRAYS_READ_AND_WRITTEN = 3 * 2


def _fetch(outputs: Any) -> None:
  """Waits for ``outputs`` (one element of its last tensor is enough: a
  device runs a function's ops in order)."""
  flat = [t for t in tf.nest.flatten(outputs, expand_composites=True) if isinstance(t, tf.Tensor)]
  if flat:
    tf.reshape(flat[-1], [-1])[:1].numpy()


def seconds_per_call(
  fn: Callable[..., Any], args: Sequence[Any], calls: int, repeats: int
) -> float:
  """Best of ``repeats`` runs of ``calls`` calls of ``fn(*args)``, per call
  (after one untimed call: tracing)."""
  if calls < 1 or repeats < 1:
    raise ValueError(f"calls and repeats must be >= 1, got {calls}, {repeats}")
  _fetch(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    out = None
    for _ in range(calls):
      out = fn(*args)
    _fetch(out)
    best = min(best, (time.perf_counter() - start) / calls)
  return best


def input_rate(
  data_dir: str, schema: features_lib.Schema, batch_size: int, seconds: float
) -> Tuple[int, float]:
  """``(examples, seconds)`` read through ``make_dataset`` (parsing
  included, repeated, no model) in about ``seconds``, after one untimed batch
  (the pipeline's start)."""
  ds = input_pipeline.make_dataset(data_dir, "train", batch_size, schema=schema, repeat=True)
  iterator = iter(ds)
  next(iterator)
  examples, start = 0, time.perf_counter()
  while True:
    _, labels = next(iterator)
    examples += int(next(iter(labels.values())).shape[0])
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return examples, elapsed


def memory_bandwidth(num_floats: int = 1 << 25, repeats: int = 5) -> float:
  """Best bytes/s of ``y = x + 1`` on ``num_floats`` float32s (each element
  read once and written once) on the default device."""
  x = tf.random.uniform([num_floats])
  add = tf.function(lambda v: v + 1.0)
  seconds = seconds_per_call(add, [x], calls=3, repeats=repeats)
  return 2.0 * FLOAT_BYTES * num_floats / seconds


def _num_entries(value: Any) -> int:
  if isinstance(value, tf.RaggedTensor):
    return int(tf.size(value.flat_values))
  return int(tf.size(value))


def stage_work(
  model: Any, looked_up: Mapping[str, Any], batch_size: int, forward_flops_per_example: float
) -> Dict[str, Dict[str, float]]:
  """What each stage must at least move (``bytes``) or compute (``flops``).

  * ``embedding``: one table row read per looked-up id (padding included:
    the gather reads it) and the output written:
    ``(ids x width + batch x output width) x 4`` bytes;
  * ``embedding_backward``: that twice (the gradient rows are as many);
  * ``update_tables`` / ``update_dense``: :data:`ADAM_ARRAYS_READ_AND_WRITTEN`
    x 4 bytes per element of the variables;
  * ``dense``: forward and backward matmul FLOPs of the batch
    (:data:`tafe_tf.benchmarks.flops.TRAINING_FLOPS_PER_FORWARD` x forward).
  """
  emb = model.embedding
  widths = embedding_lib.field_widths(emb.schema, emb.embedding_dim, emb.field_embedding_dims)
  gathered = 0
  for f in emb.schema.fields:
    if f.is_id:
      gathered += _num_entries(looked_up[embedding_lib.ROWS_PREFIX + f.name]) * widths[f.name]
  gather_bytes = FLOAT_BYTES * (gathered + batch_size * emb.output_dim)
  table_ids = {id(v) for v in emb.tables.values()}
  table_elements = sum(int(np.prod(v.shape)) for v in emb.tables.values())
  dense_elements = sum(
    int(np.prod(v.shape)) for v in model.trainable_variables if id(v) not in table_ids
  )
  update = ADAM_ARRAYS_READ_AND_WRITTEN * FLOAT_BYTES
  return {
    "embedding": {"bytes": float(gather_bytes)},
    "embedding_backward": {"bytes": 2.0 * gather_bytes},
    "update_tables": {"bytes": float(update * table_elements)},
    "update_dense": {"bytes": float(update * dense_elements)},
    "dense": {
      "flops": flops_lib.TRAINING_FLOPS_PER_FORWARD * forward_flops_per_example * batch_size
    },
  }


def _split_variables(model: Any) -> Tuple[List[tf.Variable], List[tf.Variable]]:
  table_ids = {id(v) for v in model.embedding.tables.values()}
  tables = [v for v in model.trainable_variables if id(v) in table_ids]
  dense = [v for v in model.trainable_variables if id(v) not in table_ids]
  return tables, dense


def measure(
  data_dir: str,
  model_name: str,
  hparams: Mapping[str, Any],
  batch_size: int,
  calls: int = 10,
  repeats: int = 3,
  step_steps: int = 10,
  input_seconds: float = 1.0,
  learning_rate: float = 1e-3,
) -> Dict[str, Any]:
  """Times each stage of ``model_name``'s train step on one batch.

  Args:
    data_dir: A converted dataset (its train split holds at least one batch).
    model_name, hparams: The model (``build_model`` arguments).
    batch_size: Examples of the batch.
    calls, repeats: See :func:`seconds_per_call`.
    step_steps: Timed steps of the whole step (best of ``repeats`` windows).
    input_seconds: Seconds of reading (:func:`input_rate`).
    learning_rate: Adam learning rate.

  Returns:
    ``model``, ``batch_size``, ``device``, ``memory_bytes_per_second``,
    ``matmul_flops_per_second``, ``step_ms``, ``stages_ms`` (their sum, input
    left out: it overlaps the step), ``call_overhead_ms`` (an empty
    function's call, which every stage timed alone pays once), and
    ``stages``: one row per :data:`STAGES` entry with ``ms``, ``share`` (of
    the step), ``bytes`` or ``flops``, ``achieved`` (per second), ``limit``
    and ``fraction`` (achieved over limit).
  """
  schema = features_lib.Schema.load(data_dir)
  model = training.build_and_compile(
    model_name,
    schema,
    {"train_metrics": False, **dict(hparams)},
    learning_rate,
    tf.distribute.get_strategy(),
  )
  batches = timing.cached_batches(data_dir, batch_size, 1)
  features, labels = next(iter(batches))
  tables, dense_vars = _split_variables(model)
  model.optimizer.build(model.trainable_variables)

  lookup = tf.function(model.preprocess)
  looked_up = lookup(features)
  embed = tf.function(lambda f: model.embedding(f))

  @tf.function
  def embed_backward(f):
    with tf.GradientTape() as tape:
      out = tf.reduce_sum(model.embedding(f))
    return tape.gradient(out, tables)

  @tf.function
  def loss_gradients(f, y):
    with tf.GradientTape() as tape:
      loss = model.compute_loss((f, y), training=True)
    return tape.gradient(loss, model.trainable_variables)

  gradients = loss_gradients(looked_up, labels)
  by_id = {id(v): g for v, g in zip(model.trainable_variables, gradients)}
  table_grads = [by_id[id(v)] for v in tables]
  dense_grads = [by_id[id(v)] for v in dense_vars]

  def updater(variables: List[tf.Variable]) -> Callable[[Any], Any]:
    @tf.function
    def apply(grads):
      model.optimizer.apply_gradients(zip(grads, variables))
      return model.optimizer.iterations

    return apply

  seconds = {
    "lookup": seconds_per_call(lookup, [features], calls, repeats),
    "embedding": seconds_per_call(embed, [looked_up], calls, repeats),
    "embedding_backward": seconds_per_call(embed_backward, [looked_up], calls, repeats),
    "update_tables": seconds_per_call(updater(tables), [table_grads], calls, repeats),
    "update_dense": seconds_per_call(updater(dense_vars), [dense_grads], calls, repeats),
  }
  full = seconds_per_call(loss_gradients, [looked_up, labels], calls, repeats)
  seconds["dense"] = max(0.0, full - seconds["embedding_backward"])
  examples, read_seconds = input_rate(data_dir, schema, batch_size, input_seconds)
  seconds["input"] = read_seconds * batch_size / examples
  overhead = seconds_per_call(tf.function(lambda x: x + 1), [tf.constant(0)], calls, repeats)
  step = timing.time_steady_steps(model, batches, step_steps, warmup=2, repeats=repeats)
  step_s = step / step_steps

  bandwidth = memory_bandwidth()
  matmul = flops_lib.matmul_flops_per_second()
  sample = features_lib.to_dense_padded(features, schema)
  work = stage_work(
    model, looked_up, batch_size, flops_lib.forward_flops_per_example(model, sample)
  )
  rows = []
  for stage in STAGES:
    row: Dict[str, Any] = {"stage": stage, "ms": 1000.0 * seconds[stage]}
    row["share"] = seconds[stage] / step_s
    if stage in work:
      ((unit, amount),) = work[stage].items()
      limit = bandwidth if stage in MEMORY_STAGES else matmul
      achieved = amount / seconds[stage] if seconds[stage] > 0 else float("inf")
      row.update({unit: amount, "achieved": achieved, "limit": limit, "fraction": achieved / limit})
    rows.append(row)
  gpus = tf.config.list_logical_devices("GPU")
  return {
    "model": model_name,
    "batch_size": batch_size,
    "device": "GPU" if gpus else "CPU",
    "memory_bytes_per_second": bandwidth,
    "matmul_flops_per_second": matmul,
    "step_ms": 1000.0 * step_s,
    "stages_ms": sum(r["ms"] for r in rows if r["stage"] != "input"),
    "call_overhead_ms": 1000.0 * overhead,
    "stages": rows,
  }


def table(results: Sequence[Mapping[str, Any]]) -> str:
  """One block per measured model: each stage's time, share of the step and
  rate against its limit."""
  lines = []
  for r in results:
    lines.append(
      f"{r['model']} batch {r['batch_size']} on {r['device']}: step {r['step_ms']:.2f} ms, "
      f"stages but input add up to {r['stages_ms']:.2f} ms (each pays a call: "
      f"{r['call_overhead_ms']:.3f} ms); memory {r['memory_bytes_per_second'] / 1e9:.1f}"
      f" GB/s, matmul {r['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s"
    )
    lines.append(f"  {'stage':<20}{'ms':>9}{'of step':>9}{'achieved':>16}{'of limit':>10}")
    for s in r["stages"]:
      if "bytes" in s:
        rate = f"{s['achieved'] / 1e9:.2f} GB/s"
      elif "flops" in s:
        rate = f"{s['achieved'] / 1e9:.2f} GFLOP/s"
      else:
        rate = "-"
      fraction = f"{100 * s['fraction']:.1f}%" if "fraction" in s else "-"
      lines.append(
        f"  {s['stage']:<20}{s['ms']:>9.3f}{100 * s['share']:>8.1f}%{rate:>16}{fraction:>10}"
      )
  return "\n".join(lines)
