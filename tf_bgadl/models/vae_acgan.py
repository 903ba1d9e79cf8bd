"""VAE-ACGAN: encoder e, conditional generator/decoder g, discriminator d, and the classifier C.

Architecture as in the authors' code (docs/protocol.md), for H, W in [8, 32] and 1 or 3 channels:
  generator g(z, y): concat(z, one-hot y) - FC 1024 - BN - ReLU - FC 128*(H/4)*(W/4) - BN - ReLU -
      deconv 64 (4x4, s2) - BN - ReLU - deconv C (4x4, s2) - sigmoid (cropped to H x W).
  discriminator d(x): conv 64 (4x4 s2) - LReLU .2 - conv 128 (4x4 s2) - BN - LReLU - FC 1024 - BN -
      LReLU - FC 1 (a logit; the loss applies the sigmoid).
  encoder e(x): the discriminator's conv stack, FC 1024, then the heads `z_mean`, `z_log_var`.
`width_multiplier` scales 64/128/1024 for CPU-sized runs. The classifier C plays the ACGAN
auxiliary classifier.

Joint phase (the default; `fit` on (x, (y, is_generated))). Weights are 1 except the 0.75,
lambda = `gen_loss_weight` and beta = `kl_weight`; `rec` is g(e(x), y), `fake` is g(z, y) with
z ~ N(0, I), one of each per real row (x, y):
  encoder:        MSE(rec, x) + beta KL(q(z|x) || N(0, I)) / (H*W*C)      (KL through tfp)
  generator:      BCE(d(fake), 1) + CE(C(fake), y) + 0.75 MSE(rec, x)
  discriminator:  BCE(d(x), 1) + BCE(d(fake), 0) + BCE(d(rec), 0)
  classifier:     CE(C(x), y) + lambda [CE(C(fake), y) + CE(C(rec), y)]  (generation="online")
                  CE on real rows + lambda CE on stored generated rows      (generation="persisted")
With `use_encoder=False` (the ACGAN of BDA) the encoder and every `rec` term are dropped.

What sees which rows:
  - e, g and d see only the real (oracle-labeled, is_generated = 0) rows of a batch, never stored
    x': these would shift the BatchNorm statistics of d's "real" batch and hand d an easy tell.
  - C trains on every row of the batch (training=True: its BatchNorm statistics come from these
    rows alone). On fake and rec (g's auxiliary loss; C's loss in "online" mode) C runs as on a
    training batch (BatchNorm normalises with the generated batch's own statistics, dropout
    sampled), as the authors' code does, but C's BatchNorm moving statistics are restored after
    that pass: generated images never enter the statistics that C is evaluated with. Gradients
    still flow through C to g. (BatchNorm in inference mode instead, i.e. with the moving
    statistics of a classifier trained for a few dozen steps, let a ResNet classifier's
    outputs drive g to checkerboard patterns; see README, "A generator that works at CPU scale".)
  - A batch without real rows (global count 0: only stored x') runs e, g and d not at all (no
    BatchNorm update, no optimizer step, iteration counts unchanged); only C trains on it, and
    the generative metrics skip it.
The step runs e/g/d's update first and C's after it; C's update uses only quantities computed
before either was applied (g does not read C's new weights, C reads g's outputs as constants),
so the order does not change the step.

Reconstruction phase (`set_phase("reconstruction")`, ours, beyond the paper; needs the encoder):
`fit` on (x, (y, is_generated)) as above, or on (x, y) where every row is real (the pool phase's
batches), where y conditions g (e.g. the classifier's predicted class for unlabeled pool images).
Only e and g train, on the VAE objective over the real rows: encoder MSE(rec, x) + beta KL /
(H*W*C), generator MSE(rec, x) (no adversarial or auxiliary term). C and d are not called (no
BatchNorm update, no optimizer step). Metrics: reconstruction_mse, kl, encoder_loss. On (x, y)
with one replica the step selects no rows and branches on nothing (a batch of `fit` is never
empty): the same update, about 18 % faster per step (bench/iteration_cost.py).

Under MirroredStrategy a step equals a one-device step on the same global batch:
  - every loss over a subset of rows (the real rows; C's weighted rows) is a mean over the GLOBAL
    batch: each replica contributes (sum over its rows) / (global count), counts all-reduced, and
    nothing is divided by the replica count again (the optimizers sum gradients over replicas);
  - the N real rows of the global batch, in replica order (the order one device sees), are
    split evenly: replica r runs e, g and d on rows [r N / R, (r + 1) N / R) (exchanged by an
    all-reduce), so no replica runs them on an empty batch while another has rows (oneDNN's
    CPU convolutions return wrong shapes on empty batches) unless N < R (as with any batch
    smaller than the replica count);
  - latent noise (z and the encoder's epsilon) is drawn for all N real rows from one seed, and a
    replica keeps the rows of its real rows (offset r N / R): no two replicas share a z and the
    draw equals the one-device draw;
  - BatchNorm in e, g, d is synchronised: global statistics over the replicas' rows;
  - whether a batch has real rows is decided on the all-reduced count, identical on every replica;
  - every replica reports the global value of each metric (Keras averages replicas' logs).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tf_bgadl.models.layers import reseed_generator

GENERATIONS = ("persisted", "online")
PHASES = ("joint", "reconstruction")
JOINT_METRICS = ("classifier_loss", "generator_loss", "discriminator_loss", "accuracy")
ENCODER_METRICS = ("encoder_loss", "reconstruction_mse", "kl")


def _bn(name):
    # Synchronised across replicas only where there are several (it costs ~25 % on one device).
    synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=synchronized,
                                           name=name)


def _width(units: int, multiplier: float) -> int:
    return max(1, int(round(units * multiplier)))


def _conv_stack(x, prefix, width):
    x = keras.layers.Conv2D(_width(64, width), 4, strides=2, padding="same",
                            name=f"{prefix}_conv1")(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Conv2D(_width(128, width), 4, strides=2, padding="same",
                            name=f"{prefix}_conv2")(x)
    x = keras.layers.LeakyReLU(0.2)(_bn(f"{prefix}_bn2")(x))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(_width(1024, width), name=f"{prefix}_fc")(x)
    return keras.layers.LeakyReLU(0.2)(_bn(f"{prefix}_bn_fc")(x))


def build_encoder(image_shape, latent_dim: int, width: float = 1.0) -> keras.Model:
    """x [B, H, W, C] -> (z_mean [B, latent], z_log_var [B, latent])."""
    images = keras.Input(image_shape, name="images")
    h = _conv_stack(images, "encoder", width)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def build_generator(image_shape, latent_dim: int, num_classes: int,
                    width_multiplier: float = 1.0) -> keras.Model:
    """(z [B, latent], one-hot y [B, classes]) -> images [B, H, W, C] in [0, 1]."""
    height, width, channels = image_shape
    h4, w4 = math.ceil(height / 4), math.ceil(width / 4)
    z = keras.Input((latent_dim,), name="z")
    y = keras.Input((num_classes,), name="y_onehot")
    h = keras.layers.Concatenate()([z, y])
    fc1 = keras.layers.Dense(_width(1024, width_multiplier), name="fc1")(h)
    h = keras.layers.ReLU()(_bn("generator_bn_fc1")(fc1))
    channels128 = _width(128, width_multiplier)
    h = keras.layers.Dense(channels128 * h4 * w4, name="fc2")(h)
    h = keras.layers.ReLU()(_bn("generator_bn_fc2")(h))
    h = keras.layers.Reshape((h4, w4, channels128))(h)
    h = keras.layers.Conv2DTranspose(_width(64, width_multiplier), 4, strides=2, padding="same",
                                     name="deconv1")(h)
    h = keras.layers.ReLU()(_bn("generator_bn_deconv1")(h))
    h = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                     activation="sigmoid", name="deconv2")(h)
    if (4 * h4, 4 * w4) != (height, width):
        h = keras.layers.Cropping2D(((0, 4 * h4 - height), (0, 4 * w4 - width)))(h)
    return keras.Model([z, y], h, name="generator")


def build_discriminator(image_shape, width: float = 1.0) -> keras.Model:
    """x [B, H, W, C] -> real/fake logit [B, 1]."""
    images = keras.Input(image_shape, name="images")
    logit = keras.layers.Dense(1, name="real_logit")(_conv_stack(images, "discriminator", width))
    return keras.Model(images, logit, name="discriminator")


def _ce(labels, logits):
    """Per-row cross-entropy [B] of int labels [B] and logits [B, classes]."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def _bce(logits, target: float):
    """Per-row binary cross-entropy [B] of real/fake logits [B, 1] against a constant target."""
    return keras.losses.binary_crossentropy(tf.fill(tf.shape(logits), target), logits,
                                            from_logits=True)


