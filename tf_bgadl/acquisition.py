"""Acquisition functions: pure functions of MC-dropout probabilities.

Every scoring function takes `probs` of shape [N, T, C] (N samples, T MC passes, C classes; each
row a probability vector) and returns float32 scores [N], higher = more informative. They are
numerically safe (0 * log 0 = 0, never NaN for valid probabilities) and work eagerly on numpy
arrays and inside `tf.function`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf


def _as_probs(probs) -> tf.Tensor:
    probs = tf.convert_to_tensor(probs, tf.float32)
    if probs.shape.rank is not None and probs.shape.rank != 3:
        raise ValueError(f"probs must have shape [N, T, C]; got shape {probs.shape}")
    return probs


def _entropy(p: tf.Tensor) -> tf.Tensor:
    """Entropy (nats) over the last axis; xlogy makes 0 log 0 = 0 (no NaN)."""
    return -tf.reduce_sum(tf.math.xlogy(p, p), axis=-1)


def predictive_entropy(probs) -> tf.Tensor:
    """H[mean_t p_t]: total predictive uncertainty. [N, T, C] -> [N]."""
    return _entropy(tf.reduce_mean(_as_probs(probs), axis=1))


def expected_entropy(probs) -> tf.Tensor:
    """mean_t H[p_t]: the expected (aleatoric) part. [N, T, C] -> [N]."""
    return tf.reduce_mean(_entropy(_as_probs(probs)), axis=1)


def bald(probs) -> tf.Tensor:
    """BALD mutual information H[mean_t p_t] - mean_t H[p_t] (Houlsby et al. 2011). [N,T,C]->[N].

    Zero when all T passes agree; largest for confident passes that disagree. Clipped at 0
    against rounding (the exact value is never negative).
    """
    probs = _as_probs(probs)
    return tf.maximum(predictive_entropy(probs) - expected_entropy(probs), 0.0)


def max_entropy(probs) -> tf.Tensor:
    """Predictive entropy H[mean_t p_t]. [N, T, C] -> [N]."""
    return predictive_entropy(probs)


def var_ratios(probs) -> tf.Tensor:
    """Variation ratio 1 - max_c mean_t p_t (Gal et al. 2017's form). [N, T, C] -> [N]."""
    return 1.0 - tf.reduce_max(tf.reduce_mean(_as_probs(probs), axis=1), axis=-1)


def mean_std(probs) -> tf.Tensor:
    """Mean over classes of the standard deviation over T passes. [N, T, C] -> [N]."""
    return tf.reduce_mean(tf.math.reduce_std(_as_probs(probs), axis=1), axis=-1)


SCORERS: dict[str, Callable] = {
    "bald": bald,
    "max_entropy": max_entropy,
    "var_ratios": var_ratios,
    "mean_std": mean_std,
}


def get_scorer(name: str) -> Callable:
    """The deterministic scoring function `name` ([N, T, C] -> [N]); see SCORERS."""
    if name not in SCORERS:
        raise ValueError(f"acquisition={name!r} has no MC scorer; choose one of {sorted(SCORERS)} "
                         "(random acquisition is a method: --method=random or bda_partial)")
    return SCORERS[name]


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The `k` ids with the highest scores, best first; ties keep the order of `ids`.

    Args:
      ids: int [N], the ids the scores belong to.
      scores: float [N].
      k: how many to return, 1 <= k <= N.

    Raises:
      ValueError: on a NaN score (a NaN would otherwise sort to the top), on mismatched lengths,
        or on k outside [1, N].
    """
    ids, scores = np.asarray(ids), np.asarray(scores)
    if ids.shape != scores.shape or ids.ndim != 1:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} must be equal 1-D shapes")
    if not 1 <= k <= len(ids):
        raise ValueError(f"k={k} must be in [1, {len(ids)}]")
    nan = np.isnan(scores)
    if nan.any():
        raise ValueError(f"{int(nan.sum())} of {len(scores)} acquisition scores are NaN "
                         f"(ids {ids[nan][:5].tolist()}...)")
    order = np.argsort(-scores, kind="stable")
    return ids[order[:k]]
