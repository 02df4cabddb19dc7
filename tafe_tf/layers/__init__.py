"""Keras layers of the multi-step conversion models (all serialisable).

Front end: :class:`FeatureEmbedding` (schema-driven, fused tables) with
:class:`IdLookup`; optional :class:`FieldInteraction`; the interaction
switch :class:`FeatureInteraction` (DCN-v2 cross or pairwise dot). Experts and gates:
:class:`ExpertBank`, :class:`GroupedGate`, :class:`TaskIndicatorGate`.
Extraction levels: :class:`AdaptivePatternExtraction`,
:class:`TaskSpecificExtraction`, :class:`CustomizedGateControl`. Steps:
:class:`DependenceTransfer`, :class:`TaskTower`, :class:`ChainedProbabilities`,
:class:`StepCalibration`.
"""

from tafe_tf.layers.cross import FeatureInteraction
from tafe_tf.layers.embedding import FeatureEmbedding, field_widths
from tafe_tf.layers.experts import ExpertBank
from tafe_tf.layers.extraction import (
  AdaptivePatternExtraction,
  CustomizedGateControl,
  TaskSpecificExtraction,
)
from tafe_tf.layers.gates import GroupedGate, TaskIndicatorGate, gate_softmax, mix_experts
from tafe_tf.layers.id_lookup import IdLookup
from tafe_tf.layers.interaction import FieldInteraction
from tafe_tf.layers.probabilities import (
  ChainedProbabilities,
  StepCalibration,
  log1mexp,
  step_log_probabilities,
)
from tafe_tf.layers.towers import TaskTower
from tafe_tf.layers.transfer import TRANSFER_MODES, DependenceTransfer

__all__ = [
  "AdaptivePatternExtraction",
  "ChainedProbabilities",
  "CustomizedGateControl",
  "DependenceTransfer",
  "ExpertBank",
  "StepCalibration",
  "FeatureEmbedding",
  "FeatureInteraction",
  "FieldInteraction",
  "field_widths",
  "GroupedGate",
  "IdLookup",
  "TaskIndicatorGate",
  "TaskSpecificExtraction",
  "TaskTower",
  "TRANSFER_MODES",
  "gate_softmax",
  "log1mexp",
  "mix_experts",
  "step_log_probabilities",
]
