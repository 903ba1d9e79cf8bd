"""Runs a study's cells as separate processes, `jobs` at a time, and prints their progress.

Each cell is one command (for a study: `python -m tf_bgadl.train ... --workdir=<cell>`) that
writes `<cell>/results.jsonl`; the runner knows nothing else about it, so tests pass fake
commands. What the runner guarantees:

- A finished cell (its results reach `iterations`) is never launched again; an unfinished one is
  launched again and resumes by itself (train resumes after its last finished iteration).
- A cell runs in at most one process at a time: the runner holds `fcntl.flock` on `<cell>/.lock`
  from before it checks the cell until the cell's process has exited, and the process inherits
  the lock. A cell locked by another study process (another shard, a second study command) is
  waited for, then skipped if that process finished it.
- Children die with the study: each child asks the kernel for SIGKILL when the study process
  dies (Linux `prctl(PR_SET_PDEATHSIG)`), and on SIGTERM or Ctrl-C the study stops its children
  before it exits. Train writes atomically, so killing it loses at most the running iteration.
- A failing cell does not stop the others: it gets `<cell>/failed.json` (removed when the cell
  starts again) and the summary names it with its log, `<cell>/log.txt` (every launch's stdout
  and stderr, appended).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import functools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Iterator, Mapping, Sequence

from tf_bgadl.state import utc_now
from tf_bgadl.studies import grid

LOCK_NAME = ".lock"
LOG_NAME = "log.txt"
FAILED_NAME = grid.FAILED_NAME
# Peak resident memory of one cell, rounded up: `/usr/bin/time -v` of a quickstart-sized
# vaeacgan cell on mnist5k measured 1.39 GB (TensorFlow, the data set and the four networks);
# the margin covers the larger data sets (Fashion-MNIST's 70,000 images add ~55 MB).
CELL_MEMORY_BYTES = 2 * 1024**3
# Environment variables that split the cores between the cells (a value already set wins).
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class CellTask:
    """A cell to run: its name for messages, its folder and the command that runs it there."""

    name: str
    path: str
    command: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Failure:
    name: str
    returncode: int
    log: str


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a study run did: cells finished now, found finished, and failed."""

    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[Failure, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed


class Interrupted(Exception):
    """The study received SIGTERM; its running cells were stopped."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signal.Signals(signum).name}")
        self.signum = signum


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroup_folders(controller: str, proc_cgroup: str, root: str) -> list[str]:
    """This process's cgroup folders for `controller` and their ancestors, innermost first.

    Reads cgroup v2 (`0::/path`) and v1 (`N:cpu,cpuacct:/path`) lines of /proc/self/cgroup;
    a folder that does not exist (e.g. a path outside the container's namespace) is left out.
    """
    text = _read_text(proc_cgroup) or ""
    folders = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            bases = [root]
        elif controller in controllers.split(","):
            bases = [os.path.join(root, controllers), os.path.join(root, controller)]
        else:
            continue
        for base in bases:
            folder = os.path.normpath(os.path.join(base, path.strip().lstrip("/")))
            while True:
                if os.path.isdir(folder) and folder not in folders:
                    folders.append(folder)
                if folder == os.path.normpath(base):
                    break
                folder = os.path.dirname(folder)
    return folders


def cgroup_cpu_limit(proc_cgroup: str = "/proc/self/cgroup",
                     root: str = "/sys/fs/cgroup") -> int | None:
    """Whole CPUs of the process's cgroup quota (Kubernetes CPU limits, docker --cpus), if any."""
    limits = []
    for folder in _cgroup_folders("cpu", proc_cgroup, root):
        v2 = _read_text(os.path.join(folder, "cpu.max"))
        quota, period = (v2.split() + ["100000"])[:2] if v2 else (
            _read_text(os.path.join(folder, "cpu.cfs_quota_us")),
            _read_text(os.path.join(folder, "cpu.cfs_period_us")))
        try:
            if quota not in (None, "max", "-1") and period and int(period) > 0:
                limits.append(max(1, int(quota) // int(period)))
        except ValueError:
            continue
    return min(limits) if limits else None


def cgroup_memory_limit(proc_cgroup: str = "/proc/self/cgroup",
                        root: str = "/sys/fs/cgroup") -> int | None:
    """The process's cgroup memory limit in bytes (Kubernetes limits, SLURM --mem), if any."""
    limits = []
    for folder in _cgroup_folders("memory", proc_cgroup, root):
        for name in ("memory.max", "memory.limit_in_bytes"):
            value = _read_text(os.path.join(folder, name))
            if value and value.isdigit() and int(value) < 2**60:  # v1 writes ~2**63 for none
                limits.append(int(value))
    return min(limits) if limits else None


def usable_cores() -> int:
    """Cores this process may use: its affinity mask (SLURM, taskset, cpusets), capped by a
    cgroup CPU quota (Kubernetes CPU limits, where the mask still shows the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return max(1, min(cores, quota) if quota else cores)


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo, capped by a cgroup memory limit; None if neither is known."""
    values = [cgroup_memory_limit()]
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            values.append(int(line.split()[1]) * 1024)
    known = [v for v in values if v is not None]
    return min(known) if known else None


def default_jobs(num_cells: int, cores: int, memory: int | None) -> int:
    """How many cells to run at once: one per core, as many as fit in memory, at most all.

    One single-threaded cell per core rather than fewer cells with more threads each: the
    classifiers and generators of a study are small (batches of 50 images of 28x28), where one
    TensorFlow op cannot keep several cores busy, while independent cells scale with the cores.
    """
    fit = cores if memory is None else max(1, memory // CELL_MEMORY_BYTES)
    return max(1, min(num_cells, cores, fit))


def child_environment(jobs: int, cores: int, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` plus the thread split (cores // jobs each, at least 1) and unbuffered output.

    Values the user already set win. `TF_FORCE_GPU_ALLOW_GROWTH` keeps several cells from each
    reserving a whole GPU's memory at start.
    """
    threads = str(max(1, cores // max(1, jobs)))
    env = dict(environ)
    for name in THREAD_VARIABLES:
        env.setdefault(name, threads)
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def try_lock(path: str) -> IO | None:
    """The open, exclusively flock-ed `<path>/.lock`, or None if another process holds it."""
    os.makedirs(path, exist_ok=True)
    handle = open(os.path.join(path, LOCK_NAME), "a")  # pylint: disable=consider-using-with
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Holds an exclusive flock on the file `path` (waiting for it) inside the block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


@functools.cache
def _libc_prctl():
    """libc's prctl on Linux, else None (looked up once, in the parent, never after a fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with(parent_pid: int):
    """A preexec_fn: the child gets SIGKILL when the study process dies.

    PR_SET_PDEATHSIG fires when the thread that forked the child ends, so children are
    started from the study's main thread only.
    """
    prctl = _libc_prctl()

    def preexec():
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent_pid:  # the study died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _write_json(path: str, value: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Prints one line per newly finished iteration of any cell, with a count and an ETA.

    The ETA is the mean `seconds` of the iterations finished so far (any cell, any launch) times
    the iterations left, divided by the cells that can run in parallel (min(jobs, unfinished
    cells)). It leaves out each launch's start-up (about 10 s) and assumes later iterations cost
    what earlier ones did (they cost more: the labeled set grows), so it errs short.
    """

    def __init__(self, tasks: Sequence[CellTask], iterations: int, jobs: int, out: IO):
        self._tasks, self._iterations, self._jobs, self._out = tasks, iterations, jobs, out
        self._done: dict[str, set[int]] = {t.name: set() for t in tasks}
        self._seconds: dict[tuple[str, int], float] = {}
        self._stats: dict[str, tuple[int, int]] = {}
        self.poll(quiet=True)

    @property
    def total(self) -> int:
        return len(self._tasks) * (self._iterations + 1)

    @property
    def finished(self) -> int:
        return sum(len(s) for s in self._done.values())

    def eta_seconds(self) -> float | None:
        if not self._seconds:
            return None
        unfinished = sum(1 for s in self._done.values() if self._iterations not in s)
        parallel = max(1, min(self._jobs, unfinished))
        mean = sum(self._seconds.values()) / len(self._seconds)
        return mean * (self.total - self.finished) / parallel

    def status(self) -> str:
        eta = self.eta_seconds()
        left = "unknown" if eta is None else format_seconds(eta)
        return f"finished iterations {self.finished}/{self.total}, ETA {left}"

    def poll(self, quiet: bool = False) -> None:
        """Reads results.jsonl of cells that changed and prints their new iterations."""
        for task in self._tasks:
            path = os.path.join(task.path, "results.jsonl")
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            if self._stats.get(task.name) == (stat.st_mtime_ns, stat.st_size):
                continue
            self._stats[task.name] = (stat.st_mtime_ns, stat.st_size)
            for row in sorted(grid.read_results(task.path), key=lambda r: r["iteration"]):
                iteration = row["iteration"]
                if iteration in self._done[task.name] or not 0 <= iteration <= self._iterations:
                    continue
                self._done[task.name].add(iteration)
                if isinstance(row.get("seconds"), (int, float)):
                    self._seconds[(task.name, iteration)] = float(row["seconds"])
                if not quiet:
                    accuracy = row.get("test_accuracy")
                    accuracy = "?" if accuracy is None else f"{accuracy:.4f}"
                    print(f"{task.name}: iteration {iteration}/{self._iterations}, "
                          f"{row.get('num_labeled', '?')} oracle labels, test accuracy "
                          f"{accuracy}; {self.status()}", file=self._out, flush=True)


@dataclasses.dataclass
class _Running:
    task: CellTask
    process: subprocess.Popen
    lock: IO
    log: IO
    started: float


def _launch(task: CellTask, lock: IO, env: Mapping[str, str]) -> _Running:
    """Starts the cell's command in its own session, output appended to its log."""
    failed = os.path.join(task.path, FAILED_NAME)
    if os.path.exists(failed):
        os.remove(failed)
    log = open(os.path.join(task.path, LOG_NAME), "ab")  # pylint: disable=consider-using-with
    log.write(f"\n===== {utc_now()} launched by the study (host {socket.gethostname()}, pid "
              f"{os.getpid()}): {shlex.join(task.command)}\n".encode())
    log.flush()
    try:
        process = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn
            list(task.command), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env), start_new_session=True, pass_fds=(lock.fileno(),),
            preexec_fn=_die_with(os.getpid()))
    except BaseException:
        log.close()
        lock.close()
        raise
    return _Running(task, process, lock, log, time.monotonic())


def _stop(running: Sequence[_Running]) -> None:
    """SIGTERM to every child's process group, SIGKILL to those still there after a grace."""
    for r in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for r in running:
        try:
            r.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.process.pid, signal.SIGKILL)
            r.process.wait()
        r.log.close()
        r.lock.close()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Inside the block SIGTERM raises `Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        del frame
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_OUTSIDE_STOP = (-signal.SIGTERM, -signal.SIGINT)  # Popen's returncode of a signal exit


def _record_failure(task: CellTask, returncode: int, iterations: int) -> Failure:
    log = os.path.abspath(os.path.join(task.path, LOG_NAME))
    record = {"returncode": returncode, "log": log, "time": utc_now()}
    if returncode == 0:
        record["reason"] = f"exited 0 but its results do not reach iteration {iterations}"
    _write_json(os.path.join(task.path, FAILED_NAME), record)
    return Failure(task.name, returncode, log)


def _last_line(log: str, limit: int = 300) -> str:
    """"; last line: ..." of the log (where the error usually is), or ""."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 4096))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return f"; last line: {lines[-1][:limit]}" if lines else ""


def run_cells(tasks: Sequence[CellTask], *, iterations: int, jobs: int,
              cores: int | None = None, environ: Mapping[str, str] | None = None,
              poll_seconds: float = 2.0, out: IO | None = None) -> Summary:
    """Runs the unfinished cells, `jobs` at a time, until each has finished or failed.

    Args:
      tasks: the cells, in the order they are started.
      iterations: a cell is finished when its results.jsonl holds an iteration >= this.
      jobs: cells run at once (>= 1).
      cores: cores to split between the jobs for the thread variables (default: usable_cores()).
      environ: the children's base environment (default: os.environ).
      poll_seconds: how often results.jsonl files are read for progress lines.
      out: where progress goes (default: sys.stdout).

    Returns:
      The summary; failed cells also have `<cell>/failed.json`.

    Raises:
      KeyboardInterrupt, Interrupted: on Ctrl-C or SIGTERM, after the running cells were
        stopped (rerun to resume them).
    """
    if jobs < 1:
        raise ValueError(f"--jobs={jobs} must be >= 1")
    start = time.monotonic()
    cores = cores or usable_cores()
    env = child_environment(jobs, cores, os.environ if environ is None else environ)
    scheduler = _Scheduler(tasks, iterations, jobs, env, out or sys.stdout)
    next_poll = 0.0
    with _sigterm_raises():
        try:
            while scheduler.busy:
                scheduler.reap()
                scheduler.launch()
                if time.monotonic() >= next_poll:
                    scheduler.progress.poll()
                    next_poll = time.monotonic() + poll_seconds
                if scheduler.busy:
                    time.sleep(0.1)
        except BaseException:
            scheduler.stop()
            raise
    scheduler.progress.poll()
    return Summary(tuple(scheduler.ran), tuple(scheduler.skipped), tuple(scheduler.failed),
                   time.monotonic() - start)


class _Scheduler:
    """One `run_cells` call: which cells wait, run, finished, failed; what it prints."""

    def __init__(self, tasks: Sequence[CellTask], iterations: int, jobs: int,
                 env: Mapping[str, str], out: IO):
        self.iterations, self.jobs, self.env, self.out = iterations, jobs, env, out
        self.progress = Progress(tasks, iterations, jobs, out)
        self.skipped = [t.name for t in tasks if grid.is_finished(t.path, iterations)]
        self.pending = [t for t in tasks if t.name not in self.skipped]
        self.running: dict[str, _Running] = {}
        self.ran: list[str] = []
        self.failed: list[Failure] = []
        self._waiting: set[str] = set()
        self.say(f"study: {len(tasks)} cells, {len(self.skipped)} already finished; {jobs} at a "
                 f"time with {env['TF_NUM_INTRAOP_THREADS']} TensorFlow thread(s) each; "
                 f"{self.progress.status()}")

    @property
    def busy(self) -> bool:
        return bool(self.pending or self.running)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def reap(self) -> None:
        """Collects the cells whose process ended: finished, or failed (failed.json)."""
        for name, running in list(self.running.items()):
            returncode = running.process.poll()
            if returncode is None:
                continue
            del self.running[name]
            running.log.close()
            self.progress.poll()  # its last iterations before its verdict
            finished = grid.is_finished(running.task.path, self.iterations)
            running.lock.close()
            took = format_seconds(time.monotonic() - running.started)
            if returncode == 0 and finished:
                self.ran.append(name)
                self.say(f"{name}: finished ({took})")
            elif returncode in _OUTSIDE_STOP and not finished:
                # SIGTERM/SIGINT from outside the study (a cluster scheduler's time limit or
                # scancel signals every process of the job, the study's cells possibly before
                # the study itself): the study is being stopped, the cell did not fail.
                signum = -returncode
                self.say(f"{name}: stopped by {signal.Signals(signum).name} from outside the "
                         f"study after {took}; not a failure, rerun to resume it")
                raise Interrupted(signum)
            else:
                failure = _record_failure(running.task, returncode, self.iterations)
                self.failed.append(failure)
                self.say(f"{name}: FAILED with exit code {returncode} after {took}; log: "
                         f"{failure.log}{_last_line(failure.log)}")

    def launch(self) -> None:
        """Starts waiting cells while fewer than `jobs` run; skips cells found finished."""
        for task in list(self.pending):
            if len(self.running) >= self.jobs:
                return
            lock = try_lock(task.path)
            if lock is None:
                if task.name not in self._waiting:
                    self._waiting.add(task.name)
                    self.say(f"{task.name}: another process holds "
                             f"{os.path.join(task.path, LOCK_NAME)}; waiting for it")
                continue
            self.pending.remove(task)
            if grid.is_finished(task.path, self.iterations):
                lock.close()
                self.skipped.append(task.name)
                self.say(f"{task.name}: finished by another process")
                continue
            done = len(grid.read_results(task.path))
            self.running[task.name] = _launch(task, lock, self.env)
            self.say(f"{task.name}: started" + (
                f", resuming after {done} finished iteration(s)" if done else ""))

    def stop(self) -> None:
        """Stops the running cells (the study is interrupted); rerunning resumes them."""
        stopping = list(self.running.values())
        if stopping:
            self.say(f"stopping {len(stopping)} running cell(s): "
                     f"{', '.join(r.task.name for r in stopping)}")
        _stop(stopping)
        self.running.clear()
