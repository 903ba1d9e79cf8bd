"""The active-learning loop: reset, train, evaluate, score the pool, acquire, repeat.

The loop knows nothing about TensorFlow models beyond `save_weights`/`load_weights`: it receives
its model factory, training, evaluation and scoring functions, so it is tested without training.
After every iteration it checkpoints atomically to the workdir; rerunning on the same workdir
resumes after the last finished iteration.

Workdir layout:
  config.json                   the resolved config (a run refuses a workdir of another config)
  dataset.json                  image shape and number of classes (what export needs)
  results.jsonl                 one JSON line per finished iteration
  state.json                    labeled / pool ids after the last finished iteration
  generated.npz                 generated samples x' that joined the labeled set (persisted)
  samples/iter_NNNN.png         acquired x* next to generated x', per class
  checkpoints/classifier_NNNN.weights.h5   classifier of the last finished iteration
  accuracy.png                  test accuracy against the number of labeled examples
  tensorboard/                  event files (written by the caller's `on_iteration`)
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
from tf_bgadl.config import (RESUMABLE_KEYS, ConfigError, ExperimentConfig, config_differences,
                             uses_mc_scores)
from tf_bgadl.data import ArrayDataset
from tf_bgadl.plotting import plot_accuracy, plot_sample_grid
from tf_bgadl.state import (ActiveLearningState, GeneratedSet, atomic_write_json, initial_state,
                            read_jsonl, write_jsonl)

@dataclasses.dataclass(frozen=True)
class Learner:
    """What the loop does with models, passed in by the caller.

    Attributes:
      build: (iteration, num_labeled, num_rows, previous model or None) -> a compiled model;
        num_labeled counts oracle labels, num_rows labeled plus generated rows; `previous` is
        the model of the iteration before (None at the start), which the learner may copy
        weights from (warm start, generative networks carried over) or ignore.
      fit: (model, images uint8 [L,H,W,C], labels [L], is_generated bool [L], iteration)
        -> training metrics.
      evaluate: (model, images, labels) -> accuracy (on the test or the validation split).
      score: (model, ids [P], images [P,H,W,C], iteration) -> acquisition scores [P] tied to
        `ids`, a function of the model's weights, the images and the iteration only; with
        `mc_probs=True` (--acquisition=batchbald) the joint MC-dropout probabilities
        [P, T, C] instead, MC sample t under one dropout mask shared by the whole pool.
      generate: (model, images uint8 [K,H,W,C], labels [K], iteration) -> generated uint8
        images [K,H,W,C]; None for methods without a generative model.
      persist_generated: whether generated samples join the labeled set.
      prepare: (model, iteration of that model, pool images uint8 [P,H,W,C]) -> None (a
        return value is ignored; the learner logs what it measures), or None for no hook.
        Called at the start of every iteration > 0 with the previous iteration's model
        (the restored one after a resume) and the pool's images (never their labels), before
        the pool is scored; it must leave what `score` reads unchanged. The VAE-ACGAN's pool
        phase runs here rather than at the end of `fit`: no pool phase is trained after the
        last iteration, where nothing would be generated from it.
    """

    build: Callable[[int, int, Any], Any]
    fit: Callable[[Any, np.ndarray, np.ndarray, np.ndarray, int], dict]
    evaluate: Callable[[Any, np.ndarray, np.ndarray], float]
    score: Callable[[Any, np.ndarray, np.ndarray, int], np.ndarray]
    generate: Callable[[Any, np.ndarray, np.ndarray, int], np.ndarray] | None = None
    persist_generated: bool = False
    prepare: Callable[[Any, int, np.ndarray], Any] | None = None


def check_workdir_config(config: ExperimentConfig, workdir: str, *,
                         allow_replica_change: bool = False) -> None:
    """Writes config.json, or checks that the workdir's config matches this one.

    Args:
      config: this run's config.
      workdir: the run's folder.
      allow_replica_change: accept a resume on another number of replicas (BatchNorm is
        synchronised over the replicas, so the continued run computes something else).

    Raises:
      ConfigError: the workdir holds a run of another config (lists every difference).
    """
    path = os.path.join(workdir, "config.json")
    current = config.to_dict()
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        ignore = RESUMABLE_KEYS + (("num_replicas",) if allow_replica_change else ())
        differences = [f"{key}: workdir has {a!r}, this run has {b!r}"
                       for key, a, b in config_differences(stored, current, ignore=ignore)]
        if any(d.startswith("num_replicas:") for d in differences):
            differences.append("(a resume on another number of replicas changes BatchNorm "
                               "synchronisation; pass --allow_replica_change to accept it)")
        if differences:
            raise ConfigError(f"--workdir={workdir} holds a run with another config; use a new "
                              "workdir or the same flags. Differences:\n  "
                              + "\n  ".join(differences))
    atomic_write_json(path, current)


def _checkpoint_path(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, "checkpoints", f"classifier_{iteration:04d}.weights.h5")


def _save_iteration(workdir, model, state, generated, results) -> None:
    """Weights, generated samples, results, then state: state.json names a complete iteration."""
    path = _checkpoint_path(workdir, state.iteration)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)
    generated.save(os.path.join(workdir, "generated.npz"))
    write_jsonl(os.path.join(workdir, "results.jsonl"), results)
    atomic_write_json(os.path.join(workdir, "state.json"),
                      {**state.to_json(), "num_generated": len(generated)})
    for name in os.listdir(os.path.dirname(path)):  # older checkpoints are no longer needed
        if name != os.path.basename(path):
            os.remove(os.path.join(os.path.dirname(path), name))


def load_progress(workdir: str, image_shape) -> tuple[ActiveLearningState | None, GeneratedSet,
                                                      list[dict], str | None]:
    """The last finished iteration's state, generated set, results and weights path, if any."""
    path = os.path.join(workdir, "state.json")
    if not os.path.exists(path):
        return None, GeneratedSet.empty(image_shape), [], None
    with open(path) as f:
        stored = json.load(f)
    state = ActiveLearningState.from_json(stored)
    generated = GeneratedSet.empty(image_shape)
    if stored.get("num_generated", 0):
        generated = GeneratedSet.load(os.path.join(workdir, "generated.npz"),
                                      stored["num_generated"])
    results = [r for r in read_jsonl(os.path.join(workdir, "results.jsonl"))
               if r["iteration"] <= state.iteration]
    return state, generated, results, _checkpoint_path(workdir, state.iteration)


