"""Each method of Table I, end to end for two iterations on tiny offline data."""

import dataclasses
import json
import os

import numpy as np
import pytest

from tf_bgadl import augment, experiment, methods
from tf_bgadl import config as config_lib
from tf_bgadl.config import (AcquisitionConfig, DataConfig, ExperimentConfig, GeneratorConfig,
                             ModelConfig, TrainConfig)

PERSISTED = {"vaeacgan", "acgan", "bda_partial"}


def _config(data_dir, method, generation=""):
    return ExperimentConfig(
        data=DataConfig(dataset="digits", data_dir=data_dir, initial_per_class=2),
        model=ModelConfig(name="cnn", width_multiplier=0.5),
        train=TrainConfig(epochs=2, batch_size=32),
        acquisition=AcquisitionConfig(method=method, acquire_per_iteration=10, pool_subset=40,
                                      mc_samples=4, score_batch_size=64),
        generator=GeneratorConfig(latent_dim=8, generation=generation,
                                  pool_steps=5 if method == "vaeacgan" else -1),
        iterations=2, seed=1)


@pytest.mark.parametrize("method, generation", [
    ("vaeacgan", "persisted"), ("vaeacgan", "online"), ("acgan", "persisted"), ("pmda", None),
    ("bald", None), ("bda_partial", "persisted"), ("random", None)])
def test_method_end_to_end(data_dir, tmp_path, method, generation):
    config = _config(data_dir, method, generation or "")
    results = experiment.train_and_evaluate(config, str(tmp_path))
    assert [r["num_labeled"] for r in results] == [20, 30, 40]  # oracle labels only
    generative = method in PERSISTED
    persisted = generative and generation == "persisted"
    assert [r["num_generated"] for r in results] == ([0, 10, 20] if persisted else [0, 0, 0])
    state = json.load(open(tmp_path / "state.json"))
    labeled, pool = set(state["labeled_ids"]), set(state["pool_ids"])
    assert not labeled & pool and len(labeled) == 40
    assert len(labeled | pool) == 1438  # generated samples never enter the pool
    if generative:
        for r in results[1:]:
            assert r["reconstruction_error"] > 0
            assert r["score_generated"] >= 0 and r["score_acquired"] >= 0
        assert sorted(os.listdir(tmp_path / "samples")) == ["iter_0001.png", "iter_0002.png"]
    else:
        assert not (tmp_path / "samples").exists()
    if persisted:
        with np.load(tmp_path / "generated.npz") as f:
            assert f["images"].shape == (20, 8, 8, 1) and f["images"].dtype == np.uint8
            assert set(f["source_ids"].tolist()) <= labeled  # each x' comes from an acquired x*
            acquired = [i for r in results for i in r["acquired_ids"]]
            assert f["source_ids"].tolist() == acquired
    if method in ("random", "bda_partial"):
        assert all(r["mean_score"] is None for r in results)
    else:
        assert all(r["mean_score"] >= 0 for r in results[1:])


@pytest.mark.parametrize("method", ["bald", "vaeacgan"])
def test_build_is_fresh_or_warm_started(digits, data_dir, method):
    learner = experiment.make_learner(config_lib.validate(_config(data_dir, method)),
                                      digits.image_shape, digits.num_classes,
                                      experiment.make_strategy("default"))
    previous = learner.build(0, 20, 20, None)
    fresh = learner.build(1, 30, 40, None)
    warm = experiment.make_learner(
        config_lib.validate(dataclasses.replace(_config(data_dir, method), warm_start=True)),
        digits.image_shape,
        digits.num_classes, experiment.make_strategy("default")).build(1, 30, 40, previous)
    assert any(not np.array_equal(a, b)
               for a, b in zip(previous.get_weights(), fresh.get_weights()))
    for a, b in zip(previous.get_weights(), warm.get_weights()):
        np.testing.assert_array_equal(a, b)
    again = learner.build(1, 30, 40, None)  # seeded: the same fresh weights again
    for a, b in zip(fresh.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_each_method_is_declared_once_and_drives_the_config():
    assert tuple(methods.METHODS) == config_lib.METHODS
    resolved = {m: config_lib.validate(ExperimentConfig(acquisition=AcquisitionConfig(method=m)))
                for m in config_lib.METHODS}
    assert resolved["vaeacgan"].generator.generation == "persisted"      # the paper
    assert resolved["vaeacgan"].generator.optimizer == "adadelta"        # the authors' code
    for m in ("acgan", "bda_partial"):                                    # BDA (pytorch-bda)
        gen = resolved[m].generator
        assert (gen.generation, gen.optimizer, gen.learning_rate, gen.beta_1) == (
            "online", "adam", 2e-4, 0.5)
    assert resolved["bald"].acquisition.acquisition == "bald"
    assert resolved["random"].acquisition.acquisition == "none"
    assert resolved["bald"].generator.generation == "none"
    for config in resolved.values():  # a resolved config resolves to itself and round-trips
        assert config_lib.validate(config) == config
        assert ExperimentConfig.from_dict(config.to_dict()) == config
    # A flag the user set wins over the method's default.
    config = ExperimentConfig(acquisition=AcquisitionConfig(method="acgan"),
                              generator=GeneratorConfig(generation="persisted", beta_1=0.9))
    assert config_lib.validate(config).generator.generation == "persisted"
    assert config_lib.validate(config).generator.beta_1 == 0.9


@pytest.mark.parametrize("method, change, message", [
    ("random", dict(acquisition="max_entropy"), "does not apply to --method=random"),
    ("bda_partial", dict(acquisition="bald"), "does not apply to --method=bda_partial"),
    ("bald", dict(acquisition="random"), "--acquisition='random' is not supported"),
])
def test_meaningless_acquisitions_are_refused(method, change, message):
    config = ExperimentConfig(acquisition=AcquisitionConfig(method=method, **change))
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


@pytest.mark.parametrize("method, change, message", [
    ("bald", dict(generation="online"), "does not apply to --method=bald"),
    ("pmda", dict(generation="persisted"), "does not apply to --method=pmda"),
    ("acgan", dict(pool_steps=10), "only --method=vaeacgan has an encoder"),
])
def test_meaningless_generator_settings_are_refused(method, change, message):
    config = ExperimentConfig(acquisition=AcquisitionConfig(method=method),
                              generator=GeneratorConfig(**change))
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


@pytest.mark.parametrize("dataset, flips", [
    ("mnist", False), ("fashion_mnist", False), ("mnist5k", False), ("digits", False),
    ("svhn_cropped", False), ("cifar10", True), ("cifar100", True)])
def test_pmda_flips_only_cifar(dataset, flips):
    image = np.zeros((1, 8, 8, 1), np.float32)
    image[0, :, :2] = 1.0  # a bar on the left edge: a flip moves it to the right edge
    pmda = augment.make_pmda(dataset, seed=3, max_shift=0.0)
    outputs = [np.asarray(pmda(image)) for _ in range(20)]
    flipped = [bool(o[0, :, -2:].mean() > 0.5) for o in outputs]
    assert any(flipped) == flips
    if not flips:
        for o in outputs:
            np.testing.assert_allclose(o, image)


def test_weight_decay_counts_oracle_labels_only(digits, data_dir):
    learner = experiment.make_learner(
        config_lib.validate(_config(data_dir, "vaeacgan")), digits.image_shape,
        digits.num_classes, experiment.make_strategy("default"))
    model = learner.build(1, 30, 40, None)  # 30 oracle labels + 10 generated rows
    assert model.optimizers["classifier"].l2 == pytest.approx(3.5 / 30)
    assert model.optimizers["generator"].l2 == 0.0


def test_random_streams_do_not_collide():
    seeds = {experiment.stream_seed(s, i, stream)
             for s in range(3) for i in range(50) for stream in experiment.STREAMS}
    assert len(seeds) == 3 * 50 * len(experiment.STREAMS)
    # (seed, iteration) pairs whose sums collided under seed * 1_000_003 + offset + iteration:
    assert experiment.stream_seed(0, 1_000_003, "weights") != experiment.stream_seed(1, 0,
                                                                                     "weights")


def test_readme_methods_table_is_the_registry():
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md")).read()
    assert methods.markdown_table() in readme


@pytest.mark.parametrize("method, optimizer, expected", [
    ("vaeacgan", "", ("adadelta", 1.0, 0.9)),
    ("vaeacgan", "adam", ("adam", 1e-3, 0.9)),        # not adadelta's learning rate
    ("acgan", "", ("adam", 2e-4, 0.5)),
    ("acgan", "adadelta", ("adadelta", 1.0, 0.9)),    # not Adam's 2e-4
    ("bda_partial", "sgd", ("sgd", 0.01, 0.9)),
])
def test_method_optimizer_defaults_go_with_the_method_optimizer(method, optimizer, expected):
    config = config_lib.validate(ExperimentConfig(
        acquisition=AcquisitionConfig(method=method),
        generator=GeneratorConfig(optimizer=optimizer)))
    gen = config.generator
    assert (gen.optimizer, gen.learning_rate, gen.beta_1) == expected


def test_an_explicit_beta_1_of_zero_is_kept():
    config = config_lib.validate(ExperimentConfig(acquisition=AcquisitionConfig(method="acgan"),
                                                  generator=GeneratorConfig(beta_1=0.0)))
    assert config.generator.beta_1 == 0.0
