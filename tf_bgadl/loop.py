"""The active-learning loop: reset, train, evaluate, score the pool, acquire, repeat.

The loop knows nothing about TensorFlow models beyond `save_weights`/`load_weights`: it receives
its model factory, training, evaluation and scoring functions, so it is tested without training.
After every iteration it checkpoints atomically to the workdir; rerunning on the same workdir
resumes after the last finished iteration.

Workdir layout:
  config.json                   the resolved config (a run refuses a workdir of another config)
  dataset.json                  image shape and number of classes (what export needs)
  results.jsonl                 one JSON line per finished iteration
  state.json                    labeled / pool ids after the last finished iteration, and the
                                labels a person gave (`--oracle=file`)
  queries/iter_NNNN.{csv,png,json}  the images an iteration asks a person to label (oracle.py)
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

from tf_bgadl import acquisition, oracle, stopping
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
      predict: (model, images uint8 [K,H,W,C]) -> predictive probabilities [K, C] of the
        classifier (deterministic), shown to the person labeling (`--oracle=file`); or None.
    """

    build: Callable[[int, int, Any], Any]
    fit: Callable[[Any, np.ndarray, np.ndarray, np.ndarray, int], dict]
    evaluate: Callable[[Any, np.ndarray, np.ndarray], float]
    score: Callable[[Any, np.ndarray, np.ndarray, int], np.ndarray]
    generate: Callable[[Any, np.ndarray, np.ndarray, int], np.ndarray] | None = None
    persist_generated: bool = False
    prepare: Callable[[Any, int, np.ndarray], Any] | None = None
    predict: Callable[[Any, np.ndarray], np.ndarray] | None = None


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
        if (any(d.startswith(("generator.carry_over:", "generator.pool_steps"))
                for d in differences) and _on_old_generator_schedule(stored)):
            differences.append("(vaeacgan's generator schedule before its defaults changed: "
                               f"{_OLD_GENERATOR_FLAGS})")
        if differences:
            raise ConfigError(f"--workdir={workdir} holds a run with another config; use a new "
                              "workdir or the same flags. Differences:\n  "
                              + "\n  ".join(differences))
    atomic_write_json(path, current)


# vaeacgan's generator defaults before issue 13 (a fresh VAE-ACGAN every iteration, 1,000 pool
# steps each time, e, g, d on every joint step), and the flags that resume such a run.
_OLD_GENERATOR_SCHEDULE = {"carry_over": False, "pool_steps": 1000, "pool_steps_fresh": 0,
                           "update_every": 1}
_OLD_GENERATOR_FLAGS = ("--nogan_carry_over --gan_pool_steps=1000 --gan_pool_steps_fresh=0 "
                        "--gan_update_every=1")


def _on_old_generator_schedule(stored: dict) -> bool:
    """Whether a stored config is a vaeacgan run on `_OLD_GENERATOR_SCHEDULE` (a key it lacks,
    written before that key existed, reads as the old value)."""
    gen = stored.get("generator", {})
    return (stored.get("acquisition", {}).get("method") == "vaeacgan"
            and all(gen.get(k, v) == v for k, v in _OLD_GENERATOR_SCHEDULE.items()))


def _checkpoint_path(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, "checkpoints", f"classifier_{iteration:04d}.weights.h5")


def _save_iteration(workdir, model, state, generated, results, given_labels) -> None:
    """Weights, generated samples, results, then state: state.json names a complete iteration."""
    path = _checkpoint_path(workdir, state.iteration)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)
    generated.save(os.path.join(workdir, "generated.npz"))
    write_jsonl(os.path.join(workdir, "results.jsonl"), results)
    atomic_write_json(os.path.join(workdir, "state.json"),
                      {**state.to_json(), "num_generated": len(generated),
                       "oracle_labels": {str(i): int(y) for i, y in given_labels.items()}})
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


