"""Everything a GPU changes, checked and timed in one bounded run.

The library behind ``launch.benchmark_device``. On the accelerator it finds
(the GPUs, else the CPU) it measures, most important first:

1. ``sweep``: every model's training examples/s at each batch size (float32,
   no XLA) on synthetic data; a model's sweep stops at its first
   out-of-memory batch (:func:`remaining_sweep`), and :func:`sweep_summary`
   says the largest batch that fits;
2. ``input``: the input pipeline's examples/s
   (:func:`tafe_tf.input_pipeline.make_dataset`, parsing included, no model)
   at the smallest and the largest batch, against the fastest model's step
   rate there;
3. ``precision``: every other precision (``mixed_float16``) at each model's
   largest fitting batch;
4. ``xla``: the XLA-compiled step (``jit_compile``; the id lookups then run
   in the input pipeline, :func:`tafe_tf.distribution.compiled_step_inputs`)
   at that batch;
5. ``ali_ccp``: an Ali-CCP-shaped converted dataset (the realistic family's
   ``base`` member, raw files written and converted as a user does), its
   input rate and every model's rate on it;
6. ``mirrored``: MirroredStrategy over the visible GPUs (or the logical CPU
   devices of ``cpu_devices``), skipped on one device;
7. ``precision_xla``: the other precisions with XLA;
8. ``stages``: the train step of each of ``stage_models`` split into its
   stages, each against its limit (:func:`tafe_tf.benchmarks.stages.measure`),
   on the Ali-CCP-shaped data when there is some.

Every training measurement builds the model as ``tafe_tf.training`` does
(:func:`tafe_tf.training.build_and_compile`: strategy scope, dtype policy,
``jit_compile``), trains on parsed batches cached in memory (the input
pipeline is measured apart), runs ``warmup_steps`` untimed steps (tracing,
XLA compilation) and then times steps until ``seconds_per_measurement`` have
passed (:class:`WindowClock`). Before each measurement the remaining budget
is checked against what such a measurement cost so far
(:func:`expected_seconds`); what does not fit is recorded as skipped, with
the reason. An out-of-memory error is a result (``status: "oom"``), as is
any other TensorFlow error of one configuration (``status: "error"``, its
first line): a long run on a lent machine is not lost to one failing case.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from tafe_tf import config as config_lib
from tafe_tf import distribution, input_pipeline, models, training
from tafe_tf import features as features_lib
from tafe_tf.benchmarks import flops as flops_lib
from tafe_tf.benchmarks import stages, timing
from tafe_tf.data import convert, realistic, synthetic


def doubling(low: int, high: int) -> Tuple[int, ...]:
  """``low, 2 * low, ...`` up to ``high`` (inclusive when on the way)."""
  if not 1 <= low <= high:
    raise ValueError(f"need 1 <= low <= high, got {low}, {high}")
  sizes = [low]
  while sizes[-1] * 2 <= high:
    sizes.append(sizes[-1] * 2)
  return tuple(sizes)


# Default batch sizes by device kind (what fits in a few minutes there).
DEFAULT_BATCH_SIZES: Dict[str, Tuple[int, ...]] = {
  "GPU": doubling(2048, 65536),
  "CPU": doubling(256, 2048),
}
# The baseline every other configuration is compared with.
BASELINE_PRECISION = "float32"
PARTS = ("sweep", "input", "precision", "xla", "ali_ccp", "mirrored", "precision_xla", "stages")
# Synthetic rows: this many batches of the largest size (the smaller sizes
# cache up to MAX_CACHED_BATCHES of theirs from the same rows).
ROWS_IN_LARGEST_BATCHES = 2
MAX_CACHED_BATCHES = 8
# A timed window has at least this many steps, however long they take.
MIN_TIMED_STEPS = 2
# The Ali-CCP-shaped data: the realistic family's member, test rows per train row.
ALI_CCP_MEMBER = "base"
ALI_CCP_TEST_SHARE = 0.02
# The stage breakdown: calls per timed run, runs (the best counts), and what
# it costs before one was seen, in training measurements.
STAGE_CALLS = 5
STAGE_REPEATS = 2
STAGES_COST_FACTOR = 3
_OOM_MARKERS = ("out of memory", "resource_exhausted", "oom when allocating")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a device run measures (``launch.benchmark_device``'s flags hold
  the defaults).

  Attributes:
    models: Model names.
    batch_sizes: The sweep's batch sizes, ascending (empty: by device,
      :data:`DEFAULT_BATCH_SIZES`).
    precisions: Dtype policies compared (``float32`` is the baseline and
      always measured by the sweep).
    xla_modes: ``jit_compile`` values compared (False is the baseline).
    seconds_per_measurement: Timed window of one measurement (seconds).
    budget_seconds: The whole run's time, data preparation included.
    warmup_steps: Untimed train steps before each window (tracing, XLA).
    ali_ccp_rows: Impressions of the Ali-CCP-shaped dataset (0: no
      ``ali_ccp`` part).
    cpu_devices: Split the CPU into this many logical devices when there is
      no GPU (``mirrored`` over them; 0 or 1: no split).
    hparams: ``build_model`` keyword arguments given to every model.
    stage_models: Models whose step the ``stages`` part splits.
    learning_rate: Adam learning rate.
    seed: Data and model seed.
  """

  models: Tuple[str, ...]
  batch_sizes: Tuple[int, ...]
  precisions: Tuple[str, ...]
  xla_modes: Tuple[bool, ...]
  seconds_per_measurement: float
  budget_seconds: float
  warmup_steps: int
  ali_ccp_rows: int
  cpu_devices: int
  hparams: Mapping[str, Any]
  stage_models: Tuple[str, ...]
  learning_rate: float
  seed: int

  def __post_init__(self):
    for name in ("models", "stage_models"):
      unknown = sorted(set(getattr(self, name)) - set(models.MODEL_NAMES))
      if unknown:
        raise ValueError(f"{name}: unknown {unknown}; valid: {', '.join(models.MODEL_NAMES)}")
    if not self.models:
      raise ValueError("models: none given")
    bad = sorted(set(self.precisions) - set(config_lib.PRECISIONS))
    if bad:
      raise ValueError(f"precisions: unknown {bad}; valid: {', '.join(config_lib.PRECISIONS)}")
    if list(self.batch_sizes) != sorted(set(self.batch_sizes)) or any(
      b < 1 for b in self.batch_sizes
    ):
      raise ValueError(
        f"batch_sizes must be distinct, ascending and >= 1, got {list(self.batch_sizes)}"
      )
    if self.seconds_per_measurement <= 0 or self.budget_seconds <= 0:
      raise ValueError("seconds_per_measurement and budget_seconds must be > 0")
    if self.warmup_steps < 1:
      raise ValueError(f"warmup_steps must be >= 1, got {self.warmup_steps}")


