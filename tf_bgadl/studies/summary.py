"""The report of a study: which cells exist, and Table I with statistics, curves and files.

A study workdir holds one ordinary train run per (method, seed) cell in
`<workdir>/<method>/seed_<s>/`. The report reads only each cell's `config.json`,
`results.jsonl` and (written by the study runner when the cell's process failed) `failed.json`,
and writes into the workdir:

  report.md      Table I (final test accuracy mean +- std at the common final budget), labels
                 to reach accuracy levels, AULC, one-sided Welch t-tests, generative diagnostics,
                 wall time, and the cells left out (incomplete or failed)
  curves.png     test accuracy against oracle labels, mean +- std band per method
  summary.csv    one row per method (accuracies as fractions in [0, 1])
  summary.json   everything in report.md, with per-seed values

Only complete cells (results up to the config's last iteration, no failed.json) are averaged.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re

import numpy as np

from tf_bgadl import config as config_lib
from tf_bgadl import methods as methods_lib
from tf_bgadl.plotting import save_figure
from tf_bgadl.state import atomic_write_text, read_jsonl
from tf_bgadl.studies import statistics

COMPLETE, INCOMPLETE, FAILED = "complete", "incomplete", "failed"
# Table I of the paper: its row order and row names.
TABLE_I_NAMES = {"vaeacgan": "AL w. VAEACGAN", "acgan": "AL w. ACGAN", "pmda": "AL w. PMDA",
                 "bald": "AL without DA", "bda_partial": "BDA (partial training)",
                 "random": "Random selection"}
CSV_COLUMNS = ("method", "name", "n", "budget", "final_mean", "final_std", "aulc_mean",
               "aulc_std", "wall_minutes", "reconstruction_error", "score_ratio")
# Config keys that differ between cells by design (or do not change what is computed).
# Keys each method resolves to its own default (methods.py, config.resolve).
_METHOD_RESOLVED_KEYS = {"acquisition.acquisition", "acquisition.batchbald_samples",
                         "acquisition.temperature", "generator.generation",
                         "generator.optimizer", "generator.learning_rate", "generator.beta_1",
                         "generator.pool_steps", "generator.pool_steps_fresh",
                         "generator.carry_over", "generator.update_every"}
_PER_CELL_KEYS = {"seed", "acquisition.method", "strategy", "data.data_dir", "data.manual_dir"}


def _x_from(method: str) -> str:
    """How a method's x' is made from its x* (report column), from the methods registry."""
    try:
        encoder = methods_lib.get(method).uses_encoder
    except ValueError:
        return "?"
    return "g(e(x*), y*)" if encoder else "g(z, y*)"


_SEED_DIR = re.compile(r"^seed_(-?\d+)$")
_RESULT_KEYS = ("iteration", "num_labeled", "test_accuracy")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (method, seed) run of a study.

    Attributes:
      method: the folder name `<method>` (a Table I method name).
      seed: from the folder name `seed_<s>`.
      path: the cell's folder.
      status: "complete" (results reach config["iterations"]), "failed" (failed.json exists:
        its process ended non-zero and was not restarted) or "incomplete" (anything else).
      results: results.jsonl rows, one per finished iteration, sorted by iteration.
      config: the cell's config.json, or None before it exists.
      detail: why a cell is not complete ("" when it is).
      log: the cell's log file (failed cells: as failed.json names it).
    """

    method: str
    seed: int
    path: str
    status: str
    results: list[dict]
    config: dict | None = None
    detail: str = ""
    log: str | None = None


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _load_cell(method: str, seed: int, path: str) -> Cell:
    log = os.path.join(path, "log.txt")
    try:
        config = _read_json(os.path.join(path, "config.json"))
        failure = _read_json(os.path.join(path, "failed.json"))
        lines = read_jsonl(os.path.join(path, "results.jsonl"))
        missing = {k for r in lines for k in _RESULT_KEYS if r.get(k) is None}
        if missing:
            raise ValueError(f"results.jsonl lines without {sorted(missing)}")
        rows = {r["iteration"]: r for r in lines}  # a repeated iteration: its last line
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        return Cell(method, seed, path, INCOMPLETE, [], None, f"unreadable files: {e}", log)
    results = [rows[i] for i in sorted(rows)]
    if failure is not None:
        detail = f"exit code {failure.get('returncode', '?')}" + (
            f": {failure['reason']}" if failure.get("reason") else "")
        return Cell(method, seed, path, FAILED, results, config, detail, failure.get("log", log))
    if config is None or "iterations" not in config:
        return Cell(method, seed, path, INCOMPLETE, results, config, "no config.json yet", log)
    last = config["iterations"]
    if rows and max(rows) >= last:  # as grid.is_finished: a lowered --iterations is finished
        return Cell(method, seed, path, COMPLETE, results, config, "", log)
    done = f"iterations 0..{results[-1]['iteration']}" if results else "no iteration"
    return Cell(method, seed, path, INCOMPLETE, results, config,
                f"{done} of 0..{last} finished", log)


