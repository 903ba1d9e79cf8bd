"""SavedModel export: the SignatureDef contract, reloading, agreement with the library."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from conftest import run_module
from tf_bgadl import acquisition, serving_export
from tf_bgadl.models import build_classifier

SHAPE = (8, 8, 1)
T = 6


@pytest.fixture(scope="module")
def classifier():
    return build_classifier("resnet18", num_classes=10, input_shape=SHAPE,
                            width_multiplier=0.125, seed=0)


@pytest.fixture(scope="module")
def exported(classifier, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("models"))
    path = serving_export.export_classifier(classifier, base, model_name="m", image_shape=SHAPE,
                                            mc_samples=T)
    return path


@pytest.fixture(scope="module")
def bald_seeded(exported):
    return tf.saved_model.load(exported).signatures["bald_seeded"]


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *SHAPE)).astype(np.float32)


def _seeds(n, seed=0):
    """`bald_seeded`'s per-row seeds, int32 [n, 2], over the whole int32 range."""
    return np.random.default_rng(seed).integers(-2**31, 2**31, (n, 2)).astype(np.int32)


def test_layout_and_versions(classifier, tmp_path):
    first = serving_export.export_classifier(classifier, str(tmp_path), model_name="m",
                                             image_shape=SHAPE, mc_samples=T)
    second = serving_export.export_classifier(classifier, str(tmp_path), model_name="m",
                                              image_shape=SHAPE, mc_samples=T)
    assert first == str(tmp_path / "m" / "1") and second == str(tmp_path / "m" / "2")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]  # no temporary folder left
    assert os.path.isfile(os.path.join(first, "saved_model.pb"))


def test_signature_defs_as_tf_serving_reads_them(exported):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(exported, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    (meta,) = proto.meta_graphs
    assert "serve" in meta.meta_info_def.tags
    sigs = meta.signature_def
    assert {"serving_default", "bald", "bald_seeded"} <= set(sigs)
    for name, sig in sigs.items():
        if name.startswith("__"):
            continue
        assert sig.method_name == "tensorflow/serving/predict"
        images = sig.inputs["images"]
        assert images.dtype == tf.float32.as_datatype_enum
        assert [d.size for d in images.tensor_shape.dim] == [-1, *SHAPE]
    assert set(sigs["serving_default"].inputs) == {"images"}
    assert set(sigs["serving_default"].outputs) == {"probabilities", "classes"}
    assert sigs["serving_default"].outputs["classes"].dtype == tf.int64.as_datatype_enum
    for name in ("bald", "bald_seeded"):
        assert set(sigs[name].outputs) == set(serving_export.BALD_OUTPUTS)
        for out in serving_export.BALD_OUTPUTS:
            assert sigs[name].outputs[out].tensor_shape.dim[0].size == -1  # batch-major
    for name in ("bald", "bald_seeded"):
        means = sigs[name].outputs["mean_probabilities"]
        assert [d.size for d in means.tensor_shape.dim] == [-1, 10]
    seed = sigs["bald_seeded"].inputs["seed"]
    assert seed.dtype == tf.int32.as_datatype_enum
    assert [d.size for d in seed.tensor_shape.dim] == [-1, 2]  # batch-major: one seed a row


@pytest.mark.parametrize("batch", [1, 7])
def test_reloaded_signatures(exported, classifier, batch):
    loaded = tf.saved_model.load(exported)
    x = tf.constant(_images(batch))
    out = loaded.signatures["serving_default"](images=x)
    assert out["probabilities"].shape == (batch, 10) and out["classes"].shape == (batch,)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["probabilities"], classifier.probabilities(x), rtol=1e-5,
                               atol=1e-6)
    a = loaded.signatures["bald"](images=x)
    b = loaded.signatures["bald"](images=x)
    assert a["bald"].shape == (batch,) and a["mean_probabilities"].shape == (batch, 10)
    assert np.all(a["bald"].numpy() >= 0)
    assert not np.allclose(a["mean_probabilities"], b["mean_probabilities"])  # fresh masks
    seed = tf.constant([[3, 4 + i] for i in range(batch)], tf.int32)
    s1 = loaded.signatures["bald_seeded"](images=x, seed=seed)
    s2 = loaded.signatures["bald_seeded"](images=x, seed=seed)
    for key in serving_export.BALD_OUTPUTS:
        np.testing.assert_array_equal(s1[key], s2[key])


def test_bald_signature_agrees_with_the_library(exported, classifier):
    loaded = tf.saved_model.load(exported)
    x = tf.constant(_images(6, seed=1))
    seeds = _seeds(6)
    served = loaded.signatures["bald_seeded"](images=x, seed=tf.constant(seeds))
    # Row i is the library's MC scoring of image i alone with seed i.
    probs = tf.concat([classifier.mc_probabilities(x[i:i + 1], T, seed=seeds[i])
                       for i in range(6)], axis=0)
    np.testing.assert_allclose(served["mean_probabilities"], tf.reduce_mean(probs, axis=1),
                               atol=1e-6)
    np.testing.assert_allclose(served["bald"], acquisition.bald(probs), rtol=1e-4, atol=1e-6)
    assert np.array_equal(np.argsort(-served["bald"].numpy(), kind="stable"),
                          np.argsort(-acquisition.bald(probs).numpy(), kind="stable"))
    np.testing.assert_allclose(served["predictive_entropy"] - served["expected_entropy"],
                               served["bald"], atol=1e-5)


