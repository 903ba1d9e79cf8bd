"""Batched MC-dropout scoring of a pool under a `tf.distribute` strategy."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tf_bgadl import acquisition


def to_unit_float(images) -> tf.Tensor:
    """uint8 [..., H, W, C] in 0-255 -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def make_scorer(model, *, acquisition_name: str, mc_samples: int,
                strategy: tf.distribute.Strategy | None = None,
                batch_size: int = 500,
                seed: int | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Returns `score(ids, images) -> scores` that scores images with MC dropout.

    Each batch is scored inside one `tf.function` replicated by `strategy`: the trunk runs once,
    the MC head T times (see `MCClassifier.mc_probabilities`), and the acquisition function
    reduces [B, T, C] to [B] on the device. Ids travel with their images through the distributed
    dataset and come back with their scores, so scores are tied to sample identity whatever the
    order in which replicas return them.

    Args:
      model: an `MCClassifier` built under `strategy`'s scope.
      acquisition_name: a key of `acquisition.SCORERS`.
      mc_samples: T.
      strategy: defaults to the current strategy.
      batch_size: global batch size.
      seed: when given, every call restarts the MC-dropout masks from this seed, so the scores
        depend only on the weights, the images and the seed (a resumed run scores as the
        uninterrupted one did).

    Returns:
      A function taking ids int64 [N] and uint8 images [N, H, W, C] and returning float32 scores
      [N] in the order of `ids`.
    """
    scorer = acquisition.get_scorer(acquisition_name)
    strategy = strategy or tf.distribute.get_strategy()

    def replica_step(ids, images):
        probs = model.mc_probabilities(to_unit_float(images), mc_samples)
        return ids, scorer(probs)

    @tf.function
    def distributed_step(ids, images):
        ids, scores = strategy.run(replica_step, args=(ids, images))
        return strategy.gather(ids, axis=0), strategy.gather(scores, axis=0)

    def score(ids: np.ndarray, images: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if len(ids) != len(images):
            raise ValueError(f"{len(ids)} ids for {len(images)} images")
        if seed is not None:
            model.reseed_mc_dropout(seed)
        dataset = tf.data.Dataset.from_tensor_slices((ids, images)).batch(batch_size)
        out_ids, out_scores = [], []
        for batch_ids, batch_images in strategy.experimental_distribute_dataset(dataset):
            got_ids, got_scores = distributed_step(batch_ids, batch_images)
            out_ids.append(got_ids.numpy())
            out_scores.append(got_scores.numpy())
        got_ids, got_scores = np.concatenate(out_ids), np.concatenate(out_scores)
        position = {int(i): p for p, i in enumerate(got_ids)}
        if len(position) != len(ids) or set(position) != set(ids.tolist()):
            raise RuntimeError("MC scoring lost or duplicated pool ids")
        return got_scores[[position[int(i)] for i in ids]]

    return score
