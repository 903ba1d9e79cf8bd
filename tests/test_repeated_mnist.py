"""mnist5k_repeated: the BatchBALD paper's Repeated MNIST on the offline mnist5k digits."""

import numpy as np

from tf_bgadl import data, datasets


def test_repeat_with_noise_is_deterministic_and_close():
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
    repeated = datasets.repeat_with_noise(images, 3, 0.1, seed=1)
    assert repeated.shape == (15, 4, 4, 1) and repeated.dtype == np.uint8
    np.testing.assert_array_equal(repeated, datasets.repeat_with_noise(images, 3, 0.1, seed=1))
    assert not np.array_equal(repeated, datasets.repeat_with_noise(images, 3, 0.1, seed=2))


def test_mnist5k_repeated_triples_the_training_split_only(tmp_path):
    repeated = data.load_dataset("mnist5k_repeated", str(tmp_path))
    original = data.load_dataset("mnist5k", str(tmp_path))
    n = len(original.y_train)
    assert repeated.x_train.shape == (3 * n, 28, 28, 1) and repeated.num_classes == 10
    np.testing.assert_array_equal(repeated.x_test, original.x_test)  # test split unchanged
    np.testing.assert_array_equal(repeated.y_test, original.y_test)
    # tfds stores examples in its own fixed order, so match each repeated image to its nearest
    # original: every original has exactly three copies, each with its label, each close to it
    # but none equal to it or to another copy.
    x = repeated.x_train.reshape(3 * n, -1).astype(np.float32) / 255.0
    o = original.x_train.reshape(n, -1).astype(np.float32) / 255.0
    distances = (x ** 2).sum(1)[:, None] + (o ** 2).sum(1)[None] - 2 * x @ o.T  # [3n, n]
    nearest = np.argmin(distances, axis=1)
    assert np.bincount(nearest, minlength=n).tolist() == [3] * n
    np.testing.assert_array_equal(repeated.y_train, original.y_train[nearest])
    difference = np.abs(x - o[nearest])
    assert 0.005 < difference.mean() < 0.05 and difference.max() <= 0.3
    assert np.all(difference.max(axis=1) > 0)  # no copy equals its original
    copies = np.argsort(nearest, kind="stable").reshape(n, 3)
    assert not np.any(np.all(x[copies[:, 0]] == x[copies[:, 1]], axis=1))  # nor another copy
    second = np.partition(distances, 1, axis=1)[:, 1]
    assert np.all(distances[np.arange(3 * n), nearest] < 0.5 * second)  # far from other digits
