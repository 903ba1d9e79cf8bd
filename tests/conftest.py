"""Shared fixtures: offline data in a temporary tfds dir, two logical CPU devices."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_BGADL_OFFLINE"] = "1"  # tests never try a download

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so that MirroredStrategy runs with two replicas (before TF initialises).
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes; not in the default run")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data dir with `digits` prepared (from scikit-learn's bundled files)."""
    path = str(tmp_path_factory.mktemp("tfds"))
    from tf_bgadl import data
    data.get_builder("digits", path)
    return path


@pytest.fixture(scope="session")
def digits(data_dir):
    from tf_bgadl import data
    return data.load_dataset("digits", data_dir)


def run_module(module, *args, timeout=600, env=None, unset_env=()):
    """Runs `python -m module args...` from the repository root; returns CompletedProcess."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset_env}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
