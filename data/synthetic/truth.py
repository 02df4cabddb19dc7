"""The hidden world of a synthetic dataset and the true step probabilities.

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

Every draw comes from a numpy Generator seeded by ``(seed, stream, ...)``: the
world from :data:`_WORLD_STREAM` (the same for every split), each split's rows
from its own stream, chunk by chunk (:meth:`GroundTruth.draw_chunk`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Dict, NamedTuple, Sequence, Tuple

import numpy as np

from tafe_tf import example_codec
from tafe_tf import features as features_lib
from tafe_tf.data.synthetic import config as config_lib
from tafe_tf.data.synthetic.config import (
  CHUNK_ROWS,
  HIST_BRAND,
  HIST_CATEGORY,
  HIST_SHOP,
  ITEM_BRAND,
  ITEM_CATEGORY,
  ITEM_ID,
  ITEM_SHOP,
  POSITION,
  PRICE,
  USER_AGE,
  USER_CATEGORY_MATCH,
  USER_CITY_TIER,
  USER_CONSUMPTION,
  USER_GENDER,
  USER_ID,
  USER_SEGMENT,
  SyntheticConfig,
)

# Random stream ids: (seed, stream, ...) seeds one numpy Generator.
_WORLD_STREAM = 0
_CALIBRATION_STREAM = 4
_SPLIT_STREAMS = {"train": 1, "validation": 2, "test": 3}
_CALIBRATION_ROWS = 16 * CHUNK_ROWS

_STEP_LATENT_DIM = 4
_POSITION_DECAY = 0.85  # P(position k) ~ 0.85^k: top slots are shown more


def _rng(seed: int, *stream: int) -> np.random.Generator:
  return np.random.default_rng([seed, *stream])


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
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
  return np.minimum(np.searchsorted(cdf, uniforms, side="right"), cdf.shape[0] - 1).astype(np.int64)


def _draw_in_segments(
  cum0: np.ndarray, starts: np.ndarray, ends: np.ndarray, uniforms: np.ndarray
) -> np.ndarray:
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


def _solve_intercept(logits: np.ndarray, weights: np.ndarray, rate: float) -> float:
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

  def __init__(
    self, event_users: np.ndarray, event_ids: np.ndarray, num_users: int, num_ids: int, max_len: int
  ):
    self.num_ids = num_ids
    keys, counts = np.unique(event_users * num_ids + event_ids, return_counts=True)
    users, ids = keys // num_ids, keys % num_ids
    # Keep each user's max_len most frequent ids (ties: smaller id first).
    order = np.lexsort((ids, -counts, users))
    sorted_users = users[order]
    rank = np.arange(order.shape[0]) - np.searchsorted(sorted_users, sorted_users)
    keep = np.empty(order.shape[0], dtype=bool)
    keep[order] = rank < max_len
    self.keys = keys[keep]
    self.ids = ids[keep]
    self.counts = counts[keep]
    self.weights = np.log1p(self.counts).astype(np.float32)
    self.row_splits = np.concatenate(
      [[0], np.cumsum(np.bincount(users[keep], minlength=num_users))]
    ).astype(np.int64)
    self.count_cum0 = np.concatenate([[0.0], np.cumsum(self.counts, dtype=np.float64)])

  def lengths(self, users: np.ndarray) -> np.ndarray:
    return self.row_splits[users + 1] - self.row_splits[users]

  def gather(
    self, users: np.ndarray
  ) -> Tuple[example_codec.RaggedColumn, example_codec.RaggedColumn]:
    """The histories of ``users`` as ragged (ids, weights)."""
    starts = self.row_splits[users]
    lengths = self.row_splits[users + 1] - starts
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(starts - splits[:-1], lengths) + np.arange(splits[-1])
    return (
      example_codec.RaggedColumn(self.ids[index], splits),
      example_codec.RaggedColumn(self.weights[index], splits),
    )

  def count(self, users: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """How often ``ids[i]`` occurs in ``users[i]``'s history (0: absent)."""
    if self.keys.shape[0] == 0:
      return np.zeros(users.shape[0], dtype=np.int64)
    query = users * self.num_ids + ids
    at = np.minimum(np.searchsorted(self.keys, query), self.keys.shape[0] - 1)
    return np.where(self.keys[at] == query, self.counts[at], 0)


