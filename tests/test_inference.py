import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl import acquisition, experiment, inference
from tf_bgadl.models import build_classifier


def _model(strategy, dropout_rate):
    with strategy.scope():
        return build_classifier("cnn", num_classes=10, input_shape=(8, 8, 1),
                                dropout_rate=dropout_rate, seed=0)


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_scores_stay_tied_to_ids(digits, strategy_name):
    strategy = experiment.make_strategy(strategy_name)
    if strategy_name == "mirrored":
        assert strategy.num_replicas_in_sync == 2
    model = _model(strategy, 0.0)  # no dropout: max_entropy is a deterministic function of x
    score = inference.make_scorer(model, acquisition_name="max_entropy", mc_samples=3,
                                  strategy=strategy, batch_size=16)
    ids = np.arange(45)  # uneven last batch, and uneven across replicas
    images = digits.x_train[:45]
    scores = score(ids, images)
    expected = acquisition.max_entropy(
        model.mc_probabilities(inference.to_unit_float(images), 3)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    perm = np.random.default_rng(0).permutation(45)
    np.testing.assert_allclose(score(ids[perm], images[perm]), scores[perm], rtol=1e-5, atol=1e-6)


def test_bald_scores_vary_and_are_nonnegative(digits):
    strategy = tf.distribute.get_strategy()
    score = inference.make_scorer(_model(strategy, 0.5), acquisition_name="bald", mc_samples=20,
                                  strategy=strategy)
    scores = score(np.arange(64), digits.x_train[:64])
    assert scores.shape == (64,) and np.all(scores >= 0) and np.std(scores) > 0


def test_mismatched_ids_are_refused(digits):
    score = inference.make_scorer(_model(tf.distribute.get_strategy(), 0.5),
                                  acquisition_name="bald", mc_samples=2)
    with pytest.raises(ValueError, match="3 ids for 4 images"):
        score(np.arange(3), digits.x_train[:4])


def test_seeded_scores_do_not_depend_on_what_ran_before(digits):
    strategy = tf.distribute.get_strategy()
    model = _model(strategy, 0.5)
    score = inference.make_scorer(model, acquisition_name="bald", mc_samples=10, seed=11)
    first = score(np.arange(32), digits.x_train[:32])
    model(inference.to_unit_float(digits.x_train[:8]), mc_dropout=True)  # advances the masks
    np.testing.assert_array_equal(score(np.arange(32), digits.x_train[:32]), first)
