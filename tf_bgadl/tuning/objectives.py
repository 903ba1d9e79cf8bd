"""A trial's objective, from the validation curve of its active-learning run only.

A trial's run is made without its test split (`experiment.train_and_evaluate(test_split=False)`),
and the functions here read only `num_labeled` and `validation_accuracy` of its results: the test
split cannot move an objective.
"""

from __future__ import annotations

from typing import Sequence

from tf_bgadl.studies import statistics

# `--objective` -> the metric Keras Tuner maximises (custom names need an explicit direction).
OBJECTIVES = {"final": "val_final_accuracy", "aulc": "val_aulc"}
DIRECTION = "max"
DESCRIPTIONS = {
    "final": "validation accuracy after the last iteration",
    "aulc": "area under the validation learning curve (validation accuracy against oracle "
            "labels, trapezoids, divided by the label range: a mean accuracy)",
}


def validation_curve(results: Sequence[dict]) -> tuple[list[int], list[float]]:
    """(oracle labels [K], validation accuracy [K]) of a run's results, in iteration order.

    Raises:
      ValueError: a results line has no validation accuracy (a run without
        `--validation_per_class`).
    """
    rows = sorted(results, key=lambda r: r["iteration"])
    if not rows:
        raise ValueError("the run has no finished iteration")
    missing = [r["iteration"] for r in rows if r.get("validation_accuracy") is None]
    if missing:
        raise ValueError(f"iterations {missing} have no validation_accuracy (is "
                         "--validation_per_class set?)")
    return ([int(r["num_labeled"]) for r in rows],
            [float(r["validation_accuracy"]) for r in rows])


def trial_metrics(results: Sequence[dict]) -> dict[str, float]:
    """Both objectives of a finished run: {"val_final_accuracy": ..., "val_aulc": ...}.

    Args:
      results: the run's results lines (results.jsonl); only `iteration`, `num_labeled` and
        `validation_accuracy` are read.
    """
    labels, accuracy = validation_curve(results)
    return {OBJECTIVES["final"]: accuracy[-1],
            OBJECTIVES["aulc"]: statistics.aulc(labels, accuracy, labels[0], labels[-1])}
