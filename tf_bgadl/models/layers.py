"""Layers with their own MC-dropout switch."""

from __future__ import annotations

import keras


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

    def call(self, inputs, training=False, mc_dropout=False):
        if self.rate > 0 and (training or mc_dropout):
            return keras.random.dropout(inputs, self.rate, seed=self.seed_generator)
        return inputs

    def reseed(self, seed: int) -> None:
        """Restarts the mask sequence from `seed` (reproducible scoring, whatever ran before)."""
        state = self.seed_generator.state
        state.assign(keras.ops.convert_to_tensor([seed, 0], dtype=state.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
