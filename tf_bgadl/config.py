"""Frozen configuration dataclasses and their validation.

Library code takes these objects (or plain keyword arguments); only the entry-point modules
(`tf_bgadl.train`, ...) define and read flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from tf_bgadl import methods as methods_lib

DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped", "mnist5k",
            "mnist5k_repeated", "digits", "folder")
# Who labels what the loop acquires: the data set's own label (replaying a labeled data set, as
# in the paper) or a person, through a CSV file per iteration (tf_bgadl/oracle.py).
ORACLES = ("simulated", "file")
MODELS = ("resnet18", "resnet18pa", "cnn")
METHODS = tuple(methods_lib.METHODS)
GENERATIONS = ("persisted", "online")
# MC-dropout scores of the scored methods (random acquisition is a method: random, bda_partial):
# top-K of a per-image score, or a batch-aware selection (docs/acquisition.md): BatchBALD, and
# stochastic batch acquisition of the BALD scores.
ACQUISITIONS = ("bald", "max_entropy", "var_ratios", "mean_std", "batchbald", "power_bald",
                "softmax_bald", "softrank_bald")
STOCHASTIC_ACQUISITIONS = ("power_bald", "softmax_bald", "softrank_bald")
ACQUISITION_DEFAULT = -1  # --batchbald_samples / --acquisition_temperature: the default
DEFAULT_BATCHBALD_SAMPLES = 10_000
DEFAULT_ACQUISITION_TEMPERATURE = 1.0  # beta = 1, Kirsch et al. 2023's default
METHOD_DEFAULT = ""  # a config value meaning "the method's default" (see `resolve`)
STRATEGIES = ("default", "mirrored", "one_device", "multi_worker")
OPTIMIZERS = ("adadelta", "adam", "sgd")
# The usual initial learning rate of each optimizer (used for the generative networks when a
# method's own optimizer is replaced by --gan_optimizer without --gan_learning_rate).
OPTIMIZER_LEARNING_RATES = {"adadelta": 1.0, "adam": 1e-3, "sgd": 0.01}


# Config keys that may differ when a run is resumed (they do not change what was computed):
# a run can be extended with more iterations or continued under another strategy object, and a
# run stopped by a stopping rule continues when the rule is relaxed (tf_bgadl/stopping.py).
STOPPING_KEYS = ("acquisition.max_labels", "acquisition.target_accuracy",
                 "acquisition.patience", "acquisition.min_delta")
RESUMABLE_KEYS = ("iterations", "strategy", *STOPPING_KEYS)


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any], *,
                       ignore: tuple[str, ...] = RESUMABLE_KEYS,
                       prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, stored value, current value) for every key where two config dicts differ,
    except the dotted keys in `ignore`.

    A key of `BACKFILLED_KEYS` missing from an `ExperimentConfig` dict (a config.json written
    before that field existed) is read as the current code reads it: the field's default,
    resolved for the run's method (`with_current_defaults`); such workdirs stay resumable.
    Any other missing key is a difference.
    """
    if not prefix:
        stored, current = with_current_defaults(stored), with_current_defaults(current)
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, ignore=ignore, prefix=f"{prefix}{key}.")
        elif a != b and f"{prefix}{key}" not in ignore:
            out.append((f"{prefix}{key}", a, b))
    return out


# Fields added after runs were recorded without them, whose default reproduces what those runs
# did: a config.json that lacks one reads as that default (resolved for the run's method).
# Add a key here only when that holds; any other missing key stays a difference.
BACKFILLED_KEYS = ("acquisition.batchbald_samples", "acquisition.temperature",
                   "data.image_size", "data.oracle", *STOPPING_KEYS)
# Fields added after runs were recorded without them whose resolved default is not what those
# runs did: a config.json that lacks one reads as the value they ran with.
LEGACY_VALUES = {"generator.update_every": 1}


