r"""Batch-aware acquisition: the time to pick K of a pool subset, beside the time to score it.

  python bench/batch_acquisition.py [--pool=2000 --mc_samples=20 --train_labels=100]

One run, one machine: the project's CNN (Gal et al.) on 28x28x1 mnist5k digits (offline; random
images when --data_dir has no mnist5k and it cannot be prepared), briefly trained on
--train_labels digits so that the MC-dropout samples disagree as a trained model's do. It times

  * scoring: BALD of the pool subset through `inference.make_scorer` (T passes of the MC head,
    per-image masks), and the joint MC samples [N, T, C] through
    `inference.make_joint_probabilities` (T masks shared by the pool), each the best of
    --repeats;
  * selection of 10 and of 100 from the joint samples: BALD top-K, BatchBALD (exact while
    10^n <= --batchbald_samples, then sampled) and power_bald (temperature 1), each from the
    [N, T, C] probabilities (BALD computed inside the timed part).

The last line is `batchbald_over_bald_scoring=<ratio>`: BatchBALD's time to pick 10 over the time
`make_scorer` takes to score the same pool subset (target <= 1.0).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from tf_bgadl import acquisition, data, inference, training  # noqa: E402
from tf_bgadl.config import TrainConfig  # noqa: E402
from tf_bgadl.models import build_classifier  # noqa: E402

_POOL = flags.DEFINE_integer("pool", 2000, "Pool subset size N.")
_MC = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples T.")
_BATCH = flags.DEFINE_integer("score_batch_size", 500, "Scoring batch size.")
_TRAIN = flags.DEFINE_integer("train_labels", 100, "Digits the CNN is trained on first (0: "
                              "untrained).")
_SAMPLES = flags.DEFINE_integer("batchbald_samples", 10_000, "BatchBALD's configurations.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats of scoring (the best counts).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data dir ('' = tfds' default).")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _best(fn, repeats: int) -> float:
    fn()  # trace and warm up
    return min(_timed(fn)[0] for _ in range(repeats))


def _digits(num: int) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        dataset = data.load_dataset("mnist5k", _DATA_DIR.value)
        return dataset.x_train, dataset.y_train, "mnist5k"
    except Exception as e:  # pylint: disable=broad-except
        logging.warning("mnist5k unavailable (%s); timing on random images", e)
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (num, 28, 28, 1), dtype=np.uint8),
                rng.integers(0, 10, num), "random")


def main(argv):
    del argv
    n, t = _POOL.value, _MC.value
    images, labels, source = _digits(n + _TRAIN.value)
    model = build_classifier("cnn", num_classes=10, input_shape=(28, 28, 1), seed=0)
    if _TRAIN.value:
        config = TrainConfig(epochs=30, batch_size=50, optimizer="adam", learning_rate=1e-3,
                             weight_decay_numerator=0.0, lr_halving_epochs=0)
        training.compile_classifier(model, training.make_optimizer(config, _TRAIN.value))
        training.fit_classifier(model, images[n:n + _TRAIN.value], labels[n:n + _TRAIN.value],
                                config, seed=0)
    ids, pool = np.arange(n), images[:n]
    scorer = inference.make_scorer(model, acquisition_name="bald", mc_samples=t,
                                   batch_size=_BATCH.value, seed=0)
    joint = inference.make_joint_probabilities(model, mc_samples=t, seed=0,
                                               batch_size=_BATCH.value)
    scoring = _best(lambda: scorer(ids, pool), _REPEATS.value)
    joint_scoring = _best(lambda: joint(ids, pool), _REPEATS.value)
    probs = joint(ids, pool)
    print(f"model=cnn input=(28, 28, 1) pool={n} T={t} C=10 data={source} "
          f"trained_on={_TRAIN.value} batchbald_samples={_SAMPLES.value} "
          f"threads={tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}")
    print(f"scoring_bald_s={scoring:.3f}  (make_scorer, per-image masks)")
    print(f"scoring_joint_s={joint_scoring:.3f}  (make_joint_probabilities, shared masks)")

    def bald_top_k(k):
        return acquisition.top_k(ids, acquisition.bald(probs).numpy(), k)

    def power_bald(k):
        return acquisition.stochastic_top_k(ids, acquisition.bald(probs).numpy(), k,
                                            mode="power", temperature=1.0,
                                            rng=np.random.default_rng(0))

    def batchbald(k):
        return acquisition.batchbald(probs, k, rng=np.random.default_rng(0),
                                     num_samples=_SAMPLES.value)

    acquisition.batchbald(probs, 2, rng=None)  # trace the chunk kernel once
    times = {}
    for k in (10, 100):
        times[("bald_topk", k)], _ = _timed(lambda: bald_top_k(k))
        times[("power_bald", k)], _ = _timed(lambda: power_bald(k))
        times[("batchbald", k)], selection = _timed(lambda: batchbald(k))
        top = bald_top_k(k)
        print(f"pick {k:3d}: bald_topk_s={times[('bald_topk', k)]:.4f} "
              f"power_bald_s={times[('power_bald', k)]:.4f} "
              f"batchbald_s={times[('batchbald', k)]:.3f} "
              f"(exact steps {int(selection.exact.sum())}/{k}; "
              f"joint MI: batchbald's batch {_joint_mi(probs[selection.indices]):.3f} nats, "
              f"bald top-k's {_joint_mi(probs[top]):.3f}; at most log T = {np.log(t):.3f})")
    print(f"batchbald_100_over_bald_scoring={times[('batchbald', 100)] / scoring:.3f}")
    print(f"batchbald_over_bald_scoring={times[('batchbald', 10)] / scoring:.3f}")


def _joint_mi(probs) -> float:
    """The batch's joint MI, both batches by the same estimator (100,000 configurations)."""
    return acquisition.joint_mutual_information(probs, rng=np.random.default_rng(1),
                                                num_samples=100_000)


if __name__ == "__main__":
    app.run(main)
