"""The study report: statistics against hand-computed values, cell discovery, files, entry point.

Every study here is made up: config.json and results.jsonl written by hand into tmp folders.
"""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import REPO, run_module
from tf_bgadl.studies import statistics, summary

# ---- statistics -----------------------------------------------------------------------------


def test_mean_and_sample_std_by_hand():
    values = [0.90, 0.92, 0.97]
    assert statistics.mean(values) == pytest.approx(0.93)
    # sum of squared deviations 0.0009 + 0.0001 + 0.0016 = 0.0026, over n - 1 = 2
    assert statistics.sample_std(values) == pytest.approx(math.sqrt(0.0013))
    assert statistics.sample_std([0.9]) is None  # one seed: no spread, not NaN
    assert statistics.mean([0.9]) == 0.9
    with pytest.raises(ValueError):
        statistics.mean([])
    with pytest.raises(ValueError):
        statistics.mean([0.9, float("nan")])


def test_welch_closed_form():
    # a: mean 2, variance 1, n 3; b: mean 0, variance 0, n 2.
    # t = 2 / sqrt(1/3) = sqrt(12); df = (1/3)^2 / ((1/3)^2 / 2) = 2;
    # with 2 df, P(T > t) = 1/2 - t / (2 sqrt(t^2 + 2)) = 1/2 - sqrt(12) / (2 sqrt(14)).
    result = statistics.welch_t_test([1.0, 2.0, 3.0], [0.0, 0.0])
    assert result.t == pytest.approx(math.sqrt(12))
    assert result.df == pytest.approx(2.0)
    assert result.p == pytest.approx(0.5 - math.sqrt(12) / (2 * math.sqrt(14)))
    assert result.significant() is True and result.reason is None


def test_welch_against_hand_formula_and_scipy():
    a = np.array([0.970, 0.975, 0.972, 0.978])
    b = np.array([0.960, 0.955, 0.968])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    result = statistics.welch_t_test(a, b)
    assert result.t == pytest.approx(t)
    assert result.df == pytest.approx(df)
    assert result.p == pytest.approx(stats.t.sf(t, df))
    reference = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert result.p == pytest.approx(reference.pvalue)
    assert (result.n_a, result.n_b) == (4, 3)
    # One-sided: the reverse hypothesis gets p = 1 - p.
    reverse = statistics.welch_t_test(b, a)
    assert reverse.p == pytest.approx(1 - result.p)
    assert reverse.significant() is False


def test_welch_undefined_cases_have_reasons():
    one = statistics.welch_t_test([0.9], [0.8, 0.85])
    assert one.p is None and one.t is None and "2 seeds" in one.reason
    assert one.significant() is None
    flat = statistics.welch_t_test([0.9, 0.9], [0.8, 0.8])
    assert flat.p is None and "varies" in flat.reason


def test_labels_to_reach():
    x, y = [100, 150, 200, 250], [0.80, 0.90, 0.85, 0.95]
    assert statistics.labels_to_reach(x, y, 0.85) == 150  # the first budget at or above
    assert statistics.labels_to_reach(x, y, 0.90) == 150  # equal counts as reached
    assert statistics.labels_to_reach(x, y, 0.91) == 250  # a later dip does not matter
    assert statistics.labels_to_reach(x, y, 0.96) is None
    assert statistics.labels_to_reach(x[::-1], y[::-1], 0.91) == 250  # any order
    assert statistics.median_labels([100, None, 200]) == 200
    assert statistics.median_labels([100, 200]) == 150
    assert statistics.median_labels([100, None]) is None  # the middle is "not reached"


