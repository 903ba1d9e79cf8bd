"""The loop with a fake learner: no training, known scores."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from tf_bgadl import loop
from tf_bgadl.config import AcquisitionConfig, ConfigError, DataConfig, ExperimentConfig
from tf_bgadl.data import ArrayDataset


def _dataset(n=200, classes=4):
    rng = np.random.default_rng(0)
    return ArrayDataset("fake", rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
                        np.arange(n) % classes, np.zeros((10, 8, 8, 1), np.uint8),
                        np.arange(10) % classes, num_classes=classes)


def _config(**acq):
    return ExperimentConfig(
        data=DataConfig(dataset="digits", initial_per_class=2), iterations=4, seed=3,
        acquisition=AcquisitionConfig(**{"acquire_per_iteration": 5, "pool_subset": 40, **acq}))


def known_score(ids):
    return ((np.asarray(ids) * 7919) % 1000) / 1000.0


class FakeLearner:
    def __init__(self, accuracies=None, fail_at=None):
        self.accuracies = accuracies
        self.fail_at = fail_at
        self.scored = []  # (ids, images) passed to score
        self.fitted = []
        self.prepared = []  # (iteration, pool images) passed to prepare
        self.events = []  # the order of fit / prepare / score calls

    def learner(self):
        def build(iteration, num_labeled, num_rows, previous):
            return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

        def fit(model, images, labels, is_generated, iteration):
            if iteration == self.fail_at:
                raise KeyboardInterrupt("killed")
            self.fitted.append((iteration, len(labels)))
            self.events.append(("fit", iteration))
            return {"loss": 1.0 / (iteration + 1)}

        def evaluate(model, images, labels):
            return self.accuracies[len(self.fitted) - 1] if self.accuracies else 0.5

        def score(model, ids, images, iteration):
            self.scored.append((ids.copy(), images.copy()))
            self.events.append(("score", iteration))
            return known_score(ids)

        def prepare(model, iteration, pool_images):
            self.prepared.append((iteration, pool_images.copy()))
            self.events.append(("prepare", iteration))
            return {}

        return loop.Learner(build=build, fit=fit, evaluate=evaluate, score=score,
                            prepare=prepare)


def test_invariants_each_iteration(tmp_path):
    ds, fake = _dataset(), FakeLearner()
    results = loop.run(_config(), str(tmp_path), ds, fake.learner())
    assert [r["iteration"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["num_labeled"] for r in results] == [8, 13, 18, 23, 28]
    assert [r["num_pool"] for r in results] == [192, 187, 182, 177, 172]  # shrinks by exactly 5
    state = json.load(open(tmp_path / "state.json"))
    labeled, pool = set(state["labeled_ids"]), set(state["pool_ids"])
    assert not labeled & pool and len(labeled | pool) == 200
    acquired = [i for r in results for i in r["acquired_ids"]]
    assert len(set(acquired)) == len(acquired) == 20 and set(acquired) <= labeled
    for (ids, images), r in zip(fake.scored, results[1:]):
        assert len(ids) == 40                                            # the pool subset
        np.testing.assert_array_equal(images, ds.x_train[ids])           # images match ids
        expected = ids[np.argsort(-known_score(ids), kind="stable")[:5]]
        assert r["acquired_ids"] == expected.tolist()                    # top-k by score
        assert r["mean_score"] == pytest.approx(known_score(expected).mean())
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    assert json.load(open(tmp_path / "config.json")) == _config().to_dict()


def test_prepare_runs_before_scoring_and_never_after_the_last_iteration(tmp_path):
    """The hook (the VAE-ACGAN's pool phase) gets the previous iteration's model and the
    current pool's images before the pool is scored; nothing runs after the last fit."""
    ds, fake = _dataset(), FakeLearner()
    results = loop.run(_config(), str(tmp_path), ds, fake.learner())
    assert fake.events == [("fit", 0)] + [e for k in range(1, 5) for e in (
        ("prepare", k - 1), ("score", k), ("fit", k))]
    pool = set(range(200)) - set(json.load(open(tmp_path / "state.json"))["labeled_ids"])
    for (iteration, images), row in zip(fake.prepared, results[1:]):
        # The pool before this iteration's acquisition: the final pool plus what was
        # acquired from this iteration on.
        later = [i for r in results[iteration + 1:] for i in r["acquired_ids"]]
        ids = np.array(sorted(pool | set(later)))
        assert len(images) == row["num_pool"] + 5
        np.testing.assert_array_equal(images, ds.x_train[ids])  # the pool ids are sorted


def test_prepare_runs_on_the_restored_model_after_a_resume(tmp_path):
    ds = _dataset()
    with pytest.raises(KeyboardInterrupt):
        loop.run(_config(), str(tmp_path), ds, FakeLearner(fail_at=3).learner())
    resumed = FakeLearner()
    loop.run(_config(), str(tmp_path), ds, resumed.learner())
    assert resumed.events == [("prepare", 2), ("score", 3), ("fit", 3), ("prepare", 3),
                              ("score", 4), ("fit", 4)]


def test_reports_final_accuracy_not_running_maximum(tmp_path):
    fake = FakeLearner(accuracies=[0.9, 0.4, 0.7, 0.3, 0.6])
    results = loop.run(_config(), str(tmp_path), _dataset(), fake.learner())
    assert [r["test_accuracy"] for r in results] == [0.9, 0.4, 0.7, 0.3, 0.6]


def test_random_method_needs_no_scores(tmp_path):
    fake = FakeLearner()
    results = loop.run(_config(method="random"), str(tmp_path), _dataset(), fake.learner())
    assert not fake.scored and all(r["mean_score"] is None for r in results)
    assert len({i for r in results for i in r["acquired_ids"]}) == 20


def test_resume_after_kill_gives_the_same_run(tmp_path):
    ds = _dataset()
    reference = loop.run(_config(), str(tmp_path / "ref"), ds, FakeLearner().learner())
    with pytest.raises(KeyboardInterrupt):
        loop.run(_config(), str(tmp_path / "run"), ds, FakeLearner(fail_at=3).learner())
    assert len(open(tmp_path / "run" / "results.jsonl").readlines()) == 3  # iterations 0-2 kept
    resumed = FakeLearner()
    results = loop.run(_config(), str(tmp_path / "run"), ds, resumed.learner())
    assert [f[0] for f in resumed.fitted] == [3, 4]                  # nothing redone
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(results) == strip(reference)
    checkpoints = os.listdir(tmp_path / "run" / "checkpoints")
    assert checkpoints == ["classifier_0004.weights.h5"]


def test_extending_iterations_resumes(tmp_path):
    ds = _dataset()
    loop.run(dataclasses.replace(_config(), iterations=2), str(tmp_path), ds,
             FakeLearner().learner())
    fake = FakeLearner()
    results = loop.run(_config(), str(tmp_path), ds, fake.learner())
    assert [f[0] for f in fake.fitted] == [3, 4] and len(results) == 5


def test_workdir_of_another_config_is_refused(tmp_path):
    loop.run(_config(), str(tmp_path), _dataset(), FakeLearner().learner())
    with pytest.raises(ConfigError, match="acquisition.acquire_per_iteration: workdir has 5"):
        loop.run(_config(acquire_per_iteration=6), str(tmp_path), _dataset(),
                 FakeLearner().learner())


def test_workdir_written_before_a_field_existed_resumes(tmp_path):
    """A config.json without a backfilled key (written before that field existed) reads as the
    field's resolved default: the run resumes. Any other missing key, and a stored value that
    differs, are still refused."""
    from tf_bgadl import config as config_lib
    ds = _dataset()
    config = config_lib.validate(_config())
    loop.run(dataclasses.replace(config, iterations=1), str(tmp_path), ds,
             FakeLearner().learner())
    path = tmp_path / "config.json"
    stored = json.load(open(path))
    for key in config_lib.BACKFILLED_KEYS:
        section, name = key.split(".")
        del stored[section][name]
    path.write_text(json.dumps(stored))
    fake = FakeLearner()
    loop.run(dataclasses.replace(config, iterations=2), str(tmp_path), ds, fake.learner())
    assert [f[0] for f in fake.fitted] == [2]
    with pytest.raises(ConfigError, match="acquisition.mc_samples: workdir has 20, this run has 7"):
        loop.run(dataclasses.replace(config, acquisition=dataclasses.replace(
            config.acquisition, mc_samples=7)), str(tmp_path), ds, FakeLearner().learner())
    del stored["generator"]["kl_weight"]
    path.write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="generator.kl_weight: workdir has None"):
        loop.run(config, str(tmp_path), ds, FakeLearner().learner())


