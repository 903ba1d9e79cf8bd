"""Batched MC-dropout scoring of a pool under a `tf.distribute` strategy."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tf_bgadl import acquisition


def to_unit_float(images) -> tf.Tensor:
    """uint8 [..., H, W, C] in 0-255 -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def _map_pool(replica_fn: Callable, strategy: tf.distribute.Strategy, batch_size: int,
              before_call: Callable[[], None] | None = None) -> Callable:
    """`fn(ids, images) -> outputs [N, ...]` in the order of `ids`, from `replica_fn(images
    float32 [B, H, W, C]) -> [B, ...]` run on every batch inside one `tf.function` replicated by
    `strategy`. Ids travel with their images through the distributed dataset and come back with
    their outputs, so outputs stay tied to sample identity whatever the order in which replicas
    return them. `before_call` runs at the start of every call (e.g. to reseed masks)."""

    def replica_step(ids, images):
        return ids, replica_fn(to_unit_float(images))

    @tf.function
    def distributed_step(ids, images):
        ids, outputs = strategy.run(replica_step, args=(ids, images))
        return strategy.gather(ids, axis=0), strategy.gather(outputs, axis=0)

    def apply(ids: np.ndarray, images: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if len(ids) != len(images):
            raise ValueError(f"{len(ids)} ids for {len(images)} images")
        if before_call is not None:
            before_call()
        dataset = tf.data.Dataset.from_tensor_slices((ids, images)).batch(batch_size)
        out_ids, out_values = [], []
        for batch_ids, batch_images in strategy.experimental_distribute_dataset(dataset):
            got_ids, got_values = distributed_step(batch_ids, batch_images)
            out_ids.append(got_ids.numpy())
            out_values.append(got_values.numpy())
        got_ids, got_values = np.concatenate(out_ids), np.concatenate(out_values)
        position = {int(i): p for p, i in enumerate(got_ids)}
        if len(position) != len(ids) or set(position) != set(ids.tolist()):
            raise RuntimeError("MC scoring lost or duplicated pool ids")
        return got_values[[position[int(i)] for i in ids]]

    return apply


def make_predictor(model, *, strategy: tf.distribute.Strategy | None = None,
                   batch_size: int = 500) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Returns `predict(ids, images uint8 [N,H,W,C]) -> probabilities float32 [N, C]` of the
    deterministic classifier (dropout off, BatchNorm in inference mode), in the order of
    `ids`."""
    return _map_pool(model.probabilities, strategy or tf.distribute.get_strategy(), batch_size)


def make_scorer(model, *, acquisition_name: str, mc_samples: int,
                strategy: tf.distribute.Strategy | None = None,
                batch_size: int = 500,
                seed: int | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Returns `score(ids, images) -> scores` that scores images with MC dropout.

    Each batch is scored inside one `tf.function` replicated by `strategy`: the trunk runs once,
    the MC head T times (see `MCClassifier.mc_probabilities`), and the acquisition function
    reduces [B, T, C] to [B] on the device. Ids travel with their images through the distributed
    dataset and come back with their scores, so scores are tied to sample identity whatever the
    order in which replicas return them. Every image draws its own masks (per-row dropout).

    Args:
      model: an `MCClassifier` built under `strategy`'s scope.
      acquisition_name: a key of `acquisition.SCORERS`, or a batch-aware acquisition (scored
        by the per-image score it starts from: BALD; see `acquisition.get_scorer`).
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
    return _map_pool(lambda x: scorer(model.mc_probabilities(x, mc_samples)),
                     strategy or tf.distribute.get_strategy(), batch_size,
                     None if seed is None else lambda: model.reseed_mc_dropout(seed))


def make_joint_probabilities(model, *, mc_samples: int, seed: int,
                             strategy: tf.distribute.Strategy | None = None,
                             batch_size: int = 500) -> Callable[[np.ndarray, np.ndarray],
                                                                np.ndarray]:
    """Returns `predict(ids, images) -> probs [N, T, C]`: joint MC-dropout samples of a pool.

    MC sample t of every image comes from the same model omega_t: each dropout layer uses one
    mask per t, shared by every image of every batch (`mc_probabilities(shared_masks=True)`),
    drawn statelessly from (`seed`, layer, t). So an image's [T, C] outputs do not depend on
    its batch, its position, the batch size or the number of replicas, and the T rows of
    different images are predictions of the same T models: what BatchBALD's joint entropies
    assume. (Per-row masks, as `make_scorer` uses, give each image its own T models: fine for
    BALD, which looks at one image at a time, wrong for joint quantities.)

    Args:
      model: an `MCClassifier` built under `strategy`'s scope.
      mc_samples: T.
      seed: a non-negative int (31 bits); the masks depend only on it.
      strategy: defaults to the current strategy.
      batch_size: global batch size.

    Returns:
      A function taking ids int64 [N] and uint8 images [N, H, W, C] and returning float32
      probabilities [N, T, C] in the order of `ids`.
    """
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
        raise ValueError(f"seed={seed!r} must be an int in [0, 2**31): shared masks are drawn "
                         "statelessly from it")
    stateless_seed = tf.constant([int(seed), 0], tf.int32)
    return _map_pool(lambda x: model.mc_probabilities(x, mc_samples, seed=stateless_seed,
                                                      shared_masks=True),
                     strategy or tf.distribute.get_strategy(), batch_size)
