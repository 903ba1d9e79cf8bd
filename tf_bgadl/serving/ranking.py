"""Ranking images by BALD through a serving client (the library behind `serving.rank`)."""

from __future__ import annotations

import os

import numpy as np

from tf_bgadl.serving.client import per_row_seeds, prepare_images


def load_images(path: str, channels: int) -> tuple[list[str], np.ndarray]:
    """(names, images) from a .npy file or a folder of image files."""
    if os.path.isfile(path) and path.endswith(".npy"):
        images = np.load(path)
        return [f"{os.path.basename(path)}[{i}]" for i in range(len(images))], images
    if os.path.isdir(path):
        from PIL import Image  # pylint: disable=import-outside-toplevel
        names = sorted(n for n in os.listdir(path)
                       if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))
        if not names:
            raise ValueError(f"--images={path} holds no .png/.jpg/.jpeg/.bmp files")
        mode = "L" if channels == 1 else "RGB"
        arrays = [np.asarray(Image.open(os.path.join(path, n)).convert(mode)) for n in names]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images in {path} have different sizes: {sorted(shapes)}")
        images = np.stack(arrays)
        return names, images[..., None] if channels == 1 else images
    raise ValueError(f"--images={path} is neither a .npy file nor a folder")


def rank(client, names, images, *, top: int, batch_size: int, seed=None) -> list[dict]:
    """Scores all images (in batches) and returns the `top` rows, most informative first.

    With `seed` (an int) the `bald_seeded` signature scores image i of `images` with the seed
    `per_row_seeds([seed, 0], N)[i]`: an image's score depends only on it, `seed` and i, not on
    `batch_size`. Without it `bald` draws fresh masks.
    """
    images = prepare_images(images)
    signature = "bald" if seed is None else "bald_seeded"
    seeds = None if seed is None else per_row_seeds([seed, 0], len(images))
    scores, classes = [], []
    for start in range(0, len(images), batch_size):
        kwargs = {} if seeds is None else {"seed": seeds[start:start + batch_size]}
        out = client.predict(images[start:start + batch_size], signature, **kwargs)
        scores.append(np.asarray(out["bald"]).reshape(-1))
        classes.append(np.argmax(np.asarray(out["mean_probabilities"]), axis=-1))
    scores, classes = np.concatenate(scores), np.concatenate(classes)
    order = np.argsort(-scores, kind="stable")[:top]
    return [{"rank": r + 1, "name": names[i], "bald": float(scores[i]),
             "predicted_class": int(classes[i])} for r, i in enumerate(order)]
