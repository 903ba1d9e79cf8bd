"""What every entry point (`python -m tf_bgadl.<command>`) does before its `main`.

Entry modules call `cli.run(main)` instead of `absl.app.run(main)`. Nothing here runs at import.

Flagfiles are found from any directory. `--flagfile=NAME` (also nested in a flagfile) is
  1. the file NAME relative to the current directory (or an absolute path), if it exists;
  2. otherwise, for a bare NAME (no directory part; a leading `configs/` is dropped, the path
     used before the configs moved into the package), the config of that name shipped with
     tf_bgadl (`python -m tf_bgadl.configs` lists them);
  3. otherwise an error that lists the shipped configs.
`run` expands every flagfile into the argument list itself (absl's syntax: one flag per line,
blank lines and lines starting with `#` or `//` skipped, in place, so later flags win) and hands
absl an argument list without flagfiles.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
from typing import Callable, Sequence

from absl import app

from tf_bgadl import configs

_TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"
_DIRECTIVES = ("--flagfile=", "-flagfile=")
_LEGACY_DIR = "configs"  # where the configs lived before they moved into the package


class FlagfileError(Exception):
    """A `--flagfile` cannot be found or read; the message lists the shipped configs."""


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


def _shipped_list() -> str:
    return (f"the configs shipped with tf_bgadl are {', '.join(configs.names())} "
            f"(`python -m tf_bgadl.configs` describes them)")


def _is_shipped(source) -> bool:
    """Whether `source` (from `resolve_flagfile`) is one of the shipped configs."""
    return str(source) in {str(configs.file(n)) for n in configs.names()}


def resolve_flagfile(name: str, included_from=None):
    """Finds the flagfile `name`: an existing path first, then a shipped config by bare name.

    A flagfile named inside another is looked up next to that one first: a shipped config's
    includes are the shipped configs (a `base.flags` in the current directory does not replace
    the one `mnist.flags` builds on), a local file's includes are first looked up in its folder.

    Args:
      name: what followed `--flagfile=`; `~` is expanded.
      included_from: the flagfile (as this function returned it) whose line named it, or None.

    Returns:
      A `pathlib.Path` or, for a shipped config, an `importlib.resources` Traversable; both
      have `read_text`.

    Raises:
      FlagfileError: neither exists; the message lists the shipped configs.
    """
    path = os.path.expanduser(name)
    bare = os.path.normpath(path)
    if os.path.dirname(bare) == _LEGACY_DIR:
        bare = os.path.basename(bare)
    shipped = not os.path.dirname(bare) and bare in configs.names()
    if included_from is not None and not os.path.isabs(path):
        if _is_shipped(included_from):
            if shipped:
                return configs.file(bare)
        elif isinstance(included_from, pathlib.Path):
            beside = included_from.parent / path
            if beside.is_file():
                return beside.resolve()
    if os.path.isfile(path):
        return pathlib.Path(path).resolve()
    if shipped:
        return configs.file(bare)
    where = f" (included from {included_from})" if included_from is not None else ""
    why = ("not a shipped config" if not os.path.dirname(bare) else
           "has a directory part, so it is not looked up among the shipped configs")
    raise FlagfileError(f"flagfile {name!r}{where} is not a file relative to {os.getcwd()} "
                        f"and {why}; {_shipped_list()}")


def _directive(arg: str) -> str | None:
    """The file name of a `--flagfile=NAME` / `-flagfile=NAME` argument, else None."""
    for prefix in _DIRECTIVES:
        if arg.startswith(prefix):
            return arg[len(prefix):].strip()
    return None


def _flagfile_lines(name: str, stack: tuple[str, ...], parent=None) -> list[str]:
    """The flags of flagfile `name` (named in flagfile `parent`), nested ones expanded."""
    if not name:  # absl ignores an empty --flagfile=
        return []
    source = resolve_flagfile(name, included_from=parent)
    key = str(source)
    if key in stack:
        raise FlagfileError(f"flagfiles include each other: {' -> '.join((*stack, key))}")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FlagfileError(f"cannot read flagfile {key}: {e}") from e
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if line in ("--flagfile", "-flagfile"):
            raise FlagfileError(f"{key}: write --flagfile=NAME on one line")
        nested = _directive(line)
        if nested is None:
            lines.append(line)
        else:
            lines.extend(_flagfile_lines(nested, (*stack, key), source))
    return lines


def expand_flagfiles(args: Sequence[str]) -> list[str]:
    """Replaces every flagfile in `args` by its flags, recursively, where it stands.

    Args:
      args: command-line arguments without the program name. `--flagfile=NAME`,
        `-flagfile=NAME`, `--flagfile NAME` and `-flagfile NAME` are expanded; arguments after
        `--` are kept as they are (as absl does).

    Returns:
      The arguments with no flagfile left; flags keep their order, so a flag after a flagfile
      overrides the flagfile's value.

    Raises:
      FlagfileError: a flagfile is missing, unreadable or includes itself.
    """
    expanded: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("--flagfile", "-flagfile"):
            if not rest:
                raise FlagfileError(f"{arg} needs a file name; {_shipped_list()}")
            expanded.extend(_flagfile_lines(rest.pop(0), ()))
        elif (name := _directive(arg)) is not None:
            expanded.extend(_flagfile_lines(name, ()))
        else:
            expanded.append(arg)
            if arg == "--":
                expanded.extend(rest)
                break
    return expanded


def run(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Expands flagfiles, then parses flags and runs `main` with absl (`absl.app.run`).

    A flagfile that cannot be found ends the program with one line on stderr (status 1).
    """
    argv = list(sys.argv if argv is None else argv)
    try:
        args = expand_flagfiles(argv[1:])
    except FlagfileError as e:
        sys.exit(f"error: {e}")
    app.run(main, argv=[argv[0], *args])
