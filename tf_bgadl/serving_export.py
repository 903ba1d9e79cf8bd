"""Builds the TF Serving SavedModel of a classifier (see `tf_bgadl.export` for the signatures)."""

from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from tf_bgadl import acquisition
from tf_bgadl.config import ExperimentConfig

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
BALD_OUTPUTS = ("bald", "predictive_entropy", "expected_entropy", "variation_ratio",
                "mean_probabilities")


class ExportError(RuntimeError):
    """The export cannot be made; the message says why."""


def bald_outputs(probs) -> dict[str, tf.Tensor]:
    """The `bald` signature's outputs from MC probabilities [N, T, C] (the library's functions)."""
    return {"bald": acquisition.bald(probs),
            "predictive_entropy": acquisition.predictive_entropy(probs),
            "expected_entropy": acquisition.expected_entropy(probs),
            "variation_ratio": acquisition.var_ratios(probs),
            "mean_probabilities": tf.reduce_mean(probs, axis=1)}


def build_archive(classifier, image_shape, mc_samples: int) -> keras.export.ExportArchive:
    """An ExportArchive with the `serving_default`, `bald` and `bald_seeded` endpoints."""
    images_spec = tf.TensorSpec([None, *image_shape], tf.float32, name="images")
    seed_spec = tf.TensorSpec([None, 2], tf.int32, name="seed")
    archive = keras.export.ExportArchive()
    archive.track(classifier)

    def serving_default(images):
        probs = classifier.probabilities(images)
        return {"probabilities": probs, "classes": tf.argmax(probs, axis=-1)}

    def bald_seeded(images, seed):
        probs = per_row_mc_probabilities(classifier, images, seed, mc_samples)
        return bald_outputs(probs)

    def bald(images):
        # seed=seed2=0: a fresh nondeterministic seed at every execution, so masks differ
        # between calls and between loads (a variable would be restored and replay its masks).
        # One seed for the whole batch is enough here (every row still draws its own masks)
        # and scores the batch in one pass of the head.
        seed = tf.raw_ops.RandomUniformInt(shape=[2], minval=0, maxval=2**31 - 1, seed=0,
                                           seed2=0)
        probs = classifier.mc_probabilities(images, mc_samples, seed=seed)
        # A static class dimension, so the SignatureDef says [-1, K].
        return bald_outputs(tf.ensure_shape(probs, [None, mc_samples, classifier.num_classes]))

    archive.add_endpoint("serving_default", serving_default, input_signature=[images_spec])
    archive.add_endpoint("bald", bald, input_signature=[images_spec])
    archive.add_endpoint("bald_seeded", bald_seeded, input_signature=[images_spec, seed_spec])
    return archive


def per_row_mc_probabilities(classifier, images, seeds, mc_samples: int) -> tf.Tensor:
    """MC-dropout probabilities where row i's masks come from `seeds[i]` alone.

    Row i equals `classifier.mc_probabilities(images[i:i+1], mc_samples, seed=seeds[i])`: it
    depends only on its image and its seed, not on the batch size, its position or the other
    rows, so TF Serving may merge requests (server-side batching) or split them freely. The
    deterministic trunk runs once on the whole batch; only the small dropout head runs per row.

    Args:
      classifier: an `MCClassifier`.
      images: float32 [B, H, W, C].
      seeds: int32 [B, 2], one stateless seed per row.
      mc_samples: T.

    Returns:
      float32 [B, T, num_classes].
    """
    num_classes = classifier.num_classes
    tf.debugging.assert_equal(
        tf.shape(seeds)[0], tf.shape(images)[0],
        message="bald_seeded takes one seed int32 [2] per image: `seed` must have shape "
                "[batch, 2] with the same batch as `images`")
    features = classifier.features(images, training=False)

    def one_row(row):
        h, seed = row
        tiled = tf.repeat(h[None], mc_samples, axis=0)  # [T, ...], as mc_probabilities tiles
        logits = classifier.head(tiled, training=False, mc_dropout=True, seed=seed)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)  # [T, C]

    return tf.map_fn(one_row, (features, seeds),
                     fn_output_signature=tf.TensorSpec([mc_samples, num_classes], tf.float32))


