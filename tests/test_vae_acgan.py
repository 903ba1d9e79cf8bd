import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl import augment, experiment
from tf_bgadl.models import build_classifier
from tf_bgadl.models.vae_acgan import VAEACGAN, build_generator

JOINT_METRICS = {"classifier_loss", "generator_loss", "discriminator_loss", "accuracy"}
ENCODER_METRICS = {"encoder_loss", "reconstruction_mse", "kl"}


def _model(strategy, *, use_encoder=True, generation="persisted", dropout_rate=0.5, seed=0,
           optimizer=lambda: keras.optimizers.Adam(1e-3), shape=(8, 8, 1), classes=10,
           classifier="cnn", **kwargs):
    with strategy.scope():
        c = build_classifier(classifier, num_classes=classes, input_shape=shape,
                             dropout_rate=dropout_rate, seed=seed,
                             width_multiplier=0.125 if classifier.startswith("resnet") else 1.0)
        model = VAEACGAN(c, shape, classes, latent_dim=16, use_encoder=use_encoder,
                         generation=generation, seed=seed, **kwargs)
        model.compile(c_optimizer=optimizer(), g_optimizer=optimizer(),
                      d_optimizer=optimizer(),
                      e_optimizer=optimizer() if use_encoder else None)
    return model


def _is_generated(generated_per_half, n=32):
    """is_generated [n]: the last k rows of each half (one half per replica) are generated."""
    half = n // 2
    mask = np.zeros(n, bool)
    for index, k in enumerate(generated_per_half):
        mask[(index + 1) * half - k:(index + 1) * half] = True
    return mask


def _batch(digits, n=32, generated=0, mask=None):
    x = tf.constant(digits.x_train[:n], tf.float32) / 255.0
    y = tf.constant(digits.y_train[:n])
    is_gen = tf.constant(np.arange(n) >= n - generated if mask is None else mask)
    return x, (y, is_gen)


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _bn_statistics(network):
    return _values([v for v in network.variables if "moving_" in v.path])


def _mirrored_pair(**kwargs):
    """(one-device model, MirroredStrategy model with the same weights, the strategy).

    The weights are seeded: the two steps differ by float32 rounding (synchronised BatchNorm
    computes E[x^2] - E[x]^2; sums run in another order), which moves a (Leaky)ReLU input
    lying within rounding of zero to the other side in a few percent of random
    initialisations; a fixed one keeps the comparison exact to the tolerance."""
    keras.utils.set_random_seed(0)
    sgd = lambda: keras.optimizers.SGD(0.1)  # noqa: E731 - plain SGD shows gradient scaling
    single = _model(tf.distribute.get_strategy(), dropout_rate=0.0, optimizer=sgd, **kwargs)
    strategy = experiment.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    mirrored = _model(strategy, dropout_rate=0.0, optimizer=sgd, **kwargs)
    mirrored.set_weights(single.get_weights())
    return single, mirrored, strategy


def _mirrored_step(strategy, model, batch):
    """One train_step under `strategy`; replica r gets the r-th half of `batch`."""
    x, (y, g) = batch
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, (y, g))).batch(len(x)))
    step = tf.function(lambda b: strategy.run(model.train_step, args=(b,)))
    return step(next(iter(ds)))


def _assert_mirrored_equals_single(strategy, logs_single, logs_mirrored, single, mirrored):
    assert set(logs_mirrored) == set(logs_single)
    for name, value in logs_single.items():
        # Every replica reports the global value (losses are means over the global batch).
        for replica_value in strategy.experimental_local_results(logs_mirrored[name]):
            np.testing.assert_allclose(float(replica_value), float(value), rtol=2e-3, atol=1e-4,
                                       err_msg=name)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize("use_encoder, generation", [(True, "persisted"), (True, "online"),
                                                    (False, "persisted")])
def test_train_step_losses_finite_and_every_network_learns(digits, use_encoder, generation):
    model = _model(tf.distribute.get_strategy(), use_encoder=use_encoder, generation=generation)
    before = {name: _values(variables) for name, variables in model.networks().items()}
    logs = model.train_step(_batch(digits, generated=8))
    assert set(logs) == JOINT_METRICS | (ENCODER_METRICS if use_encoder else set())
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert set(before) == ({"classifier", "generator", "discriminator"}
                           | ({"encoder"} if use_encoder else set()))
    for name, variables in model.networks().items():
        changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before[name], variables)]
        assert any(changed), f"{name} did not change"


