"""The cells of a study (one train run per method and seed), their folders, shards and status.

Pure functions of their arguments and of files in the cells' folders: no flags, no TensorFlow.

A study of methods M and seeds S has the cells (m, s) in method-major order: for m in M, for s
in S. Cell i belongs to shard i % num_shards, so consecutive seeds of one method land on
different shards and every shard gets a similar mix of slow (generative) and fast methods.
Every shard must be given the same methods and seeds (in the same order) to agree on the grid.

Study layout (each cell is an ordinary `tf_bgadl.train` workdir, see `tf_bgadl.loop`):
  <workdir>/<method>/seed_<s>/config.json, results.jsonl, ...   what train writes
  <workdir>/<method>/seed_<s>/log.txt      stdout and stderr of every launch, appended
  <workdir>/<method>/seed_<s>/failed.json  present while the cell's last launch failed
  <workdir>/<method>/seed_<s>/.lock        held (flock) while a study process runs the cell
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

from tf_bgadl import config as config_lib

# Scheduler variables that name a shard (see `resolve_shard`).
SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
SLURM_ID = "SLURM_ARRAY_TASK_ID"
SLURM_MIN = "SLURM_ARRAY_TASK_MIN"
SLURM_STEP = "SLURM_ARRAY_TASK_STEP"
K8S_INDEX = "JOB_COMPLETION_INDEX"

# Keys that train fills in at run time (the number of replicas of its strategy), which only
# train can compare (it does, when the cell resumes); config.RESUMABLE_KEYS may differ too.
RUNTIME_KEYS = ("num_replicas",)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (method, seed) run of a study."""

    method: str
    seed: int

    @property
    def name(self) -> str:
        """`<method>/seed_<s>`: the cell's folder relative to the study workdir."""
        return f"{self.method}/seed_{self.seed}"

    def path(self, workdir: str) -> str:
        return os.path.join(workdir, self.method, f"seed_{self.seed}")


def make_grid(methods: Sequence[str], seeds: Sequence[int]) -> list[Cell]:
    """The study's cells in method-major order.

    Raises:
      ValueError: no methods or seeds, or one of them is repeated.
    """
    for what, values in (("methods", methods), ("seeds", seeds)):
        if not values:
            raise ValueError(f"--{what} is empty; give at least one")
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            raise ValueError(f"--{what} repeats {', '.join(repeated)}; give each once")
    return [Cell(m, int(s)) for m in methods for s in seeds]


def shard(cells: Sequence[Cell], num_shards: int, shard_index: int) -> list[Cell]:
    """The cells of shard `shard_index`: cell i belongs to shard i % num_shards."""
    _check_shard(num_shards, shard_index)
    return list(cells[shard_index::num_shards])


