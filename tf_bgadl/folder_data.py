"""A folder of the user's own images as an `ArrayDataset`, read through tfds' `ImageFolder`.

The layout is tensorflow-datasets' ImageFolder layout plus an optional flat `unlabeled/` folder:

    <root>/train/<class>/*.png|jpg|jpeg   labeled training images
    <root>/test/<class>/*.png|jpg|jpeg    labeled test images (every class of train/, no other)
    <root>/unlabeled/*.png|jpg|jpeg       optional, no subfolders: training images whose label is
                                          unknown (`y_train == data.UNLABELED`)

`tfds.folder_dataset.ImageFolder` enumerates train/ and test/ (class names, files) and reads the
files; this module reads unlabeled/ itself (the same extensions, the same decoding), then decodes
and, on request, resizes every image in a parallel `tf.data` pipeline.

Stable ids: the id of a training image is its row in `x_train`. With a registry (`ids_path`, a
JSON object {path relative to root: id}) a file keeps its id across loads; files not yet
registered get the next ids, so adding images never changes the id of an image already there.
A path is the identity: a file moved to another folder (e.g. from unlabeled/ to train/cat/ once
it has a label) is a new file, and its old path is then missing, which is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Mapping, Sequence

import numpy as np
from absl import logging

from tf_bgadl import data, state

NAME = "folder"
TRAIN, TEST, UNLABELED_DIR = "train", "test", "unlabeled"
EXTENSIONS = (".jpg", ".jpeg", ".png")  # those tfds' ImageFolder reads (case-insensitive)
LAYOUT = ("<root>/train/<class>/*.png|jpg|jpeg (labeled), <root>/test/<class>/*.png|jpg|jpeg "
          "(labeled, every class of train/), optionally <root>/unlabeled/*.png|jpg|jpeg "
          "(flat, no subfolders)")
_BATCH = 256
_PROGRESS_EVERY_S = 10.0
_MAX_NAMED = 5  # files named in one error message


@dataclasses.dataclass(frozen=True)
class _ImageFile:
    relpath: str  # relative to the root, forward slashes: "train/cat/001.png"
    label: int  # class index, or data.UNLABELED
    content: bytes  # the encoded file


def load_folder_dataset(root: str, *, image_size: int = 0,
                        ids_path: str | None = None) -> data.ArrayDataset:
    """Loads an image folder (see the module docstring for the layout) into memory.

    Args:
      root: the folder that holds train/, test/ and optionally unlabeled/.
      image_size: > 0 resizes every image to `image_size` x `image_size` (bilinear with
        antialiasing, aspect ratio not kept, rounded and clipped to uint8); 0 keeps the sizes,
        which must then all equal the size of the first training image (id 0).
      ids_path: the id registry, a JSON file (e.g. `<workdir>/image_ids.json`), created or
        extended as needed (written atomically, only when it changes); None numbers the
        training images in append order (train/ sorted by class then path, then unlabeled/).
        The registry is written after every image has been decoded, so a file that fails to
        load gets no id.

    Returns:
      `ArrayDataset` named "folder": x_train uint8 [N, H, W, C] in id order, with C the channels
      of the first training image without alpha (1: grayscale, 3: colour; every image is
      converted to C); y_train int64 [N], the class index or `data.UNLABELED` (-1) for
      unlabeled/ images; x_test/y_test from test/ sorted by class then path; `class_names` the
      sorted class folders; `train_sources` the absolute path of every training row.

    Raises:
      data.DataError: a layout, file or registry problem; the message names the folder, file or
        class concerned and what is expected.
    """
    start = time.time()
    if image_size < 0:
        raise data.DataError(f"--image_size={image_size}: expected 0 (keep the images' size) "
                             "or a positive side length in pixels")
    root, class_names = _check_layout(root)
    train, test = _read_labeled(root, class_names)
    train += _read_unlabeled(root)
    logging.info("Read %d training (%d unlabeled) and %d test files from %s (%.1fs)",
                 len(train), sum(f.label == data.UNLABELED for f in train), len(test), root,
                 time.time() - start)
    registry = read_registry(ids_path) if ids_path else {}
    ids, extended = assign_ids([f.relpath for f in train], registry, ids_path=ids_path or "",
                               root=root)
    train = [train[i] for i in np.argsort(ids)]

    channels, shape = _first_image_format(root, train[0])
    if image_size:
        shape = (image_size, image_size)
    x_train = _decode_images(root, train, channels=channels, shape=shape, resize=bool(image_size))
    x_test = _decode_images(root, test, channels=channels, shape=shape, resize=bool(image_size))
    if ids_path and (len(extended) > len(registry) or not os.path.exists(ids_path)):
        state.atomic_write_json(ids_path, extended)  # only once every file has been decoded
        logging.info("Image id registry %s: %d ids, %d new", ids_path, len(extended),
                     len(extended) - len(registry))
    logging.info("Loaded %s %s: %d train (%d unlabeled), %d test, %d classes, images %s (%.1fs)",
                 NAME, root, len(train), sum(f.label == data.UNLABELED for f in train), len(test),
                 len(class_names), x_train.shape[1:], time.time() - start)
    return data.ArrayDataset(
        NAME, x_train, np.array([f.label for f in train], np.int64),
        x_test, np.array([f.label for f in test], np.int64),
        num_classes=len(class_names), class_names=tuple(class_names),
        train_sources=tuple(os.path.join(root, *f.relpath.split("/")) for f in train))


def assign_ids(relpaths: Sequence[str], registry: Mapping[str, int], *, ids_path: str = "",
               root: str = "") -> tuple[np.ndarray, dict[str, int]]:
    """The id of each training file: its registered id, or the next free one.

    Args:
      relpaths: the training files' paths relative to the root, in append order (the order in
        which files not yet registered get ids).
      registry: {relpath: id} from earlier loads, ids 0..R-1 ({}: none, so ids follow
        `relpaths`).
      ids_path, root: only to name the registry file and the image folder in errors.

    Returns:
      (ids, extended registry): int64 [N], a permutation of 0..N-1 with ids[i] the id of
      relpaths[i]; the registry plus the new files.

    Raises:
      data.DataError: a registered file is not in `relpaths` (names the first few, with ids).
    """
    present = set(relpaths)
    if len(present) != len(relpaths):
        raise ValueError(f"{len(relpaths) - len(present)} duplicate paths in `relpaths`")
    missing = sorted((i, p) for p, i in registry.items() if p not in present)
    if missing:
        named = ", ".join(f"{p} (id {i})" for i, p in missing[:_MAX_NAMED])
        more = f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""
        raise data.DataError(
            f"{len(missing)} image(s) registered in {ids_path or 'the id registry'} are missing "
            f"from {root or 'the image folder'}: {named}{more}. This run's example ids (its "
            "labeled set, pool and acquisitions) depend on them: restore them, or use a new "
            "--workdir. A file moved to another folder (e.g. from unlabeled/ to "
            "train/<class>/) counts as missing: move it back.")
    extended = dict(registry)
    for path in relpaths:  # append order: new files get the next ids
        extended.setdefault(path, len(extended))
    return np.array([extended[p] for p in relpaths], np.int64), extended


def read_registry(ids_path: str) -> dict[str, int]:
    """The id registry at `ids_path` ({} if there is none yet); DataError if it is invalid."""
    if not os.path.exists(ids_path):
        return {}
    try:
        with open(ids_path) as f:
            registry = json.load(f)
    except (OSError, ValueError) as e:
        raise data.DataError(f"cannot read the image id registry {ids_path}: {e}") from e
    if (not isinstance(registry, dict)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in registry.values())
            or sorted(registry.values()) != list(range(len(registry)))):
        raise data.DataError(f"{ids_path} is not an image id registry: expected a JSON object "
                             "mapping each image's path (relative to the folder) to its id, "
                             "ids 0..N-1 each once")
    return registry


def _subfolders(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if os.path.isdir(os.path.join(folder, f)))


def _check_layout(root: str) -> tuple[str, list[str]]:
    """Checks the folders (not yet the files); returns the absolute root and the class names."""
    if not root:
        raise data.DataError(f"--dataset={NAME} needs --data_dir=<root>, a folder laid out as "
                             f"{LAYOUT}")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.exists(root):
        raise data.DataError(f"image folder {root} does not exist; expected {LAYOUT}")
    if not os.path.isdir(root):
        raise data.DataError(f"image folder {root} is not a folder; expected {LAYOUT}")
    folders = _subfolders(root)
    if TRAIN not in folders:
        raise data.DataError(f"image folder {root} has no train/ folder; expected {LAYOUT}")
    # ImageFolder takes every folder of root as a split and the subfolders of all as classes.
    unexpected = [f for f in folders if f not in (TRAIN, TEST, UNLABELED_DIR)]
    if unexpected:
        raise data.DataError(f"image folder {root} has unexpected folder(s) "
                             f"{', '.join(f + '/' for f in unexpected)}: only train/, test/ "
                             f"and unlabeled/ may be there ({LAYOUT})")
    classes = _subfolders(os.path.join(root, TRAIN))
    if not classes:
        raise data.DataError(f"{os.path.join(root, TRAIN)} has no class folders; expected "
                             f"{LAYOUT}")
    if TEST not in folders:
        raise data.DataError(f"image folder {root} has no test/ folder: labeled test images "
                             f"are required, in test/<class>/ for every class of train/ "
                             f"({', '.join(classes)})")
    test_classes = _subfolders(os.path.join(root, TEST))
    lacking = [c for c in classes if c not in test_classes]
    if lacking:
        raise data.DataError(f"{os.path.join(root, TEST)} lacks the class folder(s) "
                             f"{', '.join(lacking)}: every class of train/ needs test images")
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise data.DataError(f"{os.path.join(root, TEST)} has class folder(s) "
                             f"{', '.join(unknown)} that train/ lacks: test classes must be "
                             f"classes of train/ ({', '.join(classes)})")
    if UNLABELED_DIR in folders:
        nested = _subfolders(os.path.join(root, UNLABELED_DIR))
        if nested:
            raise data.DataError(f"{os.path.join(root, UNLABELED_DIR)} has subfolder(s) "
                                 f"{', '.join(nested)}: unlabeled/ must be flat (the images "
                                 "directly in it); labeled images go to train/<class>/")
    return root, classes


def _op_message(error) -> str:
    """A TensorFlow error's message without its `{{function_node ...}}` prefix."""
    return re.sub(r"\{\{[^}]*\}\}\s*", "", error.message).strip()


