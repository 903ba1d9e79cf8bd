"""Layers with their own MC-dropout switch."""

from __future__ import annotations

import keras
import tensorflow as tf


def reseed_generator(generator: keras.random.SeedGenerator, seed: int) -> None:
    """Restarts a Keras SeedGenerator's sequence from `seed`."""
    generator.state.assign(keras.ops.convert_to_tensor([seed, 0], dtype=generator.state.dtype))


@keras.saving.register_keras_serializable(package="tf_bgadl")
class MCDropout(keras.layers.Layer):
    """Dropout that samples when training *or* when MC scoring asks for it.

    `mc_dropout=True` samples a mask independently of Keras' `training` flag, so MC-dropout
    scoring can run with `training=False` (BatchNorm in inference mode, moving statistics
    untouched). With both off it is the identity (deterministic evaluation).
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate={rate} must be in [0, 1)")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False, mc_dropout=False, seed=None, mask_groups=None):
        """Drops units when `training` or `mc_dropout`.

        Args:
          inputs: any shape [G*B, ...].
          training: Keras' training flag.
          mc_dropout: sample a mask although not training (MC-dropout scoring).
          seed: optional int32 [2]: a stateless mask that depends only on this seed (and the
            input shape) instead of the layer's seed generator; used by seeded scoring.
          mask_groups: optional G (needs `seed`): the leading axis holds G blocks of B rows and
            every row of block g gets the same mask, drawn with shape [G, 1, ...]: block g's
            mask depends only on (seed, g, the feature shape), not on B, on a row's position
            or on the other rows. MC scoring for BatchBALD uses it so that MC sample t is one
            model (one mask) for every pool image in every batch.
        """
        if self.rate > 0 and (training or mc_dropout):
            if mask_groups is not None:
                if seed is None:
                    raise ValueError(f"mask_groups={mask_groups} needs a stateless seed: shared "
                                     "masks must not depend on what ran before")
                return self._shared_mask_dropout(inputs, seed, mask_groups)
            if seed is not None:
                keep = tf.random.stateless_uniform(tf.shape(inputs), seed=seed) >= self.rate
                return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))
            return keras.random.dropout(inputs, self.rate, seed=self.seed_generator)
        return inputs

    def _shared_mask_dropout(self, inputs, seed, groups: int):
        """Dropout with one mask per block of rows (see `call`): [G*B, ...] -> [G*B, ...]."""
        shape = tf.shape(inputs)
        features = shape[1:]
        blocks = tf.reshape(inputs, tf.concat([[groups, -1], features], 0))  # [G, B, ...]
        keep = tf.random.stateless_uniform(tf.concat([[groups, 1], features], 0),
                                           seed=seed) >= self.rate              # [G, 1, ...]
        dropped = tf.where(keep, blocks / (1.0 - self.rate), tf.zeros_like(blocks))
        return tf.reshape(dropped, shape)

    def reseed(self, seed: int) -> None:
        """Restarts the mask sequence from `seed` (reproducible scoring, whatever ran before)."""
        reseed_generator(self.seed_generator, seed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