def method_order(methods) -> list[str]:
    """Methods in Table I order, then any other method alphabetically."""
    known = [m for m in TABLE_I_NAMES if m in methods]
    return known + sorted(set(methods) - set(known))


def find_cells(workdir: str) -> list[Cell]:
    """Every `<workdir>/<method>/seed_<s>/` cell, in Table I order, then by seed.

    Raises:
      ValueError: if `workdir` is not a folder or holds no cell.
    """
    if not os.path.isdir(workdir):
        raise ValueError(f"study workdir {workdir!r} does not exist or is not a folder")
    cells = []
    for method in sorted(os.listdir(workdir)):
        folder = os.path.join(workdir, method)
        if method.startswith(".") or not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = _SEED_DIR.match(name)
            if match and os.path.isdir(os.path.join(folder, name)):
                cells.append(_load_cell(method, int(match.group(1)), os.path.join(folder, name)))
    if not cells:
        raise ValueError(f"study workdir {workdir!r} holds no cell (<method>/seed_<s>/ folder)")
    order = {m: i for i, m in enumerate(method_order({c.method for c in cells}))}
    return sorted(cells, key=lambda c: (order[c.method], c.seed))


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _compared(cells: list[Cell]) -> dict:
    """What the study compared, from the cells' configs (complete cells first). A key that a
    cell's config.json lacks (written before the field existed) counts as its default, as on
    resume (`config.config_differences`)."""
    configs = ([_flatten(config_lib.with_current_defaults(c.config)) for c in cells
                if c.status == COMPLETE]
               or [_flatten(config_lib.with_current_defaults(c.config)) for c in cells
                   if c.config])

    def values(key):
        return sorted({json.dumps(c.get(key)) for c in configs})

    keys = sorted(set().union(*configs)) if configs else []
    # Keys each method resolves to its own defaults (methods.py) differ between methods by
    # design; they are compared only among the cells of one method.
    per_method = [k for k in keys if k in _METHOD_RESOLVED_KEYS]
    differ = {k: [json.loads(v) for v in values(k)] for k in keys
              if k not in _PER_CELL_KEYS and k not in per_method and len(values(k)) > 1}
    for method in sorted({c.get("acquisition.method") for c in configs}, key=str):
        group = [c for c in configs if c.get("acquisition.method") == method]
        for k in per_method:
            seen = sorted({json.dumps(c.get(k)) for c in group})
            if len(seen) > 1:
                differ[f"{k} ({method})"] = [json.loads(v) for v in seen]
    field = {k: [json.loads(v) for v in values(k)] for k in
             ("data.dataset", "model.name", "iterations", "acquisition.acquire_per_iteration",
              "data.initial_per_class", "train.epochs")}
    return {"dataset": field["data.dataset"], "model": field["model.name"],
            "iterations": field["iterations"],
            "acquire_per_iteration": field["acquisition.acquire_per_iteration"],
            "initial_per_class": field["data.initial_per_class"], "epochs": field["train.epochs"],
            "seeds": sorted({c.seed for c in cells}),
            "methods": method_order({c.method for c in cells}), "config_differences": differ}


