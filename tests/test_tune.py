"""Tuning (`python -m tf_bgadl.tune`): search space, objective, resume, distribution, reports."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags as absl_flags

from conftest import REPO, run_module
from tf_bgadl import cli
from tf_bgadl import config as config_lib
from tf_bgadl.tuning import objectives, search_space
from tf_bgadl.tuning import settings as settings_lib

# A tiny search on `digits` (as tests/test_train.py's TINY): 1 acquisition iteration, 1 epoch;
# with BALD (the default run's, cheap) or the VAE-ACGAN (lambda and the generator's width too).
TINY = ["--dataset=digits", "--initial_per_class=2", "--validation_per_class=5",
        "--acquire_per_iteration=10", "--pool_subset=60", "--mc_samples=5", "--epochs=1",
        "--batch_size=32", "--score_batch_size=64", "--iterations=1", "--model_choices=cnn",
        "--width_multiplier_choices=0.125,0.25"]
BALD = ["--method=bald"]
VAEACGAN = ["--method=vaeacgan", "--latent_dim=8", "--gan_pool_steps=5",
            "--gan_width_multiplier_choices=0.25,0.5"]
SEARCHED = ["gen_loss_weight", "model", "width_multiplier", "dropout_rate",
            "gan_width_multiplier"]
TUNE_ONLY = ["tuner", "max_trials", "objective", "search", "search_seed",
             "bayesian_initial_points", "hyperband_factor", "hyperband_iterations",
             *[spec.flag for spec in search_space.SPECS.values()]]


def _search(data_dir, workdir, *extra, env=None, timeout=600):
    return run_module("tf_bgadl.tune", *TINY, f"--data_dir={data_dir}", f"--workdir={workdir}",
                      *extra, env=env, timeout=timeout)


def _trials(workdir):
    """{trial id: (trial.json, run config.json or None, results rows, launches)}."""
    out = {}
    project = os.path.join(workdir, "trials")
    for name in sorted(os.listdir(project)):
        if not name.startswith("trial_"):
            continue
        path = os.path.join(project, name)
        trial = json.load(open(os.path.join(path, "trial.json")))
        run = os.path.join(path, "run")
        config = (json.load(open(os.path.join(run, "config.json")))
                  if os.path.exists(os.path.join(run, "config.json")) else None)
        results = ([json.loads(line) for line in open(os.path.join(run, "results.jsonl"))]
                   if os.path.exists(os.path.join(run, "results.jsonl")) else [])
        launches = ([json.loads(line) for line in open(os.path.join(path, "launches.jsonl"))]
                    if os.path.exists(os.path.join(path, "launches.jsonl")) else [])
        out[trial["trial_id"]] = (trial, config, results, launches)
    return out


def _metric(trial, name):
    return trial["metrics"]["metrics"][name]["observations"][-1]["value"][-1]


def _parse_train_flags(args):
    """The resolved train config of train flags (as `python -m tf_bgadl.train` builds it)."""
    from tf_bgadl import train
    absl_flags.FLAGS.unparse_flags()
    try:
        absl_flags.FLAGS(["train", *args])
        return config_lib.validate(train.config_from_flags())
    finally:
        absl_flags.FLAGS.unparse_flags()


def _base(iterations=150, **changes):
    config = config_lib.ExperimentConfig(
        data=config_lib.DataConfig(dataset="digits", validation_per_class=5),
        iterations=iterations)
    for name, value in changes.items():
        config = search_space.set_value(config, name, value)
    return config


# ---------------------------------------------------------------------------------------------
# search space and objective (no training)


def test_every_searchable_hyperparameter_is_a_train_flag_and_maps_onto_its_field():
    from tf_bgadl import train  # noqa: F401  (defines the train flags)
    train_flags = {f.name for f in absl_flags.FLAGS.get_flags_for_module("tf_bgadl.train")}
    assert set(search_space.SPECS) <= train_flags
    for name, value in [("gen_loss_weight", 0.0371), ("model", "resnet18pa"),
                        ("width_multiplier", 0.375), ("dropout_rate", 0.2219),
                        ("gan_width_multiplier", 0.5)]:
        # the train flag and the searched value give the same config
        by_flag = _parse_train_flags(["--workdir=/tmp/unused", "--validation_per_class=5",
                                      "--dataset=digits", f"--{name}={value}"])
        by_value = config_lib.validate(search_space.set_value(_base(), name, value))
        assert by_flag == by_value, name
        assert search_space.get_value(by_value, name) == value


def test_keras_tuner_values_map_onto_the_config_exactly():
    import keras_tuner
    from tf_bgadl.tuning import tuner
    space = search_space.parse(None, {}, "vaeacgan")
    assert space.names == tuple(SEARCHED)
    model = tuner.ConfigHyperModel(space, _base())
    hp = keras_tuner.HyperParameters()
    model.build(hp)  # declares the space
    assert [p.name for p in hp.space] == SEARCHED
    rng = np.random.default_rng(0)
    for draw in range(20):
        values = {p.name: p.random_sample(int(rng.integers(1 << 30))) for p in hp.space}
        hp.values.update(values)
        config = model.build(hp)
        assert config.generator.gen_loss_weight == values["gen_loss_weight"]
        assert config.model.name == values["model"]
        assert config.model.width_multiplier == values["width_multiplier"]
        assert config.model.dropout_rate == values["dropout_rate"]
        assert config.generator.width_multiplier == values["gan_width_multiplier"]
        assert 0.01 <= values["gen_loss_weight"] <= 10 and 0.1 <= values["dropout_rate"] <= 0.6
        # nothing else changes
        changed = {key for key, _, _ in config_lib.config_differences(
            _base().to_dict(), config.to_dict(), ignore=())}
        assert changed <= {"generator.gen_loss_weight", "model.name", "model.width_multiplier",
                           "model.dropout_rate", "generator.width_multiplier"}
    # Hyperband's budget is the number of acquisition iterations.
    hp.values.update({"tuner/epochs": 2, "tuner/initial_epoch": 1, "tuner/trial_id": "0"})
    assert model.build(hp).iterations == 2


def test_the_default_search_is_what_applies_to_the_method():
    assert search_space.parse(None, {}, "vaeacgan").names == tuple(SEARCHED)
    assert search_space.parse(None, {}, "bald").names == ("model", "width_multiplier",
                                                          "dropout_rate")
    space = search_space.parse(["gen_loss_weight"], {"gen_loss_weight_range": "0.1, 3"},
                               "acgan")
    assert space.hyperparameters[0].values == (0.1, 3.0)
    assert space.hyperparameters[0].kind == search_space.LOG_RANGE


@pytest.mark.parametrize("search, given, method, message", [
    (None, {"model_choices": ""}, "vaeacgan",
     r"--model_choices=: an empty choice; give a comma-separated list of at least one value "
     r"\(resnet18, resnet18pa, cnn\)"),
    (None, {"width_multiplier_choices": "0.5,,1"}, "vaeacgan",
     r"--width_multiplier_choices=0.5,,1: an empty choice"),
    (None, {"dropout_rate_range": "0.6,0.1"}, "vaeacgan",
     r"--dropout_rate_range=0.6,0.1: MIN 0.6 > MAX 0.1; give MIN,MAX with MIN < MAX"),
    (None, {"gen_loss_weight_range": "0,1"}, "vaeacgan",
     r"--gen_loss_weight_range=0,1: gen_loss_weight is searched on a log scale, so MIN must be "
     r"> 0 \(got 0\)"),
    (None, {"gen_loss_weight_range": "-1,1"}, "vaeacgan", r"MIN must be > 0 \(got -1\)"),
    (["gen_loss_weight", "learning_rat"], {}, "vaeacgan",
     r"--search=gen_loss_weight,learning_rat: 'learning_rat' is not a hyperparameter that can "
     r"be searched; choose from gen_loss_weight, model, width_multiplier, dropout_rate, "
     r"gan_width_multiplier"),
    ([], {}, "vaeacgan", r"--search=: an empty name"),
    (["model", "model"], {}, "vaeacgan", r"--search=model,model repeats model"),
    (["gen_loss_weight"], {}, "bald",
     r"gen_loss_weight means nothing for --method=bald, which has no generator"),
    (None, {"model_choices": "cnn,resnet34"}, "vaeacgan",
     r"--model_choices=cnn,resnet34: 'resnet34' is not a model; choose from resnet18, "
     r"resnet18pa, cnn"),
    (None, {"dropout_rate_range": "0.3"}, "vaeacgan", r"give a range as MIN,MAX"),
    (None, {"dropout_rate_range": "0.3,x"}, "vaeacgan", r"'x' is not a number"),
    (None, {"dropout_rate_range": "0.3,0.3"}, "vaeacgan", r"MIN = MAX = 0.3 is a fixed value"),
    (["model"], {"dropout_rate_range": "0.1,0.5"}, "vaeacgan",
     r"--dropout_rate_range is set but dropout_rate is not searched"),
    (None, {"width_multiplier_choices": "0.5,0.5"}, "vaeacgan", r"0.5 is given twice"),
])
def test_bad_search_space_flags_name_the_value_and_what_is_allowed(search, given, method,
                                                                   message):
    with pytest.raises(search_space.SearchSpaceError, match=message):
        search_space.parse(search, given, method)


@pytest.mark.parametrize("name, text, message", [
    ("dropout_rate_range", "0,0.5", r"--dropout_rate_range: a trial with dropout_rate=0 would "
     r"be refused: --dropout_rate=0 makes every MC pass identical"),
    ("dropout_rate_range", "0.2,1", r"a trial with dropout_rate=1 would be refused: "
     r"--dropout_rate=1.0 must be in \[0, 1\)"),
    ("width_multiplier_choices", "0.5,-1", r"a trial with width_multiplier=-1 would be refused: "
     r"--width_multiplier=-1.0 must be positive"),
])
def test_values_the_train_config_refuses_are_caught_before_any_training(name, text, message):
    space = search_space.parse(None, {name: text}, "vaeacgan")
    with pytest.raises(search_space.SearchSpaceError, match=message):
        search_space.check_configs(space, _base())


def test_a_search_needs_a_validation_split():
    settings = settings_lib.SearchSettings(space=search_space.parse(None, {}, "bald"))
    base = config_lib.ExperimentConfig(acquisition=config_lib.AcquisitionConfig(method="bald"))
    with pytest.raises(ValueError, match=r"--validation_per_class=0: tuning needs a validation "
                                         r"split .* never on the test split"):
        settings_lib.check(settings, base)


def test_the_objective_reads_the_validation_curve_only():
    rows = [{"iteration": 0, "num_labeled": 20, "validation_accuracy": 0.5, "test_accuracy": 0.1},
            {"iteration": 1, "num_labeled": 30, "validation_accuracy": 0.7, "test_accuracy": 0.2},
            {"iteration": 2, "num_labeled": 50, "validation_accuracy": 0.6, "test_accuracy": 0.3}]
    metrics = objectives.trial_metrics(rows)
    # trapezoids: (10 * 0.6 + 20 * 0.65) / 30
    assert metrics == {"val_final_accuracy": 0.6, "val_aulc": pytest.approx(19.0 / 30.0)}
    changed = [{**r, "test_accuracy": 1.0 - r["test_accuracy"]} for r in rows]
    assert objectives.trial_metrics(changed) == metrics
    without_test = [{k: v for k, v in r.items() if k != "test_accuracy"} for r in rows]
    assert objectives.trial_metrics(reversed(without_test)) == metrics
    with pytest.raises(ValueError, match=r"no validation_accuracy .*--validation_per_class"):
        objectives.trial_metrics([{"iteration": 0, "num_labeled": 20, "test_accuracy": 0.5}])


@pytest.mark.parametrize("args, message", [  # the others: search_space tests above
    (["--gen_loss_weight_range=0,1"], "MIN must be > 0"),
    (["--validation_per_class=0"], "tuning needs a validation split"),
    (["--max_labels=5"], "stopping rules (--max_labels=5) do not apply here"),
])
def test_the_command_refuses_bad_flags_before_any_training(tmp_path, data_dir, args, message):
    workdir = tmp_path / "search"
    proc = _search(data_dir, workdir, *VAEACGAN, *args, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: " in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()  # nothing was started


def _fake_runs(monkeypatch, fail):
    """Trials without training: `experiment.train_and_evaluate` replaced by a fake that raises
    when `fail(config)`, else returns a validation curve that peaks at lambda = 0.3."""
    from tf_bgadl import experiment
    from tf_bgadl.tuning import search

    def fake(config, workdir, strategy=None, *, allow_replica_change=False, test_split=True):
        del strategy, allow_replica_change
        assert not test_split  # a trial never gets the test split
        if fail(config):
            raise RuntimeError(f"boom: lambda {config.generator.gen_loss_weight:.3f}")
        accuracy = 0.9 - 0.1 * abs(np.log10(config.generator.gen_loss_weight / 0.3))
        return [{"iteration": i, "num_labeled": 20 + 10 * i, "validation_accuracy": accuracy,
                 "test_accuracy": None} for i in range(config.iterations + 1)]

    monkeypatch.setattr(experiment, "train_and_evaluate", fake)
    monkeypatch.setattr(search, "check_data", lambda config: None)


def _fake_search(tmp_path, max_trials, seed=1):
    import io
    from tf_bgadl.tuning import search
    settings = settings_lib.SearchSettings(
        space=search_space.parse(["gen_loss_weight"], {}, "vaeacgan"), tuner="random",
        max_trials=max_trials, seed=seed)
    out = io.StringIO()
    outcome = search.run_search(settings, _base(iterations=1), str(tmp_path / "search"), out=out,
                                environ={})
    return outcome, out.getvalue()


def test_failed_trials_are_counted_and_reported_and_the_others_go_on(tmp_path, monkeypatch):
    from tf_bgadl.tuning import report
    _fake_runs(monkeypatch, fail=lambda config: config.generator.gen_loss_weight > 1.0)
    outcome, out = _fake_search(tmp_path, max_trials=6, seed=4)
    assert outcome.stopped is None and len(outcome.records) == 6
    failed = [t for t in outcome.records if t.status == "FAILED"]
    completed = [t for t in outcome.records if t.completed]
    assert failed and completed and len(failed) + len(completed) == 6
    assert all(t.values["gen_loss_weight"] > 1.0 for t in failed)
    assert all(t.values["gen_loss_weight"] <= 1.0 for t in completed)
    for t in failed:
        assert f"(trial_{t.trial_id}) FAILED after" in out and "boom: lambda" in out
        assert "boom: lambda" in open(os.path.join(t.path, "error.txt")).read()
    best = max(completed, key=lambda t: t.metrics["val_aulc"])
    assert outcome.best.trial_id == best.trial_id
    files = report.write_report(str(tmp_path / "search"), records=outcome.records,
                                best=outcome.best, settings={
                                    "space": {"hyperparameters": [
                                        {"name": "gen_loss_weight", "kind": "log_range",
                                         "values": [0.01, 10]}]},
                                    "tuner": "random", "max_trials": 6},
                                base=_base(iterations=1).to_dict(), objective="aulc")
    text = open(files["report"]).read()
    assert f"{len(completed)} completed, {len(failed)} failed" in text
    assert "## Failed trials" in text and text.count("boom: lambda") == len(failed)


def test_a_search_whose_trials_all_fail_stops_and_says_why(tmp_path, monkeypatch):
    """It stops after 3 failures in a row with every one of them saved as FAILED (none left
    RUNNING, which a rerun would retry); a rerun goes on with new trials."""
    _fake_runs(monkeypatch, fail=lambda config: True)
    outcome, out = _fake_search(tmp_path, max_trials=5)
    assert outcome.best is None and not any(t.completed for t in outcome.records)
    assert [t.status for t in outcome.records] == ["FAILED"] * 3
    assert "3 trials in a row failed" in outcome.stopped
    assert out.count("FAILED after") == 3
    again, _ = _fake_search(tmp_path, max_trials=5)
    assert again.ran == ["3", "4"]  # nothing retried
    assert [t.status for t in again.records] == ["FAILED"] * 5


def test_failures_in_a_row_do_not_stop_a_distributed_worker(tmp_path, monkeypatch):
    """A worker that stopped would leave the chief waiting: as a worker, failed trials are
    recorded and the search runs out its trials. (The role comes from `environ`; Keras Tuner
    itself reads os.environ, which has no KERASTUNER_* here, so it runs the oracle locally.)"""
    import io
    from tf_bgadl.tuning import search
    _fake_runs(monkeypatch, fail=lambda config: True)
    settings = settings_lib.SearchSettings(
        space=search_space.parse(["gen_loss_weight"], {}, "vaeacgan"), tuner="random",
        max_trials=5, seed=1)
    worker = {"KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_IP": "127.0.0.1",
              "KERASTUNER_ORACLE_PORT": "8000"}
    outcome = search.run_search(settings, _base(iterations=1), str(tmp_path / "search"),
                                out=io.StringIO(), environ=worker)
    assert outcome.role == search.WORKER and outcome.stopped is None
    assert [t.status for t in outcome.records] == ["FAILED"] * 5


def test_hyperband_stopped_before_a_full_budget_trial_exits_with_an_error(tmp_path,
                                                                           monkeypatch):
    """--max_trials can stop Hyperband before any trial has all --iterations: completed
    trials, no best one; the command says so and exits non-zero, without best.flags."""
    import io
    from tf_bgadl import tune
    from tf_bgadl.tuning import search
    _fake_runs(monkeypatch, fail=lambda config: False)
    settings = settings_lib.SearchSettings(
        space=search_space.parse(["gen_loss_weight"], {}, "vaeacgan"), tuner="hyperband",
        max_trials=1, seed=1, hyperband_factor=2)
    base = _base(iterations=4)
    workdir = str(tmp_path / "search")
    outcome = search.run_search(settings, base, workdir, out=io.StringIO(), environ={})
    assert [t.completed for t in outcome.records] == [True] and outcome.best is None
    with pytest.raises(SystemExit, match="none with the full budget of --iterations=4"):
        tune._finish(settings, base, workdir, outcome)
    assert not os.path.exists(os.path.join(workdir, "best.flags"))
    assert "No completed trial reached the full budget" in open(
        os.path.join(workdir, "tune_report.md")).read()


def test_a_finished_search_is_extended_without_running_its_trials_again(tmp_path, monkeypatch):
    _fake_runs(monkeypatch, fail=lambda config: False)
    first, _ = _fake_search(tmp_path, max_trials=2)
    assert [t.trial_id for t in first.records] == ["0", "1"] and first.ran == ["0", "1"]
    again, out = _fake_search(tmp_path, max_trials=2)
    assert again.ran == [] and "resuming: 2 trial(s) started before, 2 completed" in out
    more, _ = _fake_search(tmp_path, max_trials=4)
    assert more.ran == ["2", "3"] and all(t.completed for t in more.records)
    assert [len(t.launches) for t in more.records] == [1, 1, 1, 1]
    assert [t.values for t in more.records[:2]] == [t.values for t in first.records]


def test_a_search_recorded_before_newer_config_fields_is_resumed(tmp_path, monkeypatch):
    _fake_runs(monkeypatch, fail=lambda config: False)
    _fake_search(tmp_path, max_trials=1)
    path = tmp_path / "search" / "search.json"
    record = json.loads(path.read_text())
    for section, key in (("data", "oracle"), ("data", "image_size"),
                         ("acquisition", "max_labels"), ("acquisition", "patience")):
        del record["base_config"][section][key]  # as written before those fields existed
    path.write_text(json.dumps(record))
    again, out = _fake_search(tmp_path, max_trials=1)
    assert again.ran == [] and "resuming" in out


def test_a_workdir_of_another_search_is_refused(tmp_path, monkeypatch):
    from tf_bgadl.tuning import search
    _fake_runs(monkeypatch, fail=lambda config: False)
    _fake_search(tmp_path, max_trials=1)
    settings = settings_lib.SearchSettings(
        space=search_space.parse(["gen_loss_weight"], {"gen_loss_weight_range": "0.1,1"},
                                 "vaeacgan"), tuner="random", max_trials=1, seed=1)
    with pytest.raises(search.SearchError, match=r"(?s)holds a search with other settings.*"
                                                 r"settings.space.hyperparameters"):
        search.run_search(settings, _base(iterations=1), str(tmp_path / "search"), environ={})


# ---------------------------------------------------------------------------------------------
# a tiny search end to end


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory, data_dir):
    tmp_path = tmp_path_factory.mktemp("tune")
    workdir = tmp_path / "search"
    proc = _search(data_dir, workdir, *BALD, "--tuner=random", "--max_trials=2",
                   "--objective=aulc", "--search_seed=3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, proc


def test_a_tiny_search_runs_every_trial_and_reports_them(tiny_search):
    workdir, proc = tiny_search
    trials = _trials(workdir)
    assert sorted(trials) == ["0", "1"]
    for trial_id, (trial, config, results, launches) in trials.items():
        assert trial["status"] == "COMPLETED", trial["message"]
        assert len(launches) == 1 and launches[0]["tuner_id"] == "tuner0"
        assert [r["iteration"] for r in results] == [0, 1]
        number = int(trial_id) + 1
        assert f"trial {number} of 2 (trial_{trial_id}) finished in" in proc.stdout
        # the objective reported to Keras Tuner is the run's validation AULC
        assert _metric(trial, "val_aulc") == objectives.trial_metrics(results)["val_aulc"]
        assert trial["score"] == _metric(trial, "val_aulc")
    assert "search finished: 2 of 2 trial(s) completed, 0 failed" in proc.stdout
    report = (workdir / "tune_report.md").read_text()
    assert "trial_0" in report and "trial_1" in report and "(best)" in report
    assert "`val_aulc`" in report and "measured once, after the search" in report
    assert os.path.getsize(workdir / "tune_report.png") > 10_000


def _assert_configs_record_the_values(workdir, searched):
    """Each trial's run/config.json is the search's base config with the trial's values."""
    base = json.load(open(workdir / "search.json"))["base_config"]
    for trial, config, _, _ in _trials(workdir).values():
        values = {k: v for k, v in trial["hyperparameters"]["values"].items()
                  if not k.startswith("tuner/")}
        assert set(values) == set(searched)
        expected = json.loads(json.dumps(base))
        for name, value in values.items():
            section, field = search_space.SPECS[name].field
            assert config[section][field] == value, name  # exactly, floats included
            expected[section][field] = value
        # everything else is the base config of the search
        assert config_lib.config_differences(expected, config, ignore=(
            "num_replicas", "iterations")) == []


