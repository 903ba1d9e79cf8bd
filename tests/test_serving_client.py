"""The serving client against local doubles of TF Serving's REST and gRPC APIs."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_module
from serving_double import SavedModelBackend, start_grpc, start_rest
from tf_bgadl import serving_export
from tf_bgadl.models import build_classifier
from tf_bgadl.serving import client as client_lib
from tf_bgadl.serving.ranking import rank

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    classifier = build_classifier("cnn", num_classes=10, input_shape=SHAPE, seed=0)
    base = str(tmp_path_factory.mktemp("models"))
    path = serving_export.export_classifier(classifier, base, model_name="tf_bgadl",
                                            image_shape=SHAPE, mc_samples=5)
    backend = SavedModelBackend(path, "tf_bgadl")
    rest, url = start_rest(backend)
    grpc_server, address = start_grpc(backend)
    yield {"classifier": classifier, "url": url, "grpc": address}
    rest.shutdown()
    grpc_server.stop(0)


def _images(n):
    return np.random.default_rng(0).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


@pytest.mark.parametrize("row_format", [False, True])
def test_rest_predict_both_formats(served, row_format):
    client = client_lib.RestClient(served["url"], "tf_bgadl")
    images = _images(5)
    out = client.predict(images, row_format=row_format)
    expected = served["classifier"].probabilities(tf.constant(images / 255.0, tf.float32))
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-4, atol=1e-6)
    assert out["classes"].tolist() == np.argmax(expected, -1).tolist()
    bald = client.predict(images, "bald", row_format=row_format)
    assert bald["bald"].shape == (5,) and np.all(bald["bald"] >= 0)
    assert bald["mean_probabilities"].shape == (5, 10)


def test_rest_seeded_and_metadata(served):
    client = client_lib.RestClient(served["url"], "tf_bgadl", version=1)
    a = client.predict(_images(4), "bald_seeded", seed=[1, 2])
    b = client.predict(_images(4), "bald_seeded", seed=[1, 2])
    np.testing.assert_array_equal(a["bald"], b["bald"])
    # One seed for the call is the per-row seeds of `per_row_seeds`.
    rows = client.predict(_images(4), "bald_seeded", seed=client_lib.per_row_seeds([1, 2], 4))
    np.testing.assert_array_equal(rows["bald"], a["bald"])
    assert "bald" in client.metadata()["metadata"]["signature_def"]


def test_rest_seeded_row_format(served):
    """REST `instances` with a per-row image and seed, as TF Serving's row format needs."""
    images, seeds = _images(5), np.arange(10, dtype=np.int32).reshape(5, 2)
    body = client_lib.build_rest_request(images / 255.0, "bald_seeded", seed=seeds,
                                         row_format=True)
    assert body["instances"][3] == {"images": (images[3] / 255.0).tolist(), "seed": [6, 7]}
    client = client_lib.RestClient(served["url"], "tf_bgadl")
    rows = client.predict(images, "bald_seeded", seed=seeds, row_format=True)
    columns = client.predict(images, "bald_seeded", seed=seeds)
    assert rows["bald"].shape == (5,) and rows["mean_probabilities"].shape == (5, 10)
    for key in serving_export.BALD_OUTPUTS:
        np.testing.assert_allclose(rows[key], columns[key], rtol=0, atol=1e-6)


def test_per_row_seeds():
    seeds = client_lib.per_row_seeds([3, -4], 10)
    assert seeds.dtype == np.int32 and seeds.shape == (10, 2)
    assert len({tuple(row) for row in seeds}) == 10
    # The documented rule, and a row's seed does not depend on how a call is split.
    expected = np.random.SeedSequence([3, 2**32 - 4, 7]).generate_state(2).view(np.int32)
    np.testing.assert_array_equal(seeds[7], expected)
    np.testing.assert_array_equal(client_lib.per_row_seeds([3, -4], 6, first_row=4), seeds[4:])
    np.testing.assert_array_equal(client_lib.per_row_seeds(seeds, 10), seeds)  # per row: as is


@pytest.mark.parametrize("seed, message", [
    ([1, 2, 3], "got shape \\[3\\]"),
    ([[1, 2]] * 3, "got shape \\[3, 2\\]"),
    (7, "got shape \\[\\]"),
    ([1.5, 2.0], "dtype float64"),
    ([2**31, 0], "outside the int32 range"),
])
def test_bad_seeds_are_refused_before_sending(seed, message):
    client = client_lib.RestClient("http://127.0.0.1:9", "tf_bgadl", timeout=5)  # unreachable
    allowed = "int32 \\[2\\] \\(one seed for the request.*\\[N, 2\\] = \\[4, 2\\]"
    with pytest.raises(ValueError, match=allowed) as error:
        client.predict(_images(4), "bald_seeded", seed=seed)
    assert error.match(message)
    with pytest.raises(ValueError, match=message):
        client_lib.build_grpc_request(_images(4) / 255.0, "tf_bgadl", "bald_seeded", seed=seed)