def with_current_defaults(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored `ExperimentConfig` dict with its missing `LEGACY_VALUES` keys filled with the
    value those runs had, and its missing `BACKFILLED_KEYS` as the current code fills them
    (default, then `validate`'s resolution for the method); every other key as stored. A dict
    that is not a valid config is returned as is."""
    sections = {key: key.split(".") for key in (*BACKFILLED_KEYS, *LEGACY_VALUES)}
    missing = [key for key, (section, name) in sections.items()
               if isinstance(stored.get(section), Mapping) and name not in stored[section]]
    if not missing:
        return dict(stored)
    out = {key: dict(value) if isinstance(value, Mapping) else value
           for key, value in stored.items()}
    for key in [k for k in missing if k in LEGACY_VALUES]:
        section, name = sections[key]
        out[section][name] = LEGACY_VALUES[key]
    backfilled = [k for k in missing if k not in LEGACY_VALUES]
    if not backfilled:
        return out
    try:
        filled = validate(ExperimentConfig.from_dict(out)).to_dict()
    except (ConfigError, TypeError, ValueError, KeyError):
        return dict(stored)
    for key in backfilled:
        section, name = sections[key]
        out[section][name] = filled[section][name]
    return out


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives, and how the initial labeled set is drawn."""

    dataset: str = "mnist5k"
    # tfds data dir (empty: tfds' default, ~/tensorflow_datasets or $TFDS_DATA_DIR); for
    # dataset="folder" the image folder's root (<root>/train/<class>/..., docs/own_images.md).
    data_dir: str = ""
    manual_dir: str = ""  # folder of IDX files for the MNIST family, prepared offline
    # Labeled examples per class to start. A data set with unlabeled images (a folder's
    # unlabeled/) starts instead from every image whose label is known (minus validation).
    initial_per_class: int = 10
    # Class-balanced validation examples per class, held out of the pool and never acquired.
    validation_per_class: int = 0
    image_size: int = 0  # dataset="folder": images resized to this square size (0: the first's)
    oracle: str = "simulated"  # ORACLES


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The classifier: architecture, width and MC-dropout rate."""

    name: str = "cnn"
    width_multiplier: float = 1.0
    dropout_rate: float = 0.5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the classifier is trained at every acquisition iteration."""

    epochs: int = 50
    batch_size: int = 100
    optimizer: str = "adadelta"
    learning_rate: float = 1.0
    # Classifier weight decay = weight_decay_numerator / num_labeled (3.5 / N in the reference code).
    weight_decay_numerator: float = 3.5
    lr_halving_epochs: int = 5  # learning rate halved every this many epochs; 0 disables


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """The VAE-ACGAN / ACGAN trained jointly with the classifier (generative methods only)."""

    latent_dim: int = 100
    width_multiplier: float = 1.0  # scales e, g, d widths (1.0 = the reference architecture)
    # "persisted": x' stored once per acquired x* (paper) | "online": every minibatch (BDA,
    # the authors' code); "" = the method's default (methods.py).
    generation: str = METHOD_DEFAULT
    gen_loss_weight: float = 1.0  # lambda: weight of the classifier's loss on generated samples
    optimizer: str = METHOD_DEFAULT  # of e, g and d; "" = the method's default
    learning_rate: float = 0.0  # 0 = the method's default
    beta_1: float = -1.0  # Adam's beta_1 for e, g and d; -1 = the method's default
    lr_halving_epochs: int = 8
    # Ours, beyond the paper (defaults measured by bench/generator_quality.py, see README):
    # beta, the weight of the KL term (KL / pixels times beta); e, g, d carried over between
    # iterations while the classifier restarts (measured worse: off); encoder/decoder steps per
    # iteration on the unlabeled pool (conditioned on the classifier's predicted class; no
    # oracle label is used). The paper's generator: kl_weight=1, pool_steps=0 (base.flags).
    kl_weight: float = 0.01
    # None / -1 / 0 below: the method's default (methods.py; vaeacgan: carried over, 300 pool
    # steps on fresh e and g, then 50 per iteration, e, g, d on every 8th joint step).
    carry_over: bool | None = None
    pool_steps: int = -1
    # Pool steps when e and g start fresh (0: pool_steps; -1: the method's when pool_steps is
    # the method's too, else pool_steps).
    pool_steps_fresh: int = -1
    # e, g and d step on every update_every-th joint step (1: every step, the authors' code;
    # ours, for a cheaper joint phase; persisted generation only).
    update_every: int = 0


@dataclasses.dataclass(frozen=True)
class AcquisitionConfig:
    """How pool samples are scored and acquired."""

    method: str = "vaeacgan"
    acquisition: str = METHOD_DEFAULT  # "" = bald for the scored methods, none for random ones
    acquire_per_iteration: int = 100
    pool_subset: int = 2000
    mc_samples: int = 20
    score_batch_size: int = 500
    # batchbald: joint class configurations, enumerated while C^n <= this, sampled beyond;
    # -1 = 10,000; 0 for every other acquisition (resolved).
    batchbald_samples: int = ACQUISITION_DEFAULT
    # power/softmax/softrank_bald: temperature = 1 / beta of the sampling distribution; -1 =
    # 1.0; 0 for the deterministic acquisitions (their zero-temperature limit, resolved).
    temperature: float = float(ACQUISITION_DEFAULT)
    # Stopping rules (0: off; tf_bgadl/stopping.py). A run stops after the iteration where one
    # holds; rerun with a relaxed rule, it continues. --iterations stays the upper bound.
    max_labels: int = 0  # stop at this many oracle labels (the last batch is cut to fit)
    target_accuracy: float = 0.0  # stop when validation accuracy reaches this (needs validation)
    patience: int = 0  # stop when validation accuracy has not improved by min_delta for this
    min_delta: float = 0.0  # many iterations (needs validation)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines an active-learning run."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    acquisition: AcquisitionConfig = AcquisitionConfig()
    generator: GeneratorConfig = GeneratorConfig()
    iterations: int = 150
    warm_start: bool = False  # start each iteration from the previous weights, not fresh ones
    seed: int = 0
    strategy: str = "default"
    deterministic: bool = True  # TF op determinism (same seed, same acquisitions)
    # Replicas the run trains on, recorded at run time (0: not yet known). BatchNorm statistics
    # are synchronised over them, so a resume with another count computes something else.
    num_replicas: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ExperimentConfig":
        """Inverse of `to_dict`; unknown keys are an error so that typos are not ignored."""
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        nested = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                  "acquisition": AcquisitionConfig, "generator": GeneratorConfig}
        for key, value in values.items():
            if key not in sections:
                raise ConfigError(f"unknown config key {key!r}; known keys: {sorted(sections)}")
            if key in nested:
                known = {f.name for f in dataclasses.fields(nested[key])}
                unknown = set(value) - known
                if unknown:
                    raise ConfigError(f"unknown keys {sorted(unknown)} in config section {key!r}; "
                                      f"known keys: {sorted(known)}")
                kwargs[key] = nested[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name}={value!r} is not supported; choose one of {', '.join(allowed)}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"--{name}={value!r} must be positive")


