import numpy as np
import pytest

from tf_bgadl import state as state_lib


def test_initial_state_is_balanced_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), 25)
    s = state_lib.initial_state(labels, 3, seed=7)
    assert s.iteration == 0
    assert np.bincount(labels[s.labeled_ids], minlength=4).tolist() == [3, 3, 3, 3]
    assert not np.intersect1d(s.labeled_ids, s.pool_ids).size
    assert len(s.labeled_ids) + len(s.pool_ids) == len(labels)
    assert np.array_equal(s.labeled_ids, state_lib.initial_state(labels, 3, seed=7).labeled_ids)
    assert not np.array_equal(s.labeled_ids, state_lib.initial_state(labels, 3, 8).labeled_ids)


def test_initial_state_refuses_too_few_examples():
    with pytest.raises(ValueError, match="class 1 has 2 training examples left"):
        state_lib.initial_state(np.array([0, 0, 0, 1, 1]), 3, seed=0)


def test_acquire_moves_exactly_the_ids():
    s = state_lib.ActiveLearningState(0, [0, 1], [2, 3, 4, 5])
    t = s.acquire([5, 3])
    assert t.iteration == 1
    assert t.labeled_ids.tolist() == [0, 1, 5, 3]
    assert t.pool_ids.tolist() == [2, 4]
    with pytest.raises(ValueError, match="not in the pool"):
        t.acquire([0])
    with pytest.raises(ValueError, match="unique"):
        t.acquire([2, 2])


def test_overlap_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        state_lib.ActiveLearningState(0, [0, 1], [1, 2])


def test_json_round_trip_and_atomic_files(tmp_path):
    s = state_lib.ActiveLearningState(3, [4, 1], [0, 2, 3])
    path = str(tmp_path / "state.json")
    state_lib.atomic_write_json(path, s.to_json())
    import json
    t = state_lib.ActiveLearningState.from_json(json.load(open(path)))
    assert t.iteration == 3 and t.labeled_ids.tolist() == [4, 1] and t.pool_ids.tolist() == [0, 2, 3]
    rows = [{"iteration": 0}, {"iteration": 1}]
    state_lib.write_jsonl(str(tmp_path / "r.jsonl"), rows)
    assert state_lib.read_jsonl(str(tmp_path / "r.jsonl")) == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "state.json"]  # no temp left


def test_generated_set_round_trip_and_truncation(tmp_path):
    g = state_lib.GeneratedSet.empty((2, 2, 1))
    g = g.add(np.full((3, 2, 2, 1), 7, np.uint8), [1, 2, 3], [10, 11, 12], iteration=1)
    g = g.add(np.full((2, 2, 2, 1), 9, np.uint8), [4, 5], [13, 14], iteration=2)
    path = str(tmp_path / "generated.npz")
    g.save(path)
    again = state_lib.GeneratedSet.load(path, 5)
    assert len(again) == 5 and again.source_ids.tolist() == [10, 11, 12, 13, 14]
    assert again.iterations.tolist() == [1, 1, 1, 2, 2] and again.images.dtype == np.uint8
    # A run killed after saving iteration 2's samples but before its state: keep iteration 1's.
    earlier = state_lib.GeneratedSet.load(path, 3)
    assert earlier.labels.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="holds 5 generated samples"):
        state_lib.GeneratedSet.load(path, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated.npz"]


def test_validation_split_is_balanced_disjoint_and_keeps_the_labeled_draw():
    labels = np.repeat(np.arange(4), 25)
    plain = state_lib.initial_state(labels, 3, seed=7)
    s = state_lib.initial_state(labels, 3, seed=7, validation_per_class=5)
    np.testing.assert_array_equal(s.labeled_ids, plain.labeled_ids)
    assert np.bincount(labels[s.validation_ids], minlength=4).tolist() == [5, 5, 5, 5]
    assert len(s.labeled_ids) + len(s.pool_ids) + len(s.validation_ids) == len(labels)
    assert not np.intersect1d(s.validation_ids, s.pool_ids).size
    assert not np.intersect1d(s.validation_ids, s.labeled_ids).size
    t = s.acquire(s.pool_ids[:4])
    np.testing.assert_array_equal(t.validation_ids, s.validation_ids)
    with pytest.raises(ValueError, match="not in the pool"):
        t.acquire(s.validation_ids[:1])
    restored = state_lib.ActiveLearningState.from_json(t.to_json())
    np.testing.assert_array_equal(restored.validation_ids, t.validation_ids)
    with pytest.raises(ValueError, match="pool_ids and validation_ids overlap"):
        state_lib.ActiveLearningState(0, [0], [1, 2], [2])
