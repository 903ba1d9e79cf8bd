"""The active-learning loop: reset, train, evaluate, score the pool, acquire, repeat.

The loop knows nothing about TensorFlow models beyond `save_weights`/`load_weights`: it receives
its model factory, training, evaluation and scoring functions, so it is tested without training.
After every iteration it checkpoints atomically to the workdir; rerunning on the same workdir
resumes after the last finished iteration.

Workdir layout:
  config.json                   the resolved config (a run refuses a workdir of another config)
  results.jsonl                 one JSON line per finished iteration
  state.json                    labeled / pool ids after the last finished iteration
  checkpoints/classifier_NNNN.weights.h5   classifier of the last finished iteration
  accuracy.png                  test accuracy against the number of labeled examples
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import numpy as np
from absl import logging

from tf_bgadl import acquisition
from tf_bgadl.config import ConfigError, ExperimentConfig
from tf_bgadl.data import ArrayDataset
from tf_bgadl.plotting import plot_accuracy
from tf_bgadl.state import (ActiveLearningState, atomic_write_json, initial_state, read_jsonl,
                            write_jsonl)

# Config keys that may differ when a run is resumed (they do not change what was computed).
RESUMABLE_KEYS = ("iterations", "strategy")


@dataclasses.dataclass(frozen=True)
class Learner:
    """What the loop does with models, passed in by the caller.

    Attributes:
      build: (iteration, num_labeled) -> a fresh, compiled model.
      fit: (model, images uint8 [L,H,W,C], labels [L], iteration) -> training metrics dict.
      evaluate: (model, images, labels) -> test accuracy.
      score: (model, ids [P], images [P,H,W,C], iteration) -> acquisition scores [P] tied to
        `ids`, a function of the model's weights, the images and the iteration only.
    """

    build: Callable[[int, int], Any]
    fit: Callable[[Any, np.ndarray, np.ndarray, int], dict]
    evaluate: Callable[[Any, np.ndarray, np.ndarray], float]
    score: Callable[[Any, np.ndarray, np.ndarray, int], np.ndarray]


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb and f"{prefix}{key}" not in RESUMABLE_KEYS:
            out.append(f"{prefix}{key}: workdir has {va!r}, this run has {vb!r}")
    return out


def check_workdir_config(config: ExperimentConfig, workdir: str) -> None:
    """Writes config.json, or checks that the workdir's config matches this one.

    Raises:
      ConfigError: the workdir holds a run of another config (lists every difference).
    """
    path = os.path.join(workdir, "config.json")
    current = config.to_dict()
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        differences = _diff(stored, current)
        if differences:
            raise ConfigError(f"--workdir={workdir} holds a run with another config; use a new "
                              "workdir or the same flags. Differences:\n  "
                              + "\n  ".join(differences))
    atomic_write_json(path, current)


def _checkpoint_path(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, "checkpoints", f"classifier_{iteration:04d}.weights.h5")


def _save_iteration(workdir, model, state, results) -> None:
    """Weights first, then results, then state: state.json names a complete iteration."""
    path = _checkpoint_path(workdir, state.iteration)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)
    write_jsonl(os.path.join(workdir, "results.jsonl"), results)
    atomic_write_json(os.path.join(workdir, "state.json"), state.to_json())
    for name in os.listdir(os.path.dirname(path)):  # older checkpoints are no longer needed
        if name != os.path.basename(path):
            os.remove(os.path.join(os.path.dirname(path), name))


def load_progress(workdir: str) -> tuple[ActiveLearningState | None, list[dict], str | None]:
    """The last finished iteration's state, its results and classifier weights path, if any."""
    path = os.path.join(workdir, "state.json")
    if not os.path.exists(path):
        return None, [], None
    with open(path) as f:
        state = ActiveLearningState.from_json(json.load(f))
    results = [r for r in read_jsonl(os.path.join(workdir, "results.jsonl"))
               if r["iteration"] <= state.iteration]
    return state, results, _checkpoint_path(workdir, state.iteration)


def select(config: ExperimentConfig, state: ActiveLearningState, dataset: ArrayDataset,
           model, score_fn) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores a random subset of the pool and returns (acquired ids, their scores or None).

    The subset is drawn with a generator seeded by (seed, iteration), so a resumed run draws the
    same subset.
    """
    acq = config.acquisition
    rng = np.random.default_rng([config.seed, state.iteration + 1])
    size = min(acq.pool_subset, len(state.pool_ids))
    subset = np.sort(rng.choice(state.pool_ids, size, replace=False))
    if acq.method == "random" or acq.acquisition == "random":
        return subset[rng.permutation(size)[:acq.acquire_per_iteration]], None
    scores = np.asarray(score_fn(model, subset, dataset.x_train[subset], state.iteration + 1),
                        np.float64)
    chosen = acquisition.top_k(subset, scores, acq.acquire_per_iteration)
    by_id = dict(zip(subset.tolist(), scores.tolist()))
    return chosen, np.array([by_id[i] for i in chosen.tolist()])


def run(config: ExperimentConfig, workdir: str, dataset: ArrayDataset,
        learner: Learner) -> list[dict]:
    """Runs (or resumes) active learning for `config.iterations` acquisition iterations.

    Iteration 0 trains on the initial balanced labeled set; each later iteration scores the pool
    with the previous iteration's classifier, acquires, retrains from fresh weights and
    evaluates the final weights on the whole test split.

    Returns:
      One results dict per finished iteration (also in `<workdir>/results.jsonl`).
    """
    os.makedirs(workdir, exist_ok=True)
    check_workdir_config(config, workdir)
    state, results, weights = load_progress(workdir)
    model = None
    if state is None:
        state = initial_state(dataset.y_train, config.data.initial_per_class, config.seed)
        next_iteration = 0
    else:
        logging.info("Resuming %s after iteration %d (%d labeled)", workdir, state.iteration,
                     len(state.labeled_ids))
        next_iteration = state.iteration + 1
        if next_iteration <= config.iterations:
            model = learner.build(state.iteration, len(state.labeled_ids))
            model.load_weights(weights)

    for iteration in range(next_iteration, config.iterations + 1):
        start = time.time()
        acquired, scores = np.zeros(0, np.int64), None
        if iteration > 0:
            acquired, scores = select(config, state, dataset, model, learner.score)
            state = state.acquire(acquired)
        labeled = state.labeled_ids
        model = learner.build(iteration, len(labeled))
        train_metrics = learner.fit(model, dataset.x_train[labeled], dataset.y_train[labeled],
                                    iteration)
        accuracy = learner.evaluate(model, dataset.x_test, dataset.y_test)
        row = {
            "iteration": iteration,
            "num_labeled": int(len(labeled)),
            "num_pool": int(len(state.pool_ids)),
            "test_accuracy": float(accuracy),
            "acquired_ids": acquired.tolist(),
            "mean_score": None if scores is None else float(np.mean(scores)),
            "train_loss": train_metrics.get("loss"),
            "seconds": round(time.time() - start, 3),
        }
        results.append(row)
        _save_iteration(workdir, model, state, results)
        plot_accuracy(results, os.path.join(workdir, "accuracy.png"),
                      title=f"{config.data.dataset} / {config.model.name} / "
                            f"{config.acquisition.method}")
        logging.info("iteration %d/%d: %d labeled, test accuracy %.4f, mean score %s (%.1fs)",
                     iteration, config.iterations, row["num_labeled"], accuracy,
                     "-" if scores is None else f"{row['mean_score']:.4f}", row["seconds"])
    return results
