"""tafe_tf.hparams: every model's hyperparameters, importable without TensorFlow."""

import dataclasses
import subprocess
import sys

import pytest

from tafe_tf import hparams, models
from tafe_tf.layers import transfer


def test_transfer_modes_are_the_layers():
  assert hparams.TRANSFER_MODES == transfer.TRANSFER_MODES
  assert (hparams.GATED, hparams.ATTENTION, hparams.NONE) == (
    transfer.GATED,
    transfer.ATTENTION,
    transfer.NONE,
  )


@pytest.mark.parametrize("name", hparams.MODEL_NAMES)
def test_each_model_builds_from_its_hparams_class(name):
  cls = hparams.hparams_class(name)
  assert models.model_class(name).HParams is cls
  assert models.hparams_class(name) is cls
  assert issubclass(cls, hparams.BaseHParams) and dataclasses.is_dataclass(cls)


def test_unknown_model_names_the_valid_ones():
  with pytest.raises(ValueError, match=r"^unknown model 'dcn'; valid names: tafe, esmm, mmoe"):
    hparams.hparams_class("dcn")


def test_hparams_and_config_import_without_tensorflow():
  code = (
    "import sys; import tafe_tf.hparams, tafe_tf.config; "
    "tafe_tf.config.RunConfig.create('ple', {'num_levels': 3}); "
    "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
