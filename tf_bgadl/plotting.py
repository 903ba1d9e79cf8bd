"""Plots written next to a run's results."""

from __future__ import annotations

import os
import tempfile
from typing import Sequence


def save_figure(fig, path: str) -> None:
    """Writes the figure as PNG to `path` atomically (readers never see a partial file, and two
    processes writing the same figure never share a temporary file)."""
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_accuracy(results: Sequence[dict], path: str, title: str = "") -> None:
    """Test accuracy (validation accuracy for a run that is never tested) against the number
    of labeled examples, written atomically to `path`.

    For the generative methods a second panel shows the Proposition 2.1 check: the mean
    acquisition score of the acquired x* and of the generated x' per iteration.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel
    import matplotlib.ticker  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    generative = [r for r in results if r.get("score_generated") is not None]
    fig, axes = plt.subplots(1, 2 if generative else 1, figsize=(11 if generative else 6, 4),
                             dpi=100, squeeze=False)
    ax = axes[0, 0]
    # A tuning trial's run is never tested (test_accuracy None): its validation curve instead.
    key, split = (("test_accuracy", "test") if any(r.get("test_accuracy") is not None
                                                   for r in results)
                  else ("validation_accuracy", "validation"))
    rows = [r for r in results if r.get(key) is not None]
    ax.plot([r["num_labeled"] for r in rows], [100.0 * r[key] for r in rows], marker="o",
            markersize=3)
    ax.set_xlabel("labeled examples (oracle labels)")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if generative:
        ax = axes[0, 1]
        its = [r["iteration"] for r in generative]
        ax.plot(its, [r["score_acquired"] for r in generative], marker="o", markersize=3,
                label="acquired x*")
        ax.plot(its, [r["score_generated"] for r in generative], marker="s", markersize=3,
                label="generated x'")
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("mean acquisition score")
        ax.set_title("informativeness of x* and x' (Proposition 2.1)")
        ax.legend()
        ax.grid(True, alpha=0.3)
    save_figure(fig, path)


def plot_sample_grid(x_star, x_prime, labels, path: str, *, per_class: int = 4,
                     max_classes: int = 10, title: str = "") -> None:
    """A grid with one row per class: pairs of acquired x* and generated x' side by side.

    Drawn as one mosaic image in one axes (80 separate image axes took about 0.9 s per
    iteration, bench/iteration_cost.py's `plot` phase); empty cells stay background.

    Args:
      x_star: uint8 [K, H, W, C] acquired images.
      x_prime: uint8 [K, H, W, C] generated from them.
      labels: [K] their labels.
      path: PNG written atomically.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))[:max_classes]
    if not classes:
        return
    height, width = np.asarray(x_star).shape[1:3]
    inner, outer = 1, max(2, width // 7)  # gap inside a pair, gap between pairs and rows
    cell_w, cell_h = 2 * width + inner + outer, height + outer
    mosaic = np.full((len(classes) * cell_h - outer, per_class * cell_w - outer, 3), 235,
                     np.uint8)
    for row, c in enumerate(classes):
        for col, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            for k, images in enumerate((x_star, x_prime)):
                image = np.asarray(images[i])
                top, left = row * cell_h, col * cell_w + k * (width + inner)
                mosaic[top:top + height, left:left + width] = (
                    np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3])
    fig, ax = plt.subplots(figsize=(2 * per_class * 0.9, len(classes) * 0.95 + 0.3), dpi=100)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([row * cell_h + height / 2 for row in range(len(classes))],
                  [str(c) for c in classes], fontsize=8)
    ax.set_xticks([col * cell_w + k * (width + inner) + width / 2
                   for col in range(per_class) for k in range(2)],
                  ["x*", "x'"] * per_class, fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_contact_sheet(images, captions: Sequence[str], path: str, *, columns: int = 10,
                       title: str = "") -> None:
    """The images in a grid, each with its caption (e.g. its id), written atomically to `path`.

    Args:
      images: uint8 [K, H, W, C] (C = 1 or 3).
      captions: K short strings, shown above each image.
      path: PNG written atomically.
      columns: images per row.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    count = len(images)
    if count != len(captions):
        raise ValueError(f"{count} images for {len(captions)} captions")
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, squeeze=False, figsize=(columns * 1.3, rows * 1.5),
                             dpi=100)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= count:
            ax.axis("off")
            continue
        image = images[k]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                  cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(captions[k], fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
