"""Each method of Table I, end to end for two iterations on tiny offline data."""

import dataclasses
import json
import os

import numpy as np
import pytest

from tf_bgadl import experiment
from tf_bgadl.config import (AcquisitionConfig, DataConfig, ExperimentConfig, GeneratorConfig,
                             ModelConfig, TrainConfig)

PERSISTED = {"vaeacgan", "acgan", "bda_partial"}


def _config(data_dir, method, generation="persisted"):
    return ExperimentConfig(
        data=DataConfig(dataset="digits", data_dir=data_dir, initial_per_class=2),
        model=ModelConfig(name="cnn", width_multiplier=0.5),
        train=TrainConfig(epochs=2, batch_size=32),
        acquisition=AcquisitionConfig(method=method, acquire_per_iteration=10, pool_subset=40,
                                      mc_samples=4, score_batch_size=64),
        generator=GeneratorConfig(latent_dim=8, generation=generation),
        iterations=2, seed=1)


@pytest.mark.parametrize("method, generation", [
    ("vaeacgan", "persisted"), ("vaeacgan", "online"), ("acgan", "persisted"), ("pmda", None),
    ("bald", None), ("bda_partial", "persisted"), ("random", None)])
def test_method_end_to_end(data_dir, tmp_path, method, generation):
    config = _config(data_dir, method, generation or "persisted")
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
    learner = experiment.make_learner(_config(data_dir, method), digits.image_shape,
                                      digits.num_classes, experiment.make_strategy("default"))
    previous = learner.build(0, 20, None)
    fresh = learner.build(1, 30, None)
    warm = learner.build(1, 30, previous)
    assert any(not np.array_equal(a, b)
               for a, b in zip(previous.get_weights(), fresh.get_weights()))
    for a, b in zip(previous.get_weights(), warm.get_weights()):
        np.testing.assert_array_equal(a, b)
    again = learner.build(1, 30, None)  # seeded: the same fresh weights again
    for a, b in zip(fresh.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
