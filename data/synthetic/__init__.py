"""Synthetic multi-step conversion data with a known ground truth.

The package's embedded default dataset, and the ceiling every model is measured
against: rows look like Ali-CCP (Zipf-skewed users and items, a user profile,
weighted behaviour histories, item attributes, position, a user-item cross and a
dense price), and the true conditional step probabilities
``q_t(x) = P(e_t = 1 | y_{t-1} = 1, x)`` of every row are known, so the AUC of
the true ``p_t = q_1 * ... * q_t`` (the Bayes-optimal AUC) is known too.

One module per concern, their public names re-exported here:

* :mod:`~tafe_tf.data.synthetic.config`: :class:`SyntheticConfig` (what
  defines a dataset), :func:`synthetic_schema`, :func:`step_names`;
* :mod:`~tafe_tf.data.synthetic.truth`: the hidden world and the true logits
  (:class:`GroundTruth`, :func:`ground_truth`; the formulas are in its doc);
* :mod:`~tafe_tf.data.synthetic.sampling`: rows of a split as numpy column
  batches (:func:`generate_batches`; the columns and the determinism contract
  are in its doc);
* :mod:`~tafe_tf.data.synthetic.oracle`: the oracle AUCs
  (:func:`oracle_auc`, :func:`oracle_conditional_auc`);
* :mod:`~tafe_tf.data.synthetic.dataset`: dataset directories on disk
  (:func:`write_dataset`, :func:`ensure_dataset`).

The batches are encoded by :func:`tafe_tf.example_codec.serialize_batch`.
"""

from tafe_tf.data.synthetic.config import (
  CHUNK_ROWS,
  DATASET_NAME,
  HIST_BRAND,
  HIST_CATEGORY,
  HIST_SHOP,
  ITEM_BRAND,
  ITEM_CATEGORY,
  ITEM_ID,
  ITEM_SHOP,
  POSITION,
  PRICE,
  SPLITS,
  USER_AGE,
  USER_CATEGORY_MATCH,
  USER_CITY_TIER,
  USER_CONSUMPTION,
  USER_GENDER,
  USER_ID,
  USER_SEGMENT,
  SyntheticConfig,
  step_names,
  synthetic_schema,
)
from tafe_tf.data.synthetic.dataset import GENERATOR_VERSION, ensure_dataset, write_dataset
from tafe_tf.data.synthetic.oracle import oracle_auc, oracle_conditional_auc
from tafe_tf.data.synthetic.sampling import generate_batches
from tafe_tf.data.synthetic.truth import Draws, GroundTruth, ground_truth
from tafe_tf.example_codec import RaggedColumn

__all__ = [
  "CHUNK_ROWS",
  "DATASET_NAME",
  "Draws",
  "ensure_dataset",
  "generate_batches",
  "GENERATOR_VERSION",
  "ground_truth",
  "GroundTruth",
  "HIST_BRAND",
  "HIST_CATEGORY",
  "HIST_SHOP",
  "ITEM_BRAND",
  "ITEM_CATEGORY",
  "ITEM_ID",
  "ITEM_SHOP",
  "oracle_auc",
  "oracle_conditional_auc",
  "POSITION",
  "PRICE",
  "RaggedColumn",
  "SPLITS",
  "step_names",
  "synthetic_schema",
  "SyntheticConfig",
  "USER_AGE",
  "USER_CATEGORY_MATCH",
  "USER_CITY_TIER",
  "USER_CONSUMPTION",
  "USER_GENDER",
  "USER_ID",
  "USER_SEGMENT",
  "write_dataset",
]
