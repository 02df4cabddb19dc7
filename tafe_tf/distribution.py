"""Running on TensorFlow's distribution strategies, mixed precision and XLA.

The package trains on TensorFlow's own engine; this module maps flag values to
it and holds what each choice needs around ``model.fit``:

* :func:`get_strategy`: a ``tf.distribute`` strategy by name
  (:data:`STRATEGY_NAMES`); :func:`worker_role` says which task of a cluster
  this process is, :func:`serve` runs a parameter-server cluster's worker and
  ps tasks.
* :func:`precision_policy`: the Keras mixed-precision policy for building a
  model (:data:`PRECISIONS`).
* :func:`compiled_step_inputs`: the input-pipeline side of an XLA-compiled step
  (id lookups done in ``tf.data``, lists padded to few distinct lengths).
* :func:`split_cpu`: several logical CPU devices, so that one machine runs
  several replicas (tests, overhead benchmarks; worker processes on loopback
  are ``tafe_tf.benchmarks.local_cluster``'s).

docs/distribution.md tells what each strategy does with the loss, the metrics,
the input pipeline and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Callable, Dict, Iterator, Mapping, Tuple

import tensorflow as tf

from tafe_tf import config as config_lib
from tafe_tf import features as features_lib
from tafe_tf.layers import embedding as embedding_lib

# The names (and the shard size default) live in the TF-free config module,
# which the command lines' flags read.
STRATEGY_NAMES = config_lib.STRATEGY_NAMES
PRECISIONS = config_lib.PRECISIONS
DEFAULT_MIN_SHARD_BYTES = config_lib.DEFAULT_MIN_SHARD_BYTES
# A collective (all-reduce) that waits longer than this on a multi-worker run
# fails instead of hanging; a dead peer is usually noticed sooner by
# TensorFlow's health check.
DEFAULT_COLLECTIVE_TIMEOUT_S = 300.0


def tf_config() -> Dict[str, Any]:
  """The parsed ``TF_CONFIG`` environment variable (``{}`` when unset).

  Raises:
    ValueError: when it is set but not a JSON object.
  """
  raw = os.environ.get("TF_CONFIG", "")
  if not raw.strip():
    return {}
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(
      f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos}): {raw[:200]!r}"
    ) from None
  if not isinstance(config, dict):
    raise ValueError(f"TF_CONFIG must be a JSON object, got {raw[:200]!r}")
  return config


def _require_cluster(strategy_name: str, needed: Tuple[str, ...]) -> Dict[str, Any]:
  """TF_CONFIG, checked to name the task types ``strategy_name`` needs."""
  config = tf_config()
  cluster = config.get("cluster") or {}
  task = config.get("task") or {}
  missing = [t for t in needed if not cluster.get(t)]
  if not cluster or missing or "type" not in task or "index" not in task:
    raise ValueError(
      f"--strategy={strategy_name} needs TF_CONFIG with a cluster holding "
      f"{', '.join(needed)} tasks and this process's task (type, index); "
      f"got TF_CONFIG={os.environ.get('TF_CONFIG', '')!r}"
    )
  return config


def tpu_resolvable(tpu_address: str = "") -> bool:
  """Whether a TPU is there to use without network probing.

  True when ``tpu_address`` or the ``TPU_NAME`` variable names one, or when
  this host has local TPU devices (a TPU VM). Never asks the GCE metadata
  server, which would stall on machines off Google Cloud.
  """
  if tpu_address or os.environ.get("TPU_NAME"):
    return True
  return bool(tf.config.list_physical_devices("TPU"))


def get_strategy(
  name: str = "auto",
  tpu_address: str = "",
  min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES,
  collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S,
) -> tf.distribute.Strategy:
  """Returns the strategy called ``name``.

  Args:
    name: One of :data:`STRATEGY_NAMES`:

      * ``auto``: ``tpu`` when :func:`tpu_resolvable`, else MirroredStrategy
        over all local GPUs when there are several, else the default strategy
        (the one GPU, or the CPU).
      * ``one_device``: TensorFlow's default strategy (first GPU, else CPU).
        Not ``OneDeviceStrategy``: it places work on the same device, and
        Keras' BackupAndRestore (resume after a crash) does not support it.
      * ``mirrored``: MirroredStrategy over every local GPU (or the CPU, or the
        logical CPU devices when several are configured).
      * ``multi_worker``: MultiWorkerMirroredStrategy, cluster from
        ``TF_CONFIG`` (``worker`` tasks, optionally a ``chief``).
      * ``tpu``: TPUStrategy on ``tpu_address`` (or ``TPU_NAME``, or the local
        TPU VM).
      * ``parameter_server``: ParameterServerStrategy, cluster from
        ``TF_CONFIG`` (``chief``, ``worker`` and ``ps`` tasks; this process
        is the chief). Variables of at least ``2 * min_shard_bytes`` are
        split over the ps tasks.
    tpu_address: TPU name or ``grpc://`` address (``tpu`` and ``auto``).
    min_shard_bytes: Smallest shard of a partitioned variable
      (``parameter_server``).
    collective_timeout_s: Seconds a multi-worker collective may wait before
      failing (``multi_worker``).

  Raises:
    ValueError: for an unknown name, or a cluster strategy without the
      ``TF_CONFIG`` it needs.
  """
  if name not in STRATEGY_NAMES:
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}")
  if name == "tpu" or (name == "auto" and tpu_resolvable(tpu_address)):
    return _tpu_strategy(tpu_address)
  if name == "multi_worker":
    _require_cluster(name, ("worker",))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout_s)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  if name == "parameter_server":
    return _parameter_server_strategy(min_shard_bytes)
  gpus = tf.config.list_logical_devices("GPU")
  if name == "mirrored" or (name == "auto" and len(gpus) > 1):
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def _tpu_strategy(tpu_address: str) -> tf.distribute.Strategy:
  address = tpu_address or os.environ.get("TPU_NAME", "")
  resolver = (
    tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    if address
    else tf.distribute.cluster_resolver.TPUClusterResolver.connect(tpu="local")
  )
  if address:
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def _parameter_server_strategy(min_shard_bytes: int) -> tf.distribute.Strategy:
  config = _require_cluster("parameter_server", ("chief", "worker", "ps"))
  if config["task"]["type"] != "chief":
    raise ValueError(
      "--strategy=parameter_server trains in the chief task only; this "
      f"process is {config['task']['type']}:{config['task']['index']}, which "
      "serves (tafe_tf.distribution.serve, or launch.train does it)"
    )
  num_ps = len(config["cluster"]["ps"])
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
    min_shard_bytes=min_shard_bytes, max_shards=num_ps
  )
  return tf.distribute.ParameterServerStrategy(
    tf.distribute.cluster_resolver.TFConfigClusterResolver(), variable_partitioner=partitioner
  )


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.TPUStrategy)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """MultiWorkerMirroredStrategy: after ``fit`` returns the workers no longer
  run in lockstep, so nothing may use its collectives then (see
  :func:`tafe_tf.training.train`)."""
  return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


@dataclasses.dataclass(frozen=True)
class WorkerRole:
  """This process's task in a cluster (``chief``/``worker`` index 0 alone)."""

  task_type: str
  task_id: int
  is_chief: bool


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
  """Which task this process is; the one that writes a run's files is chief.

  Under MultiWorkerMirroredStrategy the chief is the ``chief`` task, or worker
  0 when the cluster has none; every other strategy runs in one process (the
  parameter-server coordinator is the chief).
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if not is_multi_worker(strategy) or (resolver is None or not resolver.task_type):
    return WorkerRole("chief", 0, True)
  return _role(resolver.task_type, int(resolver.task_id or 0), resolver.cluster_spec().as_dict())


def configured_role(strategy_name: str) -> WorkerRole:
  """:func:`worker_role` from ``TF_CONFIG``, before any strategy is built
  (e.g. to lock the model directory in the chief alone).

  Raises:
    ValueError: when ``TF_CONFIG`` is set but not a JSON object.
  """
  config = tf_config()
  task = config.get("task") or {}
  if strategy_name != "multi_worker" or not task.get("type"):
    return WorkerRole("chief", 0, True)
  return _role(task["type"], int(task.get("index") or 0), config.get("cluster") or {})


def _role(task_type: str, task_id: int, cluster: Mapping[str, Any]) -> WorkerRole:
  """The one rule: the ``chief`` task, or worker 0 of a cluster without one."""
  is_chief = task_type == "chief" or (
    task_type == "worker" and task_id == 0 and "chief" not in cluster
  )
  return WorkerRole(task_type, task_id, is_chief)


def serve(join: bool = True) -> tf.distribute.Server:
  """Runs this process's ``worker`` or ``ps`` task of a ``TF_CONFIG`` cluster.

  Parameter-server training needs these tasks up before the chief starts; they
  only serve (run what the chief sends them) until killed.

  Args:
    join: Block forever (True) or return the started server.

  Raises:
    ValueError: when ``TF_CONFIG`` does not make this process a worker or ps.
  """
  config = _require_cluster("parameter_server", ("worker", "ps"))
  task_type, index = config["task"]["type"], int(config["task"]["index"])
  if task_type not in ("worker", "ps"):
    raise ValueError(
      f"TF_CONFIG task {task_type}:{index} is not a worker or "
      "ps task; the chief trains instead of serving"
    )
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  server = tf.distribute.Server(
    resolver.cluster_spec(),
    job_name=task_type,
    task_index=index,
    protocol=resolver.rpc_layer or "grpc",
    start=True,
  )
  if join:
    server.join()
  return server


# --- mixed precision ------------------------------------------------------------


@contextlib.contextmanager
def precision_policy(name: str = "float32") -> Iterator[tf.keras.mixed_precision.Policy]:
  """Sets the global Keras dtype policy ``name`` inside the block.

  Layers take the policy in force when they are constructed, so build the
  model inside the block; the previous policy comes back after it. Under
  ``mixed_float16`` ``compile`` wraps the optimizer in a LossScaleOptimizer
  (``MultiStepModel.train_step`` scales the loss for it); the loss, the
  chained probabilities and the metrics stay float32 under both policies.

  Raises:
    ValueError: for a name not in :data:`PRECISIONS`.
  """
  if name not in PRECISIONS:
    raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield tf.keras.mixed_precision.global_policy()
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)


# --- XLA --------------------------------------------------------------------------


def padded_length_bucket(length: tf.Tensor) -> tf.Tensor:
  """The smallest power of two >= ``length`` (>= 1), int32.

  XLA compiles one program per input shape; rounding list lengths up to
  powers of two bounds the programs at log2(longest list) + 1.
  """
  length = tf.maximum(tf.cast(length, tf.int32), 1)
  bucket = tf.bitwise.left_shift(
    1,
    tf.cast(
      tf.math.ceil(
        tf.math.log(tf.cast(length, tf.float64)) / tf.math.log(tf.constant(2.0, tf.float64))
      ),
      tf.int32,
    ),
  )
  # Guard float rounding at exact powers of two.
  return tf.where(bucket < length, bucket * 2, bucket)


def compiled_step_inputs(
  model: Any, schema: features_lib.Schema
) -> Callable[[Mapping[str, Any], Any], Tuple[Dict[str, Any], Any]]:
  """A ``dataset.map`` function feeding an XLA-compiled step.

  The step must then take no string, hashing or hash-table work, and as few
  distinct shapes as possible. The returned function takes ``(features,
  labels)`` with padded multi-valued fields (``make_dataset(...,
  dense_padded=True)``), does the id lookups (``model.preprocess``) and pads
  each list field to :func:`padded_length_bucket` of its batch's longest
  list (padding row 0, weight 0: no effect on the pooled means).

  Args:
    model: A :class:`tafe_tf.models.MultiStepModel` (built).
    schema: The dataset schema.
  """
  multi = schema.fields_of(features_lib.FieldKind.WEIGHTED_IDS)

  def prepare(features: Mapping[str, Any], labels: Any) -> Tuple[Dict[str, Any], Any]:
    for f in multi:
      if isinstance(features[f.name], tf.RaggedTensor):
        raise ValueError(
          f"field {f.name!r} is ragged; an XLA-compiled step "
          "needs padded lists (make_dataset(..., "
          "dense_padded=True))"
        )
    out = model.preprocess(features)
    for f in multi:
      rows_key = embedding_lib.ROWS_PREFIX + f.name
      rows, weights = out[rows_key], out[f.weight_key]
      extra = padded_length_bucket(tf.shape(rows)[1]) - tf.shape(rows)[1]
      out[rows_key] = tf.pad(rows, [[0, 0], [0, extra]])
      out[f.weight_key] = tf.pad(weights, [[0, 0], [0, extra]])
    return out, labels

  return prepare


def split_cpu(num_devices: int) -> None:
  """Splits the host CPU into ``num_devices`` logical devices.

  Lets MirroredStrategy run several replicas on one machine without GPUs
  (tests, overhead benchmarks). Must run before TensorFlow initialises its
  devices (before any op runs).

  Raises:
    ValueError: when ``num_devices < 1``.
    RuntimeError: when TensorFlow's devices are already initialised.
  """
  if num_devices < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}")
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
    )
  except RuntimeError as e:
    raise RuntimeError(
      f"cannot split the CPU into {num_devices} devices: "
      f"TensorFlow already initialised its devices ({e}); "
      "split before running anything"
    ) from None