def _check_shard(num_shards: int, shard_index: int) -> None:
    if num_shards < 1:
        raise ValueError(f"--num_shards={num_shards} must be >= 1")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard_index={shard_index} is outside [0, {num_shards - 1}] "
                         f"(--num_shards={num_shards})")


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "")
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def resolve_shard(num_shards: int | None, shard_index: int | None,
                  environ: Mapping[str, str]) -> tuple[int, int]:
    """(num_shards, shard_index) from flags, else from a cluster scheduler's variables.

    Explicit flags win. Otherwise: a SLURM array job gives the count (`SLURM_ARRAY_TASK_COUNT`)
    and the index (`(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`, so
    `--array=1-6` and `--array=0-10:2` work too); a Kubernetes Indexed Job gives only the
    index (`JOB_COMPLETION_INDEX`), the count must come from --num_shards. Neither: one shard.

    Args:
      num_shards: --num_shards, or None when not given.
      shard_index: --shard_index, or None when not given.
      environ: the process environment (os.environ).

    Raises:
      ValueError: naming the bad value (flag or variable) and the allowed range.
    """
    slurm_count, slurm_id = _env_int(environ, SLURM_COUNT), _env_int(environ, SLURM_ID)
    k8s_index = _env_int(environ, K8S_INDEX)
    if num_shards is None:
        if slurm_count is not None:
            num_shards = slurm_count
            if num_shards < 1:
                raise ValueError(f"{SLURM_COUNT}={num_shards} must be >= 1")
        elif k8s_index is not None and shard_index is None:
            raise ValueError(
                f"{K8S_INDEX}={k8s_index} is set (a Kubernetes Indexed Job) but the number of "
                "shards is not: pass --num_shards=<the Job's completions>")
        else:
            num_shards = 1
    elif num_shards < 1:
        raise ValueError(f"--num_shards={num_shards} must be >= 1")
    if shard_index is None:
        if slurm_id is not None:
            low = _env_int(environ, SLURM_MIN) or 0
            step = _env_int(environ, SLURM_STEP) or 1
            if step < 1 or (slurm_id - low) % step:
                raise ValueError(f"{SLURM_ID}={slurm_id} is not {SLURM_MIN}={low} plus a multiple "
                                 f"of {SLURM_STEP}={step}")
            shard_index = (slurm_id - low) // step
            if not 0 <= shard_index < num_shards:
                raise ValueError(
                    f"{SLURM_ID}={slurm_id} gives shard {shard_index} (counted from "
                    f"{SLURM_MIN}={low} in steps of {step}), outside [0, {num_shards - 1}] for "
                    f"{num_shards} shards: submit a contiguous array, e.g. "
                    f"--array=0-{num_shards - 1}")
        elif k8s_index is not None:
            shard_index = k8s_index
            if not 0 <= shard_index < num_shards:
                raise ValueError(f"{K8S_INDEX}={k8s_index} is outside [0, {num_shards - 1}] for "
                                 f"--num_shards={num_shards}: set --num_shards to the Job's "
                                 "completions")
        elif num_shards == 1:
            shard_index = 0
        else:
            raise ValueError(f"--num_shards={num_shards} needs --shard_index in "
                             f"[0, {num_shards - 1}] (or {SLURM_ID} / {K8S_INDEX} set by the "
                             "scheduler)")
    _check_shard(num_shards, shard_index)
    return num_shards, shard_index


def read_results(cell_dir: str) -> list[dict]:
    """The rows of `<cell_dir>/results.jsonl` ([] if absent; an unfinished last line is skipped)."""
    rows = []
    try:
        with open(os.path.join(cell_dir, "results.jsonl")) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("iteration"), int)]


def read_config(cell_dir: str) -> dict | None:
    """The cell's config.json, or None if it has none (yet)."""
    try:
        with open(os.path.join(cell_dir, "config.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


FAILED_NAME = "failed.json"  # written by the runner while a cell's last launch failed


def is_finished(cell_dir: str, iterations: int | None = None) -> bool:
    """Whether the cell's results reach its last iteration and its last launch did not fail
    (a cell that wrote its last results line and then failed is launched again: train finds
    nothing left to do, exits 0, and the runner removes failed.json).

    Args:
      cell_dir: the cell's workdir.
      iterations: the iteration to reach; None: the `iterations` of the cell's config.json
        (a cell without config.json is not finished).
    """
    if iterations is None:
        config = read_config(cell_dir)
        if config is None:
            return False
        iterations = int(config["iterations"])
    if os.path.exists(os.path.join(cell_dir, FAILED_NAME)):
        return False
    return any(r["iteration"] >= iterations for r in read_results(cell_dir))


def config_differences(stored: Mapping, expected: Mapping) -> list[str]:
    """The keys where a cell's stored config.json differs from the study's config of that cell.

    `config.RESUMABLE_KEYS` and `RUNTIME_KEYS` are not compared (see there).
    """
    return [f"{key}: cell has {a!r}, this study has {b!r}"
            for key, a, b in config_lib.config_differences(
                stored, expected, ignore=config_lib.RESUMABLE_KEYS + RUNTIME_KEYS)]
