"""Data augmentation: PMDA (classic shifts/flips) and generated samples x' = g(e(x*))."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

# Data sets whose images may be flipped horizontally by PMDA. Digits may not: a flipped 2, 3,
# 4, 5, 7 or 9 is no longer that digit (MNIST, SVHN) and Fashion-MNIST is left as the paper's
# digit data sets are.
FLIP_DATASETS = ("cifar10", "cifar100")


def make_pmda(dataset: str, seed: int, max_shift: float = 0.1) -> keras.Sequential:
    """"Poor man's" data augmentation: random shifts up to `max_shift` of the size, plus
    horizontal flips for CIFAR (never for digits: MNIST, SVHN). Called on float image batches
    [B, H, W, C]."""
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


def fit_on_pool(model, unlabeled: np.ndarray, *, steps: int, batch_size: int, seed: int,
                predict_batch_size: int = 500, log_prefix: str = "",
                predict: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, float]:
    """Trains the VAE-ACGAN's encoder and decoder on unlabeled pool images (ours, beyond the
    paper): `steps` minibatches of the VAE objective, each image conditioned on the class the
    jointly trained classifier predicts for it (deterministic pass). No oracle label is read;
    the classifier and the discriminator are not updated.

    Args:
      model: a compiled `VAEACGAN` with an encoder, after its joint fit.
      unlabeled: uint8 [P, H, W, C] pool images.
      steps: minibatches to train.
      batch_size: global batch size.
      seed: draws which pool images are used and in which order.
      predict_batch_size: batch size of the classifier's predictions.
      log_prefix: prefix of the log line.
      predict: the classifier's deterministic probabilities [N, C] of uint8 images [N, H, W, C]
        (default: `inference.make_predictor` of `model.classifier`, traced anew at every call;
        the learner passes one it keeps).

    Returns:
      The phase's last metrics, prefixed `pool_` (e.g. pool_reconstruction_mse).

    e and g train with the reconstruction phase's own optimizers, restarted first (the same
    kind and settings as the joint phase's, new state): the joint phase's accumulated
    statistics come from adversarial and auxiliary-class gradients, and with Adam (the
    quickstart's and the studies' optimizer) its second-moment estimates from those kept the
    VAE objective's steps small for the whole phase (README, "A generator that works at CPU
    scale", has the measurement).
    """
    # pylint: disable=import-outside-toplevel
    from tf_bgadl.inference import make_predictor, to_unit_float, untuned

    if predict is None:
        predictor = make_predictor(model.classifier, strategy=model.distribute_strategy,
                                   batch_size=predict_batch_size)
        predict = lambda images: predictor(np.arange(len(images)), images)  # noqa: E731
    rng = np.random.default_rng(seed)
    count = min(len(unlabeled), steps * batch_size)
    images = unlabeled[np.sort(rng.choice(len(unlabeled), count, replace=False))]
    labels = np.argmax(predict(images), axis=-1).astype(np.int64)
    repeats = int(np.ceil(steps * batch_size / count))
    order = np.concatenate([rng.permutation(count) for _ in range(repeats)])[:steps * batch_size]
    # Batches gather rows by index from one copy of the images (not steps x batch_size copies).
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    # (x, y) batches: every row is real (the model's fastest reconstruction step).
    ds = untuned(tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(
        lambda idx: (to_unit_float(tf.gather(images_t, idx)), tf.gather(labels_t, idx))
    ).prefetch(2))
    model.reset_reconstruction_optimizers()
    model.set_phase("reconstruction")
    try:
        history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    finally:
        model.set_phase("joint")
    metrics = {f"pool_{k}": float(v[-1]) for k, v in history.history.items()}
    logging.info("%s pool phase: %d steps on %d unlabeled images %s", log_prefix, steps, count,
                 " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics
