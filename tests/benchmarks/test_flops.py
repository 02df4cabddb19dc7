"""Tests of the matrix-product FLOP counter against hand counts."""

import multistep_testdata as td
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf import models  # noqa: E402
from tafe_tf.benchmarks import flops  # noqa: E402


def test_matmul_batch_matmul_and_einsum_by_hand():
  a, b = tf.ones([4, 3]), tf.ones([3, 5])
  assert flops.function_flops(tf.matmul, a, b) == 2 * 4 * 3 * 5
  assert (
    flops.function_flops(lambda x, y: tf.matmul(x, y, transpose_b=True), a, tf.ones([5, 3]))
    == 2 * 4 * 3 * 5
  )
  assert (
    flops.function_flops(tf.matmul, tf.ones([2, 4, 3]), tf.ones([2, 3, 5])) == 2 * 2 * 4 * 3 * 5
  )
  assert (
    flops.function_flops(
      lambda x, k: tf.einsum("bi,gjio->bgjo", x, k), tf.ones([2, 3]), tf.ones([2, 4, 3, 5])
    )
    == 2 * 2 * 3 * 2 * 4 * 5
  )
  # Element-wise work is not counted.
  assert flops.function_flops(lambda x: tf.exp(x) * x + 1.0, a) == 0


def test_model_forward_flops_by_hand(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_train=16, num_test=4)
  feats, _ = td.first_batch(str(tmp_path), batch_size=8, dense_padded=True)
  model = models.build_model(
    "shared_bottom", schema, embedding_dim=8, expert_units=(8,), tower_units=(4,)
  )
  # price projection 2 -> 8; bottom 5 fields * 8 -> 8; two towers 8 -> 4 -> 1.
  expected = 2 * 2 * 8 + 2 * 40 * 8 + 2 * 2 * 8 * 4 + 2 * 2 * 4
  assert flops.forward_flops_per_example(model, feats) == expected


def test_ragged_features_are_rejected(tmp_path):
  schema = td.make_dataset_dir(str(tmp_path), num_train=16, num_test=4)
  feats, _ = td.first_batch(str(tmp_path), batch_size=8)
  model = models.build_model("esmm", schema)
  with pytest.raises(
    ValueError,
    match=r"features \['hist', 'hist_weight'\] "
    "are ragged",
  ):
    flops.forward_flops_per_example(model, feats)


def test_matmul_rate_is_positive_and_plausible():
  rate = flops.matmul_flops_per_second(n=128, repeats=2, calls=2)
  assert 1e7 < rate < 1e14
