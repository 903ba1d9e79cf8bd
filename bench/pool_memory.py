r"""Peak memory of scoring a pool: it grows with the batch, not with the pool.

  python bench/pool_memory.py [--pool=50000 --model=resnet18 --width=0.25 --batch_size=500]

One run, one machine, two fresh processes (so that one's allocations cannot hide in the other's):

  * batched: `inference.make_scorer` (BALD, T=20) as the library does it: the pool is read
    batch by batch from the caller's array;
  * copy (the behaviour before issue 13): the same scorer, but its dataset is
    `tf.data.Dataset.from_tensor_slices((ids, images)).batch(batch_size)`, which puts the whole
    pool into the input pipeline.

Each process builds the classifier for 32x32x3 images, allocates a random uint8 pool, scores one
batch (tracing, allocator warm-up), then measures its resident memory while it scores the whole
pool: the peak (VmHWM after resetting it through /proc/self/clear_refs; where that cannot be
reset, VmRSS sampled every 2 ms) minus the resident memory just before. The pool's own bytes are
allocated before the measurement starts, so a scorer that does not copy the pool stays well under
them. The last line is `scoring_peak_over_pool_bytes=<ratio>` of the batched scorer (target: well
below 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_POOL = flags.DEFINE_integer("pool", 50_000, "Pool size N (32x32x3 uint8 images).")
_MODEL = flags.DEFINE_enum("model", "resnet18", ["resnet18", "resnet18pa", "cnn"], "Classifier.")
_WIDTH = flags.DEFINE_float("width", 0.25, "Width multiplier of the classifier.")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Scoring batch size.")
_MC = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples T.")
_MODE = flags.DEFINE_enum("mode", "both", ["both", "batched", "copy"],
                          "both: run each of the others in a fresh process and compare.")

MIB = 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class PeakRss:
    """Peak resident bytes of this process while the `with` block runs."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current VmRSS
            self._sampled = None
        except OSError:
            self._sampled, self._stop = [], threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self.before = _status_kib("VmRSS") * 1024
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._sampled.append(_status_kib("VmRSS"))
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self._sampled is None:
            self.peak, self.how = _status_kib("VmHWM") * 1024, "VmHWM"
        else:
            self._stop.set()
            self._thread.join()
            self.peak, self.how = max(self._sampled) * 1024, f"{len(self._sampled)} samples"
        return False


def _copy_dataset(ids, images, batch_size, **unused):
    """The input pipeline before issue 13: the whole pool in one `from_tensor_slices`."""
    import tensorflow as tf
    return tf.data.Dataset.from_tensor_slices((ids, images)).batch(batch_size)


def measure(mode: str) -> None:
    import tensorflow as tf

    from tf_bgadl import inference
    from tf_bgadl.models import build_classifier

    if mode == "copy":
        if _POOL.value % _BATCH.value:
            raise ValueError("--mode=copy needs --pool divisible by --batch_size (no padding)")
        inference._pool_dataset = _copy_dataset
    model = build_classifier(_MODEL.value, num_classes=10, input_shape=(32, 32, 3),
                             width_multiplier=_WIDTH.value, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (_POOL.value, 32, 32, 3), np.uint8)
    ids = np.arange(_POOL.value)
    score = inference.make_scorer(model, acquisition_name="bald", mc_samples=_MC.value,
                                  batch_size=_BATCH.value, seed=0)
    score(ids[:_BATCH.value], images[:_BATCH.value])  # trace, warm up the allocator
    start = time.perf_counter()
    with PeakRss() as rss:
        scores = score(ids, images)
    seconds = time.perf_counter() - start
    assert scores.shape == (_POOL.value,) and np.all(np.isfinite(scores))
    increase = rss.peak - rss.before
    print(f"{mode}: tf {tf.__version__}, {_MODEL.value} x{_WIDTH.value}, T={_MC.value}, "
          f"batch {_BATCH.value}: scored {_POOL.value} images in {seconds:.1f}s "
          f"({_POOL.value / seconds:.0f} images/s)")
    print(f"{mode}: pool_bytes={images.nbytes} ({images.nbytes / MIB:.1f} MiB), "
          f"rss_before={rss.before / MIB:.1f} MiB, rss_peak={rss.peak / MIB:.1f} MiB "
          f"({rss.how}), peak_increase={increase / MIB:.1f} MiB")
    print(f"{mode}: peak_over_pool_bytes={increase / images.nbytes:.3f}")


def main(argv):
    del argv
    if _MODE.value != "both":
        measure(_MODE.value)
        return
    ratios = {}
    for mode in ("copy", "batched"):
        flags_ = [f"--{name}={flags.FLAGS[name].value}"
                  for name in ("pool", "model", "width", "batch_size", "mc_samples")]
        proc = subprocess.run([sys.executable, __file__, f"--mode={mode}", *flags_],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"--mode={mode} failed:\n{proc.stderr[-3000:]}")
        lines = [line for line in proc.stdout.splitlines() if line.startswith(mode + ":")]
        print("\n".join(lines))
        ratios[mode] = float(lines[-1].rsplit("=", 1)[1])
    print(f"copy_over_batched_peak={ratios['copy'] / max(ratios['batched'], 1e-9):.1f}")
    print(f"scoring_peak_over_pool_bytes={ratios['batched']:.3f}")


if __name__ == "__main__":
    app.run(main)