def test_aulc_by_hand():
    x, y = [100, 200, 300], [0.80, 0.90, 0.90]
    # trapezoids: 100 * 0.85 + 100 * 0.90 = 175, over the range 200
    assert statistics.aulc(x, y, 100, 300) == pytest.approx(0.875)
    # from 150 (interpolated 0.85): 50 * 0.875 + 100 * 0.9 = 133.75, over 150
    assert statistics.aulc(x, y, 150, 300) == pytest.approx(133.75 / 150)
    assert statistics.aulc(x, [0.7, 0.7, 0.7], 100, 300) == pytest.approx(0.7)  # flat: itself
    assert statistics.aulc(x, y, 200, 200) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="covers"):
        statistics.aulc(x, y, 100, 400)


def test_accuracy_levels_are_round_and_reachable():
    assert statistics.accuracy_levels(0.80, 0.942) == [0.84, 0.88, 0.94]
    assert statistics.accuracy_levels(0.97, 0.99) == [0.975, 0.98, 0.99]
    assert statistics.accuracy_levels(0.9, 0.9) == []


# ---- made-up studies ------------------------------------------------------------------------


def write_cell(workdir, method, seed, accuracies, *, iterations=None, start=100, step=50,
               seconds=60.0, extra=None, failed=None, validation=None):
    """A cell with one results line per accuracy (iteration 0, 1, ...)."""
    cell = os.path.join(workdir, method, f"seed_{seed}")
    os.makedirs(cell, exist_ok=True)
    config = {"iterations": len(accuracies) - 1 if iterations is None else iterations,
              "seed": seed, "acquisition": {"method": method, "acquire_per_iteration": step},
              "data": {"dataset": "mnist5k", "initial_per_class": 10}, "model": {"name": "cnn"},
              "train": {"epochs": 5}}
    with open(os.path.join(cell, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(cell, "results.jsonl"), "w") as f:
        for i, accuracy in enumerate(accuracies):
            row = {"iteration": i, "num_labeled": start + step * i, "test_accuracy": accuracy,
                   "seconds": seconds, "num_generated": 0, "mean_score": None,
                   **((extra or {}).get(i, {}))}
            if validation is not None:
                row["validation_accuracy"] = validation
            f.write(json.dumps(row) + "\n")
    if failed is not None:
        with open(os.path.join(cell, "failed.json"), "w") as f:
            json.dump({"returncode": failed, "log": os.path.join(cell, "log.txt")}, f)
    return cell


FINALS = {"vaeacgan": [0.96, 0.97, 0.98], "bald": [0.95, 0.955, 0.96],
          "random": [0.90, 0.92, 0.91]}


@pytest.fixture
def study(tmp_path):
    """Three methods x three seeds complete, plus an incomplete and a failed cell."""
    workdir = str(tmp_path / "study")
    for method, finals in FINALS.items():
        for seed, final in enumerate(finals, start=1):
            write_cell(workdir, method, seed, [0.80, 0.88, final], validation=0.5)
    # Not in any number: an unfinished run and a failed one with wild accuracies.
    write_cell(workdir, "bald", 4, [0.10, 0.10], iterations=2)
    write_cell(workdir, "random", 4, [0.99, 0.99, 0.99], failed=1)
    os.makedirs(os.path.join(workdir, "tensorboard"))  # not a cell folder
    return workdir


def test_find_cells_statuses_and_order(study):
    cells = summary.find_cells(study)
    assert [(c.method, c.seed, c.status) for c in cells] == [
        ("vaeacgan", 1, "complete"), ("vaeacgan", 2, "complete"), ("vaeacgan", 3, "complete"),
        ("bald", 1, "complete"), ("bald", 2, "complete"), ("bald", 3, "complete"),
        ("bald", 4, "incomplete"), ("random", 1, "complete"), ("random", 2, "complete"),
        ("random", 3, "complete"), ("random", 4, "failed")]
    failed = cells[-1]
    assert failed.log == os.path.join(study, "random", "seed_4", "log.txt")
    assert "exit code 1" in failed.detail
    assert "0..1 of 0..2" in cells[6].detail
    assert [r["iteration"] for r in cells[0].results] == [0, 1, 2]


def test_missing_or_empty_workdir_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="nowhere"):
        summary.find_cells(missing)
    with pytest.raises(ValueError, match="holds no cell"):
        summary.write_report(str(tmp_path))