def _curve(cell: Cell, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """(num_labeled [K], test accuracy [K]) of a cell, up to `budget` oracle labels."""
    rows = [r for r in cell.results if r["num_labeled"] <= budget]
    return (np.array([r["num_labeled"] for r in rows], np.float64),
            np.array([r["test_accuracy"] for r in rows], np.float64))


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.sample_std(values) if values else None}


def _diagnostics(cells: list[Cell], budget: float) -> dict:
    """Mean x'-x* distance and score_generated / score_acquired of generative cells.

    Non-finite values (a diverged generator writes NaN) are left out and counted.
    """
    recon, ratio, dropped = [], [], 0
    for cell in cells:
        rows = [r for r in cell.results if r["iteration"] >= 1 and r["num_labeled"] <= budget]
        errors = [float(r["reconstruction_error"]) for r in rows
                  if r.get("reconstruction_error") is not None]
        ratios = [r["score_generated"] / r["score_acquired"] for r in rows
                  if r.get("score_generated") is not None and r.get("score_acquired")]
        dropped += sum(not math.isfinite(v) for v in errors + ratios)
        errors = [v for v in errors if math.isfinite(v)]
        ratios = [v for v in ratios if math.isfinite(v)]
        if errors:
            recon.append(float(np.mean(errors)))
        if ratios:
            ratio.append(float(np.mean(ratios)))
    return {"reconstruction_error": float(np.mean(recon)) if recon else None,
            "score_ratio": float(np.mean(ratio)) if ratio else None,
            "non_finite_dropped": dropped}


def _method_summary(method: str, cells: list[Cell], first: float, budget: float) -> dict:
    """Per-seed and aggregated numbers of one method's complete cells."""
    final, aulc, wall, used = {}, {}, {}, {}
    for cell in cells:
        x, y = _curve(cell, budget)
        key = str(cell.seed)
        used[key] = int(x[-1])
        if x[-1] == budget:  # a cell on another label grid: AULC only, never another budget
            final[key] = float(y[-1])
        aulc[key] = statistics.aulc(*_curve(cell, np.inf), first, budget)  # interpolates
        wall[key] = sum(float(r.get("seconds") or 0.0) for r in cell.results) / 60.0
    curves = [_curve(c, budget) for c in cells]
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    points = np.array([[y[x == b][0] for x, y in curves] for b in common],
                      np.float64).reshape(len(common), len(cells))  # [B, seeds]
    return {
        "method": method, "name": TABLE_I_NAMES.get(method, method), "n": len(final),
        "seeds": [c.seed for c in cells], "num_labeled_used": used,
        "final_accuracy": {"per_seed": final, **_mean_std(list(final.values()))},
        "aulc": {"per_seed": aulc, **_mean_std(list(aulc.values()))},
        "wall_minutes": {"per_seed": wall, **_mean_std(list(wall.values()))},
        **_diagnostics(cells, budget),
        "curve": {"num_labeled": common, "mean": points.mean(axis=1).tolist(),
                  "std": [statistics.sample_std(p) for p in points]},
    }


def _labels_to_reach(summary: dict, cells: list[Cell], levels: list[float]) -> list[dict]:
    out = []
    for level in levels:
        per_seed = {str(c.seed): statistics.labels_to_reach(*_curve(c, summary["budget"]), level)
                    for c in cells}
        out.append({"level": level, "per_seed": per_seed,
                    "median": statistics.median_labels(list(per_seed.values()))})
    return out


def _test(a: dict, b: dict) -> dict:
    result = statistics.welch_t_test(list(a["final_accuracy"]["per_seed"].values()),
                                     list(b["final_accuracy"]["per_seed"].values()))
    return {"a": a["method"], "b": b["method"], "hypothesis": "mean(a) > mean(b)",
            "t": result.t, "df": result.df, "p": result.p, "n_a": result.n_a,
            "n_b": result.n_b, "significant": result.significant(0.05), "reason": result.reason}


