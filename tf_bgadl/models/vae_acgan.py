"""VAE-ACGAN: encoder e, conditional generator/decoder g, discriminator d, and the classifier C.

Architecture as in the authors' code (PROTOCOL.md), for H, W in [8, 32] and 1 or 3 channels:
  generator g(z, y): concat(z, one-hot y) - FC 1024 - BN - ReLU - FC 128*(H/4)*(W/4) - BN - ReLU -
      deconv 64 (4x4, s2) - BN - ReLU - deconv C (4x4, s2) - sigmoid (cropped to H x W).
  discriminator d(x): conv 64 (4x4 s2) - LReLU .2 - conv 128 (4x4 s2) - BN - LReLU - FC 1024 - BN -
      LReLU - FC 1 (a logit; the loss applies the sigmoid).
  encoder e(x): the discriminator's conv stack, FC 1024, then the heads `z_mean`, `z_log_var`.
`width_multiplier` scales 64/128/1024 for CPU-sized runs. The classifier C plays the ACGAN
auxiliary classifier. BatchNorm in e, g, d is synchronised across replicas (when there are
several), so a step under MirroredStrategy equals a step on one device with the same global batch.

Losses per minibatch (all weights 1 except the 0.75 and lambda = `gen_loss_weight`); `rec` is
g(e(x), y), `fake` is g(z, y) with z ~ N(0, I):
  encoder:        MSE(rec, x) + KL(q(z|x) || N(0, I)) / (H*W*C)       (KL through tfp)
  generator:      BCE(d(fake), 1) + CE(C(fake), y) + 0.75 MSE(rec, x)
  discriminator:  BCE(d(x), 1) + BCE(d(fake), 0) + BCE(d(rec), 0)
  classifier:     CE(C(x), y) + lambda [CE(C(fake), y) + CE(C(rec), y)]  (generation="online")
                  CE on real rows + lambda CE on stored generated rows      (generation="persisted")
With `use_encoder=False` (the ACGAN of BDA) the encoder and every `rec` term are dropped.
e, g and d only ever see the real (oracle-labeled) rows of a batch, never stored x'.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_bgadl.models.layers import reseed_generator

GENERATIONS = ("persisted", "online")


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


def _masked_mean(values, mask):
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


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
      seed: seed of the latent noise (the replica id is folded in).
      width_multiplier: scales the widths of e, g and d (1.0 = the reference architecture).
    """

    def __init__(self, classifier, image_shape, num_classes: int, latent_dim: int = 100,
                 use_encoder: bool = True, generation: str = "persisted",
                 gen_loss_weight: float = 1.0, seed: int = 0, width_multiplier: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        if generation not in GENERATIONS:
            raise ValueError(f"generation={generation!r}; choose one of {GENERATIONS}")
        self.classifier = classifier
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.use_encoder = use_encoder
        self.generation = generation
        self.gen_loss_weight = gen_loss_weight
        self.seed_generator = keras.random.SeedGenerator(seed)
        w = width_multiplier
        self.encoder = build_encoder(self.image_shape, latent_dim, w) if use_encoder else None
        self.generator = build_generator(self.image_shape, latent_dim, num_classes, w)
        self.discriminator = build_discriminator(self.image_shape, w)
        names = ["classifier_loss", "generator_loss", "discriminator_loss", "accuracy"]
        if use_encoder:
            names += ["encoder_loss", "reconstruction_mse", "kl"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        # Every sub-network is built already (the classifier by its builder, the rest are
        # functional), so this model is too.
        self.built = True

    def call(self, inputs, training=False, mc_dropout=False):
        """Classifier logits for images (what `fit` builds the model with)."""
        return self.classifier(inputs, training=training, mc_dropout=mc_dropout)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def networks(self) -> dict[str, list]:
        """Trainable variables of each jointly trained network."""
        nets = {"classifier": self.classifier.trainable_variables,
                "generator": self.generator.trainable_variables,
                "discriminator": self.discriminator.trainable_variables}
        if self.use_encoder:
            nets["encoder"] = self.encoder.trainable_variables
        return nets

    def compile(self, *, c_optimizer, g_optimizer, d_optimizer, e_optimizer=None, **kwargs):
        """One optimizer per network; each is built here (required under MirroredStrategy)."""
        super().compile(**kwargs)
        if self.use_encoder and e_optimizer is None:
            raise ValueError("use_encoder=True needs e_optimizer")
        self.optimizers = {"classifier": c_optimizer, "generator": g_optimizer,
                           "discriminator": d_optimizer}
        if self.use_encoder:
            self.optimizers["encoder"] = e_optimizer
        for name, variables in self.networks().items():
            self.optimizers[name].build(variables)

    def reseed(self, seed: int) -> None:
        """Restarts the latent-noise sequence from `seed`."""
        reseed_generator(self.seed_generator, seed)

    def _replica_normal(self, batch_size, dim):
        """N(0, I) noise [B, dim] for this replica's rows of the global batch.

        Every replica draws the global batch's noise from the same seed and keeps its own slice
        (the replica id decides the slice), so replicas get different noise and a step on R
        replicas sees the same noise as a step on one device with the same global batch.
        """
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        replica_id = 0 if context is None else context.replica_id_in_sync_group
        noise = tf.random.stateless_normal((batch_size * replicas, dim), seed=seed)
        return noise[batch_size * replica_id:batch_size * (replica_id + 1)]

    def sample_latent(self, batch_size):
        """z ~ N(0, I) [B, latent], different on every replica."""
        return self._replica_normal(batch_size, self.latent_dim)

    def encode(self, images, training=False):
        """Reparameterised z, z_mean, z_log_var for images in [0, 1]."""
        z_mean, z_log_var = self.encoder(images, training=training)
        eps = self._replica_normal(tf.shape(z_mean)[0], self.latent_dim)
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

    def train_step(self, data):
        images, (labels, is_generated) = data
        labels = tf.cast(labels, tf.int32)
        real = 1.0 - tf.cast(is_generated, tf.float32)
        replicas = tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)
        lam = self.gen_loss_weight
        ce = lambda y_true, logits: keras.losses.sparse_categorical_crossentropy(  # noqa: E731
            y_true, logits, from_logits=True)
        bce = lambda logits, target: keras.losses.binary_crossentropy(  # noqa: E731
            tf.fill(tf.shape(logits), target), logits, from_logits=True)
        pixel_mse = lambda a, b: tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])  # noqa: E731

        # e, g and d see only the real rows: stored x' in their batches would shift the
        # BatchNorm statistics of the "real" batch and hand d an easy tell (measured: d's loss
        # collapses and reconstructions get worse). A batch without real rows contributes no
        # generative loss (weight 0; the full batch stands in so that shapes stay non-empty).
        is_real = real > 0.5
        has_real = tf.reduce_any(is_real)
        x_gan = tf.cond(has_real, lambda: tf.boolean_mask(images, is_real), lambda: images)
        y_gan = tf.cond(has_real, lambda: tf.boolean_mask(labels, is_real), lambda: labels)
        gan_weight = tf.cast(has_real, tf.float32)
        y_onehot = tf.one_hot(y_gan, self.num_classes)
        z = self.sample_latent(tf.shape(x_gan)[0])

        with tf.GradientTape(persistent=True) as tape:
            fake = self.generator([z, y_onehot], training=True)
            d_real = self.discriminator(x_gan, training=True)
            d_fake = self.discriminator(fake, training=True)
            c_real = self.classifier(images, training=True)
            c_fake = self.classifier(fake, training=True)
            losses = {}
            c_loss_real = ce(labels, c_real)
            if self.generation == "persisted":
                weights = real + lam * (1.0 - real)
                c_loss = tf.reduce_sum(weights * c_loss_real) / tf.reduce_sum(weights)
            else:
                c_loss = (_masked_mean(c_loss_real, real)
                          + lam * gan_weight * tf.reduce_mean(ce(y_gan, c_fake)))
            g_loss = gan_weight * tf.reduce_mean(bce(d_fake, 1.0) + ce(y_gan, c_fake))
            d_loss = gan_weight * tf.reduce_mean(bce(d_real, 1.0) + bce(d_fake, 0.0))
            if self.use_encoder:
                z_enc, z_mean, z_log_var = self.encode(x_gan, training=True)
                rec = self.generator([z_enc, y_onehot], training=True)
                rec_mse = pixel_mse(rec, x_gan)
                posterior = tfp.distributions.Normal(z_mean, tf.exp(0.5 * z_log_var))
                prior = tfp.distributions.Normal(tf.zeros_like(z_mean), tf.ones_like(z_mean))
                kl = tf.reduce_sum(tfp.distributions.kl_divergence(posterior, prior), axis=-1)
                kl = kl / float(math.prod(self.image_shape))
                e_loss = gan_weight * tf.reduce_mean(rec_mse + kl)
                g_loss += 0.75 * gan_weight * tf.reduce_mean(rec_mse)
                d_loss += gan_weight * tf.reduce_mean(
                    bce(self.discriminator(rec, training=True), 0.0))
                if self.generation == "online":
                    c_loss += lam * gan_weight * tf.reduce_mean(
                        ce(y_gan, self.classifier(rec, training=True)))
                losses["encoder"] = e_loss
            losses.update(classifier=c_loss, generator=g_loss, discriminator=d_loss)
            # Plain (non-Keras-loss) functions: divide by the replica count, since gradients
            # are summed across replicas.
            scaled = {name: loss / replicas for name, loss in losses.items()}

        for name, variables in self.networks().items():
            grads = tape.gradient(scaled[name], variables)
            self.optimizers[name].apply_gradients(zip(grads, variables))
        del tape

        accuracy = _masked_mean(tf.cast(tf.equal(tf.argmax(c_real, -1, output_type=tf.int32),
                                                 labels), tf.float32), real)
        values = {"classifier_loss": c_loss, "generator_loss": g_loss,
                  "discriminator_loss": d_loss, "accuracy": accuracy}
        if self.use_encoder:
            values.update(encoder_loss=losses["encoder"],
                          reconstruction_mse=gan_weight * tf.reduce_mean(rec_mse),
                          kl=gan_weight * tf.reduce_mean(kl))
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}