# --- the device -------------------------------------------------------------------


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def device_info() -> Dict[str, Any]:
  """``kind`` (``GPU`` or ``CPU``), ``name`` (the first GPU's, else the
  CPU's), ``count`` (GPUs, else 1), ``gpus`` (their names), ``host_cpu``,
  ``cpu_count``, ``tensor_float_32`` (float32 matmuls on TF32 cores) and
  ``tensorflow``."""
  gpus = tf.config.list_physical_devices("GPU")
  names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
  return {
    "kind": "GPU" if gpus else "CPU",
    "name": names[0] if names else _cpu_name(),
    "count": len(gpus) or 1,
    "gpus": names,
    "host_cpu": _cpu_name(),
    "cpu_count": os.cpu_count(),
    "tensor_float_32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
    "tensorflow": tf.__version__,
  }


# --- the decisions, as pure functions over the records --------------------------


def is_out_of_memory(error: BaseException) -> bool:
  """Whether a TensorFlow error is the device running out of memory (XLA and
  some allocators say so in an InternalError's message)."""
  if isinstance(error, tf.errors.ResourceExhaustedError):
    return True
  message = str(error).lower()
  return any(marker in message for marker in _OOM_MARKERS)


def _sweep_records(records: Sequence[Mapping[str, Any]], model: str) -> List[Mapping[str, Any]]:
  return [r for r in records if r["part"] == "sweep" and r["model"] == model]


def first_oom_batch(records: Sequence[Mapping[str, Any]], model: str) -> Optional[int]:
  """The smallest batch of ``model``'s sweep that ran out of memory."""
  ooms = [r["batch_size"] for r in _sweep_records(records, model) if r["status"] == "oom"]
  return min(ooms) if ooms else None


