"""Plots written next to a run's results."""

from __future__ import annotations

import os
from typing import Sequence


def plot_accuracy(results: Sequence[dict], path: str, title: str = "") -> None:
    """Test accuracy against the number of labeled examples, written atomically to `path`."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [r["num_labeled"] for r in results]
    ys = [100.0 * r["test_accuracy"] for r in results]
    ax.plot(xs, ys, marker="o", markersize=3)
    ax.set_xlabel("labeled examples (oracle labels)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
