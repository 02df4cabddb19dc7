"""What defines a synthetic dataset: :class:`SyntheticConfig` and its schema.

The rows of a synthetic dataset are a function of its config (and of the
split and row count); :func:`synthetic_schema` is the schema its examples
follow: identity lookups over each id range, in model order. The field names
and the sizes of the fixed vocabularies (gender, age, ...) live here too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from tafe_tf import features as features_lib

DATASET_NAME = "synthetic"
SPLITS = ("train", "validation", "test")
# Rows per random stream; part of the data's definition (changing it changes
# rows).
CHUNK_ROWS = 4096

_STEP_NAMES = {
  2: ("click", "purchase"),
  3: ("click", "cart", "purchase"),
  4: ("click", "cart", "checkout", "purchase"),
}
# Mean q_1 (CTR), then the mean q_t among rows that reached step t-1.
_DEFAULT_STEP_RATES = {2: (0.10, 0.20), 3: (0.10, 0.30, 0.50), 4: (0.10, 0.30, 0.50, 0.60)}

# Field names (the schema's, in model order).
USER_ID = "user_id"
USER_GENDER = "user_gender"
USER_AGE = "user_age"
USER_CONSUMPTION = "user_consumption"
USER_CITY_TIER = "user_city_tier"
USER_SEGMENT = "user_segment"
HIST_CATEGORY = "hist_category"
HIST_BRAND = "hist_brand"
HIST_SHOP = "hist_shop"
ITEM_ID = "item_id"
ITEM_CATEGORY = "item_category"
ITEM_SHOP = "item_shop"
ITEM_BRAND = "item_brand"
POSITION = "position"
USER_CATEGORY_MATCH = "user_category_match"
PRICE = "price"

NUM_GENDERS = 2
AGE_PROBS = (0.05, 0.20, 0.25, 0.20, 0.15, 0.10, 0.05)
NUM_CONSUMPTION = 3
NUM_CITY_TIERS = 4
NUM_SEGMENTS = 12
# user_category_match: 0 = category not in the history, then count buckets
# 1, 2-3, 4-7, 8+.
NUM_MATCH_BUCKETS = 5


def step_names(num_steps: int) -> Tuple[str, ...]:
  """The names of a ``num_steps`` funnel's steps.

  2: click, purchase; 3: click, cart, purchase; 4: click, cart, checkout,
  purchase.
  """
  if num_steps not in _STEP_NAMES:
    raise ValueError(f"num_steps must be one of {sorted(_STEP_NAMES)}, got {num_steps!r}")
  return _STEP_NAMES[num_steps]


# --- configuration ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Everything that defines a synthetic dataset (rows are a function of it).

  Attributes:
    num_steps: Funnel length, 2 to 4 (see :func:`step_names`).
    seed: Seeds the ground truth and every split's rows (>= 0).
    conflict: Scale of the conflict component (clickbait shops and top
      positions raise the click logit and lower every later step's logit by
      this much per unit); 0 removes it, ~3 is a strong conflict.
    step_rates: Mean q_1 (CTR), then mean q_t among rows that reached step
      t-1; None takes the defaults (2 steps: 0.10, 0.20).
    signal: Scale of every feature-driven logit component; larger makes steps
      more predictable (higher oracle AUC), 0 leaves only the conflict.
    num_users, num_items, num_categories, num_shops, num_brands: Id ranges.
    num_positions: Display positions 0..num_positions-1 (0 = top).
    user_zipf, item_zipf: Zipf exponents of user and item impression shares.
    clickbait_rate: Share of item popularity (about the share of impressions)
      that belongs to clickbait shops.
    targeted_rate: Fraction of impressions whose item comes from a category in
      the user's history (the rest are drawn by global popularity).
    mean_history_events: Mean behaviour events behind a non-empty history.
    max_history: Most distinct ids kept per history (the most frequent).
    empty_history_rate: Fraction of users with empty histories.
    latent_dim: Width of the hidden user and item vectors.
  """

  num_steps: int = 2
  seed: int = 0
  conflict: float = 1.0
  step_rates: Optional[Tuple[float, ...]] = None
  signal: float = 1.0
  num_users: int = 10_000
  num_items: int = 5_000
  num_categories: int = 100
  num_shops: int = 500
  num_brands: int = 300
  num_positions: int = 10
  user_zipf: float = 1.1
  item_zipf: float = 1.1
  clickbait_rate: float = 0.15
  targeted_rate: float = 0.5
  mean_history_events: float = 12.0
  max_history: int = 20
  empty_history_rate: float = 0.1
  latent_dim: int = 8

  def __post_init__(self):
    if self.step_rates is not None and not isinstance(self.step_rates, tuple):
      if isinstance(self.step_rates, (str, bytes)):
        raise ValueError(
          f"SyntheticConfig.step_rates must be a sequence of floats, got {self.step_rates!r}"
        )
      object.__setattr__(self, "step_rates", tuple(self.step_rates))
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.type == "int" and (
        not isinstance(value, (int, np.integer)) or isinstance(value, bool)
      ):
        raise ValueError(f"SyntheticConfig.{field.name} must be an int, got {value!r}")
      if field.type == "float" and not _is_real(value):
        raise ValueError(f"SyntheticConfig.{field.name} must be a finite number, got {value!r}")
      # Plain Python numbers, so that to_json is JSON and equal configs match.
      if field.type in _NUMBER_TYPES:
        object.__setattr__(self, field.name, _NUMBER_TYPES[field.type](value))
    if self.num_steps not in _STEP_NAMES:
      raise ValueError(
        f"SyntheticConfig.num_steps must be one of {sorted(_STEP_NAMES)}, got {self.num_steps!r}"
      )
    for name in (
      "num_users",
      "num_items",
      "num_categories",
      "num_shops",
      "num_brands",
      "num_positions",
      "max_history",
      "latent_dim",
    ):
      _check(self, name, getattr(self, name) >= 1, ">= 1")
    for name in ("seed", "conflict", "signal", "user_zipf", "item_zipf"):
      _check(self, name, getattr(self, name) >= 0, ">= 0")
    for name in ("clickbait_rate", "targeted_rate", "empty_history_rate"):
      _check(self, name, 0 <= getattr(self, name) <= 1, "in [0, 1]")
    _check(self, "mean_history_events", self.mean_history_events >= 1, ">= 1")
    if self.num_items < self.num_categories:
      raise ValueError(
        f"SyntheticConfig.num_items ({self.num_items}) must be "
        f">= num_categories ({self.num_categories}): every "
        "category needs an item"
      )
    if self.step_rates is not None:
      if len(self.step_rates) != self.num_steps:
        raise ValueError(
          f"SyntheticConfig.step_rates needs one rate per step "
          f"({self.num_steps}), got {list(self.step_rates)}"
        )
      for rate in self.step_rates:
        if not _is_real(rate) or not 0 < rate < 1:
          raise ValueError(
            f"SyntheticConfig.step_rates must lie in (0, 1), got {list(self.step_rates)}"
          )

  @property
  def steps(self) -> Tuple[str, ...]:
    return step_names(self.num_steps)

  def conditional_rates(self) -> Tuple[float, ...]:
    """``step_rates``, or the defaults for ``num_steps`` when it is None."""
    if self.step_rates is not None:
      return tuple(float(r) for r in self.step_rates)
    return _DEFAULT_STEP_RATES[self.num_steps]

  def to_json(self) -> Dict[str, Any]:
    """A JSON-ready dict; :meth:`from_json` inverts it."""
    out = dataclasses.asdict(self)
    if self.step_rates is not None:
      out["step_rates"] = [float(r) for r in self.step_rates]
    return out

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> "SyntheticConfig":
    """Builds a config from :meth:`to_json`'s dict (missing keys: defaults).

    Raises:
      ValueError: on an unknown key or an invalid value.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - known)
    if unknown:
      raise ValueError(f"unknown SyntheticConfig keys {unknown}")
    return cls(**obj)


# Annotations are strings (``from __future__ import annotations``).
_NUMBER_TYPES = {"int": int, "float": float}


def _is_real(value: Any) -> bool:
  return (
    isinstance(value, (int, float, np.integer, np.floating))
    and not isinstance(value, bool)
    and math.isfinite(value)
  )


def _check(config: SyntheticConfig, name: str, ok: bool, what: str) -> None:
  if not ok:
    raise ValueError(f"SyntheticConfig.{name} must be {what}, got {getattr(config, name)!r}")


# --- schema -------------------------------------------------------------------


def synthetic_schema(config: SyntheticConfig) -> features_lib.Schema:
  """The schema of ``config``'s data: identity lookups over each id range."""

  def ids(
    name: str, num_ids: int, group: str, kind: features_lib.FieldKind = features_lib.FieldKind.ID
  ) -> features_lib.FieldSpec:
    return features_lib.FieldSpec(
      name=name, kind=kind, lookup=features_lib.LookupKind.IDENTITY, num_ids=num_ids, group=group
    )

  weighted = features_lib.FieldKind.WEIGHTED_IDS
  fields = (
    ids(USER_ID, config.num_users, "user"),
    ids(USER_GENDER, NUM_GENDERS, "user"),
    ids(USER_AGE, len(AGE_PROBS), "user"),
    ids(USER_CONSUMPTION, NUM_CONSUMPTION, "user"),
    ids(USER_CITY_TIER, NUM_CITY_TIERS, "user"),
    ids(USER_SEGMENT, NUM_SEGMENTS, "user"),
    ids(HIST_CATEGORY, config.num_categories, "user", weighted),
    ids(HIST_BRAND, config.num_brands, "user", weighted),
    ids(HIST_SHOP, config.num_shops, "user", weighted),
    ids(ITEM_ID, config.num_items, "item"),
    ids(ITEM_CATEGORY, config.num_categories, "item"),
    ids(ITEM_SHOP, config.num_shops, "item"),
    ids(ITEM_BRAND, config.num_brands, "item"),
    ids(POSITION, config.num_positions, "context"),
    ids(USER_CATEGORY_MATCH, NUM_MATCH_BUCKETS, "cross"),
    features_lib.FieldSpec(name=PRICE, kind=features_lib.FieldKind.DENSE, dim=1, group="item"),
  )
  return features_lib.Schema(
    name=DATASET_NAME,
    fields=fields,
    steps=config.steps,
    user_field=USER_ID,
    has_sample_id=True,
    has_oracle=True,
  )
