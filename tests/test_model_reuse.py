"""One model per run: an iteration on the reinitialized, already traced model computes exactly
what a new model would (training.reinitialize_from, experiment.make_learner)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl import experiment, loop, training
from tf_bgadl import config as config_lib
from tf_bgadl.config import (AcquisitionConfig, DataConfig, ExperimentConfig, GeneratorConfig,
                             ModelConfig, TrainConfig)


def _config(data_dir, method, **changes):
    generator = changes.pop("generator", {})
    train = changes.pop("train", {})
    return config_lib.validate(ExperimentConfig(
        data=DataConfig(dataset="digits", data_dir=data_dir, initial_per_class=2),
        model=ModelConfig(name="cnn", width_multiplier=0.5),
        train=TrainConfig(epochs=2, batch_size=16, optimizer="adam", learning_rate=1e-3,
                          **train),
        acquisition=AcquisitionConfig(method=method, acquire_per_iteration=8, pool_subset=40,
                                      mc_samples=4, score_batch_size=64),
        generator=GeneratorConfig(latent_dim=8, width_multiplier=0.25, optimizer="adam",
                                  learning_rate=1e-3,
                                  pool_steps=4 if method == "vaeacgan" else -1, **generator),
        iterations=2, seed=3, **changes))


class _Counting:
    """A learner whose models are counted, and, with `fresh=True`, built anew every iteration
    (the previous model is handed to a second learner, so nothing is reinitialized)."""

    def __init__(self, config, digits, fresh: bool):
        make = lambda: experiment.make_learner(  # noqa: E731
            config, digits.image_shape, digits.num_classes, experiment.make_strategy("default"))
        self.learners = [make(), make()] if fresh else [make()]
        self.models = []

    def learner(self) -> loop.Learner:
        def build(iteration, num_labeled, num_rows, previous):
            chosen = self.learners[iteration % len(self.learners)]
            model = chosen.build(iteration, num_labeled, num_rows, previous)
            self.models.append(model)
            return model
        return dataclasses.replace(self.learners[0], build=build)


def _run(config, digits, workdir, fresh):
    counting = _Counting(config, digits, fresh)
    results = loop.run(config, str(workdir), digits, counting.learner())
    return results, counting.models


@pytest.mark.parametrize("method, changes", [
    ("bald", {"train": {"lr_halving_epochs": 1, "weight_decay_numerator": 3.5}}),
    ("vaeacgan", {"generator": {"pool_steps_fresh": 6}}),  # carried over, every 8th step
    pytest.param("vaeacgan", {"generator": {"carry_over": False, "update_every": 1}},
                 marks=pytest.mark.slow),
    pytest.param("acgan", {"warm_start": True}, marks=pytest.mark.slow),
])
def test_the_reused_model_computes_what_new_models_compute(digits, data_dir, tmp_path, method,
                                                           changes):
    config = _config(data_dir, method, **changes)
    reused, reused_models = _run(config, digits, tmp_path / "reused", fresh=False)
    new, new_models = _run(config, digits, tmp_path / "new", fresh=True)
    assert len({id(m) for m in reused_models}) == 1      # one model for the whole run
    assert len({id(m) for m in new_models}) == 3         # a new one every iteration
    assert [r["acquired_ids"] for r in reused] == [r["acquired_ids"] for r in new]
    for a, b in zip(reused, new):
        for key in set(a) - {"seconds"}:
            assert a[key] == b[key], key
    for a, b in zip(reused_models[-1].variables, new_models[-1].variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_reinitialize_from_takes_the_fresh_state_and_keeps_the_kept_weights(digits, data_dir):
    config = _config(data_dir, "vaeacgan", generator={"carry_over": True})
    learner = experiment.make_learner(config, digits.image_shape, digits.num_classes,
                                      experiment.make_strategy("default"))
    model = learner.build(0, 20, 20, None)
    learner.fit(model, digits.x_train[:20], digits.y_train[:20], np.zeros(20, bool), 0)
    trained_generator = [w.copy() for w in model.generator.get_weights()]
    fresh = learner.build(1, 30, 40, None)  # what iteration 1 starts from, as a new model
    assert learner.build(1, 30, 40, fresh) is fresh  # the model it built last: reinitialized
    other = experiment.make_learner(config, digits.image_shape, digits.num_classes,
                                    experiment.make_strategy("default")).build(1, 30, 40, None)
    training.reinitialize_from(model, other, keep=[model.generator])
    for a, b in zip(model.generator.get_weights(), trained_generator):
        np.testing.assert_array_equal(a, b)  # kept
    for name in ("classifier", "encoder", "discriminator"):
        for a, b in zip(getattr(model, name).variables, getattr(other, name).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(model.seed_generator.state.numpy(),
                                  other.seed_generator.state.numpy())
    for mine, theirs in zip(training.optimizers_of(model), training.optimizers_of(other)):
        assert int(mine.iterations.numpy()) == 0
        assert mine.l2 == theirs.l2
    assert training.optimizers_of(model)[0].l2 == pytest.approx(3.5 / 30)


def test_reinitialize_from_refuses_another_architecture(digits, data_dir):
    small = experiment.make_learner(_config(data_dir, "bald"), digits.image_shape,
                                    digits.num_classes, experiment.make_strategy("default"))
    wide = experiment.make_learner(
        dataclasses.replace(_config(data_dir, "bald"), model=ModelConfig(name="cnn")),
        digits.image_shape, digits.num_classes, experiment.make_strategy("default"))
    with pytest.raises(ValueError, match="other shapes"):
        training.reinitialize_from(small.build(0, 20, 20, None), wide.build(0, 20, 20, None))


def test_optimizer_assign_from_and_reset():
    variables = [tf.Variable(np.ones((3, 2), np.float32)), tf.Variable(np.ones(2, np.float32))]
    config = TrainConfig(optimizer="adam", learning_rate=0.1, lr_halving_epochs=2,
                         weight_decay_numerator=2.0, batch_size=10)
    used = training.make_optimizer(config, num_examples=40, decay_count=20)  # 4 steps/epoch
    used.build(variables)
    for _ in range(9):
        used.apply_gradients(zip([tf.ones((3, 2)), tf.ones(2)], variables))
    assert float(used.learning_rate) == pytest.approx(0.1 * 0.5 ** 1)  # 9 steps, halving at 8
    other = training.make_optimizer(config, num_examples=80, decay_count=40)  # 8 steps/epoch
    other.build(variables)
    used.assign_from(other)
    assert int(used.iterations) == 0 and used.l2 == pytest.approx(2.0 / 40)
    for _ in range(9):
        used.apply_gradients(zip([tf.ones((3, 2)), tf.ones(2)], variables))
    assert float(used.learning_rate) == pytest.approx(0.1)  # now halving at 16
    training.reset_optimizer(used)
    assert int(used.iterations) == 0
    assert all(not np.any(v.numpy()) for v in used.variables)
    constant = training.make_optimizer(dataclasses.replace(config, lr_halving_epochs=0), 40)
    constant.build(variables)
    constant.apply_gradients(zip([tf.ones((3, 2)), tf.ones(2)], variables))
    training.reset_optimizer(constant)
    assert int(constant.iterations) == 0 and float(constant.learning_rate) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="cannot assign"):
        used.assign_from(constant)  # no halving schedule
    plain = keras.optimizers.Adam(0.1)
    plain.build(variables)
    with pytest.raises(ValueError, match="cannot assign"):
        constant.assign_from(plain)


def test_image_dataset_orders_depend_on_the_seed_alone():
    """Every pass is a permutation of the rows, batched on its own, drawn from the shuffle seed
    alone (TensorFlow's global seed is never set by a run); autotuning is off."""
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    labels = np.arange(10)

    def passes(seed):
        ds = training.image_dataset(images, (labels, labels * 2), 4, shuffle_seed=seed, epochs=3)
        assert ds.options().autotune.enabled is False
        batches = [(x.numpy(), y.numpy(), z.numpy()) for x, (y, z) in ds]
        assert [len(y) for _, y, _ in batches] == [4, 4, 2] * 3
        for x, y, z in batches:
            np.testing.assert_array_equal(np.round(x[:, 0, 0, 0] * 255), y)
            np.testing.assert_array_equal(z, 2 * y)
        return [np.concatenate([y for _, y, _ in batches[3 * e:3 * e + 3]]) for e in range(3)]

    first = passes(5)
    tf.random.set_seed(123)  # the global seed changes nothing
    assert all(np.array_equal(a, b) for a, b in zip(first, passes(5)))
    assert all(sorted(p.tolist()) == list(range(10)) for p in first)
    assert not np.array_equal(first[0], first[1])
    assert not all(np.array_equal(a, b) for a, b in zip(first, passes(6)))
    ordered = [y.numpy() for _, y in training.image_dataset(images, labels, 4)]
    np.testing.assert_array_equal(np.concatenate(ordered), labels)
    with pytest.raises(ValueError, match="epochs=3 passes need a shuffle_seed"):
        training.image_dataset(images, labels, 4, epochs=3)


def test_gan_halving_counts_the_optimizer_s_own_steps():
    """With --gan_update_every=4, e, g and d step on a quarter of the joint steps: their rate
    still halves every lr_halving_epochs epochs."""
    config = TrainConfig(optimizer="adam", learning_rate=1.0, lr_halving_epochs=2, batch_size=10)
    every_step = training.make_optimizer(config, num_examples=80)             # 8 steps/epoch
    quarter = training.make_optimizer(config, num_examples=80, update_every=4)
    assert int(every_step._halving.halving_steps.numpy()) == 16  # pylint: disable=protected-access
    assert int(quarter._halving.halving_steps.numpy()) == 4  # pylint: disable=protected-access


def test_joint_probabilities_take_another_seed_per_call(digits):
    from tf_bgadl import inference  # pylint: disable=import-outside-toplevel
    from tf_bgadl.models import build_classifier  # pylint: disable=import-outside-toplevel
    model = build_classifier("cnn", num_classes=10, input_shape=digits.image_shape,
                             dropout_rate=0.5, seed=0)
    ids, images = np.arange(6), digits.x_train[:6]
    built_with_5 = inference.make_joint_probabilities(model, mc_samples=4, seed=5)(ids, images)
    reused = inference.make_joint_probabilities(model, mc_samples=4, seed=1)
    np.testing.assert_array_equal(reused(ids, images, seed=5), built_with_5)
    assert not np.array_equal(reused(ids, images), built_with_5)
    with pytest.raises(ValueError, match="seed=-1"):
        reused(ids, images, seed=-1)


@pytest.mark.parametrize("epoch_rows, every, epochs, expected", [
    (80, 1, 2, 16),    # 8 steps per epoch: 16 steps in 2 epochs
    (80, 4, 2, 4),     # a quarter of them are e/g/d steps
    (100, 3, 2, 3),    # 4 steps per epoch, every 3rd: 8 / 3 -> 3 own steps in 2 epochs
    (10, 8, 8, 1),     # 1 step per epoch, every 8th: 1 own step in 8 epochs (not 8)
    (10, 8, 2, 1),     # fewer than one own step per period: at least 1
])
def test_gan_halving_period_is_the_own_steps_of_the_halving_epochs(epoch_rows, every, epochs,
                                                                   expected):
    """The halving period counts about lr_halving_epochs x steps_per_epoch / update_every own
    steps: rounding each epoch's share up would halve up to update_every times too late."""
    config = TrainConfig(optimizer="adam", learning_rate=1.0, lr_halving_epochs=epochs,
                         batch_size=10 if epoch_rows != 100 else 25)
    optimizer = training.make_optimizer(config, num_examples=epoch_rows, update_every=every)
    assert int(optimizer._halving.halving_steps.numpy()) == expected  # pylint: disable=W0212


@pytest.mark.parametrize("generator, warm_start, steps", [
    ({}, False, [6, 4, 4]),                                  # carried over: fresh once
    ({"carry_over": False}, False, [6, 6, 6]),               # fresh e and g every iteration
    ({"carry_over": False}, True, [6, 4, 4]),                # a warm start keeps them too
    ({"pool_steps_fresh": 0}, False, [4, 4, 4]),             # 0: pool_steps throughout
])
def test_the_pool_phase_runs_its_fresh_steps_only_on_fresh_e_and_g(data_dir, monkeypatch,
                                                                  generator, warm_start, steps):
    """The pool phase after iteration i (run when iteration i + 1 starts) trains e and g for
    --gan_pool_steps_fresh steps when they started fresh in iteration i, --gan_pool_steps when
    they were carried over (or warm-started) from iteration i - 1."""
    calls = []
    monkeypatch.setattr(experiment.augment_lib, "fit_on_pool",
                        lambda model, unlabeled, *, steps, **kwargs: calls.append(steps) or {})
    config = _config(data_dir, "vaeacgan", generator={"pool_steps_fresh": 6, **generator},
                     warm_start=warm_start)
    learner = experiment.make_learner(config, (8, 8, 1), 10, experiment.make_strategy("default"))
    for iteration in range(3):
        learner.prepare(object(), iteration, np.zeros((5, 8, 8, 1), np.uint8))
    assert calls == steps
