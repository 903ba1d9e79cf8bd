r"""The cost of active-learning iterations: `vaeacgan` against `bald`, phase by phase.

  python bench/iteration_cost.py [--models=cnn,resnet18 --resnet_width=0.25 --timed=5
      --resnet_timed=2 --pool_steps=-1 --pool_steps_fresh=-1 --carry_over=default
      --update_every=0 --threads=0 --nobreakdown]

One run, one machine, the same data (mnist5k, offline), the same initial labeled set, labels,
acquisition size and epochs for both methods: the protocol of configs/study_mnist5k.flags (10
labels per class to start, +50 per iteration out of a pool subset of 500, T = 20 MC samples, 30
epochs of batch 50, Adam 1e-3, quarter-width generative networks; the methods' own defaults
otherwise, e.g. vaeacgan's generator schedule: e, g, d carried over, 300 pool steps on the
fresh e and g, 50 in later iterations, e, g, d on every 8th joint step; the flags above
override it) and, for ResNet18 at --resnet_width, the two settings
study_mnist5k_resnet18.flags changes (lr 1e-2, no weight decay).

For each model and method the Learner comes from `experiment.make_learner` on a config resolved
by `config.validate`, and its functions are called as `loop.run` calls them (one model per run,
reinitialized every iteration). First, untimed, iteration 0 of both methods on throwaway
models (what a process's first TensorFlow work pays, runtime start-up and kernel caches, is
charged to neither method); then each timed run: iteration 0 (build, fit on the initial labels,
evaluate: where the run traces its functions) timed as a whole, and iterations 1..--timed (CNN;
--resnet_timed for ResNet18) phase by phase, the two methods' iterations alternating so that a
change in the machine's load falls on both:

  prepare     the pool phase of the previous iteration's model (vaeacgan's fit_on_pool)
  score       `loop.select`: MC-dropout BALD of the pool subset and the top-K
  generate    x' = g(e(x*)) for the acquired x*
  diag_score  BALD of x* and x' (loop._generate's Proposition 2.1 diagnostics)
  plot        loop._generate's x* | x' sample grid
  build       the iteration's fresh state (weights seeded by the iteration)
  fit         training on labeled (+ stored generated) rows
  evaluate    test accuracy

Beside each phase's wall seconds: its CPU seconds (this process, all threads), `trace_s`, the
seconds TensorFlow spent building tf.function graphs in it (TF's own graph-building timer,
outermost functions only; graph optimisation at the first call is not in it) and the number of
graphs traced. For the model fits (`fit`, and the pool phase's fit inside `prepare`), a per-batch
timer splits the fit into the first step (tracing, graph optimisation, first execution), the
other steps (from one batch's begin to the next's) and the rest.

--breakdown times the parts of vaeacgan's joint train_step on one batch of the CNN's iteration-1
rows (warm: each part its own tf.function, traced before timing), beside bald's train_step.

The compute floor counts the FLOPs of the ops each step's graph runs and charges vaeacgan's
extra FLOPs at the rate of bald's own warm train_step: `classifier_only` is what vaeacgan's
classifier alone must compute (it trains on the stored x' too), the floor adds e, g and d and
the pool phase. The last lines are `resnet18_vaeacgan_over_bald=<ratio>` and
`vaeacgan_over_bald=<ratio>`: the total wall time of vaeacgan's iterations 0 to --timed over
bald's (for the CNN a whole run of the study protocol: iterations 0 to 5; iteration 0 is where
each run traces its functions), ResNet18, then the CNN; the lines before give the floors (of
the timed iterations) and the first and later iterations alone.
"""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from tensorflow.python.eager.polymorphic_function import (  # noqa: E402
    tracing_compilation)

from tf_bgadl import config as config_lib  # noqa: E402
from tf_bgadl import data, experiment, loop, stopping  # noqa: E402
from tf_bgadl.plotting import plot_sample_grid  # noqa: E402
from tf_bgadl.state import GeneratedSet, initial_state  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["cnn", "resnet18"], "Classifiers (cnn, resnet18).")
_METHODS = ("vaeacgan", "bald")
_RESNET_WIDTH = flags.DEFINE_float("resnet_width", 0.25, "ResNet18's width multiplier.")
_TIMED = flags.DEFINE_integer("timed", 5, "CNN: iterations timed phase by phase after "
                              "iteration 0 (5: the whole run of the study protocol).")
_RESNET_TIMED = flags.DEFINE_integer("resnet_timed", 2, "ResNet18: iterations timed (2: the "
                                     "first, with the fresh generator's pool phase, and one "
                                     "with carried-over e and g).")
