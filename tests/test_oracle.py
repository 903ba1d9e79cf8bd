"""The human oracle (queries CSV round trip) and the stopping rules, with a fake learner."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from tf_bgadl import loop, oracle, stopping
from tf_bgadl.config import (AcquisitionConfig, ConfigError, DataConfig, ExperimentConfig,
                             check_against_data, validate)
from tf_bgadl.data import UNLABELED, ArrayDataset
from tests.test_loop import FakeLearner

CLASSES = ("cat", "dog", "owl")


def _dataset(labeled=12, unlabeled=30):
    """`labeled` images of 3 classes with labels, then `unlabeled` without (a folder's)."""
    rng = np.random.default_rng(0)
    n = labeled + unlabeled
    y = np.concatenate([np.arange(labeled) % 3, np.full(unlabeled, UNLABELED)])
    return ArrayDataset("folder", rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8), y,
                        np.zeros((6, 8, 8, 1), np.uint8), np.arange(6) % 3, num_classes=3,
                        class_names=CLASSES,
                        train_sources=tuple(f"/data/img_{i}.png" for i in range(n)))


def _config(oracle_name="file", iterations=3, **acq):
    return ExperimentConfig(
        data=DataConfig(dataset="folder", data_dir="/data", oracle=oracle_name),
        iterations=iterations, seed=1,
        acquisition=AcquisitionConfig(**{"method": "bald", "acquire_per_iteration": 4,
                                         "pool_subset": 20, **acq}))


