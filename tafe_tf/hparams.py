"""Every model's hyperparameters, as frozen dataclasses; no TensorFlow here.

:class:`BaseHParams` holds what all models share, each model's subclass adds
its own (``TAFEHParams`` for ``tafe``, and so on); :func:`hparams_class` maps a
model name (:data:`MODEL_NAMES`) to its dataclass. The models
(:mod:`tafe_tf.models`) build from these; the command lines define their flags
from them without importing TensorFlow (a fast ``--help``), so every default
lives here, once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, Optional, Tuple, Type

MODEL_NAMES: Tuple[str, ...] = (
  "tafe",
  "esmm",
  "mmoe",
  "ple",
  "aitm",
  "shared_bottom",
  "escm2",
  "dcmt",
)

# TAFE's dependence transfer modes: tafe_tf.layers.transfer's names (that
# module needs TensorFlow; tests/test_hparams.py keeps the two equal).
GATED = "gated"
ATTENTION = "attention"
NONE = "none"
TRANSFER_MODES: Tuple[str, ...] = (GATED, ATTENTION, NONE)
# How the DTL loss normalises its conditional terms (tafe_tf.losses).
IMPRESSIONS = "impressions"
PARENTS = "parents"
CONDITIONAL_NORMALIZATIONS: Tuple[str, ...] = (IMPRESSIONS, PARENTS)
# The front end's explicit feature interaction (tafe_tf.layers.cross).
CROSS = "cross"
DOT = "dot"
INTERACTIONS: Tuple[str, ...] = (NONE, CROSS, DOT)
# ESCM2's counterfactual regularisers (tafe_tf.models.escm2).
IPS = "ips"
DR = "dr"
VARIANTS = (IPS, DR)


@dataclasses.dataclass(frozen=True)
class BaseHParams:
  """Hyperparameters shared by all models; each default lives here, once.

  A model's subclass adds its own (and may change a shared one's default,
  e.g. AITM's ``calibration_weight``). ``build_model`` rejects any name the
  model's dataclass lacks.

  Attributes:
    embedding_dim: Width of every id embedding and dense projection (the
      schema describes data only; embedding widths are the model's).
    field_embedding_dims: Per-field widths overriding ``embedding_dim``
      (``{"shop": 8}``; 0 for a dense field passes its vector through
      unprojected); None: every field ``embedding_dim`` wide.
    dropout: Dropout rate in experts and towers.
    seed: Seed of every initializer and dropout mask (None: unseeded when
      built directly; ``tafe_tf.training.train`` then uses the run seed,
      ``TrainingConfig.seed``).
    fused_embedding: One table per embedding width (True) or per field.
    step_weights: DTL weight w_t per step, on all of its terms (None: all 1).
    entire_space_weight: DTL weight of the entire-space BCE of steps t > 1.
    conditional_weight: DTL weight of the conditional BCE of steps t > 1 on
      the rows where step t-1 happened (chained models only).
    conditional_normalization: ``"impressions"`` (the likelihood) or
      ``"parents"`` (a conditional term averaged over its parent rows: a loss
      scale for rare late steps). :mod:`tafe_tf.losses` has the formula.
    calibration_weight: Weight of the calibrator ``relu(p_t - p_{t-1})``.
    train_metrics: Update the step metrics (thresholded AUCs, logloss, PCOC)
      in training steps too; False keeps them for evaluation and validation
      only, which makes a CPU training step up to ~2x faster (the losses are
      still logged).
    tpu_embedding: Keep the id tables in a ``tfrs.layers.embedding
      .TPUEmbedding`` (:class:`~tafe_tf.layers.tpu_embedding
      .TPUFeatureEmbedding`): built under a TPUStrategy they live in TPU
      embedding memory, elsewhere they are ordinary variables (checkpoints
      compatible both ways). ``launch.train --strategy=tpu`` turns it on.
    tpu_embedding_learning_rate: Adam learning rate of the TPU embedding
      engine for the tables (used on TPUs only; elsewhere the model's
      optimizer trains them).
    interaction: Explicit feature interaction between the front end and the
      networks (:mod:`tafe_tf.layers.cross`): ``"none"``, ``"cross"``
      (DCN-v2 cross layers over the flat embedding) or ``"dot"`` (pairwise
      dot products of the field embeddings concatenated to it; needs one
      width for every field).
    cross_layers: Stacked cross layers (``interaction="cross"``).
    cross_projection_dim: Rank of each cross layer's ``W = U V`` (None: full
      rank; DCN-v2 found about a quarter of the input width as good).
  """

  embedding_dim: int = 16
  field_embedding_dims: Optional[Dict[str, int]] = None
  dropout: float = 0.0
  seed: Optional[int] = None
  fused_embedding: bool = True
  step_weights: Optional[Tuple[float, ...]] = None
  entire_space_weight: float = 1.0
  conditional_weight: float = 0.0
  conditional_normalization: str = IMPRESSIONS
  calibration_weight: float = 0.0
  train_metrics: bool = True
  tpu_embedding: bool = False
  tpu_embedding_learning_rate: float = 1e-3
  interaction: str = NONE
  cross_layers: int = 2
  cross_projection_dim: Optional[int] = None

  def __post_init__(self):
    # JSON gives lists; the architecture wants hashable tuples.
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, list):
        object.__setattr__(self, f.name, tuple(value))
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    if self.embedding_dim < 1:
      raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
    if self.interaction not in INTERACTIONS:
      raise ValueError(f"interaction must be one of {INTERACTIONS}, got {self.interaction!r}")
    if self.cross_layers < 1:
      raise ValueError(f"cross_layers must be >= 1, got {self.cross_layers}")
    if self.cross_projection_dim is not None and self.cross_projection_dim < 1:
      raise ValueError(
        f"cross_projection_dim must be >= 1 or None, got {self.cross_projection_dim}"
      )

  def to_json(self) -> Dict[str, Any]:
    """Every hyperparameter, defaults included, as JSON values."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def check_hparam_names(
  model_name: str, hparams_class: Type[BaseHParams], names: Iterable[str]
) -> None:
  """Raises ValueError unless every name is a field of ``hparams_class``:
  ``"mmoe takes no hyperparameter 'num_levels'; its hyperparameters: ..."``
  (sorted)."""
  valid = sorted(f.name for f in dataclasses.fields(hparams_class))
  unknown = sorted(set(names) - set(valid))
  if unknown:
    raise ValueError(
      f"{model_name} takes no hyperparameter{'s' if len(unknown) > 1 else ''}"
      f" {', '.join(repr(n) for n in unknown)}; its hyperparameters: "
      f"{', '.join(valid)}"
    )


