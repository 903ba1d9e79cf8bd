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
    fig, axes = plt.subplots(len(classes), 2 * per_class, squeeze=False,
                             figsize=(2 * per_class * 0.9, len(classes) * 0.95), dpi=100)
    for row, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        for col in range(per_class):
            for k, images in enumerate((x_star, x_prime)):
                ax = axes[row, 2 * col + k]
                ax.set_xticks([])
                ax.set_yticks([])
                if col < len(idx):
                    image = images[idx[col]]
                    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                              cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255)
                else:
                    ax.axis("off")
                if row == 0 and col < len(idx):
                    ax.set_title("x*" if k == 0 else "x'", fontsize=8)
        axes[row, 0].set_ylabel(str(c), rotation=0, labelpad=10, fontsize=8)
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