def _fill(path, labels_by_id):
    """Writes the label column of a queries CSV: {id: label text}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "label": labels_by_id[int(row["id"])]})
    return rows


def _query_ids(workdir, iteration):
    with open(oracle.query_paths(workdir, iteration)["json"]) as f:
        return json.load(f)["ids"]


def test_round_trip_labels_used_once_and_skip_returns_to_pool(tmp_path):
    workdir, ds = str(tmp_path), _dataset()
    fake = FakeLearner()
    with pytest.raises(oracle.LabelsNeeded) as stop:
        loop.run(_config(), workdir, ds, fake.learner())
    assert stop.value.iteration == 1 and stop.value.count == 4
    paths = oracle.query_paths(workdir, 1)
    assert os.path.exists(paths["png"]) and stop.value.csv_path == paths["csv"]
    assert [i for _, i in fake.fitted] == [12]  # iteration 0: every labeled image, no others
    ids = _query_ids(workdir, 1)
    assert all(i >= 12 for i in ids)  # only unlabeled images are asked for
    rows = _fill(paths["csv"], {ids[0]: "dog", ids[1]: "2", ids[2]: "skip", ids[3]: " cat "})
    assert [int(r["id"]) for r in rows] == ids
    assert rows[0]["image"] == f"/data/img_{ids[0]}.png"
    before = open(os.path.join(workdir, "state.json")).read()

    with pytest.raises(oracle.LabelsNeeded) as stop:  # iteration 1 runs, iteration 2 asks
        loop.run(_config(), workdir, ds, fake.learner())
    assert stop.value.iteration == 2
    assert before != open(os.path.join(workdir, "state.json")).read()
    state = json.load(open(os.path.join(workdir, "state.json")))
    assert state["oracle_labels"] == {str(ids[0]): 1, str(ids[1]): 2, str(ids[3]): 0}
    assert ids[2] in state["pool_ids"] and ids[2] not in state["labeled_ids"]
    assert state["labeled_ids"][-3:] == [ids[0], ids[1], ids[3]]
    results = [json.loads(line) for line in open(os.path.join(workdir, "results.jsonl"))]
    assert results[-1]["acquired_ids"] == [ids[0], ids[1], ids[3]]
    assert results[-1]["num_skipped"] == 1 and results[-1]["num_labeled"] == 15

    # The labels of iteration 1 are used exactly once: iteration 2's queries are new ids, and a
    # rerun without filling iteration 2 asks again without training anything.
    fitted = len(fake.fitted)
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, ds, fake.learner())
    assert len(fake.fitted) == fitted
    assert not set(_query_ids(workdir, 2)) & {ids[0], ids[1], ids[3]}


def test_labels_from_another_file_and_a_stop_rule(tmp_path):
    workdir, ds = str(tmp_path), _dataset()
    config = _config(max_labels=18)  # 12 labeled + 4 + 2 (the second batch is cut to 2)
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(config, workdir, ds, FakeLearner().learner())
    ids = _query_ids(workdir, 1)
    exported = tmp_path / "tool_export.csv"
    exported.write_text("label,id\n" + "".join(f"owl,{i}\n" for i in reversed(ids)))
    with pytest.raises(oracle.LabelsNeeded) as stop:
        loop.run(config, workdir, ds, FakeLearner().learner(), labels_from=str(exported))
    assert stop.value.count == 2  # cut to reach --max_labels exactly
    ids2 = _query_ids(workdir, 2)
    _fill(oracle.query_paths(workdir, 2)["csv"], {i: "0" for i in ids2})
    results = loop.run(config, workdir, ds, FakeLearner().learner())
    assert results[-1]["num_labeled"] == 18 and results[-1]["iteration"] == 2
    assert results[-1]["stop_reason"].startswith("max_labels")
    # Stopped: rerunning does nothing; a higher limit continues (and asks again).
    assert loop.run(config, workdir, ds, FakeLearner().learner()) == results
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(max_labels=30), workdir, ds, FakeLearner().learner())


@pytest.mark.parametrize("edit, problem", [
    (lambda ids: {**{i: "cat" for i in ids}, ids[1]: ""}, "missing label"),
    (lambda ids: {**{i: "cat" for i in ids}, ids[2]: "zebra"}, "unknown class 'zebra'"),
    (lambda ids: {**{i: "cat" for i in ids}, ids[0]: "3"}, "unknown class '3'"),
])
def test_bad_label_is_reported_with_line_and_nothing_changes(tmp_path, edit, problem):
    workdir, ds = str(tmp_path), _dataset()
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    ids = _query_ids(workdir, 1)
    csv_path = oracle.query_paths(workdir, 1)["csv"]
    _fill(csv_path, edit(ids))
    files = {name: open(os.path.join(workdir, name)).read()
             for name in ("state.json", "results.jsonl")}
    with pytest.raises(oracle.LabelFileError) as error:
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    assert problem in str(error.value) and f"{csv_path}:" in str(error.value)
    assert files == {name: open(os.path.join(workdir, name)).read() for name in files}


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_read_labels_reports_every_problem_with_its_line(tmp_path):
    path = _write(tmp_path / "q.csv", "id,image,label\n5,a.png,cat\n5,a.png,dog\n9,b.png,owl\n"
                  "x,c.png,owl\n7,d.png,\n")
    with pytest.raises(oracle.LabelFileError) as error:
        oracle.read_labels(path, [5, 6, 7], class_names=CLASSES, num_classes=3)
    message = str(error.value)
    assert f"{path}:3: id 5 is labeled twice (first on line 2)" in message
    assert f"{path}:4: id 9 was not asked for" in message
    assert f"{path}:5: id 'x' is not an integer" in message
    assert f"{path}:6: id 7: missing label" in message
    assert "id 6 was asked for and has no line" in message
    assert oracle.read_labels(_write(tmp_path / "ok.csv", "label,id\nSKIP,6\n1,5\n\nowl,7\n"),
                              [5, 6, 7], class_names=CLASSES, num_classes=3) == {
        5: 1, 6: oracle.SKIPPED, 7: 2}
    with pytest.raises(oracle.LabelFileError, match="no 'label' column"):
        oracle.read_labels(_write(tmp_path / "h.csv", "id,class\n5,cat\n"), [5],
                           class_names=CLASSES, num_classes=3)
    with pytest.raises(oracle.LabelFileError, match="no such file"):
        oracle.read_labels(str(tmp_path / "none.csv"), [5], class_names=CLASSES, num_classes=3)


def test_class_name_wins_over_index():
    names = ("1", "0")  # folders named like indices
    assert oracle._parse_label("1", names, 2) == 0
    assert oracle._parse_label("0", names, 2) == 1


def _rows(*accuracies, labeled=10):
    return [{"iteration": i, "num_labeled": labeled + 5 * i, "validation_accuracy": a}
            for i, a in enumerate(accuracies)]


def test_stopping_rules():
    acq = AcquisitionConfig
    assert stopping.stop_reason(acq(), _rows(0.5, 0.99)) is None
    assert stopping.stop_reason(acq(max_labels=15), _rows(0.5)) is None
    assert stopping.stop_reason(acq(max_labels=15), _rows(0.5, 0.6)).startswith("max_labels")
    assert stopping.stop_reason(acq(target_accuracy=0.8), _rows(0.5, 0.79)) is None
    assert "0.8100" in stopping.stop_reason(acq(target_accuracy=0.8), _rows(0.5, 0.81))
    # patience 2: the last two iterations must beat the best before them by more than min_delta
    assert stopping.stop_reason(acq(patience=2), _rows(0.5, 0.7)) is None
    assert stopping.stop_reason(acq(patience=2), _rows(0.5, 0.7, 0.71, 0.6)) is None
    assert stopping.stop_reason(acq(patience=2), _rows(0.5, 0.7, 0.7, 0.6)).startswith(
        "patience")
    assert stopping.stop_reason(acq(patience=2, min_delta=0.02),
                                _rows(0.5, 0.7, 0.71, 0.6)).startswith("patience")
    assert stopping.acquisition_size(acq(acquire_per_iteration=10, max_labels=25), 20) == 5
    assert stopping.acquisition_size(acq(acquire_per_iteration=10), 20) == 10


def test_stop_rules_in_the_loop_and_a_raised_limit_continues(tmp_path):
    ds = dataclasses.replace(_dataset(), y_train=np.arange(42) % 3)  # every label known
    config = dataclasses.replace(
        _config("simulated", iterations=6, patience=1),
        data=DataConfig(dataset="folder", data_dir="/d", initial_per_class=2,
                        validation_per_class=1))
    fake = FakeLearner(accuracies=[0.5, 0.6, 0.6, 0.7, 0.8, 0.9, 0.9])
    results = loop.run(config, str(tmp_path), ds, fake.learner())
    assert [r["iteration"] for r in results] == [0, 1, 2]
    assert results[-1]["stop_reason"].startswith("patience")
    assert all("stop_reason" not in r for r in results[:-1])
    relaxed = dataclasses.replace(
        config, acquisition=dataclasses.replace(config.acquisition, patience=3))
    results = loop.run(relaxed, str(tmp_path), ds, fake.learner())
    assert results[-1]["iteration"] == 6
    assert results[-1]["stop_reason"] == "iterations: --iterations=6 done"


def test_simulated_oracle_refuses_unlabeled_images_and_rules_need_validation():
    config = validate(_config("simulated"))
    with pytest.raises(ConfigError, match="30 training images without a label.*--oracle=file"):
        check_against_data(config, num_train=42, num_classes=3, min_class_count=4,
                           num_unlabeled=30)
    check_against_data(validate(_config()), num_train=42, num_classes=3, min_class_count=4,
                       num_unlabeled=30)
    with pytest.raises(ConfigError, match="--target_accuracy=0.9 reads the validation accuracy"):
        validate(_config(target_accuracy=0.9))
    with pytest.raises(ConfigError, match="--min_delta=0.01 applies with --patience only"):
        validate(_config(min_delta=0.01))
    with pytest.raises(ConfigError, match="--dataset=folder needs --data_dir"):
        validate(ExperimentConfig(data=DataConfig(dataset="folder")))
    with pytest.raises(ConfigError, match="--image_size=32 applies to --dataset=folder only"):
        validate(ExperimentConfig(data=DataConfig(dataset="mnist5k", image_size=32)))
    with pytest.raises(ConfigError, match="--labels_from=x.csv applies to --oracle=file only"):
        loop.run(validate(_config("simulated")), "/nonexistent", _dataset(), None,
                 labels_from="x.csv")


def test_new_unlabeled_images_join_the_pool_on_resume(tmp_path):
    workdir, ds = str(tmp_path), _dataset(unlabeled=30)
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    bigger = _dataset(unlabeled=35)  # 5 files added: new ids 42..46
    ids = _query_ids(workdir, 1)
    _fill(oracle.query_paths(workdir, 1)["csv"], {i: "cat" for i in ids})
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, bigger, FakeLearner().learner())
    state = json.load(open(os.path.join(workdir, "state.json")))
    assert set(range(42, 47)) <= set(state["pool_ids"])


def test_header_case_and_interrupted_or_deleted_queries(tmp_path):
    workdir, ds = str(tmp_path), _dataset()
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    paths = oracle.query_paths(workdir, 1)
    ids = _query_ids(workdir, 1)
    # Deleted CSV: written again from what was asked (same ids), and asked again.
    os.remove(paths["csv"])
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    assert [int(r["id"]) for r in csv.DictReader(open(paths["csv"]))] == ids
    # Interrupted before the json was written: the queries are written again.
    os.remove(paths["json"])
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    assert _query_ids(workdir, 1) == ids
    # A spreadsheet's "Label" header is read as the label column (not "unfilled").
    with open(paths["csv"], "w") as f:
        f.write(" ID , Label \n" + "".join(f"{i},dog\n" for i in ids))
    with pytest.raises(oracle.LabelsNeeded) as stop:
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    assert stop.value.iteration == 2


def test_max_labels_below_the_initial_set_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--max_labels=5 is below the 12 images labeled"):
        loop.run(_config(max_labels=5), str(tmp_path), _dataset(), FakeLearner().learner())


def test_new_labeled_images_join_the_labeled_set(tmp_path):
    workdir, ds = str(tmp_path), _dataset(unlabeled=30)
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, ds, FakeLearner().learner())
    _fill(oracle.query_paths(workdir, 1)["csv"], {i: "cat" for i in _query_ids(workdir, 1)})
    # Two images appear in train/<class>/ (labeled: ids 42, 43) and one in unlabeled/ (44).
    bigger = dataclasses.replace(
        ds, x_train=np.concatenate([ds.x_train, ds.x_train[:3]]),
        y_train=np.concatenate([ds.y_train, [0, 1, UNLABELED]]))
    with pytest.raises(oracle.LabelsNeeded):
        loop.run(_config(), workdir, bigger, FakeLearner().learner())
    state = json.load(open(os.path.join(workdir, "state.json")))
    assert {42, 43} <= set(state["labeled_ids"]) and 44 in state["pool_ids"]


def test_continue_command_drops_labels_from_in_both_forms():
    from tf_bgadl import train
    argv = ["train.py", "--oracle=file", "--labels_from", "x.csv", "--workdir=w",
            "--labels_from=y.csv", "--seed=1"]
    assert train.continue_command(argv) == (
        "python -m tf_bgadl.train --oracle=file --workdir=w --seed=1")


def test_target_accuracy_stops_the_loop(tmp_path):
    ds = dataclasses.replace(_dataset(), y_train=np.arange(42) % 3)
    config = dataclasses.replace(
        _config("simulated", iterations=6, target_accuracy=0.7),
        data=DataConfig(dataset="folder", data_dir="/d", initial_per_class=2,
                        validation_per_class=1))
    results = loop.run(config, str(tmp_path), ds,
                       FakeLearner(accuracies=[0.5, 0.6, 0.75, 0.8, 0.9, 0.9, 0.9]).learner())
    assert [r["iteration"] for r in results] == [0, 1, 2]
    assert results[-1]["stop_reason"] == (
        "target_accuracy: validation accuracy 0.7500 reached --target_accuracy=0.7")
