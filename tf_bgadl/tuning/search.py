"""One search in a workdir: Keras Tuner's oracle and trial storage, resume, distribution.

Workdir layout:
  search.json           the search's settings and base train config (a rerun must match them)
  trials/               Keras Tuner's project: oracle.json, <tuner id>.json, and per trial
    trial_<id>/           trial.json (values, metrics, status), launches.jsonl, run/ (the
                          trial's train workdir, without test accuracy), error.txt if it failed
  best.flags            the best trial's train flags (written by the entry point)
  best_test.json        the best trial's test accuracy, measured once after the search
  tune_report.md, tune_report.png

Resume: Keras Tuner reloads its oracle and trials (`overwrite=False`). Finished trials are not
run again; a trial that was running when the search stopped is handed out again first, and its
run resumes after its last finished iteration (a trial's run is an ordinary, resumable train
run). A larger `--max_trials` extends a finished search.

Distribution is Keras Tuner's: with `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT` and
`KERASTUNER_TUNER_ID` set, the process whose id contains `chief` serves the oracle (it runs no
trial) and every other one (`tuner0`, `tuner1`, ...) asks it for trials and runs them; all share
the workdir. The chief writes the report once every worker has been told to stop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import IO, Mapping

import grpc
import keras_tuner
import numpy as np

from tf_bgadl import config as config_lib
from tf_bgadl import data as data_lib
from tf_bgadl import serving_export, training
from tf_bgadl.state import atomic_write_json, utc_now
from tf_bgadl.tuning import report
from tf_bgadl.tuning import settings as settings_lib
from tf_bgadl.tuning import tuner as tuner_lib

PROJECT = "trials"
RECORD = "search.json"
BEST_TEST = "best_test.json"
TUNER_ID, ORACLE_IP, ORACLE_PORT = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP",
                                    "KERASTUNER_ORACLE_PORT")
SINGLE, CHIEF, WORKER = "single", "chief", "worker"
# Base-config keys that may differ between the processes or the reruns of one search.
_MAY_DIFFER = ("strategy", "num_replicas")
# Consecutive failed trials after which Keras Tuner stops a search.
MAX_CONSECUTIVE_FAILURES = 3


class SearchError(RuntimeError):
    """The search cannot run or went wrong; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a search process did and what the search holds now.

    Attributes:
      role: SINGLE, CHIEF or WORKER.
      ran: ids of the trials this process ran (none for a chief).
      records: every trial of the search, from disk.
      best: the best trial (`report.best_trial`), or None.
      seconds: how long this process searched.
      stopped: why Keras Tuner stopped the search early (consecutive failed trials), else None.
    """

    role: str
    ran: list
    records: list
    best: report.TrialRecord | None
    seconds: float
    stopped: str | None = None


def role(environ: Mapping[str, str] | None = None) -> str:
    """SINGLE, or CHIEF / WORKER in Keras Tuner's distributed mode (as Keras Tuner decides it).

    Raises:
      SearchError: KERASTUNER_ORACLE_IP is set without the port or the tuner id.
    """
    environ = os.environ if environ is None else environ
    if ORACLE_IP not in environ:
        return SINGLE
    missing = [v for v in (ORACLE_PORT, TUNER_ID) if not environ.get(v)]
    if missing:
        raise SearchError(f"{ORACLE_IP}={environ[ORACLE_IP]} is set, so this is a distributed "
                          f"search, but {' and '.join(missing)} is not: set {TUNER_ID}=chief on "
                          f"one process and tuner0, tuner1, ... on the others, and the same "
                          f"{ORACLE_PORT} on all")
    return CHIEF if "chief" in environ[TUNER_ID] else WORKER


def project_dir(workdir: str) -> str:
    return os.path.join(workdir, PROJECT)


def check_record(workdir: str, settings: settings_lib.SearchSettings,
                 base: config_lib.ExperimentConfig) -> None:
    """Writes search.json, or checks that the workdir's search has these settings.

    Raises:
      SearchError: the workdir holds a search of other settings (lists every difference).
    """
    path = os.path.join(workdir, RECORD)
    current = {"settings": settings.to_dict(), "base_config": base.to_dict()}
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        stored = {k: stored.get(k) for k in current}
        if isinstance(stored["base_config"], dict):  # recorded before newer config fields
            stored["base_config"] = config_lib.with_current_defaults(stored["base_config"])
        differences = [f"{key}: workdir has {a!r}, this command has {b!r}" for key, a, b in
                       config_lib.config_differences(stored, current, ignore=tuple(
                           f"base_config.{k}" for k in _MAY_DIFFER))]
        if differences:
            raise SearchError(f"--workdir={workdir} holds a search with other settings; use a "
                              "new --workdir or the same flags (only --max_trials and "
                              "--strategy may change). Differences:\n  "
                              + "\n  ".join(differences))
        return
    atomic_write_json(path, {**current, "created": utc_now()})


def check_data(config: config_lib.ExperimentConfig) -> None:
    """Loads the data set once and checks the sizes against it, before any trial starts.

    Raises:
      DataError, ConfigError: the data set is missing, or too small for the config.
    """
    dataset = data_lib.load_dataset(config.data.dataset, config.data.data_dir,
                                    config.data.manual_dir, image_size=config.data.image_size)
    known = dataset.y_train[dataset.y_train >= 0]
    config_lib.check_against_data(
        config, num_train=len(dataset.y_train), num_classes=dataset.num_classes,
        min_class_count=int(np.bincount(known, minlength=dataset.num_classes).min()),
        num_unlabeled=int((dataset.y_train < 0).sum()))


def make_oracle(settings: settings_lib.SearchSettings, iterations: int) -> keras_tuner.Oracle:
    """Keras Tuner's oracle of `settings.tuner`, maximising `settings.objective_name`.

    Hyperband's `max_epochs` is `iterations`: its budget is acquisition iterations.
    """
    common = dict(objective=keras_tuner.Objective(settings.objective_name, direction="max"),
                  # Keras Tuner's own limit raises inside `end_trial` before it saves the
                  # trial (left RUNNING, retried on every rerun) and, distributed, before it
                  # releases the worker (the chief then waits for good): the tuner counts
                  # failures itself instead (`ActiveLearningTuner.stop_after_failures`).
                  seed=settings.seed, max_consecutive_failed_trials=None)
    if settings.tuner == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=settings.max_trials,
                                                        **common)
    elif settings.tuner == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=settings.max_trials, num_initial_points=settings.initial_points(),
            **common)
    elif settings.tuner == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=iterations, factor=settings.hyperband_factor,
            hyperband_iterations=settings.hyperband_iterations, **common)
        # Hyperband runs as many trials as its brackets need; --max_trials caps them.
        oracle.max_trials = settings.max_trials
    else:
        raise SearchError(f"--tuner={settings.tuner!r}; choose one of "
                          f"{', '.join(settings_lib.TUNERS)}")
    oracle.verbose = 0  # the tuner prints its own progress lines
    return oracle


def _say(out: IO, line: str) -> None:
    print(line, file=out, flush=True)


def run_search(settings: settings_lib.SearchSettings, base: config_lib.ExperimentConfig,
               workdir: str, *, allow_replica_change: bool = False, out: IO | None = None,
               environ: Mapping[str, str] | None = None) -> Outcome:
    """Runs (or resumes) the search in `workdir`, or this process's part of a distributed one.

    Args:
      settings: the search.
      base: the train config every trial starts from (as `train.config_from_flags` gives it).
      workdir: the search folder (shared by every process of a distributed search).
      allow_replica_change: passed to every trial's run.
      out: where progress lines go (default stdout).
      environ: the environment that decides the role (default os.environ).

    Raises:
      ValueError (ConfigError included), DataError, SearchError: naming what is wrong.
    """
    out = out or sys.stdout
    who = role(environ)
    resolved = settings_lib.check(settings, base)
    os.makedirs(workdir, exist_ok=True)
    check_record(workdir, settings, resolved)
    if who != CHIEF:
        check_data(resolved)
    before = report.load_trials(project_dir(workdir))
    names = ", ".join(settings.space.names)
    _say(out, f"search {workdir}: {settings.tuner} search over {names}, objective "
              f"{settings.objective_name} (max), {settings.max_trials} trials")
    if before and who != WORKER:  # a worker joining a running search resumes nothing
        done = sum(t.completed for t in before)
        unfinished = [t.name for t in before if t.status == "RUNNING"]
        _say(out, f"resuming: {len(before)} trial(s) started before, {done} completed"
                  + (f"; {', '.join(unfinished)} continue(s) where its run stopped"
                     if unfinished else ""))
    environment = os.environ if environ is None else environ
    if who == CHIEF:
        _say(out, f"chief: serving the oracle on {environment[ORACLE_IP]}:"
                  f"{environment[ORACLE_PORT]}; the workers run the trials and print them")
    elif who == WORKER:
        _say(out, f"worker {environment[TUNER_ID]}: asking the chief at "
                  f"{environment[ORACLE_IP]}:{environment[ORACLE_PORT]} for trials")
    tuner = tuner_lib.ActiveLearningTuner(
        make_oracle(settings, resolved.iterations), tuner_lib.ConfigHyperModel(
            settings.space, base), directory=workdir, project_name=PROJECT,
        allow_replica_change=allow_replica_change, max_trials=settings.max_trials, out=out,
        # Distributed, failed trials are recorded and the search runs out its trials: stopping
        # one worker would leave the chief waiting for it.
        stop_after_failures=MAX_CONSECUTIVE_FAILURES if who == SINGLE else None)
    start = time.monotonic()
    stopped = None
    try:
        tuner.search()
    except (RuntimeError, grpc.RpcError) as e:  # consecutive failures, or Keras Tuner's errors
        stopped = (f"the search stopped: {(str(e).strip().splitlines() or ['?'])[0]}"
                   f" (each failed trial's traceback is in {project_dir(workdir)}/trial_<id>/"
                   "error.txt)")
        if who == WORKER:
            raise SearchError(stopped) from e
    records = report.load_trials(project_dir(workdir))
    full = resolved.iterations if settings.tuner == "hyperband" else None
    return Outcome(who, list(tuner.ran), records,
                   report.best_trial(records, settings.objective_name, full),
                   time.monotonic() - start, stopped)


def best_test_accuracy(workdir: str, best: report.TrialRecord) -> dict:
    """The best trial's final classifier evaluated on the test split, once.

    The first call evaluates and writes `best_test.json`; later calls for the same trial read
    it (rerunning a finished search does not look at the test split again).

    Returns:
      {"trial_id", "test_accuracy", "num_test", "num_labeled", "iteration", "time"}.
    """
    path = os.path.join(workdir, BEST_TEST)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("trial_id") == best.trial_id:
            return stored
    classifier, config, _, iteration = serving_export.restore_classifier(best.run_dir)
    dataset = data_lib.load_dataset(config.data.dataset, config.data.data_dir,
                                    config.data.manual_dir, image_size=config.data.image_size)
    accuracy = training.evaluate_accuracy(classifier, dataset.x_test, dataset.y_test,
                                          config.acquisition.score_batch_size)
    record = {"trial_id": best.trial_id, "test_accuracy": float(accuracy),
              "num_test": int(len(dataset.y_test)),
              "num_labeled": int(best.results[-1]["num_labeled"]), "iteration": int(iteration),
              "time": utc_now()}
    atomic_write_json(path, record)
    return record
