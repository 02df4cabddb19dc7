"""Multi-step conversion models: TAFE and the baselines, one contract.

``build_model(name, schema, **hparams)`` builds any of :data:`MODEL_NAMES`.
Every model accepts the common hyperparameters of
:data:`tafe_tf.models.base.COMMON_HPARAMS` and ignores those its architecture
has no use for (docs/models.md has the table); any other unknown
hyperparameter is a ValueError. ``build_model(name, schema,
**model.get_config()["hparams"])`` rebuilds a model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple, Type


from tafe_tf import features as features_lib
from tafe_tf.models.aitm import AITM
from tafe_tf.models.base import BaseHParams
from tafe_tf.models.base import COMMON_HPARAMS
from tafe_tf.models.base import MultiStepModel
from tafe_tf.models.esmm import ESMM
from tafe_tf.models.mmoe import MMoE
from tafe_tf.models.ple import PLE
from tafe_tf.models.shared_bottom import SharedBottom
from tafe_tf.models.tafe import TAFE

__all__ = ["AITM", "BaseHParams", "COMMON_HPARAMS", "ESMM", "MMoE",
           "MODEL_NAMES", "MultiStepModel", "PLE", "SharedBottom", "TAFE",
           "build_model", "model_class"]

MODEL_NAMES: Tuple[str, ...] = ("tafe", "esmm", "mmoe", "ple", "aitm",
                                "shared_bottom")

_MODELS: Dict[str, Type[MultiStepModel]] = {
    cls.MODEL_NAME: cls for cls in (TAFE, ESMM, MMoE, PLE, AITM, SharedBottom)}


def model_class(name: str) -> Type[MultiStepModel]:
  """The class of model ``name``; ValueError naming the valid names."""
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: "
                     f"{', '.join(MODEL_NAMES)}")
  return _MODELS[name]


def build_model(name: str, schema: features_lib.Schema,
                **hparams: Any) -> MultiStepModel:
  """Builds model ``name`` for ``schema``.

  Args:
    name: One of :data:`MODEL_NAMES`.
    schema: The dataset schema (any number of steps >= 2).
    **hparams: The model's hyperparameters (its ``HParams`` dataclass); common
      ones it does not use are dropped.

  Raises:
    ValueError: on an unknown model name or hyperparameter.
  """
  cls = model_class(name)
  accepted = {f.name for f in dataclasses.fields(cls.HParams)}
  ignored = set(COMMON_HPARAMS) - accepted
  return cls(schema, **{k: v for k, v in hparams.items() if k not in ignored})
