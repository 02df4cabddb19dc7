"""Synthetic multi-step conversion data with a known ground truth.

The package's embedded default dataset, and the ceiling every model is measured
against: rows look like Ali-CCP (Zipf-skewed users and items, a user profile,
weighted behaviour histories, item attributes, position, a user-item cross and a
dense price), and the true conditional step probabilities
``q_t(x) = P(e_t = 1 | y_{t-1} = 1, x)`` of every row are known, so the AUC of
the true ``p_t = q_1 * ... * q_t`` (the Bayes-optimal AUC) is known too.

Ground truth (drawn once per ``config.seed``; the same for every split)
-----------------------------------------------------------------------
Hidden: a latent vector per user and per item (items scatter around their
category's centre), purchasing power, click and buy propensities, brand quality,
shop trust, item appeal, a price per item and a preferred price per user, a
gender appeal per category, per-step user and item vectors, and a "clickbait"
flag per shop. Every visible feature is a deterministic function of
``(user, item, position)``, so the truth is a function of the features only.
With ``s`` = ``config.signal`` and ``c`` = ``config.conflict``::

  shared   = 0.7 <user, item> / sqrt(d)                    (affinity)
           + 0.6 log1p(#item category in the history) + 0.3 log1p(#brand)
           + 0.3 log1p(#shop)                              (history match)
           + 0.5 (+-1 by gender) * category gender appeal  (profile x item)
  conflict = clickbait(shop) + 0.5 max(0, 1 - position / 3)
  l_click  = b_1 + s (shared + 0.4 click propensity + 0.5 item appeal
                      - 0.12 position) + c conflict
  l_t      = b_t + s (0.6 shared + w_t1 buy propensity + w_t2 item quality
                      + w_t3 shop trust - w_t4 (price - preferred price)^2
                      + w_t5 <user_t, item_t> / 2) - c conflict      (t >= 2)
  q_t      = sigmoid(l_t)

``w_t`` are drawn per step in [0.4, 1.0], so later steps differ from each other.
The intercepts ``b_t`` are solved (bisection on a fixed calibration sample) so
that the mean of ``q_1`` is ``step_rates[0]`` and the mean of ``q_t`` over rows
that reached step t-1 is ``step_rates[t-1]``; changing ``conflict`` or
``signal`` therefore keeps the base rates. Labels: ``e_t ~ Bernoulli(q_t)``
drawn in step order, ``y_t = y_{t-1} * e_t`` (cumulative).

Determinism: rows come in chunks of :data:`CHUNK_ROWS`, each from its own random
stream seeded by ``(seed, split, chunk)``; the same config, split and row count
give the same rows (and the same shard bytes), a longer run starts with the rows
of a shorter one, and the batch size changes only how rows are grouped. The
feature draws come before the label draws in each chunk, so ``num_steps``
changes the labels but not the features of a row.

Batches (:func:`generate_batches`) are dicts of numpy columns keyed like the
serialized examples (:mod:`tafe_tf.features`):

=======================  =====================================================
key                      value
=======================  =====================================================
``<id field>``           int64 ``[b]``
``<weighted field>``     :class:`RaggedColumn` of int64 ids
``<field>_weight``       :class:`RaggedColumn` of float32 weights, log(1+count)
``price``                float32 ``[b, 1]`` (standardized log price)
``label/<step>``         int64 ``[b]``, cumulative label y_t
``oracle/<step>``        float64 ``[b]``, true conditional probability q_t
``sample_id``            str ``[b]``, ``<split>-<row index, 8 digits>``
=======================  =====================================================
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

from absl import logging
import numpy as np

import tensorflow as tf

from tafe_tf.data import example_encoder
from tafe_tf.data import writer
from tafe_tf import features as features_lib
from tafe_tf import input_pipeline
from tafe_tf import metrics

DATASET_NAME = "synthetic"
# Bump when a change to this module changes the rows a config produces, so that
# ensure_dataset rewrites datasets written by an older generator.
GENERATOR_VERSION = 1
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
_DEFAULT_STEP_RATES = {
    2: (0.10, 0.20),
    3: (0.10, 0.30, 0.50),
    4: (0.10, 0.30, 0.50, 0.60),
}

# Random stream ids: (seed, stream, ...) seeds one numpy Generator.
_WORLD_STREAM = 0
_CALIBRATION_STREAM = 4
_SPLIT_STREAMS = {"train": 1, "validation": 2, "test": 3}
_CALIBRATION_ROWS = 16 * CHUNK_ROWS

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

_NUM_GENDERS = 2
_AGE_PROBS = (0.05, 0.20, 0.25, 0.20, 0.15, 0.10, 0.05)
_NUM_CONSUMPTION = 3
_NUM_CITY_TIERS = 4
_NUM_SEGMENTS = 12
# user_category_match: 0 = category not in the history, then count buckets
# 1, 2-3, 4-7, 8+.
_NUM_MATCH_BUCKETS = 5
_STEP_LATENT_DIM = 4
_POSITION_DECAY = 0.85  # P(position k) ~ 0.85^k: top slots are shown more


def step_names(num_steps: int) -> Tuple[str, ...]:
  """The names of a ``num_steps`` funnel's steps.

  2: click, purchase; 3: click, cart, purchase; 4: click, cart, checkout,
  purchase.
  """
  if num_steps not in _STEP_NAMES:
    raise ValueError(f"num_steps must be one of {sorted(_STEP_NAMES)}, got "
                     f"{num_steps!r}")
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
        raise ValueError("SyntheticConfig.step_rates must be a sequence of "
                         f"floats, got {self.step_rates!r}")
      object.__setattr__(self, "step_rates", tuple(self.step_rates))
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.type == "int" and (not isinstance(value, (int, np.integer)) or
                                  isinstance(value, bool)):
        raise ValueError(f"SyntheticConfig.{field.name} must be an int, got "
                         f"{value!r}")
      if field.type == "float" and not _is_real(value):
        raise ValueError(f"SyntheticConfig.{field.name} must be a finite "
                         f"number, got {value!r}")
      # Plain Python numbers, so that to_json is JSON and equal configs match.
      if field.type in _NUMBER_TYPES:
        object.__setattr__(self, field.name, _NUMBER_TYPES[field.type](value))
    if self.num_steps not in _STEP_NAMES:
      raise ValueError(f"SyntheticConfig.num_steps must be one of "
                       f"{sorted(_STEP_NAMES)}, got {self.num_steps!r}")
    for name in ("num_users", "num_items", "num_categories", "num_shops",
                 "num_brands", "num_positions", "max_history", "latent_dim"):
      _check(self, name, getattr(self, name) >= 1, ">= 1")
    for name in ("seed", "conflict", "signal", "user_zipf", "item_zipf"):
      _check(self, name, getattr(self, name) >= 0, ">= 0")
    for name in ("clickbait_rate", "targeted_rate", "empty_history_rate"):
      _check(self, name, 0 <= getattr(self, name) <= 1, "in [0, 1]")
    _check(self, "mean_history_events", self.mean_history_events >= 1, ">= 1")
    if self.num_items < self.num_categories:
      raise ValueError(f"SyntheticConfig.num_items ({self.num_items}) must be "
                       f">= num_categories ({self.num_categories}): every "
                       "category needs an item")
    if self.step_rates is not None:
      if len(self.step_rates) != self.num_steps:
        raise ValueError(f"SyntheticConfig.step_rates needs one rate per step "
                         f"({self.num_steps}), got {list(self.step_rates)}")
      for rate in self.step_rates:
        if not _is_real(rate) or not 0 < rate < 1:
          raise ValueError("SyntheticConfig.step_rates must lie in (0, 1), "
                           f"got {list(self.step_rates)}")

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
  return (isinstance(value, (int, float, np.integer, np.floating)) and
          not isinstance(value, bool) and math.isfinite(value))


def _check(config: SyntheticConfig, name: str, ok: bool, what: str) -> None:
  if not ok:
    raise ValueError(f"SyntheticConfig.{name} must be {what}, got "
                     f"{getattr(config, name)!r}")


# --- schema -------------------------------------------------------------------


def synthetic_schema(config: SyntheticConfig) -> features_lib.Schema:
  """The schema of ``config``'s data: identity lookups over each id range."""

  def ids(name: str, num_ids: int, group: str,
          kind: features_lib.FieldKind = features_lib.FieldKind.ID
          ) -> features_lib.FieldSpec:
    return features_lib.FieldSpec(
        name=name, kind=kind, lookup=features_lib.LookupKind.IDENTITY,
        num_ids=num_ids, group=group)

  weighted = features_lib.FieldKind.WEIGHTED_IDS
  fields = (
      ids(USER_ID, config.num_users, "user"),
      ids(USER_GENDER, _NUM_GENDERS, "user"),
      ids(USER_AGE, len(_AGE_PROBS), "user"),
      ids(USER_CONSUMPTION, _NUM_CONSUMPTION, "user"),
      ids(USER_CITY_TIER, _NUM_CITY_TIERS, "user"),
      ids(USER_SEGMENT, _NUM_SEGMENTS, "user"),
      ids(HIST_CATEGORY, config.num_categories, "user", weighted),
      ids(HIST_BRAND, config.num_brands, "user", weighted),
      ids(HIST_SHOP, config.num_shops, "user", weighted),
      ids(ITEM_ID, config.num_items, "item"),
      ids(ITEM_CATEGORY, config.num_categories, "item"),
      ids(ITEM_SHOP, config.num_shops, "item"),
      ids(ITEM_BRAND, config.num_brands, "item"),
      ids(POSITION, config.num_positions, "context"),
      ids(USER_CATEGORY_MATCH, _NUM_MATCH_BUCKETS, "cross"),
      features_lib.FieldSpec(name=PRICE, kind=features_lib.FieldKind.DENSE,
                             dim=1, group="item"),
  )
  return features_lib.Schema(name=DATASET_NAME, fields=fields,
                             steps=config.steps, user_field=USER_ID,
                             has_sample_id=True, has_oracle=True)


