"""Batch-aware acquisition: BatchBALD, stochastic batch acquisition, joint MC samples."""

import dataclasses
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl import acquisition, inference, loop
from tf_bgadl import config as config_lib
from tf_bgadl.config import AcquisitionConfig, DataConfig, ExperimentConfig
from tf_bgadl.data import ArrayDataset
from tf_bgadl.models import MCDropout, build_classifier
from tf_bgadl.state import initial_state


def _random_probs(seed, n=6, t=4, c=3, concentration=0.5):
    return np.random.default_rng(seed).dirichlet(np.full(c, concentration), size=(n, t))


def brute_force_mi(p):
    """I(y_1..n; omega) by enumerating every joint class configuration. [n, T, C] -> nats."""
    n, t, c = p.shape
    if c ** n <= 1000:  # one configuration at a time, as the definition reads
        q = np.array([np.mean(np.prod([p[j, :, y] for j, y in enumerate(classes)], axis=0))
                      for classes in itertools.product(range(c), repeat=n)])
    else:  # the same enumeration as outer products: [C^n, T]
        joint = np.ones((1, t))
        for j in range(n):
            joint = (joint[:, None, :] * p[j].T[None]).reshape(-1, t)
        q = joint.mean(axis=1)
    joint_entropy = -np.sum(q[q > 0] * np.log(q[q > 0]))
    conditional = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)
    return joint_entropy - conditional.mean(1).sum()


def brute_force_greedy(p, k):
    chosen = []
    for _ in range(k):
        rest = [i for i in range(len(p)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: brute_force_mi(p[chosen + [i]])))
    return chosen


# ----------------------------------------------------------------------------------- BatchBALD


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batchbald_of_one_is_bald(seed):
    p = _random_probs(seed, n=30, t=8, c=5)
    selection = acquisition.batchbald(p, 1, rng=None)
    scores = acquisition.bald(p).numpy()
    assert selection.indices.tolist() == [int(np.argmax(scores))]
    assert selection.joint_mi[0] == pytest.approx(scores.max(), rel=1e-5)
    assert selection.exact.tolist() == [True]


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_greedy_joint_mi_equals_brute_force_enumeration(k, seed):
    p = _random_probs(seed)  # N=6, T=4, C=3
    selection = acquisition.batchbald(p, k, rng=np.random.default_rng(0))
    assert selection.indices.tolist() == brute_force_greedy(p, k)
    for i in range(k):  # the joint MI of every prefix of the batch
        assert selection.joint_mi[i] == pytest.approx(
            brute_force_mi(p[selection.indices[:i + 1]]), rel=1e-5, abs=1e-6)
    assert np.all(selection.gains[1:] <= selection.gains[:-1] + 1e-6)  # submodular: shrinking
    assert len(set(selection.indices.tolist())) == k


def test_lazy_greedy_selects_what_evaluating_every_candidate_selects():
    p = _random_probs(5, n=300, t=10, c=4, concentration=0.3)
    # 4^5 <= 10,000: exact throughout; lazy_threshold=0 makes every step lazy.
    lazy = acquisition.batchbald(p, 6, rng=None, lazy_threshold=0)
    full = acquisition.batchbald(p, 6, rng=None, lazy=False)
    assert lazy.exact.all()
    assert lazy.indices.tolist() == full.indices.tolist()
    np.testing.assert_allclose(lazy.joint_mi, full.joint_mi, rtol=1e-6)


def _deterministic_item(classes, confidence, num_classes=2):
    """[T, C] probabilities: model t predicts classes[t] with `confidence`."""
    p = np.full((len(classes), num_classes), (1 - confidence) / (num_classes - 1))
    p[np.arange(len(classes)), classes] = confidence
    return p


