"""Wires config -> data, strategy, models and the loop: `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import tensorflow as tf
from absl import logging

from tf_bgadl import config as config_lib
from tf_bgadl import data as data_lib
from tf_bgadl import augment as augment_lib
from tf_bgadl import event_log, inference, loop, multi_worker, training
from tf_bgadl import methods as methods_lib
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
    """`default` (no distribution), `mirrored` (all GPUs, else all logical CPUs), `one_device`,
    `multi_worker` (MultiWorkerMirroredStrategy from TF_CONFIG: see multi_worker.py; create it
    before anything else initialises TensorFlow's devices)."""
    if name == "multi_worker":
        multi_worker.parse_tf_config()  # a clear error before TensorFlow reads it
        multi_worker.patch_keras_fit()
        return tf.distribute.MultiWorkerMirroredStrategy()
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


# Independent random streams of a run, derived with SeedSequence([seed, iteration, stream]).
STREAMS = {"weights": 0, "classifier_dropout": 1, "latent": 2, "shuffle": 3, "pmda": 4,
           "mc_scores": 5, "generation": 6, "pool_phase": 7}


def stream_seed(seed: int, iteration: int, stream: str) -> int:
    """A 31-bit seed for `stream` of `iteration`; distinct (seed, iteration, stream) never
    collide the way sums of offsets can."""
    state = np.random.SeedSequence([seed, iteration, STREAMS[stream]]).generate_state(1)
    return int(state[0] >> 1)


def seed_initial_weights(seed: int) -> None:
    """Seeds Python's global generator, which Keras' initializers draw their seeds from (and
    NumPy's), as `keras.utils.set_random_seed` does, but leaves TensorFlow's global seed and
    Keras' global SeedGenerator alone (no op of a run draws from them): setting the former
    clears every traced function's instantiation (`tf.random.set_seed`), which the next call
    then optimises again (seconds per iteration), and nothing of a run reads it (every random
    op is seeded explicitly: dropout, latent noise, PMDA, MC scoring, the data order)."""
    random.seed(seed)
    np.random.seed(seed)


def _gan_train_config(config: config_lib.ExperimentConfig) -> config_lib.TrainConfig:
    gen = config.generator
    return config_lib.TrainConfig(
        epochs=config.train.epochs, batch_size=config.train.batch_size, optimizer=gen.optimizer,
        learning_rate=gen.learning_rate, weight_decay_numerator=0.0,
        lr_halving_epochs=gen.lr_halving_epochs)


def make_learner(config: config_lib.ExperimentConfig, image_shape: tuple[int, int, int],
                 num_classes: int, strategy: tf.distribute.Strategy,
                 events: event_log.EventLog | None = None) -> loop.Learner:
    """The Learner of `config.acquisition.method` (see methods.py): classifier alone, with PMDA,
    or jointly trained with a VAE-ACGAN / ACGAN. Weights are seeded by (seed, iteration);
    per-epoch training metrics go to `events` when given. `config` must be resolved
    (`config_lib.validate`).

    One model is traced per run: `build` gives the model it built before the fresh state of
    the next iteration (`training.reinitialize_from`) instead of a new model, and the learner
    keeps the scoring, evaluation and prediction functions it traced for it, so an iteration
    computes what a new model would, without tracing anything again.
    """
    method = methods_lib.get(config.acquisition.method)
    gen = config.generator
    gan_train = _gan_train_config(config)
    last_built = [None]  # the model `build` returned last: the one it may reinitialize
    traced = {"model": None, "functions": {}}  # functions traced for `model`

    def seed_of(iteration: int, stream: str) -> int:
        return stream_seed(config.seed, iteration, stream)

    def cached(model, name, make):
        if traced["model"] is not model:
            traced.update(model=model, functions={})
        if name not in traced["functions"]:
            traced["functions"][name] = make()
        return traced["functions"][name]

    def build_fresh(iteration: int, num_labeled: int, num_rows: int):
        seed_initial_weights(seed_of(iteration, "weights"))
        classifier = build_classifier(
            config.model.name, num_classes=num_classes,
            input_shape=image_shape, width_multiplier=config.model.width_multiplier,
            dropout_rate=config.model.dropout_rate,
            seed=seed_of(iteration, "classifier_dropout"))
        # Weight decay 3.5 / N counts oracle labels only; steps per epoch count every row.
        c_optimizer = training.make_optimizer(config.train, num_rows, decay_count=num_labeled)
        if not method.generative:
            training.compile_classifier(classifier, c_optimizer)
            return classifier
        model = VAEACGAN(
            classifier, image_shape, num_classes,
            latent_dim=gen.latent_dim, use_encoder=method.uses_encoder,
            generation=gen.generation, gen_loss_weight=gen.gen_loss_weight,
            seed=seed_of(iteration, "latent"), width_multiplier=gen.width_multiplier,
            kl_weight=gen.kl_weight, update_every=gen.update_every)
        gan_optimizer = lambda: training.make_optimizer(  # noqa: E731
            gan_train, num_rows, beta_1=gen.beta_1, update_every=gen.update_every)
        model.compile(c_optimizer=c_optimizer, g_optimizer=gan_optimizer(),
                      d_optimizer=gan_optimizer(),
                      e_optimizer=gan_optimizer() if method.uses_encoder else None)
        return model

    def kept_networks(model) -> list:
        """The networks of `model` whose weights the next iteration keeps: all of it (warm
        start), e, g and d (carried over), or none."""
        if config.warm_start:
            return [model]
        if method.generative and gen.carry_over:
            return [n for n in (model.encoder, model.generator, model.discriminator)
                    if n is not None]
        return []

    def build(iteration: int, num_labeled: int, num_rows: int, previous):
        with strategy.scope():
            model = build_fresh(iteration, num_labeled, num_rows)
            if previous is not None and previous is last_built[0]:
                training.reinitialize_from(previous, model, keep=kept_networks(previous))
                model = previous
            elif previous is not None:  # another learner's model: copy what is kept
                for target, source in zip(kept_networks(model), kept_networks(previous)):
                    target.set_weights(source.get_weights())
        last_built[0] = model
        return model

    def fit(model, images, labels, is_generated, iteration):
        # Float, not bool: Keras' distributed fit averages the first batch across replicas.
        targets = (labels if not method.generative
                   else (labels, np.asarray(is_generated, np.float32)))
        augment = (augment_lib.make_pmda(config.data.dataset, seed_of(iteration, "pmda"))
                   if method.augmentation == "pmda" else None)
        callbacks = ([events.epoch_callback(iteration, config.train.epochs)]
                     if events is not None else [])
        return training.fit_classifier(model, images, targets, config.train,
                                       seed=seed_of(iteration, "shuffle"), augment=augment,
                                       log_prefix=f"iteration {iteration}",
                                       callbacks=callbacks)

    def predictor(model):
        return cached(model, "predict", lambda: inference.make_predictor(
            classifier_of(model), strategy=strategy,
            batch_size=config.acquisition.score_batch_size))

    def pool_phase(model, iteration, unlabeled):
        # The pool phase of the model of `iteration`, run by the loop before the next
        # iteration scores the pool. Encoder and decoder that started fresh (iteration 0, or
        # every iteration without carry-over or warm start) get `pool_steps_fresh` steps;
        # carried-over ones `pool_steps`.
        fresh = iteration == 0 or not (gen.carry_over or config.warm_start)
        steps = gen.pool_steps_fresh or gen.pool_steps if fresh else gen.pool_steps
        if not steps or not len(unlabeled):
            return {}
        return augment_lib.fit_on_pool(
            model, unlabeled, steps=steps, batch_size=config.train.batch_size,
            seed=seed_of(iteration, "pool_phase"),
            predict_batch_size=config.acquisition.score_batch_size,
            log_prefix=f"iteration {iteration}",
            predict=lambda images: predictor(model)(np.arange(len(images)), images))

    def evaluate(model, images, labels):
        return cached(model, "evaluate", lambda: training.make_evaluator(
            classifier_of(model), config.acquisition.score_batch_size, strategy))(images, labels)

    def score(model, ids, images, iteration, mc_probs=False):
        seed = seed_of(iteration, "mc_scores")
        if mc_probs:  # batchbald: joint samples, T dropout masks shared by the whole pool
            return cached(model, "joint", lambda: inference.make_joint_probabilities(
                classifier_of(model), mc_samples=config.acquisition.mc_samples,
                seed=seed, strategy=strategy,
                batch_size=config.acquisition.score_batch_size))(ids, images, seed=seed)
        scorer = cached(model, "score", lambda: inference.make_scorer(
            classifier_of(model), acquisition_name=(
                config.acquisition.acquisition if method.acquisition == methods_lib.SCORED
                else "bald"),  # random methods still report the BALD of x* and x'
            mc_samples=config.acquisition.mc_samples, strategy=strategy,
            batch_size=config.acquisition.score_batch_size))
        # Every call restarts the masks from the iteration's seed: the scores depend only on
        # the weights, the images and the iteration (a resumed run scores as before).
        classifier_of(model).reseed_mc_dropout(seed)
        return scorer(ids, images)

    def predict(model, images):
        return predictor(model)(np.arange(len(images)), images)

    def generate(model, images, labels, iteration):
        return augment_lib.generate_samples(model, images, labels,
                                            seed=seed_of(iteration, "generation"),
                                            batch_size=config.acquisition.score_batch_size)

    return loop.Learner(build=build, fit=fit, evaluate=evaluate, score=score,
                        generate=generate if method.generative else None,
                        persist_generated=method.generative and gen.generation == "persisted",
                        prepare=(pool_phase if method.generative
                                 and (gen.pool_steps or gen.pool_steps_fresh) else None),
                        predict=predict)


def train_and_evaluate(config: config_lib.ExperimentConfig, workdir: str,
                       strategy: tf.distribute.Strategy | None = None, *,
                       allow_replica_change: bool = False,
                       test_split: bool = True, labels_from: str | None = None) -> list[dict]:
    """Validates `config`, loads the data and runs (or resumes) the active-learning loop.

    The replica count of `strategy` is recorded in the run's config.json; a resume on another
    count is refused unless `allow_replica_change`. With `test_split=False` (a tuning trial)
    the test split is dropped before the loop starts: nothing in the run can read it, and its
    results have `test_accuracy` None. `labels_from`: see `loop.run` (`--oracle=file`).

    Raises:
      oracle.LabelsNeeded: the run waits for a person's labels (`--oracle=file`).
    """
    config = config_lib.validate(config)
    strategy = strategy or make_strategy(config.strategy)
    if config.strategy == "multi_worker" and not multi_worker.parse_tf_config().is_chief:
        # Only the chief writes the run's files; this worker runs in a private copy.
        private = multi_worker.worker_workdir(workdir)
        try:
            return _train_and_evaluate(config, private, strategy, allow_replica_change,
                                       test_split, labels_from)
        finally:
            multi_worker.remove_worker_workdir(private)
    return _train_and_evaluate(config, workdir, strategy, allow_replica_change, test_split,
                               labels_from)


def _train_and_evaluate(config, workdir, strategy, allow_replica_change, test_split,
                        labels_from):
    config = dataclasses.replace(config, num_replicas=strategy.num_replicas_in_sync)
    logging.info("Strategy %s with %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    dataset = data_lib.load_dataset(
        config.data.dataset, config.data.data_dir, config.data.manual_dir,
        image_size=config.data.image_size,
        ids_path=(os.path.join(workdir, "image_ids.json") if config.data.dataset == "folder"
                  else None))
    known = dataset.y_train[dataset.y_train >= 0]
    config_lib.check_against_data(
        config, num_train=len(dataset.y_train), num_classes=dataset.num_classes,
        min_class_count=int(np.bincount(known, minlength=dataset.num_classes).min()),
        num_unlabeled=int((dataset.y_train < 0).sum()))
    if not test_split:
        dataset = dataclasses.replace(dataset, x_test=dataset.x_test[:0],
                                      y_test=dataset.y_test[:0])
    if config.strategy == "multi_worker":
        state, _, _, _ = loop.load_progress(workdir, dataset.image_shape)
        multi_worker.check_same_progress(strategy, -1 if state is None else state.iteration,
                                         config.to_dict())
    events = event_log.EventLog(workdir)
    learner = make_learner(config, dataset.image_shape, dataset.num_classes, strategy, events)
    return loop.run(config, workdir, dataset, learner, on_iteration=events.iteration,
                    allow_replica_change=allow_replica_change, labels_from=labels_from)
