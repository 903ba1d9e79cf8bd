"""Acquisition functions: pure functions of MC-dropout probabilities.

Every scoring function takes `probs` of shape [N, T, C] (N samples, T MC passes, C classes; each
row a probability vector) and returns float32 scores [N], higher = more informative. They are
numerically safe (0 * log 0 = 0, never NaN for valid probabilities) and work eagerly on numpy
arrays and inside `tf.function`.

Selection of a batch of K from the scores: `top_k` (deterministic), and the batch-aware
selections `batchbald` (greedy joint mutual information from joint MC samples) and
`stochastic_top_k` (sampling K without replacement from a distribution of the scores); see
docs/acquisition.md.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

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


# Stochastic batch acquisition (Kirsch et al. 2023): `--acquisition` -> (mode, per-image score).
STOCHASTIC = {"power_bald": ("power", "bald"), "softmax_bald": ("softmax", "bald"),
              "softrank_bald": ("softrank", "bald")}
STOCHASTIC_MODES = ("power", "softmax", "softrank")
# Batch-aware acquisitions -> the per-image score each starts from (and reports).
BATCH_AWARE = {"batchbald": "bald", **{name: score for name, (_, score) in STOCHASTIC.items()}}


def get_scorer(name: str) -> Callable:
    """The deterministic scoring function `name` ([N, T, C] -> [N]); see SCORERS.

    A batch-aware acquisition (BATCH_AWARE) gives the per-image score it starts from: BALD for
    `batchbald` (BatchBALD of a batch of one) and for the stochastic `*_bald`.
    """
    name = BATCH_AWARE.get(name, name)
    if name not in SCORERS:
        raise ValueError(f"acquisition={name!r} has no MC scorer; choose one of "
                         f"{sorted(SCORERS) + sorted(BATCH_AWARE)} (random acquisition is a "
                         "method: --method=random or bda_partial)")
    return SCORERS[name]


def _check_ids_scores(ids, scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids, scores = np.asarray(ids), np.asarray(scores, np.float64)
    if ids.shape != scores.shape or ids.ndim != 1:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} must be equal 1-D shapes")
    if not 1 <= k <= len(ids):
        raise ValueError(f"k={k} must be in [1, {len(ids)}]")
    nan = np.isnan(scores)
    if nan.any():
        raise ValueError(f"{int(nan.sum())} of {len(scores)} acquisition scores are NaN "
                         f"(ids {ids[nan][:5].tolist()}...)")
    return ids, scores


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
    ids, scores = _check_ids_scores(ids, scores, k)
    order = np.argsort(-scores, kind="stable")
    return ids[order[:k]]


# -------------------------------------------------------------------------------------------------
# Batch-aware selection.


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng={rng!r} must be a numpy Generator (np.random.default_rng(seed)): "
                        "batch acquisition draws its randomness from the generator passed in")


def stochastic_top_k(ids, scores, k: int, *, mode: str, temperature: float,
                     rng: np.random.Generator) -> np.ndarray:
    """K ids drawn without replacement with probabilities from their scores (Kirsch et al. 2023).

    Stochastic batch acquisition ("Stochastic Batch Acquisition: A Simple Baseline for Deep
    Active Learning", TMLR 2023) with beta = 1 / `temperature`:

      softmax:  p_i ∝ exp(s_i / temperature)
      power:    p_i ∝ s_i ** (1 / temperature)          (scores must be >= 0, as BALD is)
      softrank: p_i ∝ r_i ** (-1 / temperature)         (r_i = 1 for the highest score)

    drawn by Gumbel-top-k: the K largest of log p_i + g_i with g_i ~ Gumbel(0, 1) i.i.d. are K
    draws without replacement, each with probability ∝ p among the ids not yet drawn (Kool et
    al. 2019). A score of 0 under `power` gets the smallest positive weight (drawn after every
    positive score). Ties in `softrank` are ranked in the order of `ids`.

    Args:
      ids: int [N], the ids the scores belong to.
      scores: float [N], higher = more informative.
      k: how many to draw, 1 <= k <= N.
      mode: "power", "softmax" or "softrank".
      temperature: >= 0. 0 is exactly `top_k` (the limit as the temperature goes to 0);
        larger temperatures flatten the distribution towards uniform (inf: uniform).
      rng: the generator the Gumbel noise comes from.

    Returns:
      The `k` drawn ids [k], in the order drawn (the first is the highest key). Never repeats
      an id position.

    Raises:
      ValueError: on an unknown mode, a negative or NaN temperature, NaN scores, negative
        scores under `power`, mismatched lengths, or k outside [1, N].
    """
    if mode not in STOCHASTIC_MODES:
        raise ValueError(f"mode={mode!r} is not a stochastic acquisition; choose one of "
                         f"{', '.join(STOCHASTIC_MODES)}")
    if not temperature >= 0:  # also NaN
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0: exactly the top k)")
    ids, scores = _check_ids_scores(ids, scores, k)
    _check_rng(rng)
    if temperature == 0:
        return top_k(ids, scores, k)
    if mode == "softmax":
        log_weights = scores
    elif mode == "power":
        if scores.min() < 0:
            raise ValueError(f"power acquisition needs scores >= 0; the smallest is "
                             f"{scores.min():.3g} (id {ids[np.argmin(scores)]})")
        log_weights = np.log(np.maximum(scores, np.finfo(np.float64).tiny))
    else:
        ranks = np.empty(len(scores), np.float64)
        ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
        log_weights = -np.log(ranks)
    noise = rng.gumbel(size=len(scores))
    # The order of log_weights / temperature + noise, computed without dividing (no overflow
    # for tiny temperatures); an infinite temperature leaves the noise alone: uniform.
    keys = noise if np.isinf(temperature) else log_weights + temperature * noise
    return ids[np.argsort(-keys, kind="stable")[:k]]


def _check_joint_probs(probs) -> np.ndarray:
    """float64 [N, T, C] of valid probability rows (ValueError naming what is wrong)."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 3:
        raise ValueError(f"probs must have shape [N, T, C]; got shape {p.shape}")
    if p.size == 0:
        raise ValueError(f"probs of shape {p.shape} holds no probabilities")
    if not np.all(np.isfinite(p)) or p.min() < 0:
        raise ValueError("probs must be finite and >= 0; got "
                         f"{int(np.sum(~np.isfinite(p)))} non-finite and "
                         f"{int(np.sum(p < 0))} negative entries")
    sums = p.sum(-1)
    worst = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
    if abs(sums[worst] - 1.0) > 1e-3:
        raise ValueError(f"probs[{worst[0]}, {worst[1]}] sums to {sums[worst]:.6f}; every "
                         "[n, t] row must be a probability vector (sum 1)")
    return p / sums[..., None]


class _Configurations:
    """Joint class configurations of a set of pool points under the T models.

    Holds log Q [M, T] (log Q[m, t] = sum_j log p_t(y_j = m's class of j)) for either all C^n
    configurations (exact) or M sampled ones drawn from the joint predictive p(y_1..n) =
    mean_t prod_j p_t(y_j), stratified over the models: M / T configurations per model t,
    each point's class drawn from p_t. A point added to a sampled set draws its class for each
    configuration from the configuration's own model, so earlier samples are kept (still a
    sample of the joint predictive of the larger set). Identical sampled configurations are
    merged (with their count) before entropies are computed: the same estimator, and far fewer
    rows while the models are confident.
    """

    def __init__(self, log_p: np.ndarray, p: np.ndarray, num_samples: int,
                 rng: np.random.Generator | None):
        self.log_p, self.p, self.num_samples, self.rng = log_p, p, num_samples, rng
        num_models = p.shape[1]
        self.points: list[int] = []
        self.exact = True
        self.log_q = np.zeros((1, num_models))  # the empty set: one configuration

    def add(self, point: int) -> None:
        num_classes = self.p.shape[2]
        self.points.append(point)
        if self.exact and num_classes ** len(self.points) <= self.num_samples:
            extended = self.log_q[:, None, :] + self.log_p[point].T[None]  # [M, C, T]
            log_q = extended.reshape(-1, extended.shape[-1])
            self.log_q = log_q[np.isfinite(log_q.max(axis=1))]  # drop impossible ones
            return
        if self.exact:  # switch: draw classes of every point so far
            if self.rng is None:
                raise ValueError("sampling joint configurations needs rng")
            self.exact = False
            num_models = self.p.shape[1]
            self.per_model = -(-self.num_samples // num_models)  # ceil
            self.log_q = np.zeros((num_models * self.per_model, num_models))
            self.group = np.zeros(len(self.log_q), np.int64)  # distinct configuration ids
            for j in self.points:
                self._add_sampled(j)
        else:
            self._add_sampled(point)

    def _add_sampled(self, point: int) -> None:
        """log Q += log p_t'(y_point) with y_point drawn from p_t for configuration (t, s)."""
        num_models, num_classes = self.p.shape[1:]
        cdf = np.cumsum(self.p[point], axis=-1)  # [T, C]
        cdf /= cdf[:, -1:]
        u = self.rng.random((num_models, self.per_model))
        classes = np.stack([np.searchsorted(cdf[t], u[t], side="right")
                            for t in range(num_models)]).reshape(-1)  # [M], model-major
        classes = np.minimum(classes, num_classes - 1)
        self.log_q += self.log_p[point][:, classes].T
        # Configurations are equal iff equal before this point and equal in this point's class.
        _, self.first, self.group, self.counts = np.unique(
            self.group * num_classes + classes, return_index=True, return_inverse=True,
            return_counts=True)

    def entropy_terms(self) -> "_EntropyTerms":
        """The pieces of the joint entropies of the set with one more point (float32 arrays).

        With configs[m, t] = Q[m, t] / (s_m T) (rows scaled by s_m = max_t Q[m, t] against
        underflow) and J'[m, c] = sum_t configs[m, t] p_t(y_b = c) for a candidate b,
        H(set + b) = -sum_m weights[m] sum_c J' log J' + constant:
          exact:   weights = s, constant = -sum_m s_m q'_m log s_m  (q'_m = sum_t configs[m, t]);
          sampled: weights = n_m / (M q'_m), constant = -sum_m (n_m / M) log s_m over the
                   distinct sampled configurations m, drawn n_m times of M (importance weights:
                   m's probability under the joint is s_m q'_m).
        H(set) is the entropy of the set alone by the same rule.
        """
        num_models = self.log_q.shape[1]
        log_q, counts = self.log_q, None
        if not self.exact:  # identical configurations merged, with their counts
            log_q, counts = log_q[self.first], self.counts
        log_s = log_q.max(axis=1)
        configs = np.exp(log_q - log_s[:, None]) / num_models
        q_prime = configs.sum(axis=1)
        if self.exact:
            s = np.exp(log_s)
            q = s * q_prime
            return _EntropyTerms(
                configs.astype(np.float32), s.astype(np.float32), float(-np.sum(q * log_s)),
                float(-np.sum(np.where(q > 0, q * _log(np.where(q > 0, q, 1.0)), 0.0))))
        share = counts / counts.sum()  # of the M sampled configurations
        return _EntropyTerms(configs.astype(np.float32), (share / q_prime).astype(np.float32),
                             float(-np.sum(share * log_s)),
                             float(-np.sum(share * (np.log(q_prime) + log_s))))


class _EntropyTerms(NamedTuple):
    configs: np.ndarray  # float32 [M, T]
    weights: np.ndarray  # float32 [M]
    constant: float
    set_entropy: float   # H(y_A) of the set itself


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                              tf.TensorSpec([None, None], tf.float32),
                              tf.TensorSpec([None], tf.float32)])