def test_batchbald_never_picks_two_copies_of_a_duplicated_point():
    """Each model predicts (nearly) deterministically, so a copy of a chosen point tells nothing
    new about the model, while a point that splits the models another way does."""
    t = np.arange(8)
    items = [_deterministic_item(t // 4, 0.995),        # splits the 8 models 4 | 4: top BALD
             _deterministic_item((t // 2) % 2, 0.99),   # another split
             _deterministic_item(t % 2, 0.985),         # a third, independent split
             _deterministic_item(t // 4, 0.6),          # an unsure copy-cat
             _deterministic_item(np.zeros(8, int), 0.9)]  # all models agree: BALD 0
    pool = np.stack([item for item in items for _ in range(3)])  # every item three times
    order = np.random.default_rng(0).permutation(len(pool))
    pool, item_of = pool[order], np.repeat(np.arange(len(items)), 3)[order]
    scores = acquisition.bald(pool).numpy()
    top = acquisition.top_k(np.arange(len(pool)), scores, 3)
    assert len(set(item_of[top].tolist())) == 1  # top-K BALD takes the three copies of item 0
    selection = acquisition.batchbald(pool, 3, rng=None)
    assert sorted(item_of[selection.indices].tolist()) == [0, 1, 2]  # one copy of each split
    assert selection.joint_mi[-1] > 2.5 * scores.max()


def test_sampled_configurations_approach_the_exact_value():
    p = _random_probs(7, n=8, t=6, c=4)  # 4^7 = 16,384 configurations of the first 7 points
    exact = brute_force_mi(p)
    assert acquisition.joint_mutual_information(p, num_samples=4 ** 7) == pytest.approx(
        exact, rel=1e-5)
    errors = []
    for num_samples in (60, 600, 6000):
        estimates = [acquisition.joint_mutual_information(
            p, rng=np.random.default_rng(seed), num_samples=num_samples) for seed in range(6)]
        errors.append(np.mean(np.abs(np.array(estimates) - exact)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02 * exact and errors[0] > 2 * errors[2]
    again = acquisition.joint_mutual_information(p, rng=np.random.default_rng(0), num_samples=60)
    assert again == acquisition.joint_mutual_information(p, rng=np.random.default_rng(0),
                                                         num_samples=60)  # seeded


def test_batchbald_with_sampled_configurations_is_seeded_and_close_to_exact():
    p = _random_probs(3, n=40, t=8, c=10, concentration=0.3)
    exact = acquisition.batchbald(p, 6, rng=None, num_samples=10 ** 5)
    sampled = acquisition.batchbald(p, 6, rng=np.random.default_rng(1), num_samples=1000)
    assert exact.exact.all()
    assert sampled.exact.tolist() == [True] * 4 + [False] * 2  # 10^4 > 1000 from the 5th pick
    again = acquisition.batchbald(p, 6, rng=np.random.default_rng(1), num_samples=1000)
    assert sampled.indices.tolist() == again.indices.tolist()
    assert brute_force_mi(p[sampled.indices]) > 0.97 * brute_force_mi(p[exact.indices])
    for i in range(6):
        assert sampled.joint_mi[i] == pytest.approx(
            brute_force_mi(p[sampled.indices[:i + 1]]), rel=0.05)


def test_batchbald_memory_stays_within_its_chunk_bound(monkeypatch):
    """CIFAR-100-like C: never more than max_elements joint probabilities at once, and at most
    num_samples (rounded up to a multiple of T) configurations."""
    shapes = []
    inner = acquisition._weighted_sum_xlogx

    def recording(configs, candidates, weights):
        shapes.append((configs.shape[0], candidates.shape[1]))
        return inner(configs, candidates, weights)

    monkeypatch.setattr(acquisition, "_weighted_sum_xlogx", recording)
    p = _random_probs(0, n=120, t=20, c=100, concentration=0.05)
    selection = acquisition.batchbald(p, 4, rng=np.random.default_rng(0), num_samples=2000,
                                      max_elements=2 ** 20)
    assert selection.exact.tolist() == [True, True, False, False]  # 100^2 > 2000
    assert max(m * bc for m, bc in shapes) <= 2 ** 20
    assert max(m for m, _ in shapes) <= 2000  # 100 per model x 20 models (distinct ones)


def test_batchbald_refuses_invalid_inputs():
    p = _random_probs(0)
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        acquisition.batchbald(p[0], 2, rng=None)
    with pytest.raises(ValueError, match="k=7 must be in"):
        acquisition.batchbald(p, 7, rng=None)
    with pytest.raises(ValueError, match="k=0 must be in"):
        acquisition.batchbald(p, 0, rng=None)
    with pytest.raises(ValueError, match="sums to"):
        acquisition.batchbald(p * 2, 2, rng=None)
    with pytest.raises(ValueError, match="finite and >= 0"):
        acquisition.batchbald(np.where(p > 0.5, np.nan, p), 2, rng=None)
    with pytest.raises(ValueError, match="num_samples=0"):
        acquisition.batchbald(p, 2, rng=None, num_samples=0)
    with pytest.raises(ValueError, match="pass rng"):
        acquisition.batchbald(p, 4, rng=None, num_samples=5)
    with pytest.raises(TypeError, match="numpy Generator"):
        acquisition.batchbald(p, 4, rng=0, num_samples=5)


# ------------------------------------------------------------------ stochastic batch acquisition

MODES = acquisition.STOCHASTIC_MODES


@pytest.mark.parametrize("mode", MODES)
def test_stochastic_is_seeded_and_never_repeats(mode):
    ids = np.arange(100, 300)
    scores = np.random.default_rng(0).uniform(0, 1, 200)
    draw = lambda seed, k=20: acquisition.stochastic_top_k(  # noqa: E731
        ids, scores, k, mode=mode, temperature=1.0, rng=np.random.default_rng(seed))
    assert draw(1).tolist() == draw(1).tolist()
    assert draw(1).tolist() != draw(2).tolist()
    everything = draw(3, k=200)
    assert sorted(everything.tolist()) == ids.tolist()  # k = N: a permutation, no repeats
    assert set(draw(1).tolist()) <= set(ids.tolist())


@pytest.mark.parametrize("mode", MODES)
def test_stochastic_reduces_to_top_k_as_the_temperature_goes_to_zero(mode):
    ids = np.arange(50)
    scores = np.linspace(0.05, 1.0, 50)[np.random.default_rng(0).permutation(50)]
    expected = acquisition.top_k(ids, scores, 10).tolist()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        assert acquisition.stochastic_top_k(ids, scores, 10, mode=mode, temperature=0.0,
                                            rng=rng).tolist() == expected
        for temperature in (1e-4, 1e-300):  # tiny temperatures do not overflow
            assert acquisition.stochastic_top_k(ids, scores, 10, mode=mode,
                                                temperature=temperature,
                                                rng=rng).tolist() == expected
    hot = acquisition.stochastic_top_k(ids, scores, 10, mode=mode, temperature=1.0,
                                       rng=np.random.default_rng(0))
    assert hot.tolist() != expected


@pytest.mark.parametrize("mode, weights", [
    ("softmax", lambda s: np.exp(s / 0.5)),
    ("power", lambda s: s ** 2.0),
    ("softrank", lambda s: np.array([1.0, 3.0, 2.0, 4.0]) ** -2.0)])
def test_stochastic_first_draw_follows_the_documented_distribution(mode, weights):
    scores = np.array([0.9, 0.3, 0.6, 0.1])  # ranks 1, 3, 2, 4
    expected = weights(scores) / weights(scores).sum()
    rng = np.random.default_rng(0)
    draws = [acquisition.stochastic_top_k(np.arange(4), scores, 1, mode=mode, temperature=0.5,
                                          rng=rng)[0] for _ in range(4000)]
    frequencies = np.bincount(draws, minlength=4) / 4000
    np.testing.assert_allclose(frequencies, expected, atol=0.03)


def test_stochastic_refuses_invalid_inputs():
    ids, scores, rng = np.arange(3), np.array([0.1, 0.2, 0.3]), np.random.default_rng(0)
    with pytest.raises(ValueError, match="temperature=-0.5 must be >= 0"):
        acquisition.stochastic_top_k(ids, scores, 2, mode="power", temperature=-0.5, rng=rng)
    with pytest.raises(ValueError, match="mode='gumbel'"):
        acquisition.stochastic_top_k(ids, scores, 2, mode="gumbel", temperature=1.0, rng=rng)
    with pytest.raises(ValueError, match="scores >= 0"):
        acquisition.stochastic_top_k(ids, -scores, 2, mode="power", temperature=1.0, rng=rng)
    with pytest.raises(ValueError, match="NaN"):
        acquisition.stochastic_top_k(ids, np.array([0.1, np.nan, 0.3]), 2, mode="softmax",
                                     temperature=1.0, rng=rng)
    with pytest.raises(ValueError, match="k=4"):
        acquisition.stochastic_top_k(ids, scores, 4, mode="softrank", temperature=1.0, rng=rng)
    with pytest.raises(TypeError, match="numpy Generator"):
        acquisition.stochastic_top_k(ids, scores, 2, mode="softmax", temperature=1.0, rng=1)


def test_power_draws_zero_scores_last():
    scores = np.array([0.0, 0.5, 0.0, 0.2])
    for seed in range(10):
        drawn = acquisition.stochastic_top_k(np.arange(4), scores, 4, mode="power",
                                             temperature=1.0, rng=np.random.default_rng(seed))
        assert set(drawn[:2].tolist()) == {1, 3}


# ---------------------------------------------------------------------------- shared MC masks


def test_mask_groups_share_one_mask_per_group_whatever_the_group_size():
    layer = MCDropout(0.5)
    seed = tf.constant([3, 4])

    def masks(rows):
        out = layer(tf.ones((4 * rows, 6, 5)), mc_dropout=True, seed=seed, mask_groups=4)
        return out.numpy().reshape(4, rows, 6, 5)

    small, large = masks(2), masks(7)
    for group in (small, large):
        assert np.all(group == group[:, :1])                 # every row of a group: one mask
        assert set(np.unique(group)) <= {0.0, 2.0}
    assert not np.array_equal(small[0, 0], small[1, 0])     # groups differ
    np.testing.assert_array_equal(small[:, 0], large[:, 0])  # independent of the rows
    with pytest.raises(ValueError, match="needs a stateless seed"):
        layer(tf.ones((4, 3)), mc_dropout=True, mask_groups=2)


def _cnn():
    return build_classifier("cnn", num_classes=10, input_shape=(8, 8, 1), dropout_rate=0.5,
                            seed=0)


def test_joint_probabilities_do_not_depend_on_batch_or_position(digits):
    model = _cnn()
    predict = inference.make_joint_probabilities(model, mc_samples=6, seed=5, batch_size=16)
    ids, images = np.arange(40), digits.x_train[:40]
    probs = predict(ids, images)
    assert probs.shape == (40, 6, 10)
    perm = np.random.default_rng(0).permutation(40)
    np.testing.assert_allclose(predict(ids[perm], images[perm]), probs[perm],
                               rtol=1e-5, atol=1e-6)  # other batches and positions
    alone = inference.make_joint_probabilities(model, mc_samples=6, seed=5, batch_size=1)
    np.testing.assert_allclose(alone(ids[:3], images[:3]), probs[:3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs[:, 0], probs[:, 1])  # the T models differ
    other_seed = inference.make_joint_probabilities(model, mc_samples=6, seed=6)(ids, images)
    assert not np.allclose(other_seed, probs)


def test_joint_probabilities_use_one_mask_per_sample_for_every_image(digits):
    """A manual forward pass with the T masks drawn once (dropout of ones) reproduces every
    image's outputs: image b under sample t saw masks t, the same for all b."""
    model, t = _cnn(), 5
    images = digits.x_train[:7]
    probs = inference.make_joint_probabilities(model, mc_samples=t, seed=9)(np.arange(7), images)
    seed = tf.constant([9, 0], tf.int32)
    h = model.features(inference.to_unit_float(images))
    mask1 = model.dropout1(tf.ones((t, *h.shape[1:])), mc_dropout=True,
                           seed=model.layer_seed(seed, 0), mask_groups=t)
    units = model.dense.units
    mask2 = model.dropout2(tf.ones((t, units)), mc_dropout=True,
                           seed=model.layer_seed(seed, 1), mask_groups=t)
    for sample in range(t):
        hidden = model.dense(model.flatten(h * mask1[sample]))
        manual = tf.nn.softmax(model.classifier(hidden * mask2[sample])).numpy()
        np.testing.assert_allclose(probs[:, sample], manual, rtol=1e-4, atol=1e-6)


def test_duplicate_images_get_equal_joint_samples_but_different_per_row_samples(digits):
    model = _cnn()
    images = np.repeat(digits.x_train[:1], 4, axis=0)
    joint = inference.make_joint_probabilities(model, mc_samples=8, seed=1)(np.arange(4), images)
    np.testing.assert_allclose(joint, np.repeat(joint[:1], 4, axis=0), rtol=1e-5, atol=1e-6)
    per_row = model.mc_probabilities(inference.to_unit_float(images), 8).numpy()  # BALD's
    assert not np.allclose(per_row[0], per_row[1])
    with pytest.raises(ValueError, match="needs a seed"):
        model.mc_probabilities(inference.to_unit_float(images), 8, shared_masks=True)


def test_joint_probabilities_under_mirrored_strategy(digits):
    from tf_bgadl import experiment
    strategy = experiment.make_strategy("mirrored")
    with strategy.scope():
        model = _cnn()
    ids, images = np.arange(45), digits.x_train[:45]
    mirrored = inference.make_joint_probabilities(model, mc_samples=4, seed=2,
                                                  strategy=strategy, batch_size=16)(ids, images)
    single = inference.make_joint_probabilities(model, mc_samples=4, seed=2)(ids, images)
    np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------- config and the loop


def _resolved(method="bald", **acq):
    return config_lib.validate(ExperimentConfig(
        data=DataConfig(dataset="digits"), acquisition=AcquisitionConfig(method=method, **acq)))


def test_acquisition_settings_resolve_to_their_defaults():
    batchbald = _resolved(acquisition="batchbald").acquisition
    assert (batchbald.batchbald_samples, batchbald.temperature) == (10_000, 0.0)
    power = _resolved(acquisition="power_bald").acquisition
    assert (power.batchbald_samples, power.temperature) == (0, 1.0)
    bald = _resolved().acquisition
    assert (bald.batchbald_samples, bald.temperature) == (0, 0.0)
    random = _resolved(method="random").acquisition
    assert (random.acquisition, random.batchbald_samples, random.temperature) == ("none", 0, 0.0)
    for config in (_resolved(acquisition="softrank_bald", temperature=0.25),
                   _resolved(acquisition="batchbald", batchbald_samples=50),
                   _resolved(method="pmda", acquisition="softmax_bald")):
        assert config_lib.validate(config) == config  # a resolved config validates unchanged


@pytest.mark.parametrize("method, acq, message", [
    ("bald", dict(acquisition="power_bald", temperature=-0.5), "must be a finite number >= 0"),
    ("bald", dict(acquisition="power_bald", temperature=float("inf")), "finite"),
    ("bald", dict(acquisition="bald", temperature=0.5),
     "applies to the stochastic acquisitions .* unset for --acquisition=bald, which selects "
     "deterministically"),
    ("bald", dict(acquisition="batchbald", temperature=1.0), "--acquisition=batchbald"),
    ("bald", dict(acquisition="batchbald", batchbald_samples=0), "must be >= 1"),
    ("bald", dict(acquisition="power_bald", batchbald_samples=100),
     "applies to --acquisition=batchbald only"),
    ("random", dict(temperature=1.0), "--method=random, which acquires at random"),
    ("random", dict(acquisition="batchbald"), "does not apply to --method=random"),
    ("bald", dict(acquisition="batchbald_fast"), "choose one of"),
])
def test_meaningless_acquisition_settings_are_refused(method, acq, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        _resolved(method=method, **acq)


@pytest.mark.parametrize("method", ["bald", "pmda", "vaeacgan", "acgan"])
@pytest.mark.parametrize("name", ["batchbald", "power_bald", "softmax_bald", "softrank_bald"])
def test_every_scored_method_takes_the_batch_acquisitions(method, name):
    assert _resolved(method=method, acquisition=name).acquisition.acquisition == name


def _pool_dataset(n=120, classes=4):
    rng = np.random.default_rng(0)
    return ArrayDataset("fake", rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
                        np.arange(n) % classes, np.zeros((4, 8, 8, 1), np.uint8),
                        np.arange(4) % classes, num_classes=classes)


def _fake_probs(ids, t=6, c=4):
    """Joint samples that are a fixed function of the id: ids 2i and 2i+1 are duplicates."""
    out = np.stack([np.random.default_rng(int(i) // 2).dirichlet(np.full(c, 0.3), t)
                    for i in ids])
    return out.astype(np.float32)


def _fake_score(calls):
    def score(model, ids, images, iteration, mc_probs=False):
        calls.append(mc_probs)
        probs = _fake_probs(ids)
        return probs if mc_probs else acquisition.bald(probs).numpy()
    return score


@pytest.mark.parametrize("name", ["batchbald", "power_bald", "softmax_bald", "softrank_bald"])
def test_select_uses_the_batch_acquisition(name):
    dataset = _pool_dataset()
    config = dataclasses.replace(_resolved(acquisition=name, acquire_per_iteration=6,
                                           pool_subset=60), seed=4)
    state = initial_state(dataset.y_train, 2, config.seed)
    calls = []
    chosen, scores = loop.select(config, state, dataset, None, _fake_score(calls))
    assert calls == [name == "batchbald"]  # joint samples only for BatchBALD
    assert len(set(chosen.tolist())) == 6 and set(chosen.tolist()) <= set(state.pool_ids.tolist())
    np.testing.assert_allclose(scores, acquisition.bald(_fake_probs(chosen)).numpy(), rtol=1e-5)
    again, _ = loop.select(config, state, dataset, None, _fake_score([]))
    assert again.tolist() == chosen.tolist()  # seeded by (seed, iteration)
    # The same generator draws the subset, then the selection's randomness.
    rng = np.random.default_rng([config.seed, state.iteration + 1])
    subset = np.sort(rng.choice(state.pool_ids, 60, replace=False))
    if name == "batchbald":
        expected = subset[acquisition.batchbald(_fake_probs(subset), 6, rng=rng).indices]
    else:
        expected = acquisition.stochastic_top_k(
            subset, acquisition.bald(_fake_probs(subset)).numpy(), 6, rng=rng,
            mode=acquisition.STOCHASTIC[name][0], temperature=1.0)
    assert chosen.tolist() == expected.tolist()


def test_a_workdir_recorded_before_these_settings_existed_stays_resumable():
    current = _resolved().to_dict()
    old = {**current, "acquisition": {k: v for k, v in current["acquisition"].items()
                                      if k not in ("batchbald_samples", "temperature")}}
    assert config_lib.config_differences(old, current) == []
    batchbald = _resolved(acquisition="batchbald").to_dict()
    assert ("acquisition.batchbald_samples", 0, 10_000) in config_lib.config_differences(
        old, batchbald)