def remaining_sweep(
  records: Sequence[Mapping[str, Any]], model: str, batch_sizes: Sequence[int]
) -> Tuple[List[int], List[int]]:
  """``(to run, to skip)``: the batch sizes of ``model``'s sweep not measured
  yet, and those above its first out-of-memory batch (larger ones cannot fit)."""
  done = {r["batch_size"] for r in _sweep_records(records, model)}
  oom = first_oom_batch(records, model)
  todo = [b for b in batch_sizes if b not in done]
  if oom is None:
    return todo, []
  return [b for b in todo if b < oom], [b for b in todo if b > oom]


def largest_fitting_batch(records: Sequence[Mapping[str, Any]], model: str) -> Optional[int]:
  """The largest batch of ``model``'s sweep that trained (None: none did)."""
  fits = [r["batch_size"] for r in _sweep_records(records, model) if r["status"] == "ok"]
  return max(fits) if fits else None


def sweep_summary(
  records: Sequence[Mapping[str, Any]], model_names: Sequence[str]
) -> Dict[str, Dict[str, Any]]:
  """Per model: ``largest_batch`` (fits), ``first_oom_batch`` (None: no batch
  ran out of memory), ``best_examples_per_second`` and ``best_batch``."""
  out = {}
  for model in model_names:
    ok = [r for r in _sweep_records(records, model) if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["examples_per_second"]) if ok else None
    out[model] = {
      "largest_batch": largest_fitting_batch(records, model),
      "first_oom_batch": first_oom_batch(records, model),
      "best_examples_per_second": best["examples_per_second"] if best else None,
      "best_batch": best["batch_size"] if best else None,
    }
  return out


def expected_seconds(
  records: Sequence[Mapping[str, Any]], part: str, seconds_per_measurement: float
) -> float:
  """What the next training measurement of ``part`` should cost: the window
  plus the mean set-up (build, tracing, warm-up) measured so far in that part
  (else in any part; else one window more)."""
  trains = [r for r in records if r.get("status") in ("ok", "oom", "error") and "model" in r]
  same = [r for r in trains if r["part"] == part] or trains
  if not same:
    return 2.0 * seconds_per_measurement
  setup = sum(max(0.0, r["seconds"] - r.get("window_seconds", 0.0)) for r in same) / len(same)
  return seconds_per_measurement + setup


def fastest_rate(
  records: Sequence[Mapping[str, Any]], data: str, batch_size: int
) -> Optional[float]:
  """The fastest baseline (float32, no XLA, one device) training rate on
  ``data`` at ``batch_size``."""
  rates = [
    r["examples_per_second"]
    for r in records
    if r["part"] in ("sweep", "ali_ccp")
    and r["data"] == data
    and r["batch_size"] == batch_size
    and r["status"] == "ok"
  ]
  return max(rates) if rates else None


# --- timing -------------------------------------------------------------------------


class WindowClock(tf.keras.callbacks.Callback):
  """Stops ``fit`` once ``seconds`` have passed after ``warmup`` steps.

  ``times`` holds ``time.perf_counter()`` at every step end; the window runs
  from the end of step ``warmup`` to the end of the last step and has at
  least :data:`MIN_TIMED_STEPS` steps.
  """

  def __init__(self, warmup: int, seconds: float):
    super().__init__()
    # Keep the logs as tensors: converting them each step adds a host sync.
    self._supports_tf_logs = True
    self.warmup = warmup
    self.seconds = seconds
    self.times: List[float] = []

  def on_train_batch_end(self, batch, logs=None):
    now = time.perf_counter()
    self.times.append(now)
    timed = len(self.times) - self.warmup
    if timed >= MIN_TIMED_STEPS and now - self.times[self.warmup - 1] >= self.seconds:
      self.model.stop_training = True

  def window(self) -> Tuple[int, float]:
    """``(timed steps, seconds)``."""
    timed = len(self.times) - self.warmup
    if timed < 1:
      raise RuntimeError(f"fit stopped after {len(self.times)} steps, before the timed window")
    return timed, self.times[-1] - self.times[self.warmup - 1]


def timed_fit(
  model: tf.keras.Model, dataset: tf.data.Dataset, warmup: int, seconds: float
) -> Tuple[int, float]:
  """``(timed steps, seconds)`` of ``model`` training on repeated ``dataset``:
  ``warmup`` untimed steps, then steps until ``seconds`` have passed."""
  clock = WindowClock(warmup, seconds)
  # Far more steps than any window takes; the clock stops the fit.
  model.fit(dataset, epochs=1, steps_per_epoch=10**9, callbacks=[clock], verbose=0)
  return clock.window()


