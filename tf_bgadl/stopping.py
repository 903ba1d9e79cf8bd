"""Stopping rules of the active-learning loop: when enough has been labeled.

Pure functions of the run's acquisition config and its results lines. A rule is off at 0:

- `max_labels`: stop once the run holds this many oracle labels; the acquisition that would
  pass the limit is cut to reach it exactly (`acquisition_size`).
- `target_accuracy`: stop once the validation accuracy reaches this fraction.
- `patience` (with `min_delta`): stop once the validation accuracy of the last `patience`
  iterations has not improved on the best before them by more than `min_delta` (Keras'
  EarlyStopping convention: an improvement must exceed `min_delta`).

`config.validate` refuses the two validation rules for a run without a validation split. The
loop writes the reason into the results line of the iteration it stops after (`stop_reason`);
rerun with a relaxed rule, the run continues (the rules are resumable config keys).
"""

from __future__ import annotations

from typing import Sequence

from tf_bgadl.config import AcquisitionConfig


def acquisition_size(acq: AcquisitionConfig, num_labeled: int) -> int:
    """Images to acquire at the next iteration: `acquire_per_iteration`, cut to `max_labels`."""
    if not acq.max_labels:
        return acq.acquire_per_iteration
    return max(0, min(acq.acquire_per_iteration, acq.max_labels - num_labeled))


def stop_reason(acq: AcquisitionConfig, results: Sequence[dict]) -> str | None:
    """Why the run stops after its last results line, or None to go on.

    Args:
      acq: the run's acquisition config (its stopping rules).
      results: the run's results lines so far, in iteration order (`num_labeled` and, with a
        validation split, `validation_accuracy` are read).
    """
    if not results:
        return None
    last = results[-1]
    if acq.max_labels and last["num_labeled"] >= acq.max_labels:
        return (f"max_labels: {last['num_labeled']} oracle labels reached --max_labels="
                f"{acq.max_labels}")
    accuracies = [r.get("validation_accuracy") for r in results]
    if acq.target_accuracy and accuracies[-1] is not None \
            and accuracies[-1] >= acq.target_accuracy:
        return (f"target_accuracy: validation accuracy {accuracies[-1]:.4f} reached "
                f"--target_accuracy={acq.target_accuracy}")
    if acq.patience and len(results) > acq.patience and None not in accuracies:
        best_before = max(accuracies[:-acq.patience])
        best_since = max(accuracies[-acq.patience:])
        if best_since <= best_before + acq.min_delta:
            return (f"patience: validation accuracy has not improved on {best_before:.4f} by "
                    f"more than --min_delta={acq.min_delta} for --patience={acq.patience} "
                    f"iterations (best since: {best_since:.4f})")
    return None
