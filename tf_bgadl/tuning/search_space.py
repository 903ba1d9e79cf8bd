"""The search space: which train flags Keras Tuner draws for a trial, and from which values.

Every hyperparameter is named after the train flag it sets (`--search=gen_loss_weight,model`),
so a trial's values map one to one onto the train config (`SearchSpace.apply`) and best.flags
writes them back as those train flags. Its values come from `--<name>_range=MIN,MAX` (numbers;
`gen_loss_weight`, lambda, on a log scale) or `--<name>_choices=A,B,...`.

Everything here is checked before any training (`parse`, `check_configs`); nothing here imports
TensorFlow or Keras Tuner (`declare` receives Keras Tuner's `HyperParameters`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from tf_bgadl import config as config_lib
from tf_bgadl import methods as methods_lib

LOG_RANGE, RANGE, CHOICE = "log_range", "range", "choice"


class SearchSpaceError(ValueError):
    """A search-space flag is invalid; the message names the bad value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A hyperparameter that can be searched.

    Attributes:
      name: the train flag it sets; also its Keras Tuner name.
      kind: LOG_RANGE, RANGE (floats between MIN and MAX) or CHOICE.
      field: (config section, field) it sets in `ExperimentConfig`.
      default: the default text of its `--<name>_range` / `--<name>_choices` flag.
      value_type: float or str.
      allowed: for string choices, the values the train flag accepts.
      generative_only: means something only for the methods with a generator.
      help: what it is.
    """

    name: str
    kind: str
    field: tuple[str, str]
    default: str
    value_type: type = float
    allowed: tuple[str, ...] = ()
    generative_only: bool = False
    help: str = ""

    @property
    def flag(self) -> str:
        """The flag that holds its values: `<name>_choices` or `<name>_range`."""
        return f"{self.name}_{'choices' if self.kind == CHOICE else 'range'}"


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("gen_loss_weight", LOG_RANGE, ("generator", "gen_loss_weight"), "0.01,10",
         generative_only=True, help="lambda, weight of the classifier's loss on generated "
         "samples; log-uniform in [MIN, MAX], MIN > 0"),
    Spec("model", CHOICE, ("model", "name"), ",".join(("cnn", "resnet18", "resnet18pa")),
         value_type=str, allowed=config_lib.MODELS, help="classifier"),
    Spec("width_multiplier", CHOICE, ("model", "width_multiplier"), "0.25,0.5,1",
         help="the classifier's width multiplier"),
    Spec("dropout_rate", RANGE, ("model", "dropout_rate"), "0.1,0.6",
         help="MC-dropout rate; uniform in [MIN, MAX]"),
    Spec("gan_width_multiplier", CHOICE, ("generator", "width_multiplier"), "0.25,0.5,1",
         generative_only=True, help="width multiplier of the encoder, generator and "
         "discriminator"),
)}


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One searched hyperparameter: (MIN, MAX) for a range, the choices for a choice."""

    name: str
    kind: str
    values: tuple

    @property
    def spec(self) -> Spec:
        return SPECS[self.name]

    def declare(self, hp):
        """Registers it in Keras Tuner's `HyperParameters` `hp`; returns the trial's value."""
        if self.kind == CHOICE:
            return hp.Choice(self.name, list(self.values))
        low, high = self.values
        return hp.Float(self.name, low, high, sampling="log" if self.kind == LOG_RANGE
                        else "linear")

    def extremes(self) -> tuple:
        """The values that bound what a trial can draw (each choice; both ends of a range)."""
        return self.values

    def describe(self) -> str:
        if self.kind == CHOICE:
            return f"one of {', '.join(map(_text, self.values))}"
        scale = "log-uniform" if self.kind == LOG_RANGE else "uniform"
        return f"{scale} in [{_text(self.values[0])}, {_text(self.values[1])}]"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "values": list(self.values)}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The searched hyperparameters, in the order of `--search`."""

    hyperparameters: tuple[Hyperparameter, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyperparameters)

    def declare(self, hp) -> dict[str, Any]:
        """Registers every hyperparameter in `hp`; returns {name: the trial's value}."""
        return {h.name: h.declare(hp) for h in self.hyperparameters}

    def apply(self, config: config_lib.ExperimentConfig,
              values: Mapping[str, Any]) -> config_lib.ExperimentConfig:
        """`config` with each searched train flag set to its value in `values`.

        Keras Tuner's own entries (`tuner/epochs`, ... of Hyperband) are not hyperparameters of
        the run and are ignored here.

        Raises:
          SearchSpaceError: a searched hyperparameter has no value, or a value is not one.
        """
        values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        missing = [n for n in self.names if n not in values]
        unknown = sorted(set(values) - set(self.names))
        if missing or unknown:
            raise SearchSpaceError(f"trial values {values} do not match the search space "
                                   f"{list(self.names)} (missing {missing}, unknown {unknown})")
        for name in self.names:
            config = set_value(config, name, values[name])
        return config

    def to_dict(self) -> dict:
        return {"hyperparameters": [h.to_dict() for h in self.hyperparameters]}


def set_value(config: config_lib.ExperimentConfig, name: str,
              value: Any) -> config_lib.ExperimentConfig:
    """`config` with the train flag `name` (a key of SPECS) set to `value`."""
    spec = SPECS[name]
    section, field = spec.field
    value = spec.value_type(value)
    return dataclasses.replace(config, **{section: dataclasses.replace(
        getattr(config, section), **{field: value})})


def get_value(config: config_lib.ExperimentConfig, name: str) -> Any:
    """The value of the train flag `name` (a key of SPECS) in `config`."""
    section, field = SPECS[name].field
    return getattr(getattr(config, section), field)


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def applicable(method: str) -> list[str]:
    """The hyperparameters that mean something for `method` (the default `--search`)."""
    generative = methods_lib.get(method).generative
    return [n for n, s in SPECS.items() if generative or not s.generative_only]


def _parse_values(spec: Spec, text: str) -> tuple:
    """The values of `--<spec.flag>=text` (raises SearchSpaceError naming them)."""
    flag = f"--{spec.flag}={text}"
    items = [t.strip() for t in text.split(",")] if text.strip() else []
    if spec.kind == CHOICE:
        if not items or any(not t for t in items):
            allowed = ", ".join(spec.allowed) if spec.allowed else "numbers > 0"
            raise SearchSpaceError(f"{flag}: an empty choice; give a comma-separated list of "
                                   f"at least one value ({allowed}), e.g. --{spec.flag}="
                                   f"{spec.default}")
        if spec.value_type is str:
            bad = [t for t in items if t not in spec.allowed]
            if bad:
                raise SearchSpaceError(f"{flag}: {', '.join(map(repr, bad))} is not a "
                                       f"{spec.name}; choose from {', '.join(spec.allowed)}")
            values = tuple(items)
        else:
            values = tuple(_number(spec, flag, t) for t in items)
        repeated = sorted({_text(v) for v in values if values.count(v) > 1})
        if repeated:
            raise SearchSpaceError(f"{flag}: {', '.join(repeated)} is given twice; give each "
                                   "choice once")
        return values
    if len(items) != 2:
        raise SearchSpaceError(f"{flag}: give a range as MIN,MAX (two numbers), e.g. "
                               f"--{spec.flag}={spec.default}")
    low, high = (_number(spec, flag, t) for t in items)
    if low > high:
        raise SearchSpaceError(f"{flag}: MIN {low:g} > MAX {high:g}; give MIN,MAX with MIN < MAX")
    if low == high:
        raise SearchSpaceError(f"{flag}: MIN = MAX = {low:g} is a fixed value, not a range; set "
                               f"--{spec.name}={low:g} and leave {spec.name} out of --search")
    if spec.kind == LOG_RANGE and low <= 0:
        raise SearchSpaceError(f"{flag}: {spec.name} is searched on a log scale, so MIN must be "
                               f"> 0 (got {low:g}), e.g. --{spec.flag}={spec.default}")
    return low, high


def _number(spec: Spec, flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SearchSpaceError(f"{flag}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SearchSpaceError(f"{flag}: {text!r} is not a finite number")
    return value


def parse(search: Sequence[str] | None, given: Mapping[str, str], method: str) -> SearchSpace:
    """The search space of `--search` and the `--<name>_range` / `--<name>_choices` flags.

    Args:
      search: the names of `--search`; None: every hyperparameter that applies to `method`.
      given: {flag name: text} of the range/choice flags that were set (the others take their
        defaults, `Spec.default`).
      method: the train `--method` (lambda and the generator's width need a generator).

    Raises:
      SearchSpaceError: naming the bad value and what is allowed.
    """
    known = ", ".join(SPECS)
    if search is None:
        names = applicable(method)
    else:
        names = [n.strip() for n in search]
        if not names or any(not n for n in names):
            raise SearchSpaceError(f"--search={','.join(search)}: an empty name; give "
                                   f"hyperparameters from {known}")
        unknown = [n for n in names if n not in SPECS]
        if unknown:
            raise SearchSpaceError(
                f"--search={','.join(search)}: {', '.join(map(repr, unknown))} is not a "
                f"hyperparameter that can be searched; choose from {known} (each is the train "
                "flag it sets)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SearchSpaceError(f"--search={','.join(search)} repeats {', '.join(repeated)}")
        inapplicable = [n for n in names if n not in applicable(method)]
        if inapplicable:
            raise SearchSpaceError(
                f"--search={','.join(search)}: {', '.join(inapplicable)} means nothing for "
                f"--method={method}, which has no generator; search "
                f"{', '.join(applicable(method))}, or a generative method")
    flags = {SPECS[n].flag: n for n in SPECS}
    unknown_flags = sorted(set(given) - set(flags))
    if unknown_flags:
        raise SearchSpaceError(f"unknown search-space flags {unknown_flags}; known: "
                               f"{sorted(flags)}")
    unused = [f for f in sorted(given) if flags[f] not in names]
    if unused:
        raise SearchSpaceError(
            f"{', '.join('--' + f for f in unused)} is set but "
            f"{', '.join(flags[f] for f in unused)} is not searched (--search is "
            f"{','.join(names)}); add it to --search or drop the flag")
    return SearchSpace(tuple(
        Hyperparameter(n, SPECS[n].kind, _parse_values(SPECS[n], given.get(SPECS[n].flag,
                                                                              SPECS[n].default)))
        for n in names))


def check_configs(space: SearchSpace,
                  base: config_lib.ExperimentConfig) -> config_lib.ExperimentConfig:
    """Validates the base config and every config a trial can draw, before any training.

    Each hyperparameter is checked at each of its extremes (`Hyperparameter.extremes`) with the
    others at the base config's values: the config checks are per value (and ranges are
    convex), so a trial cannot draw an invalid config when these pass.

    Returns:
      The resolved base config (`config.validate`).

    Raises:
      SearchSpaceError: naming the search-space flag and the value the train config refuses.
    """
    resolved = config_lib.validate(base)  # ConfigError (a ValueError) names the train flag
    for h in space.hyperparameters:
        for value in h.extremes():
            try:
                config_lib.validate(set_value(base, h.name, value))
            except config_lib.ConfigError as e:
                raise SearchSpaceError(
                    f"--{h.spec.flag}: a trial with {h.name}={_text(value)} would be refused: "
                    f"{e}") from None
    return resolved