def _peak_memory(device: Mapping[str, Any]) -> Optional[int]:
  if device["kind"] != "GPU":
    return None
  return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def _reset_memory(device: Mapping[str, Any]) -> None:
  if device["kind"] == "GPU":
    tf.config.experimental.reset_memory_stats("GPU:0")


# --- the run --------------------------------------------------------------------------


@dataclasses.dataclass
class _Data:
  """A dataset directory and what every measurement on it shares."""

  name: str
  data_dir: str
  schema: features_lib.Schema
  train_rows: int


class _Run:
  """One device run: the records, the skips, the clock."""

  def __init__(self, settings: Settings, device: Mapping[str, Any], batch_sizes: Sequence[int]):
    self.settings = settings
    self.device = device
    self.batch_sizes = list(batch_sizes)
    self.began = time.perf_counter()
    self.records: List[Dict[str, Any]] = []
    self.skipped: List[Dict[str, Any]] = []
    self.train_flops: Dict[Tuple[str, str], float] = {}
    self.matmul_rate = 0.0
    self.ali_ccp: Optional[_Data] = None

  def remaining(self) -> float:
    return self.settings.budget_seconds - (time.perf_counter() - self.began)

  def skip(self, part: str, reason: str, **what: Any) -> None:
    self.skipped.append({"part": part, **what, "reason": reason})

  def fits(self, part: str, **what: Any) -> bool:
    """Whether a training measurement of ``part`` fits the budget left
    (else it is recorded as skipped)."""
    need = expected_seconds(self.records, part, self.settings.seconds_per_measurement)
    if self.remaining() >= need:
      return True
    self.skip(
      part, f"budget: {self.remaining():.1f} s left, a measurement takes ~{need:.1f} s", **what
    )
    return False

  def train(
    self,
    part: str,
    data: _Data,
    model_name: str,
    batch_size: int,
    precision: str = BASELINE_PRECISION,
    xla: bool = False,
    strategy: Optional[tf.distribute.Strategy] = None,
  ) -> Dict[str, Any]:
    """Measures one configuration and records it."""
    strategy = strategy or tf.distribute.get_strategy()
    record: Dict[str, Any] = {
      "part": part,
      "data": data.name,
      "model": model_name,
      "batch_size": batch_size,
      "precision": precision,
      "xla": xla,
      "strategy": type(strategy).__name__,
      "replicas": strategy.num_replicas_in_sync,
      "device": self.device["name"],
    }
    began = time.perf_counter()
    _reset_memory(self.device)
    model = None
    try:
      hparams = {"train_metrics": False, "seed": self.settings.seed, **dict(self.settings.hparams)}
      model = training.build_and_compile(
        model_name,
        data.schema,
        hparams,
        self.settings.learning_rate,
        strategy,
        precision=precision,
        jit_compile=xla,
      )
      num_batches = max(1, min(MAX_CACHED_BATCHES, data.train_rows // batch_size))
      dataset = self._batches(data, model, batch_size, num_batches, xla)
      # Every cached batch once before the window: a new list length can
      # retrace the step (and under XLA compiles a new program).
      warmup = max(self.settings.warmup_steps, num_batches)
      steps, window = timed_fit(model, dataset, warmup, self.settings.seconds_per_measurement)
      record.update(
        status="ok",
        warmup_steps=warmup,
        examples_per_second=steps * batch_size / window,
        step_ms=1000.0 * window / steps,
        timed_steps=steps,
        window_seconds=window,
      )
      key = (data.name, model_name)
      if key not in self.train_flops and precision == BASELINE_PRECISION and not xla:
        self.train_flops[key] = self._train_flops(data, model, batch_size)
      if key in self.train_flops and self.matmul_rate:
        record["train_flops_per_example"] = self.train_flops[key]
        record["mfu"] = self.train_flops[key] * record["examples_per_second"] / self.matmul_rate
    except tf.errors.OpError as e:
      record.update(
        status="oom" if is_out_of_memory(e) else "error",
        examples_per_second=None,
        error=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}",
      )
    finally:
      record["peak_memory_bytes"] = _peak_memory(self.device)
      del model
      tf.keras.backend.clear_session()
      gc.collect()
    record["seconds"] = time.perf_counter() - began
    self.records.append(record)
    return record

  def _batches(
    self, data: _Data, model: tf.keras.Model, batch_size: int, num_batches: int, xla: bool
  ) -> tf.data.Dataset:
    if not xla:
      return timing.cached_batches(data.data_dir, batch_size, num_batches)
    # As tafe_tf.training feeds an XLA step: padded lists, lookups in tf.data.
    ds = input_pipeline.make_dataset(
      data.data_dir,
      "train",
      batch_size,
      schema=data.schema,
      drop_remainder=True,
      dense_padded=True,
      repeat=True,
    )
    prepare = distribution.compiled_step_inputs(model, data.schema)
    return ds.map(prepare).take(num_batches).cache().repeat()

  def _train_flops(self, data: _Data, model: tf.keras.Model, batch_size: int) -> float:
    features, _ = next(iter(timing.cached_batches(data.data_dir, min(batch_size, 256), 1)))
    sample = features_lib.to_dense_padded(features, data.schema)
    forward = flops_lib.forward_flops_per_example(model, sample)
    return flops_lib.TRAINING_FLOPS_PER_FORWARD * forward

  def records_batch(self, part: str) -> Optional[int]:
    """The batch of ``part``'s first record (None: no record)."""
    return next((r["batch_size"] for r in self.records if r["part"] == part), None)

  def split_step(self, data: _Data, model_name: str, batch_size: int) -> Dict[str, Any]:
    """Times the stages of one model's step and records them."""
    record: Dict[str, Any] = {
      "part": "stages",
      "data": data.name,
      "model": model_name,
      "batch_size": batch_size,
      "precision": BASELINE_PRECISION,
      "xla": False,
      "device": self.device["name"],
    }
    began = time.perf_counter()
    try:
      result = stages.measure(
        data.data_dir,
        model_name,
        {"seed": self.settings.seed, **dict(self.settings.hparams)},
        batch_size,
        calls=STAGE_CALLS,
        repeats=STAGE_REPEATS,
        step_steps=STAGE_CALLS,
        input_seconds=min(1.0, self.settings.seconds_per_measurement),
        learning_rate=self.settings.learning_rate,
      )
      record.update(
        status="ok", examples_per_second=1000.0 * batch_size / result["step_ms"], breakdown=result
      )
    except tf.errors.OpError as e:
      record.update(
        status="oom" if is_out_of_memory(e) else "error",
        examples_per_second=None,
        error=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}",
      )
    finally:
      tf.keras.backend.clear_session()
      gc.collect()
    record["seconds"] = time.perf_counter() - began
    self.records.append(record)
    return record

  def read(self, data: _Data, batch_size: int) -> Dict[str, Any]:
    """Measures the input pipeline at ``batch_size`` and records it."""
    began = time.perf_counter()
    examples, seconds = stages.input_rate(
      data.data_dir, data.schema, batch_size, self.settings.seconds_per_measurement
    )
    rate = examples / seconds
    step = fastest_rate(self.records, data.name, batch_size)
    record = {
      "part": "input",
      "data": data.name,
      "batch_size": batch_size,
      "precision": None,
      "xla": None,
      "device": f"host CPU: {self.device['host_cpu']}",
      "status": "ok",
      "examples_per_second": rate,
      "examples": examples,
      "window_seconds": seconds,
      "fastest_step_examples_per_second": step,
      "input_over_step": rate / step if step else None,
      "seconds": time.perf_counter() - began,
    }
    self.records.append(record)
    return record