def _read_labeled(root: str, class_names: list[str]) -> tuple[list[_ImageFile], list[_ImageFile]]:
    """Reads train/ and test/ through tfds' ImageFolder, each sorted by class, then path."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder = tfds.folder_dataset.ImageFolder(root)
    if list(builder.info.features["label"].names) != class_names:  # the layout check ensures it
        raise data.DataError(f"{root}: tfds found classes {builder.info.features['label'].names}"
                             f", expected {class_names}")
    splits = {}
    for split in (TRAIN, TEST):
        files = []
        if split in builder.info.splits and builder.info.splits[split].num_examples:
            ds = builder.as_dataset(split=split, shuffle_files=False,
                                    decoders={"image": tfds.decode.SkipDecoding()})
            try:
                for batch in tfds.as_numpy(ds.batch(_BATCH)):
                    files += [_ImageFile(_relpath(path.decode(), root), int(label), content)
                              for path, label, content in zip(
                                  batch["image/filename"], batch["label"], batch["image"])]
            except tf.errors.OpError as e:
                raise data.DataError(f"cannot read an image file in {os.path.join(root, split)}"
                                     f": {_op_message(e)}") from e
        counts = np.bincount([f.label for f in files], minlength=len(class_names))
        empty = [c for c, n in zip(class_names, counts) if not n]
        if empty:
            what = "any class folder" if len(empty) == len(class_names) else "class folder(s)"
            raise data.DataError(
                f"{os.path.join(root, split)} has no images ({'/'.join(EXTENSIONS)}) in {what} "
                f"{', '.join(f'{split}/{c}/' for c in empty)}")
        splits[split] = sorted(files, key=lambda f: (f.label, f.relpath))
    return splits[TRAIN], splits[TEST]


def _read_unlabeled(root: str) -> list[_ImageFile]:
    """Reads unlabeled/ (the files ImageFolder would read), sorted by path."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    folder = os.path.join(root, UNLABELED_DIR)
    if not os.path.isdir(folder):
        return []
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS)
                   and not os.path.isdir(os.path.join(folder, f)))
    if not names:
        return []
    ds = tf.data.Dataset.from_tensor_slices([os.path.join(folder, n) for n in names])
    ds = ds.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE).batch(_BATCH)
    contents = []
    try:
        for batch in ds.as_numpy_iterator():
            contents += list(batch)
    except tf.errors.OpError as e:
        raise data.DataError(f"cannot read an image file in {folder}: {_op_message(e)}") from e
    return [_ImageFile(f"{UNLABELED_DIR}/{n}", data.UNLABELED, c)
            for n, c in zip(names, contents)]