def _tests(methods: dict, paper_method: str, baseline_pair: tuple[str, str]) -> list[dict]:
    pairs = [(paper_method, m) for m in methods if paper_method in methods and m != paper_method]
    if set(baseline_pair) <= set(methods) and tuple(baseline_pair) not in pairs:
        pairs.append(tuple(baseline_pair))
    return [_test(methods[a], methods[b]) for a, b in pairs]


def summarize(cells: list[Cell], *, paper_method: str = "vaeacgan",
              baseline_pair: tuple[str, str] = ("bald", "random"),
              levels: list[float] | None = None) -> dict:
    """Every number of the report from the cells (no files): what summary.json holds.

    Args:
      cells: from `find_cells`; only the complete ones enter the statistics.
      paper_method: tested (one-sided Welch) against every other method present.
      baseline_pair: (a, b) also tested as a > b when both are present.
      levels: accuracies in (0, 1] for labels-to-reach; None derives 3 round levels between
        the mean accuracy at the first budget and the lowest final mean of a method.
    """
    complete = [c for c in cells if c.status == COMPLETE]
    summary = {"compared": _compared(cells), "paper_method": paper_method,
               "baseline_pair": list(baseline_pair), "levels_derived": levels is None,
               "methods": [], "tests": [], "levels": list(levels or []),
               "first_budget": None, "budget": None, "cells": [
                   {"method": c.method, "seed": c.seed, "path": c.path, "status": c.status,
                    "detail": c.detail, "log": c.log} for c in cells]}
    if not complete:
        return summary
    first = max(c.results[0]["num_labeled"] for c in complete)
    budget = min(c.results[-1]["num_labeled"] for c in complete)
    if first > budget:
        raise ValueError(f"the complete cells share no label budget (one starts at {first} "
                         f"labels, one ends at {budget}); compare cells of one protocol")
    summary.update(first_budget=first, budget=budget)
    by_method = {m: [c for c in complete if c.method == m]
                 for m in method_order({c.method for c in complete})}
    methods = {m: _method_summary(m, group, first, budget) for m, group in by_method.items()}
    if levels is None:
        start = statistics.mean([y[0] for y in (_curve(c, budget)[1] for c in complete)])
        finals = [s["final_accuracy"]["mean"] for s in methods.values()
                  if s["final_accuracy"]["mean"] is not None]
        stop = min(finals) if min(finals) - start >= 0.005 else max(finals)
        summary["levels"] = statistics.accuracy_levels(start, stop)
    for m, s in methods.items():
        s["labels_to_reach"] = _labels_to_reach(summary, by_method[m], summary["levels"])
    summary["methods"] = list(methods.values())
    summary["tests"] = _tests(methods, paper_method, baseline_pair)
    return summary


# ---- Rendering ------------------------------------------------------------------------------

def _join(values: list) -> str:
    return " / ".join(str(v) for v in values)


def _title(compared: dict) -> str:
    """'mnist5k / cnn' (data set / classifier), from the cells' configs."""
    if not compared["dataset"]:
        return "no config.json yet"
    return f"{_join(compared['dataset'])} / {_join(compared['model'])}"


def _pct_pm(stats: dict) -> str:
    """'98.12 ± 0.11' (percent, 2 decimals, as in the paper's Table I)."""
    if stats["mean"] is None:
        return "n/a"
    std = "n/a (one seed)" if stats["std"] is None else f"{100 * stats['std']:.2f}"
    return f"{100 * stats['mean']:.2f} ± {std}"