def _synthetic_data(work_dir: str, rows: int, seed: int) -> _Data:
  data_dir = os.path.join(work_dir, f"synthetic-{rows}-s{seed}")
  synthetic.ensure_dataset(data_dir, synthetic.SyntheticConfig(num_steps=2, seed=seed), rows, 0, 0)
  return _Data("synthetic", data_dir, features_lib.Schema.load(data_dir), rows)


def _ali_ccp_data(work_dir: str, rows: int, seed: int) -> Tuple[_Data, Dict[str, Any]]:
  """The realistic ``base`` member's raw Ali-CCP files, converted."""
  raw_dir = os.path.join(work_dir, f"raw-ali_ccp-{rows}-s{seed}")
  data_dir = os.path.join(work_dir, f"ali_ccp-{rows}-s{seed}")
  config = realistic.resolve(ALI_CCP_MEMBER)
  if seed:
    config = dataclasses.replace(config, seed=config.seed * 1000 + seed)
  began = time.perf_counter()
  realistic.write_member(
    config, raw_dir, num_train=rows, num_test=max(1, int(rows * ALI_CCP_TEST_SHARE))
  )
  written = time.perf_counter()
  report = convert.convert_ali_ccp(raw_dir, data_dir)
  converted = time.perf_counter()
  train_rows = int(report["rows_per_split"]["train"])
  info = {
    "member": config.name,
    "impressions": rows,
    "rows_per_split": report["rows_per_split"],
    "write_seconds": written - began,
    "convert_seconds": converted - written,
    "convert_impressions_per_second": report["rows_read"] / (converted - written),
  }
  return _Data("ali_ccp", data_dir, features_lib.Schema.load(data_dir), train_rows), info