def write_warmup_requests(path: str, model_name: str, image_shape, num_images: int = 2) -> None:
    """TF Serving warm-up records (PredictionLog) for `serving_default` and `bald`."""
    from tensorflow_serving.apis import (  # pylint: disable=import-outside-toplevel
        predict_pb2, prediction_log_pb2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    images = np.full((num_images, *image_shape), 0.5, np.float32)
    with tf.io.TFRecordWriter(path) as writer:
        for signature in ("serving_default", "bald"):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def next_version(model_dir: str) -> int:
    versions = [int(n) for n in os.listdir(model_dir) if n.isdigit()]
    return max(versions, default=0) + 1


def export_classifier(classifier, export_base: str, *, model_name: str, image_shape,
                      mc_samples: int) -> str:
    """Writes `<export_base>/<model_name>/<next version>/` atomically; returns its path.

    Raises:
      ExportError: the export base cannot be written (no partial version folder is left).
    """
    if mc_samples < 1:
        raise ExportError(f"mc_samples={mc_samples} must be positive")
    model_dir = os.path.join(export_base, model_name)
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ExportError(f"--export_base={export_base} is not writable: {e}") from e
    archive = build_archive(classifier, image_shape, mc_samples)
    for _ in range(100):  # another exporter may take a version number meanwhile
        version = next_version(model_dir)
        tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")  # not numeric: ignored
        try:
            archive.write_out(tmp, verbose=False)
            write_warmup_requests(os.path.join(tmp, WARMUP_FILE), model_name, image_shape)
            final = os.path.join(model_dir, str(version))
            if os.path.exists(final):
                shutil.rmtree(tmp)
                continue
            os.rename(tmp, final)
            return final
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    raise ExportError(f"could not find a free version number in {model_dir}")


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise ExportError(f"{what} not found: {path}") from e


def restore_classifier(workdir: str, strategy: tf.distribute.Strategy | None = None):
    """The classifier of the last finished iteration of the run in `workdir`.

    Returns:
      (classifier, config, dataset_info dict, iteration).

    Raises:
      ExportError: missing workdir, unfinished run, or missing checkpoint.
    """
    from tf_bgadl import experiment, loop  # pylint: disable=import-outside-toplevel
    if not os.path.isdir(workdir):
        raise ExportError(f"--workdir={workdir} does not exist")
    config = ExperimentConfig.from_dict(_read_json(os.path.join(workdir, "config.json"),
                                                   "config.json (is this a tf_bgadl run?)"))
    info = _read_json(os.path.join(workdir, "dataset.json"), "dataset.json")
    if not os.path.exists(os.path.join(workdir, "state.json")):
        raise ExportError(f"--workdir={workdir} has no finished iteration yet (no state.json)")
    image_shape = tuple(info["image_shape"])
    state, generated, _, weights = loop.load_progress(workdir, image_shape)
    if not os.path.exists(weights):
        raise ExportError(f"checkpoint of iteration {state.iteration} not found: {weights}")
    learner = experiment.make_learner(config, image_shape, info["num_classes"],
                                      strategy or tf.distribute.get_strategy())
    model = learner.build(state.iteration, len(state.labeled_ids),
                          len(state.labeled_ids) + len(generated), None)
    model.load_weights(weights)
    return experiment.classifier_of(model), config, info, state.iteration


def export_run(workdir: str, export_base: str, *, model_name: str = "tf_bgadl",
               mc_samples: int | None = None) -> str:
    """Exports the classifier of the run in `workdir`; returns the version folder."""
    classifier, config, info, _ = restore_classifier(workdir)
    return export_classifier(classifier, export_base, model_name=model_name,
                             image_shape=tuple(info["image_shape"]),
                             mc_samples=mc_samples or config.acquisition.mc_samples)
