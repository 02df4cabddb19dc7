"""TFDS builder ``ali_ccp``: Ali-CCP from files the user downloaded.

Configs: ``raw`` (the Tianchi skeleton + common-features files, the default),
``processed`` (torch-rechub's CSV) and ``paddle_esmm`` (PaddleRec's token form).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from tafe_tf.data.tfds import line_builder

_INSTRUCTIONS = """\
Ali-CCP needs a Tianchi login (https://tianchi.aliyun.com/dataset/408), so it is
never downloaded. Put the files in `manual_dir`:
  raw:          sample_skeleton_train.csv, common_features_train.csv and
                (optionally) sample_skeleton_test.csv, common_features_test.csv
  processed:    train.csv, test.csv and optionally val.csv
  paddle_esmm:  train.txt, test.txt
"""


class AliCcp(line_builder.LineFormatBuilder):
  """Alibaba Click and Conversion Prediction: impression -> click -> purchase."""

  VERSION = tfds.core.Version("1.0.0")
  HOMEPAGE = "https://tianchi.aliyun.com/dataset/408"
  RELEASE_NOTES = {"1.0.0": "Raw, processed and PaddleRec forms."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
    line_builder.LineFormatConfig(
      name="raw", format_name="ali_ccp", description="Raw Tianchi files; common rows joined in."
    ),
    line_builder.LineFormatConfig(
      name="processed",
      format_name="ali_ccp_processed",
      description="torch-rechub's processed CSV (vocabulary indices).",
    ),
    line_builder.LineFormatConfig(
      name="paddle_esmm",
      format_name="paddle_esmm",
      description="PaddleRec's ESMM token files (weights 1.0).",
    ),
  ]
