"""One run on several machines: `--strategy=multi_worker` (tf.distribute.MultiWorkerMirroredStrategy).

Every worker process runs the same command (same flags, same `--workdir`) with its own
`TF_CONFIG`; training, evaluation and pool scoring are synchronous data parallel over all the
workers' replicas, so every worker computes the same acquisitions. Only the chief writes the
run's files: the other workers run in a private copy of the workdir (`worker_workdir`), deleted
at the end. Resume reads the chief's workdir on every worker, so it needs the workdir on a file
system that every host sees (as Keras' BackupAndRestore does); `check_same_progress` refuses to
start when the workers see different progress.

TF_CONFIG (https://www.tensorflow.org/guide/distributed_training#setting_up_tf_config_environment_variable):
  {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}
(optionally a "chief" job of one task; without it worker 0 is the chief).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Mapping

from tf_bgadl.config import ConfigError

TF_CONFIG = "TF_CONFIG"


class ClusterError(ConfigError):
    """TF_CONFIG is missing or malformed; the message says what is wrong and what is expected."""


_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}')


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster."""

    task_type: str
    index: int
    num_workers: int  # worker processes in the cluster (chief included)

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.index == 0
                                             and not self._has_chief)

    _has_chief: bool = False


def parse_tf_config(environ: Mapping[str, str] | None = None) -> Task:
    """Reads and checks TF_CONFIG for MultiWorkerMirroredStrategy.

    Raises:
      ClusterError: TF_CONFIG is unset, not JSON, lacks `cluster` / `task`, names a job other
        than chief and worker, a task index outside its job, or an address that is not
        host:port; the message shows an example.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(TF_CONFIG, "")
    if not raw.strip():
        raise ClusterError(f"--strategy=multi_worker needs the {TF_CONFIG} environment variable "
                           f"on every worker, e.g. {TF_CONFIG}='{_EXAMPLE}' (README, \"One run "
                           "on several machines\")")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ClusterError(f"{TF_CONFIG} is not valid JSON ({e}): {raw!r}; expected e.g. "
                           f"{_EXAMPLE}") from e
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict) \
            or not isinstance(value.get("task"), dict):
        raise ClusterError(f"{TF_CONFIG} must be an object with \"cluster\" and \"task\"; got "
                           f"{raw!r}; expected e.g. {_EXAMPLE}")
    cluster, task = value["cluster"], value["task"]
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ClusterError(f"{TF_CONFIG} cluster has the job(s) {unknown}; "
                           "MultiWorkerMirroredStrategy uses only \"chief\" (at most one task) "
                           "and \"worker\"")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ClusterError(f"{TF_CONFIG} cluster job {job!r} must be a non-empty list of "
                               f"\"host:port\" addresses; got {addresses!r}")
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise ClusterError(f"{TF_CONFIG} address {address!r} of job {job!r} is not "
                                   "host:port")
    if len(cluster.get("chief", [])) > 1:
        raise ClusterError(f"{TF_CONFIG} has {len(cluster['chief'])} chief tasks; at most one")
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise ClusterError(f"{TF_CONFIG} task type {task_type!r} is not a job of the cluster "
                           f"({', '.join(sorted(cluster))})")
    if not isinstance(index, int) or isinstance(index, bool) \
            or not 0 <= index < len(cluster[task_type]):
        raise ClusterError(f"{TF_CONFIG} task index {index!r} is not in 0.."
                           f"{len(cluster[task_type]) - 1} (the {task_type} job's tasks)")
    return Task(task_type, index, sum(len(a) for a in cluster.values()),
                _has_chief="chief" in cluster)


def patch_keras_fit() -> None:
    """Lets Keras 3's `fit` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras (3.15) builds a model from the first distributed batch by reducing it eagerly across
    replicas, and reduces each step's logs with `strategy.reduce("MEAN", axis=0)`; under
    MultiWorkerMirroredStrategy the first fails (an eager cross-worker reduce of a PerReplica)
    and the second fails on scalar logs. This builds from the first local replica's batch (the
    same shapes) and reduces logs over the local replicas, as Keras does for one machine (the
    logs are for display; training itself is synchronised by the strategy's all-reduce).
    Called by `make_strategy("multi_worker")` only; runs once per process.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from keras.src import tree  # pylint: disable=import-outside-toplevel
    from keras.src.backend.tensorflow import trainer  # pylint: disable=import-outside-toplevel

    if getattr(trainer, "_tf_bgadl_patched", False):
        return

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:  # pylint: disable=protected-access
            return
        strategy = self.distribute_strategy

        def local(x):
            if isinstance(x, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(x)[0]
            return x

        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(local, next(it))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)  # pylint: disable=protected-access

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build  # pylint: disable=protected-access
    trainer._collective_all_reduce_multi_worker = lambda strategy: False  # pylint: disable=protected-access
    trainer._tf_bgadl_patched = True  # pylint: disable=protected-access


def worker_workdir(workdir: str) -> str:
    """A private copy of the chief's `workdir` for a non-chief worker to run in (and write to).

    The copy holds what a resume reads (config, state, results, checkpoints, generated
    samples), so the worker continues from where the chief's files say; it is deleted by
    `remove_worker_workdir` when the run ends.
    """
    private = tempfile.mkdtemp(prefix="tf_bgadl_worker_")
    if os.path.isdir(workdir):
        for name in ("config.json", "state.json", "results.jsonl", "generated.npz",
                     "image_ids.json", "checkpoints"):
            source = os.path.join(workdir, name)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(private, name))
            elif os.path.exists(source):
                shutil.copy2(source, os.path.join(private, name))
    return private


def remove_worker_workdir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# Config keys that may differ between hosts (each host's own paths).
HOST_KEYS = ("data.data_dir", "data.manual_dir")


def config_fingerprint(config: Mapping) -> int:
    """A 63-bit digest of an `ExperimentConfig` dict without its `HOST_KEYS`: equal on every
    worker of one run."""
    import hashlib  # pylint: disable=import-outside-toplevel
    shared = {section: ({k: v for k, v in values.items() if f"{section}.{k}" not in HOST_KEYS}
                        if isinstance(values, Mapping) else values)
              for section, values in config.items()}
    digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def check_same_start(rows) -> None:
    """Raises ClusterError unless every worker's (last finished iteration, config fingerprint)
    row is the same (`rows`: one per worker)."""
    iterations = sorted({int(r[0]) for r in rows})
    if len(iterations) > 1:
        raise ClusterError(
            f"the workers see different progress in --workdir (last finished iterations "
            f"{iterations}, -1 = none): every host must see the chief's workdir, on a shared "
            "file system, for a multi-worker run to resume")
    if len({int(r[1]) for r in rows}) > 1:
        raise ClusterError(
            "the workers were started with different configs: give every host the same flags "
            f"(only {', '.join('--' + k.split('.')[1] for k in HOST_KEYS)} may differ)")


def check_same_progress(strategy, iteration: int, config: Mapping | None = None) -> None:
    """Raises ClusterError unless every worker resumes after the same `iteration` (-1: none)
    with the same config (`config_fingerprint` of the `ExperimentConfig` dict, when given).

    Workers that see different files (a workdir that is not on a shared file system), or that
    were given different flags, would otherwise wait for each other forever in their first
    collective operation, or compute a mix of two runs.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    @tf.function
    def gather(value):
        return strategy.gather(strategy.run(tf.identity, args=(value,)), axis=0)

    fingerprint = config_fingerprint(config) if config is not None else 0
    rows = gather(tf.constant([[iteration, fingerprint]], tf.int64)).numpy()
    check_same_start(rows.tolist())
