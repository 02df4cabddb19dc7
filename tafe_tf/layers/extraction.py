"""Expert-mixing levels: TAFE's two extraction stages and the CGC level.

Every level takes ``(x_shared [B, in], x_tasks [B, T, in])``: the input of the
shared experts and each task's own input (at the first level both are the
front-end output; deeper levels get the previous level's outputs). ``x_tasks``
may also be ``[B, in]``, one input for every task: the first level then needs
no per-task copy of the front-end output and evaluates each bank in one GEMM.
A level returns a dict of tensors:

* ``tasks``: ``[B, T, D]`` the per-task representation,
* ``gates``: the per-task gate weights,
* ``shared`` / ``shared_gates`` (levels built with ``shared_output=True``, i.e.
  all but the last of a stack): the shared path's input for the next level and
  its gate weights.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import tensorflow as tf

from tafe_tf.layers import experts as experts_lib
from tafe_tf.layers import gates as gates_lib
from tafe_tf.layers import initializers

LevelInputs = Tuple[tf.Tensor, tf.Tensor]


def _check_inputs(name: str, inputs: LevelInputs, num_tasks: int) -> None:
  x_shared, x_tasks = inputs
  if x_shared.shape.rank != 2 or x_tasks.shape.rank not in (2, 3):
    raise ValueError(
      f"{name}: expected (x_shared [B, in], x_tasks [B, T, in] "
      f"or [B, in]), got shapes {x_shared.shape} and "
      f"{x_tasks.shape}"
    )
  if x_tasks.shape.rank == 3 and x_tasks.shape[1] != num_tasks:
    raise ValueError(f"{name}: x_tasks has {x_tasks.shape[1]} tasks, the level {num_tasks}")


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class AdaptivePatternExtraction(tf.keras.layers.Layer):
  """K shared experts, reconstructed per task by a task-indicator gate.

  ``s_t(x) = sum_k g_{t,k}(x) E_k(x_shared)`` with
  ``g_t = softmax(MLP([x_t ; tau_t]))`` (:class:`TaskIndicatorGate`), one
  learnable ``tau_t`` per task. With ``shared_output`` a further indicator
  vector reconstructs the shared path for the next level the same way. With
  ``task_indicators=False`` (an ablation) each task gets its own linear gate
  (:class:`GroupedGate`) instead, as in MMoE.

  Args:
    num_tasks: T.
    num_experts: K shared experts.
    expert_units: MLP widths of each expert.
    indicator_dim: Length of the task-indicator vectors.
    gate_units: Hidden widths of the gate MLP (``()``: linear gate).
    top_k: Sparse gate keeping k experts per sample and task (None: all).
    shared_output: Also output the shared path (every level but the last).
    task_indicators: Task-indicator gate (True) or per-task gates (False).
    dropout: Dropout in the experts.
    seed: Initializer seed.

  Call: ``(x_shared, x_tasks)`` -> ``{"tasks": [B, T, D], "gates": [B, T, K]}``
  plus ``"shared": [B, D]`` and ``"shared_gates": [B, K]`` with
  ``shared_output``.
  """

  def __init__(
    self,
    num_tasks: int,
    num_experts: int,
    expert_units: Sequence[int],
    indicator_dim: int = 8,
    gate_units: Sequence[int] = (16,),
    top_k: Optional[int] = None,
    shared_output: bool = False,
    task_indicators: bool = True,
    dropout: float = 0.0,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.num_tasks = num_tasks
    self.num_experts = num_experts
    self.task_indicators = task_indicators
    self.expert_units = tuple(int(u) for u in expert_units)
    self.indicator_dim = indicator_dim
    self.gate_units = tuple(int(u) for u in gate_units)
    self.top_k = top_k
    self.shared_output = shared_output
    self.dropout = dropout
    self.seed = seed
    self.experts = experts_lib.ExpertBank(
      1,
      num_experts,
      self.expert_units,
      dropout=dropout,
      seed=initializers.derive_seed(seed, 0),
      name="shared_experts",
    )
    num_gates = num_tasks + int(shared_output)
    if task_indicators:
      self.gate = gates_lib.TaskIndicatorGate(
        num_gates,
        num_experts,
        indicator_dim,
        self.gate_units,
        top_k,
        seed=initializers.derive_seed(seed, 1),
        name="task_indicator_gate",
      )
    else:
      self.gate = gates_lib.GroupedGate(
        num_gates, num_experts, top_k, seed=initializers.derive_seed(seed, 1), name="task_gates"
      )

  def call(self, inputs: LevelInputs, training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
    _check_inputs(self.name, inputs, self.num_tasks)
    x_shared, x_tasks = inputs
    experts = self.experts(x_shared, training=training)  # [B, 1, K, D]
    gate_inputs = x_tasks
    if self.shared_output and x_tasks is not x_shared:
      if x_tasks.shape.rank == 2:
        x_tasks = tf.repeat(x_tasks[:, None, :], self.num_tasks, axis=1)
      gate_inputs = tf.concat([x_tasks, x_shared[:, None, :]], axis=1)
    weights = self.gate(gate_inputs)  # [B, T (+1), K]
    mixed = gates_lib.mix_experts(weights, experts)
    if not self.shared_output:
      return {"tasks": mixed, "gates": weights}
    # Splits, not slices: their gradients are concats, not scatters.
    tasks, shared = tf.split(mixed, [self.num_tasks, 1], axis=1)
    task_weights, shared_weights = tf.split(weights, [self.num_tasks, 1], axis=1)
    return {
      "tasks": tasks,
      "gates": task_weights,
      "shared": tf.squeeze(shared, axis=1),
      "shared_gates": tf.squeeze(shared_weights, axis=1),
    }

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_tasks=self.num_tasks,
      num_experts=self.num_experts,
      expert_units=list(self.expert_units),
      indicator_dim=self.indicator_dim,
      gate_units=list(self.gate_units),
      top_k=self.top_k,
      shared_output=self.shared_output,
      task_indicators=self.task_indicators,
      dropout=self.dropout,
      seed=self.seed,
    )
    return config


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class TaskSpecificExtraction(tf.keras.layers.Layer):
  """Per-task experts mixed with the task's shared reconstruction by a gate.

  ``h_t = sum_j a_{t,j} F_{t,j}(x_t) + a_{t,J} s_t`` with
  ``a_t = softmax(W_t x_t)`` over the J task experts and ``s_t`` (CGC-like).

  Args:
    num_tasks: T.
    experts_per_task: J >= 1 experts owned by each task.
    expert_units: MLP widths of each expert; the last must equal the width of
      ``s_t``.
    dropout: Dropout in the experts.
    seed: Initializer seed.

  Call: ``(x_tasks [B, T, in] or [B, in], shared [B, T, D])`` ->
  ``{"tasks": [B, T, D], "gates": [B, T, J + 1]}`` (the last gate column
  weighs the shared reconstruction).
  """

  def __init__(
    self,
    num_tasks: int,
    experts_per_task: int,
    expert_units: Sequence[int],
    dropout: float = 0.0,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.num_tasks = num_tasks
    self.experts_per_task = experts_per_task
    self.expert_units = tuple(int(u) for u in expert_units)
    self.dropout = dropout
    self.seed = seed
    self.experts = experts_lib.ExpertBank(
      num_tasks,
      experts_per_task,
      self.expert_units,
      dropout=dropout,
      seed=initializers.derive_seed(seed, 0),
      name="task_experts",
    )
    self.gate = gates_lib.GroupedGate(
      num_tasks, experts_per_task + 1, seed=initializers.derive_seed(seed, 1), name="task_gate"
    )

  def call(
    self, inputs: Tuple[tf.Tensor, tf.Tensor], training: Optional[bool] = None
  ) -> Dict[str, tf.Tensor]:
    x_tasks, shared = inputs
    if shared.shape[-1] != self.expert_units[-1]:
      raise ValueError(
        f"{self.name}: shared reconstruction is "
        f"{shared.shape[-1]} wide, task experts "
        f"{self.expert_units[-1]}"
      )
    own = self.experts(x_tasks, training=training)  # [B, T, J, D]
    weights = self.gate(x_tasks)
    own_weights, shared_weight = tf.split(weights, [self.experts_per_task, 1], axis=2)
    return {
      "tasks": gates_lib.mix_experts(own_weights, own) + shared_weight * shared,
      "gates": weights,
    }

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_tasks=self.num_tasks,
      experts_per_task=self.experts_per_task,
      expert_units=list(self.expert_units),
      dropout=self.dropout,
      seed=self.seed,
    )
    return config


@tf.keras.utils.register_keras_serializable(package="tafe_tf")
class CustomizedGateControl(tf.keras.layers.Layer):
  """One CGC level (PLE, Tang et al. 2020); with no task experts, MMoE.

  Task t's gate weighs its own J experts and the K shared experts
  (``softmax(W_t x_t)``); with ``shared_output`` a shared gate on ``x_shared``
  weighs all ``T * J + K`` experts into the next level's shared input.

  Args:
    num_tasks: T.
    num_shared_experts: K.
    experts_per_task: J >= 0 (0: the MMoE layer).
    expert_units: MLP widths of each expert.
    shared_output: Also output the shared path (every PLE level but the last).
    top_k: Sparse task gates (None: dense softmax).
    dropout: Dropout in the experts.
    seed: Initializer seed.

  Call: ``(x_shared, x_tasks)`` -> ``{"tasks": [B, T, D],
  "gates": [B, T, J + K]}`` (own experts first) plus ``"shared": [B, D]`` and
  ``"shared_gates": [B, T * J + K]`` with ``shared_output``.
  """

  def __init__(
    self,
    num_tasks: int,
    num_shared_experts: int,
    experts_per_task: int,
    expert_units: Sequence[int],
    shared_output: bool = False,
    top_k: Optional[int] = None,
    dropout: float = 0.0,
    seed: Optional[int] = None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    if experts_per_task < 0:
      raise ValueError(f"{self.name}: experts_per_task must be >= 0, got {experts_per_task}")
    if shared_output and experts_per_task == 0:
      raise ValueError(
        f"{self.name}: a shared output needs task experts "
        "(with none, the shared path is one of the task paths)"
      )
    self.num_tasks = num_tasks
    self.num_shared_experts = num_shared_experts
    self.experts_per_task = experts_per_task
    self.expert_units = tuple(int(u) for u in expert_units)
    self.shared_output = shared_output
    self.top_k = top_k
    self.dropout = dropout
    self.seed = seed
    self.shared_experts = experts_lib.ExpertBank(
      1,
      num_shared_experts,
      self.expert_units,
      dropout=dropout,
      seed=initializers.derive_seed(seed, 0),
      name="shared_experts",
    )
    self.task_experts = None
    if experts_per_task:
      self.task_experts = experts_lib.ExpertBank(
        num_tasks,
        experts_per_task,
        self.expert_units,
        dropout=dropout,
        seed=initializers.derive_seed(seed, 1),
        name="task_experts",
      )
    self.task_gate = gates_lib.GroupedGate(
      num_tasks,
      experts_per_task + num_shared_experts,
      top_k=top_k,
      seed=initializers.derive_seed(seed, 2),
      name="task_gate",
    )
    self.shared_gate = None
    if shared_output:
      self.shared_gate = gates_lib.GroupedGate(
        1,
        num_tasks * experts_per_task + num_shared_experts,
        seed=initializers.derive_seed(seed, 3),
        name="shared_gate",
      )

  def call(self, inputs: LevelInputs, training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
    _check_inputs(self.name, inputs, self.num_tasks)
    x_shared, x_tasks = inputs
    shared = self.shared_experts(x_shared, training=training)  # [B,1,K,D]
    weights = self.task_gate(x_tasks)
    if self.task_experts is None:
      return {"tasks": gates_lib.mix_experts(weights, shared), "gates": weights}
    own = self.task_experts(x_tasks, training=training)  # [B, T, J, D]
    # Own and shared experts mixed separately and summed: no per-task copy
    # of the shared experts.
    own_weights, shared_weights_per_task = tf.split(
      weights, [self.experts_per_task, self.num_shared_experts], axis=2
    )
    out = {
      "tasks": gates_lib.mix_experts(own_weights, own)
      + gates_lib.mix_experts(shared_weights_per_task, shared),
      "gates": weights,
    }
    if self.shared_output:
      batch = tf.shape(own)[0]
      all_experts = tf.concat([tf.reshape(own, [batch, 1, -1, own.shape[-1]]), shared], axis=2)
      shared_weights = self.shared_gate(x_shared)  # [B, 1, T*J + K]
      out["shared"] = tf.squeeze(gates_lib.mix_experts(shared_weights, all_experts), axis=1)
      out["shared_gates"] = tf.squeeze(shared_weights, axis=1)
    return out

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
      num_tasks=self.num_tasks,
      num_shared_experts=self.num_shared_experts,
      experts_per_task=self.experts_per_task,
      expert_units=list(self.expert_units),
      shared_output=self.shared_output,
      top_k=self.top_k,
      dropout=self.dropout,
      seed=self.seed,
    )
    return config