def _relpath(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _decode_one(root: str, image: _ImageFile, channels: int = 0):
    """Decodes one file eagerly; DataError naming the file if it is not a readable image."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    try:
        return tf.io.decode_image(image.content, channels=channels, expand_animations=False)
    except tf.errors.OpError as e:
        raise data.DataError(f"cannot decode the image {os.path.join(root, image.relpath)} "
                             f"(corrupt, or not a PNG/JPEG file): {_op_message(e)}") from e


def _first_image_format(root: str, first: _ImageFile) -> tuple[int, tuple[int, int]]:
    """(channels without alpha: 1 or 3, (height, width)) of the first training image."""
    decoded = _decode_one(root, first)
    channels = 1 if decoded.shape[-1] <= 2 else 3
    return channels, (int(decoded.shape[0]), int(decoded.shape[1]))


def _decode_images(root: str, images: list[_ImageFile], *, channels: int,
                   shape: tuple[int, int], resize: bool) -> np.ndarray:
    """Decodes (and resizes) `images` in parallel into uint8 [len(images), *shape, channels].

    Raises:
      data.DataError: a file that cannot be decoded (found by a second, per-file pass), or,
        without `resize`, a file whose size is not `shape` (names the first one).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    height, width = shape
    out = np.zeros((len(images), height, width, channels), np.uint8)
    fits = np.ones(len(images), bool)

    def decode(content):
        image = tf.io.decode_image(content, channels=channels, expand_animations=False)
        if resize:
            image = tf.image.resize(image, shape, method="bilinear", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), True
        ok = tf.reduce_all(tf.shape(image)[:2] == shape)
        image = tf.cond(ok, lambda: image, lambda: tf.zeros([height, width, channels], tf.uint8))
        return tf.ensure_shape(image, [height, width, channels]), ok

    ds = tf.data.Dataset.from_tensor_slices(np.array([f.content for f in images], object))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(_BATCH)
    start = last_log = time.time()
    row = 0
    try:
        for batch, ok in ds.as_numpy_iterator():
            out[row:row + len(batch)], fits[row:row + len(batch)] = batch, ok
            row += len(batch)
            if time.time() - last_log > _PROGRESS_EVERY_S:
                last_log = time.time()
                logging.info("Decoded %d/%d images (%.0fs)", row, len(images), last_log - start)
    except tf.errors.OpError as e:
        for image in images:  # which file: decode one by one (only on this error path)
            _decode_one(root, image, channels)
        raise data.DataError(f"cannot decode the images in {root}: {_op_message(e)}") from e
    if not fits.all():
        bad = images[int(np.argmin(fits))]
        size = tuple(_decode_one(root, bad, channels).shape[:2])
        raise data.DataError(
            f"{os.path.join(root, bad.relpath)} is {size[0]}x{size[1]} (height x width), but "
            f"the first training image is {height}x{width}; all images need one size: pass "
            "--image_size=<pixels> to resize them all to a square")
    return out
