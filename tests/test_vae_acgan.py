import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl import experiment
from tf_bgadl.models import build_classifier
from tf_bgadl.models.vae_acgan import VAEACGAN, build_generator


def _model(strategy, *, use_encoder=True, generation="persisted", dropout_rate=0.5, seed=0,
           optimizer=lambda: keras.optimizers.Adam(1e-3), shape=(8, 8, 1), classes=10):
    with strategy.scope():
        classifier = build_classifier("cnn", num_classes=classes, input_shape=shape,
                                      dropout_rate=dropout_rate, seed=seed)
        model = VAEACGAN(classifier, shape, classes, latent_dim=16, use_encoder=use_encoder,
                         generation=generation, seed=seed)
        model.compile(c_optimizer=optimizer(), g_optimizer=optimizer(),
                      d_optimizer=optimizer(),
                      e_optimizer=optimizer() if use_encoder else None)
    return model


def _batch(digits, n=32, generated=0):
    x = tf.constant(digits.x_train[:n], tf.float32) / 255.0
    y = tf.constant(digits.y_train[:n])
    is_gen = tf.constant(np.arange(n) >= n - generated)
    return x, (y, is_gen)


@pytest.mark.parametrize("use_encoder, generation", [(True, "persisted"), (True, "online"),
                                                    (False, "persisted")])
def test_train_step_losses_finite_and_every_network_learns(digits, use_encoder, generation):
    model = _model(tf.distribute.get_strategy(), use_encoder=use_encoder, generation=generation)
    before = {name: [v.numpy().copy() for v in variables]
              for name, variables in model.networks().items()}
    logs = model.train_step(_batch(digits, generated=8))
    expected = {"classifier_loss", "generator_loss", "discriminator_loss", "accuracy"}
    if use_encoder:
        expected |= {"encoder_loss", "reconstruction_mse", "kl"}
    assert set(logs) == expected
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


def test_mirrored_first_step_equals_one_device(digits):
    sgd = lambda: keras.optimizers.SGD(0.1)  # noqa: E731 - plain SGD shows gradient scaling
    single = _model(tf.distribute.get_strategy(), dropout_rate=0.0, optimizer=sgd)
    mirrored_strategy = experiment.make_strategy("mirrored")
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = _model(mirrored_strategy, dropout_rate=0.0, optimizer=sgd)
    mirrored.set_weights(single.get_weights())
    x, (y, g) = _batch(digits, n=32)
    logs_single = single.train_step((x, (y, g)))
    ds = mirrored_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, (y, g))).batch(32))
    step = tf.function(lambda batch: mirrored_strategy.run(mirrored.train_step, args=(batch,)))
    logs_mirrored = step(next(iter(ds)))
    for name, value in logs_single.items():
        # Each replica reports its half of the batch; equal halves average to the global value.
        replica_values = mirrored_strategy.experimental_local_results(logs_mirrored[name])
        np.testing.assert_allclose(np.mean([float(v) for v in replica_values]), float(value),
                                   rtol=2e-3, atol=1e-4, err_msg=name)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


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


def test_a_batch_without_real_rows_trains_only_the_classifier(digits):
    model = _model(tf.distribute.get_strategy())
    before = {n: [v.numpy().copy() for v in vs] for n, vs in model.networks().items()}
    logs = model.train_step(_batch(digits, n=16, generated=16))
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert float(logs["generator_loss"]) == 0.0 and float(logs["discriminator_loss"]) == 0.0
    assert any(not np.array_equal(b, v.numpy())
               for b, v in zip(before["classifier"], model.networks()["classifier"]))