def resolve(config: ExperimentConfig) -> ExperimentConfig:
    """Replaces "the method's default" values by the method's (methods.py) and refuses
    settings that mean nothing for the method (e.g. an acquisition function for a method that
    acquires at random, a generation mode for a method without a generator).

    Raises:
      ConfigError: naming the value and why it does not apply.
    """
    _check_choice("method", config.acquisition.method, METHODS)
    method = methods_lib.get(config.acquisition.method)
    acq, gen = config.acquisition, config.generator
    if method.acquisition == methods_lib.RANDOM:
        if acq.acquisition not in (METHOD_DEFAULT, "none"):
            raise ConfigError(
                f"--acquisition={acq.acquisition!r} does not apply to --method={method.name}, "
                "which acquires at random; leave --acquisition unset or pick a scored method "
                f"({', '.join(m for m in METHODS if methods_lib.METHODS[m].acquisition == 'scored')})")
        acquisition = "none"
    else:
        acquisition = acq.acquisition or "bald"
        _check_choice("acquisition", acquisition, ACQUISITIONS)
    acq = _resolve_batch_settings(dataclasses.replace(acq, acquisition=acquisition), method.name)
    # An unset --gan_pool_steps_fresh is the method's only beside the method's --gan_pool_steps;
    # beside a --gan_pool_steps of the user's it is that (0).
    fresh = gen.pool_steps_fresh
    if fresh < 0:
        fresh = method.pool_steps_fresh if gen.pool_steps < 0 else 0
    gen = dataclasses.replace(
        gen, pool_steps=method.pool_steps if gen.pool_steps < 0 else gen.pool_steps,
        pool_steps_fresh=fresh,
        carry_over=method.carry_over if gen.carry_over is None else gen.carry_over)
    if method.generative:
        # The method's learning rate and beta_1 go with the method's optimizer; another
        # optimizer gets its own usual defaults.
        optimizer = gen.optimizer or method.gan_optimizer
        own = optimizer == method.gan_optimizer
        gen = dataclasses.replace(
            gen, generation=gen.generation or method.generation, optimizer=optimizer,
            learning_rate=gen.learning_rate or (
                method.gan_learning_rate if own else OPTIMIZER_LEARNING_RATES.get(optimizer, 0.0)),
            beta_1=gen.beta_1 if gen.beta_1 >= 0 else (method.gan_beta_1 if own else 0.9))
    elif gen.generation not in (METHOD_DEFAULT, "none"):
        raise ConfigError(f"--generation={gen.generation!r} does not apply to "
                          f"--method={method.name}, which generates no samples")
    else:
        gen = dataclasses.replace(gen, generation="none", optimizer=gen.optimizer or "none",
                                  learning_rate=gen.learning_rate or 0.0,
                                  beta_1=max(gen.beta_1, 0.0))
    # The method's --gan_update_every goes with its persisted x' (online generation trains C on
    # g's samples in every step).
    gen = dataclasses.replace(gen, update_every=gen.update_every or (
        method.update_every if gen.generation == method.generation == "persisted" else 1))
    return dataclasses.replace(config, acquisition=acq, generator=gen)


