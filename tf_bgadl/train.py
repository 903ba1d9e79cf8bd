r"""Runs (or resumes) a Bayesian active-learning experiment.

  python -m tf_bgadl.train --flagfile=quickstart.flags [--flag=value ...]
"""

from __future__ import annotations

import shlex
import sys

from absl import flags, logging

from tf_bgadl import cli
from tf_bgadl import config as config_lib
from tf_bgadl import methods as methods_lib

_DATASET = flags.DEFINE_enum("dataset", "mnist5k", config_lib.DATASETS, "Data set.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "tfds data dir ('' = tfds' default); for --dataset=folder the folder of "
    "your images: <root>/train/<class>/*.png|jpg, <root>/test/<class>/*, optional "
    "<root>/unlabeled/* (docs/own_images.md).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 0, "--dataset=folder: resize every image to this square size (0: all images "
    "must have the size of the first).")
_ORACLE = flags.DEFINE_enum(
    "oracle", "simulated", config_lib.ORACLES, "Who labels what the model asks for. simulated: "
    "the data set's own label (replaying a labeled data set); file: a person, through "
    "<workdir>/queries/iter_NNNN.csv (the run stops at each iteration until the file is filled "
    "in; rerun the same command to continue).")
_LABELS_FROM = flags.DEFINE_string(
    "labels_from", "", "--oracle=file: read the waiting iteration's labels from this CSV (same "
    "columns as the queries file, e.g. exported from a labeling tool) instead of its "
    "queries/iter_NNNN.csv.")
_MAX_LABELS = flags.DEFINE_integer(
    "max_labels", 0, "Stop once the run holds this many oracle labels (the last batch is cut to "
    "fit; 0: no limit). Rerun with a higher limit to continue.")
_TARGET_ACCURACY = flags.DEFINE_float(
    "target_accuracy", 0.0, "Stop once the validation accuracy reaches this fraction (needs "
    "--validation_per_class; 0: off).")
_PATIENCE = flags.DEFINE_integer(
    "patience", 0, "Stop once the validation accuracy has not improved by more than --min_delta "
    "for this many iterations (needs --validation_per_class; 0: off).")
_MIN_DELTA = flags.DEFINE_float("min_delta", 0.0, "See --patience.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Folder of MNIST-style IDX files to prepare "
                                  "mnist/fashion_mnist from without network.")
_MODEL = flags.DEFINE_enum("model", "cnn", config_lib.MODELS, "Classifier.")
_WIDTH = flags.DEFINE_float("width_multiplier", 1.0, "Scales every layer's width.")
_DROPOUT = flags.DEFINE_float("dropout_rate", 0.5, "MC-dropout rate before the classifier head.")
_METHOD = flags.DEFINE_enum("method", "vaeacgan", config_lib.METHODS, methods_lib.flag_help())
_ACQUISITION = flags.DEFINE_string(
    "acquisition", "", "MC-dropout acquisition of every scored method "
    f"({', '.join(config_lib.ACQUISITIONS)}); default bald. bald, max_entropy, var_ratios, "
    "mean_std take the top K of the score; batchbald selects greedily by joint mutual "
    "information (BatchBALD); power_bald, softmax_bald, softrank_bald draw K without "
    "replacement with probabilities from the BALD scores (stochastic batch acquisition). See "
    "docs/acquisition.md. Refused for the methods that acquire at random (random, "
    "bda_partial).")
_BATCHBALD_SAMPLES = flags.DEFINE_integer(
    "batchbald_samples", config_lib.ACQUISITION_DEFAULT, "--acquisition=batchbald only: joint "
    "class configurations of the chosen points, enumerated exactly while C^n is at most this "
    f"many, sampled beyond (-1: {config_lib.DEFAULT_BATCHBALD_SAMPLES}).")
_ACQUISITION_TEMPERATURE = flags.DEFINE_float(
    "acquisition_temperature", config_lib.ACQUISITION_DEFAULT, "power_bald, softmax_bald, "
    "softrank_bald only: temperature = 1/beta of the sampling distribution (0: exactly the top "
    f"K; larger: closer to uniform; -1: {config_lib.DEFAULT_ACQUISITION_TEMPERATURE}).")
_INITIAL = flags.DEFINE_integer(
    "initial_per_class", 10, "Initial labeled examples per class. Not used when the data set "
    "has unlabeled images (a folder's unlabeled/): then every labeled image starts labeled.")
_VALIDATION = flags.DEFINE_integer(
    "validation_per_class", 0, "Class-balanced validation examples per class, drawn with the "
    "run's seed from the training split, never in the pool, never acquired (0: none). Adds "
    "validation_accuracy to every results line; tuning reads it, never the test split.")
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
_GENERATION = flags.DEFINE_string(
    "generation", "", "Generative methods only. persisted: x' generated once per acquired x* and "
    "added to the labeled set (the paper; vaeacgan's default); online: C trains on g(e(x), y) and "
    "g(z, y) every minibatch (BDA and the authors' code; acgan's and bda_partial's default).")
_GEN_LOSS_WEIGHT = flags.DEFINE_float("gen_loss_weight", 1.0, "lambda: weight of the classifier "
                                      "loss on generated samples.")
_LATENT_DIM = flags.DEFINE_integer("latent_dim", 100, "Latent size of the VAE-ACGAN.")
_GAN_WIDTH = flags.DEFINE_float("gan_width_multiplier", 1.0, "Scales the encoder, generator and "
                                "discriminator widths (1.0 = the reference architecture).")
_GAN_OPTIMIZER = flags.DEFINE_string(
    "gan_optimizer", "", f"Optimizer of the encoder, generator and discriminator "
    f"({', '.join(config_lib.OPTIMIZERS)}); default: the method's (vaeacgan: adadelta as the "
    "authors' code; acgan, bda_partial: adam as pytorch-bda).")
_GAN_LR = flags.DEFINE_float(
    "gan_learning_rate", 0.0, "Their initial learning rate (0: the method's with the method's "
    "optimizer: 1.0 for vaeacgan's adadelta, 2e-4 for acgan/bda_partial's adam; with another "
    "--gan_optimizer that optimizer's usual rate: adadelta 1.0, adam 1e-3, sgd 0.01).")
_GAN_BETA_1 = flags.DEFINE_float(
    "gan_beta_1", -1.0, "Adam's beta_1 for them (-1: 0.5 for acgan/bda_partial with their adam, "
    "as pytorch-bda; else 0.9).")
_GAN_HALVING = flags.DEFINE_integer("gan_lr_halving_epochs", 8, "Halve their LR every N epochs.")
_KL_WEIGHT = flags.DEFINE_float("kl_weight", config_lib.GeneratorConfig.kl_weight,
                                "beta: weight of the VAE's KL term (KL / pixels x beta). Ours.")
_VAEACGAN = methods_lib.METHODS["vaeacgan"]  # the generator schedule's defaults, for the help
_GAN_CARRY_OVER = flags.DEFINE_bool(
    "gan_carry_over", config_lib.GeneratorConfig.carry_over, "Carry e, g, d over from the "
    "previous iteration while the classifier restarts from fresh weights (unset: the "
    "method's default, on for vaeacgan). Ours.")
_GAN_POOL_STEPS = flags.DEFINE_integer(
    "gan_pool_steps", config_lib.GeneratorConfig.pool_steps, "vaeacgan: encoder/decoder steps "
    "per iteration on unlabeled pool images, conditioned on the classifier's predicted class "
    "(no oracle label used); with --gan_carry_over, of the iterations whose encoder and "
    "decoder were carried over; -1: the method's default "
    f"({_VAEACGAN.pool_steps} for vaeacgan, 0 for the others). Ours.")
_GAN_POOL_STEPS_FRESH = flags.DEFINE_integer(
    "gan_pool_steps_fresh", config_lib.GeneratorConfig.pool_steps_fresh, "vaeacgan: the pool "
    "steps when the encoder and decoder start from fresh weights (iteration 0, or every "
    "iteration without --gan_carry_over); 0: --gan_pool_steps; -1: the method's default "
    f"({_VAEACGAN.pool_steps_fresh} for vaeacgan) when --gan_pool_steps is unset, else "
    "--gan_pool_steps. Ours.")
_GAN_UPDATE_EVERY = flags.DEFINE_integer(
    "gan_update_every", config_lib.GeneratorConfig.update_every, "e, g and d take a step on "
    "every N-th joint step, the classifier on every one (1: every step, as the authors' code; "
    f"0: the method's default, {_VAEACGAN.update_every} for vaeacgan; --generation=persisted "
    "only). Ours.")
_WARM_START = flags.DEFINE_bool("warm_start", False, "Start each iteration from the previous "
                                "iteration's weights instead of fresh ones.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of everything random in the run.")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", config_lib.STRATEGIES, "tf.distribute strategy. default: one device; "
    "mirrored: all GPUs (else all logical CPUs, see --num_cpu_devices) of this machine; "
    "one_device; multi_worker: MultiWorkerMirroredStrategy over the machines of TF_CONFIG (run "
    "the same command on every worker; README, \"One run on several machines\").")
_NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into this many "
                                        "logical devices (e.g. 2 to try --strategy=mirrored).")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", True, "Deterministic TF ops (same seed, same "
                                   "acquisitions).")