def test_bald_seeded_row_depends_only_on_its_image_and_seed(bald_seeded):
    """TF Serving may merge requests or split them: a row's scores must not change."""
    image, seed = _images(1, seed=2), _seeds(1, seed=2)
    alone = bald_seeded(images=tf.constant(image), seed=tf.constant(seed))
    others, other_seeds = _images(7, seed=3), _seeds(7, seed=3)
    for position in (0, 4):
        batch, batch_seeds = others.copy(), other_seeds.copy()
        batch[position], batch_seeds[position] = image[0], seed[0]
        inside = bald_seeded(images=tf.constant(batch), seed=tf.constant(batch_seeds))
        for key in serving_export.BALD_OUTPUTS:
            np.testing.assert_allclose(inside[key][position], alone[key][0], rtol=0, atol=1e-6)
    # The seed matters: the same image with another seed gets other masks.
    other = bald_seeded(images=tf.constant(image), seed=tf.constant(_seeds(1, seed=4)))
    assert not np.allclose(other["mean_probabilities"], alone["mean_probabilities"])


def test_bald_seeded_needs_one_seed_per_image(bald_seeded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="one seed int32 \\[2\\] per image"):
        bald_seeded(images=tf.constant(_images(3)), seed=tf.constant(_seeds(2)))


def test_fresh_loads_do_not_replay_masks(exported):
    x = tf.constant(_images(4))
    first = tf.saved_model.load(exported).signatures["bald"](images=x)["mean_probabilities"]
    again = tf.saved_model.load(exported).signatures["bald"](images=x)["mean_probabilities"]
    assert not np.allclose(first, again)


def test_bald_leaves_batchnorm_statistics_unchanged(exported):
    loaded = tf.saved_model.load(exported)
    moving = [v for v in loaded.variables if "moving" in v.name]
    assert moving
    before = [v.numpy().copy() for v in moving]
    loaded.signatures["bald"](images=tf.constant(_images(8) * 3))
    loaded.signatures["serving_default"](images=tf.constant(_images(8) * 3))
    for b, v in zip(before, moving):
        np.testing.assert_array_equal(b, v.numpy())


def test_warmup_requests(exported):
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(exported, serving_export.WARMUP_FILE)
    signatures = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert tf.make_ndarray(request.inputs["images"]).shape[1:] == SHAPE
        signatures.append(request.model_spec.signature_name)
    assert signatures == ["serving_default", "bald"]


def test_saved_model_cli_show_and_run(exported, tmp_path):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    show = subprocess.run([cli, "show", "--dir", exported, "--all"], capture_output=True,
                          text=True, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "signature_def['bald']" in show.stdout
    np.save(tmp_path / "x.npy", np.full((3, *SHAPE), 0.5, np.float32))
    run = subprocess.run([cli, "run", "--dir", exported, "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs",
                          f"images={tmp_path / 'x.npy'}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "probabilities" in run.stdout


def test_export_command_end_to_end(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    train = run_module("tf_bgadl.train", "--dataset=digits", f"--data_dir={data_dir}",
                       "--method=vaeacgan", "--model=cnn", "--iterations=0", "--epochs=1",
                       "--initial_per_class=2", "--pool_subset=50", "--acquire_per_iteration=10",
                       "--latent_dim=8",
                       "--gan_width_multiplier=0.25", f"--workdir={workdir}")
    assert train.returncode == 0, train.stderr[-3000:]
    base = tmp_path / "models"
    proc = run_module("tf_bgadl.export", f"--workdir={workdir}", f"--export_base={base}",
                      "--mc_samples=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = json.loads(proc.stdout.strip().splitlines()[-1])["exported"]
    assert path == str(base / "tf_bgadl" / "1")
    loaded = tf.saved_model.load(path)
    assert loaded.signatures["bald"](images=tf.zeros((2, 8, 8, 1)))["bald"].shape == (2,)
    (tmp_path / "file").write_text("x")  # a base below a file cannot be created
    bad = run_module("tf_bgadl.export", f"--workdir={workdir}",
                     f"--export_base={tmp_path / 'file' / 'models'}")
    assert bad.returncode != 0 and "is not writable" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("case", ["missing", "unfinished"])
def test_export_command_errors(tmp_path, case):
    workdir, base = tmp_path / "run", tmp_path / "models"
    if case == "unfinished":
        workdir.mkdir()
        (workdir / "config.json").write_text(json.dumps({}))
        (workdir / "dataset.json").write_text(json.dumps({"image_shape": [8, 8, 1],
                                                          "num_classes": 10}))
    proc = run_module("tf_bgadl.export", f"--workdir={workdir}", f"--export_base={base}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    expected = {"missing": "does not exist", "unfinished": "no finished iteration"}[case]
    assert expected in proc.stderr
    assert not base.exists()  # no partial version folder


def test_unwritable_export_base_is_refused(classifier, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(serving_export.ExportError, match="not writable"):
        serving_export.export_classifier(classifier, str(tmp_path / "file" / "m"),
                                         model_name="m", image_shape=SHAPE, mc_samples=T)
    assert sorted(os.listdir(tmp_path)) == ["file"]
