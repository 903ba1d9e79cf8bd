"""Keras Tuner's side of a search: the HyperModel is a train config, a trial is a run.

`ConfigHyperModel.build(hp)` declares the search space in Keras Tuner's `HyperParameters` and
returns the trial's `ExperimentConfig` (the base train config with the drawn values), not a
Keras model: a trial trains a classifier (and a VAE-ACGAN) at every acquisition iteration, so
there is no single model to hand back, and `get_best_models` is never used.

`ActiveLearningTuner` (a `keras_tuner.engine.base_tuner.BaseTuner`) runs a trial as one ordinary
active-learning run (`experiment.train_and_evaluate`, the code path of `tf_bgadl.train`) in
`<trial dir>/run/`, without the test split, and reports both validation objectives. Hyperband's
budget (`tuner/epochs`) is the number of acquisition iterations: a trial it promotes continues a
copy of its parent's run from the parent's last iteration (`tuner/initial_epoch`), as a resumed
train run does.

Files a trial adds next to Keras Tuner's `trial.json`:
  run/            the trial's train workdir (config.json, results.jsonl, checkpoints, ...)
  launches.jsonl  one line per start of the trial: which tuner, host and process ran it
  error.txt       the traceback of a trial that raised
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import time
import traceback
from typing import IO

import keras
import keras_tuner
from keras_tuner.engine import base_tuner
from keras_tuner.engine.trial import TrialStatus

from tf_bgadl import config as config_lib
from tf_bgadl import experiment
from tf_bgadl.state import utc_now
from tf_bgadl.tuning import objectives, search_space

RUN_DIR = "run"
LAUNCHES = "launches.jsonl"
ERROR_FILE = "error.txt"
# Keras Tuner's Hyperband entries in a trial's values (not hyperparameters of the run).
EPOCHS, PARENT = "tuner/epochs", "tuner/trial_id"


class ConfigHyperModel(keras_tuner.HyperModel):
    """`build(hp)` -> the trial's train config (`SearchSpace.apply` of the drawn values)."""

    def __init__(self, space: search_space.SearchSpace, base: config_lib.ExperimentConfig):
        super().__init__(name="tf_bgadl_active_learning")
        self.space = space
        self.base = base

    def build(self, hp) -> config_lib.ExperimentConfig:
        config = self.space.apply(self.base, self.space.declare(hp))
        if EPOCHS in hp.values:  # Hyperband: the trial's budget of acquisition iterations
            config = dataclasses.replace(config, iterations=int(hp.values[EPOCHS]))
        return config


def trial_number(trial_id: str) -> int:
    """1-based: Keras Tuner numbers its trials 0, 1, ... in the order it creates them."""
    return int(trial_id) + 1


def describe_values(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items() if not k.startswith("tuner/"))


def _copy_run(source: str, target: str) -> None:
    """Copies a finished trial's run to start a promoted trial from it (atomically)."""
    if not os.path.exists(os.path.join(source, "state.json")):
        raise RuntimeError(f"Hyperband continues the run in {source}, which has no finished "
                           "iteration")
    tmp = f"{target}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("tensorboard"))
    os.replace(tmp, target)


