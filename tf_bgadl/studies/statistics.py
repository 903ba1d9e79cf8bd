"""Statistics of a study: pure functions on numpy arrays (no files, no plotting).

Accuracies are fractions in [0, 1]; budgets are numbers of oracle labels (`num_labeled`).
Undefined values (the std of one seed, a t-test with one seed on a side) are None, never NaN,
so that they survive JSON and are shown as such in the report.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


def _vector(values: ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(values, np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be finite numbers, got {array.tolist()}")
    return array


def mean(values: ArrayLike) -> float:
    """The arithmetic mean.

    Args:
      values: float [N], N >= 1.

    Raises:
      ValueError: if `values` is empty or not finite.
    """
    array = _vector(values, "values")
    if array.size == 0:
        raise ValueError("the mean of no values is undefined")
    return float(array.mean())


def sample_std(values: ArrayLike) -> float | None:
    """The sample standard deviation (ddof=1, as the paper's "mean +- std over runs").

    Args:
      values: float [N].

    Returns:
      The std, or None when N < 2 (one seed has no spread to estimate).
    """
    array = _vector(values, "values")
    if array.size < 2:
        return None
    return float(array.std(ddof=1))


@dataclasses.dataclass(frozen=True)
class WelchTest:
    """A one-sided Welch t-test of H1: mean(a) > mean(b).

    Attributes:
      t: the t statistic, or None when the test is undefined.
      df: the Welch-Satterthwaite degrees of freedom, or None.
      p: the one-sided p value, or None.
      n_a, n_b: the sample sizes.
      reason: why the test is undefined (None when it is defined).
    """

    t: float | None
    df: float | None
    p: float | None
    n_a: int
    n_b: int
    reason: str | None = None

    def significant(self, alpha: float = 0.05) -> bool | None:
        """Whether p <= alpha (the paper's rule, alpha = .05); None when undefined."""
        return None if self.p is None else self.p <= alpha


def welch_t_test(a: ArrayLike, b: ArrayLike) -> WelchTest:
    """One-sided Welch t-test (unequal variances) of H1: the mean of `a` exceeds the mean of `b`.

    t = (mean(a) - mean(b)) / sqrt(s_a^2/n_a + s_b^2/n_b), with sample variances s^2 (ddof=1),
    and df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)).
    Computed by `scipy.stats.ttest_ind(equal_var=False, alternative="greater")`.

    Args:
      a: float [N_a], e.g. final accuracies of the paper's method, one per seed.
      b: float [N_b], the same for the method it is compared with.

    Returns:
      A WelchTest; t, df and p are None, with a reason, when a side has fewer than two values
      or neither side varies (the statistic divides by zero).
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.size < 2 or b.size < 2:
        return WelchTest(None, None, None, a.size, b.size,
                         f"needs at least 2 seeds per method (has {a.size} and {b.size})")
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        return WelchTest(None, None, None, a.size, b.size,
                         "neither method varies over seeds; the t statistic is undefined")
    with warnings.catch_warnings():  # near-identical values: scipy warns about precision
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    return WelchTest(float(result.statistic), float(result.df), float(result.pvalue),
                     a.size, b.size)


def _curve(num_labeled: ArrayLike, accuracy: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector(num_labeled, "num_labeled"), _vector(accuracy, "accuracy")
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"a learning curve needs as many (>= 1) budgets as accuracies, got "
                         f"{x.size} and {y.size}")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) == 0):
        raise ValueError(f"num_labeled repeats a budget: {x.tolist()}")
    return x, y


def labels_to_reach(num_labeled: ArrayLike, accuracy: ArrayLike, level: float) -> int | None:
    """The first budget at which a learning curve reaches `level`.

    Args:
      num_labeled: int [K], oracle labels at each point of the curve (any order).
      accuracy: float [K], test accuracy at each point.
      level: accuracy to reach, in [0, 1].

    Returns:
      The smallest num_labeled whose accuracy is >= level, or None if the curve never reaches it.
    """
    x, y = _curve(num_labeled, accuracy)
    reached = np.flatnonzero(y >= level)
    return int(x[reached[0]]) if reached.size else None


def aulc(num_labeled: ArrayLike, accuracy: ArrayLike, start: float, stop: float) -> float:
    """Normalised area under the learning curve between two budgets: a mean accuracy in [0, 1].

    The trapezoid integral of accuracy over num_labeled from `start` to `stop`, divided by
    `stop - start`; the curve is interpolated linearly where a bound falls between two points.
    Equal to the accuracy itself for a flat curve, so it reads as "the mean accuracy over the
    label budget" and compares methods over the whole run rather than at its end. With
    start == stop it is the accuracy at that budget.

    Args:
      num_labeled: int [K], oracle labels at each point of the curve (any order).
      accuracy: float [K], test accuracy in [0, 1] at each point.
      start: first budget of the common range (every compared curve covers it).
      stop: last budget of the common range.

    Raises:
      ValueError: if start > stop or the curve does not cover [start, stop].
    """
    x, y = _curve(num_labeled, accuracy)
    if start > stop:
        raise ValueError(f"start={start} exceeds stop={stop}")
    if start < x[0] or stop > x[-1]:
        raise ValueError(f"the curve covers budgets {x[0]:g}..{x[-1]:g}, not {start:g}..{stop:g}")
    if start == stop:
        return float(np.interp(start, x, y))
    inside = (x > start) & (x < stop)
    xs = np.concatenate([[start], x[inside], [stop]])
    ys = np.concatenate([[np.interp(start, x, y)], y[inside], [np.interp(stop, x, y)]])
    area = np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0)
    return float(area / (stop - start))


def median_labels(values: list[int | None]) -> float | None:
    """The median of labels-to-reach over seeds, counting "not reached" as more than any budget.

    Args:
      values: [N] labels needed per seed, None where the seed never reached the level.

    Returns:
      The median, or None when it falls on a seed that did not reach the level (or N == 0).
    """
    if not values:
        return None
    median = float(np.median([np.inf if v is None else v for v in values]))
    return None if np.isinf(median) else median


def accuracy_levels(start: float, stop: float, count: int = 3) -> list[float]:
    """`count` round accuracy levels spread over (start, stop], for labels-to-reach.

    The targets start + (stop - start) * k / count (k = 1..count) are rounded down to the
    coarsest step of 10%, 5%, 2%, 1%, 0.5%, 0.2% or 0.1% that keeps them distinct and above
    `start`, so that a curve ending at `stop` reaches the highest one.

    Args:
      start: accuracy where the curves begin (e.g. the mean at the first budget), in [0, 1].
      stop: accuracy most curves end above (e.g. the lowest final mean of a method), in [0, 1].

    Returns:
      Increasing levels in (start, stop]; empty when stop <= start (nothing was gained).
    """
    if stop <= start:
        return []
    targets = start + (stop - start) * np.arange(1, count + 1) / count
    for step in (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001):
        levels = [round(float(v), 6) for v in np.floor(targets / step + 1e-9) * step]
        if len(set(levels)) == count and levels[0] > start:
            return levels
    return sorted({round(float(v), 4) for v in targets if round(float(v), 4) > start})
