"""Data sets through tensorflow-datasets, offline first, as in-memory arrays with stable ids.

Every data set goes through one code path: a tfds builder in `data_dir`, prepared once, read with
`as_dataset(shuffle_files=False)` (a fixed order). The id of a training example is its index in
that order, which is stable for a prepared data set; the test split is kept apart and never
enters the active-learning pool. The user's own images (`name="folder"`) are read through tfds'
ImageFolder in `tf_bgadl.folder_data`, with ids kept in a registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import time

import numpy as np
from absl import logging

# Hosts that tfds downloads each remote data set from (checked quickly before tfds is allowed to
# try: offline, tfds retries for minutes before it fails).
_DOWNLOAD_HOSTS = {
    "mnist": "storage.googleapis.com",
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "cifar10": "www.cs.toronto.edu",
    "cifar100": "www.cs.toronto.edu",
    "svhn_cropped": "ufldl.stanford.edu",
}
OFFLINE_ENV = "TF_BGADL_OFFLINE"  # set to 1 to never try a download


class DataError(RuntimeError):
    """A data set cannot be loaded; the message says which, where, and how to prepare it."""


UNLABELED = -1  # y_train of an image whose label is not known (a folder's unlabeled/ images)


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A labeled image data set in memory.

    Attributes:
      name: data set name.
      x_train: uint8 [N, H, W, C]; the id of example i is i.
      y_train: int64 [N]; `UNLABELED` (-1) where the label is not known (only the human oracle
        can acquire those: `--oracle=file`).
      x_test: uint8 [M, H, W, C].
      y_test: int64 [M].
      num_classes: number of classes C.
      class_names: the C class names (a folder data set's class folders), or None.
      train_sources: where training image i comes from (a folder data set's file path), or
        None when the id is the only handle (the tfds data sets).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...] | None = None
    train_sources: tuple[str, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                           "tensorflow_datasets")


def _can_reach(host: str, timeout: float = 3.0) -> bool:
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def prepare_command(name: str, data_dir: str) -> str:
    if name in ("mnist", "fashion_mnist"):
        return (f"python -m tf_bgadl.prepare_data --dataset={name} --data_dir={data_dir} "
                "--manual_dir=<folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz>"
                + ("  (Debian: apt-get install dataset-fashion-mnist gives "
                   "/usr/share/datasets/fashion-mnist)" if name == "fashion_mnist" else ""))
    return (f"python -m tf_bgadl.prepare_data --dataset={name} --data_dir={data_dir} on a machine "
            f"with network access, then copy {os.path.join(data_dir, name)} here")


@contextlib.contextmanager
def _preparation_lock(data_dir: str, name: str):
    """An exclusive lock per (data dir, data set): tfds fails when two processes (e.g. the cells
    of a study) prepare the same data set at once; the second waits and then finds it ready."""
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, f".{name}.prepare.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def get_builder(name: str, data_dir: str, manual_dir: str = ""):
    """Returns the tfds builder for `name`, prepared (see `_get_builder`), preparing it under a
    lock shared with every other process that uses the same data dir."""
    data_dir = data_dir or default_data_dir()
    with _preparation_lock(data_dir, name):
        return _get_builder(name, data_dir, manual_dir)


def _get_builder(name: str, data_dir: str, manual_dir: str = ""):
    """Returns the tfds builder for `name`, prepared (preparing it offline where possible).

    Args:
      name: a data set name from `tf_bgadl.config.DATASETS`.
      data_dir: tfds data dir ("" for tfds' default).
      manual_dir: folder of IDX files for `mnist`/`fashion_mnist`, prepared without network.

    Raises:
      DataError: the data set is neither prepared nor preparable from here; says where it
        looked and which command prepares it. Comes within seconds, never after tfds' retries.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    from tf_bgadl import datasets  # pylint: disable=import-outside-toplevel

    data_dir = data_dir or default_data_dir()
    if name in datasets.IN_PACKAGE_BUILDERS:
        builder = datasets.IN_PACKAGE_BUILDERS[name](data_dir=data_dir)
        if not builder.is_prepared():
            logging.info("Preparing %s into %s (from files shipped in a package)", name, data_dir)
            builder.download_and_prepare()
        return builder
    if manual_dir:
        if name not in datasets.IDX_BUILDERS:
            raise DataError(f"--manual_dir works for {sorted(datasets.IDX_BUILDERS)} (IDX files); "
                            f"not for --dataset={name}")
        builder = datasets.IDX_BUILDERS[name](idx_dir=manual_dir, data_dir=data_dir)
        if not builder.is_prepared():
            logging.info("Preparing %s into %s from IDX files in %s", name, data_dir, manual_dir)
            try:
                builder.download_and_prepare()
            except (FileNotFoundError, ValueError) as e:
                raise DataError(f"cannot prepare {name} from --manual_dir: {e}") from e
        return builder
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    host = _DOWNLOAD_HOSTS[name]
    if not _can_reach(host):
        raise DataError(
            f"data set {name!r} is not prepared in {builder.data_dir} and cannot be downloaded "
            f"({host} is unreachable). Prepare it with: {prepare_command(name, data_dir)}")
    logging.info("Downloading and preparing %s into %s", name, data_dir)
    builder.download_and_prepare()
    return builder


def load_dataset(name: str, data_dir: str = "", manual_dir: str = "", *, image_size: int = 0,
                 ids_path: str | None = None) -> ArrayDataset:
    """Loads both splits of a data set into memory.

    Args:
      name: a tfds data set (see `get_builder`), or "folder": the user's images in `data_dir`
        (`tf_bgadl.folder_data.load_folder_dataset`).
      data_dir: tfds data dir ("" for tfds' default); for "folder", the image folder (required).
      manual_dir: see `get_builder`; not for "folder".
      image_size: "folder" only: > 0 resizes every image to a square of this side; the tfds
        data sets keep their size (any other value than 0 is an error).
      ids_path: "folder" only: the image id registry (ignored for the tfds data sets, whose ids
        are their fixed order).

    Raises:
      DataError: the data set cannot be loaded; the message says why and what to do.
    """
    if name == "folder":
        from tf_bgadl import folder_data  # pylint: disable=import-outside-toplevel

        if not data_dir:
            raise DataError("--dataset=folder needs --data_dir=<root>, the folder of your images "
                            f"laid out as {folder_data.LAYOUT}")
        if manual_dir:
            raise DataError("--manual_dir is for IDX files (mnist, fashion_mnist), not for "
                            "--dataset=folder")
        return folder_data.load_folder_dataset(data_dir, image_size=image_size, ids_path=ids_path)
    if image_size:
        raise DataError(f"--image_size={image_size} works only with --dataset=folder; "
                        f"--dataset={name} keeps its own image size (use --image_size=0)")
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    start = time.time()
    builder = get_builder(name, data_dir, manual_dir)
    arrays = {}
    for split in ("train", "test"):
        ds = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
        numpy = tfds.as_numpy(ds)
        arrays[split] = (np.asarray(numpy["image"], np.uint8),
                         np.asarray(numpy["label"], np.int64))
    label = builder.info.features["label"]
    logging.info("Loaded %s: %d train, %d test, %d classes, images %s (%.1fs)", name,
                 len(arrays["train"][1]), len(arrays["test"][1]), label.num_classes,
                 arrays["train"][0].shape[1:], time.time() - start)
    return ArrayDataset(name, *arrays["train"], *arrays["test"], num_classes=label.num_classes,
                        class_names=tuple(label.names))
