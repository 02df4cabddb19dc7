"""Keras layers of the multi-step conversion models (all serialisable).

Front end: :class:`FeatureEmbedding` (schema-driven, fused tables) with
:class:`IdLookup`; optional :class:`FieldInteraction`. Experts and gates:
:class:`ExpertBank`, :class:`GroupedGate`, :class:`TaskIndicatorGate`.
Extraction levels: :class:`AdaptivePatternExtraction`,
:class:`TaskSpecificExtraction`, :class:`CustomizedGateControl`. Steps:
:class:`DependenceTransfer`, :class:`TaskTower`, :class:`ChainedProbabilities`.
"""

from tafe_tf.layers.embedding import FeatureEmbedding
from tafe_tf.layers.embedding import field_widths
from tafe_tf.layers.experts import ExpertBank
from tafe_tf.layers.extraction import AdaptivePatternExtraction
from tafe_tf.layers.extraction import CustomizedGateControl
from tafe_tf.layers.extraction import TaskSpecificExtraction
from tafe_tf.layers.gates import gate_softmax
from tafe_tf.layers.gates import GroupedGate
from tafe_tf.layers.gates import mix_experts
from tafe_tf.layers.gates import TaskIndicatorGate
from tafe_tf.layers.id_lookup import IdLookup
from tafe_tf.layers.interaction import FieldInteraction
from tafe_tf.layers.probabilities import ChainedProbabilities
from tafe_tf.layers.probabilities import log1mexp
from tafe_tf.layers.probabilities import step_log_probabilities
from tafe_tf.layers.towers import TaskTower
from tafe_tf.layers.transfer import DependenceTransfer
from tafe_tf.layers.transfer import TRANSFER_MODES

__all__ = [
    "AdaptivePatternExtraction",
    "ChainedProbabilities",
    "CustomizedGateControl",
    "DependenceTransfer",
    "ExpertBank",
    "FeatureEmbedding",
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
