"""Names of the comparison benchmark's parts, importable without TensorFlow.

``launch.benchmark`` lists them in its flags (and ``--help``) without loading
:mod:`tafe_tf.benchmarks.experiments`, which defines what each name runs
(tests/benchmarks/test_experiments.py keeps both in step).
"""

# Synthetic scenarios (experiments.SYNTHETIC_SCENARIOS).
SCENARIOS = ("two_step", "three_step", "conflict")

# The default epoch choice of the benchmark: the validation AUC of each
# scenario's last step, the number the comparison is about. The summed DTL
# loss (``val_loss``) can rise while the last step still improves, which
# kept a worse epoch for some models only (docs/benchmarks.md, three_step).
LAST_STEP_AUC = "last_step_auc"

# TAFE ablations (experiments.ABLATIONS): what each changes, for the tables.
ABLATION_WHAT = {
  "no_field_interaction": "field interaction (self-attention + SE) off",
  "no_task_indicators": "task-indicator gate -> one linear gate per step",
  "no_task_experts": "task-specific experts off (h_t = s_t)",
  "no_transfer": "dependence transfer off",
  "top_k_2": "sparse top-2 gate over the shared experts (default: dense)",
  "independent_heads": "independent entire-space heads instead of the chained DTL probabilities",
  "click_space_cvr": "steps after the first trained on the previous "
  "step's positives only (classic CVR loss on clicks), "
  "not on all impressions",
}
ABLATIONS = tuple(ABLATION_WHAT)