@dataclasses.dataclass(frozen=True)
class TAFEHParams(BaseHParams):
  """TAFE's hyperparameters (plus :class:`BaseHParams`).

  Attributes:
    num_experts: K shared experts per level.
    experts_per_task: J task-specific experts per step and level (0 switches
      task-specific extraction off: h_t = s_t).
    expert_units: MLP widths of every expert.
    tower_units: Hidden widths of each step's tower.
    num_levels: Stacked extraction levels L.
    task_indicators: Task-indicator gate (True) or one independent linear
      gate per step (False, MMoE-like) over the shared experts.
    indicator_dim: Length of each task-indicator vector.
    gate_units: Hidden widths of the task-indicator gate (``()``: linear).
    top_k: Sparse shared-expert gate keeping k experts (None: dense).
    field_interaction: Self-attention + squeeze-and-excitation across fields
      in front of the experts (needs one embedding width for all fields). On
      by default: on the default synthetic set it raised test AUC by about
      0.005-0.013 per step (docs/models.md).
    interaction_heads: Attention heads of the field interaction.
    transfer: Dependence transfer, ``gated``, ``attention`` (AITM) or
      ``none``.
    transfer_stop_gradient: Stop gradients from step t into step t-1 through
      the transfer.
    gated_towers: Feature gate on each tower's input.
    chained: Conditional heads with chained probabilities (True) or
      independent entire-space heads (False).
  """

  num_experts: int = 4
  experts_per_task: int = 1
  expert_units: Tuple[int, ...] = (64, 32)
  tower_units: Tuple[int, ...] = (32,)
  num_levels: int = 1
  task_indicators: bool = True
  indicator_dim: int = 8
  gate_units: Tuple[int, ...] = (16,)
  top_k: Optional[int] = None
  field_interaction: bool = True
  interaction_heads: int = 2
  transfer: str = GATED
  transfer_stop_gradient: bool = False
  gated_towers: bool = True
  chained: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.num_levels < 1 or self.num_experts < 1 or self.experts_per_task < 0:
      raise ValueError(
        "TAFE needs num_levels >= 1, num_experts >= 1 and "
        f"experts_per_task >= 0; got {self.num_levels}, "
        f"{self.num_experts}, {self.experts_per_task}"
      )
    if self.transfer not in TRANSFER_MODES:
      raise ValueError(f"transfer must be one of {TRANSFER_MODES}, got {self.transfer!r}")


@dataclasses.dataclass(frozen=True)
class ESMMHParams(BaseHParams):
  """ESMM's hyperparameters (plus :class:`BaseHParams`): ``tower_units``,
  the hidden widths of each step's tower."""

  tower_units: Tuple[int, ...] = (128, 64, 32)


