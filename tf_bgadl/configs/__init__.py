"""The flagfiles that ship with tf_bgadl (package data), found by their bare names.

  python -m tf_bgadl.train --flagfile=quickstart.flags     # any entry point, from any directory
  python -m tf_bgadl.configs                               # each shipped config, one line each
  python -m tf_bgadl.configs mnist.flags > my.flags        # a copy to edit

How `--flagfile=NAME` finds a file is `tf_bgadl.cli`'s job; this module only says which configs
ship and reads them, through `importlib.resources` (so it also works from a wheel or a zip). A
config's first comment line is its one-line summary; includes name other configs by bare name
(`--flagfile=base.flags`).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

SUFFIX = ".flags"


def directory() -> Traversable:
    """The folder of the shipped configs (a real folder on an ordinary install)."""
    return resources.files(__name__)


def names() -> list[str]:
    """The bare names of the shipped configs (`base.flags`, `mnist.flags`, ...), sorted."""
    return sorted(entry.name for entry in directory().iterdir()
                  if entry.name.endswith(SUFFIX) and entry.is_file())


def file(name: str) -> Traversable:
    """The shipped config `name` (a bare name from `names()`).

    Raises:
      KeyError: `name` is not a shipped config.
    """
    if name not in names():
        raise KeyError(name)
    return directory().joinpath(name)


def summary(name: str) -> str:
    """The first comment line of the shipped config `name`, without its `#` or `//`."""
    for line in file(name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.startswith("//"):
            return line[2:].strip()
    return ""
