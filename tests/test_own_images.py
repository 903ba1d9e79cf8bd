"""End to end: a folder of images, a person labeling through the queries CSV, a stopping rule.

Runs `python -m tf_bgadl.train` as a user would (slow: three processes that import
TensorFlow and train a small CNN); the loop's oracle logic is tested fast in test_oracle.py.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

CLASSES = ("circle", "square")


def _image(kind: str, rng) -> np.ndarray:
    """A 12x12 grey image of a filled circle or square at a random place, with noise."""
    yy, xx = np.mgrid[:12, :12]
    cy, cx = rng.integers(4, 8, 2)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 9) if kind == "circle" else (
        (abs(yy - cy) <= 2) & (abs(xx - cx) <= 2))
    image = np.where(mask, 220, 30) + rng.integers(0, 20, (12, 12))
    return image.astype(np.uint8)


def make_folder(root, rng, per_class=(6, 3), unlabeled=24) -> dict[str, str]:
    """<root>/train/<class>/, test/<class>/ and unlabeled/ PNGs; returns {unlabeled file: class}."""
    for split, count in zip(("train", "test"), per_class):
        for kind in CLASSES:
            os.makedirs(root / split / kind)
            for i in range(count):
                Image.fromarray(_image(kind, rng)).save(root / split / kind / f"{kind}_{i}.png")
    os.makedirs(root / "unlabeled")
    truth = {}
    for i in range(unlabeled):
        kind = CLASSES[i % 2]
        path = root / "unlabeled" / f"u{i:03d}.png"
        Image.fromarray(_image(kind, rng)).save(path)
        truth[str(path)] = kind
    return truth


@pytest.mark.slow
def test_label_your_own_images_end_to_end(tmp_path):
    truth = make_folder(tmp_path / "images", np.random.default_rng(0))
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "tf_bgadl.train", "--dataset=folder",
               f"--data_dir={tmp_path / 'images'}", "--oracle=file", "--method=bald",
               "--model=cnn", "--acquire_per_iteration=4", "--pool_subset=20",
               "--iterations=10", "--max_labels=18", "--mc_samples=4", "--epochs=2",
               "--batch_size=8", f"--workdir={workdir}"]

    def run(*extra):
        proc = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = run()
    queries = workdir / "queries" / "iter_0001.csv"
    assert "Iteration 1 asks for 4 labels" in out and str(queries) in out
    assert "python -m tf_bgadl.train" in out and "--oracle=file" in out
    assert (workdir / "queries" / "iter_0001.png").exists()
    with open(queries, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == [""] * 4
    assert all(r["image"] in truth and r["predicted_class"] in CLASSES for r in rows)
    # The person labels from a labeling tool's export (by class name), skipping one image.
    export = tmp_path / "export.csv"
    export.write_text("id,label\n" + "".join(
        f"{r['id']},{'skip' if k == 0 else truth[r['image']]}\n" for k, r in enumerate(rows)))

    out = run(f"--labels_from={export}")
    assert "Iteration 2 asks for 3 labels" in out and str(export) not in out
    results = [json.loads(line) for line in open(workdir / "results.jsonl")]
    assert [r["num_labeled"] for r in results] == [12, 15]
    assert results[-1]["num_skipped"] == 1
    state = json.loads((workdir / "state.json").read_text())
    assert int(rows[0]["id"]) in state["pool_ids"]

    with open(workdir / "queries" / "iter_0002.csv", newline="") as f:
        rows2 = list(csv.DictReader(f))
    with open(workdir / "queries" / "iter_0002.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows2[0]))
        writer.writeheader()
        for r in rows2:
            writer.writerow({**r, "label": CLASSES.index(truth[r["image"]])})
    run()  # iteration 2 (its batch was cut from 4 to 3 by --max_labels=18), then it stops
    results = [json.loads(line) for line in open(workdir / "results.jsonl")]
    assert results[-1]["num_labeled"] == 18
    assert results[-1]["stop_reason"].startswith("max_labels")
    assert results[-1]["test_accuracy"] is not None
