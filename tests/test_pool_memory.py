"""Pool scoring reads the pool batch by batch: memory grows with the batch, not the pool."""

import numpy as np
import tensorflow as tf

from tf_bgadl import experiment, inference
from tf_bgadl.models import build_classifier


class _CountingPool:
    """A uint8 [N, H, W, C] pool read like a numpy array, that records how it is read: rows
    sliced so far, the largest slice, and whether anything took the whole array at once."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.rows_read, self.largest_read, self.materialised = 0, 0, False

    def __len__(self):
        return len(self._array)

    def __getitem__(self, index):
        rows = self._array[index]
        self.rows_read += len(rows)
        self.largest_read = max(self.largest_read, len(rows))
        return rows

    def __array__(self, dtype=None, copy=None):  # how a whole-array copy would read it
        self.materialised = True
        return self._array if dtype is None else self._array.astype(dtype)


def test_the_pool_is_read_one_batch_at_a_time():
    images = np.random.default_rng(0).integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    pool = _CountingPool(images)
    read_when_scored = []

    def mean_and_record(x):  # [B, 4, 4, 3] -> [B], noting how much of the pool was read by now
        read_when_scored.append(pool.rows_read)
        return x.mean(axis=(1, 2, 3))

    apply = inference._map_pool(
        lambda x: tf.numpy_function(mean_and_record, [x], tf.float32, stateful=True),
        tf.distribute.get_strategy(), batch_size=16)
    ids = np.random.default_rng(1).permutation(1000)[:200]  # ids are not row numbers
    got = apply(ids, pool)
    assert not pool.materialised
    assert pool.largest_read <= 16 and pool.rows_read == 200  # every row read once, in batches
    assert read_when_scored[0] <= 4 * 16  # the first batch is scored before the pool is read
    assert len(read_when_scored) == 13  # 12 batches of 16 and one of 8
    np.testing.assert_allclose(got, images.mean(axis=(1, 2, 3)) / 255.0, rtol=1e-6)


def test_uneven_batches_keep_ids_under_two_replicas_and_an_empty_pool_is_empty(digits):
    strategy = experiment.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored_model = build_classifier("cnn", num_classes=10, input_shape=(8, 8, 1), seed=0)
    model = build_classifier("cnn", num_classes=10, input_shape=(8, 8, 1), seed=0)
    model.set_weights(mirrored_model.get_weights())
    ids = np.random.default_rng(2).permutation(33) + 100
    images = digits.x_train[:33]
    # 33 rows in batches of 16: the last batch has one row, fewer than the replicas.
    joint = inference.make_joint_probabilities(mirrored_model, mc_samples=4, seed=3,
                                               strategy=strategy, batch_size=16)
    got = joint(ids, images)
    expected = inference.make_joint_probabilities(model, mc_samples=4, seed=3, batch_size=7)(
        ids[::-1], images[::-1])[::-1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert joint(ids[:0], images[:0]).shape == (0, 4, 10)
    score = inference.make_scorer(mirrored_model, acquisition_name="bald", mc_samples=4,
                                  strategy=strategy, batch_size=16, seed=5)
    assert score(ids[:0], images[:0]).shape == (0,)
    assert score(ids[:1], images[:1]).shape == (1,)