def test_each_trial_runs_its_values_and_records_them_in_its_config_json(tiny_search):
    workdir, _ = tiny_search
    _assert_configs_record_the_values(workdir, ["model", "width_multiplier", "dropout_rate"])
    for trial, _, _, _ in _trials(workdir).values():
        values = trial["hyperparameters"]["values"]
        assert values["model"] == "cnn" and values["width_multiplier"] in (0.125, 0.25)
        assert 0.1 <= values["dropout_rate"] <= 0.6


def test_trials_never_see_the_test_split(tiny_search):
    workdir, _ = tiny_search
    for _, _, results, _ in _trials(workdir).values():
        assert all(r["test_accuracy"] is None for r in results)
        assert all(0.0 <= r["validation_accuracy"] <= 1.0 for r in results)
    for path in (workdir / "trials").glob("trial_*/run/dataset.json"):
        assert json.load(open(path))["num_test"] == 0


def test_best_flags_hold_the_best_trials_full_train_config(tiny_search):
    workdir, proc = tiny_search
    trials = _trials(workdir)
    best_id = max(trials, key=lambda t: (_metric(trials[t][0], "val_aulc"), -int(t)))
    best_trial, best_config, best_results, _ = trials[best_id]
    text = (workdir / "best.flags").read_text()
    assert f"trial_{best_id}" in text.splitlines()[0]
    lines = [line for line in text.splitlines() if line.startswith("--")]
    assert not [line for line in lines if line[2:].split("=")[0] in TUNE_ONLY]
    assert lines[-1] == f"--workdir={workdir}/best"
    config = _parse_train_flags(cli.expand_flagfiles([f"--flagfile={workdir / 'best.flags'}"]))
    assert config_lib.config_differences(best_config, config.to_dict(),
                                         ignore=("num_replicas",)) == []
    # The test accuracy of the best trial is measured once, after the search, and said so.
    test = json.load(open(workdir / "best_test.json"))
    assert test["trial_id"] == best_id and 0.0 <= test["test_accuracy"] <= 1.0
    assert test["num_test"] == 359 and test["num_labeled"] == best_results[-1]["num_labeled"]
    assert proc.stdout.count("TEST accuracy of the best trial") == 1
    assert f"best trial trial_{best_id}: val_aulc" in proc.stdout


