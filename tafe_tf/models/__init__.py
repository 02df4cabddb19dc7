"""Multi-step conversion models: TAFE and the baselines, one contract.

``build_model(name, schema, **hparams)`` builds any of :data:`MODEL_NAMES`.
A model takes exactly the fields of its ``HParams`` dataclass
(:class:`BaseHParams` plus its own, all in :mod:`tafe_tf.hparams`, which
needs no TensorFlow; docs/models.md has the table); any other
name is a one-line ValueError listing the names it takes.
``build_model(name, schema, **model.get_config()["hparams"])`` rebuilds a
model.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from tafe_tf import features as features_lib
from tafe_tf.hparams import MODEL_NAMES, hparams_class
from tafe_tf.models.aitm import AITM
from tafe_tf.models.base import BaseHParams, MultiStepModel
from tafe_tf.models.dcmt import DCMT
from tafe_tf.models.escm2 import ESCM2
from tafe_tf.models.esmm import ESMM
from tafe_tf.models.mmoe import MMoE
from tafe_tf.models.ple import PLE
from tafe_tf.models.shared_bottom import SharedBottom
from tafe_tf.models.tafe import TAFE

__all__ = [
  "AITM",
  "BaseHParams",
  "DCMT",
  "ESCM2",
  "ESMM",
  "MMoE",
  "MODEL_NAMES",
  "MultiStepModel",
  "PLE",
  "SharedBottom",
  "TAFE",
  "build_model",
  "hparams_class",
  "model_class",
]

_MODELS: Dict[str, Type[MultiStepModel]] = {
  cls.MODEL_NAME: cls for cls in (TAFE, ESMM, MMoE, PLE, AITM, SharedBottom, ESCM2, DCMT)
}


def model_class(name: str) -> Type[MultiStepModel]:
  """The class of model ``name``; ValueError naming the valid names."""
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
  return _MODELS[name]


def build_model(name: str, schema: features_lib.Schema, **hparams: Any) -> MultiStepModel:
  """Builds model ``name`` for ``schema``.

  Args:
    name: One of :data:`MODEL_NAMES`.
    schema: The dataset schema (any number of steps >= 2).
    **hparams: Fields of the model's ``HParams`` dataclass; the others keep
      their defaults.

  Raises:
    ValueError: on an unknown model name, or a hyperparameter the model does
      not take (``"mmoe takes no hyperparameter 'num_levels'; its
      hyperparameters: ..."``).
  """
  return model_class(name)(schema, **hparams)