def _pixel_mse(a, b):
    """Per-image mean squared error [B] of images [B, H, W, C]."""
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])


def _share_of_mean(values, global_count):
    """This replica's share of a mean over the global batch: sum(values [n]) / global count.

    Summed over replicas (as the optimizers sum gradients) it is the global mean; 0 when the
    global batch has nothing to average.
    """
    return tf.math.divide_no_nan(tf.reduce_sum(values), global_count)


def _per_replica_counts(local_counts):
    """Every replica's counts, and this replica's id.

    Args:
      local_counts: float32 [K], this replica's counts.

    Returns:
      (counts [R, K], row r from replica r; replica id). Outside a replica context (a call that
      sees the whole batch): ([1, K], 0).
    """
    context = tf.distribute.get_replica_context()
    if context is None:
        return local_counts[None], 0
    replica = context.replica_id_in_sync_group
    slots = tf.one_hot(replica, context.num_replicas_in_sync)[:, None] * local_counts[None]
    return context.all_reduce(tf.distribute.ReduceOp.SUM, slots), replica


def _gather_rows(tensors, offset, total):
    """The global batch's rows [total, ...] of each tensor, in replica order, on every replica.

    Each replica places its rows [n, ...] at `offset` in zeros [total, ...]; the sum over
    replicas is exact because every row comes from one replica.
    """
    padded = [tf.pad(tf.cast(t, tf.float32),
                     [[offset, total - offset - tf.shape(t)[0]]] + [[0, 0]] * (t.shape.rank - 1))
              for t in tensors]
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, padded)


