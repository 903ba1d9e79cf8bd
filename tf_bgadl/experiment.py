"""Wires config -> data, strategy, models and the loop: `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from tf_bgadl import config as config_lib
from tf_bgadl import data as data_lib
from tf_bgadl import inference, loop, training
from tf_bgadl.models import build_classifier


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


def make_learner(config: config_lib.ExperimentConfig, dataset: data_lib.ArrayDataset,
                 strategy: tf.distribute.Strategy) -> loop.Learner:
    """The Learner for the configured classifier: seeded fresh weights every iteration."""

    def build(iteration: int, num_labeled: int):
        keras.utils.set_random_seed(config.seed * 1_000_003 + iteration)
        with strategy.scope():
            model = build_classifier(
                config.model.name, num_classes=dataset.num_classes,
                input_shape=dataset.image_shape, width_multiplier=config.model.width_multiplier,
                dropout_rate=config.model.dropout_rate, seed=config.seed * 7919 + iteration)
            training.compile_classifier(model, config.train, num_labeled)
        return model

    def fit(model, images, labels, iteration):
        return training.fit_classifier(model, images, labels, config.train,
                                       seed=config.seed * 1_000_003 + iteration,
                                       log_prefix=f"iteration {iteration}")

    def evaluate(model, images, labels):
        return training.evaluate_accuracy(model, images, labels,
                                          config.acquisition.score_batch_size, strategy)

    def score(model, ids, images, iteration):
        scorer = inference.make_scorer(
            model, acquisition_name=config.acquisition.acquisition,
            mc_samples=config.acquisition.mc_samples, strategy=strategy,
            batch_size=config.acquisition.score_batch_size,
            seed=config.seed * 1_000_003 + 500_000 + iteration)
        return scorer(ids, images)

    return loop.Learner(build=build, fit=fit, evaluate=evaluate, score=score)


def train_and_evaluate(config: config_lib.ExperimentConfig, workdir: str,
                       strategy: tf.distribute.Strategy | None = None) -> list[dict]:
    """Validates `config`, loads the data and runs (or resumes) the active-learning loop."""
    config_lib.validate(config)
    strategy = strategy or make_strategy(config.strategy)
    logging.info("Strategy %s with %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    dataset = data_lib.load_dataset(config.data.dataset, config.data.data_dir,
                                    config.data.manual_dir)
    config_lib.check_against_data(config, num_train=len(dataset.y_train),
                                  num_classes=dataset.num_classes)
    return loop.run(config, workdir, dataset, make_learner(config, dataset, strategy))
