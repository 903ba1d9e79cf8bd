r"""Runs a study: one ordinary train run per (method, seed) cell, then writes its report.

  python -m tf_bgadl.study --flagfile=study_mnist5k.flags --workdir=runs/study_mnist5k \
      [--methods=vaeacgan,bald,random] [--seeds=1,2,3] [--jobs=N] [any train flag]
  python -m tf_bgadl.study ... --num_shards=N --shard_index=i     # this machine's share

Each cell is `python -m tf_bgadl.train <the train flags given here> --workdir=<workdir>/<method>/
seed_<s> --method=<method> --seed=<s>`, so a cell can be inspected or continued with train
itself. Rerunning the same command skips finished cells and resumes the others. See
docs/studies.md for sharding over SLURM array jobs and Kubernetes Indexed Jobs.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import signal
import subprocess
import sys

from absl import flags

from tf_bgadl import cli
from tf_bgadl import config as config_lib
from tf_bgadl import methods as methods_lib
from tf_bgadl import data
from tf_bgadl import train as train_entry  # defines the train flags (TensorFlow is not imported)
from tf_bgadl.studies import grid, runner, summary

_METHODS = flags.DEFINE_list("methods", ",".join(config_lib.METHODS),
                             f"Methods of the study, from {', '.join(config_lib.METHODS)}.")
_SEEDS = flags.DEFINE_list("seeds", "1,2,3", "Seeds of the study (integers >= 0).")
_JOBS = flags.DEFINE_integer("jobs", 0, "Cells run at once; 0: one per usable core, as many as "
                             "fit in memory (2 GiB each), at most the cells left to run.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None, "Split the cells over this many machines "
                                   "(default: SLURM_ARRAY_TASK_COUNT, else 1).")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", None, "This machine's shard in [0, "
                                    "num_shards) (default: from SLURM_ARRAY_TASK_ID or "
                                    "Kubernetes' JOB_COMPLETION_INDEX).")

# Train flags that the study sets per cell instead of passing them through.
_PER_CELL_FLAGS = ("workdir", "method", "seed")


def parse_methods(values: list[str]) -> list[str]:
    unknown = [m for m in values if m not in config_lib.METHODS]
    if unknown:
        raise ValueError(f"--methods={','.join(values)}: unknown method(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(config_lib.METHODS)}")
    return list(values)


def parse_seeds(values: list[str]) -> list[int]:
    seeds = []
    for value in values:
        try:
            seeds.append(int(value))
        except ValueError:
            raise ValueError(f"--seeds={','.join(values)}: {value!r} is not an integer; give "
                             "integers >= 0, e.g. --seeds=1,2,3") from None
    negative = [s for s in seeds if s < 0]
    if negative:
        raise ValueError(f"--seeds={','.join(values)}: seeds must be >= 0")
    return seeds


def cell_config(base: config_lib.ExperimentConfig,
                cell: grid.Cell) -> config_lib.ExperimentConfig:
    """The train config of one cell: the study's config with the cell's method and seed, and
    the flags that mean nothing for that method (methods.inapplicable_flags) at their defaults."""
    skipped = methods_lib.inapplicable_flags(methods_lib.get(cell.method))
    defaults = config_lib.ExperimentConfig()
    acquisition = dataclasses.replace(base.acquisition, method=cell.method)
    if "acquisition" in skipped:
        acquisition = dataclasses.replace(acquisition,
                                          acquisition=defaults.acquisition.acquisition)
    if "batchbald_samples" in skipped:
        acquisition = dataclasses.replace(
            acquisition, batchbald_samples=defaults.acquisition.batchbald_samples)
    if "acquisition_temperature" in skipped:
        acquisition = dataclasses.replace(acquisition,
                                          temperature=defaults.acquisition.temperature)
    generator = base.generator
    if "generation" in skipped:
        generator = dataclasses.replace(generator, generation=defaults.generator.generation)
    if "gan_update_every" in skipped:
        generator = dataclasses.replace(generator, update_every=defaults.generator.update_every)
    if "gan_pool_steps" in skipped:
        generator = dataclasses.replace(generator, pool_steps=defaults.generator.pool_steps,
                                        pool_steps_fresh=defaults.generator.pool_steps_fresh)
    return dataclasses.replace(base, seed=cell.seed, acquisition=acquisition,
                               generator=generator)


def passed_train_flags(method: str | None = None) -> list[str]:
    """Every train flag given to the study (on the command line or in a flagfile), serialized;
    with `method`, without the flags that mean nothing for it."""
    skipped = methods_lib.inapplicable_flags(methods_lib.get(method)) if method else ()
    return [f.serialize() for f in flags.FLAGS.get_flags_for_module(train_entry)
            if f.present and f.name not in _PER_CELL_FLAGS and f.name not in skipped]


def check_existing_cells(cells: list[grid.Cell], workdir: str,
                         configs: dict[grid.Cell, config_lib.ExperimentConfig]) -> None:
    """Refuses cells whose config.json is of another config (train would refuse them too).

    Args:
      cells: the cells to check.
      workdir: the study workdir.
      configs: each cell's resolved config (what `config.validate` returns, as train records it).

    Raises:
      ConfigError: listing each such cell's differences.
    """
    problems = []
    for cell in cells:
        stored = grid.read_config(cell.path(workdir))
        if stored is not None:
            problems += [f"{cell.name}: {d}" for d in
                         grid.config_differences(stored, configs[cell].to_dict())]
    if problems:
        raise config_lib.ConfigError(
            f"--workdir={workdir} holds cells of another config; use a new --workdir or the same "
            "flags. Differences:\n  " + "\n  ".join(problems))


def _data_prepared(config: config_lib.DataConfig) -> bool:
    root = config.data_dir or data.default_data_dir()
    found = glob.glob(os.path.join(root, config.dataset, "*", "dataset_info.json"))
    return any(not os.path.basename(os.path.dirname(p)).startswith("incomplete") for p in found)


def prepare_data_once(config: config_lib.DataConfig, workdir: str) -> None:
    """Prepares the data set before any cell starts, so that no two cells prepare it at once.

    tfds fails when two processes prepare one data set into one data dir together. Study
    processes (shards included) take `<workdir>/.prepare.lock` in turn; the first prepares.

    Raises:
      ConfigError: the data set cannot be prepared (with prepare_data's message).
    """
    if _data_prepared(config):
        return
    with runner.file_lock(os.path.join(workdir, ".prepare.lock")):
        if _data_prepared(config):
            return
        print(f"preparing {config.dataset} before the cells start", flush=True)
        command = [sys.executable, "-m", "tf_bgadl.prepare_data", f"--dataset={config.dataset}",
                   f"--data_dir={config.data_dir}", f"--manual_dir={config.manual_dir}"]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("error: ")]
            raise config_lib.ConfigError(
                f"cannot prepare --dataset={config.dataset}: "
                + (errors[-1][len("error: "):] if errors else "\n".join(lines[-20:])))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A validated study: its grid, this process's shard of it, and the cells' commands."""

    workdir: str
    cells: list[grid.Cell]
    num_shards: int
    shard_index: int
    base: config_lib.ExperimentConfig
    tasks: list[runner.CellTask]


def plan_from_flags(workdir: str) -> _Plan:
    """Checks every flag and every cell's config; nothing is launched or written.

    Raises:
      ValueError: (ConfigError included) naming the bad value and what is allowed.
    """
    cells = grid.make_grid(parse_methods(_METHODS.value), parse_seeds(_SEEDS.value))
    num_shards, shard_index = grid.resolve_shard(_NUM_SHARDS.value, _SHARD_INDEX.value,
                                                 os.environ)
    if _JOBS.value < 0:
        raise ValueError(f"--jobs={_JOBS.value} must be >= 0 (0: what fits the machine)")
    if flags.FLAGS["export_base"].value:
        raise ValueError(f"--export_base={flags.FLAGS['export_base'].value!r} would export every "
                         "cell to the same place; export a cell afterwards with python -m "
                         "tf_bgadl.export --workdir=<study>/<method>/seed_<s> --export_base=...")
    base = train_entry.config_from_flags()
    config_lib.check_replayed_runs(
        base, replays="a study replays labeled data sets",
        distribute="each cell is its own run (use --strategy=mirrored within a machine, and "
        "shards or an array job across machines)", compared="a study compares methods")
    methods = sorted({cell.method for cell in cells})
    for name in sorted({n for m in methods for n in methods_lib.inapplicable_flags(
            methods_lib.get(m))}):
        if flags.FLAGS[name].present and all(
                name in methods_lib.inapplicable_flags(methods_lib.get(m)) for m in methods):
            raise ValueError(f"--{name} applies to none of the study's methods "
                             f"({', '.join(methods)})")
    configs = {cell: config_lib.validate(cell_config(base, cell)) for cell in cells}
    mine = grid.shard(cells, num_shards, shard_index)
    check_existing_cells(mine, workdir, configs)
    tasks = [runner.CellTask(cell.name, cell.path(workdir), (
        sys.executable, "-m", "tf_bgadl.train", *passed_train_flags(cell.method),
        f"--workdir={cell.path(workdir)}",
        f"--method={cell.method}", f"--seed={cell.seed}")) for cell in mine]
    return _Plan(workdir, cells, num_shards, shard_index, base, tasks)


def cells_left(plan: _Plan) -> int:
    """This shard's cells not finished yet."""
    return sum(not grid.is_finished(t.path, plan.base.iterations) for t in plan.tasks)


def run_plan(plan: _Plan, left: int) -> runner.Summary:
    """Runs this shard's cells (`--jobs` at a time, or what fits the machine); `left` of them
    are unfinished (`cells_left`)."""
    cores = runner.usable_cores()
    jobs = _JOBS.value or runner.default_jobs(max(1, left), cores, runner.available_memory())
    return runner.run_cells(plan.tasks, iterations=plan.base.iterations, jobs=jobs, cores=cores)


def finish(plan: _Plan, result: runner.Summary) -> None:
    """Writes the report; exits non-zero naming each failed cell and its log."""
    print(f"{len(result.ran)} cell(s) finished now, {len(result.skipped)} were finished before, "
          f"{len(result.failed)} failed ({runner.format_seconds(result.seconds)})", flush=True)
    errors = []
    try:
        summary.write_report(plan.workdir)
        print(f"report: {os.path.join(plan.workdir, 'report.md')}", flush=True)
    except (ValueError, OSError) as e:
        errors.append(f"the report could not be written: {e}")
    if result.failed:
        errors.append(f"{len(result.failed)} cell(s) failed (rerun the same command to retry "
                      "them):\n" + "\n".join(f"  {f.name}: exit code {f.returncode}, log {f.log}"
                                             for f in result.failed))
    if errors:
        sys.exit("error: " + "\nerror: ".join(errors))


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}; every option is a --flag")
    try:
        plan = plan_from_flags(os.path.abspath(flags.FLAGS.workdir))
        left = cells_left(plan)
        if left:
            prepare_data_once(plan.base.data, plan.workdir)  # not for a finished study
    except ValueError as e:  # ConfigError included
        sys.exit(f"error: {e}")
    given = [f"--{n}={flags.FLAGS[n].value}" for n in ("method", "seed") if flags.FLAGS[n].present]
    if given:  # a train flagfile may set them; the study sets them per cell
        print(f"note: {' '.join(given)} ignored: the study sets --method and --seed per cell "
              "from --methods and --seeds", flush=True)
    shard = f", shard {plan.shard_index} of {plan.num_shards}" if plan.num_shards > 1 else ""
    print(f"study {plan.workdir}: {len(plan.cells)} cells ({len(_METHODS.value)} methods x "
          f"{len(_SEEDS.value)} seeds){shard}; this process runs {len(plan.tasks)}", flush=True)
    if not plan.tasks:
        return
    try:
        result = run_plan(plan, left)
    except (KeyboardInterrupt, runner.Interrupted) as e:
        print(f"interrupted ({str(e) or 'Ctrl-C'}): rerun the same command to resume; finished "
              "iterations are kept", file=sys.stderr, flush=True)
        sys.exit(128 + getattr(e, "signum", signal.SIGINT))
    finish(plan, result)


if __name__ == "__main__":
    cli.run(main)