def benchmark(settings: Settings, work_dir: Optional[str] = None) -> Dict[str, Any]:
  """Runs the parts in :data:`PARTS` order within ``settings.budget_seconds``.

  Args:
    settings: What to measure.
    work_dir: Where the datasets go (default: a temporary folder, deleted
      afterwards).

  Returns:
    ``device`` (:func:`device_info`), ``settings``, ``batch_sizes``,
    ``matmul_flops_per_second``, ``load_average`` (before, after),
    ``data`` (per dataset its rows; the Ali-CCP one's write and convert
    times), ``measurements`` (one record per measurement: part, data, model,
    batch_size, precision, xla, device, status, examples_per_second, ...),
    ``sweep`` (:func:`sweep_summary`), ``skipped`` (part, what, reason),
    ``elapsed_seconds``.
  """
  if settings.cpu_devices > 1 and not tf.config.list_physical_devices("GPU"):
    # Before anything runs in TensorFlow.
    distribution.split_cpu(settings.cpu_devices)
  load_before = os.getloadavg()
  device = device_info()
  batch_sizes = settings.batch_sizes or DEFAULT_BATCH_SIZES[device["kind"]]
  run = _Run(settings, device, batch_sizes)
  if work_dir is None:
    with tempfile.TemporaryDirectory(prefix="tafe_bench_device_") as tmp:
      data = _run_parts(run, tmp)
  else:
    data = _run_parts(run, work_dir)
  return {
    "device": device,
    "settings": dataclasses.asdict(settings),
    "batch_sizes": list(batch_sizes),
    "matmul_flops_per_second": run.matmul_rate,
    "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
    "data": data,
    "measurements": run.records,
    "sweep": sweep_summary(run.records, settings.models),
    "skipped": run.skipped,
    "elapsed_seconds": time.perf_counter() - run.began,
  }


def _run_parts(run: _Run, work_dir: str) -> Dict[str, Any]:
  s = run.settings
  rows = max(run.batch_sizes[-1] * ROWS_IN_LARGEST_BATCHES, run.batch_sizes[0] * MAX_CACHED_BATCHES)
  synth = _synthetic_data(work_dir, rows, s.seed)
  data: Dict[str, Any] = {"synthetic": {"train_rows": rows}}
  run.matmul_rate = flops_lib.matmul_flops_per_second(
    n=4096 if run.device["kind"] == "GPU" else 1024
  )

  # 1. The sweep: ascending batches, every model at each; a model stops at its
  # first out-of-memory batch.
  for batch in run.batch_sizes:
    for model in s.models:
      todo, _ = remaining_sweep(run.records, model, [batch])
      if not todo:
        oom = first_oom_batch(run.records, model)
        run.skip("sweep", f"out of memory at batch {oom} already", model=model, batch_size=batch)
      elif run.fits("sweep", model=model, batch_size=batch):
        run.train("sweep", synth, model, batch)

  # 2. The input pipeline against the step, at the smallest and largest batch.
  for batch in sorted({run.batch_sizes[0], run.batch_sizes[-1]}):
    if run.remaining() >= s.seconds_per_measurement:
      run.read(synth, batch)
    else:
      run.skip("input", "budget", data="synthetic", batch_size=batch)

  # 3, 4. Precision and XLA at each model's largest fitting batch.
  others = [p for p in s.precisions if p != BASELINE_PRECISION]
  grid = {
    "precision": [(p, False) for p in others],
    "xla": [(BASELINE_PRECISION, True)] if True in s.xla_modes else [],
  }
  for part, combos in grid.items():
    _compare(run, synth, part, combos)

  # 5. The Ali-CCP-shaped data.
  if s.ali_ccp_rows:
    _ali_ccp_part(run, work_dir, data)

  # 6. MirroredStrategy over the visible devices.
  _mirrored_part(run, synth)

  # 7. Precision with XLA.
  if True in s.xla_modes:
    _compare(run, synth, "precision_xla", [(p, True) for p in others])

  # 8. The stages of a step, on the real shape when there is one.
  _stages_part(run, run.ali_ccp or synth)
  return data


