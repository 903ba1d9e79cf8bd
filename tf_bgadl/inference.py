"""Batched MC-dropout scoring of a pool under a `tf.distribute` strategy."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tf_bgadl import acquisition


def to_unit_float(images) -> tf.Tensor:
    """uint8 [..., H, W, C] in 0-255 -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning off. Our pipelines have nothing to tune (a fixed
    prefetch, sequential maps), and with autotuning on, deleting a finished iterator waited for
    tf.data's autotuning thread: 15 to 20 s after 5 of 8 pool phases of 1,000 steps (the main
    thread blocked in `~IteratorResource`, `bench/iteration_cost.py`'s `after fit`), seconds
    after some training fits."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _pool_dataset(ids: np.ndarray, images, batch_size: int, *, min_rows: int,
                  pad_id: int) -> tf.data.Dataset:
    """(ids int64 [B], images [B, H, W, C]) batches of a pool, sliced from the caller's arrays.

    The dataset holds no copy of the pool: its source is the row numbers `range(N)`, batched,
    and each batch is read as `images[first:first + B]` when the iterator reaches it, so the
    input pipeline holds a few batches (the prefetch buffers), never the pool (which
    `from_tensor_slices` would copy into one tensor). Row numbers are batched by a `batch` op,
    as `from_tensor_slices(...).batch(...)` is, so `experimental_distribute_dataset` finds the
    static global batch size and splits every batch over the replicas as it did before.
    A batch of fewer than `min_rows` rows (the last one, or the only one of an empty pool) is
    padded with zero images of id `pad_id` up to `min_rows`, so that no replica gets an empty
    batch. `images` may be anything sliced like a numpy array (an `np.memmap`, an HDF5 dataset).
    """
    num_rows, image_shape = len(ids), tuple(images.shape[1:])
    dtype = np.dtype(images.dtype)

    def read(rows):  # rows: consecutive row numbers [B], past num_rows only for an empty pool
        first, stop = int(rows[0]), min(int(rows[-1]) + 1, num_rows)
        batch_ids, batch_images = ids[first:stop], np.asarray(images[first:stop], dtype)
        pad = min_rows - len(batch_ids)
        if pad > 0:
            batch_ids = np.concatenate([batch_ids, np.full(pad, pad_id, np.int64)])
            batch_images = np.concatenate([batch_images, np.zeros((pad, *image_shape), dtype)])
        return batch_ids, batch_images

    def read_batch(rows):
        batch_ids, batch_images = tf.numpy_function(read, [rows], (tf.int64, tf.as_dtype(dtype)),
                                                    stateful=False)
        batch_ids.set_shape([None])
        batch_images.set_shape((None, *image_shape))
        return batch_ids, batch_images

    dataset = tf.data.Dataset.range(max(num_rows, 1)).batch(batch_size).map(read_batch)
    options = tf.data.Options()
    options.autotune.enabled = False  # see `untuned`
    # Across workers every worker iterates the row numbers and keeps its replicas' share of
    # each global batch (what AUTO falls back to for a source without files, said explicitly).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _map_pool(replica_fn: Callable, strategy: tf.distribute.Strategy, batch_size: int,
              before_call: Callable[[], None] | None = None) -> Callable:
    """`fn(ids, images, *args) -> outputs [N, ...]` in the order of `ids`, from
    `replica_fn(images float32 [B, H, W, C], *args) -> [B, ...]` run on every batch inside one
    `tf.function` replicated by `strategy` (traced once: `args` are tensors, e.g. a seed).
    Ids travel with their images through the distributed dataset and come back with their
    outputs, so outputs stay tied to sample identity whatever the order in which replicas
    return them. The pool is read batch by batch (`_pool_dataset`): memory beyond the outputs
    grows with the batch, not with the pool. A last batch with fewer rows than replicas is
    padded (the padding's outputs are dropped), and an empty pool gives empty outputs [0, ...].
    `before_call` runs at the start of every call (e.g. to reseed masks)."""
    num_replicas = strategy.num_replicas_in_sync
    if batch_size < num_replicas:
        raise ValueError(f"batch_size={batch_size} is the global batch: it must be at least the "
                         f"number of replicas ({num_replicas})")

    def replica_step(ids, images, *args):
        return ids, replica_fn(to_unit_float(images), *args)

    @tf.function
    def distributed_step(ids, images, *args):
        ids, outputs = strategy.run(replica_step, args=(ids, images, *args))
        return strategy.gather(ids, axis=0), strategy.gather(outputs, axis=0)

    def apply(ids: np.ndarray, images, *args) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if len(ids) != len(images):
            raise ValueError(f"{len(ids)} ids for {len(images)} images")
        if before_call is not None:
            before_call()
        pad_id = -1 if not np.any(ids == -1) else int(ids.min()) - 1  # an id not in `ids`
        dataset = _pool_dataset(ids, images, batch_size, min_rows=num_replicas, pad_id=pad_id)
        out_ids, out_values = [], []
        for batch_ids, batch_images in strategy.experimental_distribute_dataset(dataset):
            got_ids, got_values = distributed_step(batch_ids, batch_images, *args)
            out_ids.append(got_ids.numpy())
            out_values.append(got_values.numpy())
        got_ids, got_values = np.concatenate(out_ids), np.concatenate(out_values)
        real = got_ids != pad_id
        got_ids, got_values = got_ids[real], got_values[real]
        position = {int(i): p for p, i in enumerate(got_ids)}
        if (len(got_ids) != len(ids) or len(position) != len(ids)
                or set(position) != set(ids.tolist())):
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
      A function taking ids int64 [N] and uint8 images [N, H, W, C] (and optionally `seed=`, in
      place of the one given here, without retracing) and returning float32 probabilities
      [N, T, C] in the order of `ids`.
    """
    def stateless_seed(value):
        if not isinstance(value, (int, np.integer)) or not 0 <= value < 2**31:
            raise ValueError(f"seed={value!r} must be an int in [0, 2**31): shared masks are "
                             "drawn statelessly from it")
        return tf.constant([int(value), 0], tf.int32)

    default = stateless_seed(seed)
    apply = _map_pool(lambda x, s: model.mc_probabilities(x, mc_samples, seed=s,
                                                          shared_masks=True),
                      strategy or tf.distribute.get_strategy(), batch_size)
    return lambda ids, images, seed=None: apply(
        ids, images, default if seed is None else stateless_seed(seed))
