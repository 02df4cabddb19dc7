"""TFDS builder ``synthetic_conversions``: :mod:`tafe_tf.data.synthetic` as a TFDS set.

Generated, never downloaded. Examples hold the schema's fields (raw ids, as the
identity lookups of :func:`tafe_tf.data.synthetic.synthetic_schema` expect), the
cumulative labels, the true conditional probabilities (``oracle``) and the
sample id.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

from tafe_tf import features as features_lib
from tafe_tf.data import synthetic
from tafe_tf.data.tfds import line_builder

FieldKind = features_lib.FieldKind


@dataclasses.dataclass
class SyntheticBuilderConfig(tfds.core.BuilderConfig):
  """A synthetic dataset definition and its split sizes."""

  synthetic: synthetic.SyntheticConfig = dataclasses.field(
    default_factory=synthetic.SyntheticConfig
  )
  num_train: int = 200_000
  num_validation: int = 20_000
  num_test: int = 20_000


class SyntheticConversions(line_builder.SourceFileBuilder):
  """Ali-CCP-like conversions with a known ground truth."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": f"Generator version {synthetic.GENERATOR_VERSION}."}
  BUILDER_CONFIGS = [
    SyntheticBuilderConfig(name="two_steps", description="click, purchase"),
    SyntheticBuilderConfig(
      name="three_steps",
      description="click, cart, purchase",
      synthetic=synthetic.SyntheticConfig(num_steps=3),
    ),
    SyntheticBuilderConfig(
      name="strong_conflict",
      description="click, purchase; conflict 3",
      synthetic=synthetic.SyntheticConfig(conflict=3.0),
    ),
    SyntheticBuilderConfig(
      name="tiny",
      description="2 steps, 2000/500/500 rows (tests)",
      num_train=2000,
      num_validation=500,
      num_test=500,
    ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config.synthetic
    schema = synthetic.synthetic_schema(config)
    features = line_builder.field_features(schema.fields, schema.steps)
    features["oracle"] = tfds.features.FeaturesDict({step: np.float32 for step in schema.steps})
    features["sample_id"] = tfds.features.Text()
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(features),
      description=f"Synthetic multi-step conversions; generator config: {config.to_json()}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> Dict[str, Any]:
    del dl_manager  # generated, nothing to download
    c = self.builder_config
    return {
      "train": self._generate_examples("train", c.num_train),
      "validation": self._generate_examples("validation", c.num_validation),
      "test": self._generate_examples("test", c.num_test),
    }

  def _generate_examples(self, split: str, num_rows: int) -> Iterator[Tuple[str, Dict[str, Any]]]:
    config = self.builder_config.synthetic
    schema = synthetic.synthetic_schema(config)
    for batch in synthetic.generate_batches(config, split, num_rows):
      for i in range(len(batch[features_lib.SAMPLE_ID_KEY])):
        example: Dict[str, Any] = {}
        for field in schema.fields:
          column = batch[field.name]
          if field.kind == FieldKind.WEIGHTED_IDS:
            example[field.name] = {"ids": column.row(i), "weights": batch[field.weight_key].row(i)}
          else:
            example[field.name] = column[i]
        example["label"] = {step: batch[features_lib.label_key(step)][i] for step in schema.steps}
        example["oracle"] = {step: batch[features_lib.oracle_key(step)][i] for step in schema.steps}
        sample_id = str(batch[features_lib.SAMPLE_ID_KEY][i])
        example["sample_id"] = sample_id
        yield sample_id, example
