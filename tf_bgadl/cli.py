"""What every entry point (`python -m tf_bgadl.<command>`) does before its `main`.

Entry modules call `cli.run(main)` instead of `absl.app.run(main)`. Nothing here runs at import.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

from absl import app

_TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def _stderr_silenced():
    """Sends file descriptor 2 to /dev/null (C++ libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Imports and returns `tensorflow`, without its C++ start-up noise unless asked for.

    Hides oneDNN, CUDA-stub, cuInit and grappler remapper messages: unless the user set
    `TF_CPP_MIN_LOG_LEVEL` (then it is respected and nothing more is hidden), the level is set
    to 3 and the first import runs with stderr silenced, since some messages are printed before
    TensorFlow's logging reads the level. Python errors of the import still surface (they are
    raised after stderr is restored). Entry points call this where they first need TensorFlow,
    so that `--help` and configuration errors stay fast.
    """
    if "tensorflow" not in sys.modules and _TF_LOG_ENV not in os.environ:
        os.environ[_TF_LOG_ENV] = "3"
        with _stderr_silenced():
            import tensorflow  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf


def run(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Parses flags and runs `main` with absl (what `absl.app.run` does, for every entry)."""
    app.run(main, argv=argv)
