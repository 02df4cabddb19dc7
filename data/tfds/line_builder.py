"""What the real-data TFDS builders share: features and examples of a format.

Example layout (raw ids, as in the TFRecords of :mod:`tafe_tf.data.convert`):
one int64 per ``id`` field, ``{"ids": [int64], "weights": [float32]}`` per
``weighted_ids`` field, a float32 vector per ``dense`` field,
``label: {click, purchase}`` (cumulative) and ``sample_id`` where the format
has one. The validation split of a format without a validation file is the
hashed hold-out of its train file (``validation_fraction`` of the config).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from tafe_tf.data import convert, line_format
from tafe_tf.data import writer as writer_lib
from tafe_tf.data.line_format import FieldKind, LineFormat, SplitInput


@dataclasses.dataclass
class LineFormatConfig(tfds.core.BuilderConfig):
  """A builder config naming an input format.

  Attributes:
    format_name: Key of :data:`tafe_tf.data.convert.FORMATS`.
    validation_fraction: Hold-out share of the train file (formats without a
      validation file).
  """

  format_name: str = ""
  validation_fraction: float = 0.1


def field_features(fields: Iterable[Any], steps: Sequence[str]) -> Dict[str, Any]:
  """TFDS feature specs of fields (anything with name, kind, dim) and labels."""
  features: Dict[str, Any] = {}
  for field in fields:
    if field.kind == FieldKind.ID:
      features[field.name] = np.int64
    elif field.kind == FieldKind.WEIGHTED_IDS:
      features[field.name] = tfds.features.FeaturesDict(
        {"ids": tfds.features.Sequence(np.int64), "weights": tfds.features.Sequence(np.float32)}
      )
    else:
      features[field.name] = tfds.features.Tensor(shape=(field.dim,), dtype=np.float32)
  features["label"] = tfds.features.FeaturesDict({step: np.int64 for step in steps})
  return features


def format_features(fmt: LineFormat) -> tfds.features.FeaturesDict:
  """The TFDS features of a format's examples."""
  features = field_features(fmt.fields(), fmt.steps)
  if fmt.has_sample_id:
    features["sample_id"] = tfds.features.Text()
  return tfds.features.FeaturesDict(features)


def split_generators(fmt: LineFormat, manual_dir: str, fraction: float, generate) -> Dict[str, Any]:
  """``split name -> generator`` for the files of ``fmt`` in ``manual_dir``."""
  inputs = fmt.inputs(os.fspath(manual_dir))
  skips = writer_lib.SkipCounter()
  context = fmt.prepare(inputs, skips)
  if skips.total:
    logging.warning("%s: skipped %d side-file lines: %s", manual_dir, skips.total, skips.to_json())
  out = {}
  for split_input in inputs:
    if split_input.holdout:
      out[split_input.split] = generate(fmt, split_input, context, fraction, False)
      out[line_format.VALIDATION] = generate(fmt, split_input, context, fraction, True)
    else:
      out[split_input.split] = generate(fmt, split_input, context, 0.0, False)
  return out


def generate_examples(
  fmt: LineFormat, split_input: SplitInput, context: Any, fraction: float, held_out: bool
) -> Iterator[Tuple[str, Dict[str, Any]]]:
  """``(key, example)`` of one file's rows (the held-out part or the rest).

  Bad lines are skipped and counted as by the converter; the counts are
  logged at the end.
  """
  skips = writer_lib.SkipCounter()
  name = os.path.basename(split_input.path)
  for number, row in line_format.iter_rows(fmt, split_input, context, skips):
    if fraction and line_format.is_held_out(row.holdout_key, fraction) != held_out:
      continue
    yield f"{name}:{number}", line_format.tfds_example(fmt, row)
  if skips.total:
    logging.warning("%s: skipped %d lines: %s", split_input.path, skips.total, skips.to_json())


def manual_dir_or_raise(manual_dir: Optional[str], instructions: str) -> str:
  if not manual_dir or not os.path.isdir(os.fspath(manual_dir)):
    raise AssertionError(f"manual_dir {manual_dir!r} is not a folder. {instructions}")
  return os.fspath(manual_dir)


class SourceFileBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose ``code_path`` is its class's source file.

  TFDS derives ``code_path`` and ``pkg_dir_path`` from the module name under
  the top-level package (``tafe_tf/data/tfds/...``), but ``data/`` is mapped
  under ``tafe_tf`` by setup.py's ``package_dir``: in an editable install that
  path does not exist.
  """

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    cls.pkg_dir_path = epath.Path(os.path.dirname(inspect.getfile(cls)))

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))


class LineFormatBuilder(SourceFileBuilder, skip_registration=True):
  """A builder whose configs name line formats; subclasses set HOMEPAGE,
  MANUAL_DOWNLOAD_INSTRUCTIONS, VERSION and BUILDER_CONFIGS."""

  HOMEPAGE = ""

  def _format(self) -> LineFormat:
    return convert.FORMATS[self.builder_config.format_name]()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=format_features(self._format()), homepage=self.HOMEPAGE
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> Dict[str, Any]:
    manual_dir = manual_dir_or_raise(dl_manager.manual_dir, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return split_generators(
      self._format(), manual_dir, self.builder_config.validation_fraction, self._generate_examples
    )

  def _generate_examples(
    self, fmt: LineFormat, split_input: SplitInput, context: Any, fraction: float, held_out: bool
  ) -> Iterator[Tuple[str, Dict[str, Any]]]:
    return generate_examples(fmt, split_input, context, fraction, held_out)
