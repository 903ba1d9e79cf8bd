"""Flagfiles by bare name from any directory (tf_bgadl.cli) and the list of shipped configs."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from tf_bgadl import cli, configs

SHIPPED = configs.names()


def _shipped_lines(name):
    """The flag lines of one shipped config, without comments (no includes expanded)."""
    text = configs.file(name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith(("#", "//"))]


def _python(cwd, *args):
    """Runs `python args...` in `cwd`; returns CompletedProcess."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty current directory outside the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_shipped_configs_are_package_data_with_bare_includes():
    assert {"base.flags", "quickstart.flags", "mnist.flags", "cifar10.flags", "cifar100.flags",
            "svhn.flags"} <= set(SHIPPED)
    for name in SHIPPED:
        assert configs.summary(name), f"{name} has no first comment line"
        for line in _shipped_lines(name):
            if line.startswith("--flagfile="):
                included = line[len("--flagfile="):]
                assert included in SHIPPED and os.path.dirname(included) == "", (name, line)
    # The checkout's top-level `configs` is the package's folder (documented paths still work).
    assert os.path.samefile(os.path.join(REPO, "configs"), str(configs.directory()))


def test_bare_name_is_a_shipped_config_with_nested_include_expanded(elsewhere):
    args = cli.expand_flagfiles(["--flagfile=mnist.flags"])
    base = _shipped_lines("base.flags")
    assert args[:len(base)] == base  # the include expands in place, before mnist's own flags
    assert args[len(base):] == [line for line in _shipped_lines("mnist.flags")
                                if not line.startswith("--flagfile")]
    assert "--dataset=mnist" in args and "--iterations=150" in args


@pytest.mark.parametrize("spelling", ["configs/mnist.flags", "./configs/mnist.flags"])
def test_old_configs_path_works_from_any_directory(elsewhere, spelling):
    assert cli.expand_flagfiles([f"--flagfile={spelling}"]) == cli.expand_flagfiles(
        ["--flagfile=mnist.flags"])


def test_existing_path_wins_over_a_shipped_config(elsewhere):
    (elsewhere / "mnist.flags").write_text("--dataset=digits\n")
    assert cli.expand_flagfiles(["--flagfile=mnist.flags"]) == ["--dataset=digits"]
    (elsewhere / "configs").mkdir()
    (elsewhere / "configs" / "quickstart.flags").write_text("--epochs=3\n")
    assert cli.expand_flagfiles(["--flagfile=configs/quickstart.flags"]) == ["--epochs=3"]
    assert cli.expand_flagfiles([f"--flagfile={elsewhere / 'mnist.flags'}"]) == ["--dataset=digits"]


def test_nested_include_is_looked_up_beside_the_including_file_first(elsewhere):
    (elsewhere / "mine.flags").write_text("--flagfile=base.flags\n--epochs=3\n")
    base = _shipped_lines("base.flags")
    assert cli.expand_flagfiles(["--flagfile=mine.flags"]) == [*base, "--epochs=3"]
    (elsewhere / "base.flags").write_text("--seed=7\n")  # a local base.flags shadows the shipped
    assert cli.expand_flagfiles(["--flagfile=mine.flags"]) == ["--seed=7", "--epochs=3"]
    # A file in another folder finds its includes in its own folder, before the cwd's.
    (elsewhere / "sub").mkdir()
    (elsewhere / "sub" / "mine.flags").write_text("--flagfile=base.flags\n")
    (elsewhere / "sub" / "base.flags").write_text("--seed=8\n")
    assert cli.expand_flagfiles(["--flagfile=sub/mine.flags"]) == ["--seed=8"]


def test_a_shipped_config_includes_the_shipped_base_whatever_the_cwd_holds(elsewhere):
    shipped = cli.expand_flagfiles(["--flagfile=mnist.flags"])
    assert "--flagfile=base.flags" in _shipped_lines("mnist.flags")
    (elsewhere / "base.flags").write_text("--seed=7\n")  # e.g. a copy being edited
    assert cli.expand_flagfiles(["--flagfile=mnist.flags"]) == shipped
    assert "--seed=7" not in shipped


