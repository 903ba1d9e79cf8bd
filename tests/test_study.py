"""Studies: the grid and its shards, the runner (with fake cell commands), the entry point."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, run_module
from tf_bgadl.studies import grid, runner

# A fake cell: appends its pid to <cell>/launches, then writes results lines for the iterations
# that results.jsonl lacks (resuming as train does), `delay` seconds each; mode "fail" exits 3.
FAKE_CELL = r"""
import json, os, sys, time
path, iterations, mode, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
with open(os.path.join(path, "launches"), "a") as f:
    f.write(f"{os.getpid()}\n")
if mode == "fail":
    print("boom: the fake cell fails")
    sys.exit(3)
results = os.path.join(path, "results.jsonl")
done = sum(1 for _ in open(results)) if os.path.exists(results) else 0
for it in range(done, iterations + 1):
    time.sleep(delay)
    with open(results, "a") as f:
        f.write(json.dumps({"iteration": it, "num_labeled": 10 * (it + 1),
                            "test_accuracy": 0.5 + it / 100, "seconds": delay}) + "\n")
if mode == "fail_after":
    print("boom: the fake cell fails after its last results line")
    sys.exit(4)
"""


def _task(tmp_path, name, iterations, mode="ok", delay=0.05):
    path = str(tmp_path / name)
    return runner.CellTask(name, path, (sys.executable, "-c", FAKE_CELL, path, str(iterations),
                                        mode, str(delay)))


def _launches(task):
    path = os.path.join(task.path, "launches")
    return len(open(path).read().split()) if os.path.exists(path) else 0


def _write_rows(path, iterations):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "results.jsonl"), "a") as f:
        for it in iterations:
            f.write(json.dumps({"iteration": it, "num_labeled": 10 * (it + 1),
                                "test_accuracy": 0.5, "seconds": 1.0}) + "\n")


def _run(tasks, iterations, jobs=2):
    out = io.StringIO()
    summary = runner.run_cells(tasks, iterations=iterations, jobs=jobs, cores=2,
                               poll_seconds=0.1, out=out)
    return summary, out.getvalue()


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------------------------
# grid


def test_grid_is_method_major_with_one_folder_per_cell():
    cells = grid.make_grid(["bald", "random"], [1, 2, 3])
    assert [c.name for c in cells] == ["bald/seed_1", "bald/seed_2", "bald/seed_3",
                                       "random/seed_1", "random/seed_2", "random/seed_3"]
    assert cells[4].path("/w") == "/w/random/seed_2"


@pytest.mark.parametrize("methods, seeds, message", [
    ([], [1], "--methods is empty"),
    (["bald"], [], "--seeds is empty"),
    (["bald", "random", "bald"], [1], "--methods repeats bald"),
    (["bald"], [1, 2, 1], "--seeds repeats 1"),
])
def test_grid_refuses_empty_or_repeated_values(methods, seeds, message):
    with pytest.raises(ValueError, match=message):
        grid.make_grid(methods, seeds)


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5, 7, 20])
def test_shards_cover_the_grid_exactly_once(num_shards):
    cells = grid.make_grid(["vaeacgan", "acgan", "pmda", "bald", "bda_partial", "random"],
                           [1, 2, 3])
    shards = [grid.shard(cells, num_shards, i) for i in range(num_shards)]
    assert sorted((c for s in shards for c in s), key=cells.index) == cells
    assert sum(len(s) for s in shards) == len(cells)
    for i, cells_of_shard in enumerate(shards):  # cell i belongs to shard i % num_shards
        assert all(cells.index(c) % num_shards == i for c in cells_of_shard)


def test_two_shards_spread_every_method_over_both():
    cells = grid.make_grid(["vaeacgan", "bald", "random"], [1, 2, 3])
    for index in (0, 1):
        assert {c.method for c in grid.shard(cells, 2, index)} == {"vaeacgan", "bald", "random"}


@pytest.mark.parametrize("flags, environ, expected", [
    ((None, None), {}, (1, 0)),
    ((3, 2), {}, (3, 2)),
    ((None, None), {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "2",
                    "SLURM_ARRAY_TASK_MIN": "0"}, (4, 2)),
    # --array=1-3: ids count from SLURM_ARRAY_TASK_MIN
    ((None, None), {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_ID": "3",
                    "SLURM_ARRAY_TASK_MIN": "1"}, (3, 2)),
    # --array=0-10:5 (ids 0, 5, 10)
    ((None, None), {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_ID": "10",
                    "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "5"}, (3, 2)),
    ((3, None), {"JOB_COMPLETION_INDEX": "1"}, (3, 1)),
    # explicit flags win over the scheduler's variables
    ((2, 0), {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "3"}, (2, 0)),
    ((2, 1), {"JOB_COMPLETION_INDEX": "0"}, (2, 1)),
    ((5, None), {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "3"}, (5, 3)),
])
def test_resolve_shard_from_flags_or_scheduler(flags, environ, expected):
    assert grid.resolve_shard(*flags, environ) == expected


@pytest.mark.parametrize("flags, environ, message", [
    ((0, None), {}, r"--num_shards=0 must be >= 1"),
    ((2, 2), {}, r"--shard_index=2 is outside \[0, 1\]"),
    ((2, -1), {}, r"--shard_index=-1 is outside \[0, 1\]"),
    ((3, None), {}, r"--num_shards=3 needs --shard_index in \[0, 2\]"),
    ((None, None), {"JOB_COMPLETION_INDEX": "2"},
     r"JOB_COMPLETION_INDEX=2 is set .* pass --num_shards"),
    ((2, None), {"JOB_COMPLETION_INDEX": "2"}, r"JOB_COMPLETION_INDEX=2 is outside \[0, 1\]"),
    ((None, None), {"SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_ID": "7",
                    "SLURM_ARRAY_TASK_MIN": "5"}, r"SLURM_ARRAY_TASK_ID=7 gives shard 2 .*"
                                                  r"--array=0-1"),
    ((None, None), {"SLURM_ARRAY_TASK_COUNT": "two", "SLURM_ARRAY_TASK_ID": "1"},
     r"SLURM_ARRAY_TASK_COUNT='two' is not an integer"),
])
def test_resolve_shard_names_the_bad_value_and_the_range(flags, environ, message):
    with pytest.raises(ValueError, match=message):
        grid.resolve_shard(*flags, environ)


def test_a_cell_is_finished_when_its_results_reach_its_last_iteration(tmp_path):
    path = str(tmp_path)
    assert not grid.is_finished(path)  # no config.json, no results
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"iterations": 2}, f)
    _write_rows(path, [0, 1])
    assert not grid.is_finished(path)
    assert grid.is_finished(path, iterations=1)  # the study asks for fewer
    _write_rows(path, [2])
    assert grid.is_finished(path)
    assert not grid.is_finished(path, iterations=4)  # the study extends the run


def test_config_differences_ignore_what_a_resumed_run_may_change():
    stored = {"iterations": 5, "strategy": "default", "seed": 1, "train": {"epochs": 30},
              "num_replicas": 1}
    same = {"iterations": 9, "strategy": "mirrored", "seed": 1, "train": {"epochs": 30},
            "num_replicas": 0}
    assert grid.config_differences(stored, same) == []
    other = {**same, "train": {"epochs": 2}}
    assert grid.config_differences(stored, other) == [
        "train.epochs: cell has 30, this study has 2"]


# ---------------------------------------------------------------------------------------------
# runner, with fake cell commands


def test_threads_are_split_between_jobs_and_user_values_win():
    env = runner.child_environment(2, 2, {"PATH": "/bin"})
    assert [env[k] for k in runner.THREAD_VARIABLES] == ["1", "1", "1"]
    assert runner.child_environment(2, 8, {})["TF_NUM_INTRAOP_THREADS"] == "4"
    assert runner.child_environment(4, 2, {})["TF_NUM_INTRAOP_THREADS"] == "1"
    assert runner.child_environment(2, 8, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"


def test_default_jobs_fit_cells_cores_and_memory():
    gib = 1024**3
    assert runner.default_jobs(18, cores=2, memory=20 * gib) == 2
    assert runner.default_jobs(1, cores=16, memory=64 * gib) == 1
    assert runner.default_jobs(18, cores=16, memory=9 * gib) == 4  # 2 GiB per cell
    assert runner.default_jobs(18, cores=4, memory=1 * gib) == 1
    assert runner.default_jobs(18, cores=4, memory=None) == 4


def _fake_cgroup(tmp_path, proc_lines, files):
    proc = tmp_path / "proc_cgroup"
    proc.write_text("\n".join(proc_lines) + "\n")
    for name, text in files.items():
        (tmp_path / "sys" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sys" / name).write_text(text + "\n")
    return str(proc), str(tmp_path / "sys")


def test_cgroup_limits_v2_as_kubernetes_sets_them(tmp_path):
    proc, root = _fake_cgroup(tmp_path, ["0::/kubepods/pod1/c1"], {
        "kubepods/pod1/c1/cpu.max": "350000 100000", "kubepods/pod1/c1/memory.max": str(7 << 30),
        "kubepods/pod1/cpu.max": "max 100000", "kubepods/memory.max": "max"})
    assert runner.cgroup_cpu_limit(proc, root) == 3  # 3.5 CPUs: 3 whole ones
    assert runner.cgroup_memory_limit(proc, root) == 7 << 30


def test_cgroup_limits_v1_and_none(tmp_path):
    proc, root = _fake_cgroup(tmp_path, ["4:memory:/job_7", "1:cpu,cpuacct:/job_7"], {
        "cpu,cpuacct/job_7/cpu.cfs_quota_us": "200000",
        "cpu,cpuacct/job_7/cpu.cfs_period_us": "100000",
        "memory/job_7/memory.limit_in_bytes": "9223372036854771712",  # no limit
        "memory/memory.limit_in_bytes": "9223372036854771712"})
    assert runner.cgroup_cpu_limit(proc, root) == 2
    assert runner.cgroup_memory_limit(proc, root) is None
    assert runner.cgroup_cpu_limit(str(tmp_path / "missing"), root) is None


def test_runner_skips_finished_cells_resumes_the_others_and_prints_progress(tmp_path):
    done = _task(tmp_path, "bald/seed_1", 3)
    partial = _task(tmp_path, "bald/seed_2", 3)
    new = _task(tmp_path, "random/seed_1", 3)
    _write_rows(done.path, [0, 1, 2, 3])
    _write_rows(partial.path, [0, 1])
    summary, out = _run([done, partial, new], iterations=3)
    assert summary.ok and summary.skipped == ("bald/seed_1",)
    assert sorted(summary.ran) == ["bald/seed_2", "random/seed_1"]
    assert [_launches(t) for t in (done, partial, new)] == [0, 1, 1]
    for task in (done, partial, new):
        assert [r["iteration"] for r in grid.read_results(task.path)] == [0, 1, 2, 3]
    lines = out.splitlines()
    assert lines[0].startswith("study: 3 cells, 1 already finished; 2 at a time with 1 "
                               "TensorFlow thread(s) each; finished iterations 6/12")
    progress = [line for line in lines if ": iteration " in line]
    # one line per newly finished iteration: 2 of bald/seed_2, 4 of random/seed_1
    assert len(progress) == 6
    assert sorted(line.split(":")[0] for line in progress) == ["bald/seed_2"] * 2 + [
        "random/seed_1"] * 4
    assert "random/seed_1: iteration 3/3, 40 oracle labels, test accuracy 0.5300" in out
    assert progress[-1].endswith("finished iterations 12/12, ETA 0 s")
    assert "bald/seed_2: started, resuming after 2 finished iteration(s)" in out
    assert "bald/seed_1: started" not in out
    # A second run finds everything finished and launches nothing.
    again, _ = _run([done, partial, new], iterations=3)
    assert again.ran == () and len(again.skipped) == 3
    assert [_launches(t) for t in (done, partial, new)] == [0, 1, 1]


def test_a_failing_cell_is_reported_while_the_others_finish(tmp_path):
    bad = _task(tmp_path, "acgan/seed_1", 2, mode="fail")
    good = [_task(tmp_path, f"bald/seed_{s}", 2) for s in (1, 2, 3)]
    summary, out = _run([bad, *good], iterations=2)
    assert not summary.ok and sorted(summary.ran) == [t.name for t in good]
    log = os.path.join(bad.path, "log.txt")
    assert summary.failed == (runner.Failure("acgan/seed_1", 3, log),)
    record = json.load(open(os.path.join(bad.path, "failed.json")))
    assert record["returncode"] == 3 and record["log"] == log and record["time"]
    assert "boom: the fake cell fails" in open(log).read()
    assert "acgan/seed_1: FAILED with exit code 3" in out and log in out
    for task in good:
        assert grid.is_finished(task.path, 2)
        assert not os.path.exists(os.path.join(task.path, "failed.json"))
    # Fixed, the cell runs again: failed.json goes, and log.txt keeps both launches.
    fixed = _task(tmp_path, "acgan/seed_1", 2)
    summary, _ = _run([fixed, *good], iterations=2)
    assert summary.ok and summary.ran == ("acgan/seed_1",)
    assert not os.path.exists(os.path.join(bad.path, "failed.json"))
    assert open(log).read().count("launched by the study") == 2


def test_a_cell_that_failed_after_finishing_is_launched_again(tmp_path):
    """A cell that wrote its last results line and then failed is not skipped as finished on the
    next run: it is launched again (train finds nothing left), and failed.json goes."""
    task = _task(tmp_path, "bald/seed_1", 1, mode="fail_after")
    summary, _ = _run([task], iterations=1)
    assert [f.returncode for f in summary.failed] == [4]
    assert not grid.is_finished(task.path, 1)
    again, _ = _run([_task(tmp_path, "bald/seed_1", 1)], iterations=1)
    assert again.ok and again.ran == ("bald/seed_1",) and _launches(task) == 2
    assert not os.path.exists(os.path.join(task.path, "failed.json"))
    assert [r["iteration"] for r in grid.read_results(task.path)] == [0, 1]


def test_a_cell_stopped_by_sigterm_from_outside_stops_the_study_without_a_failure(tmp_path):
    """A cluster scheduler's time limit or scancel signals every process of the job: a cell that
    dies of SIGTERM before the study gets its own signal is not recorded as failed."""
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    task = runner.CellTask("bald/seed_1", str(tmp_path / "c"), (sys.executable, "-c", code))
    with pytest.raises(runner.Interrupted) as raised:
        _run([task], iterations=1)
    assert raised.value.signum == signal.SIGTERM
    assert not os.path.exists(tmp_path / "c" / "failed.json")


def test_study_finish_names_each_failed_cell_with_its_log_and_exits_non_zero(tmp_path, capsys):
    from tf_bgadl import study  # pylint: disable=import-outside-toplevel
    cell = _task(tmp_path, "bald/seed_1", 1)
    _run([cell], iterations=1)  # a complete cell, so that the report has something to say
    plan = study._Plan(workdir=str(tmp_path), cells=[], num_shards=1, shard_index=0,
                       base=None, tasks=[])
    failed = runner.Failure("acgan/seed_2", 3, "/x/acgan/seed_2/log.txt")
    with pytest.raises(SystemExit) as raised:
        study.finish(plan, runner.Summary(("bald/seed_1",), (), (failed,), 5.0))
    message = str(raised.value.code)
    assert "1 cell(s) failed" in message
    assert "acgan/seed_2: exit code 3, log /x/acgan/seed_2/log.txt" in message
    assert os.path.exists(tmp_path / "report.md")
    study.finish(plan, runner.Summary(("bald/seed_1",), (), (), 5.0))  # no failure: returns
    assert "report: " in capsys.readouterr().out


def test_a_finished_study_prepares_no_data(tmp_path, monkeypatch, capsys):
    """Rerunning a finished study works where its data set is gone: nothing to run, no data."""
    import types  # pylint: disable=import-outside-toplevel
    from absl import flags  # pylint: disable=import-outside-toplevel
    from tf_bgadl import study  # pylint: disable=import-outside-toplevel
    task = _task(tmp_path, "bald/seed_1", 1)
    _run([task], iterations=1)
    plan = study._Plan(workdir=str(tmp_path), cells=[], num_shards=1, shard_index=0,
                       base=types.SimpleNamespace(iterations=1, data=None), tasks=[task])

    def prepare(*args):
        raise AssertionError(f"prepared data for a finished study: {args}")

    monkeypatch.setattr(study, "plan_from_flags", lambda workdir: plan)
    monkeypatch.setattr(study, "prepare_data_once", prepare)
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["study", f"--workdir={tmp_path}"])
        study.main(["study"])
    finally:
        flags.FLAGS.unparse_flags()
    assert "0 cell(s) finished now, 1 were finished before" in capsys.readouterr().out
    unfinished = _task(tmp_path, "bald/seed_2", 1)  # and with a cell left, it does prepare
    plan.tasks.append(unfinished)
    flags.FLAGS(["study", f"--workdir={tmp_path}"])
    try:
        with pytest.raises(AssertionError, match="prepared data"):
            study.main(["study"])
    finally:
        flags.FLAGS.unparse_flags()


def test_a_cell_that_exits_0_unfinished_is_a_failure(tmp_path):
    task = runner.CellTask("bald/seed_1", str(tmp_path / "c"), (sys.executable, "-c", "pass"))
    summary, _ = _run([task], iterations=1)
    assert [f.returncode for f in summary.failed] == [0]
    assert "do not reach iteration 1" in json.load(open(tmp_path / "c" / "failed.json"))["reason"]


def test_a_cell_locked_by_another_process_is_not_run_twice(tmp_path):
    locked = _task(tmp_path, "bald/seed_1", 1)
    free = _task(tmp_path, "bald/seed_2", 1)
    lock = runner.try_lock(locked.path)  # another study process runs bald/seed_1 ...
    assert runner.try_lock(locked.path) is None

    def other_process_finishes():
        time.sleep(1.0)
        _write_rows(locked.path, [0, 1])
        lock.close()

    thread = threading.Thread(target=other_process_finishes)
    thread.start()
    summary, out = _run([locked, free], iterations=1)
    thread.join()
    assert summary.ok and summary.ran == ("bald/seed_2",) and summary.skipped == ("bald/seed_1",)
    assert _launches(locked) == 0 and _launches(free) == 1
    assert "bald/seed_1: another process holds" in out
    assert "bald/seed_1: finished by another process" in out


def test_eta_is_mean_iteration_time_times_iterations_left_over_parallel_jobs(tmp_path):
    tasks = [_task(tmp_path, f"bald/seed_{s}", 4) for s in (1, 2, 3)]
    for task, seconds in zip(tasks, (10.0, 20.0)):
        os.makedirs(task.path)
        with open(os.path.join(task.path, "results.jsonl"), "w") as f:
            for it in range(2):
                f.write(json.dumps({"iteration": it, "seconds": seconds}) + "\n")
    progress = runner.Progress(tasks, iterations=4, jobs=2, out=io.StringIO())
    assert (progress.finished, progress.total) == (4, 15)
    assert progress.eta_seconds() == pytest.approx(15.0 * 11 / 2)
    assert progress.status() == "finished iterations 4/15, ETA 1 min 22 s"


_STUDY_OF_ONE_SLEEPING_CELL = r"""
import sys
from tf_bgadl.studies import runner
path = sys.argv[1]
sleeper = ("import os, time; open(os.path.join(%r, 'pid'), 'w').write(str(os.getpid())); "
           "time.sleep(300)" % path)
