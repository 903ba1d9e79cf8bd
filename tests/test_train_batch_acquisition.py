"""End-to-end `python -m tf_bgadl.train` runs with the batch-aware acquisitions (tiny, offline)."""

import json
import os

import pytest

from conftest import run_module

TINY = ["--dataset=digits", "--method=bald", "--initial_per_class=2", "--acquire_per_iteration=10",
        "--pool_subset=60", "--mc_samples=5", "--epochs=2", "--batch_size=32",
        "--score_batch_size=64", "--iterations=1", "--seed=7"]


def _results(workdir):
    with open(os.path.join(workdir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow  # four train processes; `.ci/run` runs the slow tests too
@pytest.mark.parametrize("acquisition, extra", [
    ("batchbald", ["--batchbald_samples=100"]),  # 10^2 <= 100 < 10^3: exact, then sampled
    ("power_bald", ["--acquisition_temperature=0.5"])])
def test_train_acquires_the_same_ids_twice_with_the_same_seed(data_dir, tmp_path, acquisition,
                                                             extra):
    acquired = []
    for run in ("a", "b"):
        workdir = str(tmp_path / run)
        proc = run_module("tf_bgadl.train", *TINY, *extra, f"--acquisition={acquisition}",
                          f"--data_dir={data_dir}", f"--workdir={workdir}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = _results(workdir)
        assert [r["num_labeled"] for r in rows] == [20, 30]
        ids = rows[1]["acquired_ids"]
        assert len(ids) == len(set(ids)) == 10
        assert rows[1]["mean_score"] >= 0  # the BALD of the acquired images
        config = json.load(open(os.path.join(workdir, "config.json")))["acquisition"]
        assert config["acquisition"] == acquisition
        acquired.append(ids)
    assert acquired[0] == acquired[1]
    if acquisition == "batchbald":
        assert config["batchbald_samples"] == 100 and config["temperature"] == 0.0
        assert "BatchBALD: joint mutual information" in proc.stderr
    else:
        assert config["temperature"] == 0.5 and config["batchbald_samples"] == 0


def test_train_refuses_a_temperature_for_bald(data_dir, tmp_path):
    proc = run_module("tf_bgadl.train", *TINY, "--acquisition_temperature=2",
                      f"--data_dir={data_dir}", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert "--acquisition_temperature=2.0 applies to the stochastic acquisitions" in proc.stderr