def _global_sum(values):
    """A structure of replicas' shares summed over replicas: global values, the same on each."""
    context = tf.distribute.get_replica_context()
    return values if context is None else context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _if_global(condition, step_fn, skip_fn, *args):
    """step_fn(*args) on every replica where `condition`, else skip_fn(*args).

    The branch is chosen in cross-replica context (merge_call), as Keras' LossScaleOptimizer
    does: a tf.cond in replica context whose branch holds a synchronisation point (synchronised
    BatchNorm, apply_gradients) fails under MirroredStrategy with "merge_call called while
    defining a new graph" (checked on TF 2.21 / Keras 3.15). On one device the default replica
    context makes this a plain tf.cond.

    Args:
      condition: bool scalar, identical on every replica (computed from all-reduced values).
      step_fn, skip_fn: replica functions of `args` returning the same structure of tensors.
      *args: this replica's tensors.

    Returns:
      This replica's outputs of the branch taken.
    """
    def choose(strategy, condition, *args):
        run = lambda fn: strategy.extended.call_for_each_replica(fn, args=args)  # noqa: E731
        return tf.cond(strategy.experimental_local_results(condition)[0],
                       lambda: run(step_fn), lambda: run(skip_fn))

    return tf.distribute.get_replica_context().merge_call(choose, args=(condition, *args))


def _constant_rate_config(optimizer) -> dict:
    """`optimizer`'s config with a learning-rate schedule replaced by its rate at step 0."""
    config = optimizer.get_config()
    if isinstance(config["learning_rate"], dict):  # a serialized schedule
        schedule = keras.optimizers.schedules.deserialize(config["learning_rate"])
        config["learning_rate"] = float(keras.ops.convert_to_numpy(schedule(0)))
    return config


class _NotSaved:
    """Holds what Keras' weight saving must not walk into: `save_weights` writes the state of
    every optimizer that a model's attributes or their lists and dicts reach, and the
    reconstruction phase's optimizers start fresh in every pool phase (nothing to save), while
    traced functions are no state at all."""

    def __init__(self, **items):
        self.__dict__.update(items)


class _Rows(NamedTuple):
    """A replica's real rows and their place among the global batch's real rows."""
    images: tf.Tensor  # float32 [n, H, W, C]
    labels: tf.Tensor  # int32 [n]
    offset: tf.Tensor  # int32: index of its first row among the global batch's real rows
    total: tf.Tensor  # int32: real rows of the global batch


