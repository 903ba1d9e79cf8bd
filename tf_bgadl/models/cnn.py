"""The small MNIST CNN of Gal et al. (2017), a fast baseline.

conv32(4x4)-ReLU-conv32(4x4)-ReLU-maxpool(2)-dropout-dense128-ReLU-dropout-dense. The first
dropout uses half of `dropout_rate` (0.25 for the default 0.5, as in Gal et al.'s code).
"""

from __future__ import annotations

import keras

from tf_bgadl.models.classifier import MCClassifier
from tf_bgadl.models.layers import MCDropout


@keras.saving.register_keras_serializable(package="tf_bgadl")
class GalCNN(MCClassifier):
    """Gal et al. 2017's Bayesian CNN; every dropout layer sits in the MC head."""

    def __init__(self, num_classes: int, width_multiplier: float = 1.0, dropout_rate: float = 0.5,
                 seed: int | None = None, **kwargs):
        kwargs.setdefault("name", "cnn")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.width_multiplier = width_multiplier
        self.dropout_rate = dropout_rate
        self.seed = seed
        filters = max(1, int(round(32 * width_multiplier)))
        units = max(1, int(round(128 * width_multiplier)))
        self.conv1 = keras.layers.Conv2D(filters, 4, activation="relu", name="conv1")
        self.conv2 = keras.layers.Conv2D(filters, 4, activation="relu", name="conv2")
        self.pool = keras.layers.MaxPooling2D(2, name="pool")
        self.dropout1 = MCDropout(dropout_rate / 2, seed=seed, name="mc_dropout1")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense = keras.layers.Dense(units, activation="relu", name="dense")
        self.dropout2 = MCDropout(dropout_rate, seed=None if seed is None else seed + 1,
                                  name="mc_dropout2")
        self.classifier = keras.layers.Dense(num_classes, name="logits")

    @property
    def mc_dropout_layers(self):
        return [self.dropout1, self.dropout2]

    def features(self, x, training=False):
        return self.pool(self.conv2(self.conv1(x)))

    def head(self, h, training=False, mc_dropout=False, seed=None, mask_groups=None):
        # The first dropout acts on the pooled conv features [B, H, W, C]: a shared mask is
        # [1, H, W, C] per group.
        h = self.dropout1(h, training=training, mc_dropout=mc_dropout,
                          seed=self.layer_seed(seed, 0), mask_groups=mask_groups)
        h = self.dense(self.flatten(h))
        h = self.dropout2(h, training=training, mc_dropout=mc_dropout,
                          seed=self.layer_seed(seed, 1), mask_groups=mask_groups)
        return self.classifier(h)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "width_multiplier": self.width_multiplier, "dropout_rate": self.dropout_rate,
                "seed": self.seed}