def _labels(value: float | None) -> str:
    return "not reached" if value is None else f"{value:g}"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report_command(workdir: str, paper_method: str = "vaeacgan",
                   levels: list[float] | None = None) -> str:
    """The command line that writes this report again."""
    flags = [f"--workdir={workdir}"]
    if paper_method != "vaeacgan":
        flags.append(f"--paper_method={paper_method}")
    if levels is not None:
        flags.append("--levels=" + ",".join(f"{v:g}" for v in levels))
    return "python -m tf_bgadl.report " + " ".join(flags)


def table_markdown(summary: dict) -> str:
    """Table I: final test accuracy at the common budget, AULC and wall time per method."""
    lines = ["| Method | Test accuracy (%) | n | AULC (%) | Wall time (min) |",
             "|---|---:|---:|---:|---:|"]
    for s in summary["methods"]:
        wall = s["wall_minutes"]
        lines.append(f"| {s['name']} | {_pct_pm(s['final_accuracy'])} | {s['n']} | "
                     f"{_pct_pm(s['aulc'])} | {_number(wall['mean'], '.1f')} |")
    return "\n".join(lines)


def _compared_markdown(summary: dict) -> list[str]:
    c = summary["compared"]
    counts = []
    for m in c["methods"]:
        found = [x["status"] for x in summary["cells"] if x["method"] == m]
        counts.append(f"{TABLE_I_NAMES.get(m, m)} (`{m}`) {found.count(COMPLETE)}/{len(found)}")
    lines = ["## What was compared", ""]
    if c["dataset"]:
        lines += [f"- Data set `{_join(c['dataset'])}`, classifier `{_join(c['model'])}`.",
                  f"- {_join(c['initial_per_class'])} labeled examples per class to start, then "
                  f"{_join(c['iterations'])} acquisition iterations of "
                  f"{_join(c['acquire_per_iteration'])} oracle labels each; "
                  f"{_join(c['epochs'])} training epochs per iteration."]
    else:
        lines.append("- No cell has written its config.json yet.")
    seeds = c["seeds"]
    lines.append(f"- {len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))}); "
                 f"complete cells per method: {', '.join(counts)}.")
    if c["config_differences"]:
        lines.append("- **Warning**: the cells differ in more than method and seed: " + "; ".join(
            f"`{k}` = {', '.join(map(json.dumps, v))}" for k, v in c["config_differences"].items()))
    return lines + [""]


def _reach_markdown(summary: dict) -> list[str]:
    levels = summary["levels"]
    how = ("derived from the data: round levels between the mean accuracy at the first budget "
           "and the lowest final mean of a method; choose them with `--levels`"
           if summary["levels_derived"] else "given with `--levels`")
    lines = ["## Oracle labels to reach an accuracy", "",
             f"Labels each seed needed before its test accuracy first reached the level "
             f"(within the common budget), and the median over seeds (\"not reached\" counts as "
             f"more than the budget). Levels {how}.", ""]
    if not levels:
        return lines + ["No accuracy level above the starting accuracy: nothing to report.", ""]
    lines += ["| Method | " + " | ".join(f"{100 * v:.2f}%" for v in levels) + " |",
              "|---|" + "---|" * len(levels)]
    for s in summary["methods"]:
        cells = [", ".join(f"s{seed} {_labels(v)}" for seed, v in r["per_seed"].items())
                 + f"; median **{_labels(r['median'])}**" for r in s["labels_to_reach"]]
        lines.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _tests_markdown(summary: dict) -> list[str]:
    names = {s["method"]: s["name"] for s in summary["methods"]}
    lines = ["## One-sided Welch t-tests", "",
             "H1: the mean final test accuracy of A (over seeds) exceeds that of B; unequal "
             "variances (Welch-Satterthwaite df). The paper calls a difference significant when "
             "p <= .05.", ""]
    if summary["paper_method"] not in names:
        lines += [f"The paper's method `{summary['paper_method']}` has no complete cell: no "
                  "test against it.", ""]
    if not summary["tests"]:
        return lines + ["No pair of methods to test.", ""]
    lines += ["| A | B | t | df | p | p <= .05 |", "|---|---|---:|---:|---:|---|"]
    for t in summary["tests"]:
        verdict = ("yes" if t["significant"] else "no") if t["reason"] is None else t["reason"]
        lines.append(f"| {names[t['a']]} | {names[t['b']]} | {_number(t['t'], '.2f')} | "
                     f"{_number(t['df'], '.1f')} | {_number(t['p'], '.4g')} | {verdict} |")
    return lines + [""]