def test_reconstruction_error_falls_on_tiny_data(digits):
    model = _model(tf.distribute.get_strategy())
    x = digits.x_train[:64].astype(np.float32) / 255.0
    y = digits.y_train[:64]
    ds = tf.data.Dataset.from_tensor_slices((x, (y, np.zeros(64, bool)))).shuffle(
        64, seed=0).batch(32).repeat()
    history = model.fit(ds, steps_per_epoch=25, epochs=12, verbose=0, shuffle=False).history
    first, last = history["reconstruction_mse"][0], history["reconstruction_mse"][-1]
    assert last < 0.6 * first, history["reconstruction_mse"]
    generated = model.generate(tf.constant(x[:8]), y[:8]).numpy()
    assert generated.shape == (8, 8, 8, 1) and generated.min() >= 0 and generated.max() <= 1
    assert np.mean((generated - x[:8]) ** 2) < first


def test_generator_output_shapes_for_odd_sizes():
    for shape in [(8, 8, 1), (10, 10, 3), (28, 28, 1), (32, 32, 3)]:
        g = build_generator(shape, 4, 100)
        assert g([tf.zeros((2, 4)), tf.zeros((2, 100))]).shape == (2, *shape)


@pytest.mark.parametrize("generation", ["persisted", "online"])
@pytest.mark.parametrize("use_encoder", [True, False])
def test_generated_images_leave_the_classifier_batchnorm_statistics_alone(
        digits, use_encoder, generation):
    """After a step, C's BatchNorm moving statistics are those of C's pass over the batch's
    rows alone: the statistics g(z, y) and g(e(x), y) put there are restored."""
    batch = _batch(digits, generated=8 if generation == "persisted" else 0)
    model = _model(tf.distribute.get_strategy(), classifier="resnet18", use_encoder=use_encoder,
                   generation=generation)
    reference = _model(tf.distribute.get_strategy(), classifier="resnet18",
                       use_encoder=use_encoder, generation=generation)
    reference.set_weights(model.get_weights())
    initial = _bn_statistics(model.classifier)
    assert initial
    model.train_step(batch)
    reference.classifier(batch[0], training=True)  # C alone on the batch's rows
    after = _bn_statistics(model.classifier)
    assert any(not np.allclose(a, b) for a, b in zip(initial, after))
    for a, b in zip(after, _bn_statistics(reference.classifier)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("traced", [False, True])
def test_generated_images_are_classified_with_their_batch_statistics(digits, traced):
    """C sees generated images as it sees a training batch (BatchNorm normalises with the
    batch's own statistics, as in the authors' code), not with the moving statistics, and
    the pass leaves the moving statistics as they were (also inside a tf.function, where the
    restore must run after the pass's own updates)."""
    model = _model(tf.distribute.get_strategy(), classifier="resnet18", dropout_rate=0.0)
    reference = _model(tf.distribute.get_strategy(), classifier="resnet18", dropout_rate=0.0)
    reference.set_weights(model.get_weights())
    images = tf.constant(digits.x_train[:16], tf.float32) / 255.0
    initial = _bn_statistics(model.classifier)
    classify = tf.function(model._classify_generated) if traced else model._classify_generated
    logits = classify(images).numpy()
    for a, b in zip(initial, _bn_statistics(model.classifier)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(logits, reference.classifier(images, training=True).numpy(),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(logits, reference.classifier(images, training=False).numpy(),
                           atol=1e-3)


def test_generated_images_leave_the_moving_statistics_alone_under_mirrored(digits):
    """The restore also holds in replica context (two replicas, per-replica BatchNorm in C)."""
    strategy = experiment.make_strategy("mirrored")
    model = _model(strategy, classifier="resnet18")
    initial = _bn_statistics(model.classifier)
    images = tf.constant(digits.x_train[:16], tf.float32) / 255.0
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(images).batch(16))
    step = tf.function(lambda x: strategy.run(model._classify_generated, args=(x,)))
    logits = strategy.experimental_local_results(step(next(iter(ds))))
    assert [t.shape[0] for t in logits] == [8, 8]
    for a, b in zip(initial, _bn_statistics(model.classifier)):
        np.testing.assert_array_equal(a, b)


def test_pool_phase_trains_encoder_and_generator_with_fresh_optimizers(digits):
    """The pool phase trains e and g with optimizers of their own, of the same kind and
    settings as the joint phase's, restarted at every pool phase (neither the joint phase's
    moment estimates nor the last pool phase's carry over), and leaves C and d, and every
    joint-phase optimizer, alone."""
    model = _model(tf.distribute.get_strategy(), classifier="resnet18")
    model.train_step(_batch(digits))  # the joint phase's state: one step of every optimizer
    joint = {n: _values(o.variables) for n, o in model.optimizers.items()}
    untouched = {n: _values(getattr(model, n).variables) for n in ("classifier", "discriminator")}
    for _ in range(2):
        metrics = augment.fit_on_pool(model, digits.x_train[:64], steps=3, batch_size=16,
                                      seed=0)
        assert np.isfinite(metrics["pool_reconstruction_mse"])
        for name in ("encoder", "generator"):
            own = model.reconstruction_optimizers()[name]
            assert own is not model.optimizers[name]
            assert type(own) is type(model.optimizers[name])
            assert own.get_config() == model.optimizers[name].get_config()
            assert int(own.iterations) == 3  # restarted: 3 again, not 6
    for name, before in joint.items():
        assert int(model.optimizers[name].iterations) == 1
        for a, b in zip(before, _values(model.optimizers[name].variables)):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name, before in untouched.items():
        for a, b in zip(before, _values(getattr(model, name).variables)):
            np.testing.assert_array_equal(a, b)
    assert set(model.all_optimizers()) == {*model.optimizers.values(),
                                           *model.reconstruction_optimizers().values()}


def test_each_phase_is_traced_once(digits):
    """Switching phases keeps each phase's traced train function: the second fit of a phase
    traces nothing."""
    model = _model(tf.distribute.get_strategy())
    x = digits.x_train[:64].astype(np.float32) / 255.0
    joint = tf.data.Dataset.from_tensor_slices(
        (x, (digits.y_train[:64], np.zeros(64, np.float32)))).batch(32)
    pool = tf.data.Dataset.from_tensor_slices((x, digits.y_train[:64])).batch(32)
    functions = {}
    for _ in range(2):
        model.fit(joint, epochs=1, verbose=0, shuffle=False)
        functions.setdefault("joint", model.train_function)
        assert model.train_function is functions["joint"]
        model.set_phase("reconstruction")
        model.fit(pool, epochs=1, verbose=0, shuffle=False)
        functions.setdefault("reconstruction", model.train_function)
        assert model.train_function is functions["reconstruction"]
        model.set_phase("joint")
    assert functions["joint"] is not functions["reconstruction"]


def test_pool_phase_after_a_checkpoint_round_trip_equals_the_uninterrupted_one(digits, tmp_path):
    """The latent-noise state is saved with the weights: a model restored from a checkpoint
    (a resumed run) trains the same pool phase as the model that wrote it."""
    model = _model(tf.distribute.get_strategy(), seed=3)
    model.train_step(_batch(digits))  # advances the latent-noise sequence
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    restored = _model(tf.distribute.get_strategy(), seed=3)
    restored.load_weights(path)
    np.testing.assert_array_equal(restored.seed_generator.state.numpy(),
                                  model.seed_generator.state.numpy())
    for m in (model, restored):
        augment.fit_on_pool(m, digits.x_train[:64], steps=3, batch_size=16, seed=0)
    for a, b in zip(_values(model.generator.variables), _values(restored.generator.variables)):
        np.testing.assert_array_equal(a, b)


def test_the_pool_phase_trains_at_the_schedule_s_initial_rate(digits):
    """A halving schedule counts the joint phase's epochs; the pool phase's own optimizers keep
    its initial rate (under the schedule, with one step per epoch, its steps would halve it at
    every step)."""
    from tf_bgadl import training  # pylint: disable=import-outside-toplevel
    from tf_bgadl.config import TrainConfig  # pylint: disable=import-outside-toplevel
    halving_every_step = TrainConfig(optimizer="adam", learning_rate=0.01, lr_halving_epochs=1,
                                     batch_size=32)
    model = _model(tf.distribute.get_strategy(), optimizer=lambda: training.make_optimizer(
        halving_every_step, num_examples=32))
    augment.fit_on_pool(model, digits.x_train[:64], steps=4, batch_size=16, seed=0)
    for name in ("encoder", "generator"):
        pool_optimizer = model.reconstruction_optimizers()[name]
        assert int(pool_optimizer.iterations.numpy()) == 4
        assert float(pool_optimizer.learning_rate) == pytest.approx(0.01)
        joint = model.optimizers[name]  # the schedule itself is kept for the joint phase
        joint.iterations.assign(4)
        assert float(joint.learning_rate) == pytest.approx(0.01 / 16)
    # A resumed or reused model restarts the pool optimizers at the same constant rate.
    model.reset_reconstruction_optimizers()
    assert float(model.reconstruction_optimizers()["encoder"].learning_rate) == pytest.approx(0.01)


# Replica 0 / replica 1: generated rows in each half of the 32-row batch.
UNEVEN = (2, 6)
REPLICA_0_WITHOUT_REAL_ROWS = (16, 6)


@pytest.mark.parametrize("use_encoder, generation, generated_per_replica", [
    (True, "persisted", (0, 0)), (True, "persisted", UNEVEN), (False, "persisted", UNEVEN),
    (True, "online", UNEVEN), (False, "online", UNEVEN),
    (True, "persisted", REPLICA_0_WITHOUT_REAL_ROWS)])
def test_mirrored_first_step_equals_one_device(digits, use_encoder, generation,
                                               generated_per_replica):
    """Masked losses are means over the global batch and z rows are sliced by global offset,
    so two replicas with uneven real rows (even none on one replica) take the same step as one
    device."""
    single, mirrored, strategy = _mirrored_pair(use_encoder=use_encoder, generation=generation)
    batch = _batch(digits, mask=_is_generated(generated_per_replica))
    logs_single = single.train_step(batch)
    logs_mirrored = _mirrored_step(strategy, mirrored, batch)
    _assert_mirrored_equals_single(strategy, logs_single, logs_mirrored, single, mirrored)


def test_replicas_draw_different_latent_noise():
    strategy = experiment.make_strategy("mirrored")
    with strategy.scope():
        classifier = build_classifier("cnn", num_classes=3, input_shape=(8, 8, 1))
        model = VAEACGAN(classifier, (8, 8, 1), 3, latent_dim=4, seed=1)
    z = strategy.run(tf.function(lambda: model.sample_latent(5)))
    z0, z1 = (t.numpy() for t in strategy.experimental_local_results(z))
    assert z0.shape == z1.shape == (5, 4)
    assert not np.allclose(z0, z1)
    model.reseed(1)
    np.testing.assert_allclose(np.concatenate([z0, z1]), model.sample_latent(10))


def test_fit_builds_from_images_and_trains_under_mirrored(digits):
    strategy = experiment.make_strategy("mirrored")
    model = _model(strategy)
    x = digits.x_train[:40].astype(np.float32) / 255.0
    # is_generated as float: Keras' distributed fit averages the first batch across replicas.
    ds = tf.data.Dataset.from_tensor_slices((x, (digits.y_train[:40], np.zeros(40, np.float32))))
    history = model.fit(ds.batch(20), epochs=2, verbose=0, shuffle=False).history
    assert np.isfinite(history["generator_loss"][-1])
    assert model(tf.constant(x[:3])).shape == (3, 10)
    model.set_phase("reconstruction")
    history = model.fit(ds.batch(20), epochs=1, verbose=0, shuffle=False).history
    assert set(history) == ENCODER_METRICS and np.isfinite(history["reconstruction_mse"][-1])


def test_generative_networks_never_see_stored_generated_rows(digits):
    """Changing the stored x' rows of a batch changes only the classifier's update."""
    x, (y, g) = _batch(digits, n=32, generated=12)
    mask = tf.cast(g, tf.float32)[:, None, None, None]
    variants = [x * (1 - mask), x * (1 - mask) + mask]  # x' rows all black vs all white
    reference = _model(tf.distribute.get_strategy(), seed=3).get_weights()
    weights = []
    for images in variants:
        model = _model(tf.distribute.get_strategy(), seed=3)
        model.set_weights(reference)
        model.reseed(3)
        for layer in model.classifier.mc_dropout_layers:
            layer.reseed(5)
        model.train_step((images, (y, g)))
        weights.append({name: [v.numpy() for v in net.weights] for name, net in
                        [("encoder", model.encoder), ("generator", model.generator),
                         ("discriminator", model.discriminator),
                         ("classifier", model.classifier)]})
    for name in ("encoder", "generator", "discriminator"):
        for a, b in zip(weights[0][name], weights[1][name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    assert any(not np.allclose(a, b) for a, b in zip(weights[0]["classifier"],
                                                     weights[1]["classifier"]))


def _generative_state(model):
    """Weights (BatchNorm statistics included), optimizer variables and iteration counts of
    e, g and d."""
    state = {}
    for name in ("encoder", "generator", "discriminator"):
        network = getattr(model, name)
        if network is not None:
            state[name] = _values(network.weights)
            state[f"{name}_optimizer"] = _values(model.optimizers[name].variables)
            state[f"{name}_iterations"] = int(model.optimizers[name].iterations.numpy())
    return state


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for name, value in before.items():
        if isinstance(value, int):
            assert value == after[name], name
        else:
            for a, b in zip(value, after[name]):
                np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("strategy_name, use_encoder", [
    ("default", True), ("default", False), ("mirrored", True)])
def test_a_batch_without_real_rows_trains_only_the_classifier(digits, strategy_name,
                                                              use_encoder):
    """Only stored x' rows (persisted): e, g and d are not run at all (no BatchNorm update, no
    optimizer step), on one device and on every replica alike."""
    strategy = experiment.make_strategy(strategy_name)
    model = _model(strategy, use_encoder=use_encoder)
    before = _generative_state(model)
    assert before["generator_iterations"] == 0
    classifier_before = _values(model.classifier.trainable_variables)
    batch = _batch(digits, n=32, generated=32)
    if strategy_name == "default":
        logs = model.train_step(batch)
    else:
        per_replica = _mirrored_step(strategy, model, batch)
        logs = {k: strategy.experimental_local_results(v)[0] for k, v in per_replica.items()}
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert float(logs["generator_loss"]) == 0.0 and float(logs["discriminator_loss"]) == 0.0
    _assert_same_state(before, _generative_state(model))
    assert any(not np.array_equal(b, v.numpy())
               for b, v in zip(classifier_before, model.classifier.trainable_variables))
    assert int(model.optimizers["classifier"].iterations.numpy()) == 1


def test_kl_weight_scales_the_kl_term_of_the_encoder_loss(digits):
    assert _model(tf.distribute.get_strategy()).kl_weight == 1.0
    model = _model(tf.distribute.get_strategy(), kl_weight=0.25)
    assert model.kl_weight == 0.25
    logs = model.train_step(_batch(digits, generated=8))
    np.testing.assert_allclose(float(logs["encoder_loss"]),
                               float(logs["reconstruction_mse"]) + 0.25 * float(logs["kl"]),
                               rtol=1e-5)
    assert float(logs["kl"]) > 0


def test_reconstruction_phase_needs_an_encoder():
    with pytest.raises(ValueError, match="use_encoder=False"):
        _model(tf.distribute.get_strategy(), use_encoder=False, reconstruction_phase=True)
    model = _model(tf.distribute.get_strategy(), use_encoder=False)
    with pytest.raises(ValueError, match="use_encoder=False"):
        model.set_phase("reconstruction")
    with pytest.raises(ValueError, match="'pool'"):
        model.set_phase("pool")
    assert not model.reconstruction_phase


def test_reconstruction_phase_trains_only_encoder_and_generator_in_fit(digits):
    """fit picks up set_phase without a recompile (Keras 3.15 keeps a traced train function
    otherwise): only e and g change; C and d are not called (ResNet C: BatchNorm untouched)."""
    model = _model(tf.distribute.get_strategy(), classifier="resnet18")
    x = digits.x_train[:64].astype(np.float32) / 255.0
    ds = tf.data.Dataset.from_tensor_slices(
        (x, (digits.y_train[:64], np.zeros(64, np.float32)))).batch(32)
    joint_history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
    assert set(joint_history) == JOINT_METRICS | ENCODER_METRICS
    frozen = {name: (_values(getattr(model, name).variables),
                     _values(model.optimizers[name].variables))
              for name in ("classifier", "discriminator")}
    trained = {name: _values(getattr(model, name).trainable_variables)
               for name in ("encoder", "generator")}
    model.set_phase("reconstruction")
    assert model.reconstruction_phase
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False).history
    assert set(history) == ENCODER_METRICS
    assert all(np.isfinite(v[-1]) for v in history.values())
    for name, (variables, optimizer_variables) in frozen.items():
        for a, b in zip(variables, _values(getattr(model, name).variables)):
            np.testing.assert_array_equal(a, b, err_msg=name)
        for a, b in zip(optimizer_variables, _values(model.optimizers[name].variables)):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} optimizer")
    for name, before in trained.items():
        after = _values(getattr(model, name).trainable_variables)
        assert all(not np.array_equal(a, b) for a, b in zip(before, after)), name
    model.set_phase("joint")
    joint_history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
    assert set(joint_history) == JOINT_METRICS | ENCODER_METRICS


def _held_out_mse(model, x, y):
    return float(np.mean((model.generate(tf.constant(x), y).numpy() - x) ** 2))


def test_reconstruction_phase_lowers_held_out_reconstruction_error(digits):
    """300 steps of the phase: the held-out error falls well below its start and below that of
    the class-mean image (x' keeps the style of its x, not only its class)."""
    model = _model(tf.distribute.get_strategy(), reconstruction_phase=True, kl_weight=0.1)
    x = digits.x_train[:1024].astype(np.float32) / 255.0
    y = digits.y_train[:1024]
    x_test, y_test = digits.x_test[:256].astype(np.float32) / 255.0, digits.y_test[:256]
    class_means = np.stack([x[y == c].mean(0) for c in range(10)])
    class_mean_mse = float(np.mean((class_means[y_test] - x_test) ** 2))  # ~0.040
    ds = tf.data.Dataset.from_tensor_slices((x, (y, np.zeros(1024, np.float32)))).shuffle(
        1024, seed=0).batch(32).repeat()
    before = _held_out_mse(model, x_test, y_test)  # ~0.18
    history = model.fit(ds, steps_per_epoch=100, epochs=3, verbose=0,
                        shuffle=False).history
    after = _held_out_mse(model, x_test, y_test)  # ~0.019 measured
    assert after < 0.35 * before, (before, after, history["reconstruction_mse"])
    assert after < 0.75 * class_mean_mse, (after, class_mean_mse)


@pytest.mark.parametrize("generated_per_replica", [UNEVEN, REPLICA_0_WITHOUT_REAL_ROWS])
def test_mirrored_reconstruction_step_equals_one_device(digits, generated_per_replica):
    single, mirrored, strategy = _mirrored_pair(reconstruction_phase=True)
    batch = _batch(digits, mask=_is_generated(generated_per_replica))
    logs_single = single.train_step(batch)
    assert set(logs_single) == ENCODER_METRICS
    logs_mirrored = _mirrored_step(strategy, mirrored, batch)
    _assert_mirrored_equals_single(strategy, logs_single, logs_mirrored, single, mirrored)
    for name in ("classifier", "discriminator"):
        assert int(mirrored.optimizers[name].iterations.numpy()) == 0


def _pool_batches(digits, steps=3, n=16):
    return [(tf.constant(digits.x_train[i * n:(i + 1) * n], tf.float32) / 255.0,
             tf.constant(digits.y_train[i * n:(i + 1) * n])) for i in range(steps)]


def test_reconstruction_step_on_x_y_equals_the_masked_step(digits):
    """(x, y) batches (every row real: the pool phase's) skip the row selection and the branch
    on one replica, and take exactly the steps of (x, (y, zeros)) batches."""
    weights, logs = [], []
    for all_real in (False, True):
        keras.utils.set_random_seed(0)
        model = _model(tf.distribute.get_strategy(), reconstruction_phase=True)
        step = tf.function(model.train_step)
        for x, y in _pool_batches(digits):
            out = step((x, y) if all_real else (x, (y, tf.zeros(tf.shape(y)))))
        weights.append(model.get_weights())
        logs.append({k: float(v) for k, v in out.items()})
    assert logs[0] == logs[1] and set(logs[1]) == ENCODER_METRICS
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_joint_step_refuses_x_y_batches(digits):
    model = _model(tf.distribute.get_strategy())
    x, y = _pool_batches(digits, steps=1)[0]
    with pytest.raises(ValueError, match="reconstruction phase"):
        model.train_step((x, y))


def test_mirrored_reconstruction_step_on_x_y_equals_one_device(digits):
    single, mirrored, strategy = _mirrored_pair(reconstruction_phase=True)
    x, y = _pool_batches(digits, steps=1, n=32)[0]
    logs_single = single.train_step((x, y))
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)))
    step = tf.function(lambda b: strategy.run(mirrored.train_step, args=(b,)))
    logs_mirrored = step(next(iter(ds)))
    _assert_mirrored_equals_single(strategy, logs_single, logs_mirrored, single, mirrored)


