"""The six methods of Table I, each declared once: how it acquires and how it augments.

The loop, config validation and defaults, the `--method` help and the README's methods table
(checked by a test) are all read from `METHODS`.
"""

from __future__ import annotations

import dataclasses

SCORED = "scored"  # MC-dropout acquisition score (`--acquisition`: bald, max_entropy, ...)
RANDOM = "random"  # uniformly random acquisition, no model involved


@dataclasses.dataclass(frozen=True)
class Method:
    """One column of Table I.

    Attributes:
      name: the `--method` value.
      column: the Table I column it reproduces.
      acquisition: SCORED or RANDOM.
      augmentation: "none", "pmda", "vaeacgan" (x' = g(e(x*), y*)) or "acgan" (x' = g(z, y*)).
      generation: default `--generation` of a generative method ("persisted": x' stored once
        per acquired x*; "online": fresh generated samples in every minibatch), else None.
      gan_optimizer, gan_learning_rate, gan_beta_1: default optimizer of the generative
        networks (generative methods only).
      pool_steps: default encoder/decoder steps per iteration on unlabeled pool images
        (`--gan_pool_steps`; ours, beyond the paper; methods with an encoder only); with
        `carry_over`, the steps of iterations whose e and g were carried over.
      pool_steps_fresh: the pool steps of iterations whose e and g start fresh (the first, or
        every one without carry-over; `--gan_pool_steps_fresh`; 0: `pool_steps`).
      carry_over: whether e, g and d carry over between iterations (`--gan_carry_over`).
      update_every: e, g and d step on every update_every-th joint step (`--gan_update_every`).
      source: where the defaults come from.
    """

    name: str
    column: str
    acquisition: str
    augmentation: str
    generation: str | None = None
    gan_optimizer: str | None = None
    gan_learning_rate: float | None = None
    gan_beta_1: float | None = None
    pool_steps: int = 0
    pool_steps_fresh: int = 0
    carry_over: bool = False
    update_every: int = 1
    source: str = ""

    @property
    def generative(self) -> bool:
        return self.augmentation in ("vaeacgan", "acgan")

    @property
    def uses_encoder(self) -> bool:
        return self.augmentation == "vaeacgan"

    def describe(self) -> str:
        acquires = "BALD-style score" if self.acquisition == SCORED else "random"
        augments = {"none": "no augmentation", "pmda": "shifts (+ flips for CIFAR)",
                    "vaeacgan": "x' = g(e(x*), y*)", "acgan": "x' = g(z, y*)"}[self.augmentation]
        return f"{self.name}: {acquires} acquisition + {augments}"


_BDA = dict(augmentation="acgan", generation="online", gan_optimizer="adam",
            gan_learning_rate=2e-4, gan_beta_1=0.5,
            source="BDA (pytorch-bda): fresh g(z, y) every minibatch, Adam(2e-4, beta_1=0.5) "
                   "for G and D")
# vaeacgan's generator schedule (ours; bench/generator_quality.py measured it).
_VAEACGAN_SCHEDULE = dict(pool_steps=50, pool_steps_fresh=300, carry_over=True, update_every=8)
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("vaeacgan", "AL w. VAEACGAN", SCORED, "vaeacgan", generation="persisted",
           gan_optimizer="adadelta", gan_learning_rate=1.0, gan_beta_1=0.9,
           **_VAEACGAN_SCHEDULE,
           source="the paper: x' stored once per acquired x*; the authors' code: Adadelta for "
                  "E, G, D; ours: e, g, d carried over between iterations, "
                  f"{_VAEACGAN_SCHEDULE['pool_steps_fresh']} encoder/decoder steps on the pool "
                  f"once, {_VAEACGAN_SCHEDULE['pool_steps']} in every later iteration, e, g and "
                  f"d stepping on every {_VAEACGAN_SCHEDULE['update_every']}th joint step"),
    Method("acgan", "AL w. ACGAN", SCORED, **_BDA),
    Method("pmda", "AL w. PMDA", SCORED, "pmda", source="classic augmentation"),
    Method("bald", "AL without DA", SCORED, "none", source="Gal et al. 2017"),
    Method("bda_partial", "BDA (partial training)", RANDOM, **_BDA),
    Method("random", "Random selection", RANDOM, "none", source="no active learning"),
)}


def get(name: str) -> Method:
    """The method called `name`; ValueError naming the allowed ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"--method={name!r} is not supported; choose one of "
                         f"{', '.join(METHODS)}")
    return METHODS[name]


def inapplicable_flags(method: Method) -> tuple[str, ...]:
    """Train flags that mean nothing for `method` (config validation refuses them when set): a
    study leaves them out of that method's cells, so one study command can set them for the
    methods they apply to."""
    names = []
    if method.acquisition == RANDOM:
        names += ["acquisition", "batchbald_samples", "acquisition_temperature"]
    if not method.generative:
        names.append("generation")
    if method.generation != "persisted":  # online generation trains C on g's samples each step
        names.append("gan_update_every")
    if not method.uses_encoder:
        names += ["gan_pool_steps", "gan_pool_steps_fresh"]
    return tuple(names)


def flag_help() -> str:
    return "; ".join(m.describe() for m in METHODS.values()) + "."


def markdown_table() -> str:
    """The README's methods table."""
    rows = ["| `--method` | acquisition | augmentation | default generation | Table I column |",
            "|---|---|---|---|---|"]
    augment = {"none": "none", "pmda": "random shifts (10 %), plus horizontal flips for CIFAR",
               "vaeacgan": "x' = g(e(x*), y*) of the jointly trained VAE-ACGAN",
               "acgan": "x' = g(z, y*), random z, ACGAN without encoder (BDA's)"}
    for m in METHODS.values():
        acquisition = "MC-dropout score (`--acquisition`)" if m.acquisition == SCORED else "random"
        generation = (f"`{m.generation}`, {m.gan_optimizer} lr {m.gan_learning_rate:g}"
                      + (f" beta_1 {m.gan_beta_1:g}" if m.gan_optimizer == "adam" else "")
                      + (f", carried over, {m.pool_steps_fresh} then {m.pool_steps} pool "
                         f"steps, e/g/d on every {m.update_every}th step" if m.carry_over
                         else f", {m.pool_steps} pool steps" if m.pool_steps else "")
                      if m.generative else "-")
        rows.append(f"| `{m.name}` | {acquisition} | {augment[m.augmentation]} | {generation} | "
                    f"{m.column} |")
    return "\n".join(rows)
