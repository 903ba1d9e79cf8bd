r"""Runs (or resumes) a Bayesian active-learning experiment.

  python -m tf_bgadl.train --flagfile=configs/quickstart.flags [--flag=value ...]
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from tf_bgadl import config as config_lib

_DATASET = flags.DEFINE_enum("dataset", "mnist5k", config_lib.DATASETS, "Data set.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data dir ('' = tfds' default).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Folder of MNIST-style IDX files to prepare "
                                  "mnist/fashion_mnist from without network.")
_MODEL = flags.DEFINE_enum("model", "cnn", config_lib.MODELS, "Classifier.")
_WIDTH = flags.DEFINE_float("width_multiplier", 1.0, "Scales every layer's width.")
_DROPOUT = flags.DEFINE_float("dropout_rate", 0.5, "MC-dropout rate before the classifier head.")
_METHOD = flags.DEFINE_enum("method", "bald", config_lib.METHODS, "Active-learning method.")
_ACQUISITION = flags.DEFINE_enum("acquisition", "bald", config_lib.ACQUISITIONS,
                                 "Acquisition function used by --method=bald.")
_INITIAL = flags.DEFINE_integer("initial_per_class", 10, "Initial labeled examples per class.")
_ACQUIRE = flags.DEFINE_integer("acquire_per_iteration", 100, "Samples acquired per iteration.")
_ITERATIONS = flags.DEFINE_integer("iterations", 150, "Acquisition iterations.")
_POOL_SUBSET = flags.DEFINE_integer("pool_subset", 2000, "Pool samples scored per iteration.")
_MC = flags.DEFINE_integer("mc_samples", 20, "MC-dropout passes T.")
_SCORE_BATCH = flags.DEFINE_integer("score_batch_size", 500, "Batch size for scoring/evaluation.")
_EPOCHS = flags.DEFINE_integer("epochs", 50, "Training epochs per iteration.")
_BATCH = flags.DEFINE_integer("batch_size", 100, "Training batch size (global).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adadelta", config_lib.OPTIMIZERS, "Optimizer.")
_LR = flags.DEFINE_float("learning_rate", 1.0, "Initial learning rate.")
_WD = flags.DEFINE_float("weight_decay_numerator", 3.5, "Weight decay = this / num_labeled.")
_HALVING = flags.DEFINE_integer("lr_halving_epochs", 5, "Halve the LR every N epochs (0: never).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of everything random in the run.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", config_lib.STRATEGIES, "tf.distribute.")
_NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into this many "
                                        "logical devices (e.g. 2 to try --strategy=mirrored).")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", True, "Deterministic TF ops (same seed, same "
                                   "acquisitions).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (results, checkpoints, plots).")
flags.mark_flag_as_required("workdir")


def config_from_flags() -> config_lib.ExperimentConfig:
    return config_lib.ExperimentConfig(
        data=config_lib.DataConfig(dataset=_DATASET.value, data_dir=_DATA_DIR.value,
                                   manual_dir=_MANUAL_DIR.value,
                                   initial_per_class=_INITIAL.value),
        model=config_lib.ModelConfig(name=_MODEL.value, width_multiplier=_WIDTH.value,
                                     dropout_rate=_DROPOUT.value),
        train=config_lib.TrainConfig(epochs=_EPOCHS.value, batch_size=_BATCH.value,
                                     optimizer=_OPTIMIZER.value, learning_rate=_LR.value,
                                     weight_decay_numerator=_WD.value,
                                     lr_halving_epochs=_HALVING.value),
        acquisition=config_lib.AcquisitionConfig(
            method=_METHOD.value, acquisition=_ACQUISITION.value,
            acquire_per_iteration=_ACQUIRE.value, pool_subset=_POOL_SUBSET.value,
            mc_samples=_MC.value, score_batch_size=_SCORE_BATCH.value),
        iterations=_ITERATIONS.value, seed=_SEED.value, strategy=_STRATEGY.value)


def main(argv):
    del argv
    try:
        config = config_lib.validate(config_from_flags())
    except config_lib.ConfigError as e:
        sys.exit(f"error: {e}")
    # TensorFlow is imported only after the config is known to be valid.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tf_bgadl import data, experiment  # pylint: disable=import-outside-toplevel

    experiment.configure_cpu_devices(_NUM_CPU_DEVICES.value)
    if _DETERMINISTIC.value:
        tf.config.experimental.enable_op_determinism()
    try:
        results = experiment.train_and_evaluate(config, _WORKDIR.value)
    except (config_lib.ConfigError, data.DataError) as e:
        sys.exit(f"error: {e}")
    if results:
        last = results[-1]
        logging.info("Done: %d labeled, test accuracy %.4f; results in %s/results.jsonl",
                     last["num_labeled"], last["test_accuracy"], _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
