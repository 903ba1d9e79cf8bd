"""Wires config -> data, strategy, models and the loop: `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_bgadl import config as config_lib
from tf_bgadl import data as data_lib
from tf_bgadl import augment as augment_lib
from tf_bgadl import event_log, inference, loop, training
from tf_bgadl.models import MCClassifier, build_classifier
from tf_bgadl.models.vae_acgan import VAEACGAN


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices (before TensorFlow initialises; 0 = leave)."""
    if count <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (no distribution), `mirrored` (all GPUs, else all logical CPUs), `one_device`."""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy(gpus)
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=cpus[0]))
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
    raise config_lib.ConfigError(f"--strategy={name!r}; choose one of "
                                 f"{', '.join(config_lib.STRATEGIES)}")


def classifier_of(model) -> MCClassifier:
    """The classifier inside a learner's model (itself, or the VAE-ACGAN's auxiliary C)."""
    return model.classifier if isinstance(model, VAEACGAN) else model


def make_learner(config: config_lib.ExperimentConfig, image_shape: tuple[int, int, int],
                 num_classes: int, strategy: tf.distribute.Strategy,
                 events: event_log.EventLog | None = None) -> loop.Learner:
    """The Learner of `config.acquisition.method`: classifier alone, with PMDA, or jointly
    trained with a VAE-ACGAN / ACGAN. Weights are seeded by (seed, iteration); per-epoch
    training metrics go to `events` when given."""
    method = config.acquisition.method
    generator_kind = config_lib.METHOD_GENERATOR.get(method)
    gen = config.generator
    gan_train = config_lib.TrainConfig(
        epochs=config.train.epochs, batch_size=config.train.batch_size, optimizer=gen.optimizer,
        learning_rate=gen.learning_rate, weight_decay_numerator=0.0,
        lr_halving_epochs=gen.lr_halving_epochs)

    def iteration_seed(iteration: int, offset: int = 0) -> int:
        return config.seed * 1_000_003 + offset + iteration

    def build(iteration: int, num_examples: int, previous):
        keras.utils.set_random_seed(iteration_seed(iteration))
        with strategy.scope():
            classifier = build_classifier(
                config.model.name, num_classes=num_classes,
                input_shape=image_shape, width_multiplier=config.model.width_multiplier,
                dropout_rate=config.model.dropout_rate, seed=iteration_seed(iteration, 7919))
            if generator_kind is None:
                model = classifier
                training.compile_classifier(model, config.train, num_examples)
            else:
                model = VAEACGAN(
                    classifier, image_shape, num_classes,
                    latent_dim=gen.latent_dim, use_encoder=generator_kind == "vaeacgan",
                    generation=gen.generation, gen_loss_weight=gen.gen_loss_weight,
                    seed=iteration_seed(iteration, 104_729),
                    width_multiplier=gen.width_multiplier)
                model.compile(
                    c_optimizer=training.make_optimizer(config.train, num_examples),
                    g_optimizer=training.make_optimizer(gan_train, num_examples),
                    d_optimizer=training.make_optimizer(gan_train, num_examples),
                    e_optimizer=(training.make_optimizer(gan_train, num_examples)
                                 if generator_kind == "vaeacgan" else None))
            if previous is not None:
                model.set_weights(previous.get_weights())
        return model

    def fit(model, images, labels, is_generated, iteration):
        # Float, not bool: Keras' distributed fit averages the first batch across replicas.
        targets = (labels if generator_kind is None
                   else (labels, np.asarray(is_generated, np.float32)))
        augment = (augment_lib.make_pmda(config.data.dataset, iteration_seed(iteration, 31))
                   if method == "pmda" else None)
        callbacks = ([events.epoch_callback(iteration, config.train.epochs)]
                     if events is not None else [])
        return training.fit_classifier(model, images, targets, config.train,
                                       seed=iteration_seed(iteration), augment=augment,
                                       log_prefix=f"iteration {iteration}", callbacks=callbacks)

    def evaluate(model, images, labels):
        return training.evaluate_accuracy(classifier_of(model), images, labels,
                                          config.acquisition.score_batch_size, strategy)

    def score(model, ids, images, iteration):
        scorer = inference.make_scorer(
            classifier_of(model), acquisition_name=(
                config.acquisition.acquisition if config.acquisition.acquisition != "random"
                else "bald"),
            mc_samples=config.acquisition.mc_samples, strategy=strategy,
            batch_size=config.acquisition.score_batch_size,
            seed=iteration_seed(iteration, 500_000))
        return scorer(ids, images)

    def generate(model, images, labels, iteration):
        return augment_lib.generate_samples(model, images, labels,
                                            seed=iteration_seed(iteration, 700_001),
                                            batch_size=config.acquisition.score_batch_size)

    return loop.Learner(build=build, fit=fit, evaluate=evaluate, score=score,
                        generate=generate if generator_kind else None,
                        persist_generated=bool(generator_kind) and gen.generation == "persisted")


def train_and_evaluate(config: config_lib.ExperimentConfig, workdir: str,
                       strategy: tf.distribute.Strategy | None = None) -> list[dict]:
    """Validates `config`, loads the data and runs (or resumes) the active-learning loop."""
    config_lib.validate(config)
    strategy = strategy or make_strategy(config.strategy)
    logging.info("Strategy %s with %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    dataset = data_lib.load_dataset(config.data.dataset, config.data.data_dir,
                                    config.data.manual_dir)
    config_lib.check_against_data(
        config, num_train=len(dataset.y_train), num_classes=dataset.num_classes,
        min_class_count=int(np.bincount(dataset.y_train, minlength=dataset.num_classes).min()))
    events = event_log.EventLog(workdir)
    learner = make_learner(config, dataset.image_shape, dataset.num_classes, strategy, events)
    return loop.run(config, workdir, dataset, learner, on_iteration=events.iteration)
