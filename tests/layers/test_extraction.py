"""Tests of the expert-mixing levels against their definitions."""

import multistep_testdata as td
import numpy as np
import pytest
import tensorflow as tf

import tafe_tf  # noqa: F401
from tafe_tf.layers import extraction  # noqa: E402


def _inputs(batch=6, tasks=3, width=5, same=False):
  x_shared = tf.random.stateless_normal([batch, width], seed=[1, 1])
  if same:
    x_tasks = tf.repeat(x_shared[:, None], tasks, axis=1)
  else:
    x_tasks = tf.random.stateless_normal([batch, tasks, width], seed=[2, 2])
  return x_shared, x_tasks


@pytest.mark.parametrize("task_indicators", [True, False])
def test_ape_reconstruction_is_gate_weighted_sum_of_shared_experts(task_indicators):
  x_shared, x_tasks = _inputs()
  layer = extraction.AdaptivePatternExtraction(
    3, 4, (6, 3), shared_output=True, task_indicators=task_indicators, seed=0
  )
  out = layer((x_shared, x_tasks))
  experts = layer.experts(x_shared).numpy()[:, 0]  # [B, K, D]
  weights = layer.gate(tf.concat([x_tasks, x_shared[:, None]], 1)).numpy()
  np.testing.assert_allclose(out["gates"].numpy(), weights[:, :3], rtol=1e-6)
  np.testing.assert_allclose(out["shared_gates"].numpy(), weights[:, 3], rtol=1e-6)
  expected = np.einsum("btk,bkd->btd", weights, experts)
  np.testing.assert_allclose(out["tasks"].numpy(), expected[:, :3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["shared"].numpy(), expected[:, 3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["gates"].numpy().sum(-1), 1.0, rtol=1e-6)


def test_ape_steps_reconstruct_differently_from_the_same_input():
  x_shared, x_tasks = _inputs(same=True)
  out = extraction.AdaptivePatternExtraction(3, 4, (6,), seed=0)((x_shared, x_tasks))
  assert "shared" not in out
  gates = out["gates"].numpy()
  assert not np.allclose(gates[:, 0], gates[:, 1])  # via task indicators


def test_ape_top_k():
  out = extraction.AdaptivePatternExtraction(2, 5, (4,), top_k=2, seed=1)(_inputs(tasks=2))
  assert (np.count_nonzero(out["gates"].numpy(), axis=-1) == 2).all()


def test_task_specific_extraction_mixes_own_experts_and_shared():
  _, x_tasks = _inputs()
  shared = tf.random.stateless_normal([6, 3, 4], seed=[3, 3])
  layer = extraction.TaskSpecificExtraction(3, 2, (5, 4), seed=0)
  out = layer((x_tasks, shared))
  own = layer.experts(x_tasks).numpy()  # [B, T, 2, D]
  weights = out["gates"].numpy()
  assert weights.shape == (6, 3, 3)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  candidates = np.concatenate([own, shared.numpy()[:, :, None]], axis=2)
  np.testing.assert_allclose(
    out["tasks"].numpy(), np.einsum("btj,btjd->btd", weights, candidates), rtol=1e-5, atol=1e-6
  )


def test_task_specific_extraction_width_mismatch():
  _, x_tasks = _inputs()
  layer = extraction.TaskSpecificExtraction(3, 1, (4,))
  with pytest.raises(ValueError, match="shared reconstruction is 5 wide, task experts 4"):
    layer((x_tasks, tf.zeros([6, 3, 5])))


def test_cgc_without_task_experts_is_mmoe():
  x_shared, x_tasks = _inputs(same=True)
  layer = extraction.CustomizedGateControl(3, 4, 0, (6, 3), seed=2)
  out = layer((x_shared, x_tasks))
  experts = layer.shared_experts(x_shared).numpy()[:, 0]
  kernel, bias = layer.task_gate.kernel.numpy(), layer.task_gate.bias.numpy()
  for t in range(3):
    logits = x_shared.numpy() @ kernel[t] + bias[t]
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["gates"].numpy()[:, t], w, rtol=1e-5)
    np.testing.assert_allclose(
      out["tasks"].numpy()[:, t], np.einsum("bk,bkd->bd", w, experts), rtol=1e-5, atol=1e-6
    )


def test_cgc_with_task_experts_and_shared_output():
  x_shared, x_tasks = _inputs(tasks=2)
  layer = extraction.CustomizedGateControl(2, 3, 2, (4,), shared_output=True, seed=3)
  out = layer((x_shared, x_tasks))
  own = layer.task_experts(x_tasks).numpy()  # [B, 2, 2, D]
  shared = layer.shared_experts(x_shared).numpy()  # [B, 1, 3, D]
  weights = out["gates"].numpy()  # [B, 2, 2 + 3]
  for t in range(2):
    candidates = np.concatenate([own[:, t], shared[:, 0]], axis=1)
    np.testing.assert_allclose(
      out["tasks"].numpy()[:, t],
      np.einsum("be,bed->bd", weights[:, t], candidates),
      rtol=1e-5,
      atol=1e-6,
    )
  all_experts = np.concatenate([own.reshape(6, 4, -1), shared[:, 0]], axis=1)
  sw = out["shared_gates"].numpy()
  assert sw.shape == (6, 7)
  np.testing.assert_allclose(
    out["shared"].numpy(), np.einsum("be,bed->bd", sw, all_experts), rtol=1e-5, atol=1e-6
  )


def test_level_input_checks():
  layer = extraction.AdaptivePatternExtraction(3, 2, (4,))
  with pytest.raises(ValueError, match="x_tasks has 2 tasks, the level 3"):
    layer(_inputs(tasks=2))
  with pytest.raises(ValueError, match="a shared output needs task experts"):
    extraction.CustomizedGateControl(2, 2, 0, (4,), shared_output=True)


def test_config_round_trips():
  inputs = _inputs(tasks=2)
  td.assert_config_round_trip(
    extraction.AdaptivePatternExtraction(
      2, 3, (4,), indicator_dim=3, gate_units=(5,), top_k=2, shared_output=True, seed=1
    ),
    inputs,
  )
  td.assert_config_round_trip(
    extraction.CustomizedGateControl(2, 2, 1, (4,), shared_output=True, seed=1), inputs
  )
  td.assert_config_round_trip(
    extraction.TaskSpecificExtraction(2, 2, (4,), seed=1), (inputs[1], tf.ones([6, 2, 4]))
  )
