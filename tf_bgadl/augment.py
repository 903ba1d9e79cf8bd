"""Data augmentation: PMDA (classic shifts/flips) and generated samples x' = g(e(x*))."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Data sets whose images may be flipped horizontally by PMDA (digits may not).
FLIP_DATASETS = ("cifar10", "cifar100", "svhn_cropped")


def make_pmda(dataset: str, seed: int, max_shift: float = 0.1) -> keras.Sequential:
    """"Poor man's" data augmentation: random shifts up to `max_shift` of the size, plus
    horizontal flips for CIFAR/SVHN. Called on float image batches [B, H, W, C]."""
    layers = [keras.layers.RandomTranslation(max_shift, max_shift, fill_mode="constant",
                                             seed=seed)]
    if dataset in FLIP_DATASETS:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
    pipeline = keras.Sequential(layers, name="pmda")
    return lambda x: pipeline(x, training=True)


def to_uint8(images) -> np.ndarray:
    """float images in [0, 1] -> uint8 0-255 (how generated samples are stored)."""
    return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def generate_samples(model, images: np.ndarray, labels: np.ndarray, *, seed: int,
                     batch_size: int = 500) -> np.ndarray:
    """x' = model.generate(x*, y*) for uint8 images x*; returns uint8 [K, H, W, C].

    The latent noise (ACGAN) restarts from `seed`, so a resumed run generates the same x'.
    """
    model.reseed(seed)
    out = []
    for start in range(0, len(images), batch_size):
        x = tf.cast(images[start:start + batch_size], tf.float32) / 255.0
        out.append(to_uint8(model.generate(x, labels[start:start + batch_size])))
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.uint8)
