"""The report of a search, from the trials on disk: tune_report.md and tune_report.png.

Reads `<project>/trial_<id>/trial.json` (Keras Tuner's trial storage: values, metrics, status),
the trial's `run/config.json` and `run/results.jsonl` and its `launches.jsonl`; nothing here
imports TensorFlow or Keras Tuner, so a report can be written again from any finished search.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

from tf_bgadl.plotting import save_figure
from tf_bgadl.state import atomic_write_text, read_jsonl
from tf_bgadl.tuning import objectives, search_space

REPORT, PLOT = "tune_report.md", "tune_report.png"
COMPLETED = "COMPLETED"
LAMBDA = "gen_loss_weight"


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as stored on disk.

    Attributes:
      trial_id: Keras Tuner's id ("0", "1", ... or "00", "01", ...).
      path: the trial's folder.
      status: Keras Tuner's status: COMPLETED, FAILED, INVALID, RUNNING (a trial being run, or
        one interrupted: a rerun of the search continues it).
      values: the searched hyperparameters {train flag: value}.
      budget: Keras Tuner's Hyperband entries (`tuner/epochs`, ...), else {}.
      metrics: {"val_aulc": ..., "val_final_accuracy": ...} as reported to the oracle.
      message: Keras Tuner's error message of a failed trial (a traceback), else None.
      config: the run's config.json (what the trial ran), None before it exists.
      results: the run's results lines.
      launches: launches.jsonl lines (which tuner ran the trial, once per start).
    """

    trial_id: str
    path: str
    status: str
    values: dict
    budget: dict
    metrics: dict
    message: str | None
    config: dict | None
    results: list
    launches: list

    @property
    def number(self) -> int:
        return int(self.trial_id) + 1

    @property
    def name(self) -> str:
        return f"trial_{self.trial_id}"

    @property
    def run_dir(self) -> str:
        return os.path.join(self.path, "run")

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED and bool(self.metrics)

    @property
    def iterations(self) -> int | None:
        return None if self.config is None else self.config["iterations"]

    @property
    def minutes(self) -> float:
        return sum(float(r.get("seconds") or 0.0) for r in self.results) / 60.0

    @property
    def tuners(self) -> list[str]:
        return [launch.get("tuner_id", "?") for launch in self.launches]


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _last_value(history: dict) -> float | None:
    observations = history.get("observations") or []
    if not observations:
        return None
    value = observations[-1]["value"]
    return float(value[-1] if isinstance(value, list) else value)


def load_trial(path: str) -> TrialRecord:
    """The trial in folder `path` (which holds Keras Tuner's trial.json)."""
    state = _read_json(os.path.join(path, "trial.json")) or {}
    values = dict((state.get("hyperparameters") or {}).get("values") or {})
    metrics = {name: _last_value(h) for name, h in
               ((state.get("metrics") or {}).get("metrics") or {}).items()}
    run = os.path.join(path, "run")
    return TrialRecord(
        trial_id=str(state.get("trial_id", os.path.basename(path)[len("trial_"):])),
        path=path, status=state.get("status") or "?",
        values={k: v for k, v in values.items() if not k.startswith("tuner/")},
        budget={k: v for k, v in values.items() if k.startswith("tuner/")},
        metrics={k: v for k, v in metrics.items() if v is not None},
        message=state.get("message"), config=_read_json(os.path.join(run, "config.json")),
        results=sorted(read_jsonl(os.path.join(run, "results.jsonl")),
                       key=lambda r: r["iteration"]),
        launches=read_jsonl(os.path.join(path, "launches.jsonl")))


def load_trials(project_dir: str) -> list[TrialRecord]:
    """Every trial of a search (Keras Tuner's `<project>/trial_*/trial.json`), by number."""
    paths = glob.glob(os.path.join(project_dir, "trial_*", "trial.json"))
    return sorted((load_trial(os.path.dirname(p)) for p in paths), key=lambda t: t.number)