# --- ground truth -------------------------------------------------------------


class RaggedColumn(NamedTuple):
  """Variable-length rows; row i is ``values[row_splits[i]:row_splits[i+1]]``.
  """
  values: np.ndarray
  row_splits: np.ndarray  # int64 [b + 1], row_splits[0] == 0

  @property
  def row_lengths(self) -> np.ndarray:
    return np.diff(self.row_splits)

  def row(self, i: int) -> np.ndarray:
    return self.values[self.row_splits[i]:self.row_splits[i + 1]]


def _rng(seed: int, *stream: int) -> np.random.Generator:
  return np.random.default_rng([seed, *stream])


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator
                  ) -> np.ndarray:
  """Unnormalized Zipf weights 1/(rank+1)^s over ids in a random rank order."""
  ranks = rng.permutation(n)
  return 1.0 / np.power(ranks + 1.0, exponent)


def _cdf(weights: np.ndarray) -> np.ndarray:
  cdf = np.cumsum(weights, dtype=np.float64)
  cdf /= cdf[-1]
  cdf[-1] = 1.0
  return cdf


def _draw(cdf: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
  """Inverse-CDF draws of ids from uniforms in [0, 1)."""
  return np.minimum(np.searchsorted(cdf, uniforms, side="right"),
                    cdf.shape[0] - 1).astype(np.int64)


def _draw_in_segments(cum0: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                      uniforms: np.ndarray) -> np.ndarray:
  """One weighted draw inside each segment ``[start, end)`` of a weight array.

  Args:
    cum0: ``[0, cumsum(weights)]`` of the whole (segmented) weight array.
    starts, ends: ``[n]`` segment bounds, each segment non-empty.
    uniforms: ``[n]`` uniforms in [0, 1).

  Returns:
    ``[n]`` indices into the weight array, each within its segment.
  """
  low = cum0[starts]
  target = low + uniforms * (cum0[ends] - low)
  picked = np.searchsorted(cum0, target, side="right") - 1
  return np.clip(picked, starts, ends - 1).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return np.exp(-np.logaddexp(0.0, -x))


def _solve_intercept(logits: np.ndarray, weights: np.ndarray,
                     rate: float) -> float:
  """The b with ``sum(w * sigmoid(logits + b)) = rate * sum(w)``.

  Newton steps, kept inside a bisection bracket (the weighted mean rate is
  increasing in b), to a relative error of 1e-12.
  """
  target = rate * weights.sum()
  low, high = -60.0, 60.0
  b = math.log(rate / (1.0 - rate)) - float(np.average(logits, weights=weights))
  for _ in range(200):
    q = _sigmoid(logits + b)
    excess = float(np.dot(weights, q)) - target
    if abs(excess) <= 1e-12 * target:
      break
    if excess < 0:
      low = b
    else:
      high = b
    slope = float(np.dot(weights, q * (1.0 - q)))
    b = b - excess / slope if slope > 0 else 0.5 * (low + high)
    if not low < b < high:
      b = 0.5 * (low + high)
  return b


class _History:
  """Per-user multi-valued history: distinct ids with counts, sorted by id."""

  def __init__(self, event_users: np.ndarray, event_ids: np.ndarray,
               num_users: int, num_ids: int, max_len: int):
    self.num_ids = num_ids
    keys, counts = np.unique(event_users * num_ids + event_ids,
                             return_counts=True)
    users, ids = keys // num_ids, keys % num_ids
    # Keep each user's max_len most frequent ids (ties: smaller id first).
    order = np.lexsort((ids, -counts, users))
    sorted_users = users[order]
    rank = np.arange(order.shape[0]) - np.searchsorted(sorted_users,
                                                       sorted_users)
    keep = np.empty(order.shape[0], dtype=bool)
    keep[order] = rank < max_len
    self.keys = keys[keep]
    self.ids = ids[keep]
    self.counts = counts[keep]
    self.weights = np.log1p(self.counts).astype(np.float32)
    self.row_splits = np.concatenate(
        [[0], np.cumsum(np.bincount(users[keep], minlength=num_users))]
    ).astype(np.int64)
    self.count_cum0 = np.concatenate([[0.0], np.cumsum(self.counts,
                                                       dtype=np.float64)])

  def lengths(self, users: np.ndarray) -> np.ndarray:
    return self.row_splits[users + 1] - self.row_splits[users]

  def gather(self, users: np.ndarray) -> Tuple[RaggedColumn, RaggedColumn]:
    """The histories of ``users`` as ragged (ids, weights)."""
    starts = self.row_splits[users]
    lengths = self.row_splits[users + 1] - starts
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(starts - splits[:-1], lengths) + np.arange(splits[-1])
    return (RaggedColumn(self.ids[index], splits),
            RaggedColumn(self.weights[index], splits))

  def count(self, users: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """How often ``ids[i]`` occurs in ``users[i]``'s history (0: absent)."""
    if self.keys.shape[0] == 0:
      return np.zeros(users.shape[0], dtype=np.int64)
    query = users * self.num_ids + ids
    at = np.minimum(np.searchsorted(self.keys, query), self.keys.shape[0] - 1)
    return np.where(self.keys[at] == query, self.counts[at], 0)


class Draws(NamedTuple):
  """The random draws behind a run of rows."""
  users: np.ndarray      # int64 [n]
  items: np.ndarray      # int64 [n]
  positions: np.ndarray  # int64 [n]
  uniforms: np.ndarray   # float64 [n, num_steps], the label draws

  def slice(self, start: int, stop: int) -> "Draws":
    return Draws(*(a[start:stop] for a in self))

  @staticmethod
  def concat(parts: Sequence["Draws"]) -> "Draws":
    return Draws(*(np.concatenate(arrays) for arrays in zip(*parts)))


class GroundTruth:
  """The hidden world of one config: users, items, histories and step logits.

  Build it with :func:`ground_truth` (cached). Public arrays are indexed by id;
  ``item_clickbait`` marks the items whose click logit the conflict raises.
  """

  def __init__(self, config: SyntheticConfig):
    self.config = config
    self.steps = config.steps
    self._build_items(_rng(config.seed, _WORLD_STREAM, 1))
    self._build_users(_rng(config.seed, _WORLD_STREAM, 2))
    self._build_histories(_rng(config.seed, _WORLD_STREAM, 3))
    self._build_steps(_rng(config.seed, _WORLD_STREAM, 4))
    self.intercepts = np.zeros(config.num_steps)
    self.intercepts = self._calibrate()

  # --- world ------------------------------------------------------------------

  def _build_items(self, rng: np.random.Generator) -> None:
    c = self.config
    d = c.latent_dim
    self.category_center = rng.normal(size=(c.num_categories, d))
    self.category_gender_appeal = rng.normal(size=c.num_categories)
    category_price = 0.8 * rng.normal(size=c.num_categories)
    category_weights = _zipf_weights(c.num_categories, 0.8, rng)
    # num_categories items (chosen at random) cover every category once.
    item_category = _draw(_cdf(category_weights), rng.random(c.num_items))
    item_category[rng.permutation(c.num_items)[:c.num_categories]] = np.arange(
        c.num_categories)
    self.item_category = item_category
    self.item_latent = (self.category_center[item_category] +
                        0.6 * rng.normal(size=(c.num_items, d)))
    self.item_popularity = _zipf_weights(c.num_items, c.item_zipf, rng)
    self.item_brand = _draw(_cdf(_zipf_weights(c.num_brands, 1.0, rng)),
                            rng.random(c.num_items))
    self.item_shop = _draw(_cdf(_zipf_weights(c.num_shops, 1.0, rng)),
                           rng.random(c.num_items))
    # Clickbait shops: shops in random order, as many as bring their share of
    # item popularity closest to clickbait_rate (a flag per shop would let one
    # popular shop swing the share of clickbait impressions).
    shop_share = np.bincount(self.item_shop, weights=self.item_popularity,
                             minlength=c.num_shops) / self.item_popularity.sum()
    shop_order = rng.permutation(c.num_shops)
    share = np.concatenate([[0.0], np.cumsum(shop_share[shop_order])])
    self.shop_clickbait = np.zeros(c.num_shops, dtype=bool)
    self.shop_clickbait[shop_order[:np.argmin(np.abs(share - c.clickbait_rate))
                                   ]] = True
    self.item_clickbait = self.shop_clickbait[self.item_shop]
    shop_trust = rng.normal(size=c.num_shops)
    self.item_shop_trust = shop_trust[self.item_shop]
    brand_quality = rng.normal(size=c.num_brands)
    self.item_quality = (brand_quality[self.item_brand] +
                         0.5 * rng.normal(size=c.num_items))
    self.item_appeal = rng.normal(size=c.num_items)
    log_price = category_price[item_category] + 0.5 * rng.normal(
        size=c.num_items)
    # Standardized over the catalogue: the dense feature and the price the user
    # preference is measured in.
    self.item_price = ((log_price - log_price.mean()) /
                       max(log_price.std(), 1e-6)).astype(np.float32)
    self.item_cdf = _cdf(self.item_popularity)
    # Items grouped by category, for draws within a category.
    self.items_by_category = np.argsort(item_category, kind="stable")
    self.category_splits = np.concatenate([[0], np.cumsum(np.bincount(
        item_category, minlength=c.num_categories))]).astype(np.int64)
    self.category_item_cum0 = np.concatenate([[0.0], np.cumsum(
        self.item_popularity[self.items_by_category])])

  def _build_users(self, rng: np.random.Generator) -> None:
    c = self.config
    u = c.num_users
    self.user_latent = rng.normal(size=(u, c.latent_dim))
    self.user_gender = (rng.random(u) < 0.5).astype(np.int64)
    self.user_age = _draw(_cdf(np.asarray(_AGE_PROBS)), rng.random(u))
    power = rng.normal(size=u)
    self.user_consumption = np.digitize(power, [-0.6, 0.6]).astype(np.int64)
    self.user_city_tier = np.digitize(
        0.7 * power + 0.7 * rng.normal(size=u),
        [-0.8, 0.0, 0.8]).astype(np.int64)
    segment_centers = rng.normal(size=(_NUM_SEGMENTS, c.latent_dim))
    self.user_segment = np.argmax(self.user_latent @ segment_centers.T,
                                  axis=1).astype(np.int64)
    age = self.user_age - 3.0
    self.user_click_propensity = -0.25 * age + 0.8 * rng.normal(size=u)
    self.user_buy_propensity = 0.25 * age + 0.5 * power + 0.7 * rng.normal(
        size=u)
    self.user_price_preference = 0.8 * power + 0.6 * rng.normal(size=u)
    self.user_cdf = _cdf(_zipf_weights(u, c.user_zipf, rng))
    self.position_cdf = _cdf(np.power(_POSITION_DECAY,
                                      np.arange(c.num_positions)))

  def _build_histories(self, rng: np.random.Generator) -> None:
    """Behaviour histories: events drawn from each user's category taste."""
    c = self.config
    has_history = rng.random(c.num_users) >= c.empty_history_rate
    num_events = np.where(
        has_history, 1 + rng.poisson(c.mean_history_events - 1, c.num_users), 0)
    event_users = np.repeat(np.arange(c.num_users), num_events)
    log_popularity = np.log(np.bincount(self.item_category,
                                        weights=self.item_popularity,
                                        minlength=c.num_categories))
    gender_sign = 2.0 * self.user_gender - 1.0
    event_splits = np.concatenate([[0], np.cumsum(num_events)])
    event_uniforms = rng.random(event_users.shape[0])
    event_categories = np.empty(event_users.shape[0], dtype=np.int64)
    k = c.num_categories
    for first in range(0, c.num_users, CHUNK_ROWS):
      users = np.arange(first, min(first + CHUNK_ROWS, c.num_users))
      taste = (self.user_latent[users] @ self.category_center.T *
               (1.5 / math.sqrt(c.latent_dim)) + log_popularity +
               0.5 * gender_sign[users, None] * self.category_gender_appeal)
      taste = np.exp(taste - taste.max(axis=1, keepdims=True))
      # Each user's events draw from softmax(taste), a segment per user.
      cum0 = np.concatenate([[0.0], np.cumsum(
          taste / taste.sum(axis=1, keepdims=True))])
      lo, hi = event_splits[users[0]], event_splits[users[-1] + 1]
      rows = event_users[lo:hi] - first
      event_categories[lo:hi] = _draw_in_segments(
          cum0, rows * k, (rows + 1) * k, event_uniforms[lo:hi]) - rows * k
    event_items = self._items_in_categories(event_categories,
                                            rng.random(event_users.shape[0]))
    self.hist_category = _History(event_users, event_categories, c.num_users,
                                  c.num_categories, c.max_history)
    self.hist_brand = _History(event_users, self.item_brand[event_items],
                               c.num_users, c.num_brands, c.max_history)
    self.hist_shop = _History(event_users, self.item_shop[event_items],
                              c.num_users, c.num_shops, c.max_history)

  def _build_steps(self, rng: np.random.Generator) -> None:
    """Step-specific parts of the later steps (t >= 2)."""
    c = self.config
    later = c.num_steps - 1
    self.later_weights = rng.uniform(0.4, 1.0, size=(later, 5))
    self.user_step_latent = rng.normal(size=(c.num_users, later,
                                             _STEP_LATENT_DIM))
    self.item_step_latent = rng.normal(size=(c.num_items, later,
                                             _STEP_LATENT_DIM))

  def _items_in_categories(self, categories: np.ndarray,
                           uniforms: np.ndarray) -> np.ndarray:
    """Items drawn by popularity within each of ``categories``."""
    at = _draw_in_segments(self.category_item_cum0,
                           self.category_splits[categories],
                           self.category_splits[categories + 1], uniforms)
    return self.items_by_category[at]

  def _calibrate(self) -> np.ndarray:
    """Intercepts that give ``config.conditional_rates()`` on a fixed sample."""
    draws = self.draw(_rng(self.config.seed, _CALIBRATION_STREAM),
                      _CALIBRATION_ROWS)
    logits = self.logits(draws.users, draws.items, draws.positions)
    reached = np.ones(logits.shape[0])
    intercepts = []
    for t, rate in enumerate(self.config.conditional_rates()):
      intercept = _solve_intercept(np.ascontiguousarray(logits[:, t]), reached,
                                   rate)
      intercepts.append(intercept)
      reached = reached * _sigmoid(logits[:, t] + intercept)
    return np.asarray(intercepts)

  # --- rows -------------------------------------------------------------------

  def draw(self, rng: np.random.Generator, n: int) -> Draws:
    """Draws ``n`` impressions: feature draws first, then label uniforms."""
    r = rng.random((n, 6))
    uniforms = rng.random((n, self.config.num_steps))
    users = _draw(self.user_cdf, r[:, 0])
    positions = _draw(self.position_cdf, r[:, 1])
    items = _draw(self.item_cdf, r[:, 2])
    history = self.hist_category
    targeted = ((r[:, 3] < self.config.targeted_rate) &
                (history.lengths(users) > 0))
    tu = users[targeted]
    # A category of the user's history, weighted by its count, then an item.
    entry = _draw_in_segments(history.count_cum0, history.row_splits[tu],
                              history.row_splits[tu + 1], r[targeted, 4])
    items[targeted] = self._items_in_categories(history.ids[entry],
                                                r[targeted, 5])
    return Draws(users, items, positions, uniforms)

  def draw_chunk(self, split: str, chunk: int) -> Draws:
    """The :data:`CHUNK_ROWS` rows of chunk ``chunk`` of ``split``."""
    return self.draw(_rng(self.config.seed, _SPLIT_STREAMS[split], chunk),
                     CHUNK_ROWS)

  def features(self, users: np.ndarray, items: np.ndarray,
               positions: np.ndarray) -> Dict[str, Any]:
    """The visible feature columns of impressions ``(user, item, position)``."""
    out: Dict[str, Any] = {
        USER_ID: users,
        USER_GENDER: self.user_gender[users],
        USER_AGE: self.user_age[users],
        USER_CONSUMPTION: self.user_consumption[users],
        USER_CITY_TIER: self.user_city_tier[users],
        USER_SEGMENT: self.user_segment[users],
    }
    for name, history in ((HIST_CATEGORY, self.hist_category),
                          (HIST_BRAND, self.hist_brand),
                          (HIST_SHOP, self.hist_shop)):
      out[name], out[name + features_lib.WEIGHT_SUFFIX] = history.gather(users)
    category = self.item_category[items]
    matches = self.hist_category.count(users, category)
    out.update({
        ITEM_ID: items,
        ITEM_CATEGORY: category,
        ITEM_SHOP: self.item_shop[items],
        ITEM_BRAND: self.item_brand[items],
        POSITION: positions,
        USER_CATEGORY_MATCH: np.where(
            matches > 0,
            np.minimum(np.floor(np.log2(np.maximum(matches, 1))) + 1,
                       _NUM_MATCH_BUCKETS - 1), 0).astype(np.int64),
        PRICE: self.item_price[items][:, None],
    })
    return out

  def conflict_component(self, items: np.ndarray,
                         positions: np.ndarray) -> np.ndarray:
    """Clickbait shop plus top-position bonus; ``config.conflict`` scales it."""
    top = np.clip(1.0 - positions / 3.0, 0.0, 1.0)
    return self.item_clickbait[items] + 0.5 * top

  def logits(self, users: np.ndarray, items: np.ndarray,
             positions: np.ndarray) -> np.ndarray:
    """True step logits ``l_t`` (intercepts included), float64 ``[n, T]``."""
    c = self.config
    category = self.item_category[items]
    affinity = np.einsum("nd,nd->n", self.user_latent[users],
                         self.item_latent[items]) / math.sqrt(c.latent_dim)
    history_match = (
        0.6 * np.log1p(self.hist_category.count(users, category)) +
        0.3 * np.log1p(self.hist_brand.count(users, self.item_brand[items])) +
        0.3 * np.log1p(self.hist_shop.count(users, self.item_shop[items])))
    gender_match = (0.5 * (2.0 * self.user_gender[users] - 1.0) *
                    self.category_gender_appeal[category])
    shared = 0.7 * affinity + history_match + gender_match
    conflict = c.conflict * self.conflict_component(items, positions)
    click = (shared + 0.4 * self.user_click_propensity[users] +
             0.5 * self.item_appeal[items] - 0.12 * positions)
    out = np.empty((users.shape[0], c.num_steps))
    out[:, 0] = c.signal * click + conflict
    price_gap = self.item_price[items] - self.user_price_preference[users]
    for t in range(1, c.num_steps):
      w = self.later_weights[t - 1]
      step_match = np.einsum("nd,nd->n", self.user_step_latent[users, t - 1],
                             self.item_step_latent[items, t - 1])
      own = (w[0] * self.user_buy_propensity[users] +
             w[1] * self.item_quality[items] +
             w[2] * self.item_shop_trust[items] -
             w[3] * np.square(price_gap) +
             w[4] * step_match / math.sqrt(_STEP_LATENT_DIM))
      out[:, t] = c.signal * (0.6 * shared + own) - conflict
    return out + self.intercepts

  def conditional_probabilities(self, users: np.ndarray, items: np.ndarray,
                                positions: np.ndarray) -> np.ndarray:
    """True ``q_t``, float64 ``[n, T]``."""
    return _sigmoid(self.logits(users, items, positions))

  def batch(self, draws: Draws, split: str, first_row: int) -> Dict[str, Any]:
    """A batch dict (see the module doc) of ``draws``, rows numbered from
    ``first_row``."""
    out = self.features(draws.users, draws.items, draws.positions)
    q = self.conditional_probabilities(draws.users, draws.items,
                                       draws.positions)
    labels = np.cumprod(draws.uniforms < q, axis=1).astype(np.int64)
    for t, step in enumerate(self.steps):
      out[features_lib.label_key(step)] = labels[:, t]
      out[features_lib.oracle_key(step)] = q[:, t]
    out[features_lib.SAMPLE_ID_KEY] = np.asarray(
        [f"{split}-{i:08d}" for i in range(first_row,
                                           first_row + draws.users.shape[0])])
    return out


@functools.lru_cache(maxsize=4)
def ground_truth(config: SyntheticConfig) -> GroundTruth:
  """The (cached) :class:`GroundTruth` of ``config``."""
  return GroundTruth(config)


# --- batches ------------------------------------------------------------------


def _check_split(split: str) -> None:
  if split not in _SPLIT_STREAMS:
    raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def _check_count(name: str, value: Any, minimum: int) -> None:
  if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or
      value < minimum):
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def generate_batches(config: SyntheticConfig, split: str, num_rows: int,
                     batch_size: int = 8192) -> Iterator[Dict[str, Any]]:
  """Streams the first ``num_rows`` rows of ``split`` as numpy column batches.

  Args:
    config: The dataset definition.
    split: ``train``, ``validation`` or ``test`` (independent row streams over
      the same users, items and truth).
    num_rows: Rows to produce (>= 0).
    batch_size: Rows per batch (the last may be smaller); does not change the
      rows.

  Yields:
    Batch dicts as described in the module doc. Memory is bounded by
    ``batch_size`` + :data:`CHUNK_ROWS` rows, whatever ``num_rows``.
  """
  _check_split(split)
  _check_count("num_rows", num_rows, 0)
  _check_count("batch_size", batch_size, 1)
  truth = ground_truth(config)
  pending: List[Draws] = []
  pending_rows = 0
  emitted = 0
  for chunk in range(-(-num_rows // CHUNK_ROWS)):
    take = min(CHUNK_ROWS, num_rows - chunk * CHUNK_ROWS)
    pending.append(truth.draw_chunk(split, chunk).slice(0, take))
    pending_rows += take
    if pending_rows < batch_size:
      continue
    draws = Draws.concat(pending)
    start = 0
    while pending_rows - start >= batch_size:
      yield truth.batch(draws.slice(start, start + batch_size), split, emitted)
      start += batch_size
      emitted += batch_size
    pending = [draws.slice(start, pending_rows)]
    pending_rows -= start
  if pending_rows:
    yield truth.batch(Draws.concat(pending), split, emitted)


def _num_rows(batch: Mapping[str, Any]) -> int:
  return int(batch[features_lib.SAMPLE_ID_KEY].shape[0])


# --- serialization ------------------------------------------------------------


def example_from_row(schema: features_lib.Schema, batch: Mapping[str, Any],
                     index: int) -> tf.train.Example:
  """Row ``index`` of ``batch`` as a ``tf.train.Example``, through
  :func:`tafe_tf.features.make_example` (the reference encoding)."""
  feats: Dict[str, Any] = {}
  for f in schema.fields:
    column = batch[f.name]
    if f.kind == features_lib.FieldKind.WEIGHTED_IDS:
      feats[f.name] = (column.row(index).tolist(),
                       batch[f.weight_key].row(index).tolist())
    elif f.kind == features_lib.FieldKind.DENSE:
      feats[f.name] = column[index].tolist()
    else:
      feats[f.name] = int(column[index])
  return features_lib.make_example(
      schema, feats,
      labels={s: int(batch[features_lib.label_key(s)][index])
              for s in schema.steps},
      sample_id=str(batch[features_lib.SAMPLE_ID_KEY][index]),
      oracle={s: float(batch[features_lib.oracle_key(s)][index])
              for s in schema.steps})


# Columnar encoding: the bytes of every row of a batch are assembled with numpy
# at once. Rows are built as lists of "pieces" (one short byte string per row
# each) that are concatenated row-wise once at the end, so no payload is copied
# twice. Map entries are written in ascending key order (a fixed order, so the
# same rows give the same bytes).
_TAG_1 = b"\x0a"  # Example.features, Features entry, map key, *List.value
_TAG_2 = b"\x12"  # map value, Feature.float_list
_TAG_3 = b"\x1a"  # Feature.int64_list


class _Piece(NamedTuple):
  data: np.ndarray     # uint8, the rows' bytes back to back
  lengths: np.ndarray  # int64 [n]


def _const_piece(value: bytes, n: int) -> _Piece:
  return _Piece(np.tile(np.frombuffer(value, np.uint8), n),
                np.full(n, len(value), np.int64))


def _varint_piece(values: np.ndarray) -> _Piece:
  """Protobuf varints of int64 ``values`` (negatives: 10 bytes), one a row."""
  rest = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
  groups = []
  lengths = np.ones(rest.shape[0], np.int64)
  while True:
    low = (rest & np.uint64(0x7F)).astype(np.uint8)
    rest = rest >> np.uint64(7)
    more = rest != 0
    groups.append(low | (more.astype(np.uint8) << 7))
    if not more.any():
      break
    lengths += more
  matrix = np.stack(groups, axis=1)
  return _Piece(matrix[np.arange(len(groups)) < lengths[:, None]], lengths)


def _pieces_length(pieces: Sequence[_Piece]) -> np.ndarray:
  return sum(p.lengths for p in pieces)


def _keep_rows(piece: _Piece, keep: np.ndarray) -> _Piece:
  return _Piece(piece.data[np.repeat(keep, piece.lengths)],
                np.where(keep, piece.lengths, 0))


def _delimited(tag: bytes, body: List[_Piece], n: int,
               omit_empty: bool = False) -> List[_Piece]:
  """``tag varint(len) body`` per row; rows with an empty body are left out
  entirely when ``omit_empty`` (how packed repeated fields are written)."""
  length = _pieces_length(body) if body else np.zeros(n, np.int64)
  head = [_const_piece(tag, n), _varint_piece(length)]
  if omit_empty:
    keep = length > 0
    head = [_keep_rows(p, keep) for p in head]
  return head + body


def _rows_piece(element: _Piece, row_splits: np.ndarray) -> _Piece:
  """Merges consecutive element pieces into one piece per ragged row."""
  cum0 = np.concatenate([[0], np.cumsum(element.lengths)])
  return _Piece(element.data, cum0[row_splits[1:]] - cum0[row_splits[:-1]])


def _int64_list(values: np.ndarray, row_splits: Optional[np.ndarray],
                n: int) -> List[_Piece]:
  packed = _varint_piece(values)
  if row_splits is not None:
    packed = _rows_piece(packed, row_splits)
  return _delimited(_TAG_3, _delimited(_TAG_1, [packed], n, omit_empty=True), n)


def _float_list(values: np.ndarray, counts: np.ndarray, n: int
                ) -> List[_Piece]:
  packed = _Piece(np.ascontiguousarray(values, dtype="<f4").view(np.uint8),
                  4 * counts.astype(np.int64))
  return _delimited(_TAG_2, _delimited(_TAG_1, [packed], n, omit_empty=True), n)


def _bytes_list(values: Sequence[bytes], n: int) -> List[_Piece]:
  packed = _Piece(np.frombuffer(b"".join(values), np.uint8),
                  np.fromiter((len(v) for v in values), np.int64, n))
  return _delimited(_TAG_1, _delimited(_TAG_1, [packed], n), n)


def _join_rows(pieces: Sequence[_Piece], n: int) -> List[bytes]:
  """Concatenates the pieces row by row; returns one bytes object per row."""
  total = _pieces_length(pieces)
  ends = np.cumsum(total)
  out = np.empty(int(ends[-1]) if n else 0, np.uint8)
  offset = ends - total
  for piece in pieces:
    if piece.data.size:
      source_start = np.cumsum(piece.lengths) - piece.lengths
      out[np.repeat(offset - source_start, piece.lengths) +
          np.arange(piece.data.size)] = piece.data
    offset = offset + piece.lengths
  buffer = out.tobytes()
  return [buffer[s:e] for s, e in zip((ends - total).tolist(), ends.tolist())]


def serialize_batch(schema: features_lib.Schema,
                    batch: Mapping[str, Any]) -> List[bytes]:
  """Serialized ``tf.train.Example`` bytes of every row of ``batch``.

  Each parses to the same proto as :func:`example_from_row` (the reference
  built by :func:`tafe_tf.features.make_example`), an order of magnitude
  faster; map entries come in ascending key order.
  """
  n = _num_rows(batch)
  features: Dict[str, List[_Piece]] = {}
  for f in schema.fields:
    column = batch[f.name]
    if f.kind == features_lib.FieldKind.ID:
      features[f.name] = _int64_list(column, None, n)
    elif f.kind == features_lib.FieldKind.WEIGHTED_IDS:
      weights = batch[f.weight_key]
      features[f.name] = _int64_list(column.values, column.row_splits, n)
      features[f.weight_key] = _float_list(weights.values, weights.row_lengths,
                                           n)
    else:
      features[f.name] = _float_list(np.reshape(column, -1),
                                     np.full(n, f.dim), n)
  for step in schema.steps:
    features[features_lib.label_key(step)] = _int64_list(
        batch[features_lib.label_key(step)], None, n)
    features[features_lib.oracle_key(step)] = _float_list(
        batch[features_lib.oracle_key(step)], np.ones(n, np.int64), n)
  features[features_lib.SAMPLE_ID_KEY] = _bytes_list(
      [str(s).encode() for s in batch[features_lib.SAMPLE_ID_KEY]], n)
  entries: List[_Piece] = []
  for key in sorted(features):
    key_bytes = key.encode()
    entry = ([_const_piece(_TAG_1 + example_encoder.varint(len(key_bytes)) +
                           key_bytes, n)] +
             _delimited(_TAG_2, features[key], n))
    entries += _delimited(_TAG_1, entry, n)
  return _join_rows(_delimited(_TAG_1, entries, n), n)


# --- oracle metrics -----------------------------------------------------------


def _auc_or_none(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
  if labels.shape[0] == 0:
    return None
  auc = metrics.roc_auc(labels, scores)
  return None if math.isnan(auc) else auc


def oracle_auc(labels: Mapping[str, np.ndarray],
               oracle: Mapping[str, np.ndarray],
               steps: Sequence[str]) -> Dict[str, Optional[float]]:
  """Entire-space oracle AUC per step: AUC of the true ``p_t = prod q`` vs y_t.

  Args:
    labels: ``step -> [N]`` cumulative labels y_t.
    oracle: ``step -> [N]`` true conditional probabilities q_t.
    steps: Step names in order.

  Returns:
    ``step -> AUC`` (exact, ties half); None where a class is absent.
  """
  p = np.ones(np.asarray(oracle[steps[0]]).shape[0])
  out = {}
  for step in steps:
    p = p * np.asarray(oracle[step], dtype=np.float64)
    out[step] = _auc_or_none(np.asarray(labels[step]), p)
  return out


def oracle_conditional_auc(labels: Mapping[str, np.ndarray],
                           oracle: Mapping[str, np.ndarray],
                           steps: Sequence[str]) -> Dict[str, Optional[float]]:
  """Oracle AUC of q_t against y_t on the rows that reached step t-1 (t >= 2;
  for the purchase step of a 2-step funnel: the CVR AUC on clicked rows)."""
  out = {}
  for previous, step in zip(steps[:-1], steps[1:]):
    reached = np.asarray(labels[previous]) == 1
    out[step] = _auc_or_none(np.asarray(labels[step])[reached],
                             np.asarray(oracle[step])[reached])
  return out


class _SplitStats:
  """Running per-split statistics for report.json (AUCs on the first rows)."""

  def __init__(self, steps: Sequence[str], auc_max_rows: int):
    self.steps = tuple(steps)
    self.auc_max_rows = auc_max_rows
    self.rows = 0
    self.label_sums = np.zeros(len(steps))
    self.p_sums = np.zeros(len(steps))
    self.auc_rows = 0
    self._labels: List[np.ndarray] = []
    self._q: List[np.ndarray] = []

  def add(self, batch: Mapping[str, Any]) -> None:
    y = np.stack([batch[features_lib.label_key(s)] for s in self.steps], 1)
    q = np.stack([batch[features_lib.oracle_key(s)] for s in self.steps], 1)
    self.rows += y.shape[0]
    self.label_sums += y.sum(axis=0)
    self.p_sums += np.cumprod(q, axis=1).sum(axis=0)
    take = min(y.shape[0], self.auc_max_rows - self.auc_rows)
    if take > 0:
      self._labels.append(y[:take].astype(np.int8))
      self._q.append(q[:take])
      self.auc_rows += take

  def to_json(self) -> Dict[str, Any]:
    def per_step(values) -> Dict[str, Optional[float]]:
      return dict(zip(self.steps, values))

    out: Dict[str, Any] = {"rows": self.rows, "auc_rows": self.auc_rows}
    if self.rows == 0:
      out.update(label_rate=per_step([None] * len(self.steps)),
                 mean_true_p=per_step([None] * len(self.steps)),
                 oracle_auc=per_step([None] * len(self.steps)),
                 oracle_conditional_auc={s: None for s in self.steps[1:]})
      return out
    y = np.concatenate(self._labels)
    q = np.concatenate(self._q)
    labels = {s: y[:, t] for t, s in enumerate(self.steps)}
    oracle = {s: q[:, t] for t, s in enumerate(self.steps)}
    out.update(
        label_rate=per_step((self.label_sums / self.rows).tolist()),
        mean_true_p=per_step((self.p_sums / self.rows).tolist()),
        oracle_auc=oracle_auc(labels, oracle, self.steps),
        oracle_conditional_auc=oracle_conditional_auc(labels, oracle,
                                                      self.steps))
    return out


# --- datasets on disk ---------------------------------------------------------


def write_dataset(out_dir: str, config: SyntheticConfig, num_train: int,
                  num_validation: int, num_test: int, num_shards: int = 4,
                  batch_size: int = 8192,
                  auc_max_rows: int = 2_000_000) -> Dict[str, Any]:
  """Writes a complete synthetic dataset directory.

  ``schema.json`` first, then each split's shards through
  :class:`tafe_tf.data.writer.ShardedWriter`, then ``report.json`` last (a directory
  without it is incomplete; an existing one is removed before anything else is
  written).

  Raises:
    ValueError: on invalid sizes, or when ``out_dir`` holds another dataset
      (its ``schema.json`` names something other than ``synthetic``).

  Args:
    out_dir: Target directory (created if needed).
    config: The dataset definition.
    num_train, num_validation, num_test: Rows per split (>= 0).
    num_shards: Shards per split.
    batch_size: Rows generated and encoded at a time (memory, not content).
    auc_max_rows: Oracle AUCs use the first this-many rows of a split, so that
      memory stays bounded for huge splits (recorded as ``auc_rows``).

  Returns:
    The report: ``config``, ``steps``, ``step_rates``, ``num_shards`` and per
    split ``rows``, ``label_rate`` (empirical y_t rate), ``mean_true_p``,
    ``oracle_auc`` (p_t vs y_t), ``oracle_conditional_auc`` (q_t vs y_t on rows
    with y_{t-1} = 1), ``auc_rows``; plus ``seconds`` and ``rows_per_second``.
  """
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}
  for split, n in sizes.items():
    _check_count(f"num_{split}", n, 0)
  _check_count("num_shards", num_shards, 1)
  _check_count("auc_max_rows", auc_max_rows, 0)
  _check_not_another_dataset(out_dir)
  tf.io.gfile.makedirs(out_dir)
  report_path = os.path.join(out_dir, writer.REPORT_FILENAME)
  if tf.io.gfile.exists(report_path):
    tf.io.gfile.remove(report_path)
  schema = synthetic_schema(config)
  schema.save(out_dir)
  started = time.perf_counter()
  splits = {}
  for split, n in sizes.items():
    stats = _SplitStats(schema.steps, auc_max_rows)
    with writer.ShardedWriter(out_dir, split, num_shards) as shards:
      for batch in generate_batches(config, split, n, batch_size):
        for record in serialize_batch(schema, batch):
          shards.write(record)
        stats.add(batch)
    splits[split] = stats.to_json()
    logging.info("synthetic %s: %d rows written to %s", split, n, out_dir)
  seconds = time.perf_counter() - started
  total = sum(sizes.values())
  report = {
      "dataset": DATASET_NAME,
      "generator_version": GENERATOR_VERSION,
      "config": config.to_json(),
      "steps": list(schema.steps),
      "step_rates": list(config.conditional_rates()),
      "num_shards": num_shards,
      "splits": splits,
      "seconds": round(seconds, 3),
      "rows_per_second": round(total / seconds, 1) if seconds > 0 else None,
  }
  writer.write_report(out_dir, report)
  return report


def _check_not_another_dataset(out_dir: str) -> None:
  """Refuses to write over a directory that holds another dataset."""
  path = os.path.join(out_dir, features_lib.SCHEMA_FILENAME)
  if not tf.io.gfile.exists(path):
    return
  name = features_lib.Schema.load(path).name
  if name != DATASET_NAME:
    raise ValueError(f"{out_dir} holds dataset {name!r}, not synthetic data; "
                     "refusing to overwrite it")


def _is_complete(data_dir: str, config: SyntheticConfig,
                 sizes: Mapping[str, int], num_shards: int) -> bool:
  """Whether ``data_dir`` holds exactly this config's dataset, complete."""
  try:
    report = writer.read_report(data_dir)
  except ValueError:  # a corrupt report.json: rewrite
    return False
  if not report or report.get("generator_version") != GENERATOR_VERSION:
    return False
  if report.get("config") != config.to_json():
    return False
  if report.get("num_shards") != num_shards:
    return False
  splits = report.get("splits", {})
  if any(splits.get(s, {}).get("rows") != n for s, n in sizes.items()):
    return False
  if not tf.io.gfile.exists(os.path.join(data_dir,
                                         features_lib.SCHEMA_FILENAME)):
    return False
  return all(len(tf.io.gfile.glob(os.path.join(
      data_dir, input_pipeline.shard_pattern(s)))) == num_shards for s in sizes)


def ensure_dataset(out_dir: str, config: SyntheticConfig, num_train: int,
                   num_validation: int, num_test: int,
                   num_shards: int = 4) -> str:
  """Returns ``out_dir`` holding ``config``'s dataset, writing it if needed.

  An existing directory is reused when its ``report.json`` records the same
  generator version, config, row counts and shard count and its schema and
  shards are there; otherwise the dataset is (re)written.
  """
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}
  if _is_complete(out_dir, config, sizes, num_shards):
    logging.info("reusing synthetic dataset at %s", out_dir)
    return out_dir
  write_dataset(out_dir, config, num_train, num_validation, num_test,
                num_shards=num_shards)
  return out_dir
