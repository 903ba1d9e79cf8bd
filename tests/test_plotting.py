"""The x* | x' sample grid: one mosaic, x* and x' side by side per class."""

import os

import numpy as np
import pytest

from tf_bgadl.plotting import plot_sample_grid


@pytest.mark.parametrize("channels", [1, 3])
def test_sample_grid_shows_both_images_of_each_pair(tmp_path, channels):
    from matplotlib import image as mpimg  # pylint: disable=import-outside-toplevel
    x_star = np.full((5, 12, 12, channels), 255, np.uint8)  # white
    x_prime = np.zeros((5, 12, 12, channels), np.uint8)  # black
    labels = np.array([0, 0, 1, 2, 2])
    path = str(tmp_path / "samples" / "grid.png")
    plot_sample_grid(x_star, x_prime, labels, path, title="t")
    pixels = mpimg.imread(path)[..., :3].mean(axis=-1)
    # Both images are drawn, and neither is the background (235 / 255).
    assert (pixels > 0.99).sum() > 5 * 144 and (pixels < 0.01).sum() > 5 * 144
    assert np.isclose(pixels, 235 / 255, atol=0.01).sum() > 0


def test_sample_grid_without_labels_writes_nothing(tmp_path):
    path = str(tmp_path / "grid.png")
    plot_sample_grid(np.zeros((0, 8, 8, 1), np.uint8), np.zeros((0, 8, 8, 1), np.uint8),
                     np.zeros(0, np.int64), path)
    assert not os.path.exists(path)
