r"""Pool images per second: BALD with T MC-dropout samples vs one deterministic forward pass.

  python bench/acquisition_throughput.py [--width_multiplier=1.0 --pool=512 --mc_samples=20]

Both are measured in the same run on the same ResNet18 and the same pool, through the same
batched tf.data + tf.function + strategy path; the last line is `bald_over_deterministic=<ratio>`
(target >= 0.9 at width 1.0 on CPU). `--naive` also times T full forward passes per batch (what
the head-only sampling avoids).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_bgadl import acquisition, inference  # noqa: E402
from tf_bgadl.models import build_classifier  # noqa: E402

_WIDTH = flags.DEFINE_float("width_multiplier", 1.0, "ResNet18 width multiplier.")
_SIZE = flags.DEFINE_integer("image_size", 32, "Image height and width.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "Image channels.")
_POOL = flags.DEFINE_integer("pool", 512, "Pool images scored per measurement.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_MC = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples T.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (the best is reported).")
_NAIVE = flags.DEFINE_bool("naive", False, "Also time T full forward passes per batch.")


def _best_rate(fn, num_images: int, repeats: int) -> float:
    fn()  # trace and warm up
    best = min(_timed(fn) for _ in range(repeats))
    return num_images / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv):
    del argv
    strategy = tf.distribute.get_strategy()
    shape = (_SIZE.value, _SIZE.value, _CHANNELS.value)
    model = build_classifier("resnet18", num_classes=10, input_shape=shape,
                             width_multiplier=_WIDTH.value, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (_POOL.value, *shape), dtype=np.uint8)
    ids = np.arange(_POOL.value)
    dataset = tf.data.Dataset.from_tensor_slices((ids, images)).batch(_BATCH.value)

    @tf.function
    def deterministic_step(batch_images):
        return tf.nn.softmax(model(inference.to_unit_float(batch_images), training=False))

    def deterministic():
        for _, batch_images in dataset:
            deterministic_step(batch_images).numpy()

    scorer = inference.make_scorer(model, acquisition_name="bald", mc_samples=_MC.value,
                                   strategy=strategy, batch_size=_BATCH.value, seed=0)

    def bald():
        scorer(ids, images)

    det_rate = _best_rate(deterministic, _POOL.value, _REPEATS.value)
    bald_rate = _best_rate(bald, _POOL.value, _REPEATS.value)
    print(f"model=resnet18 width={_WIDTH.value} input={shape} pool={_POOL.value} "
          f"batch={_BATCH.value} T={_MC.value} devices={tf.config.list_logical_devices()[0].name}")
    print(f"deterministic_images_per_s={det_rate:.1f}")
    print(f"bald_images_per_s={bald_rate:.1f}")
    if _NAIVE.value:
        @tf.function
        def naive_step(batch_images):
            x = inference.to_unit_float(batch_images)
            probs = tf.stack([tf.nn.softmax(model(x, mc_dropout=True))
                              for _ in range(_MC.value)], axis=1)
            return acquisition.bald(probs)

        def naive():
            for _, batch_images in dataset:
                naive_step(batch_images).numpy()

        naive_rate = _best_rate(naive, _POOL.value, 1)
        print(f"naive_bald_images_per_s={naive_rate:.1f}")
        print(f"naive_over_deterministic={naive_rate / det_rate:.3f}")
    print(f"bald_over_deterministic={bald_rate / det_rate:.3f}")


if __name__ == "__main__":
    app.run(main)