_INITIAL = flags.DEFINE_integer("initial_per_class", 10, "Initial labels per class.")
_ACQUIRE = flags.DEFINE_integer("acquire_per_iteration", 50, "Labels acquired per iteration.")
_POOL_SUBSET = flags.DEFINE_integer("pool_subset", 500, "Pool images scored per iteration.")
_MC = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples T.")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Epochs per iteration.")
_BATCH = flags.DEFINE_integer("batch_size", 50, "Training batch size.")
_GAN_WIDTH = flags.DEFINE_float("gan_width_multiplier", 0.25, "Width of e, g, d.")
_POOL_STEPS = flags.DEFINE_integer("pool_steps", -1, "vaeacgan's --gan_pool_steps (-1: the "
                                   "method's default).")
_POOL_STEPS_FRESH = flags.DEFINE_integer("pool_steps_fresh", -1, "vaeacgan's "
                                         "--gan_pool_steps_fresh (-1: the method's default).")
_CARRY_OVER = flags.DEFINE_enum("carry_over", "default", ["default", "true", "false"],
                                "vaeacgan's --gan_carry_over.")
_UPDATE_EVERY = flags.DEFINE_integer("update_every", 0, "vaeacgan's --gan_update_every (0: the "
                                     "method's default).")
_THREADS = flags.DEFINE_integer("threads", 0, "TF intra- and inter-op threads (0: TF's "
                                "default).")
_SEED = flags.DEFINE_integer("seed", 1, "The run's seed (the studies use 1, 2, 3).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data dir ('' = tfds' default).")
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "Time the parts of vaeacgan's joint "
                               "train_step (CNN).")
_BREAKDOWN_REPEATS = flags.DEFINE_integer("breakdown_repeats", 30, "Timed calls per part.")

PHASES = ("prepare", "score", "generate", "diag_score", "plot", "build", "fit", "evaluate")


# Tracing: TF's graph-building timer (outermost tf.functions only) and a count of the graphs.

# pylint: disable-next=protected-access
_GRAPH_TIMER = tracing_compilation._graph_building_time_counter.get_cell()
_TRACES = [0]


def _count_traces():
    original = tracing_compilation._create_concrete_function  # pylint: disable=protected-access

    @functools.wraps(original)
    def counted(*args, **kwargs):
        if not tf.inside_function():
            _TRACES[0] += 1
        return original(*args, **kwargs)

    tracing_compilation._create_concrete_function = counted  # pylint: disable=protected-access