def _generative_markdown(summary: dict) -> list[str]:
    rows = [s for s in summary["methods"]
            if s["reconstruction_error"] is not None or s["score_ratio"] is not None]
    if not rows:
        return []
    lines = ["## Generative methods", "",
             "Mean over iterations >= 1 and seeds of the distance ||x' - x*|| (L2, pixels in "
             "[0, 1]; results' `reconstruction_error`) and of score_generated / score_acquired, "
             "the mean acquisition score of the generated x' over that of the acquired x* "
             "(Proposition 2.1: near 1 or above, x' is as informative as x*). Only where x' is "
             "generated from x* through the encoder (`vaeacgan`: x' = g(e(x*), y*)) is the "
             "distance a reconstruction error; where x' = g(z, y*) with a random z (`acgan`, "
             "`bda_partial`), x' is not meant to resemble x* and the distance only says so.", "",
             "| Method | x' | L2 distance x' to x* | score_generated / score_acquired |",
             "|---|---|---:|---:|"]
    lines += [f"| {s['name']} | {_x_from(s['method'])} | "
              f"{_number(s['reconstruction_error'], '.4f')} | "
              f"{_number(s['score_ratio'], '.3f')} |" for s in rows]
    dropped = sum(s.get("non_finite_dropped", 0) for s in rows)
    if dropped:
        lines += ["", f"{dropped} non-finite value(s) (NaN or inf: a diverged generator) left "
                  "out of these means."]
    return lines + [""]


def _left_out_markdown(summary: dict) -> list[str]:
    left = [c for c in summary["cells"] if c["status"] != COMPLETE]
    lines = ["## Cells not in the tables", ""]
    if not left:
        return lines + ["None: every cell is complete.", ""]
    lines.append("Never averaged into any number above:")
    for c in left:
        log = f"; log `{c['log']}`" if c["status"] == FAILED else ""
        lines.append(f"- {c['status']}: `{c['method']}` seed {c['seed']} ({c['detail']}) "
                     f"in `{c['path']}`{log}")
    return lines + [""]


def render_markdown(summary: dict) -> str:
    """report.md from `summarize`'s dict (with `command` set)."""
    c = summary["compared"]
    lines = [f"# Study report: {_title(c)}", "",
             f"Regenerate with `{summary['command']}`.", "", *_compared_markdown(summary)]
    if not summary["methods"]:
        lines += ["## No complete cell yet", "",
                  "No cell has finished its last iteration, so there is nothing to compare.", ""]
        return "\n".join(lines + _left_out_markdown(summary))
    lines += ["## Test accuracy at the common final budget (Table I)", "",
              f"At {summary['budget']} oracle labels, the largest number every complete cell "
              f"reached; mean ± sample std (ddof=1) over seeds, n seeds. AULC: the area under "
              f"the test accuracy curve from {summary['first_budget']} to {summary['budget']} "
              "labels divided by that range (the mean accuracy over the budget). Wall time: the sum "
              "of a cell's iteration times (training, scoring, generation, evaluation; not its "
              "start-up or checkpoints), mean over seeds.", "", table_markdown(summary), ""]
    off = [f"`{s['method']}` seed {seed} ({n} labels)" for s in summary["methods"]
           for seed, n in s["num_labeled_used"].items() if n != summary["budget"]]
    if off:
        lines += ["Cells without a results line at exactly that budget are left out of the "
                  "test accuracy column, its n and the t-tests (they enter AULC, interpolated): "
                  + ", ".join(off) + ".", ""]
    lines += _reach_markdown(summary) + _tests_markdown(summary) + _generative_markdown(summary)
    return "\n".join(lines + _left_out_markdown(summary))


