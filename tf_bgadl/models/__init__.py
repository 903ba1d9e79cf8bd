"""Classifiers with MC dropout, built from explicit keyword arguments."""

from __future__ import annotations

from tf_bgadl.models.classifier import MCClassifier
from tf_bgadl.models.cnn import GalCNN
from tf_bgadl.models.layers import MCDropout
from tf_bgadl.models.resnet import ResNet18

__all__ = ["MCClassifier", "GalCNN", "MCDropout", "ResNet18", "build_classifier"]


def build_classifier(name: str, *, num_classes: int, input_shape: tuple[int, int, int],
                     width_multiplier: float = 1.0, dropout_rate: float = 0.5,
                     seed: int | None = None) -> MCClassifier:
    """Builds (and calls once, so weights exist) the classifier `name`.

    Args:
      name: "resnet18", "resnet18pa" (pre-activation) or "cnn" (Gal et al. 2017).
      num_classes: number of output classes C.
      input_shape: (H, W, C) with 8 <= H, W <= 32 and 1 or 3 channels.
      width_multiplier: scales every layer's width.
      dropout_rate: MC-dropout rate before the classifier head.
      seed: seed of the dropout masks.
    """
    h, w, c = input_shape
    if not (8 <= h <= 32 and 8 <= w <= 32 and c in (1, 3)):
        raise ValueError(f"input_shape={input_shape} is not supported: height and width must be "
                         "in [8, 32] and channels 1 or 3")
    kwargs = dict(num_classes=num_classes, width_multiplier=width_multiplier,
                  dropout_rate=dropout_rate, seed=seed)
    if name == "resnet18":
        model = ResNet18(preactivation=False, **kwargs)
    elif name == "resnet18pa":
        model = ResNet18(preactivation=True, **kwargs)
    elif name == "cnn":
        model = GalCNN(**kwargs)
    else:
        raise ValueError(f"model={name!r} is not supported; choose one of resnet18, resnet18pa, cnn")
    model.build_for(input_shape)
    return model
