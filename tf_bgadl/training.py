"""Training and deterministic evaluation of a classifier under a `tf.distribute` strategy."""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_bgadl.config import TrainConfig
from tf_bgadl.inference import to_unit_float


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch, prefixed with the iteration.

    Metrics are named `train_<name>` (e.g. `train_accuracy`): they are measured on the
    training rows during the epoch, not on the test split.
    """

    def __init__(self, prefix: str, epochs: int, every: int = 1):
        super().__init__()
        self.prefix, self.epochs, self.every = prefix, epochs, max(1, every)
        self._start = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            metrics = " ".join(f"train_{k}={float(v):.4f}"
                               for k, v in sorted((logs or {}).items()))
            logging.info("%s epoch %d/%d %s (%.1fs)", self.prefix, epoch + 1, self.epochs,
                         metrics, time.time() - self._start)


class _CoupledL2:
    """Adds `l2 * w` to every gradient before the update (PyTorch's `weight_decay`), unlike
    Keras' decoupled `weight_decay`. Under a strategy with R replicas each replica adds
    `l2 * w / R`, since the optimizer sums the replicas' gradients."""

    def __init__(self, *args, l2: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2 = l2

    def apply(self, grads, trainable_variables=None):
        if self.l2 and trainable_variables is not None:
            scale = self.l2 / tf.distribute.get_strategy().num_replicas_in_sync
            grads = [g if g is None else g + scale * tf.cast(v, g.dtype)
                     for g, v in zip(grads, trainable_variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


class L2Adadelta(_CoupledL2, keras.optimizers.Adadelta):
    """Adadelta with coupled L2 weight decay."""


class L2Adam(_CoupledL2, keras.optimizers.Adam):
    """Adam with coupled L2 weight decay."""


class L2SGD(_CoupledL2, keras.optimizers.SGD):
    """SGD (momentum 0.9) with coupled L2 weight decay."""


def make_optimizer(config: TrainConfig, num_examples: int, *, decay_count: int | None = None,
                   beta_1: float | None = None) -> keras.optimizers.Optimizer:
    """The classifier optimizer of the reference code, with its schedule and weight decay.

    Args:
      config: optimizer, learning rate, halving period, weight decay numerator.
      num_examples: training rows per epoch (oracle-labeled plus generated): sets the steps per
        epoch of the halving schedule.
      decay_count: N of the weight decay `weight_decay_numerator / N` (the oracle-labeled
        count, docs/protocol.md); defaults to `num_examples`.
      beta_1: Adam's beta_1 (None: Keras' 0.9); ignored by the other optimizers.

    Learning rate halved every `lr_halving_epochs` epochs; L2 weight decay added to the
    gradients, as PyTorch's `weight_decay` in the reference code does.
    """
    steps_per_epoch = max(1, int(np.ceil(num_examples / config.batch_size)))
    lr = config.learning_rate
    if config.lr_halving_epochs:
        lr = keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=config.lr_halving_epochs * steps_per_epoch,
            decay_rate=0.5, staircase=True)
    l2 = config.weight_decay_numerator / max(1, decay_count or num_examples)
    if config.optimizer == "adadelta":
        return L2Adadelta(lr, rho=0.9, epsilon=1e-6, l2=l2)
    if config.optimizer == "adam":
        return L2Adam(lr, l2=l2, **({} if beta_1 is None else {"beta_1": beta_1}))
    if config.optimizer == "sgd":
        return L2SGD(lr, momentum=0.9, l2=l2)
    raise ValueError(f"optimizer={config.optimizer!r}; choose adadelta, adam or sgd")


def compile_classifier(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Compiles `model` for training with `optimizer` (call under the strategy's scope)."""
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def image_dataset(images: np.ndarray, targets, batch_size: int, *,
                  shuffle_seed: int | None = None, augment=None) -> tf.data.Dataset:
    """(float32 images in [0, 1], targets) batches; shuffled each epoch when a seed is given.

    Args:
      images: uint8 [N, H, W, C].
      targets: labels [N], or any structure of [N] arrays (e.g. (labels, is_generated)).
      batch_size: batch size.
      shuffle_seed: shuffle each epoch with this seed; None keeps the order.
      augment: optional callable on float image batches (e.g. PMDA's random shifts).
    """
    ds = tf.data.Dataset.from_tensor_slices((images, targets))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (to_unit_float(x), y))
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y))
    return ds.prefetch(2)


def fit_classifier(model: keras.Model, images: np.ndarray, targets, config: TrainConfig, *,
                   seed: int, log_prefix: str = "", augment=None,
                   callbacks: list[keras.callbacks.Callback] | None = None) -> dict[str, float]:
    """Trains a compiled `model` on uint8 images for `config.epochs` epochs.

    `targets` is what the model's `train_step` expects: labels [N] for a classifier,
    (labels, is_generated) for `VAEACGAN`. `callbacks` are added to the epoch logger.

    Under a strategy with R replicas, a labeled set smaller than the batch size is batched in a
    multiple of R so that the first batch splits evenly (Keras' distributed `fit` averages the
    first batch across replicas to build the model and fails on uneven shapes).

    Returns:
      The last epoch's training metrics.
    """
    replicas = model.distribute_strategy.num_replicas_in_sync
    batch_size, n = config.batch_size, len(images)
    if n < batch_size and replicas > 1:
        batch_size = max(replicas, n - n % replicas)
    ds = image_dataset(images, targets, batch_size, shuffle_seed=seed, augment=augment)
    every = max(1, config.epochs // 10)
    history = model.fit(ds, epochs=config.epochs, verbose=0, shuffle=False,
                        callbacks=[EpochLogger(log_prefix, config.epochs, every),
                                   *(callbacks or [])])
    return {k: float(v[-1]) for k, v in history.history.items()}


def evaluate_accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray,
                      batch_size: int = 500,
                      strategy: tf.distribute.Strategy | None = None) -> float:
    """Top-1 accuracy of the deterministic model (dropout off, BatchNorm in inference mode).

    Counts correct predictions per replica and sums them, so uneven last batches are exact.
    """
    strategy = strategy or tf.distribute.get_strategy()

    @tf.function
    def step(x, y):
        def replica_fn(x, y):
            predicted = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int64)
            return tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(y, tf.int64)), tf.int64))
        return strategy.reduce(tf.distribute.ReduceOp.SUM,
                               strategy.run(replica_fn, args=(x, y)), axis=None)

    correct = 0
    ds = strategy.experimental_distribute_dataset(image_dataset(images, labels, batch_size))
    for x, y in ds:
        correct += int(step(x, y))
    return correct / max(1, len(labels))


def predict_probabilities(model, images: np.ndarray, batch_size: int = 500,
                          strategy: tf.distribute.Strategy | None = None) -> np.ndarray:
    """Deterministic predictive probabilities float32 [N, C] of an `MCClassifier` (dropout off,
    BatchNorm in inference mode) for uint8 images [N, H, W, C], in the order of `images`."""
    from tf_bgadl import inference  # pylint: disable=import-outside-toplevel
    predict = inference.make_predictor(model, strategy=strategy, batch_size=batch_size)
    return predict(np.arange(len(images)), images)