# ---------------------------------------------------------------------------------------------
# slow: the objective against changed test labels, best.flags rerun, resume, hyperband,
# distribution


def _digits_with_other_test_labels(path):
    """A tfds data dir whose `digits` has the same train split and test labels (y + 1) % 10."""
    from tf_bgadl import datasets

    class OtherTestLabels(datasets.Digits, skip_registration=True):
        name = "digits"

        def _split_generators(self, dl_manager):
            splits = super()._split_generators(dl_manager)
            images, labels = self._arrays()
            _, test = datasets.balanced_split(labels, self._TEST_FRACTION, self._SPLIT_SEED)
            splits["test"] = self._generate_examples(images[test], (labels[test] + 1) % 10)
            return splits

    OtherTestLabels(data_dir=str(path)).download_and_prepare()
    return str(path)


@pytest.mark.slow
def test_changing_the_test_labels_changes_no_objective(tiny_search, tmp_path, data_dir,
                                                       digits):
    other = _digits_with_other_test_labels(tmp_path / "tfds")
    from tf_bgadl import data
    changed = data.load_dataset("digits", other)
    np.testing.assert_array_equal(changed.y_train, digits.y_train)
    np.testing.assert_array_equal(changed.x_test, digits.x_test)
    assert not np.any(changed.y_test == digits.y_test)  # every test label differs

    workdir, _ = tiny_search
    again = tmp_path / "search"
    proc = _search(other, again, *BALD, "--tuner=random", "--max_trials=2",
                   "--objective=aulc", "--search_seed=3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first, second = _trials(workdir), _trials(again)
    assert sorted(first) == sorted(second)
    for trial_id in first:
        a, b = first[trial_id], second[trial_id]
        assert a[0]["status"] == b[0]["status"] == "COMPLETED"
        assert a[0]["hyperparameters"]["values"] == b[0]["hyperparameters"]["values"]
        assert a[0]["metrics"] == b[0]["metrics"] and a[0]["score"] == b[0]["score"]
        assert [r["validation_accuracy"] for r in a[2]] == [r["validation_accuracy"]
                                                            for r in b[2]]
    # ... while the test accuracy measured after the search did see the other labels.
    test_a = json.load(open(workdir / "best_test.json"))
    test_b = json.load(open(again / "best_test.json"))
    assert test_a["trial_id"] == test_b["trial_id"]
    assert test_a["test_accuracy"] != test_b["test_accuracy"]


@pytest.mark.slow
def test_best_flags_rerun_with_train_reproduce_the_trials(tiny_search, tmp_path):
    """best.flags reruns the best trial with train, the same run exactly; with another trial's
    values on top, that trial (the second in its process: trials leak no state)."""
    workdir, _ = tiny_search
    test = json.load(open(workdir / "best_test.json"))
    for trial_id, (trial, config, results, _) in _trials(workdir).items():
        values = trial["hyperparameters"]["values"]
        rerun = tmp_path / f"rerun_{trial_id}"
        proc = run_module("tf_bgadl.train", f"--flagfile={workdir / 'best.flags'}",
                          *[f"--{name}={value!r}" if isinstance(value, float)
                            else f"--{name}={value}" for name, value in values.items()],
                          f"--workdir={rerun}", timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [json.loads(line) for line in open(rerun / "results.jsonl")]
        assert config_lib.config_differences(config, json.load(open(rerun / "config.json")),
                                             ignore=("num_replicas",)) == []
        assert [r["acquired_ids"] for r in rows] == [r["acquired_ids"] for r in results]
        assert [r["validation_accuracy"] for r in rows] == [r["validation_accuracy"]
                                                            for r in results]
        if trial_id == test["trial_id"]:  # the test accuracy measured once after the search
            assert rows[-1]["test_accuracy"] == pytest.approx(test["test_accuracy"], abs=1e-12)


@pytest.mark.slow
def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path, data_dir):
    workdir = tmp_path / "search"
    args = [*TINY, *VAEACGAN, f"--data_dir={data_dir}", f"--workdir={workdir}",
            "--tuner=bayesian", "--max_trials=3", "--bayesian_initial_points=2"]
    search = subprocess.Popen([sys.executable, "-m", "tf_bgadl.tune", *args], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second_run = workdir / "trials" / "trial_1" / "run" / "state.json"
    deadline = time.time() + 400
    while time.time() < deadline and search.poll() is None:
        if second_run.exists():  # trial 2 has finished its first iteration
            break
        time.sleep(0.05)
    search.send_signal(signal.SIGKILL)
    search.wait()
    at_kill = _trials(workdir)
    assert at_kill["0"][0]["status"] == "COMPLETED"
    assert at_kill["1"][0]["status"] == "RUNNING"  # killed in the middle of trial 2
    finished = json.load(open(second_run))["iteration"]  # state.json names a whole iteration
    kept = [r for r in at_kill["1"][2] if r["iteration"] <= finished]
    assert kept and not os.path.exists(workdir / "best.flags")

    proc = run_module("tf_bgadl.tune", *args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming: 2 trial(s) started before, 1 completed; trial_1 continue(s)" in proc.stdout
    final = _trials(workdir)
    assert sorted(final) == ["0", "1", "2"]
    assert all(t[0]["status"] == "COMPLETED" for t in final.values())
    assert final["0"][2] == at_kill["0"][2] and len(final["0"][3]) == 1  # not run again
    assert "trial 1 of 3" not in proc.stdout
    assert [r["iteration"] for r in final["1"][2]] == [0, 1]  # no iteration twice
    assert final["1"][2][:len(kept)] == kept  # what was finished at the kill is kept
    assert len(final["1"][3]) == 2 and len(final["2"][3]) == 1
    assert final["1"][0]["hyperparameters"]["values"] == at_kill["1"][0]["hyperparameters"][
        "values"]
    assert os.path.exists(workdir / "best.flags") and os.path.exists(workdir / "tune_report.md")


@pytest.mark.slow
def test_hyperband_promotes_a_trial_by_continuing_its_run(tmp_path, data_dir):
    """Hyperband's budget is acquisition iterations: with --iterations=2 and factor 2 its first
    bracket runs two 1-iteration trials, then continues the better one to 2 iterations."""
    workdir = tmp_path / "search"
    proc = _search(data_dir, workdir, *VAEACGAN, "--iterations=2", "--tuner=hyperband",
                   "--hyperband_factor=2", "--max_trials=3", "--objective=final")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = _trials(workdir)
    assert sorted(trials) == ["0", "1", "2"]
    assert all(t[0]["status"] == "COMPLETED" for t in trials.values())
    assert [len(trials[t][2]) for t in ("0", "1")] == [2, 2]  # iterations 0 and 1
    parent_id = trials["2"][0]["hyperparameters"]["values"]["tuner/trial_id"]
    parent = trials[parent_id]
    assert _metric(parent[0], "val_final_accuracy") == max(
        _metric(trials[t][0], "val_final_accuracy") for t in ("0", "1"))
    child = trials["2"]
    assert child[1]["iterations"] == 2 and child[3][0]["continues"] == parent_id
    assert child[2][:2] == parent[2] and [r["iteration"] for r in child[2]] == [0, 1, 2]
    # only a trial with the full budget can be the best
    assert json.load(open(workdir / "best_test.json"))["trial_id"] == "2"
    assert "--iterations=2" in (workdir / "best.flags").read_text()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_chief_and_two_workers_share_the_trials(tmp_path, data_dir):
    workdir = tmp_path / "search"
    args = [*TINY, *VAEACGAN, f"--data_dir={data_dir}", f"--workdir={workdir}",
            "--tuner=random", "--max_trials=4"]
    port = str(_free_port())
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id,
               "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port,
               "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
        log = open(tmp_path / f"{tuner_id}.log", "w")
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "tf_bgadl.tune", *args], cwd=REPO, env=env, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        for process in processes.values():
            process.wait(timeout=900)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    logs = {t: (tmp_path / f"{t}.log").read_text() for t in processes}
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id}:\n" + logs[tuner_id][-3000:]
    trials = _trials(workdir)
    assert sorted(trials) == ["0", "1", "2", "3"]
    ran_by = {}
    for trial_id, (trial, _, results, launches) in trials.items():
        assert trial["status"] == "COMPLETED", trial["message"]
        assert len(launches) == 1, launches  # no trial ran twice
        assert [r["iteration"] for r in results] == [0, 1]
        ran_by[trial_id] = launches[0]["tuner_id"]
    assert set(ran_by.values()) == {"tuner0", "tuner1"}  # both workers ran trials
    for worker in ("tuner0", "tuner1"):
        mine = sorted(t for t, w in ran_by.items() if w == worker)
        assert f"ran {len(mine)} trial(s)" in logs[worker]
        for t in mine:
            assert f"(trial_{t}) finished in" in logs[worker]
    assert "chief: serving the oracle on 127.0.0.1" in logs["chief"]
    assert "search finished: 4 of 4 trial(s) completed" in logs["chief"]
    assert os.path.exists(workdir / "best.flags") and os.path.exists(workdir / "tune_report.md")
    assert os.path.exists(workdir / "best_test.json")
    distinct = {json.dumps(t[0]["hyperparameters"]["values"], sort_keys=True)
                for t in trials.values()}
    assert len(distinct) == 4
    _assert_configs_record_the_values(workdir, SEARCHED)  # lambda and the GAN's width too