def _compare(run: _Run, data: _Data, part: str, combos: Sequence[Tuple[str, bool]]) -> None:
  for precision, xla in combos:
    for model in run.settings.models:
      what = dict(model=model, precision=precision, xla=xla)
      batch = largest_fitting_batch(run.records, model)
      if batch is None:
        run.skip(part, "no batch of the sweep trained", **what)
      elif run.fits(part, batch_size=batch, **what):
        run.train(part, data, model, batch, precision=precision, xla=xla)


def _ali_ccp_part(run: _Run, work_dir: str, data: Dict[str, Any]) -> None:
  s = run.settings
  # Writing and converting costs about a measurement per 10k rows on 2 cores.
  if run.remaining() < 2 * s.seconds_per_measurement:
    run.skip("ali_ccp", "budget", rows=s.ali_ccp_rows)
    return
  ali, info = _ali_ccp_data(work_dir, s.ali_ccp_rows, s.seed)
  data["ali_ccp"] = info
  run.ali_ccp = ali
  # The largest sweep batch with at least two full batches of rows.
  fitting = [b for b in run.batch_sizes if 2 * b <= ali.train_rows]
  if not fitting:
    run.skip("ali_ccp", f"{ali.train_rows} train rows: fewer than 2 of the smallest batch")
    return
  batch = fitting[-1]
  info["batch_size"] = batch
  for model in s.models:
    if run.fits("ali_ccp", model=model, batch_size=batch):
      run.train("ali_ccp", ali, model, batch)
  if run.remaining() >= s.seconds_per_measurement:
    run.read(ali, batch)
  else:
    run.skip("input", "budget", data="ali_ccp", batch_size=batch)


def _mirrored_part(run: _Run, data: _Data) -> None:
  if run.device["kind"] == "GPU":
    replicas, what = run.device["count"], "GPU"
  else:
    replicas, what = max(1, run.settings.cpu_devices), "logical CPU device"
  if replicas < 2:
    run.skip("mirrored", f"1 {what} visible")
    return
  strategy = distribution.get_strategy("mirrored")
  if strategy.num_replicas_in_sync != replicas:
    raise RuntimeError(
      f"MirroredStrategy runs {strategy.num_replicas_in_sync} replicas, not the {replicas} "
      f"{what}s visible"
    )
  for model in run.settings.models:
    batch = largest_fitting_batch(run.records, model)
    if batch is None:
      run.skip("mirrored", "no batch of the sweep trained", model=model)
    elif run.fits("mirrored", model=model, batch_size=batch):
      run.train("mirrored", data, model, batch, strategy=strategy)


def _stages_part(run: _Run, data: _Data) -> None:
  for model in run.settings.stage_models:
    # The batch the models trained at on this data.
    batch = (
      run.records_batch("ali_ccp")
      if data.name == "ali_ccp"
      else largest_fitting_batch(run.records, model)
    )
    if batch is None:
      run.skip("stages", "no batch of the sweep trained", model=model)
      continue
    seen = [r for r in run.records if r["part"] == "stages"]
    # Several functions traced and timed: a few training measurements' worth.
    need = expected_seconds(run.records, "stages", run.settings.seconds_per_measurement) * (
      1 if seen else STAGES_COST_FACTOR
    )
    if run.remaining() < need:
      run.skip("stages", f"budget: {run.remaining():.1f} s left, ~{need:.1f} s needed", model=model)
      continue
    run.split_step(data, model, batch)


# --- the table ------------------------------------------------------------------------


def _rate(record: Optional[Mapping[str, Any]]) -> str:
  if record is None:
    return "-"
  if record["status"] != "ok":
    return record["status"].upper()
  return f"{record['examples_per_second']:,.0f}"