_ALLOW_REPLICA_CHANGE = flags.DEFINE_bool(
    "allow_replica_change", False, "Resume a run on another number of replicas (refused by "
    "default: BatchNorm is synchronised over the replicas, so the result would differ).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (results, checkpoints, plots).")
_EXPORT_BASE = flags.DEFINE_string("export_base", "", "If set, export the final classifier for "
                                   "TF Serving to <export_base>/<export_model_name>/<version>.")
_EXPORT_MODEL_NAME = flags.DEFINE_string("export_model_name", "tf_bgadl", "Served model name.")
flags.mark_flag_as_required("workdir")


def config_from_flags() -> config_lib.ExperimentConfig:
    return config_lib.ExperimentConfig(
        data=config_lib.DataConfig(dataset=_DATASET.value, data_dir=_DATA_DIR.value,
                                   manual_dir=_MANUAL_DIR.value,
                                   initial_per_class=_INITIAL.value,
                                   validation_per_class=_VALIDATION.value,
                                   image_size=_IMAGE_SIZE.value, oracle=_ORACLE.value),
        model=config_lib.ModelConfig(name=_MODEL.value, width_multiplier=_WIDTH.value,
                                     dropout_rate=_DROPOUT.value),
        train=config_lib.TrainConfig(epochs=_EPOCHS.value, batch_size=_BATCH.value,
                                     optimizer=_OPTIMIZER.value, learning_rate=_LR.value,
                                     weight_decay_numerator=_WD.value,
                                     lr_halving_epochs=_HALVING.value),
        acquisition=config_lib.AcquisitionConfig(
            method=_METHOD.value, acquisition=_ACQUISITION.value,
            acquire_per_iteration=_ACQUIRE.value, pool_subset=_POOL_SUBSET.value,
            mc_samples=_MC.value, score_batch_size=_SCORE_BATCH.value,
            batchbald_samples=_BATCHBALD_SAMPLES.value,
            temperature=_ACQUISITION_TEMPERATURE.value, max_labels=_MAX_LABELS.value,
            target_accuracy=_TARGET_ACCURACY.value, patience=_PATIENCE.value,
            min_delta=_MIN_DELTA.value),
        generator=config_lib.GeneratorConfig(
            latent_dim=_LATENT_DIM.value, width_multiplier=_GAN_WIDTH.value,
            generation=_GENERATION.value,
            gen_loss_weight=_GEN_LOSS_WEIGHT.value, optimizer=_GAN_OPTIMIZER.value,
            learning_rate=_GAN_LR.value, beta_1=_GAN_BETA_1.value,
            lr_halving_epochs=_GAN_HALVING.value, kl_weight=_KL_WEIGHT.value,
            carry_over=_GAN_CARRY_OVER.value, pool_steps=_GAN_POOL_STEPS.value,
            pool_steps_fresh=_GAN_POOL_STEPS_FRESH.value,
            update_every=_GAN_UPDATE_EVERY.value),
        iterations=_ITERATIONS.value, warm_start=_WARM_START.value, seed=_SEED.value,
        strategy=_STRATEGY.value, deterministic=_DETERMINISTIC.value)


