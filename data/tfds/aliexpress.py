"""TFDS builder ``aliexpress``: AliExpress (one country) from processed CSVs."""

from __future__ import annotations

import tensorflow_datasets as tfds

from tafe_tf.data.tfds import line_builder

_INSTRUCTIONS = """\
AliExpress needs a Tianchi login (https://tianchi.aliyun.com/dataset/74690), so
it is never downloaded. Put one country's processed train.csv and test.csv
(columns search_id, categorical_1..16, numerical_1..63, click, conversion) in
`manual_dir`.
"""


class Aliexpress(line_builder.LineFormatBuilder):
  """AliExpress search impressions: impression -> click -> conversion."""

  VERSION = tfds.core.Version("1.0.0")
  HOMEPAGE = "https://tianchi.aliyun.com/dataset/74690"
  RELEASE_NOTES = {"1.0.0": "Processed CSV form."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
    line_builder.LineFormatConfig(
      name="processed",
      format_name="aliexpress",
      description="FuxiCTR's processed CSV; validation = hashed search_id hold-out of train.",
    )
  ]