def table(result: Mapping[str, Any]) -> str:
  """The run as text: the sweep, the comparisons, input against step, the
  skipped measurements."""
  d = result["device"]
  records = result["measurements"]
  models_run = result["settings"]["models"]
  lines = [
    f"device: {d['name']} x{d['count']} ({d['kind']}; host {d['host_cpu']}, "
    f"{d['cpu_count']} CPUs; TF {d['tensorflow']}"
    + (f", TF32 {'on' if d['tensor_float_32'] else 'off'})" if d["kind"] == "GPU" else ")"),
    f"float32 matmul rate: {result['matmul_flops_per_second'] / 1e9:,.1f} GFLOP/s; "
    f"elapsed {result['elapsed_seconds']:.0f} s of {result['settings']['budget_seconds']:.0f}",
    "",
    "training examples/s, synthetic data, float32, no XLA (OOM: out of memory):",
  ]

  def find(part: str, model: str, **match: Any) -> Optional[Mapping[str, Any]]:
    for r in records:
      if r["part"] == part and r.get("model") == model:
        if all(r.get(k) == v for k, v in match.items()):
          return r
    return None

  batches = result["batch_sizes"]
  lines.append(f"{'model':<14}" + "".join(f"{b:>12}" for b in batches) + f"{'largest fit':>13}")
  for m in models_run:
    cells = "".join(f"{_rate(find('sweep', m, batch_size=b)):>12}" for b in batches)
    largest = result["sweep"][m]["largest_batch"]
    lines.append(f"{m:<14}{cells}{str(largest or '-'):>13}")

  compared = [r for r in records if r["part"] in ("precision", "xla", "precision_xla", "mirrored")]
  if compared:
    lines += ["", "at each model's largest fitting batch (ratio to float32, no XLA, one device):"]
    lines.append(
      f"{'part':<15}{'model':<14}{'batch':>7}{'precision':>16}{'xla':>5}{'ex/s':>13}{'ratio':>8}"
    )
    for r in compared:
      base = find("sweep", r["model"], batch_size=r["batch_size"])
      ratio = (
        f"{r['examples_per_second'] / base['examples_per_second']:.2f}"
        if r["status"] == "ok" and base and base["status"] == "ok"
        else "-"
      )
      label = r["part"] if r["part"] != "mirrored" else f"mirrored x{r['replicas']}"
      lines.append(
        f"{label:<15}{r['model']:<14}{r['batch_size']:>7}{r['precision']:>16}"
        f"{'on' if r['xla'] else 'off':>5}{_rate(r):>13}{ratio:>8}"
      )

  ali = [r for r in records if r["part"] == "ali_ccp"]
  if ali:
    info = result["data"]["ali_ccp"]
    lines += [
      "",
      f"Ali-CCP-shaped data ({info['impressions']:,} impressions, converted at "
      f"{info['convert_impressions_per_second']:,.0f}/s), batch {info['batch_size']}:",
    ]
    lines += [f"  {r['model']:<14}{_rate(r):>12}" for r in ali]

  reads = [r for r in records if r["part"] == "input"]
  if reads:
    lines += ["", "input pipeline (make_dataset, parsing included) against the fastest step:"]
    for r in reads:
      step = r["fastest_step_examples_per_second"]
      lines.append(
        f"  {r['data']:<10} batch {r['batch_size']:>6}: input {r['examples_per_second']:>12,.0f}"
        f" ex/s, step {step or 0:>12,.0f} ex/s, input/step "
        + (f"{r['input_over_step']:.2f}" if r["input_over_step"] else "-")
      )

  split = [r["breakdown"] for r in records if r["part"] == "stages" and r["status"] == "ok"]
  if split:
    lines += ["", "the step's stages, each alone (tafe_tf.benchmarks.stages):", stages.table(split)]

  failed = [r for r in records if r["status"] == "error"]
  if failed:
    lines += ["", "errors:"]
    lines += [
      f"  {r['part']} {r.get('model')} batch {r['batch_size']}: {r['error']}" for r in failed
    ]
  if result["skipped"]:
    lines += ["", f"skipped ({len(result['skipped'])}):"]
    for s in result["skipped"]:
      what = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("part", "reason"))
      lines.append(f"  {s['part']}{' ' + what if what else ''}: {s['reason']}")
  return "\n".join(lines)