runner.run_cells([runner.CellTask("bald/seed_1", path, (sys.executable, "-c", sleeper))],
                 iterations=0, jobs=1)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_cells_die_with_the_study(tmp_path, how):
    cell = tmp_path / "cell"
    # SIGINT as a terminal delivers it: a shell starts background jobs (`cmd &`, as CI may run
    # the tests) with SIGINT ignored, which the study would inherit and rightly keep ignoring.
    study = subprocess.Popen([sys.executable, "-c", _STUDY_OF_ONE_SLEEPING_CELL, str(cell)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (cell / "pid").exists() or not (cell / "pid").read_text():
        assert time.time() < deadline and study.poll() is None
        time.sleep(0.05)
    pid = int((cell / "pid").read_text())
    assert _alive(pid)
    study.send_signal(how)
    try:
        study.wait(timeout=60)
    except subprocess.TimeoutExpired:
        study.kill()
        output = study.communicate()[0].decode(errors="replace")
        pytest.fail(f"the study did not exit within 60 s of {how.name}; its output:\n{output}")
    deadline = time.time() + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert runner.try_lock(str(cell)) is not None  # the cell is free for a rerun


# ---------------------------------------------------------------------------------------------
# the entry point: python -m tf_bgadl.study


def test_the_study_process_does_not_import_tensorflow():
    proc = subprocess.run([sys.executable, "-c", "import sys, tf_bgadl.study; "
                           "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("flags, env, message", [
    (["--methods=bald,vae"], {}, "--methods=bald,vae: unknown method(s) vae; choose from "
                                 "vaeacgan, acgan, pmda, bald, bda_partial, random"),
    (["--methods=bald,bald"], {}, "--methods repeats bald"),
    (["--seeds=1,x"], {}, "--seeds=1,x: 'x' is not an integer"),
    (["--seeds=-1"], {}, "--seeds=-1: seeds must be >= 0"),
    (["--jobs=-2"], {}, "--jobs=-2 must be >= 0"),
    (["--num_shards=2", "--shard_index=2"], {}, "--shard_index=2 is outside [0, 1]"),
    ([], {"JOB_COMPLETION_INDEX": "1"}, "pass --num_shards=<the Job's completions>"),
    (["--pool_subset=0"], {}, "--pool_subset=0 must be positive"),
    (["--methods=random,bald", "--dropout_rate=0"], {},
     "use a positive rate for --method=bald"),
    (["--export_base=/tmp/models"], {}, "would export every cell to the same place"),
    (["--oracle=file"], {}, "--oracle=file: a study replays labeled data sets"),
    (["--max_labels=100"], {}, "stopping rules (--max_labels=100) do not apply here"),
    (["--strategy=multi_worker"], {}, "--strategy=multi_worker runs one run on several"),
    (["--methods=random", "--acquisition=max_entropy"], {},
     "--acquisition applies to none of the study's methods (random)"),
])
def test_bad_study_input_is_a_clear_error_before_anything_runs(tmp_path, flags, env, message):
    workdir = tmp_path / "study"
    proc = run_module("tf_bgadl.study", f"--workdir={workdir}", "--dataset=digits", *flags,
                      env=env, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()  # nothing was launched


# ---------------------------------------------------------------------------------------------
# end to end on `digits`

TINY_STUDY = ["--dataset=digits", "--model=cnn", "--initial_per_class=2",
              "--acquire_per_iteration=10", "--pool_subset=60", "--mc_samples=5", "--epochs=1",
              "--batch_size=32", "--score_batch_size=64", "--iterations=1"]
GRID = ["bald/seed_1", "bald/seed_2", "random/seed_1", "random/seed_2"]


def _study_args(tmp_path, data_dir, workdir):
    flagfile = tmp_path / "tiny_study.flags"
    flagfile.write_text("# a tiny study\n" + "\n".join(TINY_STUDY) + "\n")
    return [f"--flagfile={flagfile}", f"--data_dir={data_dir}", "--methods=bald,random",
            "--seeds=1,2", "--jobs=2", f"--workdir={workdir}"]


def _cell_rows(workdir):
    return {name: grid.read_results(os.path.join(workdir, name)) for name in GRID}


def _kept_rows(workdir):
    """Each cell's rows up to its state.json: the iterations a resumed train keeps."""
    kept = {}
    for name, rows in _cell_rows(workdir).items():
        state = os.path.join(workdir, name, "state.json")
        last = json.load(open(state))["iteration"] if os.path.exists(state) else -1
        kept[name] = [r for r in rows if r["iteration"] <= last]
    return kept


def _launch_count(workdir, name):
    log = os.path.join(workdir, name, "log.txt")
    return open(log).read().count("launched by the study") if os.path.exists(log) else 0


@pytest.fixture(scope="module")
def sharded_study(data_dir, tmp_path_factory):
    """The tiny study run as two shards: two concurrent local processes into one workdir."""
    tmp_path = tmp_path_factory.mktemp("sharded")
    workdir = str(tmp_path / "study")
    args = _study_args(tmp_path, data_dir, workdir)
    shards = [subprocess.Popen([sys.executable, "-m", "tf_bgadl.study", *args,
                                "--num_shards=2", f"--shard_index={i}"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in shards]
    for p, (stdout, stderr) in zip(shards, outputs):
        assert p.returncode == 0, stdout[-2000:] + stderr[-3000:]
    return tmp_path, workdir, [stdout for stdout, _ in outputs]


def test_two_shards_as_two_processes_cover_the_grid_exactly_once(sharded_study):
    _, workdir, outputs = sharded_study
    # cell i of the method-major grid belongs to shard i % 2
    assert "shard 0 of 2; this process runs 2" in outputs[0]
    for name in GRID:
        assert _launch_count(workdir, name) == 1, name
        assert [r["iteration"] for r in grid.read_results(os.path.join(workdir, name))] == [0, 1]
        config = json.load(open(os.path.join(workdir, name, "config.json")))
        method, seed = name.split("/seed_")
        # train flags from the flagfile and the command line reached every cell
        assert (config["acquisition"]["method"], config["seed"]) == (method, int(seed))
        assert config["train"]["epochs"] == 1 and config["data"]["dataset"] == "digits"
    ran = [line.split(":")[0] for out in outputs for line in out.splitlines()
           if line.endswith(")") and ": finished (" in line]
    assert sorted(ran) == GRID
    assert "bald/seed_1: iteration 1/1, 30 oracle labels, test accuracy" in outputs[0]
    assert "finished iterations 4/4" in outputs[0] and "finished iterations 4/4" in outputs[1]
    assert os.path.exists(os.path.join(workdir, "report.md"))


def test_rerunning_a_finished_study_runs_nothing(sharded_study, data_dir):
    tmp_path, workdir, _ = sharded_study
    proc = run_module("tf_bgadl.study", *_study_args(tmp_path, data_dir, workdir), "--seed=5",
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 already finished" in proc.stdout and "0 cell(s) finished now" in proc.stdout
    assert "note: --seed=5 ignored: the study sets --method and --seed per cell" in proc.stdout
    assert all(_launch_count(workdir, name) == 1 for name in GRID)


def test_a_workdir_of_another_config_is_refused(sharded_study, data_dir):
    tmp_path, workdir, _ = sharded_study
    proc = run_module("tf_bgadl.study", *_study_args(tmp_path, data_dir, workdir), "--epochs=2",
                      timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "bald/seed_1: train.epochs: cell has 1, this study has 2" in proc.stderr
    assert all(_launch_count(workdir, name) == 1 for name in GRID)


@pytest.mark.slow  # about 30-50 s: keeps the default run near 10 minutes; .ci/run runs it
def test_a_study_killed_mid_way_and_rerun_loses_and_redoes_nothing(sharded_study, data_dir,
                                                                   tmp_path):
    _, reference_dir, _ = sharded_study
    workdir = str(tmp_path / "study")
    args = _study_args(tmp_path, data_dir, workdir)
    study = subprocess.Popen([sys.executable, "-m", "tf_bgadl.study", *args], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and study.poll() is None:
        if any(_cell_rows(workdir).values()):  # the first iteration of some cell is finished
            break
        time.sleep(0.05)
    study.send_signal(signal.SIGKILL)
    study.wait()
    at_kill = _kept_rows(workdir)
    assert sum(map(len, _cell_rows(workdir).values())) < 8  # killed mid-way
    # The cells' train processes died with the study.
    deadline = time.time() + 15
    while time.time() < deadline and _train_processes(workdir):
        time.sleep(0.1)
    assert not _train_processes(workdir)

    proc = run_module("tf_bgadl.study", *args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    final, reference = _cell_rows(workdir), _cell_rows(reference_dir)
    for name in GRID:
        iterations = [r["iteration"] for r in final[name]]
        assert iterations == [0, 1], (name, iterations)  # every cell finished, no duplicates
        assert final[name][:len(at_kill[name])] == at_kill[name]  # kept, not redone
        if len(at_kill[name]) == 2:
            assert _launch_count(workdir, name) == 1  # finished before the kill: not relaunched
        # the same results as the uninterrupted (sharded) study
        assert [(r["num_labeled"], r["acquired_ids"], r["test_accuracy"]) for r in final[name]] \
            == [(r["num_labeled"], r["acquired_ids"], r["test_accuracy"])
                for r in reference[name]], name
    assert "finished iterations 8/8" in proc.stdout
    assert os.path.exists(os.path.join(workdir, "report.md"))


def _train_processes(workdir):
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if "tf_bgadl.train" in cmdline and workdir in cmdline and _alive(pid):
            pids.append(pid)
    return pids


def test_method_specific_flags_reach_only_the_methods_they_apply_to(tmp_path, data_dir):
    """`--acquisition` (and its temperature) and `--gan_pool_steps` set for a whole study go to
    the cells whose method they mean something for, and are left out of the others (which
    would refuse them)."""
    from absl import flags as absl_flags
    from tf_bgadl import study
    absl_flags.FLAGS.unparse_flags()
    try:
        absl_flags.FLAGS(["study", *TINY_STUDY, f"--data_dir={data_dir}",
                          f"--workdir={tmp_path / 'w'}", "--methods=vaeacgan,random",
                          "--seeds=1", "--acquisition=power_bald",
                          "--acquisition_temperature=0.5", "--gan_pool_steps=7"])
        plan = study.plan_from_flags(str(tmp_path / "w"))
    finally:
        absl_flags.FLAGS.unparse_flags()
    commands = {task.name: task.command for task in plan.tasks}
    assert "--acquisition=power_bald" in commands["vaeacgan/seed_1"]
    assert "--acquisition_temperature=0.5" in commands["vaeacgan/seed_1"]
    assert "--gan_pool_steps=7" in commands["vaeacgan/seed_1"]
    assert not any(a.startswith(("--acquisition", "--gan_pool_steps"))
                   for a in commands["random/seed_1"])
