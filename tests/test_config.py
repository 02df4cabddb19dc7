"""The typed run configuration: JSON round trips, strict errors, identity."""

import dataclasses
import json

import multistep_testdata as td
import pytest

from tafe_tf import config as config_lib
from tafe_tf import models


def _through_json(obj):
  return json.loads(json.dumps(obj))


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_round_trip_through_json_for_every_model(name):
  defaults = config_lib.RunConfig(model=config_lib.ModelConfig(name))
  assert config_lib.RunConfig.from_json(_through_json(defaults.to_json())) == defaults
  changed = td.non_default_hparams(name)
  run = config_lib.RunConfig.create(
    name,
    hparams=changed,
    epochs=3,
    strategy="mirrored",
    synthetic_conflict=2.0,
    export_dir="/tmp/x",
    steps_per_epoch=5,
  )
  back = config_lib.RunConfig.from_json(_through_json(run.to_json()))
  assert back == run
  # Every field of the model's hparams took the value given.
  assert back.to_json()["model"]["hparams"] == changed
  assert back.to_json()["training"]["epochs"] == 3


def test_defaults_live_in_the_dataclasses():
  run = config_lib.RunConfig()
  assert run.model.name == "tafe"
  assert run.model.hparams == models.hparams_class("tafe")()
  assert run.training.batch_size == 2048 and run.training.seed == 0
  assert config_lib.setting_default("batch_size") == 2048
  assert config_lib.setting_default("precision") == "float32"


def test_unknown_keys_name_the_section_and_the_valid_keys():
  with pytest.raises(ValueError) as info:
    config_lib.RunConfig.from_json({"training": {"epoch": 2}})
  assert str(info.value) == (
    "training: unknown key 'epoch'; valid keys: batch_size, "
    "calibration, checkpoint_every_steps, epochs, learning_rate, monitor, seed, shuffle, "
    "steps_per_epoch, verbose"
  )
  with pytest.raises(
    ValueError,
    match="^run config: unknown key 'trainig'; "
    "valid keys: data, distribution, export, model, "
    "provenance, training$",
  ):
    config_lib.RunConfig.from_json({"trainig": {}})
  with pytest.raises(ValueError) as info:
    config_lib.RunConfig.from_json({"model": {"name": "mmoe", "hparams": {"num_levels": 3}}})
  message = str(info.value)
  assert message.startswith(
    "model.hparams: mmoe takes no hyperparameter 'num_levels'; its hyperparameters: "
  )
  assert message.endswith(
    ", ".join(sorted(f.name for f in dataclasses.fields(models.hparams_class("mmoe"))))
  )
  assert "\n" not in message
  with pytest.raises(ValueError, match="^model.name must be one of tafe, "):
    config_lib.RunConfig.from_json({"model": {"name": "mmoee"}})


@pytest.mark.parametrize(
  "obj,message",
  [
    ({"training": {"epochs": "2"}}, "training.epochs: expected an integer, got '2'"),
    ({"training": {"epochs": 2.5}}, "training.epochs: expected an integer, got 2.5"),
    ({"training": {"shuffle": 1}}, "training.shuffle: expected a boolean, got 1"),
    (
      {"training": {"steps_per_epoch": "x"}},
      "training.steps_per_epoch: expected null or an integer, got 'x'",
    ),
    ({"training": {"epochs": 0}}, "training: epochs must be >= 1, got 0"),
    (
      {"distribution": {"strategy": "gpu"}},
      "distribution: strategy must be one of auto, one_device, mirrored, "
      "multi_worker, tpu, parameter_server; got 'gpu'",
    ),
    (
      {"model": {"name": "tafe", "hparams": {"expert_units": [64, "x"]}}},
      "model.hparams.expert_units[1]: expected an integer, got 'x'",
    ),
    (
      {"model": {"name": "tafe", "hparams": {"expert_units": 64}}},
      "model.hparams.expert_units: expected a list of integers, got 64",
    ),
    (
      {"model": {"name": "tafe", "hparams": {"transfer": "concat"}}},
      "model.hparams: transfer must be one of ('gated', 'attention', 'none'), got 'concat'",
    ),
    ({"model": {"name": "tafe", "hparams": []}}, "model.hparams: expected a JSON object, got []"),
    ([], "run config: expected a JSON object, got []"),
  ],
)
def test_wrong_values_are_one_line_errors(obj, message):
  with pytest.raises(ValueError) as info:
    config_lib.RunConfig.from_json(obj)
  assert str(info.value) == message


def test_numbers_and_lists_convert_to_the_declared_types():
  run = config_lib.RunConfig.from_json(
    {
      "training": {"learning_rate": 1},
      "model": {"name": "esmm", "hparams": {"tower_units": [8, 4]}},
    }
  )
  assert run.training.learning_rate == 1.0
  assert isinstance(run.training.learning_rate, float)
  assert run.model.hparams.tower_units == (8, 4)


def test_provenance_is_accepted_and_ignored():
  obj = dict(
    config_lib.RunConfig().to_json(), provenance={"tafe_tf_version": "0.1.0", "anything": [1]}
  )
  assert config_lib.RunConfig.from_json(obj) == config_lib.RunConfig()


def test_create_and_replace_route_settings_to_their_sections():
  run = config_lib.RunConfig.create(
    "ple",
    hparams={"num_levels": 3},
    epochs=4,
    jit_compile=True,
    evaluate=False,
    dataset="tfrecord",
    data_dir="/d",
  )
  assert run.model.hparams.num_levels == 3
  assert run.model.hparams.num_experts == 2  # PLE's own default
  assert run.training.epochs == 4 and run.distribution.jit_compile
  assert not run.export.evaluate and run.data.data_dir == "/d"
  with pytest.raises(ValueError, match="^unknown run setting epoch; valid settings: batch_size, "):
    run.replace(epoch=3)
  with pytest.raises(ValueError, match="^training.batch_size: expected an integer"):
    run.replace(batch_size="big")


def test_the_run_seed_seeds_the_model_unless_its_hparams_set_one():
  run = config_lib.RunConfig.create("esmm", seed=5)
  assert run.model.hparams.seed is None
  assert run.model_hparams().seed == 5
  seeded = config_lib.RunConfig.create("esmm", hparams={"seed": 9}, seed=5)
  assert seeded.model_hparams().seed == 9


def test_differences_name_what_changes_the_run_and_only_that():
  run = config_lib.RunConfig.create("tafe", epochs=2)
  assert (
    run.differences(run.replace(verbose=0, checkpoint_every_steps=5, export=False, export_dir="/e"))
    == []
  )
  other = dataclasses.replace(
    run.replace(epochs=3, data_dir="/elsewhere"), model=run.model.with_hparams({"transfer": "none"})
  )
  assert run.differences(other) == ["data.data_dir", "model.hparams.transfer", "training.epochs"]
  assert run.differences(config_lib.RunConfig.create("esmm", epochs=2))[0] == (
    "model.hparams.chained"
  )


def test_model_config_checks_its_hparams_class():
  with pytest.raises(ValueError, match="model 'esmm' takes ESMMHParams, got TAFEHParams"):
    config_lib.ModelConfig("esmm", models.hparams_class("tafe")())
