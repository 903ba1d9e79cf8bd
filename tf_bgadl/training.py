"""Training and deterministic evaluation of a classifier under a `tf.distribute` strategy."""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_bgadl.config import TrainConfig
from tf_bgadl.inference import to_unit_float, untuned


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


@keras.saving.register_keras_serializable(package="tf_bgadl")
class HalvingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`initial_learning_rate * 0.5 ** floor(step / halving_steps)` (Keras' staircase
    `ExponentialDecay` with rate 0.5), with `halving_steps` held in a variable: a reused optimizer
    takes the next iteration's epoch length by assignment, without retracing its update."""

    def __init__(self, initial_learning_rate: float, halving_steps: int):
        self.initial_learning_rate = float(initial_learning_rate)
        self.halving_steps = tf.Variable(int(halving_steps), trainable=False, dtype=tf.int64,
                                         name="halving_steps")

    def __call__(self, step):
        initial = tf.convert_to_tensor(self.initial_learning_rate)
        p = tf.floor(tf.cast(step, initial.dtype) / tf.cast(self.halving_steps, initial.dtype))
        return initial * tf.pow(tf.constant(0.5, initial.dtype), p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "halving_steps": int(self.halving_steps.numpy())}


class _CoupledL2:
    """Adds `l2 * w` to every gradient before the update (PyTorch's `weight_decay`), unlike
    Keras' decoupled `weight_decay`. Under a strategy with R replicas each replica adds
    `l2 * w / R`, since the optimizer sums the replicas' gradients.

    `l2` (and a `HalvingSchedule`'s length) live in variables outside the optimizer's Keras
    state (not checkpointed: every iteration sets them anew), so that `assign_from` can turn a
    traced optimizer into a fresh one of another iteration, and `reset` restarts it."""

    def __init__(self, learning_rate, *args, l2: float = 0.0, **kwargs):
        super().__init__(learning_rate, *args, **kwargs)
        self._l2 = tf.Variable(float(l2), trainable=False, dtype=tf.float32, name="l2")
        # Whether the update adds the decay term at all (a run without weight decay, e.g. every
        # optimizer of e, g and d, never has one): fixed at construction, part of the config.
        self._decays = bool(l2)
        self._halving = learning_rate if isinstance(learning_rate, HalvingSchedule) else None

    @property
    def l2(self) -> float:
        return float(self._l2.numpy())

    def apply(self, grads, trainable_variables=None):
        if self._decays and trainable_variables is not None:
            scale = self._l2 / tf.distribute.get_strategy().num_replicas_in_sync
            grads = [g if g is None else g + tf.cast(scale, g.dtype) * tf.cast(v, g.dtype)
                     for g, v in zip(grads, trainable_variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}

    def _structure(self) -> dict:
        """The configuration that a traced update depends on (everything but the values that
        `assign_from` assigns)."""
        config = {k: v for k, v in self.get_config().items()
                  if k not in ("name", "l2", "learning_rate")}
        halving = self._halving
        return {**config, "class": type(self).__name__, "decays": self._decays,
                "halving": None if halving is None else halving.initial_learning_rate}

    def assign_from(self, other: "_CoupledL2") -> None:
        """Takes every piece of `other`'s state: its variables (iterations, slots, learning
        rate), l2 and the halving schedule's length. `other` must be of the same class and
        configuration up to those values, built on variables of the same shapes."""
        # pylint: disable=protected-access
        theirs = other._structure() if isinstance(other, _CoupledL2) else other.get_config()
        if self._structure() != theirs:
            raise ValueError(f"cannot assign optimizer {theirs} to {self._structure()}")
        shapes = [[tuple(v.shape) for v in o.variables] for o in (self, other)]
        if shapes[0] != shapes[1]:
            raise ValueError(f"optimizers with variables of other shapes: {shapes[0]} and "
                             f"{shapes[1]} (is one of them not built?)")
        for mine_v, theirs_v in zip(self.variables, other.variables):
            mine_v.assign(theirs_v)
        self._l2.assign(other._l2)
        if self._halving is not None:
            self._halving.halving_steps.assign(other._halving.halving_steps)


class L2Adadelta(_CoupledL2, keras.optimizers.Adadelta):
    """Adadelta with coupled L2 weight decay."""


class L2Adam(_CoupledL2, keras.optimizers.Adam):
    """Adam with coupled L2 weight decay."""


class L2SGD(_CoupledL2, keras.optimizers.SGD):
    """SGD (momentum 0.9) with coupled L2 weight decay."""


def make_optimizer(config: TrainConfig, num_examples: int, *, decay_count: int | None = None,
                   beta_1: float | None = None,
                   update_every: int = 1) -> keras.optimizers.Optimizer:
    """The classifier optimizer of the reference code, with its schedule and weight decay.

    Args:
      config: optimizer, learning rate, halving period, weight decay numerator.
      num_examples: training rows per epoch (oracle-labeled plus generated): sets the steps per
        epoch of the halving schedule.
      decay_count: N of the weight decay `weight_decay_numerator / N` (the oracle-labeled
        count, docs/protocol.md); defaults to `num_examples`.
      beta_1: Adam's beta_1 (None: Keras' 0.9); ignored by the other optimizers.
      update_every: the optimizer steps on every update_every-th training step only (e, g and
        d with `--gan_update_every`): its halving period counts its own steps, about
        lr_halving_epochs x steps_per_epoch / update_every of them (rounded, at least 1), so
        that the rate still halves about every `lr_halving_epochs` epochs.

    Learning rate halved every `lr_halving_epochs` epochs; L2 weight decay added to the
    gradients, as PyTorch's `weight_decay` in the reference code does.
    """
    steps_per_epoch = max(1, int(np.ceil(num_examples / config.batch_size)))
    lr = config.learning_rate
    if config.lr_halving_epochs:
        # Its own steps in lr_halving_epochs epochs (rounding each epoch's share up instead
        # would halve up to update_every times too late when an epoch has few steps).
        own_steps = max(1, round(config.lr_halving_epochs * steps_per_epoch / update_every))
        lr = HalvingSchedule(config.learning_rate, own_steps)
    l2 = config.weight_decay_numerator / max(1, decay_count or num_examples)
    if config.optimizer == "adadelta":
        return L2Adadelta(lr, rho=0.9, epsilon=1e-6, l2=l2)
    if config.optimizer == "adam":
        return L2Adam(lr, l2=l2, **({} if beta_1 is None else {"beta_1": beta_1}))
    if config.optimizer == "sgd":
        return L2SGD(lr, momentum=0.9, l2=l2)
    raise ValueError(f"optimizer={config.optimizer!r}; choose adadelta, adam or sgd")


def reset_optimizer(optimizer: keras.optimizers.Optimizer) -> None:
    """Gives a built optimizer the state a new one starts from (iterations and every slot
    zero), with the same hyperparameters, without creating variables (what it has traced stays
    valid)."""
    learning_rate = optimizer.get_config()["learning_rate"]  # a dict for a schedule
    for variable in optimizer.variables:
        variable.assign(tf.zeros(variable.shape, variable.dtype))
    if not isinstance(learning_rate, dict):
        optimizer.learning_rate = learning_rate


def optimizers_of(model: keras.Model) -> list:
    """Every optimizer that trains `model`: a compiled classifier's one, or all of the
    VAE-ACGAN's (`VAEACGAN.all_optimizers`)."""
    all_optimizers = getattr(model, "all_optimizers", None)
    return all_optimizers() if all_optimizers is not None else [model.optimizer]


def reinitialize_from(model: keras.Model, fresh: keras.Model, *, keep=()) -> None:
    """Gives `model` the state of `fresh`, a new model built and compiled as `model` was (the
    same architecture and optimizers; other initial weights, seeds and hyperparameter values):
    every variable (weights, BatchNorm statistics, dropout and latent seed states) and every
    optimizer's state and hyperparameters, except the weights of the layers in `keep`, which
    stay as they are (a warm start; generative networks carried over). `model` then computes
    what `fresh` would, with the functions it has already traced: an active-learning iteration
    that starts from fresh weights retraces nothing.

    Raises:
      ValueError: the two models or their optimizers differ in structure.
    """
    targets, sources = model.variables, fresh.variables
    if ([(tuple(v.shape), v.dtype) for v in targets]
            != [(tuple(v.shape), v.dtype) for v in sources]):
        raise ValueError(f"{model.name} and {fresh.name} have variables of other shapes")
    kept = {id(v) for layer in keep for v in layer.weights}
    for target, source in zip(targets, sources):
        if id(target) not in kept:
            target.assign(source)
    optimizers, fresh_optimizers = optimizers_of(model), optimizers_of(fresh)
    if len(optimizers) != len(fresh_optimizers):
        raise ValueError(f"{model.name} has {len(optimizers)} optimizers, {fresh.name} "
                         f"{len(fresh_optimizers)}")
    for target, source in zip(optimizers, fresh_optimizers):
        target.assign_from(source)


def compile_classifier(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Compiles a built `model` for training with `optimizer` (call under the strategy's
    scope) and builds the optimizer on its weights, as `fit` would at its first step (so that
    a new model's optimizer state exists before any training: `reinitialize_from`)."""
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    optimizer.build(model.trainable_variables)


def image_dataset(images: np.ndarray, targets, batch_size: int, *,
                  shuffle_seed: int | None = None, epochs: int = 1,
                  augment=None) -> tf.data.Dataset:
    """(float32 images in [0, 1], targets) batches: `epochs` passes over the rows, each in a new
    random order when `shuffle_seed` is given, one pass in the given order otherwise.

    Each pass is batched on its own (its last batch may be smaller), and the orders are numpy
    permutations drawn from `shuffle_seed` alone: they depend on nothing else (not on
    TensorFlow's global seed, which an iteration never sets: `tf.random.set_seed` clears every
    traced function's instantiation). One iterator serves every pass (`fit` with
    `steps_per_epoch`), so no epoch sets up an input pipeline again.

    Args:
      images: uint8 [N, H, W, C].
      targets: labels [N], or any structure of [N] arrays (e.g. (labels, is_generated)).
      batch_size: batch size.
      shuffle_seed: shuffle each pass with this seed; None keeps the order.
      epochs: passes (with `shuffle_seed`).
      augment: optional callable on float image batches (e.g. PMDA's random shifts).
    """
    n = len(images)
    if shuffle_seed is None:
        if epochs != 1:
            raise ValueError(f"epochs={epochs} passes need a shuffle_seed (without one the rows "
                             "are read once, in their order)")
        orders = np.arange(n, dtype=np.int64)[None]
    else:
        rng = np.random.default_rng(shuffle_seed)
        orders = np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int64)
    images_t = tf.constant(images)
    targets_t = tf.nest.map_structure(tf.constant, targets)
    ds = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    ds = ds.map(lambda idx: (to_unit_float(tf.gather(images_t, idx)),
                             tf.nest.map_structure(lambda t: tf.gather(t, idx), targets_t)))
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y))
    return untuned(ds.prefetch(2))