# ---- Files ----------------------------------------------------------------------------------

def _csv_text(summary: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in summary["methods"]:
        row = {"method": s["method"], "name": s["name"], "n": s["n"], "budget": summary["budget"],
               "final_mean": s["final_accuracy"]["mean"], "final_std": s["final_accuracy"]["std"],
               "aulc_mean": s["aulc"]["mean"], "aulc_std": s["aulc"]["std"],
               "wall_minutes": s["wall_minutes"]["mean"],
               "reconstruction_error": s["reconstruction_error"], "score_ratio": s["score_ratio"]}
        writer.writerow(["" if row[k] is None else repr(row[k]) if isinstance(row[k], float)
                         else row[k] for k in CSV_COLUMNS])
    return out.getvalue()


def plot_curves(summary: dict, path: str) -> None:
    """Test accuracy (%) against oracle labels: mean over seeds with a +- std band per method."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    c = summary["compared"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = plt.get_cmap("tab10")
    others = [s["method"] for s in summary["methods"] if s["method"] not in TABLE_I_NAMES]
    for s in summary["methods"]:  # a method keeps its color from one study to the next
        i = list(TABLE_I_NAMES).index(s["method"]) if s["method"] in TABLE_I_NAMES else \
            len(TABLE_I_NAMES) + others.index(s["method"])
        x = np.array(s["curve"]["num_labeled"])
        mean = 100 * np.array(s["curve"]["mean"])
        ax.plot(x, mean, marker="o", markersize=3, color=colors(i % 10),
                label=f"{s['name']} (n={s['n']})")
        if s["n"] > 1:
            std = 100 * np.array(s["curve"]["std"], np.float64)
            # An accuracy lies in [0, 100] %: the band is clipped there.
            ax.fill_between(x, np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100),
                            color=colors(i % 10), alpha=0.15, linewidth=0)
    if not summary["methods"]:
        ax.text(0.5, 0.5, "no complete cell yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("oracle labels (oracle-labeled training examples; generated x' not counted)",
                  fontsize=9)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{_title(c)}: test accuracy over n seeds "
                 "(mean, band ± 1 std)", fontsize=10)
    ax.grid(True, alpha=0.3)
    if summary["methods"]:
        ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def write_report(workdir: str, *, paper_method: str = "vaeacgan",
                 baseline_pair: tuple[str, str] = ("bald", "random"),
                 levels: list[float] | None = None) -> dict:
    """Writes report.md, curves.png, summary.csv and summary.json into the study workdir.

    Args:
      workdir: the study folder (`<workdir>/<method>/seed_<s>/` cells).
      paper_method: tested (one-sided Welch) against every other method present.
      baseline_pair: (a, b) also tested as a > b when both are present.
      levels: accuracies in (0, 1] for labels-to-reach; None derives 3 round levels.

    Returns:
      The summary (what summary.json holds), with `files`: the paths written.

    Raises:
      ValueError: the workdir is missing or holds no cell, or a level is outside (0, 1].
    """
    if levels is not None:
        bad = [v for v in levels if not 0 < v <= 1]
        if bad or not levels:
            raise ValueError(f"levels are test accuracies in (0, 1], e.g. 0.9,0.95; got {levels}")
        levels = sorted(set(levels))
    cells = find_cells(workdir)
    summary = summarize(cells, paper_method=paper_method, baseline_pair=baseline_pair,
                        levels=levels)
    summary["workdir"] = workdir
    summary["command"] = report_command(workdir, paper_method, levels)
    files = {name: os.path.join(workdir, name)
             for name in ("report.md", "curves.png", "summary.csv", "summary.json")}
    summary["files"] = files
    atomic_write_text(files["report.md"], render_markdown(summary))
    plot_curves(summary, files["curves.png"])
    atomic_write_text(files["summary.csv"], _csv_text(summary))
    atomic_write_text(files["summary.json"],
                      json.dumps(summary, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return summary
