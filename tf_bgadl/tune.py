r"""Searches lambda, the classifier and widths with Keras Tuner; a trial is a short train run.

  python -m tf_bgadl.tune --flagfile=tune_quickstart.flags [--tuner=bayesian|random|hyperband]
      [--max_trials=N] [--objective=aulc|final] [--search=gen_loss_weight,model,...]
      [--workdir=runs/tune_<name>] [any train flag]

Each trial is an ordinary active-learning run (the loop, methods and data of `tf_bgadl.train`)
in `<workdir>/trials/trial_<id>/run/`, with the searched train flags drawn by Keras Tuner and
without the test split; its objective is measured on the validation split
(`--validation_per_class`, required). Afterwards `<workdir>/best.flags` holds the best trial's
full train flags (`python -m tf_bgadl.train --flagfile=<workdir>/best.flags`), its test accuracy
is measured once, and `tune_report.md` / `tune_report.png` show every trial. Rerunning the same
command resumes a killed search. Distributed: the same command on several machines with
KERASTUNER_TUNER_ID (chief, tuner0, ...), KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and a
shared --workdir (docs/tuning.md).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from tf_bgadl import cli, data
from tf_bgadl import config as config_lib
from tf_bgadl import train as train_entry  # defines the train flags (TensorFlow is not imported)
from tf_bgadl.studies.runner import format_seconds
from tf_bgadl.tuning import best_flags, objectives, report, search_space
from tf_bgadl.tuning import settings as settings_lib

_TUNER = flags.DEFINE_enum("tuner", "bayesian", settings_lib.TUNERS, "Keras Tuner's oracle: "
                           "bayesian (Gaussian process), random, or hyperband (its budget is the "
                           "number of acquisition iterations, at most --iterations).")
_MAX_TRIALS = flags.DEFINE_integer("max_trials", 10, "Trials of the search (hyperband: at most; "
                                   "a rerun with a larger value extends a finished search).")
_OBJECTIVE = flags.DEFINE_enum(
    "objective", "aulc", tuple(objectives.OBJECTIVES), "Maximised, on the validation split: "
    + "; ".join(f"{k} ({objectives.OBJECTIVES[k]}): the {v}"
                for k, v in objectives.DESCRIPTIONS.items()) + ".")
_SEARCH = flags.DEFINE_list(
    "search", None, f"Train flags to search, from {', '.join(search_space.SPECS)} (default: "
    "those that apply to --method; lambda and the generator's width need a generative method). "
    "The others keep their train flag values.")
_SPACE_FLAGS = {
    spec.flag: flags.DEFINE_string(
        spec.flag, spec.default, f"--{spec.name} ({spec.help}): "
        + ("comma-separated choices" if spec.kind == search_space.CHOICE else "MIN,MAX") + ".")
    for spec in search_space.SPECS.values()}
_SEARCH_SEED = flags.DEFINE_integer("search_seed", 1, "Seed of the tuner's proposals (>= 1); "
                                    "every trial's run uses --seed.")
_INITIAL_POINTS = flags.DEFINE_integer(
    "bayesian_initial_points", 0, "bayesian: random trials before the Gaussian process "
    "proposes (0: 3 per searched hyperparameter, at most half of --max_trials).")
_HYPERBAND_FACTOR = flags.DEFINE_integer("hyperband_factor", 3, "hyperband: reduction factor.")
_HYPERBAND_ITERATIONS = flags.DEFINE_integer("hyperband_iterations", 1,
                                             "hyperband: sweeps over its brackets.")

_NOT_IN_BEST_FLAGS = ("workdir",)  # best.flags names its own --workdir, last


def settings_from_flags() -> settings_lib.SearchSettings:
    """The search settings (raises SearchSpaceError naming a bad search-space flag)."""
    given = {name: holder.value for name, holder in _SPACE_FLAGS.items()
             if flags.FLAGS[name].present}
    space = search_space.parse(_SEARCH.value, given, flags.FLAGS["method"].value)
    return settings_lib.SearchSettings(
        space=space, tuner=_TUNER.value, max_trials=_MAX_TRIALS.value,
        objective=_OBJECTIVE.value, seed=_SEARCH_SEED.value,
        bayesian_initial_points=_INITIAL_POINTS.value, hyperband_factor=_HYPERBAND_FACTOR.value,
        hyperband_iterations=_HYPERBAND_ITERATIONS.value)


def best_flags_text(settings: settings_lib.SearchSettings, best, workdir: str, path: str,
                    completed: int) -> str:
    """best.flags: the train flags of this command with the best trial's searched values."""
    skip = set(_NOT_IN_BEST_FLAGS) | set(settings.space.names)
    train_flags = [f for f in flags.FLAGS.get_flags_for_module(train_entry) if f.name not in skip]
    name = settings.objective_name
    return best_flags.render(
        given=[f.serialize() for f in train_flags if f.present],
        searched={n: best.values[n] for n in settings.space.names},
        defaults=[f.serialize() for f in train_flags if not f.present],
        workdir=f"{workdir.rstrip('/')}/best", header=[
            f"The best trial of the search in {workdir}: {best.name}, {name} = "
            f"{best.metrics[name]:.4f}, the best of {completed} completed trial(s) of a "
            f"{settings.tuner} search.",
            f"{name}: the {objectives.DESCRIPTIONS[settings.objective]}; validation split only.",
            "Written by python -m tf_bgadl.tune. Rerun it with train:",
            f"  python -m tf_bgadl.train --flagfile={path}"])


