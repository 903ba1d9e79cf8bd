"""A wheel install (not editable) works from a directory outside the repository.

Builds the wheel from a copy of the sources, installs it with `--no-deps` into a fresh virtual
environment that sees this environment's site-packages through a `.pth` file (TensorFlow and the
rest are not downloaded again; a `.pth` line does not run this environment's editable-install
hook, so `tf_bgadl` comes from the wheel), then runs the entry points from an empty directory.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

# Every `python -m` entry point of the package (each ends with `cli.run(main)`); a new one must be
# added here: test_every_entry_point_is_listed fails until it is.
ENTRY_POINTS = ["tf_bgadl.train", "tf_bgadl.study", "tf_bgadl.report", "tf_bgadl.export",
                "tf_bgadl.prepare_data", "tf_bgadl.serving.rank", "tf_bgadl.tune"]

# Tiny sizes for `digits` (as tests/test_train.py).
TINY = ["--initial_per_class=2", "--acquire_per_iteration=10", "--pool_subset=60",
        "--mc_samples=5", "--batch_size=32", "--score_batch_size=64", "--latent_dim=8",
        "--gan_width_multiplier=0.25", "--gan_pool_steps=5"]


def _run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_BGADL_OFFLINE"] = "1"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of the fresh environment, its site-packages, an empty directory to run in)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a copy, so that building writes no build/ or egg-info into the repo
    shutil.copytree(os.path.join(REPO, "tf_bgadl"), src / "tf_bgadl",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "README.md", "MANIFEST.in"):
        if os.path.exists(os.path.join(REPO, name)):
            shutil.copy(os.path.join(REPO, name), src / name)
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--no-index", "-w", str(root / "dist"), str(src)], cwd=root)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("tf_bgadl-*.whl")

    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    install = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                    "--no-index", str(wheel)], cwd=root)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=root).stdout.strip()
    with open(os.path.join(site, "tf_bgadl_test_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")  # tensorflow etc. from this environment

    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return python, site, elsewhere


def test_the_wheel_is_what_gets_imported_and_ships_the_configs(installed):
    python, site, elsewhere = installed
    proc = _run([python, "-c", "import json, tf_bgadl, tf_bgadl.configs as c; "
                 "print(json.dumps([tf_bgadl.__file__, str(c.directory()), c.names()]))"],
                cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    package_file, directory, names = json.loads(proc.stdout)
    assert package_file == os.path.join(site, "tf_bgadl", "__init__.py")
    assert directory == os.path.join(site, "tf_bgadl", "configs")
    assert names == sorted(name for name in os.listdir(os.path.join(REPO, "tf_bgadl", "configs"))
                           if name.endswith(".flags"))  # every flagfile of the checkout ships
    assert not os.path.realpath(package_file).startswith(os.path.realpath(REPO))
    assert {"base.flags", "quickstart.flags", "mnist.flags", "cifar10.flags", "cifar100.flags",
            "svhn.flags"} <= set(names)
    listing = _run([python, "-m", "tf_bgadl.configs"], cwd=elsewhere)
    assert listing.returncode == 0 and directory in listing.stdout
    assert all(f"  {name}" in listing.stdout for name in names)


def test_every_entry_point_is_listed(installed):
    _, site, _ = installed
    package = os.path.join(site, "tf_bgadl")
    found = set()
    for folder, _, files in os.walk(package):
        for name in (n for n in files if n.endswith(".py")):
            with open(os.path.join(folder, name)) as f:
                if re.search(r"^\s+cli\.run\(main\)\s*$", f.read(), re.MULTILINE):
                    module = os.path.relpath(os.path.join(folder, name[:-3]), site)
                    found.add(module.replace(os.sep, "."))
    assert found == set(ENTRY_POINTS)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_of_every_entry_point(installed, module):
    python, site, elsewhere = installed
    proc = _run([python, "-m", module, "--help"], cwd=elsewhere, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # absl's --help lists the main module's flags under the path of the module that ran.
    assert os.path.join(site, *module.split(".")) + ".py:" in proc.stdout, proc.stdout[-3000:]


def test_one_iteration_of_quickstart_flags_runs_to_completion(installed, tmp_path):
    python, _, elsewhere = installed
    workdir = tmp_path / "run"
    proc = _run([python, "-m", "tf_bgadl.train", "--flagfile=quickstart.flags",
                 "--dataset=digits", "--iterations=1", "--epochs=1", *TINY,
                 f"--workdir={workdir}", f"--data_dir={tmp_path / 'tfds'}"], cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(workdir / "results.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["num_labeled"] for r in rows] == [20, 30]
    with open(workdir / "config.json") as f:
        config = json.load(f)
    # What the flagfile set and the command line did not override came from quickstart.flags.
    assert config["model"]["name"] == "cnn" and config["train"]["optimizer"] == "adam"
    assert config["data"]["dataset"] == "digits" and config["train"]["epochs"] == 1


def test_mnist_flags_reaches_the_data_sets_own_offline_error(installed, tmp_path):
    """The issue's command as written: it stops only because mnist is not prepared offline."""
    python, _, elsewhere = installed
    proc = _run([python, "-m", "tf_bgadl.train", "--flagfile=mnist.flags",
                 f"--data_dir={tmp_path / 'tfds'}"], cwd=elsewhere, timeout=300)
    assert proc.returncode != 0
    assert "Prepare it with: python -m tf_bgadl.prepare_data --dataset=mnist" in proc.stderr
    assert "flagfile" not in proc.stderr and "Traceback" not in proc.stderr
    # --workdir on the command line overrides the flagfile's default, with the same result.
    proc = _run([python, "-m", "tf_bgadl.train", "--flagfile=mnist.flags",
                 f"--workdir={tmp_path / 'w'}", f"--data_dir={tmp_path / 'tfds'}"],
                cwd=elsewhere, timeout=300)
    assert proc.returncode != 0 and "prepare_data --dataset=mnist" in proc.stderr
