"""Reads a converted dataset back into plain Python values (test helper)."""

import os
from typing import Dict

import numpy as np

from tafe_tf import features as features_lib
from tafe_tf import input_pipeline

# Small real public rows (MIT / Apache-2.0; tests/fixtures/SOURCES.md).
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def read_split(data_dir: str, split: str) -> list:
  """Every example of ``split`` as a dict: ints, (ids, weights) lists, floats.

  Labels appear under ``label/<step>``; ``sample_id`` as str when present.
  """
  schema = features_lib.Schema.load(data_dir)
  rows = []
  dataset = input_pipeline.make_dataset(data_dir, split, batch_size=64, with_metadata=True)
  for features, labels in dataset:
    columns: Dict[str, list] = {}
    for f in schema.fields:
      if f.kind == features_lib.FieldKind.WEIGHTED_IDS:
        columns[f.name] = list(zip(features[f.name].to_list(), features[f.weight_key].to_list()))
      else:
        columns[f.name] = features[f.name].numpy().tolist()
    for step in schema.steps:
      columns[features_lib.label_key(step)] = [int(y) for y in labels[step].numpy().tolist()]
    if schema.has_sample_id:
      columns["sample_id"] = [s.decode() for s in features["sample_id"].numpy().tolist()]
    n = len(columns[features_lib.label_key(schema.steps[0])])
    rows += [{key: values[i] for key, values in columns.items()} for i in range(n)]
  return rows


def f32(values) -> list:
  """Values as float32 would store them (for comparing weights)."""
  return np.asarray(values, np.float32).tolist()


def vocab(data_dir: str, field: str) -> list:
  with open(os.path.join(data_dir, "vocab", f"{field}.txt")) as f:
    return [int(line) for line in f.read().split()]