def test_report_numbers_exclude_incomplete_and_failed(study):
    result = summary.write_report(study)
    by_method = {m["method"]: m for m in result["methods"]}
    assert list(by_method) == ["vaeacgan", "bald", "random"]  # Table I order
    assert result["budget"] == 200 and result["first_budget"] == 100
    for method, finals in FINALS.items():
        final = by_method[method]["final_accuracy"]
        assert by_method[method]["n"] == 3
        assert final["per_seed"] == {"1": finals[0], "2": finals[1], "3": finals[2]}
        assert final["mean"] == pytest.approx(np.mean(finals))
        assert final["std"] == pytest.approx(np.std(finals, ddof=1))
        aulc = (50 * (0.80 + 0.88) / 2 + 50 * (0.88 + np.array(finals)) / 2) / 100
        assert by_method[method]["aulc"]["mean"] == pytest.approx(aulc.mean())
        assert by_method[method]["wall_minutes"]["mean"] == pytest.approx(3.0)  # 3 x 60 s
        curve = by_method[method]["curve"]  # what curves.png plots: test accuracy only
        assert curve["num_labeled"] == [100, 150, 200]
        assert curve["mean"] == pytest.approx([0.80, 0.88, np.mean(finals)])
        assert curve["std"][2] == pytest.approx(np.std(finals, ddof=1))
    tests = {(t["a"], t["b"]): t for t in result["tests"]}
    assert set(tests) == {("vaeacgan", "bald"), ("vaeacgan", "random"), ("bald", "random")}
    reference = stats.ttest_ind(FINALS["bald"], FINALS["random"], equal_var=False,
                                alternative="greater")
    assert tests["bald", "random"]["p"] == pytest.approx(reference.pvalue)
    assert tests["bald", "random"]["significant"] == (reference.pvalue <= 0.05)
    levels = result["levels"]
    assert len(levels) == 3 and all(0.80 < v <= 0.91 for v in levels)


