"""--strategy=multi_worker: TF_CONFIG checks (fast) and a two-process run on 127.0.0.1 (slow)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tf_bgadl import multi_worker
from tf_bgadl.config import ExperimentConfig


def _config(workers, task_type="worker", index=0, chief=None):
    cluster = {"worker": workers, **({"chief": chief} if chief else {})}
    return {multi_worker.TF_CONFIG: json.dumps({"cluster": cluster,
                                                "task": {"type": task_type, "index": index}})}


def test_parse_tf_config_and_chief():
    task = multi_worker.parse_tf_config(_config(["a:1", "b:2"], index=1))
    assert (task.task_type, task.index, task.num_workers, task.is_chief) == ("worker", 1, 2,
                                                                             False)
    assert multi_worker.parse_tf_config(_config(["a:1", "b:2"])).is_chief
    with_chief = _config(["a:1"], index=0, chief=["c:3"])
    assert not multi_worker.parse_tf_config(with_chief).is_chief
    assert multi_worker.parse_tf_config(_config(["a:1"], "chief", 0, chief=["c:3"])).is_chief


@pytest.mark.parametrize("environ, message", [
    ({}, "needs the TF_CONFIG environment variable"),
    ({"TF_CONFIG": "{cluster"}, "is not valid JSON"),
    ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, 'must be an object with "cluster" and'),
    (_config(["a:1"], index=2), "task index 2 is not in 0..0"),
    (_config(["a:1"], task_type="ps"), "task type 'ps' is not a job"),
    (_config(["a"]), "address 'a' of job 'worker' is not host:port"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]},
                               "task": {"type": "worker", "index": 0}})}, "job(s) ['ps']"),
])
def test_malformed_tf_config_is_a_clear_error(environ, message):
    with pytest.raises(multi_worker.ClusterError) as error:
        multi_worker.parse_tf_config(environ)
    assert message in str(error.value)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


COMMON = ["--dataset=digits", "--method=bald", "--model=cnn", "--initial_per_class=2",
          "--acquire_per_iteration=10", "--pool_subset=100", "--iterations=2", "--mc_samples=5",
          "--epochs=4", "--batch_size=20", "--optimizer=adam", "--learning_rate=0.003",
          "--seed=1"]


def _results(workdir):
    with open(os.path.join(workdir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def _run_workers(workdir, data_dir, *extra):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tf_bgadl.train", *COMMON, f"--data_dir={data_dir}",
         "--strategy=multi_worker", f"--workdir={workdir}", *extra],
        env={**os.environ, **_config(workers, index=i)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]


def test_workers_with_other_progress_or_flags_are_refused():
    config = ExperimentConfig().to_dict()
    other_host = {**config, "data": {**config["data"], "data_dir": "/elsewhere"}}
    other_flags = {**config, "train": {**config["train"], "epochs": 3}}
    fingerprint = multi_worker.config_fingerprint(config)
    assert multi_worker.config_fingerprint(other_host) == fingerprint  # a host's own path
    assert multi_worker.config_fingerprint(other_flags) != fingerprint
    multi_worker.check_same_start([[2, fingerprint], [2, fingerprint]])
    with pytest.raises(multi_worker.ClusterError, match=r"different progress .*\[1, 2\]"):
        multi_worker.check_same_start([[2, fingerprint], [1, fingerprint]])
    with pytest.raises(multi_worker.ClusterError, match="different configs"):
        multi_worker.check_same_start(
            [[2, fingerprint], [2, multi_worker.config_fingerprint(other_flags)]])


@pytest.mark.slow
def test_two_workers_match_one_process_with_the_same_global_batch(data_dir, tmp_path):
    workdir = str(tmp_path / "multi")
    env = dict(os.environ)
    _run_workers(workdir, data_dir, "--iterations=1")
    assert [r["iteration"] for r in _results(workdir)] == [0, 1]
    _run_workers(workdir, data_dir)  # extended to --iterations=2: both workers resume
    # One set of results and checkpoints, written by the chief; no worker copy left behind.
    multi = _results(workdir)
    assert [r["iteration"] for r in multi] == [0, 1, 2]
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["classifier_0002.weights.h5"]
    assert json.load(open(os.path.join(workdir, "config.json")))["num_replicas"] == 2

    single_dir = str(tmp_path / "single")
    proc = subprocess.run([sys.executable, "-m", "tf_bgadl.train", *COMMON,
                           f"--data_dir={data_dir}", "--strategy=mirrored",
                           "--num_cpu_devices=2", f"--workdir={single_dir}"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = _results(single_dir)
    assert [r["acquired_ids"] for r in multi] == [r["acquired_ids"] for r in single]
    assert [r["test_accuracy"] for r in multi] == pytest.approx(
        [r["test_accuracy"] for r in single], abs=1e-9)
