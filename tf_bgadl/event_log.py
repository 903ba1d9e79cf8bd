"""TensorBoard event files of a run: `<workdir>/tensorboard/`.

Per iteration (step = oracle labels, so runs with the same acquisition schedule line up):
  test/accuracy, validation/accuracy, acquisition/mean_score, generation/reconstruction_error,
  generation/score_acquired, generation/score_generated (Proposition 2.1), generation/samples
  (the x* | x' grid as an image).
Per epoch (step = epochs trained in the whole run so far): train/<metric> (training losses and
training accuracy on the labeled rows).

`tensorboard --logdir runs/<study>` then compares methods and seeds side by side.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

# results.jsonl key -> TensorBoard tag.
ITERATION_SCALARS = {
    "test_accuracy": "test/accuracy",
    "validation_accuracy": "validation/accuracy",
    "mean_score": "acquisition/mean_score",
    "reconstruction_error": "generation/reconstruction_error",
    "score_acquired": "generation/score_acquired",
    "score_generated": "generation/score_generated",
}
SAMPLES_TAG = "generation/samples"


class EventLog:
    """Writes one run's TensorBoard events (summaries are written eagerly, never in a graph)."""

    def __init__(self, workdir: str):
        self.logdir = os.path.join(workdir, "tensorboard")
        self._file_writer = None  # created on first use: a refused workdir gets no event file

    @property
    def _writer(self):
        if self._file_writer is None:
            self._file_writer = tf.summary.create_file_writer(self.logdir)
        return self._file_writer

    def iteration(self, row: dict, samples_png: str | None = None) -> None:
        """Scalars of one finished iteration (`row` is its results line) and its sample grid."""
        step = int(row["num_labeled"])
        with self._writer.as_default(step=step):
            for key, tag in ITERATION_SCALARS.items():
                if row.get(key) is not None:
                    tf.summary.scalar(tag, float(row[key]))
            if samples_png and os.path.exists(samples_png):
                with open(samples_png, "rb") as f:
                    image = tf.io.decode_png(f.read(), channels=3)
                tf.summary.image(SAMPLES_TAG, image[tf.newaxis],
                                 description=f"iteration {row['iteration']}: x* | x'")
        self._writer.flush()

    def epoch_callback(self, iteration: int, epochs: int) -> keras.callbacks.Callback:
        """A Keras callback writing `train/<metric>` after each epoch of `iteration`."""
        writer = self._writer

        class _EpochEvents(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                with writer.as_default(step=iteration * epochs + epoch + 1):
                    for name, value in sorted((logs or {}).items()):
                        tf.summary.scalar(f"train/{name}", float(value))

            def on_train_end(self, logs=None):
                writer.flush()

        return _EpochEvents()