def test_comments_blank_lines_and_order(elsewhere):
    (elsewhere / "a.flags").write_text(
        "# a comment\n\n   \n// another comment\n--epochs=1\n  --seed=2  \n"
        "--flagfile=b.flags\n--epochs=4\n")
    (elsewhere / "b.flags").write_text("--seed=3\r\n# only comments and flags\r\n")
    args = cli.expand_flagfiles(["--dataset=digits", "--flagfile=a.flags", "--epochs=9",
                                 "--flagfile", "b.flags", "-flagfile=b.flags", "--flagfile="])
    assert args == ["--dataset=digits", "--epochs=1", "--seed=2", "--seed=3", "--epochs=4",
                    "--epochs=9", "--seed=3", "--seed=3"]
    # After `--` nothing is a flag any more, as in absl.
    assert cli.expand_flagfiles(["--", "--flagfile=nope.flags"]) == ["--", "--flagfile=nope.flags"]


def test_unknown_name_is_one_error_listing_the_shipped_configs(elsewhere):
    with pytest.raises(cli.FlagfileError) as error:
        cli.expand_flagfiles(["--flagfile=mnsit.flags"])
    message = str(error.value)
    assert "'mnsit.flags'" in message and os.getcwd() in message
    assert all(name in message for name in SHIPPED)
    (elsewhere / "mine.flags").write_text("--flagfile=nope.flags\n")
    with pytest.raises(cli.FlagfileError, match=r"'nope.flags' \(included from .*mine.flags\)"):
        cli.expand_flagfiles(["--flagfile=mine.flags"])
    with pytest.raises(cli.FlagfileError, match="has a directory part"):
        cli.expand_flagfiles(["--flagfile=other/mnist.flags"])
    with pytest.raises(cli.FlagfileError, match="needs a file name"):
        cli.expand_flagfiles(["--flagfile"])


def test_circular_includes_are_an_error(elsewhere):
    (elsewhere / "a.flags").write_text("--flagfile=b.flags\n")
    (elsewhere / "b.flags").write_text("--flagfile=a.flags\n")
    with pytest.raises(cli.FlagfileError, match="include each other"):
        cli.expand_flagfiles(["--flagfile=a.flags"])


@pytest.mark.parametrize("where", ["outside", "repo", "configs"])
def test_train_reads_mnist_flags_from_any_directory(tmp_path, where):
    """`train --flagfile=mnist.flags` gets as far as validating the config (no TF, no data)."""
    cwd = {"outside": tmp_path, "repo": REPO, "configs": os.path.join(REPO, "configs")}[where]
    proc = _python(cwd, "-m", "tf_bgadl.train", "--flagfile=mnist.flags", "--pool_subset=0")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: --pool_subset=0 must be positive"


def test_train_helpshort_with_quickstart_from_elsewhere(tmp_path):
    proc = _python(tmp_path, "-m", "tf_bgadl.train", "--flagfile=quickstart.flags", "--helpshort")
    assert "--workdir" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    assert "flagfile" not in proc.stderr


def test_unknown_flagfile_ends_an_entry_point_with_one_clear_line(tmp_path):
    proc = _python(tmp_path, "-m", "tf_bgadl.train", "--flagfile=mnsit.flags")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: flagfile 'mnsit.flags'"), proc.stderr
    assert all(name in lines[0] for name in SHIPPED)


def test_configs_command_lists_and_prints(tmp_path):
    listing = _python(tmp_path, "-m", "tf_bgadl.configs")
    assert listing.returncode == 0, listing.stderr
    for name in SHIPPED:
        assert f"  {name}" in listing.stdout and configs.summary(name) in listing.stdout
    shown = _python(tmp_path, "-m", "tf_bgadl.configs", "quickstart.flags")
    assert shown.returncode == 0
    assert shown.stdout == configs.file("quickstart.flags").read_text(encoding="utf-8")
    unknown = _python(tmp_path, "-m", "tf_bgadl.configs", "nope.flags")
    assert unknown.returncode != 0 and "quickstart.flags" in unknown.stderr


def test_an_explicit_tf_cpp_min_log_level_is_respected(tmp_path):
    """Entry points quiet TensorFlow's C++ start-up noise unless the user set the variable."""
    code = ("import os; from tf_bgadl import cli; cli.import_tensorflow(); "
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                           capture_output=True, check=True)
    asked = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True,
                           env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True,
                           check=True)
    assert quiet.stdout.split()[-1] == "3" and asked.stdout.split()[-1] == "0"
    assert "oneDNN" not in quiet.stderr and "oneDNN" in asked.stderr