def _resolve_batch_settings(acq: AcquisitionConfig, method: str) -> AcquisitionConfig:
    """--batchbald_samples and --acquisition_temperature: defaults for the acquisition that uses
    each; refused (when set) for the others. The resolved values of the others (0 samples,
    temperature 0: a deterministic selection is the zero-temperature limit) are accepted again,
    so that a resolved config validates."""
    acquisition = acq.acquisition
    which = (f"--method={method}, which acquires at random" if acquisition == "none"
             else f"--acquisition={acquisition}")
    if acquisition not in ("none", *STOCHASTIC_ACQUISITIONS):
        which_temperature = f"{which}, which selects deterministically"
    else:
        which_temperature = which
    samples, temperature = acq.batchbald_samples, acq.temperature
    if acquisition == "batchbald":
        if samples == ACQUISITION_DEFAULT:
            samples = DEFAULT_BATCHBALD_SAMPLES
        elif samples < 1:
            raise ConfigError(f"--batchbald_samples={samples} must be >= 1 (the number of joint "
                              f"class configurations; -1: {DEFAULT_BATCHBALD_SAMPLES})")
    elif samples == ACQUISITION_DEFAULT:
        samples = 0
    elif samples != 0:
        raise ConfigError(f"--batchbald_samples={samples} applies to --acquisition=batchbald "
                          f"only; leave it unset for {which}")
    if acquisition in STOCHASTIC_ACQUISITIONS:
        if temperature == ACQUISITION_DEFAULT:
            temperature = DEFAULT_ACQUISITION_TEMPERATURE
        elif not 0 <= temperature < float("inf"):
            raise ConfigError(f"--acquisition_temperature={temperature} must be a finite number "
                              f">= 0 (0: exactly the top K; -1: {DEFAULT_ACQUISITION_TEMPERATURE})")
    elif temperature == ACQUISITION_DEFAULT:
        temperature = 0.0
    elif temperature != 0:
        raise ConfigError(
            f"--acquisition_temperature={temperature} applies to the stochastic acquisitions "
            f"({', '.join(STOCHASTIC_ACQUISITIONS)}) only; leave it unset for "
            f"{which_temperature}")
    return dataclasses.replace(acq, batchbald_samples=int(samples), temperature=float(temperature))


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Resolves the method's defaults (`resolve`) and checks every value that can be checked
    without loading data; returns the resolved config (what a run records and uses).

    Raises:
      ConfigError: naming the bad value and what is allowed.
    """
    config = resolve(config)
    method = methods_lib.get(config.acquisition.method)
    _check_choice("dataset", config.data.dataset, DATASETS)
    _check_choice("model", config.model.name, MODELS)
    _check_choice("strategy", config.strategy, STRATEGIES)
    _check_choice("oracle", config.data.oracle, ORACLES)
    _check_data_source(config.data)
    _check_stopping(config)
    if config.strategy == "multi_worker" and config.data.oracle == "file":
        raise ConfigError("--oracle=file waits for a person between iterations: run it on one "
                          "machine (--strategy=default or mirrored), not --strategy=multi_worker")
    _check_choice("optimizer", config.train.optimizer, OPTIMIZERS)
    if method.generative:
        _check_choice("gan_optimizer", config.generator.optimizer, OPTIMIZERS)
        _check_choice("generation", config.generator.generation, GENERATIONS)
        _check_positive("gan_learning_rate", config.generator.learning_rate)
        if not 0.0 <= config.generator.beta_1 < 1.0:
            raise ConfigError(f"--gan_beta_1={config.generator.beta_1} must be in [0, 1)")
    for name, value in [
        ("initial_per_class", config.data.initial_per_class),
        ("width_multiplier", config.model.width_multiplier),
        ("epochs", config.train.epochs),
        ("batch_size", config.train.batch_size),
        ("learning_rate", config.train.learning_rate),
        ("acquire_per_iteration", config.acquisition.acquire_per_iteration),
        ("pool_subset", config.acquisition.pool_subset),
        ("mc_samples", config.acquisition.mc_samples),
        ("score_batch_size", config.acquisition.score_batch_size),
        ("latent_dim", config.generator.latent_dim),
        ("gan_width_multiplier", config.generator.width_multiplier),
    ]:
        _check_positive(name, value)
    if config.data.validation_per_class < 0:
        raise ConfigError(f"--validation_per_class={config.data.validation_per_class} must be "
                          ">= 0 (0: no validation split)")
    if config.iterations < 0:
        raise ConfigError(f"--iterations={config.iterations} must be >= 0")
    if config.train.weight_decay_numerator < 0:
        raise ConfigError(f"--weight_decay_numerator={config.train.weight_decay_numerator} "
                          "must be >= 0")
    if config.generator.gen_loss_weight < 0:
        raise ConfigError(f"--gen_loss_weight={config.generator.gen_loss_weight} must be >= 0")
    if config.generator.kl_weight < 0:
        raise ConfigError(f"--kl_weight={config.generator.kl_weight} must be >= 0")
    for name, steps in (("gan_pool_steps", config.generator.pool_steps),
                        ("gan_pool_steps_fresh", config.generator.pool_steps_fresh)):
        if steps < 0:
            raise ConfigError(f"--{name}={steps} must be >= 0")
        if steps and not method.uses_encoder:
            raise ConfigError(f"--{name}={steps} trains the encoder and decoder on the pool: "
                              f"only --method=vaeacgan has an encoder (got --method="
                              f"{method.name})")
    if config.generator.update_every < 1:
        raise ConfigError(f"--gan_update_every={config.generator.update_every} must be >= 1 "
                          "(1: e, g and d step on every joint step)")
    if config.generator.update_every > 1 and not method.generative:
        raise ConfigError(f"--gan_update_every={config.generator.update_every} does not apply "
                          f"to --method={method.name}, which trains no generator")
    if config.generator.update_every > 1 and config.generator.generation != "persisted":
        raise ConfigError(f"--gan_update_every={config.generator.update_every} needs "
                          f"--generation=persisted: with --generation="
                          f"{config.generator.generation} the classifier trains on the "
                          "generator's samples in every step")
    if config.generator.lr_halving_epochs < 0:
        raise ConfigError(f"--gan_lr_halving_epochs={config.generator.lr_halving_epochs} "
                          "must be >= 0")
    if config.train.lr_halving_epochs < 0:
        raise ConfigError(f"--lr_halving_epochs={config.train.lr_halving_epochs} must be >= 0")
    if not 0.0 <= config.model.dropout_rate < 1.0:
        raise ConfigError(f"--dropout_rate={config.model.dropout_rate} must be in [0, 1)")
    if config.acquisition.acquire_per_iteration > config.acquisition.pool_subset:
        raise ConfigError(
            f"--acquire_per_iteration={config.acquisition.acquire_per_iteration} is larger than "
            f"--pool_subset={config.acquisition.pool_subset}: at most pool_subset samples can be "
            "acquired per iteration")
    if uses_mc_scores(config) and config.model.dropout_rate == 0.0:
        raise ConfigError("--dropout_rate=0 makes every MC pass identical (all scores 0); "
                          f"use a positive rate for --method={config.acquisition.method}")
    return config


def _check_data_source(data: DataConfig) -> None:
    if data.image_size < 0:
        raise ConfigError(f"--image_size={data.image_size} must be >= 0 (0: the size of the "
                          "first image)")
    if data.dataset == "folder":
        if not data.data_dir:
            raise ConfigError("--dataset=folder needs --data_dir=<root>, the folder that holds "
                              "train/<class>/, test/<class>/ and optionally unlabeled/")
        if data.manual_dir:
            raise ConfigError(f"--manual_dir={data.manual_dir!r} applies to the IDX data sets "
                              "(mnist, fashion_mnist), not to --dataset=folder")
    elif data.image_size:
        raise ConfigError(f"--image_size={data.image_size} applies to --dataset=folder only "
                          f"(got --dataset={data.dataset}, whose images have a fixed size)")


def _check_stopping(config: ExperimentConfig) -> None:
    acq = config.acquisition
    if acq.max_labels < 0:
        raise ConfigError(f"--max_labels={acq.max_labels} must be >= 0 (0: no limit)")
    if not 0.0 <= acq.target_accuracy <= 1.0:
        raise ConfigError(f"--target_accuracy={acq.target_accuracy} must be in [0, 1] "
                          "(a fraction, e.g. 0.9; 0: no target)")
    if acq.patience < 0:
        raise ConfigError(f"--patience={acq.patience} must be >= 0 (0: off)")
    if not 0.0 <= acq.min_delta < 1.0:
        raise ConfigError(f"--min_delta={acq.min_delta} must be in [0, 1) (an accuracy "
                          "difference, e.g. 0.005)")
    if acq.min_delta and not acq.patience:
        raise ConfigError(f"--min_delta={acq.min_delta} applies with --patience only (stop when "
                          "validation accuracy has not improved by min_delta for patience "
                          "iterations); set --patience")
    if config.data.validation_per_class == 0:
        for name, value in (("target_accuracy", acq.target_accuracy),
                            ("patience", acq.patience)):
            if value:
                raise ConfigError(
                    f"--{name}={value} reads the validation accuracy, and this run has no "
                    "validation split: set --validation_per_class (labeled examples per class "
                    "held out, never trained on), or use --max_labels")


def check_replayed_runs(config: ExperimentConfig, *, replays: str, distribute: str,
                        compared: str) -> None:
    """Refuses, for the commands that launch many independent runs of a labeled data set (a
    study's cells, a search's trials), what only a single `train` run supports: a person
    labeling, stopping rules and one run across machines.

    Args:
      config: the runs' base config.
      replays: what the command replays, e.g. "a study replays labeled data sets".
      distribute: how the command spreads over machines instead.
      compared: what its runs are compared over, e.g. "a study compares methods".

    Raises:
      ConfigError: naming the flag and what to use instead.
    """
    if config.data.oracle != "simulated":
        raise ConfigError(f"--oracle={config.data.oracle}: {replays} with the simulated oracle; "
                          "label your own images with python -m tf_bgadl.train --oracle=file "
                          "(docs/own_images.md)")
    if config.strategy == "multi_worker":
        raise ConfigError(f"--strategy=multi_worker runs one run on several machines; "
                          f"{distribute}")
    rules = {key.split(".")[1]: getattr(config.acquisition, key.split(".")[1])
             for key in STOPPING_KEYS}
    if any(rules.values()):
        raise ConfigError("stopping rules (" + ", ".join(
            f"--{k}={v}" for k, v in rules.items() if v) + f") do not apply here: {compared} "
            "over the same iterations (--iterations)")


def check_against_data(config: ExperimentConfig, *, num_train: int, num_classes: int,
                       min_class_count: int | None = None,
                       num_unlabeled: int = 0) -> None:
    """Checks the sizes that depend on the data set (raises `ConfigError`).

    Args:
      config: the run's config.
      num_train: training examples in the data set (labeled or not).
      num_classes: classes.
      min_class_count: labeled training examples of the smallest class, when known.
      num_unlabeled: training examples without a label (a folder's unlabeled/ images). When
        there are any, they are the pool and every labeled example starts labeled (minus
        validation); only `--oracle=file` can label them.
    """
    data = config.data
    validation = data.validation_per_class * num_classes
    if num_unlabeled:
        if data.oracle == "simulated":
            raise ConfigError(
                f"--dataset={data.dataset} has {num_unlabeled} training images without a label "
                f"(unlabeled/ under --data_dir={data.data_dir}); the simulated oracle answers "
                "with the data set's own labels, so it cannot label them: use --oracle=file to "
                "label what the model asks for yourself (docs/own_images.md)")
        if min_class_count is not None and data.validation_per_class >= min_class_count:
            raise ConfigError(
                f"--validation_per_class={data.validation_per_class} leaves no labeled training "
                f"example in the smallest class of {data.dataset} ({min_class_count} labeled)")
        return  # the pool is the unlabeled images; the file oracle stops when it is empty
    initial = data.initial_per_class * num_classes
    held = initial + validation
    if min_class_count is not None and data.initial_per_class + data.validation_per_class \
            > min_class_count:
        raise ConfigError(
            f"--initial_per_class={data.initial_per_class} + --validation_per_class="
            f"{data.validation_per_class} exceeds the {min_class_count} training examples of the "
            f"smallest class of {data.dataset}")
    pool = num_train - held
    if pool <= 0:
        raise ConfigError(
            f"--initial_per_class={data.initial_per_class} and --validation_per_class="
            f"{data.validation_per_class} x {num_classes} classes = {held} held examples leave "
            f"no pool ({data.dataset} has {num_train} training examples)")
    if data.oracle == "file":
        return  # a person labels: the run stops when the pool is empty or a rule says so
    if config.acquisition.pool_subset > pool:
        raise ConfigError(
            f"--pool_subset={config.acquisition.pool_subset} is larger than the pool "
            f"({pool} = {num_train} training examples of {data.dataset} - {initial} "
            f"initially labeled - {validation} for validation)")
    needed = config.iterations * config.acquisition.acquire_per_iteration
    if config.acquisition.max_labels:
        needed = min(needed, config.acquisition.max_labels - initial)
    if needed > pool:
        raise ConfigError(
            f"--iterations={config.iterations} x --acquire_per_iteration="
            f"{config.acquisition.acquire_per_iteration} = {needed} acquisitions exceed the pool "
            f"of {pool} examples")


def uses_mc_scores(config: ExperimentConfig) -> bool:
    """Whether the method acquires by an MC-dropout score (not at random)."""
    return methods_lib.get(config.acquisition.method).acquisition == methods_lib.SCORED
