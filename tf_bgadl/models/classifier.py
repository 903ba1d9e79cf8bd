"""The interface shared by every classifier: a deterministic trunk and an MC-dropout head."""

from __future__ import annotations

import keras
import tensorflow as tf


class MCClassifier(keras.Model):
    """A classifier `head(features(x))` whose dropout layers all sit in `head`.

    Subclasses implement `features` (deterministic given `training`) and `head` (holds every
    MC-dropout layer). `call(x, training, mc_dropout)` returns logits [B, C].
    """

    def features(self, x, training=False):
        raise NotImplementedError

    def head(self, h, training=False, mc_dropout=False, seed=None, mask_groups=None):
        """Logits from features; `seed` (int32 [2]) makes the dropout masks stateless, and
        `mask_groups` G (with `seed`) gives every row of each of the G equal blocks of `h`'s
        leading axis one shared mask per dropout layer (`MCDropout.call`)."""
        raise NotImplementedError

    @staticmethod
    def layer_seed(seed, index: int):
        """A distinct stateless seed for the `index`-th dropout layer (None stays None)."""
        return None if seed is None else tf.cast(seed, tf.int32) + tf.constant([0, index])

    @property
    def mc_dropout_layers(self) -> list:
        """Every `MCDropout` layer of the head."""
        raise NotImplementedError

    def reseed_mc_dropout(self, seed: int) -> None:
        """Restarts every MC-dropout layer's mask sequence from `seed` (+ the layer's index)."""
        for index, layer in enumerate(self.mc_dropout_layers):
            layer.reseed(seed + index)

    def call(self, inputs, training=False, mc_dropout=False):
        return self.head(self.features(inputs, training=training), training=training,
                         mc_dropout=mc_dropout)

    def build_for(self, input_shape: tuple[int, int, int]) -> None:
        """Creates the weights by calling the model once on zeros of `input_shape`."""
        self(tf.zeros((1, *input_shape), tf.float32))

    def mc_probabilities(self, x, num_samples: int, seed=None, shared_masks: bool = False):
        """Softmax outputs of `num_samples` MC-dropout passes.

        The trunk runs once (deterministic, BatchNorm in inference mode); only the head is
        sampled `num_samples` times, which gives the same distribution as `num_samples` full
        passes because no dropout sits in the trunk.

        Args:
          x: float32 [B, H, W, C] in [0, 1].
          num_samples: T.
          seed: optional int32 [2]; when given the masks depend only on it (reproducible).
          shared_masks: pass t uses one mask per dropout layer for every row of `x` (one
            model omega_t for the whole batch), drawn from `seed` and t alone, so an image
            gets the same T outputs in any batch at any position: the joint samples that
            BatchBALD needs. Requires `seed`. Off: every row draws its own masks.

        Returns:
          float32 [B, T, num_classes].
        """
        if shared_masks and seed is None:
            raise ValueError("shared_masks=True needs a seed (int32 [2]): the T shared masks "
                             "must be the same for every batch of a pool")
        h = self.features(x, training=False)
        batch = tf.shape(h)[0]
        tiled = tf.tile(h, tf.concat([[num_samples], tf.ones(tf.rank(h) - 1, tf.int32)], 0))
        logits = self.head(tiled, training=False, mc_dropout=True, seed=seed,  # [T*B, C]
                           mask_groups=num_samples if shared_masks else None)
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        probs = tf.reshape(probs, [num_samples, batch, -1])
        return tf.transpose(probs, [1, 0, 2])

    def probabilities(self, x):
        """Deterministic softmax outputs [B, C] (dropout off, BatchNorm in inference mode)."""
        return tf.nn.softmax(tf.cast(self(x, training=False), tf.float32), axis=-1)