class Draws(NamedTuple):
  """The random draws behind a run of rows."""

  users: np.ndarray  # int64 [n]
  items: np.ndarray  # int64 [n]
  positions: np.ndarray  # int64 [n]
  uniforms: np.ndarray  # float64 [n, num_steps], the label draws

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
    item_category[rng.permutation(c.num_items)[: c.num_categories]] = np.arange(c.num_categories)
    self.item_category = item_category
    self.item_latent = self.category_center[item_category] + 0.6 * rng.normal(size=(c.num_items, d))
    self.item_popularity = _zipf_weights(c.num_items, c.item_zipf, rng)
    self.item_brand = _draw(_cdf(_zipf_weights(c.num_brands, 1.0, rng)), rng.random(c.num_items))
    self.item_shop = _draw(_cdf(_zipf_weights(c.num_shops, 1.0, rng)), rng.random(c.num_items))
    # Clickbait shops: shops in random order, as many as bring their share of
    # item popularity closest to clickbait_rate (a flag per shop would let one
    # popular shop swing the share of clickbait impressions).
    shop_share = (
      np.bincount(self.item_shop, weights=self.item_popularity, minlength=c.num_shops)
      / self.item_popularity.sum()
    )
    shop_order = rng.permutation(c.num_shops)
    share = np.concatenate([[0.0], np.cumsum(shop_share[shop_order])])
    self.shop_clickbait = np.zeros(c.num_shops, dtype=bool)
    self.shop_clickbait[shop_order[: np.argmin(np.abs(share - c.clickbait_rate))]] = True
    self.item_clickbait = self.shop_clickbait[self.item_shop]
    shop_trust = rng.normal(size=c.num_shops)
    self.item_shop_trust = shop_trust[self.item_shop]
    brand_quality = rng.normal(size=c.num_brands)
    self.item_quality = brand_quality[self.item_brand] + 0.5 * rng.normal(size=c.num_items)
    self.item_appeal = rng.normal(size=c.num_items)
    log_price = category_price[item_category] + 0.5 * rng.normal(size=c.num_items)
    # Standardized over the catalogue: the dense feature and the price the user
    # preference is measured in.
    self.item_price = ((log_price - log_price.mean()) / max(log_price.std(), 1e-6)).astype(
      np.float32
    )
    self.item_cdf = _cdf(self.item_popularity)
    # Items grouped by category, for draws within a category.
    self.items_by_category = np.argsort(item_category, kind="stable")
    self.category_splits = np.concatenate(
      [[0], np.cumsum(np.bincount(item_category, minlength=c.num_categories))]
    ).astype(np.int64)
    self.category_item_cum0 = np.concatenate(
      [[0.0], np.cumsum(self.item_popularity[self.items_by_category])]
    )

  def _build_users(self, rng: np.random.Generator) -> None:
    c = self.config
    u = c.num_users
    self.user_latent = rng.normal(size=(u, c.latent_dim))
    self.user_gender = (rng.random(u) < 0.5).astype(np.int64)
    self.user_age = _draw(_cdf(np.asarray(config_lib.AGE_PROBS)), rng.random(u))
    power = rng.normal(size=u)
    self.user_consumption = np.digitize(power, [-0.6, 0.6]).astype(np.int64)
    self.user_city_tier = np.digitize(
      0.7 * power + 0.7 * rng.normal(size=u), [-0.8, 0.0, 0.8]
    ).astype(np.int64)
    segment_centers = rng.normal(size=(config_lib.NUM_SEGMENTS, c.latent_dim))
    self.user_segment = np.argmax(self.user_latent @ segment_centers.T, axis=1).astype(np.int64)
    age = self.user_age - 3.0
    self.user_click_propensity = -0.25 * age + 0.8 * rng.normal(size=u)
    self.user_buy_propensity = 0.25 * age + 0.5 * power + 0.7 * rng.normal(size=u)
    self.user_price_preference = 0.8 * power + 0.6 * rng.normal(size=u)
    self.user_cdf = _cdf(_zipf_weights(u, c.user_zipf, rng))
    self.position_cdf = _cdf(np.power(_POSITION_DECAY, np.arange(c.num_positions)))

  def _build_histories(self, rng: np.random.Generator) -> None:
    """Behaviour histories: events drawn from each user's category taste."""
    c = self.config
    has_history = rng.random(c.num_users) >= c.empty_history_rate
    num_events = np.where(has_history, 1 + rng.poisson(c.mean_history_events - 1, c.num_users), 0)
    event_users = np.repeat(np.arange(c.num_users), num_events)
    log_popularity = np.log(
      np.bincount(self.item_category, weights=self.item_popularity, minlength=c.num_categories)
    )
    gender_sign = 2.0 * self.user_gender - 1.0
    event_splits = np.concatenate([[0], np.cumsum(num_events)])
    event_uniforms = rng.random(event_users.shape[0])
    event_categories = np.empty(event_users.shape[0], dtype=np.int64)
    k = c.num_categories
    for first in range(0, c.num_users, CHUNK_ROWS):
      users = np.arange(first, min(first + CHUNK_ROWS, c.num_users))
      taste = (
        self.user_latent[users] @ self.category_center.T * (1.5 / math.sqrt(c.latent_dim))
        + log_popularity
        + 0.5 * gender_sign[users, None] * self.category_gender_appeal
      )
      taste = np.exp(taste - taste.max(axis=1, keepdims=True))
      # Each user's events draw from softmax(taste), a segment per user.
      cum0 = np.concatenate([[0.0], np.cumsum(taste / taste.sum(axis=1, keepdims=True))])
      lo, hi = event_splits[users[0]], event_splits[users[-1] + 1]
      rows = event_users[lo:hi] - first
      event_categories[lo:hi] = (
        _draw_in_segments(cum0, rows * k, (rows + 1) * k, event_uniforms[lo:hi]) - rows * k
      )
    event_items = self._items_in_categories(event_categories, rng.random(event_users.shape[0]))
    self.hist_category = _History(
      event_users, event_categories, c.num_users, c.num_categories, c.max_history
    )
    self.hist_brand = _History(
      event_users, self.item_brand[event_items], c.num_users, c.num_brands, c.max_history
    )
    self.hist_shop = _History(
      event_users, self.item_shop[event_items], c.num_users, c.num_shops, c.max_history
    )

  def _build_steps(self, rng: np.random.Generator) -> None:
    """Step-specific parts of the later steps (t >= 2)."""
    c = self.config
    later = c.num_steps - 1
    self.later_weights = rng.uniform(0.4, 1.0, size=(later, 5))
    self.user_step_latent = rng.normal(size=(c.num_users, later, _STEP_LATENT_DIM))
    self.item_step_latent = rng.normal(size=(c.num_items, later, _STEP_LATENT_DIM))

  def _items_in_categories(self, categories: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Items drawn by popularity within each of ``categories``."""
    at = _draw_in_segments(
      self.category_item_cum0,
      self.category_splits[categories],
      self.category_splits[categories + 1],
      uniforms,
    )
    return self.items_by_category[at]

  def _calibrate(self) -> np.ndarray:
    """Intercepts that give ``config.conditional_rates()`` on a fixed sample."""
    draws = self.draw(_rng(self.config.seed, _CALIBRATION_STREAM), _CALIBRATION_ROWS)
    logits = self.logits(draws.users, draws.items, draws.positions)
    reached = np.ones(logits.shape[0])
    intercepts = []
    for t, rate in enumerate(self.config.conditional_rates()):
      intercept = _solve_intercept(np.ascontiguousarray(logits[:, t]), reached, rate)
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
    targeted = (r[:, 3] < self.config.targeted_rate) & (history.lengths(users) > 0)
    tu = users[targeted]
    # A category of the user's history, weighted by its count, then an item.
    entry = _draw_in_segments(
      history.count_cum0, history.row_splits[tu], history.row_splits[tu + 1], r[targeted, 4]
    )
    items[targeted] = self._items_in_categories(history.ids[entry], r[targeted, 5])
    return Draws(users, items, positions, uniforms)

  def draw_chunk(self, split: str, chunk: int) -> Draws:
    """The :data:`CHUNK_ROWS` rows of chunk ``chunk`` of ``split``."""
    return self.draw(_rng(self.config.seed, _SPLIT_STREAMS[split], chunk), CHUNK_ROWS)

  def features(self, users: np.ndarray, items: np.ndarray, positions: np.ndarray) -> Dict[str, Any]:
    """The visible feature columns of impressions ``(user, item, position)``."""
    out: Dict[str, Any] = {
      USER_ID: users,
      USER_GENDER: self.user_gender[users],
      USER_AGE: self.user_age[users],
      USER_CONSUMPTION: self.user_consumption[users],
      USER_CITY_TIER: self.user_city_tier[users],
      USER_SEGMENT: self.user_segment[users],
    }
    for name, history in (
      (HIST_CATEGORY, self.hist_category),
      (HIST_BRAND, self.hist_brand),
      (HIST_SHOP, self.hist_shop),
    ):
      out[name], out[name + features_lib.WEIGHT_SUFFIX] = history.gather(users)
    category = self.item_category[items]
    matches = self.hist_category.count(users, category)
    out.update(
      {
        ITEM_ID: items,
        ITEM_CATEGORY: category,
        ITEM_SHOP: self.item_shop[items],
        ITEM_BRAND: self.item_brand[items],
        POSITION: positions,
        USER_CATEGORY_MATCH: np.where(
          matches > 0,
          np.minimum(
            np.floor(np.log2(np.maximum(matches, 1))) + 1, config_lib.NUM_MATCH_BUCKETS - 1
          ),
          0,
        ).astype(np.int64),
        PRICE: self.item_price[items][:, None],
      }
    )
    return out

  def conflict_component(self, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Clickbait shop plus top-position bonus; ``config.conflict`` scales it."""
    top = np.clip(1.0 - positions / 3.0, 0.0, 1.0)
    return self.item_clickbait[items] + 0.5 * top

  def logits(self, users: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """True step logits ``l_t`` (intercepts included), float64 ``[n, T]``."""
    c = self.config
    category = self.item_category[items]
    affinity = np.einsum("nd,nd->n", self.user_latent[users], self.item_latent[items]) / math.sqrt(
      c.latent_dim
    )
    history_match = (
      0.6 * np.log1p(self.hist_category.count(users, category))
      + 0.3 * np.log1p(self.hist_brand.count(users, self.item_brand[items]))
      + 0.3 * np.log1p(self.hist_shop.count(users, self.item_shop[items]))
    )
    gender_match = (
      0.5 * (2.0 * self.user_gender[users] - 1.0) * self.category_gender_appeal[category]
    )
    shared = 0.7 * affinity + history_match + gender_match
    conflict = c.conflict * self.conflict_component(items, positions)
    click = (
      shared
      + 0.4 * self.user_click_propensity[users]
      + 0.5 * self.item_appeal[items]
      - 0.12 * positions
    )
    out = np.empty((users.shape[0], c.num_steps))
    out[:, 0] = c.signal * click + conflict
    price_gap = self.item_price[items] - self.user_price_preference[users]
    for t in range(1, c.num_steps):
      w = self.later_weights[t - 1]
      step_match = np.einsum(
        "nd,nd->n", self.user_step_latent[users, t - 1], self.item_step_latent[items, t - 1]
      )
      own = (
        w[0] * self.user_buy_propensity[users]
        + w[1] * self.item_quality[items]
        + w[2] * self.item_shop_trust[items]
        - w[3] * np.square(price_gap)
        + w[4] * step_match / math.sqrt(_STEP_LATENT_DIM)
      )
      out[:, t] = c.signal * (0.6 * shared + own) - conflict
    return out + self.intercepts

  def conditional_probabilities(
    self, users: np.ndarray, items: np.ndarray, positions: np.ndarray
  ) -> np.ndarray:
    """True ``q_t``, float64 ``[n, T]``."""
    return _sigmoid(self.logits(users, items, positions))

  def batch(self, draws: Draws, split: str, first_row: int) -> Dict[str, Any]:
    """The batch dict of ``draws`` (columns as listed in
    :mod:`~tafe_tf.data.synthetic.sampling`), rows numbered from ``first_row``.
    """
    out = self.features(draws.users, draws.items, draws.positions)
    q = self.conditional_probabilities(draws.users, draws.items, draws.positions)
    labels = np.cumprod(draws.uniforms < q, axis=1).astype(np.int64)
    for t, step in enumerate(self.steps):
      out[features_lib.label_key(step)] = labels[:, t]
      out[features_lib.oracle_key(step)] = q[:, t]
    out[features_lib.SAMPLE_ID_KEY] = np.asarray(
      [f"{split}-{i:08d}" for i in range(first_row, first_row + draws.users.shape[0])]
    )
    return out


@functools.lru_cache(maxsize=4)
def ground_truth(config: SyntheticConfig) -> GroundTruth:
  """The (cached) :class:`GroundTruth` of ``config``."""
  return GroundTruth(config)