def _finish(settings, base, workdir: str, outcome) -> None:
    """Writes best.flags, measures the best trial's test accuracy once, writes the report."""
    from tf_bgadl import serving_export  # pylint: disable=import-outside-toplevel
    from tf_bgadl.tuning import search  # pylint: disable=import-outside-toplevel

    records, best = outcome.records, outcome.best
    done = [t for t in records if t.completed]
    failed = [t for t in records if t.status in ("FAILED", "INVALID")]
    print(f"search finished: {len(done)} of {len(records)} trial(s) completed, {len(failed)} "
          f"failed ({format_seconds(outcome.seconds)} in this process)", flush=True)
    path, test = None, None
    if best is not None:
        path = os.path.join(workdir, "best.flags")
        best_flags.write(path, best_flags_text(settings, best, workdir, path, len(done)))
        name = settings.objective_name
        print(f"best trial {best.name}: {name} {best.metrics[name]:.4f} with "
              + ", ".join(f"--{n}={best_flags.flag_line(n, best.values[n]).split('=', 1)[1]}"
                          for n in settings.space.names), flush=True)
        print(f"best flags: {path}  (python -m tf_bgadl.train --flagfile={path})", flush=True)
        try:
            test = search.best_test_accuracy(workdir, best)
            print(f"TEST accuracy of the best trial, measured once after the search (never used "
                  f"to select): {test['test_accuracy']:.4f} on {test['num_test']} test images",
                  flush=True)
        except (data.DataError, serving_export.ExportError, OSError) as e:
            print(f"warning: the best trial's test accuracy could not be measured: {e}",
                  flush=True)
    files = report.write_report(workdir, records=records, best=best,
                                settings={**settings.to_dict(), "max_trials": settings.max_trials},
                                base=base.to_dict(), objective=settings.objective, test=test,
                                best_flags=path)
    print(f"report: {files['report']} and {files['plot']}", flush=True)
    for t in failed:
        last = (t.message or "").strip().splitlines()[-1:] or ["no message"]
        print(f"warning: {t.name} failed: {last[0]} (traceback: {t.path}/error.txt)", flush=True)
    if outcome.stopped:
        sys.exit(f"error: {outcome.stopped}; see {files['report']}")
    if not done:
        sys.exit(f"error: no trial completed ({len(failed)} failed); see {files['report']}")
    if best is None:  # Hyperband stopped by --max_trials before any trial had the full budget
        sys.exit(f"error: {len(done)} trial(s) completed, none with the full budget of "
                 f"--iterations={base.iterations} acquisition iterations, so there is no best "
                 f"trial; rerun with a larger --max_trials to go on; see {files['report']}")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}; every option is a --flag")
    workdir = flags.FLAGS.workdir
    try:
        if flags.FLAGS["export_base"].value:
            raise ValueError(f"--export_base={flags.FLAGS['export_base'].value!r}: trials are "
                             "not exported; export the best run with python -m tf_bgadl.train "
                             "--flagfile=<workdir>/best.flags --export_base=...")
        settings = settings_from_flags()
        base = train_entry.config_from_flags()
        config_lib.check_replayed_runs(
            base, replays="a tuning trial replays a labeled data set",
            distribute="Keras Tuner's workers run different trials (use its distributed mode, "
            "README \"Tuning\")", compared="trials are compared")
        settings_lib.check(settings, base)
    except ValueError as e:  # ConfigError and SearchSpaceError included
        sys.exit(f"error: {e}")
    for name in settings.space.names:
        if flags.FLAGS[name].present:
            print(f"note: --{name}={flags.FLAGS[name].value} is searched (--search); each trial "
                  "draws its own value", flush=True)
    # TensorFlow and Keras Tuner are imported only after the search is known to be valid.
    tf = cli.import_tensorflow()
    from tf_bgadl import experiment  # pylint: disable=import-outside-toplevel
    from tf_bgadl.tuning import search  # pylint: disable=import-outside-toplevel

    experiment.configure_cpu_devices(flags.FLAGS["num_cpu_devices"].value)
    if base.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        outcome = search.run_search(settings, base, workdir,
                                    allow_replica_change=flags.FLAGS["allow_replica_change"].value)
    except (ValueError, data.DataError, search.SearchError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume the search (finished trials are "
              "kept; the running trial continues after its last finished iteration)",
              file=sys.stderr, flush=True)
        sys.exit(128 + 2)
    if outcome.role == search.WORKER:
        print(f"worker done: ran {len(outcome.ran)} trial(s) "
              f"({', '.join('trial_' + t for t in outcome.ran) or 'none'}); the chief writes "
              "the report", flush=True)
        return
    _finish(settings, base, workdir, outcome)


if __name__ == "__main__":
    cli.run(main)