def _moving_statistics(network) -> list:
    """The BatchNorm moving means and variances of `network` (empty without BatchNorm)."""
    return [v for v in network.non_trainable_variables
            if v.path.endswith(("moving_mean", "moving_variance"))]


class VAEACGAN(keras.Model):
    """The classifier and the (VAE-)ACGAN, trained jointly by `fit` on (x, (y, is_generated)).

    Args:
      classifier: an `MCClassifier` (the ACGAN auxiliary classifier).
      image_shape: (H, W, C).
      num_classes: number of classes.
      latent_dim: size of z.
      use_encoder: True for VAE-ACGAN, False for the ACGAN of BDA (x' = g(z, y)).
      generation: "persisted" (x' stored in the labeled set) or "online" (C also trains on
        g(e(x), y) and g(z, y) every minibatch).
      gen_loss_weight: lambda, the weight of C's loss on generated samples.
      seed: seed of the latent noise (each replica keeps its rows of a global draw).
      width_multiplier: scales the widths of e, g and d (1.0 = the reference architecture).
      kl_weight: beta, the weight of the KL / (H*W*C) term in the encoder loss (1.0 = the
        authors' code; below 1 trades a less regular latent space for sharper reconstructions).
      reconstruction_phase: start in the reconstruction-only phase (see `set_phase`); needs
        `use_encoder=True`.
      update_every: e, g and d take a step on every `update_every`-th joint step (the
        classifier's step count: steps 0, k, 2k, ...) and C on every one (1: every step, as the
        authors' code; ours: a cheaper joint phase, generation="persisted" only).
    """

    def __init__(self, classifier, image_shape, num_classes: int, latent_dim: int = 100,
                 use_encoder: bool = True, generation: str = "persisted",
                 gen_loss_weight: float = 1.0, seed: int = 0, width_multiplier: float = 1.0,
                 kl_weight: float = 1.0, reconstruction_phase: bool = False,
                 update_every: int = 1, **kwargs):
        super().__init__(**kwargs)
        if generation not in GENERATIONS:
            raise ValueError(f"generation={generation!r}; choose one of {GENERATIONS}")
        if not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every={update_every!r} must be an int >= 1")
        if update_every > 1 and generation != "persisted":
            raise ValueError(f"update_every={update_every} needs generation='persisted': with "
                             f"generation={generation!r} the classifier trains on g's samples "
                             "in every step")
        self.update_every = update_every
        if kl_weight < 0:
            raise ValueError(f"kl_weight={kl_weight} must be >= 0")
        self.classifier = classifier
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.use_encoder = use_encoder
        self.generation = generation
        self.gen_loss_weight = gen_loss_weight
        self.kl_weight = float(kl_weight)
        self.seed_generator = keras.random.SeedGenerator(seed)
        w = width_multiplier
        self.encoder = build_encoder(self.image_shape, latent_dim, w) if use_encoder else None
        self.generator = build_generator(self.image_shape, latent_dim, num_classes, w)
        self.discriminator = build_discriminator(self.image_shape, w)
        names = JOINT_METRICS + (ENCODER_METRICS if use_encoder else ())
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        # The reconstruction phase's optimizers of e and g (made in compile) and each phase's
        # traced train function, kept while the other phase runs.
        self._unsaved = _NotSaved(reconstruction_optimizers={}, train_functions={})
        self._reconstruction_phase = False
        self.reconstruction_phase = reconstruction_phase
        # Every sub-network is built already (the classifier by its builder, the rest are
        # functional), so this model is too.
        self.built = True

    def call(self, inputs, training=False, mc_dropout=False):
        """Classifier logits for images (what `fit` builds the model with)."""
        return self.classifier(inputs, training=training, mc_dropout=mc_dropout)

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def reconstruction_phase(self) -> bool:
        """Whether `fit` runs the reconstruction-only phase instead of the joint one."""
        return self._reconstruction_phase

    @reconstruction_phase.setter
    def reconstruction_phase(self, value: bool) -> None:
        if value and not self.use_encoder:
            raise ValueError("the reconstruction phase trains the encoder; this model has "
                             f"use_encoder={self.use_encoder}")
        # `fit` traces train_step once and Keras 3 keeps that train_function until compile()
        # or make_train_function(force=True): keep each phase's own, so that the next fit runs
        # this phase and a phase is traced once per model, not at every switch.
        functions = self._unsaved.train_functions
        functions[self._reconstruction_phase] = self.train_function
        self._reconstruction_phase = bool(value)
        self.train_function = functions.get(self._reconstruction_phase)

    def set_phase(self, phase: str) -> None:
        """Makes the next `fit` run `phase`: "joint" (the default) or "reconstruction".

        No recompile is needed (the traced train function is dropped here). Setting
        `reconstruction_phase` directly does the same.
        """
        if phase not in PHASES:
            raise ValueError(f"phase={phase!r}; choose one of {PHASES}")
        self.reconstruction_phase = phase == "reconstruction"

    def networks(self) -> dict[str, list]:
        """Trainable variables of each jointly trained network."""
        nets = {"classifier": self.classifier.trainable_variables,
                "generator": self.generator.trainable_variables,
                "discriminator": self.discriminator.trainable_variables}
        if self.use_encoder:
            nets["encoder"] = self.encoder.trainable_variables
        return nets

    def compile(self, *, c_optimizer, g_optimizer, d_optimizer, e_optimizer=None, **kwargs):
        """One optimizer per network; each is built here (required under MirroredStrategy).

        With an encoder, the reconstruction phase gets optimizers of its own for e and g, of
        the same kind and settings as theirs, at a constant learning rate: a schedule's initial
        rate (`reconstruction_optimizers`; see `reset_reconstruction_optimizers`). A learning
        rate schedule counts the joint phase's steps per epoch; the pool phase has no epochs,
        and its few hundred steps under that schedule would halve the rate every few steps.
        """
        super().compile(**kwargs)
        if self.use_encoder and e_optimizer is None:
            raise ValueError("use_encoder=True needs e_optimizer")
        self.optimizers = {"classifier": c_optimizer, "generator": g_optimizer,
                           "discriminator": d_optimizer}
        if self.use_encoder:
            self.optimizers["encoder"] = e_optimizer
        networks = self.networks()
        for name, variables in networks.items():
            self.optimizers[name].build(variables)
        reconstruction = {}
        if self.use_encoder:
            for name in ("encoder", "generator"):
                used = self.optimizers[name]
                reconstruction[name] = used.__class__.from_config(
                    _constant_rate_config(used))
                reconstruction[name].build(networks[name])
        self._unsaved = _NotSaved(reconstruction_optimizers=reconstruction, train_functions={})
        self.train_function = None

    def reconstruction_optimizers(self) -> dict:
        """The optimizers of e and g in the reconstruction phase (empty without an encoder).

        A method, not a property: Keras' weight saving walks every attribute and property of a
        model and would save a dict of optimizers it reaches (they start fresh in every pool
        phase; there is nothing to save)."""
        return self._unsaved.reconstruction_optimizers

    def reset_reconstruction_optimizers(self) -> None:
        """Restarts the reconstruction phase's optimizers: the state of new ones, the same
        settings. The pool phase calls it first, so that the joint phase's accumulated
        statistics (from adversarial and auxiliary-class gradients) do not shrink its steps
        (README, "A generator that works at CPU scale")."""
        from tf_bgadl.training import reset_optimizer  # pylint: disable=import-outside-toplevel
        for optimizer in self.reconstruction_optimizers().values():
            reset_optimizer(optimizer)

    def all_optimizers(self) -> list:
        """Every optimizer of the model, in a fixed order (joint phase, then reconstruction)."""
        return [*self.optimizers.values(), *self.reconstruction_optimizers().values()]

    def reseed(self, seed: int) -> None:
        """Restarts the latent-noise sequence from `seed`."""
        reseed_generator(self.seed_generator, seed)

    # The latent-noise state is saved with the weights (Keras saves no SeedGenerator state), so
    # a resumed run's pool phase, run on the restored model, draws the noise the uninterrupted
    # run drew. A checkpoint without it (written before) leaves the state as built.
    _LATENT_STATE = "latent_seed_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._LATENT_STATE] = keras.ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        keys = list(store.keys())
        if self._LATENT_STATE in keys:
            self.seed_generator.state.assign(np.asarray(store[self._LATENT_STATE]))
            store = {k: store[k] for k in keys if k != self._LATENT_STATE}
        super().load_own_variables(store)

    # Noise, encoding and generation.

    def _noise(self, offset, count, total):
        """Rows [offset, offset + count) of N(0, I) noise [total, latent] from the next seed."""
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        noise = tf.random.stateless_normal(tf.stack([total, self.latent_dim]), seed=seed)
        return noise[offset:offset + count]

    def sample_latent(self, batch_size):
        """z ~ N(0, I) [B, latent] for this replica's B rows of the global batch.

        Every replica draws the global batch's noise from the same seed and keeps its rows
        (offset = rows of the replicas before it): replicas get different noise, and R
        replicas see the noise of one device with the same global batch.
        """
        count = tf.cast(batch_size, tf.int32)
        counts, replica = _per_replica_counts(tf.cast(tf.reshape(count, [1]), tf.float32))
        offset = tf.cast(tf.reduce_sum(counts[:replica, 0]), tf.int32)
        return self._noise(offset, count, tf.cast(tf.reduce_sum(counts[:, 0]), tf.int32))

    def encode(self, images, training=False):
        """Reparameterised z, z_mean, z_log_var [B, latent] for images [B, H, W, C] in [0, 1]."""
        z_mean, z_log_var = self.encoder(images, training=training)
        eps = self.sample_latent(tf.shape(z_mean)[0])
        return z_mean + tf.exp(0.5 * z_log_var) * eps, z_mean, z_log_var

    def generate(self, images, labels):
        """x' for acquired (x*, y*): g(e(x*), y*) (encoder mean), or g(z, y*) without encoder.

        Args:
          images: float32 [B, H, W, C] in [0, 1].
          labels: int [B].
        Returns:
          float32 [B, H, W, C] in [0, 1].
        """
        y = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
        if self.use_encoder:
            z, _ = self.encoder(images, training=False)
        else:
            z = self.sample_latent(tf.shape(images)[0])
        return self.generator([z, y], training=False)

    # The training step: train_step -> joint or reconstruction step, each made of a generative
    # update (e, g, d; skipped on batches without real rows) and, in the joint phase, C's update.

    def train_step(self, data):
        images, targets = data
        if not isinstance(targets, (tuple, list)):  # (x, y): every row is real
            if not self.reconstruction_phase:
                raise ValueError("the joint phase trains on (x, (y, is_generated)); (x, y) "
                                 "batches are for the reconstruction phase")
            labels = tf.cast(targets, tf.int32)
            context = tf.distribute.get_replica_context()
            if context is None or context.num_replicas_in_sync == 1:
                rows = _Rows(images, labels, tf.constant(0), tf.shape(labels)[0])
                return self._report(self._reconstruction_update(*rows), rows.total > 0,
                                    ENCODER_METRICS)
            return self._reconstruction_step(images, labels, tf.ones(tf.shape(labels)))
        labels, is_generated = targets
        labels = tf.cast(labels, tf.int32)
        real = tf.cast(tf.cast(is_generated, tf.float32) < 0.5, tf.float32)
        if self.reconstruction_phase:
            return self._reconstruction_step(images, labels, real)
        return self._joint_step(images, labels, real)

    def _joint_step(self, images, labels, real):
        rows, weight_total = self._real_rows(images, labels, real)
        has_real = rows.total > 0
        update = has_real
        if self.update_every > 1:  # e, g and d step on every update_every-th joint step only
            step = self.optimizers["classifier"].iterations
            update = tf.logical_and(has_real, tf.equal(step % self.update_every, 0))
        generative = _if_global(update, self._generative_update, self._generative_skip, *rows)
        generated = {k: v for k, v in generative.items() if k != "logs"}
        logs = {**generative["logs"],
                **self._classifier_update(images, labels, real, weight_total, rows, generated)}
        return self._report(logs, has_real, tuple(self.trackers), updated=update)

    def _reconstruction_step(self, images, labels, real):
        rows, _ = self._real_rows(images, labels, real)
        has_real = rows.total > 0
        logs = _if_global(has_real, self._reconstruction_update, self._reconstruction_skip,
                          *rows)
        return self._report(logs, has_real, ENCODER_METRICS)

    def _real_rows(self, images, labels, real):
        """This replica's share of the global batch's real rows, and the global sum of C's row
        weights ("persisted": 1 per real row, lambda per stored x').

        Under several replicas the real rows of the global batch (in replica order) are split
        evenly over the replicas, so that no replica runs e, g and d on an empty batch while
        another has rows (oneDNN's CPU convolutions mishandle empty batches, and the load
        stays balanced); replica r takes rows [r N / R, (r + 1) N / R) of the N.
        """
        is_real = real > 0.5
        x, y = tf.boolean_mask(images, is_real), tf.boolean_mask(labels, is_real)
        weights = real + self.gen_loss_weight * (1.0 - real)
        counts, replica = _per_replica_counts(tf.stack([tf.reduce_sum(real),
                                                        tf.reduce_sum(weights)]))
        total = tf.cast(tf.reduce_sum(counts[:, 0]), tf.int32)
        weight_total = tf.reduce_sum(counts[:, 1])
        replicas = counts.shape[0]
        if replicas == 1:
            return _Rows(x, y, tf.constant(0), total), weight_total
        offset = tf.cast(tf.reduce_sum(counts[:replica, 0]), tf.int32)
        x_all, y_all = _gather_rows([x, y], offset, total)
        start, end = replica * total // replicas, (replica + 1) * total // replicas
        return _Rows(x_all[start:end], tf.cast(y_all[start:end], tf.int32), start,
                     total), weight_total

    def _generative_update(self, *rows):
        """One step of e, g and d on this replica's real rows; returns logs and fake/rec."""
        rows = _Rows(*rows)
        with tf.GradientTape(persistent=True) as tape:
            losses, logs, generated = self._generative_losses(rows)
        self._apply(tape, losses)
        del tape
        return {"logs": logs, **{k: tf.stop_gradient(v) for k, v in generated.items()}}

    def _generative_skip(self, *rows):
        """What `_generative_update` returns, for a global batch without real rows."""
        images = _Rows(*rows).images  # no rows on any replica
        names = ("generator_loss", "discriminator_loss")
        out = {"fake": images}
        if self.use_encoder:
            names += ENCODER_METRICS
            out["rec"] = images
        return {"logs": {n: tf.zeros((), tf.float32) for n in names}, **out}

    def _generative_losses(self, rows: _Rows):
        """Losses of g, d (and e), their logged values and the generated images fake (and rec).

        Each loss is this replica's share of the mean over the global batch's real rows.
        """
        y_onehot = tf.one_hot(rows.labels, self.num_classes)
        mean = lambda values: _share_of_mean(values, tf.cast(rows.total, tf.float32))  # noqa
        z = self._noise(rows.offset, tf.shape(rows.images)[0], rows.total)
        fake = self.generator([z, y_onehot], training=True)
        d_real = self.discriminator(rows.images, training=True)
        d_fake = self.discriminator(fake, training=True)
        c_fake = self._classify_generated(fake)
        losses = {"generator": mean(_bce(d_fake, 1.0) + _ce(rows.labels, c_fake)),
                  "discriminator": mean(_bce(d_real, 1.0) + _bce(d_fake, 0.0))}
        logs, generated = {}, {"fake": fake}
        if self.use_encoder:
            rec, rec_mse, kl = self._reconstruct(rows, y_onehot)
            rec_mse, kl = mean(rec_mse), mean(kl)
            losses["encoder"] = rec_mse + self.kl_weight * kl
            losses["generator"] += 0.75 * rec_mse
            losses["discriminator"] += mean(_bce(self.discriminator(rec, training=True), 0.0))
            logs.update(encoder_loss=losses["encoder"], reconstruction_mse=rec_mse, kl=kl)
            generated["rec"] = rec
        logs.update(generator_loss=losses["generator"], discriminator_loss=losses["discriminator"])
        return losses, logs, generated

    def _reconstruction_update(self, *rows):
        """One step of e and g on the VAE objective over this replica's real rows."""
        rows = _Rows(*rows)
        mean = lambda values: _share_of_mean(values, tf.cast(rows.total, tf.float32))  # noqa
        with tf.GradientTape(persistent=True) as tape:
            _, rec_mse, kl = self._reconstruct(rows, tf.one_hot(rows.labels, self.num_classes))
            rec_mse, kl = mean(rec_mse), mean(kl)
            losses = {"encoder": rec_mse + self.kl_weight * kl, "generator": rec_mse}
        self._apply(tape, losses, self.reconstruction_optimizers())
        del tape
        return {"encoder_loss": losses["encoder"], "reconstruction_mse": rec_mse, "kl": kl}

    def _reconstruction_skip(self, *rows):
        del rows  # a global batch without real rows
        return {name: tf.zeros((), tf.float32) for name in ENCODER_METRICS}

    def _reconstruct(self, rows: _Rows, y_onehot):
        """rec = g(e(x), y) [n, H, W, C], per-row pixel MSE [n] and KL / (H*W*C) [n]."""
        z_mean, z_log_var = self.encoder(rows.images, training=True)
        eps = self._noise(rows.offset, tf.shape(z_mean)[0], rows.total)
        rec = self.generator([z_mean + tf.exp(0.5 * z_log_var) * eps, y_onehot], training=True)
        posterior = tfp.distributions.Normal(z_mean, tf.exp(0.5 * z_log_var))
        prior = tfp.distributions.Normal(tf.zeros_like(z_mean), tf.ones_like(z_mean))
        kl = tf.reduce_sum(tfp.distributions.kl_divergence(posterior, prior), axis=-1)
        return rec, _pixel_mse(rec, rows.images), kl / float(math.prod(self.image_shape))

    def _classify_generated(self, images):
        """C's logits on generated images, computed as on a training batch (BatchNorm with the
        batch's own statistics, dropout sampled), with C's BatchNorm moving statistics
        restored afterwards: they stay those of the rows C trains on.

        (Inside a tf.function, automatic control dependencies order the snapshot, the pass's
        moving-average updates and the restore as written: they touch the same variables.)
        """
        moving = _moving_statistics(self.classifier)
        saved = [tf.identity(v.value) for v in moving]
        logits = self.classifier(images, training=True, mc_dropout=True)
        for variable, value in zip(moving, saved):
            variable.assign(value)
        return logits

    def _classifier_update(self, images, labels, real, weight_total, rows, generated):
        """One step of C on every row of the batch; returns its loss and accuracy shares."""
        with tf.GradientTape() as tape:
            logits = self.classifier(images, training=True)
            loss = self._classifier_loss(logits, labels, real, weight_total, rows, generated)
        variables = self.classifier.trainable_variables
        self.optimizers["classifier"].apply_gradients(zip(tape.gradient(loss, variables),
                                                          variables))
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        accuracy = _share_of_mean(real * correct, tf.cast(rows.total, tf.float32))
        return {"classifier_loss": loss, "accuracy": accuracy}

    def _classifier_loss(self, logits, labels, real, weight_total, rows, generated):
        """"persisted": CE weighted 1 (real rows) / lambda (stored x'), over the global weight
        sum; "online": mean CE over the real rows + lambda mean CE over each of fake and rec."""
        lam = self.gen_loss_weight
        ce = _ce(labels, logits)
        if self.generation == "persisted":
            return _share_of_mean((real + lam * (1.0 - real)) * ce, weight_total)
        total = tf.cast(rows.total, tf.float32)
        loss = _share_of_mean(real * ce, total)
        for images in generated.values():
            loss += lam * _share_of_mean(_ce(rows.labels, self._classify_generated(images)),
                                         total)
        return loss

    def _apply(self, tape, losses, optimizers=None):
        """Applies each network's gradient of its loss (summed over replicas by Keras) with its
        optimizer of `optimizers` (default: the joint phase's)."""
        optimizers = self.optimizers if optimizers is None else optimizers
        for name, loss in losses.items():
            variables = self.networks()[name]
            optimizers[name].apply_gradients(zip(tape.gradient(loss, variables), variables))

    def _report(self, logs, has_real, names, updated=None):
        """Updates the trackers with the global values (batches without real rows count for
        the classifier's loss only; steps where e, g and d did not step, `updated` False, not
        for their losses) and returns the results of `names`."""
        logs = _global_sum(logs)
        weights = {"classifier_loss": 1.0, "accuracy": tf.cast(has_real, tf.float32)}
        generative_weight = tf.cast(has_real if updated is None else updated, tf.float32)
        for name, value in logs.items():
            weight = weights.get(name, generative_weight)
            self.trackers[name].update_state(value, sample_weight=weight)
        return {name: self.trackers[name].result() for name in names}
