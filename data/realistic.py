r"""A realistic evaluation family with a known truth, in the raw Ali-CCP format.

The default generator (:mod:`tafe_tf.data.synthetic`) writes the package's own
TFRecords; the members here write the files a user would bring
(``sample_skeleton_{train,test}.csv`` + ``common_features_{train,test}.csv``,
or AliExpress' ``train.csv``/``test.csv``), to be converted like real data,
from a hidden world whose signal lives where it lives in real logs:

* **users** (101) with profile groups (121-129), heavy-tailed activity (Zipf
  over users: many users have one visit) and weighted behaviour histories
  (109_14 category, 110_14 shop, 127_14 brand, 150_14 intention; value = log of
  1 + the count) drawn from their latent tastes;
* **items** (205) with category 206, shop 207, brand 216 and 1-4 intentions
  210, Zipf popularity (a large share of ids is seen a few times only);
* **visits**: one common row shared by 1-40 impressions, the positions 301 in
  the visit, and the crosses 508/509/702/853 in the skeleton: the item's
  category / shop / brand / intentions that match the user's history, valued
  with the history's weight;
* a **truth**: ``logit q_click = f(...)`` and ``logit q_buy|click = g(...)``,
  sums of low-rank user x item affinities (factors drawn from the profile
  groups and item attributes plus id-level residuals; the buy factors only
  partly share the click factors), history-match terms, popularity, item
  quality, a price-tier x consumption gap (buy), a position effect (click) and
  three switchable effects: ``conflict`` (a hidden "clickbait" trait that
  raises clicks and lowers purchases), ``selection`` (a per-impression need,
  not in the features, that raises the buy propensity and drives clicks more
  on some items, so a CVR fitted on clicks extrapolates wrongly to all
  impressions) and ``visit_intent`` (a per-visit effect, not in the features:
  validation rows share visits with train rows, test rows do not).

Labels are drawn from the truth (a buy only after a click), except a tiny,
configurable number of planted buy-without-click rows that the converter must
skip (real files have some). The truth of every row (``q_click``,
``q_purchase`` conditional on a click, the would-buy event drawn for every
impression, the labels written, the planted flag) goes to
``truth_{train,test}.npz`` beside the raw files, which no reader of the format
opens: models never see it.

  report = write_member("conflict", RAW, num_train=200_000, num_test=60_000)
  # python -m launch.convert --format=ali_ccp --raw_dir=RAW --out_dir=OUT
  oracle = oracle_metrics(read_truth(RAW, "test"),
                          converted_sample_ids(OUT, "test"))

Everything is drawn from ``RealisticConfig.seed`` (same seed and sizes, same
bytes) with vectorised numpy; rows are written a chunk of visits at a time.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tafe_tf import files, input_pipeline, metrics
from tafe_tf.data import ali_ccp, csv_formats

TRUTH_FILE = "truth_{split}.npz"
REPORT_FILE = "realistic.json"
SPLITS = ("train", "test")
# Visits are generated and written in chunks of about this many impressions.
CHUNK_ROWS = 100_000
MAX_VISIT = 40
NUM_POSITIONS = 5
# Raw field ids and value counts of the profile groups (Ali-CCP's sizes).
PROFILE_FIELDS = (
  ("121", 98),
  ("122", 13),
  ("124", 3),
  ("125", 7),
  ("126", 4),
  ("127", 4),
  ("128", 3),
  ("129", 5),
)
HISTORY_FIELDS = ("109_14", "110_14", "127_14", "150_14")
ITEM_ATTRIBUTES = ("206", "207", "216", "210")  # matched by the histories above
CROSS_FIELDS = ("508", "509", "702", "853")
# Consumption group (126) whose value is the user's spending level.
CONSUMPTION_FIELD = 4
_FIELD_ORDER = (
  ["101"]
  + [f for f, _ in PROFILE_FIELDS]
  + list(HISTORY_FIELDS)
  + ["205", "206", "207", "216", "210", "301"]
  + list(CROSS_FIELDS)
)
# Feature ids are unique across fields, as in the real files.
FIELD_BASE = {field: (k + 1) * 10_000_000 for k, field in enumerate(_FIELD_ORDER)}


@dataclasses.dataclass(frozen=True)
class RealisticConfig:
  """One member of the family: world sizes, effect strengths, seed.

  Logit weights are per standard deviation of their term (the affinities and
  the quality terms have unit variance before weighting).

  Attributes:
    name: Member name (reports).
    seed: Seed of everything.
    output_format: ``ali_ccp`` (raw skeleton + common files) or ``aliexpress``
      (FuxiCTR's processed CSV: 16 categorical, 63 numerical columns).
    target_ctr: Mean q_click the click intercept is solved for.
    target_cvr: Mean q_buy over clicks the buy intercept is solved for.
    impressions_per_user: Users in the world = impressions / this.
    items_per_impression: Items in the world = impressions * this.
    num_categories: Item categories (shops and brands scale with the items).
    user_zipf, item_zipf: Zipf exponents of user activity and item popularity.
    mean_visit_length: Mean impressions per visit (1..40).
    history_median: Median interactions in a user's history (log-normal).
    targeting: Share of impressions drawn from the user's own history
      categories (a recommender's candidates), the rest by popularity.
    latent_dim: Rank of the user x item factors.
    id_residual: Share (0..1) of each factor that belongs to the id itself
      rather than to its profile groups / attributes.
    step_correlation: Correlation of the buy factors with the click factors.
    click_affinity, buy_affinity: Weights of the factor affinities.
    click_history, buy_history: Weights (per unit of history weight) of the
      category, shop, brand, intention matches.
    popularity: Click logit per std of log item popularity.
    quality: Weight of the id-level item quality (click and buy, correlated).
    price_gap: Buy logit lost per tier between item price and user spending.
    position: Click logit lost per position bucket (0..4).
    conflict: Weight of the hidden clickbait trait (+ click, - 1.5x buy).
    selection: Weight of the hidden per-impression need (buy; click scaled by
      an item's hidden need-sensitivity).
    visit_intent: Weight of the hidden per-visit intent (click; 0.7x buy).
    buy_without_click_per_million: Planted inconsistent rows (skipped by the
      converter), per million impressions (at least one when > 0).
  """

  name: str = "custom"
  seed: int = 0
  output_format: str = "ali_ccp"
  target_ctr: float = 0.035
  target_cvr: float = 0.09
  impressions_per_user: float = 20.0
  items_per_impression: float = 0.05
  num_categories: int = 300
  user_zipf: float = 1.05
  item_zipf: float = 1.05
  mean_visit_length: float = 10.0
  history_median: float = 25.0
  targeting: float = 0.5
  latent_dim: int = 8
  id_residual: float = 0.5
  step_correlation: float = 0.5
  click_affinity: float = 0.35
  buy_affinity: float = 0.3
  click_history: Tuple[float, float, float, float] = (0.12, 0.08, 0.05, 0.04)
  buy_history: Tuple[float, float, float, float] = (0.04, 0.12, 0.1, 0.02)
  popularity: float = 0.15
  quality: float = 0.3
  price_gap: float = 0.25
  position: float = 0.15
  conflict: float = 0.0
  selection: float = 0.0
  visit_intent: float = 0.3
  buy_without_click_per_million: float = 20.0

  def __post_init__(self):
    if self.output_format not in ("ali_ccp", "aliexpress"):
      raise ValueError(
        f"output_format must be 'ali_ccp' or 'aliexpress', got {self.output_format!r}"
      )
    if not (0 < self.target_ctr < 0.5 and 0 < self.target_cvr < 0.5):
      raise ValueError("target_ctr and target_cvr must be in (0, 0.5)")
    if not 1.0 <= self.mean_visit_length <= MAX_VISIT:
      raise ValueError(f"mean_visit_length must be in [1, {MAX_VISIT}]")
    for name in ("id_residual", "step_correlation", "targeting"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


FAMILY: Dict[str, RealisticConfig] = {
  "base": RealisticConfig(name="base", seed=11),
  # Clickbait: what raises clicks lowers purchases.
  "conflict": RealisticConfig(name="conflict", seed=23, conflict=0.5),
  # Clicks select the impressions with a high (hidden) need.
  "selection": RealisticConfig(name="selection", seed=37, selection=0.6),
  # A strong per-visit intent that the features do not carry.
  "visit_intent": RealisticConfig(name="visit_intent", seed=41, visit_intent=0.7),
  # Mostly id-level signal on a long tail: few repeats per id.
  "sparse": RealisticConfig(
    name="sparse",
    seed=53,
    items_per_impression=0.2,
    impressions_per_user=6.0,
    item_zipf=0.9,
    id_residual=0.8,
    targeting=0.3,
  ),
  "aliexpress_shaped": RealisticConfig(
    name="aliexpress_shaped",
    seed=67,
    output_format="aliexpress",
    target_ctr=0.025,
    target_cvr=0.03,
    conflict=0.3,
  ),
}


def resolve(member: Union[str, RealisticConfig]) -> RealisticConfig:
  """A family member by name, or the config itself."""
  if isinstance(member, RealisticConfig):
    return member
  if member not in FAMILY:
    raise ValueError(f"unknown realistic member {member!r}; known: {', '.join(sorted(FAMILY))}")
  return FAMILY[member]


# --- the hidden world ---------------------------------------------------------


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
  """Popularity ``1 / rank^exponent`` in a random order, summing to 1."""
  w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
  w = w[rng.permutation(n)]
  return w / w.sum()


def _draw(rng: np.random.Generator, cumulative: np.ndarray, size: int) -> np.ndarray:
  """Indices drawn from the distribution of a cumulative array ending at 1."""
  return np.minimum(
    np.searchsorted(cumulative, rng.random(size), side="right"), cumulative.size - 1
  )


def _unit(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
  return rng.standard_normal((n, k)).astype(np.float32)


def _mix(shared: np.ndarray, own: np.ndarray, own_share: float) -> np.ndarray:
  """Unit-variance blend: ``own_share`` of the variance from ``own``."""
  return math.sqrt(1.0 - own_share) * shared + math.sqrt(own_share) * own


def _grouped_cumulative(
  groups: np.ndarray, weights: np.ndarray, num_groups: int
) -> Tuple[np.ndarray, np.ndarray]:
  """Members sorted by group and ``group + within-group cumulative share``.

  Drawing ``searchsorted(keys, g + u)`` for u in [0, 1) then picks a member of
  group g with probability proportional to its weight.
  """
  order = np.argsort(groups, kind="stable")
  g, w = groups[order], weights[order]
  totals = np.bincount(g, weights=w, minlength=num_groups)
  within = np.cumsum(w) - np.repeat(
    np.cumsum(totals) - totals, np.bincount(g, minlength=num_groups)
  )
  return order, g + within / totals[g]


class World:
  """Users, items and their hidden traits, drawn from the config's seed.

  Arrays hold one row per user or item; ``hist[f]`` holds a history field's
  ``(keys = user * size + value, weights = log(1 + count), size)``, sorted by
  key.
  """

  def __init__(self, config: RealisticConfig, num_impressions: int):
    c = config
    rng = np.random.default_rng([c.seed, 0])
    k = c.latent_dim
    self.config = c
    self.num_users = max(10, int(num_impressions / c.impressions_per_user))
    self.num_items = max(50, int(num_impressions * c.items_per_impression))
    nu, ni, nc = self.num_users, self.num_items, c.num_categories
    self.num_shops = max(5, ni // 15)
    self.num_brands = max(5, ni // 8)
    self.num_intentions = 3 * nc
    # Users: profile groups (skewed), factors from the groups plus an id part.
    self.profile = np.stack(
      [_draw(rng, np.cumsum(rng.dirichlet(np.full(n, 0.7))), nu) for _, n in PROFILE_FIELDS], axis=1
    )
    self.activity = np.cumsum(_zipf_weights(rng, nu, c.user_zipf))
    self.user_click, self.user_buy = self._factors(
      rng, [_unit(rng, n, k) for _, n in PROFILE_FIELDS], self.profile, nu
    )
    # Items: Zipf popularity, attributes, factors, hidden traits.
    self.popularity = _zipf_weights(rng, ni, c.item_zipf)
    self.cum_popularity = np.cumsum(self.popularity)
    self.category = _draw(rng, np.cumsum(_zipf_weights(rng, nc, 1.0)), ni)
    self.shop = _draw(rng, np.cumsum(_zipf_weights(rng, self.num_shops, 1.0)), ni)
    self.brand = _draw(rng, np.cumsum(_zipf_weights(rng, self.num_brands, 1.0)), ni)
    # 1-4 intentions, the first tied to the category; -1 = none.
    count = 1 + rng.integers(0, 4, ni)
    self.intentions = np.full((ni, 4), -1, np.int64)
    self.intentions[:, 0] = 3 * self.category + rng.integers(0, 3, ni)
    extra = rng.integers(0, self.num_intentions, (ni, 3))
    self.intentions[:, 1:] = np.where(np.arange(1, 4) < count[:, None], extra, -1)
    self.item_click, self.item_buy = self._factors(
      rng,
      [_unit(rng, nc, k), _unit(rng, self.num_shops, k), _unit(rng, self.num_brands, k)],
      np.stack([self.category, self.shop, self.brand], axis=1),
      ni,
    )
    log_pop = np.log(self.popularity)
    self.log_popularity = (log_pop - log_pop.mean()) / log_pop.std()
    self.quality_click = rng.standard_normal(ni).astype(np.float32)
    self.quality_buy = _mix(self.quality_click, rng.standard_normal(ni).astype(np.float32), 0.5)
    # Price tier follows the brand, with some spread within it.
    brand_tier = rng.integers(0, 4, self.num_brands)
    self.price_tier = np.clip(brand_tier[self.brand] + rng.integers(-1, 2, ni), 0, 3)
    # Clickbait: half category-level (learnable from attributes), half id-level.
    self.bait = _mix(
      _unit(rng, nc, 1)[self.category, 0], rng.standard_normal(ni).astype(np.float32), 0.5
    )
    self.need_sensitivity = np.exp(0.75 * rng.standard_normal(ni) - 0.28)
    self._histories(rng)
    self.item_order, self.item_keys = _grouped_cumulative(self.category, self.popularity, nc)

  def _factors(
    self, rng: np.random.Generator, tables: Sequence[np.ndarray], codes: np.ndarray, n: int
  ) -> Tuple[np.ndarray, np.ndarray]:
    """Click and buy factors ``[n, k]`` of rows coded by ``codes`` [n, fields].

    A factor is the sum of the rows' group vectors (rescaled to unit variance)
    blended with an id-level residual; the buy factor shares
    ``step_correlation`` of the click factor, the rest drawn the same way
    from independent tables.
    """
    c, k = self.config, self.config.latent_dim

    def factor(group_tables: Sequence[np.ndarray]) -> np.ndarray:
      shared = sum(t[codes[:, j]] for j, t in enumerate(group_tables))
      return _mix(shared / math.sqrt(len(group_tables)), _unit(rng, n, k), c.id_residual**2)

    click = factor(tables)
    other = factor([_unit(rng, t.shape[0], k) for t in tables])
    buy = _mix(click, other, 1.0 - c.step_correlation**2)
    return click.astype(np.float32), buy.astype(np.float32)

  def _histories(self, rng: np.random.Generator) -> None:
    """Each user's past interactions: categories from their tastes, then
    items by popularity within the category."""
    c, nu, nc = self.config, self.num_users, self.config.num_categories
    sizes = np.clip(np.round(rng.lognormal(math.log(c.history_median), 1.0, nu)), 0, 300).astype(
      np.int64
    )
    sizes[rng.random(nu) < 0.1] = 0  # new users: no history
    category_vectors = np.stack(
      [
        self.item_click[self.category == j].mean(axis=0)
        if np.any(self.category == j)
        else np.zeros(c.latent_dim, np.float32)
        for j in range(nc)
      ]
    )
    category_mass = np.bincount(self.category, weights=self.popularity, minlength=nc)
    with np.errstate(divide="ignore"):
      log_mass = np.log(category_mass)
    order, keys = _grouped_cumulative(self.category, self.popularity, nc)
    users, items = [], []
    for start in range(0, nu, 4096):
      stop = min(nu, start + 4096)
      logits = 2.0 * self.user_click[start:stop] @ category_vectors.T + log_mass
      p = np.exp(logits - logits.max(axis=1, keepdims=True))
      cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
      cum[:, -1] = 1.0
      row = np.repeat(np.arange(stop - start), sizes[start:stop])
      flat = (cum + np.arange(stop - start)[:, None]).ravel()
      pick = np.searchsorted(flat, row + rng.random(row.size), side="right")
      category = np.minimum(pick - row * nc, nc - 1)
      pos = np.searchsorted(keys, category + rng.random(row.size), side="right")
      users.append(row + start)
      items.append(order[np.minimum(pos, order.size - 1)])
    self.hist_user = np.concatenate(users)
    self.hist_item = np.concatenate(items)
    self.hist_offsets = np.concatenate([[0], np.cumsum(sizes)])
    values = {
      "109_14": (self.category, nc),
      "110_14": (self.shop, self.num_shops),
      "127_14": (self.brand, self.num_brands),
    }
    self.hist: Dict[str, Tuple[np.ndarray, np.ndarray, int]] = {}
    for field, (attribute, size) in values.items():
      self.hist[field] = self._aggregate(self.hist_user, attribute[self.hist_item], size)
    intent = self.intentions[self.hist_item]
    keep = intent >= 0
    self.hist["150_14"] = self._aggregate(
      np.repeat(self.hist_user, 4)[keep.ravel()], intent[keep], self.num_intentions
    )

  @staticmethod
  def _aggregate(
    users: np.ndarray, values: np.ndarray, size: int
  ) -> Tuple[np.ndarray, np.ndarray, int]:
    keys, counts = np.unique(users.astype(np.int64) * size + values, return_counts=True)
    return keys, np.log1p(counts), size

  def history_weight(self, field: str, users: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The history weight of ``values`` for ``users`` (0 where absent)."""
    keys, weights, size = self.hist[field]
    query = users.astype(np.int64) * size + values
    pos = np.minimum(np.searchsorted(keys, query), max(keys.size - 1, 0))
    found = (keys.size > 0) & (keys[pos] == query) & (values >= 0)
    return np.where(found, weights[pos], 0.0)


# --- impressions and their truth ------------------------------------------------


@dataclasses.dataclass
class Impressions:
  """A chunk of rows: who saw what, where, and the true logits."""

  sample_id: np.ndarray
  visit: np.ndarray  # global visit index (the common row)
  user: np.ndarray
  item: np.ndarray
  position: np.ndarray  # bucket 0..NUM_POSITIONS-1
  cross: np.ndarray  # [n, 7]: category, shop, brand, 4 intention weights
  logit_click: np.ndarray
  logit_buy: np.ndarray


def _plan_visits(
  rng: np.random.Generator, config: RealisticConfig, world: World, num_rows: int
) -> Tuple[np.ndarray, np.ndarray]:
  """Visit lengths (1..40, summing to ``num_rows``) and their users."""
  p = 1.0 / config.mean_visit_length
  lengths = np.minimum(rng.geometric(p, int(num_rows * p * 1.5) + 20), MAX_VISIT)
  while lengths.sum() < num_rows:
    lengths = np.concatenate([lengths, np.minimum(rng.geometric(p, 100), MAX_VISIT)])
  ends = np.cumsum(lengths)
  count = int(np.searchsorted(ends, num_rows)) + 1
  lengths = lengths[:count]
  lengths[-1] -= ends[count - 1] - num_rows
  users = _draw(rng, world.activity, count)
  return lengths, users


def _impressions(
  rng: np.random.Generator,
  world: World,
  lengths: np.ndarray,
  users: np.ndarray,
  first_visit: int,
  first_sample: int,
  intent: np.ndarray,
) -> Impressions:
  """Rows of consecutive visits with their true logits (intercepts excluded)."""
  c = world.config
  n = int(lengths.sum())
  visit_local = np.repeat(np.arange(lengths.size), lengths)
  user = users[visit_local]
  rank = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  position = np.minimum(rank // 2, NUM_POSITIONS - 1)
  # Targeted rows: a category from the user's history, else by popularity.
  item = _draw(rng, world.cum_popularity, n)
  sizes = np.diff(world.hist_offsets)[user]
  targeted = (rng.random(n) < c.targeting) & (sizes > 0)
  past = world.hist_offsets[user[targeted]] + (rng.random(targeted.sum()) * sizes[targeted]).astype(
    np.int64
  )
  category = world.category[world.hist_item[past]]
  pos = np.searchsorted(world.item_keys, category + rng.random(category.size), side="right")
  item[targeted] = world.item_order[np.minimum(pos, world.item_order.size - 1)]
  cross = np.stack(
    [
      world.history_weight(f, user, a[item])
      for f, a in zip(HISTORY_FIELDS[:3], (world.category, world.shop, world.brand))
    ]
    + [world.history_weight("150_14", user, world.intentions[item, j]) for j in range(4)],
    axis=1,
  )
  matches = np.concatenate([cross[:, :3], cross[:, 3:].sum(axis=1, keepdims=True)], axis=1)
  root_k = math.sqrt(c.latent_dim)
  affinity_click = np.einsum("ij,ij->i", world.user_click[user], world.item_click[item]) / root_k
  affinity_buy = np.einsum("ij,ij->i", world.user_buy[user], world.item_buy[item]) / root_k
  need = rng.standard_normal(n)
  spending = world.profile[user, CONSUMPTION_FIELD]
  logit_click = (
    c.click_affinity * affinity_click
    + matches @ np.asarray(c.click_history)
    + c.popularity * world.log_popularity[item]
    + c.quality * world.quality_click[item]
    - c.position * position
    + c.conflict * world.bait[item]
    + c.selection * world.need_sensitivity[item] * need
    + c.visit_intent * intent[visit_local]
  )
  logit_buy = (
    c.buy_affinity * affinity_buy
    + matches @ np.asarray(c.buy_history)
    + c.quality * world.quality_buy[item]
    - c.price_gap * np.abs(world.price_tier[item] - spending)
    - 1.5 * c.conflict * world.bait[item]
    + c.selection * need
    + 0.7 * c.visit_intent * intent[visit_local]
  )
  return Impressions(
    sample_id=first_sample + np.arange(n, dtype=np.int64),
    visit=first_visit + visit_local,
    user=user,
    item=item,
    position=position,
    cross=cross,
    logit_click=logit_click,
    logit_buy=logit_buy,
  )


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-x))


def _solve_intercept(
  logits: np.ndarray, target: float, weights: Optional[np.ndarray] = None
) -> float:
  """b with weighted mean ``sigmoid(b + logits)`` = target (bisection)."""
  lo, hi = -30.0, 30.0
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    mean = np.average(_sigmoid(mid + logits), weights=weights)
    lo, hi = (mid, hi) if mean < target else (lo, mid)
  return 0.5 * (lo + hi)


class _Split:
  """A split's visit plan, in chunks that regenerate the same rows."""

  def __init__(self, world: World, split: str, num_rows: int, first_visit: int, first_sample: int):
    self.world = world
    self.seed = [world.config.seed, 1 + SPLITS.index(split)]
    rng = np.random.default_rng(self.seed)
    self.lengths, self.users = _plan_visits(rng, world.config, world, num_rows)
    self.intent = rng.standard_normal(self.lengths.size)
    self.first_visit = first_visit
    self.first_sample = first_sample
    ends = np.cumsum(self.lengths)
    cuts = np.searchsorted(ends, np.arange(CHUNK_ROWS, num_rows, CHUNK_ROWS))
    self.bounds = np.unique(np.concatenate([[0], cuts + 1, [self.lengths.size]]))
    self.bounds = self.bounds[self.bounds <= self.lengths.size]

  def chunks(self) -> Iterator[Impressions]:
    starts = np.concatenate([[0], np.cumsum(self.lengths)])
    for j in range(self.bounds.size - 1):
      a, b = int(self.bounds[j]), int(self.bounds[j + 1])
      rng = np.random.default_rng(self.seed + [j])
      yield _impressions(
        rng,
        self.world,
        self.lengths[a:b],
        self.users[a:b],
        self.first_visit + a,
        self.first_sample + int(starts[a]),
        self.intent[a:b],
      )


# --- writing -------------------------------------------------------------------


def _entry_prefixes(field: str, size: int) -> np.ndarray:
  """``"\\x01field\\x02id\\x03"`` of every value of a field (object array)."""
  base = FIELD_BASE[field]
  return np.array([f"\x01{field}\x02{base + v}\x03" for v in range(size)], dtype=object)


def _values(weights: np.ndarray) -> np.ndarray:
  """Entry values as the raw files write them (``%g``), object array."""
  return np.array([f"{w:g}" for w in weights.tolist()], dtype=object)


class _AliCcpWriter:
  """Writes skeleton and common lines; per-user and per-item text made once."""

  def __init__(self, world: World):
    w = world
    self.world = w
    self.user_text = self._user_text()
    self.item_text = np.array(
      [
        ali_ccp.format_entries(
          [
            ("205", FIELD_BASE["205"] + i, 1.0),
            ("206", FIELD_BASE["206"] + int(w.category[i]), 1.0),
            ("207", FIELD_BASE["207"] + int(w.shop[i]), 1.0),
            ("216", FIELD_BASE["216"] + int(w.brand[i]), 1.0),
          ]
          + [("210", FIELD_BASE["210"] + int(t), 1.0) for t in w.intentions[i] if t >= 0]
        )
        for i in range(w.num_items)
      ],
      dtype=object,
    )
    self.item_entries = 4 + (w.intentions >= 0).sum(axis=1)
    self.position_text = np.array(
      [f"\x01301\x02{FIELD_BASE['301'] + p}\x031" for p in range(NUM_POSITIONS)], dtype=object
    )
    self.prefixes = [
      _entry_prefixes(f, n)
      for f, n in zip(
        CROSS_FIELDS, (w.config.num_categories, w.num_shops, w.num_brands, w.num_intentions)
      )
    ]

  def _user_text(self) -> List[str]:
    """Each user's common-row entries: id, profile, histories (heaviest first).

    Built a block of users at a time: the entries of all users at once, as
    Python strings, took ~2 GB for the 2M-row members.
    """
    w = self.world
    prefixes = {f: _entry_prefixes(f, w.hist[f][2]) for f in HISTORY_FIELDS}
    out: List[str] = []
    counts = np.zeros(w.num_users, np.int64)
    for start in range(0, w.num_users, 8192):
      stop = min(w.num_users, start + 8192)
      texts = [[] for _ in range(stop - start)]
      for field in HISTORY_FIELDS:
        keys, weights, size = w.hist[field]
        a, b = np.searchsorted(keys, [start * size, stop * size])
        users, values = np.divmod(keys[a:b], size)
        order = np.lexsort((values, -weights[a:b], users))
        entries = prefixes[field][values[order]] + _values(weights[a:b][order])
        cuts = np.searchsorted(users[order], np.arange(start, stop + 1))
        counts[start:stop] += np.diff(cuts)
        for u in range(stop - start):
          texts[u].append("".join(entries[cuts[u] : cuts[u + 1]]))
      for u in range(start, stop):
        head = ali_ccp.format_entries(
          [("101", FIELD_BASE["101"] + u, 1.0)]
          + [
            (f, FIELD_BASE[f] + int(w.profile[u, j]), 1.0)
            for j, (f, _) in enumerate(PROFILE_FIELDS)
          ]
        )
        out.append(head + "".join(texts[u - start]))
    self.user_entries = 1 + len(PROFILE_FIELDS) + counts
    return out

  def write_chunk(
    self, rows: Impressions, click: np.ndarray, buy: np.ndarray, skeleton, common
  ) -> None:
    w = self.world
    attributes = [w.category[rows.item], w.shop[rows.item], w.brand[rows.item]] + [
      w.intentions[rows.item, j] for j in range(4)
    ]
    cross_text = np.full(rows.item.size, "", dtype=object)
    counts = self.item_entries[rows.item] + 1
    for j, values in enumerate(attributes):
      matched = rows.cross[:, j] > 0
      prefixes = self.prefixes[min(j, 3)]
      cross_text[matched] += prefixes[values[matched]] + _values(rows.cross[matched, j])
      counts += matched
    text = self.item_text[rows.item] + self.position_text[rows.position] + cross_text
    keys = [_visit_key(v) for v in range(int(rows.visit[0]), int(rows.visit[-1]) + 1)]
    first = int(rows.visit[0])
    skeleton.write(
      "".join(
        [
          f"{s},{c},{b},{keys[v - first]},{n},{t}\n"
          for s, c, b, v, n, t in zip(
            rows.sample_id.tolist(),
            click.tolist(),
            buy.tolist(),
            rows.visit.tolist(),
            counts.tolist(),
            text,
          )
        ]
      )
    )
    starts = np.flatnonzero(np.diff(rows.visit, prepend=-1))
    common.write(
      "".join(
        [
          f"{keys[v - first]},{self.user_entries[u]},{self.user_text[u]}\n"
          for v, u in zip(rows.visit[starts].tolist(), rows.user[starts].tolist())
        ]
      )
    )


def _visit_key(visit: int) -> str:
  """A hash-like common_feature_index, unique per visit (an odd multiplier
  is a bijection of 64-bit integers)."""
  return f"{(visit * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64):016x}"


def _fixed_width(values: np.ndarray) -> List[bytes]:
  """Rows of values in [0, 1] as ``0.dddd,`` columns, one bytes per row.

  Vectorised: 63 numbers a row formatted one by one cost more than the rest
  of the writer together.
  """
  ticks = np.rint(np.clip(values, 0.0, 1.0) * 10_000).astype(np.int64)
  n, m = ticks.shape
  out = np.empty((n, m, 7), np.uint8)
  out[:, :, 0] = ord("0") + ticks // 10_000
  out[:, :, 1] = ord(".")
  for d in range(4):
    out[:, :, 2 + d] = ord("0") + (ticks // 10 ** (3 - d)) % 10
  out[:, :, 6] = ord(",")
  blob = out.reshape(n, m * 7).tobytes()
  width = m * 7
  return [blob[i * width : (i + 1) * width] for i in range(n)]


class _AliExpressWriter:
  """Writes FuxiCTR's AliExpress CSV: one search = one visit.

  ``categorical_1..8`` are the profile groups, 9 the position, 10 the
  category, 11 the price tier, 12 the popularity decile, 13-16 whether the
  item's category / shop / brand / intentions match the history. The 63
  numerical columns are noisy views of the hidden factors (1-8 user, 9-16
  item, 23-30 user buy, 31-38 item buy), the match weights (17-20),
  popularity and activity percentiles (21, 22) and constant per-user or
  per-item noise (39-63), all in [0, 1].
  """

  def __init__(self, world: World):
    w = world
    self.world = w
    rng = np.random.default_rng([w.config.seed, 9])

    def view(x: np.ndarray) -> np.ndarray:
      return _sigmoid(x + rng.standard_normal(x.shape))

    self.user_numbers = np.concatenate(
      [view(w.user_click), view(w.user_buy), rng.random((w.num_users, 12))], axis=1
    )
    pop_rank = np.argsort(np.argsort(w.popularity)) / max(1, w.num_items - 1)
    self.item_numbers = np.concatenate(
      [view(w.item_click), view(w.item_buy), pop_rank[:, None], rng.random((w.num_items, 13))],
      axis=1,
    )
    activity = np.diff(np.concatenate([[0.0], w.activity]))
    self.activity_rank = np.argsort(np.argsort(activity)) / max(1, w.num_users - 1)
    self.user_text = np.array([",".join(map(str, p)) for p in w.profile.tolist()], dtype=object)
    decile = np.minimum((pop_rank * 10).astype(np.int64), 9)
    self.item_text = np.array(
      [
        f"{c},{t},{d}"
        for c, t, d in zip(w.category.tolist(), w.price_tier.tolist(), decile.tolist())
      ],
      dtype=object,
    )

  def write_chunk(
    self, rows: Impressions, click: np.ndarray, buy: np.ndarray, train_file, _
  ) -> None:
    u, i = self.user_numbers[rows.user], self.item_numbers[rows.item]
    matches = np.concatenate(
      [rows.cross[:, :3], rows.cross[:, 3:].sum(axis=1, keepdims=True)], axis=1
    )
    numbers = np.concatenate(
      [
        u[:, :8],
        i[:, :8],
        np.minimum(matches / 6.0, 1.0),
        i[:, 16:17],
        self.activity_rank[rows.user][:, None],
        u[:, 8:16],
        i[:, 8:16],
        u[:, 16:],
        i[:, 17:],
      ],
      axis=1,
    )
    flags = (matches > 0).astype(np.int64)
    train_file.write(
      "".join(
        [
          f"{v + 1},{ut},{p},{it},{f0},{f1},{f2},{f3},{nums.decode()}{c},{b}\n"
          for v, ut, p, it, f0, f1, f2, f3, nums, c, b in zip(
            rows.visit.tolist(),
            self.user_text[rows.user],
            rows.position.tolist(),
            self.item_text[rows.item],
            *flags.T.tolist(),
            _fixed_width(numbers),
            click.tolist(),
            buy.tolist(),
          )
        ]
      )
    )


# --- members --------------------------------------------------------------------


def _raw_files(config: RealisticConfig, split: str) -> Tuple[str, Optional[str]]:
  if config.output_format == "aliexpress":
    return f"{split}.csv", None
  return ali_ccp.SKELETON_FILES[split], ali_ccp.COMMON_FILES[split]


def _planted(rng: np.random.Generator, config: RealisticConfig, num_rows: int) -> np.ndarray:
  """Row offsets of the planted buy-without-click rows of a split."""
  rate = config.buy_without_click_per_million
  count = min(num_rows, math.ceil(num_rows * rate / 1e6)) if rate > 0 else 0
  return np.sort(rng.choice(num_rows, count, replace=False))


def write_member(
  member: Union[str, RealisticConfig], out_dir: str, num_train: int, num_test: int
) -> Dict[str, Any]:
  """Writes one member's raw files and truth into ``out_dir``.

  Args:
    member: A name in :data:`FAMILY` or a :class:`RealisticConfig`.
    out_dir: Folder for the raw files (``ali_ccp``: the skeleton and common
      pairs; ``aliexpress``: ``train.csv``, ``test.csv``), ``truth_*.npz`` and
      ``realistic.json``, which is written last (a folder without it is
      incomplete).
    num_train, num_test: Impressions per split (>= 1 each).

  Returns:
    The report (also ``realistic.json``): the config, world sizes, intercepts,
    per split rows, visits, clicks, buys, planted buy-without-click rows, mean
    q_click and q_purchase, and the files written.
  """
  if num_train < 1 or num_test < 1:
    raise ValueError(f"num_train and num_test must be >= 1, got {num_train}, {num_test}")
  config = resolve(member)
  os.makedirs(out_dir, exist_ok=True)
  report_path = os.path.join(out_dir, REPORT_FILE)
  if os.path.exists(report_path):
    os.remove(report_path)
  world = World(config, num_train + num_test)
  train = _Split(world, "train", num_train, 0, 1)
  test = _Split(world, "test", num_test, train.lengths.size, 1 + num_train)
  # Intercepts from the train rows (test rows follow the same world).
  logit_click = np.concatenate([r.logit_click for r in train.chunks()])
  logit_buy = np.concatenate([r.logit_buy for r in train.chunks()])
  b_click = _solve_intercept(logit_click, config.target_ctr)
  b_buy = _solve_intercept(logit_buy, config.target_cvr, _sigmoid(b_click + logit_click))
  del logit_click, logit_buy
  writer = (
    _AliExpressWriter(world) if config.output_format == "aliexpress" else _AliCcpWriter(world)
  )
  splits = {}
  for name, split, num_rows in (("train", train, num_train), ("test", test, num_test)):
    splits[name] = _write_split(config, writer, split, name, num_rows, b_click, b_buy, out_dir)
  report = {
    "member": config.name,
    "config": dataclasses.asdict(config),
    "world": {
      "users": world.num_users,
      "items": world.num_items,
      "categories": config.num_categories,
      "shops": world.num_shops,
      "brands": world.num_brands,
      "intentions": world.num_intentions,
    },
    "intercepts": {"click": b_click, "buy": b_buy},
    "splits": splits,
  }
  files.write_json_atomic(report_path, report)
  return report


def _write_split(
  config: RealisticConfig,
  writer: Any,
  split: _Split,
  name: str,
  num_rows: int,
  b_click: float,
  b_buy: float,
  out_dir: str,
) -> Dict[str, Any]:
  """Draws a split's labels, writes its files and truth; returns its counts."""
  main, shared = _raw_files(config, name)
  paths = [os.path.join(out_dir, f) for f in (main, shared) if f]
  header = (
    csv_formats.AliExpress.header.decode() + "\n" if config.output_format == "aliexpress" else ""
  )
  planted = _planted(np.random.default_rng(split.seed + [99]), config, num_rows)
  truth: Dict[str, List[np.ndarray]] = {
    k: []
    for k in (
      "sample_id",
      "q_click",
      "q_purchase",
      "would_buy",
      "click",
      "buy",
      "planted",
      "visit",
      "user",
      "item",
    )
  }
  handles = [open(p + files.INCOMPLETE_SUFFIX, "w") for p in paths]
  try:
    handles[0].write(header)
    for j, rows in enumerate(split.chunks()):
      rng = np.random.default_rng(split.seed + [j, 7])
      q_click = _sigmoid(b_click + rows.logit_click)
      q_buy = _sigmoid(b_buy + rows.logit_buy)
      click = rng.random(q_click.size) < q_click
      would_buy = rng.random(q_buy.size) < q_buy
      buy = click & would_buy
      offset = rows.sample_id - split.first_sample
      here = np.isin(offset, planted)
      click[here], buy[here] = False, True
      writer.write_chunk(rows, click.astype(np.int8), buy.astype(np.int8), handles[0], handles[-1])
      for key, value in (
        ("sample_id", rows.sample_id),
        ("q_click", q_click),
        ("q_purchase", q_buy),
        ("would_buy", would_buy),
        ("click", click),
        ("buy", buy),
        ("planted", here),
        ("visit", rows.visit),
        ("user", rows.user),
        ("item", rows.item),
      ):
        truth[key].append(value)
  except BaseException:
    for h in handles:
      h.close()
      os.remove(h.name)
    raise
  for h, path in zip(handles, paths):
    h.close()
    os.replace(h.name, path)
  arrays = {k: np.concatenate(v) for k, v in truth.items()}
  if config.output_format == "aliexpress":
    # No sample id in the format: rows are keyed by their data line (1-based).
    arrays["sample_id"] = np.arange(1, num_rows + 1, dtype=np.int64)
  truth_path = os.path.join(out_dir, TRUTH_FILE.format(split=name))
  with open(truth_path + files.INCOMPLETE_SUFFIX, "wb") as f:
    np.savez(f, **arrays)
  os.replace(truth_path + files.INCOMPLETE_SUFFIX, truth_path)
  return {
    "rows": num_rows,
    "visits": int(split.lengths.size),
    "clicks": int(arrays["click"].sum()),
    "buys": int((arrays["buy"] & arrays["click"]).sum()),
    "buy_without_click": int(arrays["planted"].sum()),
    "mean_q_click": float(arrays["q_click"].mean()),
    "mean_q_purchase_given_click": float(
      np.average(arrays["q_purchase"], weights=arrays["q_click"])
    ),
    "files": [os.path.basename(p) for p in paths] + [os.path.basename(truth_path)],
  }


def read_truth(out_dir: str, split: str) -> Dict[str, np.ndarray]:
  """The truth of a split written by :func:`write_member`.

  Returns:
    Arrays by name, one row per impression in file order: ``sample_id``
    (aliexpress: the data line, 1-based), ``q_click``, ``q_purchase`` (buy
    given a click), ``would_buy`` (the buy event drawn for every impression),
    ``click``, ``buy`` (as written), ``planted`` (buy-without-click rows),
    ``visit``, ``user``, ``item`` (hidden-world indices).
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  with np.load(os.path.join(out_dir, TRUTH_FILE.format(split=split))) as z:
    return {k: z[k] for k in z.files}


def converted_sample_ids(data_dir: str, split: str) -> np.ndarray:
  """The ``sample_id`` of every example of a converted split, as int64."""
  paths = input_pipeline.list_split_files(data_dir, split)
  spec = {"sample_id": tf.io.FixedLenFeature([], tf.string)}
  ds = (
    tf.data.TFRecordDataset(paths, compression_type=input_pipeline.COMPRESSION)
    .batch(65536)
    .map(lambda x: tf.strings.to_number(tf.io.parse_example(x, spec)["sample_id"], tf.int64))
  )
  return np.concatenate([b.numpy() for b in ds] or [np.zeros(0, np.int64)])


def align_truth(
  truth: Mapping[str, np.ndarray], sample_ids: Optional[Sequence[int]] = None
) -> Dict[str, np.ndarray]:
  """The truth rows of ``sample_ids``, in their order.

  Args:
    truth: From :func:`read_truth`.
    sample_ids: Sample ids of the converted rows; None takes every row the
      converter keeps (all but the planted ones).

  Raises:
    ValueError: when the ids are not the converter's rows one to one (an id
      not in the truth, a repeated id, or a kept truth row missing).
  """
  keep = ~truth["planted"]
  if sample_ids is None:
    return {k: v[keep] for k, v in truth.items()}
  ids = np.asarray(sample_ids, np.int64)
  order = np.argsort(truth["sample_id"])
  pos = np.searchsorted(truth["sample_id"], ids, sorter=order)
  pos = order[np.minimum(pos, order.size - 1)]
  unknown = int(np.count_nonzero(truth["sample_id"][pos] != ids))
  repeated = ids.size - np.unique(ids).size
  missing = int(keep.sum()) - (ids.size - repeated - unknown)
  if unknown or repeated or missing or np.any(truth["planted"][pos]):
    raise ValueError(
      f"sample ids do not match the truth one to one: {unknown} "
      f"unknown, {repeated} repeated, {missing} kept rows "
      "missing"
    )
  return {k: v[pos] for k, v in truth.items()}


def oracle_metrics(
  truth: Mapping[str, np.ndarray], sample_ids: Optional[Sequence[int]] = None
) -> Dict[str, float]:
  """What the truth itself scores: p_click = q_click, p_purchase = q_click *
  q_purchase, on the rows of ``sample_ids`` (see :func:`align_truth`).

  Returns:
    ``auc/click``, ``auc/purchase`` (CTCVR), ``auc/cvr_clicked`` (q_purchase
    against buys among clicks), ``auc/cvr_entire_space`` (q_purchase against
    the would-buy event of every impression), ``pcoc/click``,
    ``pcoc/purchase`` (1 in expectation) and ``rows``.
  """
  t = align_truth(truth, sample_ids)
  return prediction_metrics(t, t["q_click"], t["q_purchase"])


def prediction_metrics(
  truth: Mapping[str, np.ndarray], p_click: np.ndarray, p_cvr: np.ndarray
) -> Dict[str, float]:
  """AUCs and PCOCs of predicted pCTR and pCVR on aligned rows.

  Args:
    truth: ``click``, ``buy`` (labels) and, optionally, ``would_buy`` (the
      entire-space AUC needs it), one row per prediction.
    p_click, p_cvr: Predicted click and buy-given-click probabilities.

  Returns:
    The keys of :func:`oracle_metrics` (``auc/cvr_entire_space`` only with
    ``would_buy``).
  """
  click = np.asarray(truth["click"]).astype(bool)
  purchase = click & np.asarray(truth["buy"]).astype(bool)
  p_purchase = p_click * p_cvr
  out = {
    "auc/click": metrics.roc_auc(click, p_click),
    "auc/purchase": metrics.roc_auc(purchase, p_purchase),
    "auc/cvr_clicked": metrics.roc_auc(purchase[click], p_cvr[click]),
    "pcoc/click": metrics.pcoc(click, p_click),
    "pcoc/purchase": metrics.pcoc(purchase, p_purchase),
    "rows": int(click.size),
  }
  if "would_buy" in truth:
    out["auc/cvr_entire_space"] = metrics.roc_auc(truth["would_buy"], p_cvr)
  return out