def test_report_files_agree(study):
    result = summary.write_report(study, levels=[0.85, 0.95])
    with open(os.path.join(study, "summary.json")) as f:
        stored = json.load(f)
    with open(os.path.join(study, "summary.csv")) as f:
        rows = list(csv.DictReader(f))
    assert stored["methods"] == json.loads(json.dumps(result["methods"]))
    assert [r["method"] for r in rows] == ["vaeacgan", "bald", "random"]
    for row, method in zip(rows, stored["methods"]):
        assert float(row["final_mean"]) == method["final_accuracy"]["mean"]
        assert float(row["final_std"]) == method["final_accuracy"]["std"]
        assert float(row["aulc_mean"]) == method["aulc"]["mean"]
        assert int(row["n"]) == method["n"] and int(row["budget"]) == 200
    reach = {m["method"]: m["labels_to_reach"] for m in stored["methods"]}
    assert reach["vaeacgan"][1] == {"level": 0.95, "per_seed": {"1": 200, "2": 200, "3": 200},
                                    "median": 200}
    assert reach["random"][1]["per_seed"] == {"1": None, "2": None, "3": None}
    assert reach["random"][1]["median"] is None
    with open(os.path.join(study, "report.md")) as f:
        report = f.read()
    vaeacgan = stored["methods"][0]["final_accuracy"]
    assert (f"| AL w. VAEACGAN | {100 * vaeacgan['mean']:.2f} ± {100 * vaeacgan['std']:.2f} | 3 |"
            in report)
    assert "Random selection" in report and "AL without DA" in report
    assert "not reached" in report and "95.00%" in report
    assert os.path.join(study, "random", "seed_4", "log.txt") in report  # the failed cell's log
    assert "incomplete: `bald` seed 4" in report
    assert f"python -m tf_bgadl.report --workdir={study} --levels=0.85,0.95" in report
    with open(os.path.join(study, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in os.listdir(study) if n.startswith(".tmp")]


def test_common_budget_and_generative_diagnostics(tmp_path):
    workdir = str(tmp_path / "study")
    diag = {1: {"reconstruction_error": 4.0, "score_acquired": 0.5, "score_generated": 0.25},
            2: {"reconstruction_error": 6.0, "score_acquired": 0.4, "score_generated": 0.4},
            0: {"reconstruction_error": 99.0, "score_acquired": 1.0, "score_generated": 9.0}}
    # (iteration 0 acquires nothing: its values, were a run to write any, are left out)
    write_cell(workdir, "vaeacgan", 1, [0.8, 0.85, 0.9], extra=diag)
    # Ran two iterations further: compared at 200 labels (its 0.9), not at its last line.
    write_cell(workdir, "bald", 1, [0.8, 0.84, 0.9, 0.99, 0.99])
    result = summary.write_report(workdir)
    assert result["budget"] == 200
    vaeacgan, bald = result["methods"]
    assert bald["final_accuracy"]["mean"] == 0.9 and bald["final_accuracy"]["std"] is None
    assert vaeacgan["reconstruction_error"] == pytest.approx(5.0)
    assert vaeacgan["score_ratio"] == pytest.approx((0.5 + 1.0) / 2)
    assert bald["reconstruction_error"] is None
    assert result["tests"][0]["p"] is None  # one seed per side
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert "n/a (one seed)" in report and "needs at least 2 seeds" in report
    assert "## Generative methods" in report and "| AL w. VAEACGAN | g(e(x*), y*) | 5.0000 | 0.750 |" in report
    assert "`iterations` = 2, 4" in report  # cells that differ in more than method and seed


def test_cells_on_other_label_grids(tmp_path):
    workdir = str(tmp_path / "study")
    write_cell(workdir, "bald", 1, [0.8, 0.85, 0.9], step=50)  # 100, 150, 200 labels
    write_cell(workdir, "bald", 2, [0.8, 0.86, 0.88, 0.9], step=30)  # ..., 190 labels
    write_cell(workdir, "bald", 3, [0.8, 0.86, 0.87, 0.92], step=30)
    result = summary.write_report(workdir)
    assert result["budget"] == 190
    (bald,) = result["methods"]
    # Seed 1 has no line at 190: it is left out of the final accuracy (never compared at its
    # 150 labels) and its n, and its AULC interpolates to 0.89 at 190: (50*0.825 + 40*0.87)/90.
    assert bald["final_accuracy"]["per_seed"] == {"2": 0.9, "3": 0.92} and bald["n"] == 2
    assert bald["final_accuracy"]["mean"] == pytest.approx(0.91)
    assert bald["aulc"]["per_seed"]["1"] == pytest.approx((50 * 0.825 + 40 * 0.87) / 90)
    with open(os.path.join(workdir, "report.md")) as f:
        assert "left out of the test accuracy column, its n and the t-tests (they enter AULC, " \
            "interpolated): `bald` seed 1 (150 labels)" in f.read()


def test_non_finite_diagnostics_are_left_out_and_counted(tmp_path):
    workdir = str(tmp_path / "study")
    diag = {1: {"reconstruction_error": float("nan"), "score_acquired": 0.5,
                "score_generated": 0.25},
            2: {"reconstruction_error": 6.0, "score_acquired": 0.4, "score_generated": 0.4}}
    write_cell(workdir, "vaeacgan", 1, [0.8, 0.85, 0.9], extra=diag)  # json writes NaN
    result = summary.write_report(workdir)
    (vaeacgan,) = result["methods"]
    assert vaeacgan["reconstruction_error"] == 6.0 and vaeacgan["non_finite_dropped"] == 1
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["methods"][0]["reconstruction_error"] == 6.0
    with open(os.path.join(workdir, "report.md")) as f:
        assert "1 non-finite value(s)" in f.read()


def test_no_complete_cell_writes_a_report_that_says_so(tmp_path):
    workdir = str(tmp_path / "study")
    write_cell(workdir, "bald", 1, [0.8], iterations=3)
    write_cell(workdir, "random", 1, [0.8, 0.82], iterations=3, failed=-9)
    result = summary.write_report(workdir)
    assert result["methods"] == [] and result["tests"] == []
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert "No complete cell yet" in report and "exit code -9" in report
    with open(os.path.join(workdir, "summary.csv")) as f:
        assert f.read().strip() == ",".join(summary.CSV_COLUMNS)
    assert os.path.getsize(os.path.join(workdir, "curves.png")) > 0


def test_bad_levels_are_a_clear_error(study):
    with pytest.raises(ValueError, match="levels"):
        summary.write_report(study, levels=[95.0])


# ---- entry point ----------------------------------------------------------------------------


def test_entry_point_writes_and_prints_the_report(study):
    proc = run_module("tf_bgadl.report", f"--workdir={study}", "--levels=0.9,0.95", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| AL w. VAEACGAN |" in proc.stdout and "Random selection" in proc.stdout
    assert "2 cell(s) incomplete or failed" in proc.stdout
    for name in ("report.md", "curves.png", "summary.csv", "summary.json"):
        assert os.path.join(study, name) in proc.stdout
        assert os.path.exists(os.path.join(study, name))


@pytest.mark.parametrize("flag", ["--workdir={missing}", "--levels=abc"])
def test_entry_point_errors_are_clean(tmp_path, study, flag):
    missing = str(tmp_path / "no_such_study")
    args = [flag.format(missing=missing)]
    if not flag.startswith("--workdir"):
        args.append(f"--workdir={study}")
    proc = run_module("tf_bgadl.report", *args, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr + proc.stdout
    if flag.startswith("--workdir"):
        assert missing in proc.stderr


def test_entry_point_does_not_import_tensorflow():
    code = "import sys, tf_bgadl.report; print('tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=120)
    assert proc.stdout.strip() == "False"


def test_only_real_config_differences_are_warned_about(tmp_path):
    """Methods resolve their own generator defaults (methods.py): not a warning between methods,
    but a warning between two cells of one method."""
    def set_generator(cell, **values):
        path = os.path.join(cell, "config.json")
        config = json.load(open(path))
        config["generator"] = values
        json.dump(config, open(path, "w"))

    for seed in (1, 2):
        set_generator(write_cell(str(tmp_path), "vaeacgan", seed, [0.5, 0.6]),
                      generation="persisted")
        set_generator(write_cell(str(tmp_path), "acgan", seed, [0.5, 0.6]), generation="online")
    assert summary.write_report(str(tmp_path))["compared"]["config_differences"] == {}
    set_generator(os.path.join(str(tmp_path), "acgan", "seed_2"), generation="persisted")
    differences = summary.write_report(str(tmp_path))["compared"]["config_differences"]
    assert list(differences) == ["generator.generation (acgan)"]
    assert "Warning" in open(os.path.join(str(tmp_path), "report.md")).read()


def test_a_generator_setting_that_differs_between_methods_is_warned_about(tmp_path):
    for method, width in (("vaeacgan", 0.25), ("acgan", 1.0)):
        cell = write_cell(str(tmp_path), method, 1, [0.5, 0.6])
        path = os.path.join(cell, "config.json")
        config = json.load(open(path))
        config["generator"] = {"width_multiplier": width}
        json.dump(config, open(path, "w"))
    differences = summary.write_report(str(tmp_path))["compared"]["config_differences"]
    assert list(differences) == ["generator.width_multiplier"]


def test_a_cell_past_its_configured_iterations_is_complete_as_for_the_study(tmp_path):
    workdir = str(tmp_path / "study")
    write_cell(workdir, "bald", 1, [0.8, 0.85, 0.9], iterations=1)  # --iterations lowered to 1
    (cell,) = summary.find_cells(workdir)
    assert cell.status == summary.COMPLETE