class _Phase:
    """Times a block: wall seconds, this process's CPU seconds (user + system, all threads:
    less sensitive than wall time to other processes on the machine), tracing seconds and
    graphs traced."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.trace_start, self.traces_start = _GRAPH_TIMER.value(), _TRACES[0]
        return self

    def __exit__(self, *exc):
        t = self.timings.setdefault(self.name, {"s": 0.0, "cpu_s": 0.0, "trace_s": 0.0,
                                                "traces": 0})
        t["s"] += time.perf_counter() - self.start
        t["cpu_s"] += time.process_time() - self.cpu_start
        t["trace_s"] += (_GRAPH_TIMER.value() - self.trace_start) / 1e6
        t["traces"] += _TRACES[0] - self.traces_start


class _BatchTimer(keras.callbacks.Callback):
    """Step times of one fit, from the time each batch begins (the next batch's begin, or the
    epoch's end, closes a step). Only begin and epoch hooks: a callback with a batch-end hook
    makes Keras convert every step's logs synchronously, which the run's own callbacks
    (EpochLogger, the event log) do not."""

    def __init__(self):
        super().__init__()
        self.times, self._begin = [], None
        self.fit_start = self.fit_end = 0.0

    def on_train_begin(self, logs=None):
        self.fit_start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.fit_end = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self._begin is not None:
            self.times.append(now - self._begin)
        self._begin = now

    def on_epoch_end(self, epoch, logs=None):
        if self._begin is not None:
            self.times.append(time.perf_counter() - self._begin)
        self._begin = None

    def split(self) -> dict:
        """first step, the other steps (their median x their count), the rest of the fit."""
        if not self.times:
            return {}
        rest = self.times[1:] or self.times
        median = statistics.median(rest)
        return {"steps": len(self.times), "first_step_s": self.times[0],
                "step_ms": 1e3 * median, "other_steps_s": sum(self.times[1:]),
                "outside_steps_s": (self.fit_end - self.fit_start) - sum(self.times)}


class _Probe:
    """Stands in for the run's EventLog: `make_learner` asks it for the fit's epoch callback."""

    def __init__(self):
        self.timer = None

    def epoch_callback(self, iteration, epochs):  # pylint: disable=unused-argument
        self.timer = _BatchTimer()
        return self.timer


def _make_config(model_name: str, method: str) -> config_lib.ExperimentConfig:
    resnet = model_name.startswith("resnet")
    return config_lib.validate(config_lib.ExperimentConfig(
        data=config_lib.DataConfig(dataset="mnist5k", data_dir=_DATA_DIR.value,
                                   initial_per_class=_INITIAL.value),
        model=config_lib.ModelConfig(name=model_name,
                                     width_multiplier=_RESNET_WIDTH.value if resnet else 1.0),
        train=config_lib.TrainConfig(epochs=_EPOCHS.value, batch_size=_BATCH.value,
                                     optimizer="adam", learning_rate=1e-2 if resnet else 1e-3,
                                     weight_decay_numerator=0.0 if resnet else 3.5,
                                     lr_halving_epochs=0),
        acquisition=config_lib.AcquisitionConfig(
            method=method, acquire_per_iteration=_ACQUIRE.value, pool_subset=_POOL_SUBSET.value,
            mc_samples=_MC.value),
        generator=config_lib.GeneratorConfig(
            width_multiplier=_GAN_WIDTH.value, optimizer="adam", learning_rate=1e-3,
            lr_halving_epochs=0,
            **(dict(pool_steps=_POOL_STEPS.value, pool_steps_fresh=_POOL_STEPS_FRESH.value,
                    carry_over={"default": None, "true": True, "false": False}[
                        _CARRY_OVER.value],
                    update_every=_UPDATE_EVERY.value) if method == "vaeacgan" else {})),
        iterations=_timed_iterations(model_name), seed=_SEED.value))


def _with_fit_timer(model, timer):
    """Adds `timer` to the callbacks of `model`'s next fits (the pool phase passes none)."""
    def fit(*args, callbacks=(), **kwargs):
        return type(model).fit(model, *args, callbacks=[*callbacks, timer], **kwargs)

    model.fit = fit


def _timed_iterations(model_name: str) -> int:
    return _TIMED.value if model_name == "cnn" else _RESNET_TIMED.value


def run_method(model_name: str, method: str, dataset, workdir: str):
    """Iteration 0, then iterations 1..--timed as `loop.run` runs them; yields the timings of
    iteration 0, then one dict of phase timings per later iteration (a generator, so that the
    two methods' iterations can alternate and share the machine's load alike)."""
    config = _make_config(model_name, method)
    probe = _Probe()
    strategy = tf.distribute.get_strategy()
    learner = experiment.make_learner(config, dataset.image_shape, dataset.num_classes, strategy,
                                      probe)
    state = initial_state(dataset.y_train, config.data.initial_per_class, config.seed)
    generated = GeneratedSet.empty(dataset.image_shape)
    labeled = state.labeled_ids
    t0: dict = {}
    with _Phase(t0, "build"):
        model = learner.build(0, len(labeled), len(labeled), None)
    with _Phase(t0, "fit"):
        learner.fit(model, dataset.x_train[labeled], dataset.y_train[labeled],
                    np.zeros(len(labeled), bool), 0)
    with _Phase(t0, "evaluate"):
        learner.evaluate(model, dataset.x_test, dataset.y_test)
    yield {"iteration": 0, "phases": t0, "total": sum(p["s"] for p in t0.values()),
           "trace_total": sum(p["trace_s"] for p in t0.values())}
    for iteration in range(1, _timed_iterations(model_name) + 1):
        t: dict = {}
        fits = {}
        if learner.prepare is not None:
            pool_timer = _BatchTimer()
            _with_fit_timer(model, pool_timer)
            start = time.perf_counter()
            try:
                with _Phase(t, "prepare"):
                    learner.prepare(model, iteration - 1, dataset.x_train[state.pool_ids])
            finally:
                del model.fit
            end = time.perf_counter()
            fits["prepare"] = {**pool_timer.split(), "before_fit_s": pool_timer.fit_start - start,
                               "after_fit_s": end - pool_timer.fit_end}
        k = stopping.acquisition_size(config.acquisition, len(state.labeled_ids))
        with _Phase(t, "score"):
            acquired, _ = loop.select(config, state, dataset, model, learner.score, k)
        state = state.acquire(acquired)
        if learner.generate is not None:
            x_star, y_star = dataset.x_train[acquired], dataset.y_train[acquired]
            with _Phase(t, "generate"):
                x_prime = learner.generate(model, x_star, y_star, iteration)
            with _Phase(t, "diag_score"):
                ids = np.concatenate([acquired, -1 - np.arange(len(x_prime))])
                learner.score(model, ids, np.concatenate([x_star, x_prime]), iteration)
            with _Phase(t, "plot"):
                plot_sample_grid(x_star, x_prime, y_star,
                                 loop.samples_path(workdir, iteration),
                                 title=f"iteration {iteration}: acquired x* | generated x'")
            if learner.persist_generated:
                generated = generated.add(x_prime, y_star, acquired, iteration)
        labeled = state.labeled_ids
        images = np.concatenate([dataset.x_train[labeled], generated.images])
        labels = np.concatenate([dataset.y_train[labeled], generated.labels])
        is_generated = np.arange(len(labels)) >= len(labeled)
        with _Phase(t, "build"):
            model = learner.build(iteration, len(labeled), len(labels), model)
        with _Phase(t, "fit"):
            learner.fit(model, images, labels, is_generated, iteration)
        fits["fit"] = probe.timer.split()
        with _Phase(t, "evaluate"):
            accuracy = learner.evaluate(model, dataset.x_test, dataset.y_test)
        yield {"iteration": iteration, "phases": t, "fits": fits,
               "total": sum(p["s"] for p in t.values()),
               "cpu_total": sum(p["cpu_s"] for p in t.values()),
               "trace_total": sum(p["trace_s"] for p in t.values()),
               "rows": len(labels), "labeled": len(labeled), "accuracy": accuracy,
               "model": model, "images": images, "labels": labels,
               "is_generated": is_generated}


def _phase_line(name: str, result: dict) -> str:
    cells = []
    for phase in PHASES:
        p = result["phases"].get(phase)
        cells.append(f"{phase} {'-':>6}" if p is None else f"{phase} {p['s']:6.2f}")
    return (f"{name:<18} it{result['iteration']} " + "  ".join(cells)
            + f"  total {result['total']:6.2f}  (cpu {result['cpu_total']:6.2f}; rows "
            f"{result['rows']}, test accuracy "
            f"{result['accuracy']:.3f})")


def _trace_line(name: str, result: dict) -> str:
    cells = []
    for phase in PHASES:
        p = result["phases"].get(phase)
        if p is not None:
            cells.append(f"{phase} {p['cpu_s']:.2f} {p['trace_s']:.2f}/{p['traces']}")
    return (f"{name:<18} it{result['iteration']} cpu_s trace_s/graphs: " + "  ".join(cells)
            + f"  trace total {result['trace_total']:.2f}")


def _fit_line(name: str, result: dict) -> str:
    cells = []
    for phase, split in result["fits"].items():
        if split:
            cells.append(f"{phase}: {split['steps']} steps, first {split['first_step_s']:.2f}s, "
                         f"others {split['other_steps_s']:.2f}s ({split['step_ms']:.1f} ms/step), "
                         f"outside steps {split['outside_steps_s']:.2f}s"
                         + (f", before fit {split['before_fit_s']:.2f}s, after fit "
                            f"{split['after_fit_s']:.2f}s" if "before_fit_s" in split else ""))
    return f"{name:<18} it{result['iteration']} " + " | ".join(cells)


def _timed_call(fn, repeats: int) -> float:
    fn()  # trace
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def breakdown(vae: dict, bald: dict, dataset) -> list[str]:
    """ms per call of the parts of vaeacgan's joint train_step (warm), beside bald's."""
    # pylint: disable=protected-access
    model = vae["model"]
    # Every timed call of the full step steps e, g and d (with --gan_update_every=k only every
    # k-th would, and the median would be C's step alone); the timed runs are over.
    model.update_every = 1
    n = _BATCH.value
    rng = np.random.default_rng(0)
    pick = rng.choice(len(vae["labels"]), n, replace=False)
    x = tf.cast(vae["images"][pick], tf.float32) / 255.0
    y = tf.constant(vae["labels"][pick], tf.int32)
    real = tf.constant((~vae["is_generated"][pick]).astype(np.float32))
    rows, weight_total = model._real_rows(x, y, real)
    y_onehot = tf.one_hot(rows.labels, model.num_classes)
    z = tf.random.stateless_normal([tf.shape(rows.images)[0], model.latent_dim], seed=[0, 0])
    fake = model.generator([z, y_onehot], training=False)

    def generative_gradients():
        with tf.GradientTape(persistent=True) as tape:
            losses = model._generative_losses(rows)[0]
        return [tape.gradient(loss, model.networks()[name]) for name, loss in losses.items()]

    parts = {
        "train_step (joint, e/g/d stepping)": tf.function(lambda: model.train_step(
            (x, (y, 1.0 - real)))),
        "  e/g/d update (_generative_update)": tf.function(
            lambda: model._generative_update(*rows)),
        "    forward + 3 backward passes, no apply": tf.function(generative_gradients),
        "    forward+losses only (_generative_losses)": tf.function(
            lambda: model._generative_losses(rows)[0]),
        "    g(z) forward": tf.function(
            lambda: model.generator([z, y_onehot], training=True)),
        "    d(x) forward (one of 3 d passes)": tf.function(
            lambda: model.discriminator(rows.images, training=True)),
        "    e(x) + g forward (_reconstruct)": tf.function(
            lambda: model._reconstruct(rows, y_onehot)[0]),
        "    C(fake) forward, BN restored (_classify_generated)": tf.function(
            lambda: model._classify_generated(fake)),
        "  C update (_classifier_update)": tf.function(
            lambda: model._classifier_update(x, y, real, weight_total, rows, {"fake": fake})),
        "    C(x) forward": tf.function(
            lambda: model.classifier(x, training=True)),
    }
    lines = [f"breakdown of vaeacgan's joint train_step on one batch of {n} rows "
             f"({int(tf.reduce_sum(real))} real) of cnn iteration {vae['iteration']}, "
             f"ms per call (median of {_BREAKDOWN_REPEATS.value}, warm):"]
    for name, fn in parts.items():
        lines.append(f"  {name:<56} {_timed_call(fn, _BREAKDOWN_REPEATS.value):8.2f}")
    for size in (50, 100, 200):
        xp = tf.cast(dataset.x_train[-size:], tf.float32) / 255.0
        yp = tf.constant(dataset.y_train[-size:], tf.int32)
        step = tf.function(functools.partial(
            lambda xp, yp: model._reconstruction_step(xp, yp, tf.ones(tf.shape(yp))), xp, yp))
        ms = _timed_call(step, _BREAKDOWN_REPEATS.value)
        lines.append(f"  {f'pool phase step (reconstruction), batch {size}':<56} {ms:8.2f}"
                     f"  ({ms / size:.3f} ms/image)")
    classifier = bald["model"]
    xb = tf.cast(bald["images"][:n], tf.float32) / 255.0
    yb = tf.constant(bald["labels"][:n], tf.int32)
    step = tf.function(lambda: classifier.train_step((xb, yb)))
    lines.append(f"  {'bald: classifier train_step':<56} "
                 f"{_timed_call(step, _BREAKDOWN_REPEATS.value):8.2f}")
    return lines


# The compute floor: what vaeacgan must compute, at the FLOP rate of bald's own training steps.

_NESTED_OPS = ("If", "StatelessIf", "While", "StatelessWhile", "PartitionedCall",
               "StatefulPartitionedCall")


def _live_flops(fn) -> int:
    """FLOPs of one call of `fn` (no arguments): TensorFlow's registered op statistics summed
    over the ops its graph runs, i.e. the ops the graph's outputs and stateful updates depend on
    (gradient ops that the tape creates and nothing uses, e.g. filter gradients of C's layers
    in g's auxiliary loss, are not run and not counted). Ops without statistics (BatchNorm's
    and most element-wise ops) count 0, so this is a lower bound. Traces `fn`, runs nothing."""
    # pylint: disable-next=import-outside-toplevel
    from tensorflow.python.framework import ops as tf_ops
    graph = tf.function(fn).get_concrete_function().graph
    todo = [t.op for t in graph.outputs] + list(graph.control_outputs)
    seen, total = set(), 0
    while todo:
        op = todo.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type in _NESTED_OPS:  # its ops would go uncounted
            raise RuntimeError(f"{op.type} op {op.name} in the graph: count its body too")
        try:
            total += int(tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0)
        except ValueError:  # no statistics registered for this op type
            pass
        todo += [t.op for t in op.inputs] + list(op.control_inputs)
    return total


def compute_floor(model_name: str, vae: dict, bald: dict) -> dict:
    """FLOPs per row of each step and the floor of vaeacgan's iteration time over bald's.

    Per row: bald's train_step and the VAE-ACGAN's classifier update (the same work, on every
    row: oracle-labeled and stored x'), the e/g/d update with C's auxiliary pass (per real row:
    g(z), g(e(x)), d three times, e, C's forward and input gradient for g's auxiliary loss,
    their backward passes), and the pool phase's e/g step (per pool row). The fit of an
    iteration with L labeled rows and G stored x' then computes epochs x ((L + G) C + L egd)
    against bald's epochs x L C. The floor gives vaeacgan bald's measured iteration plus its
    extra FLOPs at the rate of bald's warm train_step (median of repeated calls of one traced
    step: no tracing, no fit or epoch overhead), i.e. no overhead of its own at all.
    """
    # pylint: disable=protected-access
    from tf_bgadl.models.vae_acgan import _Rows  # pylint: disable=import-outside-toplevel
    model, classifier, n = vae["model"], bald["model"], _BATCH.value
    real_rows = vae["images"][~vae["is_generated"]]
    real = max(1, int(round(n * vae["labeled"] / vae["rows"])))
    x = tf.cast(real_rows[:n], tf.float32) / 255.0
    y = tf.constant(vae["labels"][~vae["is_generated"]][:n], tf.int32)
    xb = tf.cast(bald["images"][:n], tf.float32) / 255.0
    yb = tf.constant(bald["labels"][:n], tf.int32)
    rows = _Rows(x[:real], y[:real], tf.constant(0), tf.constant(real))
    all_rows = _Rows(x, y, tf.constant(0), tf.constant(n))
    per_row = {
        "bald_step": _live_flops(lambda: classifier.train_step((xb, yb))) / n,
        "c_step": _live_flops(lambda: model._classifier_update(
            x, y, tf.ones([n]), tf.constant(float(n)), all_rows, {})) / n,
        "egd_step": _live_flops(lambda: model._generative_update(*rows)) / real,
        "pool_step": _live_flops(lambda: model._reconstruction_update(*rows)) / real,
    }
    bald_step_s = _timed_call(tf.function(lambda: classifier.train_step((xb, yb))),
                              _BREAKDOWN_REPEATS.value) / 1e3
    seconds_per_flop = bald_step_s / (per_row["bald_step"] * n)
    out = {"per_row": per_row, "bald_step_ms": 1e3 * bald_step_s, "iterations": []}
    # The run's schedule (not model.update_every: `breakdown` sets that to 1 for its timings).
    update_every = _make_config(model_name, "vaeacgan").generator.update_every
    for v, b in zip(results_of(model_name, "vaeacgan"), results_of(model_name, "bald")):
        epochs = _EPOCHS.value
        bald_fit = epochs * b["labeled"] * per_row["bald_step"]
        c_fit = epochs * v["rows"] * per_row["c_step"]
        vae_fit = c_fit + epochs * v["labeled"] * per_row["egd_step"] / update_every
        pool_rows = v["fits"].get("prepare", {}).get("steps", 0) * n
        pool = pool_rows * per_row["pool_step"]
        classifier_only = b["total"] + (c_fit - bald_fit) * seconds_per_flop
        without_pool = b["total"] + (vae_fit - bald_fit) * seconds_per_flop
        out["iterations"].append({
            "iteration": v["iteration"], "fit_flops_ratio": vae_fit / bald_fit,
            "pool_flops_over_bald_fit": pool / bald_fit,
            "classifier_only": classifier_only / b["total"],
            "floor_without_pool": without_pool / b["total"],
            "floor": (without_pool + pool * seconds_per_flop) / b["total"],
            "floor_s": without_pool + pool * seconds_per_flop, "bald_s": b["total"],
            "classifier_only_s": classifier_only,
            "measured": v["total"] / b["total"]})
    return out


def classifier_rows_ratio(iterations: int, initial: int, acquired: int) -> float:
    """The classifier's training rows of a whole run, vaeacgan over bald, with the same epochs:
    iteration i trains on L_i = initial + i x acquired oracle labels (bald) and on L_i plus one
    stored x' per acquired x*, i x acquired more (vaeacgan, generation=persisted). A floor of
    vaeacgan_over_bald for the classifier's fit alone (nothing of e, g, d), which tends to 2 as
    the run grows: at the paper's protocol (150 iterations of +100 from 100) it is 1.99."""
    labels = [initial + i * acquired for i in range(iterations + 1)]
    return sum(n + i * acquired for i, n in enumerate(labels)) / sum(labels)


def results_of(model_name: str, method: str) -> list[dict]:
    return _RESULTS[f"{model_name}/{method}"]


_RESULTS: dict = {}
_FIRST: dict = {}  # iteration 0 (the first build, fit and evaluation: where tracing happens)


def floor_lines(model_name: str, floor: dict) -> list[str]:
    r = floor["per_row"]
    lines = [f"  {model_name:<9} MFLOP per row: bald train_step {r['bald_step'] / 1e6:.1f}; "
             f"vaeacgan C update {r['c_step'] / 1e6:.1f} (every row), e/g/d update with C's "
             f"auxiliary pass {r['egd_step'] / 1e6:.1f} (real rows), pool step "
             f"{r['pool_step'] / 1e6:.1f} (pool rows); bald's warm train_step "
             f"{floor['bald_step_ms']:.1f} ms for {r['bald_step'] * _BATCH.value / 1e9:.2f} GFLOP"]
    for it in floor["iterations"]:
        lines.append(
            f"  {model_name:<9} it{it['iteration']}: fit FLOPs {it['fit_flops_ratio']:.2f}x "
            f"bald's, pool phase {it['pool_flops_over_bald_fit']:.2f}x bald's fit; floor of "
            f"vaeacgan/bald {it['classifier_only']:.2f} for the classifier's rows alone (no "
            f"e/g/d work at all), {it['floor_without_pool']:.2f} without any pool phase, "
            f"{it['floor']:.2f} with this one (measured {it['measured']:.2f})")
    return lines


def main(argv):
    del argv
    if _THREADS.value:
        tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
        tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
    tf.config.experimental.enable_op_determinism()  # as tf_bgadl.train (--deterministic)
    _count_traces()
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")  # the retracing warnings: the trace counts say it
    start = time.perf_counter()
    dataset = data.load_dataset("mnist5k", _DATA_DIR.value)
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    print(f"tensorflow={tf.__version__} keras={keras.__version__} cpus={os.cpu_count()} "
          f"affinity={len(os.sched_getaffinity(0))} intra_op_threads={intra or 'default'} "
          f"inter_op_threads={inter or 'default'} "
          f"TF_NUM_INTRAOP_THREADS={os.environ.get('TF_NUM_INTRAOP_THREADS', '-')} "
          f"load1={os.getloadavg()[0]:.2f} deterministic=True", flush=True)
    vae_config = _make_config("cnn", "vaeacgan")
    print(f"protocol: mnist5k ({len(dataset.y_train)} train, {len(dataset.y_test)} test), "
          f"{_INITIAL.value}/class to start, +{_ACQUIRE.value} of {_POOL_SUBSET.value} scored, "
          f"T={_MC.value}, {_EPOCHS.value} epochs of batch {_BATCH.value}, adam; seed "
          f"{_SEED.value}; vaeacgan: generation={vae_config.generator.generation} "
          f"carry_over={vae_config.generator.carry_over} "
          f"pool_steps_fresh={vae_config.generator.pool_steps_fresh} "
          f"pool_steps={vae_config.generator.pool_steps} "
          f"update_every={vae_config.generator.update_every} "
          f"gan_width={vae_config.generator.width_multiplier} kl_weight="
          f"{vae_config.generator.kl_weight}; resnet18 width {_RESNET_WIDTH.value} (lr 1e-2, "
          "no weight decay)", flush=True)
    results = _RESULTS
    with tempfile.TemporaryDirectory(prefix="iteration_cost_") as workdir:
        for model_name in _MODELS.value:
            # Warm-up, untimed: iteration 0 of both methods on models thrown away. The timed
            # runs below build, trace and optimise their own functions again.
            for m in _METHODS:
                next(run_method(model_name, m, dataset, workdir))
            # Iteration by iteration, alternating the methods (and which goes first), so that a
            # change in the machine's load falls on both.
            runs = {m: run_method(model_name, m, dataset, workdir) for m in _METHODS}
            for m in _METHODS:
                _FIRST[f"{model_name}/{m}"] = next(runs[m])
                results[f"{model_name}/{m}"] = []
            for iteration in range(1, _timed_iterations(model_name) + 1):
                for m in _METHODS[::1 if iteration % 2 else -1]:
                    results[f"{model_name}/{m}"].append(next(runs[m]))
            for method in _METHODS:
                name = f"{model_name}/{method}"
                for r in results[name]:
                    print(_phase_line(name, r), flush=True)
                for r in results[name]:
                    print(_trace_line(name, r), flush=True)
                for r in results[name]:
                    print(_fit_line(name, r), flush=True)
    print("seconds per phase, iteration 1 (vaeacgan - bald = what the method adds):")
    for model_name in _MODELS.value:
        vae, bald = results[f"{model_name}/vaeacgan"][0], results[f"{model_name}/bald"][0]
        diff = {p: vae["phases"].get(p, {"s": 0.0})["s"] - bald["phases"].get(p, {"s": 0.0})["s"]
                for p in PHASES}
        extra = vae["total"] - bald["total"]
        print(f"  {model_name:<9} " + "  ".join(
            f"{p} {d:+.2f} ({100 * d / extra:.0f}%)" for p, d in diff.items() if abs(d) >= 0.005)
            + f"  total {extra:+.2f}")
    if any(len(rs) >= 2 for rs in results.values()):
        print("iteration 2 - iteration 1, seconds per phase (what each iteration pays again, "
              "plus 50 more labeled rows):")
        for name, rs in results.items():
            if len(rs) < 2:
                continue
            print(f"  {name:<18} " + "  ".join(
                f"{p} {rs[1]['phases'][p]['s'] - rs[0]['phases'][p]['s']:+.2f} "
                f"(trace {rs[1]['phases'][p]['trace_s']:.2f} again)"
                for p in PHASES if p in rs[0]["phases"]))
    if _BREAKDOWN.value and "cnn" in _MODELS.value:
        for line in breakdown(results["cnn/vaeacgan"][0], results["cnn/bald"][0], dataset):
            print(line)
    print("compute floor (FLOPs of the ops each step's graph runs, TensorFlow's op statistics; "
          "vaeacgan = bald's measured iteration + its extra FLOPs at the FLOP rate of bald's "
          "warm train_step):")
    floors = {m: compute_floor(m, results[f"{m}/vaeacgan"][0], results[f"{m}/bald"][0])
              for m in _MODELS.value}
    for m, floor in floors.items():
        for line in floor_lines(m, floor):
            print(line)
    print(f"bench wall time {time.perf_counter() - start:.0f}s; load1={os.getloadavg()[0]:.2f}")
    print("vaeacgan/bald per iteration, wall (CPU) seconds:")
    run = {}
    for m in _MODELS.value:
        vae, bald = results[f"{m}/vaeacgan"], results[f"{m}/bald"]
        cells = [f"it{v['iteration']} {v['total'] / b['total']:.3f} "
                 f"({v['cpu_total'] / b['cpu_total']:.3f})" for v, b in zip(vae, bald)]
        print(f"  {m:<9} " + ", ".join(cells))
        first_v, first_b = _FIRST[f"{m}/vaeacgan"], _FIRST[f"{m}/bald"]
        print(f"  {m:<9} it0 (build, fit, evaluate; tracing {first_v['trace_total']:.2f} s and "
              f"{first_b['trace_total']:.2f} s): vaeacgan {first_v['total']:.2f} s, bald "
              f"{first_b['total']:.2f} s")
        run[m] = ((first_v["total"] + sum(v["total"] for v in vae))
                  / (first_b["total"] + sum(b["total"] for b in bald)))
        floor_run = (sum(it["floor_s"] for it in floors[m]["iterations"])
                     / sum(it["bald_s"] for it in floors[m]["iterations"]))
        classifier_run = (sum(it["classifier_only_s"] for it in floors[m]["iterations"])
                          / sum(it["bald_s"] for it in floors[m]["iterations"]))
        steady = [v["total"] / b["total"] for v, b in zip(vae[1:], bald[1:])]
        prefix = "" if m == "cnn" else f"{m}_"
        print(f"{prefix}floor_run={floor_run:.3f} {prefix}classifier_only_floor_run="
              f"{classifier_run:.3f} {prefix}iteration1_vaeacgan_over_bald="
              f"{vae[0]['total'] / bald[0]['total']:.3f}"
              + (f" {prefix}later_iterations_vaeacgan_over_bald={np.mean(steady):.3f}"
                 if steady else ""))
    protocol_rows = classifier_rows_ratio(_TIMED.value, _INITIAL.value * dataset.num_classes,
                                          _ACQUIRE.value)
    print("classifier rows, vaeacgan over bald, same epochs (a floor of the fit alone): this "
          f"protocol {protocol_rows:.3f} ({_TIMED.value} iterations), the paper's "
          f"{classifier_rows_ratio(150, 100, 100):.3f} (150 iterations of +100 from 100)")
    for m in [m for m in run if m != "cnn"]:
        print(f"{m}_vaeacgan_over_bald={run[m]:.3f}")
    if "cnn" in run:
        print(f"vaeacgan_over_bald={run['cnn']:.3f}")

if __name__ == "__main__":
    app.run(main)