def is_chief(config: config_lib.ExperimentConfig) -> bool:
    """Whether this process writes the run's outputs (always, except a multi-worker run's
    non-chief workers)."""
    from tf_bgadl import multi_worker  # pylint: disable=import-outside-toplevel
    return config.strategy != "multi_worker" or multi_worker.parse_tf_config().is_chief


def continue_command(argv: list[str]) -> str:
    """The command that continues this run: the same arguments, without --labels_from (which
    names one iteration's labels)."""
    args, skip_value = [], False
    for arg in argv[1:]:
        if skip_value:
            skip_value = False
        elif arg.lstrip("-").startswith("labels_from"):
            skip_value = "=" not in arg  # `--labels_from FILE`: drop FILE too
        else:
            args.append(arg)
    return shlex.join(["python", "-m", "tf_bgadl.train", *args])


def main(argv):
    del argv
    try:
        config = config_lib.validate(config_from_flags())
        is_chief(config)  # a missing or malformed TF_CONFIG is refused before TF starts
    except config_lib.ConfigError as e:
        sys.exit(f"error: {e}")
    # TensorFlow is imported only after the config is known to be valid.
    tf = cli.import_tensorflow()
    # pylint: disable-next=import-outside-toplevel
    from tf_bgadl import data, experiment, oracle, serving_export

    if config.strategy == "multi_worker" and _NUM_CPU_DEVICES.value:
        sys.exit(f"error: --num_cpu_devices={_NUM_CPU_DEVICES.value} does not apply to "
                 "--strategy=multi_worker (each worker process is one replica per device)")
    experiment.configure_cpu_devices(_NUM_CPU_DEVICES.value)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        results = experiment.train_and_evaluate(config, _WORKDIR.value,
                                                allow_replica_change=_ALLOW_REPLICA_CHANGE.value,
                                                labels_from=_LABELS_FROM.value or None)
        if _EXPORT_BASE.value and is_chief(config):
            path = serving_export.export_run(_WORKDIR.value, _EXPORT_BASE.value,
                                             model_name=_EXPORT_MODEL_NAME.value)
            logging.info("Exported the classifier for TF Serving to %s", path)
    except oracle.LabelsNeeded as e:
        print(f"\nIteration {e.iteration} asks for {e.count} labels.\n"
              f"  1. Look at the images: {e.sheet_path}\n"
              f"  2. Fill in the 'label' column of {e.csv_path}\n"
              f"     (a class name or index; 'skip' leaves an image unlabeled in the pool).\n"
              f"  3. Continue with the same command:\n     {continue_command(sys.argv)}\n"
              f"     (or add --labels_from=<csv> to read the labels from another file).",
              flush=True)
        return
    except (config_lib.ConfigError, data.DataError, serving_export.ExportError,
            oracle.LabelFileError) as e:
        sys.exit(f"error: {e}")
    if results:
        last = results[-1]
        accuracy = last.get("test_accuracy")
        logging.info("Done: %d labeled, test accuracy %s%s; results in %s/results.jsonl",
                     last["num_labeled"], "-" if accuracy is None else f"{accuracy:.4f}",
                     f" (stopped: {last['stop_reason']})" if last.get("stop_reason") else "",
                     _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
