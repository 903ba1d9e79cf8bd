"""What a search is: tuner, trials, objective and search space; checked before any training."""

from __future__ import annotations

import dataclasses

from tf_bgadl import config as config_lib
from tf_bgadl.tuning import objectives, search_space

TUNERS = ("bayesian", "random", "hyperband")


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """One search (the tune flags that are not train flags).

    Attributes:
      space: the searched hyperparameters.
      tuner: "bayesian" (Gaussian process, BayesianOptimizationOracle), "random" or
        "hyperband" (its budget is the number of acquisition iterations, see tuner.py).
      max_trials: trials of the search (hyperband: at most this many; it may stop earlier).
      objective: a key of `objectives.OBJECTIVES` ("final" or "aulc").
      seed: seed of the tuner's proposals (>= 1: Keras Tuner takes 0 as "draw one").
      bayesian_initial_points: random trials before the Gaussian process proposes (0: Keras
        Tuner's default, 3 per searched hyperparameter, but at most half of the trials).
      hyperband_factor: Hyperband's reduction factor (>= 2).
      hyperband_iterations: Hyperband's sweeps over its brackets (>= 1).
    """

    space: search_space.SearchSpace
    tuner: str = "bayesian"
    max_trials: int = 10
    objective: str = "aulc"
    seed: int = 1
    bayesian_initial_points: int = 0
    hyperband_factor: int = 3
    hyperband_iterations: int = 1

    @property
    def objective_name(self) -> str:
        """The metric Keras Tuner maximises: `val_aulc` or `val_final_accuracy`."""
        return objectives.OBJECTIVES[self.objective]

    def initial_points(self) -> int:
        """Random trials before the Bayesian optimisation's Gaussian process proposes."""
        if self.bayesian_initial_points:
            return self.bayesian_initial_points
        return max(1, min(3 * len(self.space.hyperparameters), self.max_trials // 2))

    def to_dict(self) -> dict:
        return {"space": self.space.to_dict(), "tuner": self.tuner,
                "objective": self.objective, "seed": self.seed,
                "bayesian_initial_points": self.bayesian_initial_points,
                "hyperband_factor": self.hyperband_factor,
                "hyperband_iterations": self.hyperband_iterations}


def check(settings: SearchSettings,
          base: config_lib.ExperimentConfig) -> config_lib.ExperimentConfig:
    """Checks the settings, the base train config and every config a trial can draw.

    Returns:
      The resolved base config.

    Raises:
      ValueError (ConfigError, SearchSpaceError included): naming the bad value and what is
        allowed.
    """
    if settings.tuner not in TUNERS:
        raise ValueError(f"--tuner={settings.tuner!r}; choose one of {', '.join(TUNERS)}")
    if settings.objective not in objectives.OBJECTIVES:
        raise ValueError(f"--objective={settings.objective!r}; choose one of "
                         f"{', '.join(objectives.OBJECTIVES)}")
    if settings.max_trials < 1:
        raise ValueError(f"--max_trials={settings.max_trials} must be >= 1")
    if settings.seed < 1:
        raise ValueError(f"--search_seed={settings.seed} must be >= 1 (Keras Tuner takes 0 as "
                         "'draw a random seed', and a search must be repeatable)")
    if settings.bayesian_initial_points < 0:
        raise ValueError(f"--bayesian_initial_points={settings.bayesian_initial_points} must be "
                         ">= 0 (0: the default)")
    if settings.hyperband_factor < 2:
        raise ValueError(f"--hyperband_factor={settings.hyperband_factor} must be >= 2")
    if settings.hyperband_iterations < 1:
        raise ValueError(f"--hyperband_iterations={settings.hyperband_iterations} must be >= 1")
    if base.data.validation_per_class < 1:
        raise ValueError(
            f"--validation_per_class={base.data.validation_per_class}: tuning needs a "
            "validation split (e.g. --validation_per_class=20: class-balanced examples held out "
            "of the training split, never acquired); the objective is measured on it, never on "
            "the test split")
    if settings.tuner == "hyperband" and base.iterations < 1:
        raise ValueError(f"--iterations={base.iterations}: hyperband's budget is the number of "
                         "acquisition iterations, so --iterations must be >= 1")
    return search_space.check_configs(settings.space, base)