def test_update_every_steps_e_g_d_on_every_kth_joint_step_only(digits):
    """update_every=3: e, g and d step on joint steps 0 and 3 of 6, C on all six; their
    losses are averaged over the steps they took; online generation is refused."""
    model = _model(tf.distribute.get_strategy(), update_every=3)
    step = tf.function(model.train_step)
    generator_losses = []
    for _ in range(6):
        before = _values(model.generator.trainable_variables)
        logs = step(_batch(digits, generated=8))
        moved = any(not np.array_equal(a, b.numpy())
                    for a, b in zip(before, model.generator.trainable_variables))
        generator_losses.append((moved, float(logs["generator_loss"])))
    assert [moved for moved, _ in generator_losses] == [True, False, False, True, False, False]
    assert int(model.optimizers["classifier"].iterations) == 6
    for name in ("generator", "discriminator", "encoder"):
        assert int(model.optimizers[name].iterations) == 2
    # The tracker holds the mean of the two steps' losses: unchanged by the skipped steps.
    assert generator_losses[1][1] == generator_losses[0][1]
    assert generator_losses[5][1] == generator_losses[4][1] == generator_losses[3][1]
    with pytest.raises(ValueError, match="generation='persisted'"):
        _model(tf.distribute.get_strategy(), update_every=2, generation="online")
    with pytest.raises(ValueError, match="update_every=0"):
        _model(tf.distribute.get_strategy(), update_every=0)


