"""best.flags: every train flag of the best trial, runnable as `python -m tf_bgadl.train`.

It holds the train flags given to the search (its command line and flagfiles), the best
trial's searched values, and every other train flag at its value (the defaults written out, so
that the file means the same run when a default changes), then a `--workdir` that a later
`--workdir=...` overrides. No tune-only flag is in it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tf_bgadl.state import atomic_write_text


def flag_line(name: str, value: Any) -> str:
    """`--name=value`, floats written exactly (repr round-trips, as absl parses them)."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, float):
        return f"--{name}={value!r}"
    return f"--{name}={value}"


def render(*, given: Sequence[str], searched: Mapping[str, Any], defaults: Sequence[str],
           workdir: str, header: Sequence[str]) -> str:
    """The text of best.flags.

    Args:
      given: serialized train flags the search was given (`--name=value`), searched ones
        excluded.
      searched: the best trial's values {train flag: value}.
      defaults: serialized train flags at their defaults, searched ones excluded.
      workdir: the train workdir written last (a later `--workdir=...` overrides it).
      header: comment lines (without '#') that say where the file comes from.
    """
    lines = [f"# {line}" if line else "#" for line in header]
    lines += ["", "# Train flags given to the search (its command line and flagfiles):", *given,
              "", "# The best trial's searched hyperparameters:",
              *[flag_line(n, v) for n, v in searched.items()],
              "", "# Every other train flag, at its default:", *defaults,
              "", "# Where train writes the run (a later --workdir=... overrides it):",
              f"--workdir={workdir}"]
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    atomic_write_text(path, text)