def test_rest_server_errors_are_clear(served):
    with pytest.raises(client_lib.ServingError, match="not found"):
        client_lib.RestClient(served["url"], "tf_bgadl").predict(_images(2), "nope")
    with pytest.raises(client_lib.ServingError, match="HTTP 404"):
        client_lib.RestClient(served["url"], "other").predict(_images(2))
    with pytest.raises(client_lib.ServingError, match="cannot reach"):
        client_lib.RestClient("http://127.0.0.1:9", "tf_bgadl", timeout=5).predict(_images(1))
    with pytest.raises(client_lib.ServingError, match="TF Serving error: boom"):
        client_lib.parse_rest_response({"error": "boom"})


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8)), "shape \\[N, H, W, C\\]"),
    (np.zeros((1, 2, 8, 8, 1)), "shape \\[N, H, W, C\\]"),
    (np.zeros((2, 8, 8, 1), np.int64), "dtype int64"),
    (np.full((2, 8, 8, 1), 3.0), "must lie in \\[0, 1\\]"),
    (np.zeros((0, 8, 8, 1)), "empty"),
])
def test_bad_images_are_refused_before_sending(bad, message):
    with pytest.raises(ValueError, match=message):
        client_lib.prepare_images(bad)
    with pytest.raises(ValueError, match="expects \\(8, 8, 1\\)"):
        client_lib.prepare_images(np.zeros((1, 4, 4, 1), np.float32), (8, 8, 1))


def test_grpc_request_building_and_parsing(served):
    images = _images(3).astype(np.float32) / 255.0
    request = client_lib.build_grpc_request(images, "tf_bgadl", "bald_seeded", seed=[7, 8],
                                            version=1)
    assert request.model_spec.signature_name == "bald_seeded"
    assert request.model_spec.version.value == 1
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), images)
    assert (tf.make_ndarray(request.inputs["seed"]).tolist()
            == client_lib.per_row_seeds([7, 8], 3).tolist())
    client = client_lib.GrpcClient(served["grpc"], "tf_bgadl")
    out = client.predict(_images(3), "bald_seeded", seed=[7, 8])
    rest = client_lib.RestClient(served["url"], "tf_bgadl").predict(_images(3), "bald_seeded",
                                                                     seed=[7, 8])
    np.testing.assert_allclose(out["bald"], rest["bald"], rtol=1e-5)
    with pytest.raises(client_lib.ServingError, match="INVALID_ARGUMENT"):
        client.predict(_images(1), "nope")
    client.close()


def test_rank_orders_by_bald(served):
    client = client_lib.RestClient(served["url"], "tf_bgadl")
    images = _images(20)
    names = [f"img{i}" for i in range(20)]
    rows = rank(client, names, images, top=5, batch_size=8, seed=3)
    # Image i's seed depends on (3, i) only: one request for all 20 gives the same scores.
    scores = client.predict(images, "bald_seeded", seed=[3, 0])["bald"]
    assert [r["name"] for r in rows] == [names[i] for i in np.argsort(-scores, kind="stable")[:5]]
    np.testing.assert_allclose([r["bald"] for r in rows],
                               np.sort(scores)[::-1][:5], rtol=0, atol=1e-6)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    other = rank(client, names, images, top=5, batch_size=3, seed=3)
    assert [r["name"] for r in other] == [r["name"] for r in rows]
    np.testing.assert_allclose([r["bald"] for r in other], [r["bald"] for r in rows], atol=1e-6)


def test_rank_command(served, tmp_path):
    path = tmp_path / "pool.npy"
    np.save(path, _images(12))
    proc = run_module("tf_bgadl.serving.rank", f"--server={served['url']}",
                      f"--images={path}", "--top=3", "--seed=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "bald", "class", "image"] and len(lines) == 4
    bad = run_module("tf_bgadl.serving.rank", "--server=http://127.0.0.1:9",
                     f"--images={path}")
    assert bad.returncode != 0 and "cannot reach" in bad.stderr and "Traceback" not in bad.stderr


def test_load_images_from_a_folder_and_npy(tmp_path):
    from PIL import Image
    from tf_bgadl.serving.ranking import load_images
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    names, images = load_images(str(folder), channels=1)
    assert names == ["0.png", "1.png", "2.png"] and images.shape == (3, 8, 8, 1)
    assert images[2].max() == 80
    np.save(tmp_path / "a.npy", images)
    names, again = load_images(str(tmp_path / "a.npy"), channels=1)
    assert names[0] == "a.npy[0]" and np.array_equal(again, images)
    with pytest.raises(ValueError, match="neither a .npy file nor a folder"):
        load_images(str(tmp_path / "missing.txt"), channels=1)