def test_checkpoints_hold_no_reconstruction_optimizers(digits, tmp_path):
    """The reconstruction phase's optimizers restart in every pool phase: weight files do not
    carry them (nor anything else than before they existed)."""
    import h5py  # pylint: disable=import-outside-toplevel
    model = _model(tf.distribute.get_strategy())
    augment.fit_on_pool(model, digits.x_train[:32], steps=2, batch_size=16, seed=0)
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    names = []
    with h5py.File(path) as f:
        f.visit(names.append)
    optimizers = {n.split("/")[1] for n in names if n.startswith("optimizers/") and "/" in n}
    assert len([n for n in names if n.startswith("optimizers/") and n.count("/") == 1]) == 4
    assert not any("reconstruction" in n or "_unsaved" in n for n in names), optimizers


@pytest.mark.slow
def test_mirrored_update_every_equals_one_device(digits):
    """update_every=2 on two replicas: e, g and d step on the same joint steps as on one
    device, and the weights agree after both steps."""
    single, mirrored, strategy = _mirrored_pair(update_every=2)
    batch = _batch(digits, mask=_is_generated(UNEVEN))
    for _ in range(2):
        logs_single = single.train_step(batch)
        logs_mirrored = _mirrored_step(strategy, mirrored, batch)
    _assert_mirrored_equals_single(strategy, logs_single, logs_mirrored, single, mirrored)
    for model in (single, mirrored):
        assert int(model.optimizers["generator"].iterations.numpy()) == 1
        assert int(model.optimizers["classifier"].iterations.numpy()) == 2
