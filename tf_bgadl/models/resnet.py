"""CIFAR-style ResNet18 and pre-activation ResNet18 (He et al. 2016a, 2016b) with MC dropout.

3x3 stem, no max-pool, stages of 64-128-256-512 channels (times `width_multiplier`) with 2 blocks
each, global average pooling, then the head: MC dropout -> dense. Dropout placement (only before
the final dense layer) is our choice: the paper does not state it.
"""

from __future__ import annotations

import keras

from tf_bgadl.models.classifier import MCClassifier
from tf_bgadl.models.layers import MCDropout

_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)
_BLOCKS_PER_STAGE = 2


def _conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               kernel_initializer="he_normal", name=name)


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(keras.layers.Layer):
    """Post-activation residual block: conv-BN-ReLU-conv-BN (+ shortcut), ReLU."""

    def __init__(self, filters: int, stride: int, projection: bool, **kwargs):
        super().__init__(**kwargs)
        self.conv1, self.bn1 = _conv(filters, 3, stride, "conv1"), _bn("bn1")
        self.conv2, self.bn2 = _conv(filters, 3, 1, "conv2"), _bn("bn2")
        self.shortcut = ([_conv(filters, 1, stride, "shortcut_conv"), _bn("shortcut_bn")]
                         if projection else [])

    def call(self, x, training=False):
        out = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        out = self.bn2(self.conv2(out), training=training)
        shortcut = x
        if self.shortcut:
            shortcut = self.shortcut[1](self.shortcut[0](x), training=training)
        return keras.ops.relu(out + shortcut)


class PreActBlock(keras.layers.Layer):
    """Pre-activation residual block: BN-ReLU-conv-BN-ReLU-conv (+ shortcut)."""

    def __init__(self, filters: int, stride: int, projection: bool, **kwargs):
        super().__init__(**kwargs)
        self.bn1, self.conv1 = _bn("bn1"), _conv(filters, 3, stride, "conv1")
        self.bn2, self.conv2 = _bn("bn2"), _conv(filters, 3, 1, "conv2")
        self.shortcut = _conv(filters, 1, stride, "shortcut_conv") if projection else None

    def call(self, x, training=False):
        pre = keras.ops.relu(self.bn1(x, training=training))
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(keras.ops.relu(self.bn2(out, training=training)))
        return out + shortcut


@keras.saving.register_keras_serializable(package="tf_bgadl")
class ResNet18(MCClassifier):
    """ResNet18 (`preactivation=False`) or ResNet18pa (`preactivation=True`) with MC dropout.

    Args:
      num_classes: C.
      width_multiplier: scales every stage's width (1.0 = 64-128-256-512).
      dropout_rate: MC-dropout rate before the final dense layer.
      preactivation: pre-activation blocks (He et al. 2016b) with a final BN-ReLU.
      seed: seed of the dropout masks.
    """

    def __init__(self, num_classes: int, width_multiplier: float = 1.0, dropout_rate: float = 0.5,
                 preactivation: bool = False, seed: int | None = None, **kwargs):
        kwargs.setdefault("name", "resnet18pa" if preactivation else "resnet18")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.width_multiplier = width_multiplier
        self.dropout_rate = dropout_rate
        self.preactivation = preactivation
        self.seed = seed
        widths = [max(1, int(round(w * width_multiplier))) for w in _STAGE_WIDTHS]
        self.stem_conv = _conv(widths[0], 3, 1, "stem_conv")
        self.stem_bn = None if preactivation else _bn("stem_bn")
        block_cls = PreActBlock if preactivation else BasicBlock
        self.blocks = []
        in_width = widths[0]
        for stage, (width, stride) in enumerate(zip(widths, _STAGE_STRIDES)):
            for b in range(_BLOCKS_PER_STAGE):
                s = stride if b == 0 else 1
                self.blocks.append(block_cls(width, s, projection=(s != 1 or in_width != width),
                                             name=f"stage{stage + 1}_block{b + 1}"))
                in_width = width
        self.final_bn = _bn("final_bn") if preactivation else None
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.dropout = MCDropout(dropout_rate, seed=seed, name="mc_dropout")
        self.classifier = keras.layers.Dense(num_classes, name="logits")

    @property
    def mc_dropout_layers(self):
        return [self.dropout]

    def features(self, x, training=False):
        h = self.stem_conv(x)
        if self.stem_bn is not None:
            h = keras.ops.relu(self.stem_bn(h, training=training))
        for block in self.blocks:
            h = block(h, training=training)
        if self.final_bn is not None:
            h = keras.ops.relu(self.final_bn(h, training=training))
        return self.pool(h)

    def head(self, h, training=False, mc_dropout=False, seed=None, mask_groups=None):
        return self.classifier(self.dropout(h, training=training, mc_dropout=mc_dropout,
                                            seed=self.layer_seed(seed, 0),
                                            mask_groups=mask_groups))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "width_multiplier": self.width_multiplier, "dropout_rate": self.dropout_rate,
                "preactivation": self.preactivation, "seed": self.seed}