def fit_classifier(model: keras.Model, images: np.ndarray, targets, config: TrainConfig, *,
                   seed: int, log_prefix: str = "", augment=None,
                   callbacks: list[keras.callbacks.Callback] | None = None) -> dict[str, float]:
    """Trains a compiled `model` on uint8 images for `config.epochs` epochs.

    `targets` is what the model's `train_step` expects: labels [N] for a classifier,
    (labels, is_generated) for `VAEACGAN`. `callbacks` are added to the epoch logger. Every
    epoch visits the rows in a new order drawn from `seed` (`image_dataset`).

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
    ds = image_dataset(images, targets, batch_size, shuffle_seed=seed, epochs=config.epochs,
                       augment=augment)
    every = max(1, config.epochs // 10)
    history = model.fit(ds, epochs=config.epochs, steps_per_epoch=-(-n // batch_size),
                        verbose=0, shuffle=False,
                        callbacks=[EpochLogger(log_prefix, config.epochs, every),
                                   *(callbacks or [])])
    return {k: float(v[-1]) for k, v in history.history.items()}


def make_evaluator(model: keras.Model, batch_size: int = 500,
                   strategy: tf.distribute.Strategy | None = None):
    """Returns `accuracy(images uint8 [N,H,W,C], labels [N]) -> float`: top-1 accuracy of the
    deterministic model (dropout off, BatchNorm in inference mode), traced once for all calls.

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

    def accuracy(images: np.ndarray, labels: np.ndarray) -> float:
        correct = 0
        ds = strategy.experimental_distribute_dataset(image_dataset(images, labels, batch_size))
        for x, y in ds:
            correct += int(step(x, y))
        return correct / max(1, len(labels))

    return accuracy


def evaluate_accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray,
                      batch_size: int = 500,
                      strategy: tf.distribute.Strategy | None = None) -> float:
    """Top-1 accuracy of the deterministic model (`make_evaluator`, traced for this call)."""
    return make_evaluator(model, batch_size, strategy)(images, labels)