def load_given_labels(workdir: str) -> dict[int, int]:
    """{training id: label} that a person gave (`--oracle=file`) up to the last finished
    iteration (empty for a simulated oracle or a new run)."""
    path = os.path.join(workdir, "state.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {int(i): int(y) for i, y in json.load(f).get("oracle_labels", {}).items()}


def select(config: ExperimentConfig, state: ActiveLearningState, dataset: ArrayDataset,
           model, score_fn, k: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores a random subset of the pool and returns (acquired ids, their scores or None).

    The subset is drawn with a generator seeded by (seed, iteration), so a resumed run draws the
    same subset; the same generator then draws what a random or stochastic selection draws
    (the random method's ids, power/softmax/softrank_bald's Gumbel noise, batchbald's sampled
    configurations). The scores returned are the per-image score of the acquired ids (BALD for
    the batch-aware acquisitions, docs/acquisition.md), in acquisition order. `k` images are
    acquired (default `acquire_per_iteration`; fewer when `--max_labels` cuts the last batch).
    """
    acq = config.acquisition
    k = acq.acquire_per_iteration if k is None else k
    rng = np.random.default_rng([config.seed, state.iteration + 1])
    size = min(acq.pool_subset, len(state.pool_ids))
    subset = np.sort(rng.choice(state.pool_ids, size, replace=False))
    if not uses_mc_scores(config):
        return subset[rng.permutation(size)[:k]], None
    if acq.acquisition == "batchbald":  # joint MC samples: one dropout mask per t for the pool
        probs = score_fn(model, subset, dataset.x_train[subset], state.iteration + 1,
                         mc_probs=True)
        batch = acquisition.batchbald(probs, min(k, size), rng=rng,
                                      num_samples=acq.batchbald_samples)
        logging.info("BatchBALD: joint mutual information %.4f nats of the %d acquired (%d "
                     "steps exact)", batch.joint_mi[-1], len(batch.indices), batch.exact.sum())
        return (subset[batch.indices],
                np.asarray(acquisition.bald(probs[batch.indices]), np.float64))
    scores = np.asarray(score_fn(model, subset, dataset.x_train[subset], state.iteration + 1),
                        np.float64)
    if acq.acquisition in acquisition.STOCHASTIC:
        chosen = acquisition.stochastic_top_k(
            subset, scores, min(k, size), rng=rng, temperature=acq.temperature,
            mode=acquisition.STOCHASTIC[acq.acquisition][0])
    else:
        chosen = acquisition.top_k(subset, scores, min(k, size))
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
        allow_replica_change: bool = False, labels_from: str | None = None) -> list[dict]:
    """Runs (or resumes) active learning for `config.iterations` acquisition iterations.

    Iteration 0 trains on the initial balanced labeled set; each later iteration scores the pool
    with the previous iteration's classifier, acquires, retrains from fresh weights and
    evaluates the final weights on the whole test split (and on the validation split, when
    `config.data.validation_per_class` holds one out; it is never acquired or trained on).
    A dataset with an empty test split is not tested: `test_accuracy` is None in its results.

    The run stops early after an iteration where a stopping rule holds (`stopping.py`) or the
    pool is empty; that iteration's results line says why (`stop_reason`). With
    `config.data.oracle == "file"` an acquiring iteration first asks a person: it writes its
    queries (oracle.py) and raises `oracle.LabelsNeeded`; the same call again, once the file is
    filled, reads and checks the labels and goes on. Images added to a folder data set since the
    last iteration (new ids) join the pool.

    Args:
      config: the run's config.
      workdir: the run's folder.
      dataset: the data set in memory (`y_train` UNLABELED where no label is known).
      learner: what the loop does with models.
      on_iteration: called after each finished (checkpointed) iteration with its results line
        and the path of its sample grid (None without generation), e.g. to write TensorBoard.
      allow_replica_change: see `check_workdir_config`.
      labels_from: `--oracle=file` only: read the asking iteration's labels from this CSV
        instead of its `queries/iter_NNNN.csv`.

    Returns:
      One results dict per finished iteration (also in `<workdir>/results.jsonl`).

    Raises:
      oracle.LabelsNeeded: the next iteration waits for a person's labels (not an error).
      oracle.LabelFileError: the filled labels file is not valid (nothing was changed).
      ConfigError: the workdir holds another config, or a simulated oracle would have to
        label an image without a label.
    """
    if labels_from and config.data.oracle != "file":
        raise ConfigError(f"--labels_from={labels_from} applies to --oracle=file only (this run "
                          f"has --oracle={config.data.oracle})")
    os.makedirs(workdir, exist_ok=True)
    check_workdir_config(config, workdir, allow_replica_change=allow_replica_change)
    atomic_write_json(os.path.join(workdir, "dataset.json"), {
        "name": dataset.name, "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes, "num_train": len(dataset.y_train),
        "num_test": len(dataset.y_test),
        **({"class_names": list(dataset.class_names)} if dataset.class_names else {})})
    state, generated, results, weights = load_progress(workdir, dataset.image_shape)
    given = load_given_labels(workdir)
    dataset = _with_labels(dataset, given)
    model = None
    if state is None:
        state = initial_state(dataset.y_train, config.data.initial_per_class, config.seed,
                              config.data.validation_per_class)
        if (dataset.y_train < 0).any():
            logging.info("%d images without a label form the pool; the %d labeled training "
                         "images start labeled (--initial_per_class is not used)",
                         len(state.pool_ids), len(state.labeled_ids))
        if 0 < config.acquisition.max_labels < len(state.labeled_ids):
            raise ConfigError(f"--max_labels={config.acquisition.max_labels} is below the "
                              f"{len(state.labeled_ids)} images labeled at the start; it counts "
                              "every labeled training image, the initial ones included")
        next_iteration = 0
    else:
        logging.info("Resuming %s after iteration %d (%d labeled)", workdir, state.iteration,
                     len(state.labeled_ids))
        state = _add_new_ids(state, dataset.y_train)
        next_iteration = state.iteration + 1
        reason = _stop_reason(config, state, results)
        if reason and next_iteration <= config.iterations:
            logging.info("The run stopped after iteration %d: %s. %s", state.iteration, reason,
                         "Add images to continue." if reason.startswith("pool empty")
                         else "Relax that rule to continue.")
            return results
        if next_iteration <= config.iterations:
            model = learner.build(state.iteration, len(state.labeled_ids),
                                  len(state.labeled_ids) + len(generated), None)
            model.load_weights(weights)

    for iteration in range(next_iteration, config.iterations + 1):
        start = time.time()
        acquired, scores, extra = np.zeros(0, np.int64), None, {}
        if iteration > 0:
            k = stopping.acquisition_size(config.acquisition, len(state.labeled_ids))
            if config.data.oracle == "file":
                acquired, scores, answers = _ask_person(config, workdir, iteration, state,
                                                        dataset, learner, model, k, labels_from)
                extra["num_skipped"] = int(sum(y == oracle.SKIPPED for y in answers.values()))
                given = {**given, **{i: answers[i] for i in acquired.tolist()}}
                dataset = _with_labels(dataset, given)
                if learner.prepare is not None:
                    learner.prepare(model, iteration - 1, dataset.x_train[state.pool_ids])
            else:
                if learner.prepare is not None:
                    learner.prepare(model, iteration - 1, dataset.x_train[state.pool_ids])
                acquired, scores = select(config, state, dataset, model, learner.score, k)
                unknown = acquired[dataset.y_train[acquired] < 0]
                if unknown.size:
                    raise ConfigError(f"the simulated oracle cannot label ids {unknown[:10]} "
                                      "(no label known); use --oracle=file")
            state = state.acquire(acquired)
            if learner.generate is not None and len(acquired):
                generated, diagnostics = _generate(workdir, learner, model, dataset, acquired,
                                                   generated, iteration)
                extra.update(diagnostics)
        labeled = state.labeled_ids
        images = np.concatenate([dataset.x_train[labeled], generated.images])
        labels = np.concatenate([dataset.y_train[labeled], generated.labels])
        if (labels < 0).any():  # never train on an unknown label
            raise RuntimeError(f"labeled ids without a label: {labeled[labels[:len(labeled)] < 0]}")
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
            "mean_score": None if scores is None or not len(scores) else float(np.mean(scores)),
            "num_generated": len(generated),
            "train_loss": train_metrics.get("loss", train_metrics.get("classifier_loss")),
            **extra,
            "seconds": round(time.time() - start, 3),
        }
        reason = _stop_reason(config, state, [*results, row])
        if reason or iteration == config.iterations:
            row["stop_reason"] = reason or f"iterations: --iterations={config.iterations} done"
        results.append(row)
        _save_iteration(workdir, model, state, generated, results, given)
        plot_accuracy(results, os.path.join(workdir, "accuracy.png"),
                      title=f"{config.data.dataset} / {config.model.name} / "
                            f"{config.acquisition.method}")
        if on_iteration is not None:
            on_iteration(row, samples_path(workdir, iteration)
                         if "reconstruction_error" in extra else None)
        logging.info("iteration %d/%d: %d labeled, test accuracy %s%s, mean score %s (%.1fs)",
                     iteration, config.iterations, row["num_labeled"],
                     "not measured" if accuracy is None else f"{accuracy:.4f}",
                     "".join(f", validation accuracy {v:.4f}" for v in validation.values()),
                     "-" if row["mean_score"] is None else f"{row['mean_score']:.4f}",
                     row["seconds"])
        if reason:
            logging.info("Stopping after iteration %d: %s", iteration, reason)
            break
    return results


def _stop_reason(config: ExperimentConfig, state: ActiveLearningState,
                 results: list[dict]) -> str | None:
    """Why the run stops after `results[-1]` (a stopping rule, or an empty pool), or None."""
    reason = stopping.stop_reason(config.acquisition, results)
    if reason is None and not len(state.pool_ids):
        reason = "pool empty: every image of the pool is labeled"
    return reason


def _with_labels(dataset: ArrayDataset, given: dict[int, int]) -> ArrayDataset:
    """`dataset` with the labels a person gave (SKIPPED entries ignored) in `y_train`."""
    ids = [i for i, y in given.items() if y >= 0]
    if not ids:
        return dataset
    y_train = dataset.y_train.copy()
    y_train[ids] = [given[i] for i in ids]
    return dataclasses.replace(dataset, y_train=y_train)


def _add_new_ids(state: ActiveLearningState, labels: np.ndarray) -> ActiveLearningState:
    """Training ids that no part of the state knows (images added to a folder since the last
    iteration): with labels known for some images only (a folder with unlabeled/ images),
    new labeled images (train/<class>/) join the labeled set and new unlabeled ones the pool;
    when every label is known (the pool hides them, simulated oracle), all join the pool."""
    num_train = len(labels)
    known = np.concatenate([state.labeled_ids, state.pool_ids, state.validation_ids])
    if known.size and known.max() >= num_train:
        raise ConfigError(f"the run's state names training id {int(known.max())} but the data "
                          f"set has {num_train} training images: images were removed")
    new = np.setdiff1d(np.arange(num_train), known)
    if not new.size:
        return state
    to_labeled = new[labels[new] >= 0] if (labels < 0).any() else new[:0]
    to_pool = np.setdiff1d(new, to_labeled)
    logging.info("%d new images: %d join the labeled set (labeled in their folder), %d the "
                 "pool", new.size, to_labeled.size, to_pool.size)
    return dataclasses.replace(state, labeled_ids=np.concatenate([state.labeled_ids, to_labeled]),
                               pool_ids=np.union1d(state.pool_ids, to_pool))


def _ask_person(config, workdir, iteration, state, dataset, learner, model, k, labels_from):
    """`--oracle=file`: the ids of `iteration`'s queries that a person labeled, their scores,
    and every answer ({id: class or oracle.SKIPPED}).

    The first call selects (as the simulated oracle would), writes the queries and raises
    `oracle.LabelsNeeded`; a later call reads what the selection asked from the queries' json
    (the selection is not redone) and the labels from the CSV (or `labels_from`), checked as a
    whole before anything changes.
    """
    def ask(ids, scores):
        images = dataset.x_train[ids]
        probabilities = learner.predict(model, images) if learner.predict is not None else None
        paths = oracle.write_queries(workdir, iteration, ids, scores, images,
                                     sources=dataset.train_sources,
                                     class_names=dataset.class_names,
                                     probabilities=probabilities)
        raise oracle.LabelsNeeded(iteration, paths["csv"], paths["png"], len(ids))

    asked = oracle.load_queries(workdir, iteration)
    if asked is None:
        if labels_from:
            logging.warning("--labels_from=%s is read for the iteration that waits for labels; "
                            "none waits yet, so it is not read: iteration %d asks now",
                            labels_from, iteration)
        ask(*select(config, state, dataset, model, learner.score, k))
    ids = np.asarray(asked["ids"], np.int64)
    missing = np.setdiff1d(ids, state.pool_ids)
    if missing.size:
        raise ConfigError(f"{oracle.query_paths(workdir, iteration)['json']} asks for ids "
                          f"{missing[:10].tolist()} that are not in the pool of this run")
    paths = oracle.query_paths(workdir, iteration)
    if not labels_from and not os.path.exists(paths["csv"]):  # deleted: written again
        ask(ids, None if asked.get("scores") is None else np.asarray(asked["scores"]))
    if not labels_from and oracle.is_unfilled(paths["csv"]):
        raise oracle.LabelsNeeded(iteration, paths["csv"], paths["png"], len(ids))
    path = labels_from or paths["csv"]
    answers = oracle.read_labels(path, ids.tolist(), class_names=dataset.class_names,
                                 num_classes=dataset.num_classes)
    keep = np.array([answers[i] != oracle.SKIPPED for i in ids.tolist()], bool)
    scores = None if asked.get("scores") is None else np.asarray(asked["scores"], np.float64)
    logging.info("Read %d labels (%d skipped) from %s", int(keep.sum()), int((~keep).sum()), path)
    return ids[keep], None if scores is None else scores[keep], answers