def test_nan_scores_stop_the_run(tmp_path):
    fake = FakeLearner()
    learner = dataclasses.replace(fake.learner(),
                                  score=lambda m, ids, x, i: np.full(len(ids), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        loop.run(_config(), str(tmp_path), _dataset(), learner)


def test_validation_split_is_held_out_at_every_iteration(tmp_path):
    ds, fake = _dataset(), FakeLearner()
    config = dataclasses.replace(_config(), data=DataConfig(
        dataset="digits", initial_per_class=2, validation_per_class=3))
    evaluated = []
    learner = fake.learner()

    def evaluate(model, images, labels):
        evaluated.append(len(labels))
        return 0.25 if len(labels) == 12 else 0.5

    logged = []
    results = loop.run(config, str(tmp_path), ds, dataclasses.replace(learner, evaluate=evaluate),
                       on_iteration=lambda row, png: logged.append((row["iteration"], png)))
    assert [r["validation_accuracy"] for r in results] == [0.25] * 5
    assert [r["test_accuracy"] for r in results] == [0.5] * 5
    assert evaluated == [10, 12] * 5  # test split, then the 4 x 3 validation examples
    assert logged == [(i, None) for i in range(5)]
    validation = set(json.load(open(tmp_path / "state.json"))["validation_ids"])
    assert len(validation) == 12
    assert np.bincount(ds.y_train[sorted(validation)]).tolist() == [3, 3, 3, 3]
    for ids, _ in fake.scored:                  # never scored, so never acquired
        assert not validation & set(ids.tolist())
    for r in results:
        assert not validation & set(r["acquired_ids"])
        assert r["num_pool"] == 200 - 12 - r["num_labeled"]


def test_resume_on_another_replica_count_is_refused_unless_allowed(tmp_path):
    ds = _dataset()
    one = dataclasses.replace(_config(), iterations=1, num_replicas=1)
    loop.run(one, str(tmp_path), ds, FakeLearner().learner())
    two = dataclasses.replace(one, iterations=2, num_replicas=2)
    with pytest.raises(ConfigError, match="--allow_replica_change"):
        loop.run(two, str(tmp_path), ds, FakeLearner().learner())
    results = loop.run(two, str(tmp_path), ds, FakeLearner().learner(),
                       allow_replica_change=True)
    assert [r["iteration"] for r in results] == [0, 1, 2]
    assert json.load(open(tmp_path / "config.json"))["num_replicas"] == 2


@pytest.mark.parametrize("stored_generator, hinted", [
    # A vaeacgan run on the generator defaults before issue 13: the refusal says how to resume.
    (dict(carry_over=False, pool_steps=1000, pool_steps_fresh=0, update_every=1), True),
    # Today's schedule with other pool steps: a plain difference, no hint about old defaults.
    (dict(pool_steps=70, pool_steps_fresh=0), False),
])
def test_old_generator_schedule_refusal_says_how_to_resume(tmp_path, stored_generator, hinted):
    from tf_bgadl import config as config_lib  # pylint: disable=import-outside-toplevel
    vaeacgan = lambda **gen: config_lib.validate(ExperimentConfig(  # noqa: E731
        acquisition=AcquisitionConfig(method="vaeacgan"),
        generator=config_lib.GeneratorConfig(**gen)))
    loop.check_workdir_config(vaeacgan(**stored_generator), str(tmp_path))
    with pytest.raises(ConfigError, match="pool_steps") as refused:
        loop.check_workdir_config(vaeacgan(), str(tmp_path))
    assert ("--nogan_carry_over --gan_pool_steps=1000" in str(refused.value)) == hinted