@dataclasses.dataclass(frozen=True)
class MMoEHParams(BaseHParams):
  """MMoE's hyperparameters (plus :class:`BaseHParams`).

  Attributes:
    num_experts: K shared experts.
    expert_units: MLP widths of each expert.
    tower_units: Hidden widths of each step's tower.
    top_k: Sparse gates keeping k experts (None: dense softmax, the paper's).
  """

  num_experts: int = 4
  expert_units: Tuple[int, ...] = (64, 32)
  tower_units: Tuple[int, ...] = (32,)
  top_k: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class PLEHParams(BaseHParams):
  """PLE's hyperparameters (plus :class:`BaseHParams`).

  Attributes:
    num_experts: K shared experts per level.
    experts_per_task: Experts owned by each step per level (>= 1).
    expert_units: MLP widths of each expert.
    tower_units: Hidden widths of each step's tower.
    num_levels: Stacked CGC levels.
  """

  num_experts: int = 2
  experts_per_task: int = 1
  expert_units: Tuple[int, ...] = (64, 32)
  tower_units: Tuple[int, ...] = (32,)
  num_levels: int = 2

  def __post_init__(self):
    super().__post_init__()
    if self.num_levels < 1 or self.experts_per_task < 1:
      raise ValueError(
        "PLE needs num_levels >= 1 and experts_per_task >= 1, "
        f"got {self.num_levels} and {self.experts_per_task}"
      )


@dataclasses.dataclass(frozen=True)
class AITMHParams(BaseHParams):
  """AITM's hyperparameters (plus :class:`BaseHParams`).

  Attributes:
    tower_units: Widths of each step's tower (the reference: 128, 64, 32).
    calibration_weight: The calibrator weight (0.6 in the reference).
  """

  tower_units: Tuple[int, ...] = (128, 64, 32)
  calibration_weight: float = 0.6


@dataclasses.dataclass(frozen=True)
class SharedBottomHParams(BaseHParams):
  """Shared-Bottom's hyperparameters (plus :class:`BaseHParams`).

  Attributes:
    expert_units: Widths of the shared bottom MLP.
    tower_units: Hidden widths of each step's tower.
  """

  expert_units: Tuple[int, ...] = (64, 32)
  tower_units: Tuple[int, ...] = (32,)


@dataclasses.dataclass(frozen=True)
class ESCM2HParams(BaseHParams):
  """ESCM2's hyperparameters (plus :class:`BaseHParams`).

  Attributes:
    tower_units: Hidden widths of each step's tower (and imputation tower).
    escm2_variant: The counterfactual regulariser, ``"ips"`` or ``"dr"``
      (why IPS by default: tafe_tf/models/escm2.py).
    counterfactual_weight: Its weight (the reference's 0.5).
    propensity_floor: Lower clip of the propensity p^ (weights <= 1 / it).
    conditional_weight: The naive click-space CVR loss; 0 (replaced by the
      counterfactual term).
  """

  tower_units: Tuple[int, ...] = (128, 64, 32)
  escm2_variant: str = IPS
  counterfactual_weight: float = 0.5
  propensity_floor: float = 0.01
  conditional_weight: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    if self.escm2_variant not in VARIANTS:
      raise ValueError(f"escm2_variant must be one of {VARIANTS}, got {self.escm2_variant!r}")
    if self.counterfactual_weight < 0:
      raise ValueError(f"counterfactual_weight must be >= 0, got {self.counterfactual_weight}")
    if not 0.0 < self.propensity_floor <= 1.0:
      raise ValueError(f"propensity_floor must be in (0, 1], got {self.propensity_floor}")


@dataclasses.dataclass(frozen=True)
class DCMTHParams(BaseHParams):
  """DCMT's hyperparameters (plus :class:`BaseHParams`).

  Attributes:
    tower_units: Hidden widths of each step's tower (factual and
      counterfactual).
    counterfactual_weight: Weight of the factual + counterfactual IPS terms.
    constraint_weight: Weight of the twin-tower constraint
      ``|q_t + q*_t - 1|`` (the reference's 1e-3).
    propensity_floor: p^ is clipped into ``[floor, 1 - floor]``.
    conditional_weight: The naive click-space CVR loss; 0 (replaced by the
      factual term).
  """

  tower_units: Tuple[int, ...] = (128, 64, 32)
  counterfactual_weight: float = 1.0
  constraint_weight: float = 1e-3
  propensity_floor: float = 0.01
  conditional_weight: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    if self.counterfactual_weight < 0 or self.constraint_weight < 0:
      raise ValueError(
        "counterfactual_weight and constraint_weight must be >= 0, got "
        f"{self.counterfactual_weight} and {self.constraint_weight}"
      )
    if not 0.0 < self.propensity_floor < 0.5:
      raise ValueError(f"propensity_floor must be in (0, 0.5), got {self.propensity_floor}")


_HPARAMS_CLASSES: Dict[str, Type[BaseHParams]] = {
  "tafe": TAFEHParams,
  "esmm": ESMMHParams,
  "mmoe": MMoEHParams,
  "ple": PLEHParams,
  "aitm": AITMHParams,
  "shared_bottom": SharedBottomHParams,
  "escm2": ESCM2HParams,
  "dcmt": DCMTHParams,
}


def hparams_class(name: str) -> Type[BaseHParams]:
  """The hyperparameter dataclass of model ``name`` (its defaults);
  ValueError naming the valid names."""
  if name not in _HPARAMS_CLASSES:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
  return _HPARAMS_CLASSES[name]
