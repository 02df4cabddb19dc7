"""TFDS builders: ``ali_ccp``, ``aliexpress`` and ``synthetic_conversions``.

Importing this package registers them, so ``tfds.load`` finds them::

  import tafe_tf.data.tfds  # noqa: F401
  ds = tfds.load("ali_ccp/raw", split="train", data_dir=...,
                 download_and_prepare_kwargs={"download_config":
                     tfds.download.DownloadConfig(manual_dir=RAW)})

The real datasets need a login, so their builders never download: they read
the files from ``manual_dir`` with the same readers as :mod:`tafe_tf.data.convert`.
"""

from tafe_tf.data.tfds.ali_ccp import AliCcp
from tafe_tf.data.tfds.aliexpress import Aliexpress
from tafe_tf.data.tfds.synthetic_conversions import SyntheticConversions

__all__ = ["AliCcp", "Aliexpress", "SyntheticConversions"]