def _weighted_sum_xlogx(configs, candidates, weights):
    """sum_m weights[m] J log J for J = configs @ candidates: [M, T] x [T, B*C] -> [B*C]."""
    joint = tf.matmul(configs, candidates)
    return tf.linalg.matvec(tf.math.xlogy(joint, joint), weights, transpose_a=True)


class _JointEntropies:
    """H(set + b) for candidates b, in chunks of at most `max_elements` joint probabilities."""

    def __init__(self, p: np.ndarray, max_elements: int):
        self.num_models, self.num_classes = p.shape[1:]
        self.p_tnc = np.ascontiguousarray(p.transpose(1, 0, 2), np.float32)  # [T, N, C]
        self.max_elements = max_elements

    def chunk_size(self, terms: "_EntropyTerms") -> int:
        return max(1, self.max_elements // (len(terms.weights) * self.num_classes))

    def __call__(self, terms: _EntropyTerms, candidates: np.ndarray) -> np.ndarray:
        """H(y_A, y_b) for each candidate b: int [B] -> float64 [B]."""
        block = self.p_tnc[:, candidates].reshape(self.num_models, -1)  # [T, B*C]
        sums = _weighted_sum_xlogx(terms.configs, block, terms.weights).numpy()
        return (-sums.reshape(len(candidates), self.num_classes).sum(axis=1, dtype=np.float64)
                + terms.constant)


class BatchSelection(NamedTuple):
    """A batch selected greedily by `batchbald`.

    Attributes:
      indices: int64 [K], rows of `probs` (pool positions) in selection order.
      joint_mi: float64 [K]; joint_mi[k] estimates I(y_{indices[0..k]}; omega), the mutual
        information (nats) between the labels of the first k + 1 selected points and the model:
        exact while the configurations are enumerated, an importance-sampled estimate after.
        joint_mi[0] is the BALD score of indices[0].
      exact: bool [K]; whether step k enumerated every joint class configuration of the points
        chosen before it (else it sampled `num_samples` of them).
    """

    indices: np.ndarray
    joint_mi: np.ndarray
    exact: np.ndarray

    @property
    def gains(self) -> np.ndarray:
        """float64 [K]: what each pick added to the joint MI (the greedy criterion)."""
        return np.diff(self.joint_mi, prepend=0.0)


def _conditional_entropies(p: np.ndarray) -> np.ndarray:
    """mean_t H[p_t(y_n)]: [N, T, C] -> [N] float64."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1).mean(1)


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def batchbald(probs, k: int, *, rng: np.random.Generator | None, num_samples: int = 10_000,
              max_elements: int = 2 ** 22, lazy: bool = True,
              lazy_threshold: int = 2 ** 25) -> BatchSelection:
    """BatchBALD (Kirsch, van Amersfoort and Gal, NeurIPS 2019): greedy maximisation of the joint
    mutual information I(y_1, ..., y_K; omega) between the labels of the batch and the model.

    Step n adds the candidate b that maximises I(y_A, y_b; omega) - I(y_A; omega) =
    H(y_A, y_b) - H(y_A) - E_t H[p_t(y_b)] for the points A chosen so far (step 0 is BALD's
    argmax). The joint entropies need *joint* samples: row t of every point must come from the
    same model omega_t (the same dropout masks for the whole pool; see
    `inference.make_joint_probabilities`). They are exact while the C^n joint configurations
    of A number at most `num_samples`; beyond that, `num_samples` configurations of A are
    sampled from the joint predictive and importance-weighted (the paper's estimator), the
    candidate's own class always summed exactly.

    The joint MI is submodular, so a candidate's gain can only shrink as A grows. With `lazy`,
    each step evaluates candidates in order of their last gain (BALD at first) and stops once
    the best gain found is at least the next candidate's last gain (lazy greedy, Minoux 1978):
    the same batch as evaluating every candidate while the entropies are exact (up to ties), and
    far fewer evaluations; with sampled entropies it carries the estimates' noise like the
    paper's greedy does.

    Memory: candidates are evaluated in chunks of at most `max_elements` joint probabilities
    (M configurations x B candidates x C classes, float32; 2^22 = 16 MiB), and at most
    max(num_samples, C) configurations x T are held, whatever N and K. [N, C^k] is never formed.

    Args:
      probs: float [N, T, C]: joint MC-dropout samples, probs[n, t] = p(y_n | x_n, omega_t).
      k: batch size, 1 <= k <= N.
      rng: the generator sampled configurations come from (unused while exact; may be None
        when C^(k-1) <= num_samples).
      num_samples: M, the number of joint configurations (>= 1): the exact/sampled switch and
        the sample size (rounded up to a multiple of T, as configurations are stratified over
        the T models).
      max_elements: the chunk bound above (>= 1).
      lazy: lazy greedy evaluation (see above); False evaluates every candidate every step.
      lazy_threshold: a step evaluates lazily only when its full evaluation would cost more
        than this many joint probabilities (M x C x candidates); cheaper steps evaluate every
        candidate.

    Returns:
      BatchSelection(indices [K], joint_mi [K], exact [K]); `.gains` are the per-pick increments.

    Raises:
      ValueError: probs not [N, T, C] probability rows, k outside [1, N], num_samples or
        max_elements < 1, or sampling needed without an rng.
    """
    p = _check_joint_probs(probs)
    num_points, _, num_classes = p.shape
    if not 1 <= k <= num_points:
        raise ValueError(f"k={k} must be in [1, {num_points}] (the number of pool points)")
    if not (isinstance(num_samples, (int, np.integer)) and num_samples >= 1):
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")
    if not (isinstance(max_elements, (int, np.integer)) and max_elements >= 1):
        raise ValueError(f"max_elements={max_elements!r} must be an integer >= 1")
    if rng is not None:
        _check_rng(rng)
    elif k > 1 and num_classes ** (k - 1) > num_samples:
        raise ValueError(f"k={k} with C={num_classes} classes needs sampled configurations "
                         f"(C^(k-1) > num_samples={num_samples}): pass rng")
    log_p = _log(p)
    conditional = _conditional_entropies(p)
    mean = p.mean(axis=1)
    predictive = -np.sum(np.where(mean > 0, mean * _log(np.where(mean > 0, mean, 1.0)), 0.0), -1)
    bound = np.maximum(predictive - conditional, 0.0)  # BALD: the gain of the first pick
    configurations = _Configurations(log_p, p, num_samples, rng)
    entropies = _JointEntropies(p, max_elements)
    available = np.ones(num_points, bool)
    first = int(np.argmax(bound))
    chosen, joint_mi, exact = [first], [float(bound[first])], [True]
    available[first] = False
    for _ in range(1, k):
        configurations.add(chosen[-1])
        terms = configurations.entropy_terms()
        candidates = np.flatnonzero(available)
        # While every candidate is cheap to evaluate (few configurations), evaluate them all:
        # exact gains are the tightest bounds for the steps where laziness pays.
        lazy_now = lazy and len(terms.weights) * num_classes * len(candidates) > lazy_threshold
        if lazy_now:
            candidates = candidates[np.argsort(-bound[candidates], kind="stable")]
        size = entropies.chunk_size(terms)
        best, best_gain = -1, -np.inf
        for start in range(0, len(candidates), size):
            if lazy_now and best >= 0 and best_gain >= bound[candidates[start]]:
                break
            chunk = candidates[start:start + size]
            gains = entropies(terms, chunk) - terms.set_entropy - conditional[chunk]
            bound[chunk] = gains
            j = int(np.argmax(gains))
            if gains[j] > best_gain:
                best, best_gain = int(chunk[j]), float(gains[j])
        mi_before = terms.set_entropy - conditional[chosen].sum()  # I(y_A; omega)
        chosen.append(best)
        joint_mi.append(mi_before + best_gain)
        exact.append(configurations.exact)
        available[best] = False
    return BatchSelection(np.asarray(chosen, np.int64), np.asarray(joint_mi, np.float64),
                          np.asarray(exact, bool))


def joint_mutual_information(probs, *, rng: np.random.Generator | None = None,
                             num_samples: int = 10_000) -> float:
    """I(y_1, ..., y_n; omega) of a given set, by BatchBALD's estimator. [n, T, C] -> nats.

    Exact while the C^(n-1) configurations of the first n - 1 points number at most
    `num_samples`, else importance-sampled from `num_samples` of them (needs `rng`). Useful to
    compare batches, e.g. BALD's top-K against BatchBALD's, under the same joint samples.
    """
    p = _check_joint_probs(probs)
    configurations = _Configurations(_log(p), p, num_samples, rng)
    for j in range(len(p) - 1):
        configurations.add(j)
    terms = configurations.entropy_terms()
    entropies = _JointEntropies(p, 2 ** 22)
    joint = float(entropies(terms, np.array([len(p) - 1]))[0])
    return joint - float(_conditional_entropies(p).sum())
