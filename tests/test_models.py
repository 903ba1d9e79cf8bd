import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl.models import GalCNN, MCDropout, ResNet18, build_classifier


def _conv_bn(cin, cout, k):
    return k * k * cin * cout + 2 * cout


def _resnet18_trainable(channels, classes, preact):
    """Trainable parameters of a CIFAR-style ResNet18, counted by hand."""
    widths, total, cin = [64, 128, 256, 512], 0, 64
    total += 3 * 3 * channels * 64 + (0 if preact else 2 * 64)  # stem conv (+ BN)
    for stage, w in enumerate(widths):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            if preact:  # BN(cin)-conv-BN(w)-conv
                total += 2 * cin + 9 * cin * w + 2 * w + 9 * w * w
                total += cin * w if (stride != 1 or cin != w) else 0
            else:
                total += _conv_bn(cin, w, 3) + _conv_bn(w, w, 3)
                total += _conv_bn(cin, w, 1) if (stride != 1 or cin != w) else 0
            cin = w
    total += 2 * 512 if preact else 0  # final BN
    return total + 512 * classes + classes


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("name, preact", [("resnet18", False), ("resnet18pa", True)])
def test_resnet_parameter_counts(name, preact):
    model = build_classifier(name, num_classes=10, input_shape=(32, 32, 3))
    assert _trainable(model) == _resnet18_trainable(3, 10, preact)
    if name == "resnet18":
        assert _trainable(model) == 11_173_962  # the PyTorch CIFAR ResNet18 count


def test_cnn_parameter_count():
    model = build_classifier("cnn", num_classes=10, input_shape=(28, 28, 1))
    conv = 4 * 4 * 1 * 32 + 32 + 4 * 4 * 32 * 32 + 32
    dense = (11 * 11 * 32) * 128 + 128 + 128 * 10 + 10
    assert _trainable(model) == conv + dense


@pytest.mark.parametrize("name", ["resnet18", "resnet18pa", "cnn"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_output_shapes(name, shape):
    model = build_classifier(name, num_classes=7, input_shape=shape, width_multiplier=0.125)
    x = tf.random.uniform((3, *shape))
    assert model(x).shape == (3, 7)
    assert model.mc_probabilities(x, 5).shape == (3, 5, 7)


def test_unsupported_input_shape_is_refused():
    with pytest.raises(ValueError, match="input_shape=\\(64, 64, 3\\)"):
        build_classifier("resnet18", num_classes=10, input_shape=(64, 64, 3))


@pytest.mark.parametrize("name", ["resnet18pa", "cnn"])
def test_get_config_round_trip(name):
    model = build_classifier(name, num_classes=4, input_shape=(8, 8, 1), width_multiplier=0.25,
                             dropout_rate=0.3, seed=5)
    clone = type(model).from_config(model.get_config())
    clone.build_for((8, 8, 1))
    assert clone.get_config() == model.get_config()
    assert _trainable(clone) == _trainable(model)
    clone.set_weights(model.get_weights())
    x = tf.random.uniform((2, 8, 8, 1))
    np.testing.assert_allclose(clone(x), model(x), rtol=1e-5, atol=1e-6)


def test_mc_dropout_is_stochastic_and_evaluation_deterministic():
    model = build_classifier("resnet18", num_classes=10, input_shape=(8, 8, 1),
                             width_multiplier=0.25, seed=1)
    x = tf.random.uniform((4, 8, 8, 1))
    np.testing.assert_array_equal(model(x), model(x))                       # dropout off
    np.testing.assert_array_equal(model(x, training=False), model(x))
    a, b = model(x, mc_dropout=True), model(x, mc_dropout=True)
    assert not np.allclose(a, b)                                             # masks resampled
    probs = model.mc_probabilities(x, 20).numpy()
    assert not np.allclose(probs[:, 0], probs[:, 1])                         # T passes differ
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_mc_head_sampling_matches_full_passes_without_dropout():
    model = build_classifier("cnn", num_classes=10, input_shape=(8, 8, 1), dropout_rate=0.0)
    x = tf.random.uniform((5, 8, 8, 1))
    probs = model.mc_probabilities(x, 3).numpy()
    for t in range(3):
        np.testing.assert_allclose(probs[:, t], model.probabilities(x), rtol=1e-5, atol=1e-6)


def test_mc_scoring_leaves_batchnorm_statistics_unchanged():
    model = build_classifier("resnet18", num_classes=10, input_shape=(8, 8, 3),
                             width_multiplier=0.25)
    moving = [v for v in model.non_trainable_weights if "moving" in v.path]
    assert moving
    before = [v.numpy().copy() for v in moving]
    x = tf.random.uniform((16, 8, 8, 3)) * 5.0
    model.mc_probabilities(x, 10)
    model(x, mc_dropout=True)
    for b, v in zip(before, moving):
        np.testing.assert_array_equal(b, v.numpy())


def test_mc_dropout_layer():
    layer = MCDropout(0.5, seed=0)
    x = tf.ones((1000,))
    assert np.array_equal(layer(x), x)
    dropped = layer(x, mc_dropout=True).numpy()
    assert 0.4 < (dropped == 0).mean() < 0.6 and set(np.unique(dropped)) <= {0.0, 2.0}
    assert MCDropout.from_config(layer.get_config()).rate == 0.5
    with pytest.raises(ValueError, match="rate=1.5"):
        MCDropout(1.5)


def test_saved_keras_model_round_trip(tmp_path):
    model = build_classifier("cnn", num_classes=3, input_shape=(8, 8, 1), seed=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = tf.random.uniform((2, 8, 8, 1))
    assert isinstance(loaded, GalCNN)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)
    assert isinstance(build_classifier("resnet18", num_classes=3, input_shape=(8, 8, 1)), ResNet18)


@pytest.mark.parametrize("name", ["resnet18", "cnn"])
def test_seeded_mc_probabilities_are_reproducible(name):
    model = build_classifier(name, num_classes=5, input_shape=(8, 8, 1), width_multiplier=0.25)
    x = tf.random.uniform((3, 8, 8, 1))
    a = model.mc_probabilities(x, 6, seed=tf.constant([1, 2]))
    np.testing.assert_array_equal(a, model.mc_probabilities(x, 6, seed=tf.constant([1, 2])))
    assert not np.allclose(a, model.mc_probabilities(x, 6, seed=tf.constant([1, 3])))
    assert not np.allclose(a[:, 0], a[:, 1])