def best_trial(records: list[TrialRecord], objective_name: str,
               iterations: int | None = None) -> TrialRecord | None:
    """The completed trial with the highest objective (the lowest number among equals).

    Args:
      records: the search's trials.
      objective_name: `val_aulc` or `val_final_accuracy`.
      iterations: only trials whose run reached this many acquisition iterations (Hyperband's
        full budget: a shorter run's objective is not comparable); None: any.
    """
    candidates = [t for t in records if t.completed and objective_name in t.metrics
                  and (iterations is None or t.iterations == iterations)]
    if not candidates:
        return None
    return max(candidates, key=lambda t: (t.metrics[objective_name], -t.number))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metric_text(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _trials_table(records: list[TrialRecord], names: list[str],
                  best: TrialRecord | None) -> list[str]:
    header = ["trial", "status", *[f"`{n}`" for n in names], "iterations", "oracle labels",
              "val. final (%)", "val. AULC (%)", "minutes", "ran on"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in records:
        labels = t.results[-1]["num_labeled"] if t.results else "-"
        name = f"**{t.name} (best)**" if best is not None and t.trial_id == best.trial_id \
            else t.name
        cells = [name, t.status, *[_value_text(t.values.get(n, "-")) for n in names],
                 str(t.iterations if t.iterations is not None else "-"), str(labels),
                 _metric_text(t.metrics.get(objectives.OBJECTIVES["final"])),
                 _metric_text(t.metrics.get(objectives.OBJECTIVES["aulc"])),
                 f"{t.minutes:.1f}", ", ".join(t.tuners) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(*, records: list[TrialRecord], best: TrialRecord | None, settings: dict,
                    base: dict, objective: str, test: dict | None, best_flags: str | None,
                    workdir: str) -> str:
    """The text of tune_report.md.

    Args:
      records: the trials (`load_trials`).
      best: the best trial (`best_trial`), or None.
      settings: the search settings (`SearchSettings.to_dict()` with `max_trials`).
      base: the base train config (dict) every trial starts from.
      objective: "final" or "aulc".
      test: the best trial's test accuracy record (`search.best_test_accuracy`), or None.
      best_flags: path of best.flags, or None when none was written.
      workdir: the search workdir.
    """
    name = objectives.OBJECTIVES[objective]
    space = settings["space"]["hyperparameters"]
    names = [h["name"] for h in space]
    done = [t for t in records if t.completed]
    failed = [t for t in records if t.status in ("FAILED", "INVALID")]
    running = [t for t in records if t.status == "RUNNING"]
    data, acq = base["data"], base["acquisition"]
    lines = [
        f"# Tuning report: {data['dataset']} / {acq['method']}", "",
        f"Search in `{workdir}`: {settings['tuner']} search (Keras Tuner), "
        f"{settings['max_trials']} trials at most; {len(done)} completed, {len(failed)} failed"
        + (f", {len(running)} unfinished (rerun the same command to continue them)"
           if running else "") + ".", "",
        f"- Objective `{name}` (maximised): the {objectives.DESCRIPTIONS[objective]}, on "
        f"{data['validation_per_class']} validation examples per class held out of the "
        "training split (never acquired). Trials ran without the test split.",
        f"- Every trial: {_count(base['iterations'], 'acquisition iteration')} of "
        f"{acq['acquire_per_iteration']} oracle labels from {data['initial_per_class']} per "
        f"class, {_count(base['train']['epochs'], 'epoch')} per iteration, seed {base['seed']} "
        "(the same "
        "initial labeled set and validation split in every trial)."
        + (" Hyperband's budget is the number of acquisition iterations; only trials that "
           "reached the full budget compete for the best." if settings["tuner"] == "hyperband"
           else ""), "",
        "| searched train flag | values |", "|---|---|"]
    for h in space:
        hyper = search_space.Hyperparameter(h["name"], h["kind"], tuple(h["values"]))
        lines.append(f"| `--{h['name']}` | {hyper.describe()} |")
    lines += ["", "## Best trial", ""]
    if best is None:
        lines += [("No trial has completed" if not any(t.completed for t in records) else
                   "No completed trial reached the full budget of acquisition iterations")
                  + ", so there is no best trial and no best.flags.", ""]
    else:
        lines += [f"**{best.name}**: `{name}` = {100 * best.metrics[name]:.2f} %, with "
                  + ", ".join(f"`--{n}={_value_text(best.values[n])}`" for n in names) + ".", ""]
        if best_flags:
            lines += [f"Its full train flags are in `{best_flags}`; rerun it with "
                      f"`python -m tf_bgadl.train --flagfile={best_flags}`.", ""]
        lines += ["### Test accuracy of the best trial (measured once, after the search)", ""]
        if test is None:
            lines += ["Not measured.", ""]
        else:
            lines += [f"**{100 * test['test_accuracy']:.2f} %** on the {test['num_test']} test "
                      f"images: the final classifier of {best.name} ({test['num_labeled']} "
                      "oracle labels), evaluated once after the search ended. It was not used to "
                      "select anything: every trial ran without the test split.", ""]
    lines += ["## Trials", "", f"![objective of each trial]({PLOT})", "",
              *_trials_table(records, names, best), ""]
    if failed:
        lines += ["## Failed trials", ""]
        for t in failed:
            last = (t.message or "").strip().splitlines()[-1:] or ["no message"]
            error = os.path.join(t.path, "error.txt")
            lines.append(f"- {t.name}: {last[0]} (traceback: `{error}`)")
        lines.append("")
    return "\n".join(lines)


def _color_key(records: list[TrialRecord]) -> str | None:
    """The hyperparameter that colors the points: the classifier, else the first searched
    choice with more than one value among the trials, else None."""
    names = [n for n, spec in search_space.SPECS.items() if spec.kind == search_space.CHOICE]
    for name in names:
        if len({str(t.values.get(name)) for t in records if name in t.values}) > 1:
            return name
    return None


def plot(records: list[TrialRecord], best: TrialRecord | None, objective: str,
         path: str, lambda_range: tuple[float, float] | None = None) -> None:
    """Three panels: the objective against lambda (log scale, over `lambda_range` when given;
    against the trial number when lambda is not searched), the objective of each trial in
    order with the running best, and each trial's validation learning curve; points and
    curves are colored by the classifier (else by another searched choice) and the best trial
    is marked in all three."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    import matplotlib.ticker  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    name = objectives.OBJECTIVES[objective]
    done = [t for t in records if t.completed and name in t.metrics]
    key = _color_key(done)
    groups = sorted({str(t.values.get(key, "")) for t in done}) if key else [""]
    palette = {g: plt.get_cmap("tab10")(i % 10) for i, g in enumerate(groups)}

    def color(t):
        return palette[str(t.values.get(key, "")) if key else ""]

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.0), dpi=100)
    searched_lambda = any(LAMBDA in t.values for t in records)

    ax = axes[0]
    for group in groups:
        members = [t for t in done if (str(t.values.get(key, "")) if key else "") == group]
        xs = [t.values[LAMBDA] if searched_lambda else t.number for t in members]
        ax.scatter(xs, [100 * t.metrics[name] for t in members], color=palette[group],
                   label=f"{key} {group}" if key else None, zorder=3)
    if best is not None:
        ax.scatter([best.values[LAMBDA] if searched_lambda else best.number],
                   [100 * best.metrics[name]], marker="*", s=260, facecolor="none",
                   edgecolor="black", linewidth=1.4, label=f"best ({best.name})", zorder=4)
    if searched_lambda:
        ax.set_xscale("log")
        if lambda_range is not None:
            low, high = lambda_range
            ax.set_xlim(low / 1.2, high * 1.2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("lambda (--gen_loss_weight, log scale"
                      + (": the searched range)" if lambda_range else ")"))
    else:
        ax.set_xlabel("trial (lambda not searched)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{name} (%)")
    ax.set_title(f"{name} against lambda")

    ax = axes[1]
    numbers = [t.number for t in done]
    values = [100 * t.metrics[name] for t in done]
    ax.scatter(numbers, values, color=[color(t) for t in done], zorder=3)
    running = [max(values[:i + 1]) for i in range(len(values))]
    ax.step(numbers, running, where="post", color="gray", alpha=0.7, label="best so far")
    failed = [t.number for t in records if t.status in ("FAILED", "INVALID")]
    if failed:
        low = min(values) if values else 0.0
        ax.scatter(failed, [low] * len(failed), marker="x", color="red", label="failed")
    if best is not None:
        ax.scatter([best.number], [100 * best.metrics[name]], marker="*", s=260,
                   facecolor="none", edgecolor="black", linewidth=1.4, zorder=4)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{name} (%)")
    ax.set_title("each trial, in order")

    ax = axes[2]
    for t in done:
        rows = [r for r in t.results if r.get("validation_accuracy") is not None]
        is_best = best is not None and t.trial_id == best.trial_id
        ax.plot([r["num_labeled"] for r in rows],
                [100 * r["validation_accuracy"] for r in rows], marker="o", markersize=3,
                color="black" if is_best else color(t),
                linewidth=2.2 if is_best else 1.0, alpha=1.0 if is_best else 0.6,
                label=f"{t.name} (best)" if is_best else None, zorder=4 if is_best else 2)
    ax.set_xlabel("oracle labels")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("validation learning curve of each trial")
    for ax in axes:  # legends below the panels, where they hide no point
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                      frameon=False)
    if not done:
        axes[0].text(0.5, 0.5, "no completed trial yet", ha="center", va="center",
                     transform=axes[0].transAxes)
    save_figure(fig, path)


def write_report(workdir: str, *, records: list[TrialRecord], best: TrialRecord | None,
                 settings: dict, base: dict, objective: str, test: dict | None = None,
                 best_flags: str | None = None) -> dict[str, str]:
    """Writes tune_report.md and tune_report.png into `workdir`; returns their paths."""
    files = {"report": os.path.join(workdir, REPORT), "plot": os.path.join(workdir, PLOT)}
    ranges = [tuple(h["values"]) for h in settings["space"]["hyperparameters"]
              if h["name"] == LAMBDA]
    plot(records, best, objective, files["plot"], ranges[0] if ranges else None)
    atomic_write_text(files["report"], render_markdown(
        records=records, best=best, settings=settings, base=base, objective=objective,
        test=test, best_flags=best_flags, workdir=workdir) + "\n")
    return files