class ActiveLearningTuner(base_tuner.BaseTuner):
    """Runs each trial as an active-learning run without its test split.

    Args:
      oracle: Keras Tuner's oracle (random, Bayesian or Hyperband) with the objective
        `objectives.OBJECTIVES[...]`, direction max.
      hypermodel: the ConfigHyperModel.
      directory, project_name: Keras Tuner's trial storage, `<directory>/<project_name>/`.
      allow_replica_change: passed to every run (a resumed trial on another replica count).
      max_trials: the N of "trial k of N" in progress lines.
      out: where progress lines go.
      stop_after_failures: raise `RuntimeError` once this many trials in a row (of this
        process) have failed, after the last one is saved as failed; None: never.
    """

    def __init__(self, oracle, hypermodel: ConfigHyperModel, *, directory: str,
                 project_name: str, allow_replica_change: bool = False, max_trials: int = 0,
                 out: IO | None = None, stop_after_failures: int | None = None):
        super().__init__(oracle, hypermodel, directory=directory, project_name=project_name,
                         overwrite=False)
        self.allow_replica_change = allow_replica_change
        self.max_trials = max_trials
        self.out = out or sys.stdout
        self._metrics: dict[str, dict] = {}
        self._started: dict[str, float] = {}
        self.ran: list[str] = []  # trials this process ran, in order
        self.stop_after_failures = stop_after_failures
        self._failures_in_a_row = 0

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def run_dir(self, trial_id: str) -> str:
        return os.path.join(self.get_trial_dir(trial_id), RUN_DIR)

    def _label(self, trial) -> str:
        return f"trial {trial_number(trial.trial_id)} of {self.max_trials} (trial_{trial.trial_id})"

    def on_search_begin(self):
        super().on_search_begin()
        # Keras Tuner reloads a search only when this tuner's file exists; it is otherwise first
        # written when a trial ends, so a search killed in its first trial would start over.
        self.save()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._started[trial.trial_id] = time.monotonic()
        values = trial.hyperparameters.values
        budget = (f"; {values[EPOCHS]} iteration(s)" + (
            f", continuing trial_{values[PARENT]}" if values.get(PARENT) else "")
            if EPOCHS in values else "")
        resumed = os.path.exists(os.path.join(self.run_dir(trial.trial_id), "state.json"))
        self.say(f"{self._label(trial)} started on {self.tuner_id}"
                 f"{', resuming its run' if resumed and not values.get(PARENT) else ''}: "
                 f"{describe_values(values)}{budget}")

    def run_trial(self, trial, *args, **kwargs):
        del args, kwargs
        trial_dir = self.get_trial_dir(trial.trial_id)
        run_dir = self.run_dir(trial.trial_id)
        values = trial.hyperparameters.values
        if os.path.exists(os.path.join(trial_dir, ERROR_FILE)):  # of an earlier launch
            os.remove(os.path.join(trial_dir, ERROR_FILE))
        with open(os.path.join(trial_dir, LAUNCHES), "a") as f:
            f.write(json.dumps({"tuner_id": self.tuner_id, "host": socket.gethostname(),
                                "pid": os.getpid(), "time": utc_now(),
                                "continues": values.get(PARENT)}) + "\n")
        try:
            config = self.hypermodel.build(trial.hyperparameters)
            if values.get(PARENT) and not os.path.exists(run_dir):
                _copy_run(self.run_dir(values[PARENT]), run_dir)
            keras.backend.clear_session()  # nothing of the previous trial's models stays
            results = experiment.train_and_evaluate(
                config, run_dir, allow_replica_change=self.allow_replica_change,
                test_split=False)
            metrics = objectives.trial_metrics(results)
        except Exception:
            with open(os.path.join(trial_dir, ERROR_FILE), "w") as f:
                f.write(traceback.format_exc())
            raise
        finally:
            keras.backend.clear_session()
        self._metrics[trial.trial_id] = metrics
        return metrics

    def on_trial_end(self, trial):
        self.ran.append(trial.trial_id)
        took = time.monotonic() - self._started.pop(trial.trial_id, time.monotonic())
        metrics = self._metrics.get(trial.trial_id)
        if trial.status != TrialStatus.COMPLETED or metrics is None:
            error = os.path.join(self.get_trial_dir(trial.trial_id), ERROR_FILE)
            last = (trial.message or "").strip().splitlines()[-1:] or ["?"]
            self.say(f"{self._label(trial)} FAILED after {took:.0f} s: {last[0]} (traceback: "
                     f"{error})")
            super().on_trial_end(trial)  # the oracle saves it as failed
            self._failures_in_a_row += 1
            if (self.stop_after_failures is not None
                    and self._failures_in_a_row >= self.stop_after_failures):
                raise RuntimeError(f"{self._failures_in_a_row} trials in a row failed")
            return
        self._failures_in_a_row = 0
        super().on_trial_end(trial)  # reports to the oracle (the chief's, when distributed)
        name = self.oracle.objective.name
        other = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != name)
        best = self.oracle.get_best_trials(1)
        best_text = (f"; best so far {best[0].score:.4f} (trial_{best[0].trial_id})"
                     if best and best[0].score is not None else "")
        self.say(f"{self._label(trial)} finished in {took:.0f} s: {name} {metrics[name]:.4f} "
                 f"({other}){best_text}")
