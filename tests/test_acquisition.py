import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl import acquisition


def _probs(rows):
    return np.asarray(rows, np.float32)


AGREE = [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]          # uncertain, but all passes agree
DISAGREE = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]       # confident passes that disagree
CONFIDENT = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]      # certain and agreeing
MILD = [[0.7, 0.3], [0.4, 0.6], [0.6, 0.4]]


@pytest.mark.parametrize("name", sorted(acquisition.SCORERS))
def test_shapes_and_finite_with_exact_zeros(name):
    probs = _probs([AGREE, DISAGREE, CONFIDENT, MILD])
    scores = acquisition.get_scorer(name)(probs).numpy()
    assert scores.shape == (4,)
    assert np.all(np.isfinite(scores))


def test_bald_known_order_and_bounds():
    scores = acquisition.bald(_probs([AGREE, DISAGREE, CONFIDENT, MILD])).numpy()
    assert scores[0] == pytest.approx(0.0, abs=1e-6)        # all T passes agree -> 0
    assert scores[2] == pytest.approx(0.0, abs=1e-6)
    assert np.argmax(scores) == 1                           # confident but disagreeing -> max
    p = 2 / 3  # DISAGREE: mean (2/3, 1/3), each pass has zero entropy
    assert scores[1] == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)), rel=1e-5)
    assert 0 < scores[3] < scores[1]
    assert np.all(scores >= 0)


def test_bald_is_predictive_minus_expected_entropy():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(7, 4)).astype(np.float32)
    np.testing.assert_allclose(
        acquisition.bald(probs),
        np.maximum(acquisition.predictive_entropy(probs) - acquisition.expected_entropy(probs), 0),
        rtol=1e-6)


def test_max_entropy_prefers_uncertain_mean():
    scores = acquisition.max_entropy(_probs([AGREE, CONFIDENT])).numpy()
    assert scores[0] == pytest.approx(np.log(2), rel=1e-6) and scores[1] == pytest.approx(0)


def test_var_ratios_and_mean_std():
    vr = acquisition.var_ratios(_probs([AGREE, CONFIDENT])).numpy()
    np.testing.assert_allclose(vr, [0.5, 0.0], atol=1e-6)
    ms = acquisition.mean_std(_probs([AGREE, DISAGREE])).numpy()
    assert ms[0] == pytest.approx(0.0, abs=1e-7) and ms[1] > 0.4


def test_scorers_work_inside_tf_function():
    fn = tf.function(acquisition.bald)
    np.testing.assert_allclose(fn(_probs([DISAGREE])), acquisition.bald(_probs([DISAGREE])))


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        acquisition.bald(np.ones((3, 2), np.float32))


def test_top_k_ranks_and_keeps_ids():
    ids = np.array([10, 11, 12, 13, 14])
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.0])
    assert acquisition.top_k(ids, scores, 3).tolist() == [11, 13, 12]  # ties keep id order


def test_top_k_refuses_nan_and_bad_k():
    with pytest.raises(ValueError, match="NaN"):
        acquisition.top_k(np.arange(3), np.array([0.1, np.nan, 0.2]), 1)
    with pytest.raises(ValueError, match="k=4"):
        acquisition.top_k(np.arange(3), np.zeros(3), 4)


def test_top_k_over_noisy_scores_is_biased_upwards():
    """Why a run's `mean_score` (the scores that chose x*) exceeds `score_acquired` (x* scored
    again with fresh MC masks): the top k of noisy estimates are, on average, the ones whose
    noise was high (the winner's curse). Fresh estimates of the same ids are unbiased."""
    rng = np.random.default_rng(0)
    true = rng.uniform(0.0, 0.6, size=2000)
    ids = np.arange(2000)
    first = true + rng.normal(0, 0.05, size=2000)   # the estimate that selects
    second = true + rng.normal(0, 0.05, size=2000)  # an independent re-estimate
    chosen = acquisition.top_k(ids, first, 100)
    assert first[chosen].mean() > second[chosen].mean() + 0.02
    assert abs(second[chosen].mean() - true[chosen].mean()) < 0.02
