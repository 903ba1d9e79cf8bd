import dataclasses

import pytest

from tf_bgadl import config as config_lib
from tf_bgadl import methods
from tf_bgadl.config import AcquisitionConfig, ConfigError, ExperimentConfig


def test_defaults_are_valid_and_round_trip():
    config = config_lib.validate(ExperimentConfig())
    assert config_lib.validate(config) == config
    assert ExperimentConfig.from_dict(config.to_dict()) == config


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ExperimentConfig().seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("change, message", [
    (dict(data=config_lib.DataConfig(dataset="imagenet")), "--dataset='imagenet'"),
    (dict(model=config_lib.ModelConfig(name="vgg")), "--model='vgg'"),
    (dict(acquisition=AcquisitionConfig(method="coreset")), "--method='coreset'"),
    (dict(acquisition=AcquisitionConfig(mc_samples=0)), "--mc_samples=0"),
    (dict(acquisition=AcquisitionConfig(pool_subset=-5)), "--pool_subset=-5"),
    (dict(train=config_lib.TrainConfig(epochs=0)), "--epochs=0"),
    (dict(data=config_lib.DataConfig(initial_per_class=0)), "--initial_per_class=0"),
    (dict(acquisition=AcquisitionConfig(acquire_per_iteration=300, pool_subset=200)),
     "--acquire_per_iteration=300 is larger than --pool_subset=200"),
    (dict(model=config_lib.ModelConfig(dropout_rate=1.0)), "--dropout_rate=1.0"),
    (dict(iterations=-1), "--iterations=-1"),
    (dict(generator=config_lib.GeneratorConfig(update_every=-1)), "--gan_update_every=-1"),
    (dict(generator=config_lib.GeneratorConfig(update_every=2, generation="online")),
     "needs --generation=persisted"),
    (dict(acquisition=AcquisitionConfig(method="bald"),
          generator=config_lib.GeneratorConfig(update_every=2)), "trains no generator"),
])
def test_bad_values_name_the_value(change, message):
    with pytest.raises(ConfigError) as info:
        config_lib.validate(dataclasses.replace(ExperimentConfig(), **change))
    assert message in str(info.value)


def test_sizes_checked_against_data():
    config = ExperimentConfig(acquisition=AcquisitionConfig(pool_subset=5000))
    with pytest.raises(ConfigError, match="--pool_subset=5000 is larger than the pool"):
        config_lib.check_against_data(config, num_train=1000, num_classes=10)
    config = ExperimentConfig(iterations=20, acquisition=AcquisitionConfig(pool_subset=500))
    with pytest.raises(ConfigError, match="exceed the pool"):
        config_lib.check_against_data(config, num_train=1000, num_classes=10)
    config_lib.check_against_data(ExperimentConfig(iterations=2, acquisition=AcquisitionConfig(
        pool_subset=500)), num_train=1000, num_classes=10)


def test_from_dict_rejects_unknown_keys():
    values = ExperimentConfig().to_dict()
    values["model"]["depth"] = 50
    with pytest.raises(ConfigError, match="depth"):
        ExperimentConfig.from_dict(values)


@pytest.mark.parametrize("generator, method, expected", [
    ({}, "vaeacgan", dict(carry_over=True, pool_steps=50, pool_steps_fresh=300,
                          update_every=8)),
    (dict(pool_steps=7), "vaeacgan", dict(carry_over=True, pool_steps=7, pool_steps_fresh=0,
                                          update_every=8)),
    (dict(pool_steps=7, pool_steps_fresh=9, carry_over=False, update_every=2), "vaeacgan",
     dict(carry_over=False, pool_steps=7, pool_steps_fresh=9, update_every=2)),
    (dict(generation="online"), "vaeacgan", dict(update_every=1)),
    ({}, "acgan", dict(carry_over=False, pool_steps=0, pool_steps_fresh=0, update_every=1)),
    ({}, "bald", dict(carry_over=False, pool_steps=0, pool_steps_fresh=0, update_every=1)),
])
def test_generator_schedule_resolves_to_the_method_unless_set(generator, method, expected):
    config = config_lib.validate(ExperimentConfig(
        acquisition=AcquisitionConfig(method=method),
        generator=config_lib.GeneratorConfig(**generator)))
    assert {k: getattr(config.generator, k) for k in expected} == expected
    assert config_lib.validate(config) == config  # resolved once for all


def test_a_config_json_without_update_every_reads_as_every_step():
    """Runs recorded before --gan_update_every existed stepped e, g and d on every joint step:
    that is what their config.json reads as, not today's default."""
    old = config_lib.validate(ExperimentConfig(
        generator=config_lib.GeneratorConfig(update_every=1))).to_dict()
    del old["generator"]["update_every"]
    same = config_lib.validate(ExperimentConfig(
        generator=config_lib.GeneratorConfig(update_every=1))).to_dict()
    assert config_lib.config_differences(old, same) == []
    today = config_lib.validate(ExperimentConfig()).to_dict()
    default = methods.METHODS["vaeacgan"].update_every
    assert default > 1
    assert ("generator.update_every", 1, default) in config_lib.config_differences(old, today)
