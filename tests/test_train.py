"""End-to-end runs of `python -m tf_bgadl.train` on tiny offline data."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_module

TINY = ["--dataset=digits", "--initial_per_class=2", "--acquire_per_iteration=10",
        "--pool_subset=60", "--mc_samples=5", "--epochs=2", "--batch_size=32",
        "--score_batch_size=64", "--latent_dim=8", "--gan_width_multiplier=0.25",
        "--gan_pool_steps=5"]


def _event_tags(logdir):
    """{tag: [steps]} of every event file under `logdir`."""
    import tensorflow as tf
    tags = {}
    for name in sorted(os.listdir(logdir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def _results(workdir):
    with open(os.path.join(workdir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow  # about 50 s alone: keeps the default run near 10 minutes; .ci/run runs it
def test_train_end_to_end_under_mirrored_strategy(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    proc = run_module("tf_bgadl.train", *TINY, f"--data_dir={data_dir}", f"--workdir={workdir}",
                      "--model=resnet18", "--width_multiplier=0.125", "--iterations=1",
                      "--strategy=mirrored", "--num_cpu_devices=2", "--validation_per_class=3",
                      f"--export_base={tmp_path / 'models'}", unset_env=["TF_CPP_MIN_LOG_LEVEL"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in proc.stderr
    rows = _results(workdir)
    assert [r["num_labeled"] for r in rows] == [20, 30]
    for r in rows:
        assert {"iteration", "num_labeled", "test_accuracy", "acquired_ids", "mean_score",
                "seconds"} <= set(r)
        assert 0.0 <= r["test_accuracy"] <= 1.0
    assert rows[1]["mean_score"] >= 0
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["strategy"] == "mirrored" and config["model"]["name"] == "resnet18"
    assert os.path.getsize(os.path.join(workdir, "accuracy.png")) > 1000
    assert "epoch 2/2" in proc.stderr  # progress is logged
    assert "train_accuracy=" in proc.stderr and " accuracy=" not in proc.stderr
    # TensorFlow's C++ start-up noise is hidden (TF_CPP_MIN_LOG_LEVEL is unset here).
    assert "oneDNN" not in proc.stderr and "cuInit" not in proc.stderr
    assert all(0.0 <= r["validation_accuracy"] <= 1.0 for r in rows)
    state = json.load(open(os.path.join(workdir, "state.json")))
    assert len(state["validation_ids"]) == 30
    # TensorBoard: per-iteration scalars at step = oracle labels, per-epoch training metrics,
    # and the sample grid.
    tags = _event_tags(os.path.join(workdir, "tensorboard"))
    assert {"test/accuracy", "validation/accuracy", "acquisition/mean_score",
            "generation/reconstruction_error", "generation/score_acquired",
            "generation/score_generated", "generation/samples",
            "train/classifier_loss", "train/generator_loss", "train/accuracy"} <= set(tags)
    assert tags["test/accuracy"] == [20, 30] and tags["generation/samples"] == [30]
    assert tags["train/classifier_loss"] == [1, 2, 3, 4]  # 2 epochs x 2 iterations
    assert os.listdir(os.path.join(workdir, "samples")) == ["iter_0001.png"]
    assert [r["num_generated"] for r in rows] == [0, 10]  # vaeacgan is the default method
    # --export_base exports the final classifier for TF Serving.
    assert os.listdir(tmp_path / "models" / "tf_bgadl") == ["1"]
    assert os.path.exists(tmp_path / "models" / "tf_bgadl" / "1" / "saved_model.pb")


@pytest.mark.slow  # about 85 s: keeps the default run near 10 minutes; .ci/run runs it
def test_same_seed_same_acquisitions_and_resume_after_kill(data_dir, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--model=cnn", "--iterations=3", "--seed=4"]
    first = run_module("tf_bgadl.train", *common, f"--workdir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-3000:]
    reference = _results(tmp_path / "a")

    # Kill a second run with SIGKILL once it has finished iteration 1, then resume it.
    workdir = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "tf_bgadl.train", *common,
                             f"--workdir={workdir}", "--epochs=2"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    state = workdir / "state.json"
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.load(open(state))["iteration"] >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_results(workdir))
    assert 2 <= done  # at least iterations 0 and 1 were finished and kept
    second = run_module("tf_bgadl.train", *common, f"--workdir={workdir}")
    assert second.returncode == 0, second.stderr[-3000:]
    if done < 4:
        assert "Resuming" in second.stderr
    resumed = _results(workdir)
    assert [r["acquired_ids"] for r in resumed] == [r["acquired_ids"] for r in reference]
    assert [r["iteration"] for r in resumed] == [0, 1, 2, 3]


@pytest.mark.parametrize("flags, message", [
    (["--pool_subset=0"], "--pool_subset=0 must be positive"),
    (["--acquire_per_iteration=70"], "--acquire_per_iteration=70 is larger than --pool_subset=60"),
    (["--pool_subset=5000"], "--pool_subset=5000 is larger than the pool"),
    (["--dataset=cifar10"], "tf_bgadl.prepare_data --dataset=cifar10"),
    (["--model=vgg"], "flag --model=vgg"),
    (["--validation_per_class=-1"], "--validation_per_class=-1 must be >= 0"),
    (["--validation_per_class=200"], "exceeds the 139 training examples of the smallest class"),
])
def test_bad_input_is_a_clear_error_before_training(data_dir, tmp_path, flags, message):
    start = time.time()
    proc = run_module("tf_bgadl.train", *TINY, f"--data_dir={data_dir}",
                      f"--workdir={tmp_path / 'w'}", "--iterations=1", *flags)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "epoch" not in proc.stderr  # nothing was trained
    assert time.time() - start < 60


def test_workdir_of_another_config_is_refused(data_dir, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", f"--workdir={tmp_path}", "--iterations=0"]
    assert run_module("tf_bgadl.train", *common).returncode == 0
    events = sorted(os.listdir(tmp_path / "tensorboard"))
    proc = run_module("tf_bgadl.train", *common, "--mc_samples=7")
    assert proc.returncode != 0 and "acquisition.mc_samples: workdir has 5" in proc.stderr
    assert sorted(os.listdir(tmp_path / "tensorboard")) == events  # no event file for it