def select(config: ExperimentConfig, state: ActiveLearningState, dataset: ArrayDataset,
           model, score_fn) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores a random subset of the pool and returns (acquired ids, their scores or None).

    The subset is drawn with a generator seeded by (seed, iteration), so a resumed run draws the
    same subset; the same generator then draws what a random or stochastic selection draws
    (the random method's ids, power/softmax/softrank_bald's Gumbel noise, batchbald's sampled
    configurations). The scores returned are the per-image score of the acquired ids (BALD for
    the batch-aware acquisitions, docs/acquisition.md), in acquisition order.
    """
    acq = config.acquisition
    rng = np.random.default_rng([config.seed, state.iteration + 1])
    size = min(acq.pool_subset, len(state.pool_ids))
    subset = np.sort(rng.choice(state.pool_ids, size, replace=False))
    if not uses_mc_scores(config):
        return subset[rng.permutation(size)[:acq.acquire_per_iteration]], None
    if acq.acquisition == "batchbald":  # joint MC samples: one dropout mask per t for the pool
        probs = score_fn(model, subset, dataset.x_train[subset], state.iteration + 1,
                         mc_probs=True)
        batch = acquisition.batchbald(probs, acq.acquire_per_iteration, rng=rng,
                                      num_samples=acq.batchbald_samples)
        logging.info("BatchBALD: joint mutual information %.4f nats of the %d acquired (%d "
                     "steps exact)", batch.joint_mi[-1], len(batch.indices), batch.exact.sum())
        return (subset[batch.indices],
                np.asarray(acquisition.bald(probs[batch.indices]), np.float64))
    scores = np.asarray(score_fn(model, subset, dataset.x_train[subset], state.iteration + 1),
                        np.float64)
    if acq.acquisition in acquisition.STOCHASTIC:
        chosen = acquisition.stochastic_top_k(
            subset, scores, acq.acquire_per_iteration, rng=rng, temperature=acq.temperature,
            mode=acquisition.STOCHASTIC[acq.acquisition][0])
    else:
        chosen = acquisition.top_k(subset, scores, acq.acquire_per_iteration)
    by_id = dict(zip(subset.tolist(), scores.tolist()))
    return chosen, np.array([by_id[i] for i in chosen.tolist()])


def _generate(workdir, learner, model, dataset, acquired, generated, iteration):
    """x' for the acquired x*; adds them to `generated` when persisted; returns diagnostics.

    Diagnostics: `reconstruction_error` (mean L2 distance ||x' - x*|| in [0, 1] pixel units, the
    slides' Figure 3) and `score_acquired` / `score_generated` (mean acquisition score of x* and
    of x' under the classifier that scored the pool: the Proposition 2.1 check).
    """
    x_star, y_star = dataset.x_train[acquired], dataset.y_train[acquired]
    x_prime = learner.generate(model, x_star, y_star, iteration)
    diff = (x_prime.astype(np.float32) - x_star.astype(np.float32)) / 255.0
    distance = np.sqrt(np.sum(diff.reshape(len(diff), -1) ** 2, axis=1))
    both = np.concatenate([x_star, x_prime])
    ids = np.concatenate([acquired, -1 - np.arange(len(x_prime))])  # x' get negative ids
    scores = np.asarray(learner.score(model, ids, both, iteration), np.float64)
    extra = {"reconstruction_error": float(distance.mean()),
             "score_acquired": float(scores[:len(acquired)].mean()),
             "score_generated": float(scores[len(acquired):].mean())}
    plot_sample_grid(x_star, x_prime, y_star, samples_path(workdir, iteration),
                     title=f"iteration {iteration}: acquired x* | generated x'")
    if learner.persist_generated:
        generated = generated.add(x_prime, y_star, acquired, iteration)
    return generated, extra


def samples_path(workdir: str, iteration: int) -> str:
    """The x* | x' grid of `iteration` (generative methods)."""
    return os.path.join(workdir, "samples", f"iter_{iteration:04d}.png")


def run(config: ExperimentConfig, workdir: str, dataset: ArrayDataset,
        learner: Learner,
        on_iteration: Callable[[dict, str | None], None] | None = None, *,
        allow_replica_change: bool = False) -> list[dict]:
    """Runs (or resumes) active learning for `config.iterations` acquisition iterations.

    Iteration 0 trains on the initial balanced labeled set; each later iteration scores the pool
    with the previous iteration's classifier, acquires, retrains from fresh weights and
    evaluates the final weights on the whole test split (and on the validation split, when
    `config.data.validation_per_class` holds one out; it is never acquired or trained on).
    A dataset with an empty test split is not tested: `test_accuracy` is None in its results.

    Args:
      config: the run's config.
      workdir: the run's folder.
      dataset: the data set in memory.
      learner: what the loop does with models.
      on_iteration: called after each finished (checkpointed) iteration with its results line
        and the path of its sample grid (None without generation), e.g. to write TensorBoard.
      allow_replica_change: see `check_workdir_config`.

    Returns:
      One results dict per finished iteration (also in `<workdir>/results.jsonl`).
    """
    os.makedirs(workdir, exist_ok=True)
    check_workdir_config(config, workdir, allow_replica_change=allow_replica_change)
    atomic_write_json(os.path.join(workdir, "dataset.json"), {
        "name": dataset.name, "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes, "num_train": len(dataset.y_train),
        "num_test": len(dataset.y_test)})
    state, generated, results, weights = load_progress(workdir, dataset.image_shape)
    model = None
    if state is None:
        state = initial_state(dataset.y_train, config.data.initial_per_class, config.seed,
                              config.data.validation_per_class)
        next_iteration = 0
    else:
        logging.info("Resuming %s after iteration %d (%d labeled)", workdir, state.iteration,
                     len(state.labeled_ids))
        next_iteration = state.iteration + 1
        if next_iteration <= config.iterations:
            model = learner.build(state.iteration, len(state.labeled_ids),
                                  len(state.labeled_ids) + len(generated), None)
            model.load_weights(weights)

    for iteration in range(next_iteration, config.iterations + 1):
        start = time.time()
        acquired, scores, extra = np.zeros(0, np.int64), None, {}
        if iteration > 0:
            if learner.prepare is not None:
                learner.prepare(model, iteration - 1, dataset.x_train[state.pool_ids])
            acquired, scores = select(config, state, dataset, model, learner.score)
            state = state.acquire(acquired)
            if learner.generate is not None:
                generated, extra = _generate(workdir, learner, model, dataset, acquired,
                                             generated, iteration)
        labeled = state.labeled_ids
        images = np.concatenate([dataset.x_train[labeled], generated.images])
        labels = np.concatenate([dataset.y_train[labeled], generated.labels])
        is_generated = np.arange(len(labels)) >= len(labeled)
        model = learner.build(iteration, len(labeled), len(labels), model)
        train_metrics = learner.fit(model, images, labels, is_generated, iteration)
        # A dataset without a test split (a tuning trial's: tf_bgadl.tuning) is never tested.
        accuracy = (float(learner.evaluate(model, dataset.x_test, dataset.y_test))
                    if len(dataset.y_test) else None)
        validation = {}
        if len(state.validation_ids):
            validation["validation_accuracy"] = float(learner.evaluate(
                model, dataset.x_train[state.validation_ids],
                dataset.y_train[state.validation_ids]))
        row = {
            "iteration": iteration,
            "num_labeled": int(len(labeled)),
            "num_pool": int(len(state.pool_ids)),
            "test_accuracy": accuracy,
            **validation,
            "acquired_ids": acquired.tolist(),
            "mean_score": None if scores is None else float(np.mean(scores)),
            "num_generated": len(generated),
            "train_loss": train_metrics.get("loss", train_metrics.get("classifier_loss")),
            **extra,
            "seconds": round(time.time() - start, 3),
        }
        results.append(row)
        _save_iteration(workdir, model, state, generated, results)
        plot_accuracy(results, os.path.join(workdir, "accuracy.png"),
                      title=f"{config.data.dataset} / {config.model.name} / "
                            f"{config.acquisition.method}")
        if on_iteration is not None:
            on_iteration(row, samples_path(workdir, iteration) if extra else None)
        logging.info("iteration %d/%d: %d labeled, test accuracy %s%s, mean score %s (%.1fs)",
                     iteration, config.iterations, row["num_labeled"],
                     "not measured" if accuracy is None else f"{accuracy:.4f}",
                     "".join(f", validation accuracy {v:.4f}" for v in validation.values()),
                     "-" if scores is None else f"{row['mean_score']:.4f}", row["seconds"])
    return results
