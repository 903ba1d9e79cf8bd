"""The user's image folder as an ArrayDataset: layout, labels, ids, sizes, channels, errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_bgadl import data, folder_data

# Three classes; every image is one constant grey value, so a row of x_train says which file it is.
LAYOUT = {
    "train/cat/b.png": 10, "train/cat/a.png": 20, "train/dog/x.png": 30,
    "train/eel/1.png": 40, "train/eel/2.jpg": 50,
    "test/cat/t.png": 60, "test/dog/t.png": 70, "test/eel/t.png": 80,
    "unlabeled/z.png": 90, "unlabeled/m.png": 100,
}
TRAIN_ORDER = ["train/cat/a.png", "train/cat/b.png", "train/dog/x.png", "train/eel/1.png",
               "train/eel/2.jpg", "unlabeled/m.png", "unlabeled/z.png"]


def _write(root, relpath, image):
    """Writes uint8 [H, W, C] `image` (or a constant 6x5 grey image) as PNG/JPEG."""
    if np.isscalar(image):
        image = np.full((6, 5, 1), image, np.uint8)
    path = os.path.join(root, *relpath.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_jpeg(image, quality=100) if relpath.endswith(".jpg")
                     else tf.io.encode_png(image))


def _folder(tmp_path, layout=None, **extra):
    root = str(tmp_path / "images")
    for relpath, image in {**(LAYOUT if layout is None else layout), **extra}.items():
        _write(root, relpath, image)
    return root


def _grey_of(rows):
    return [int(round(float(np.mean(row)))) for row in rows]


def test_arrays_labels_and_class_names(tmp_path):
    root = _folder(tmp_path)
    ds = folder_data.load_folder_dataset(root)
    assert ds.name == "folder" and ds.class_names == ("cat", "dog", "eel") and ds.num_classes == 3
    assert ds.x_train.shape == (7, 6, 5, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (3, 6, 5, 1)
    assert ds.y_train.tolist() == [0, 0, 1, 2, 2, data.UNLABELED, data.UNLABELED]
    assert ds.y_test.tolist() == [0, 1, 2]
    assert _grey_of(ds.x_train) == [LAYOUT[p] for p in TRAIN_ORDER]  # jpeg: q=100, flat
    assert _grey_of(ds.x_test) == [60, 70, 80]
    assert ds.train_sources == tuple(os.path.join(root, *p.split("/")) for p in TRAIN_ORDER)
    assert all(os.path.isabs(s) for s in ds.train_sources)
    # Through the data module's dispatch, and class names of a tfds data set.
    again = data.load_dataset("folder", root)
    assert np.array_equal(again.x_train, ds.x_train) and again.class_names == ds.class_names


def test_ids_stay_put_when_files_are_added(tmp_path):
    root = _folder(tmp_path)
    ids_path = str(tmp_path / "work" / "image_ids.json")
    first = folder_data.load_folder_dataset(root, ids_path=ids_path)
    with open(ids_path) as f:
        assert json.load(f) == {p: i for i, p in enumerate(TRAIN_ORDER)}
    mtime = os.stat(ids_path).st_mtime_ns
    assert folder_data.load_folder_dataset(root, ids_path=ids_path).train_sources == \
        first.train_sources
    assert os.stat(ids_path).st_mtime_ns == mtime  # unchanged registry: not rewritten

    # New files sort before old ones; they still get the next ids (train/ first, then unlabeled/).
    _write(root, "unlabeled/a.png", 110)
    _write(root, "train/cat/0.png", 120)
    later = folder_data.load_folder_dataset(root, ids_path=ids_path)
    assert later.train_sources[:7] == first.train_sources
    assert np.array_equal(later.x_train[:7], first.x_train)
    assert later.y_train.tolist() == first.y_train.tolist() + [0, data.UNLABELED]
    assert _grey_of(later.x_train[7:]) == [120, 110]
    with open(ids_path) as f:
        assert json.load(f) == {**{p: i for i, p in enumerate(TRAIN_ORDER)},
                                "train/cat/0.png": 7, "unlabeled/a.png": 8}
    # Without a registry: the sorted order.
    plain = folder_data.load_folder_dataset(root)
    assert _grey_of(plain.x_train) == [120, 20, 10, 30, 40, 50, 110, 100, 90]


def test_missing_or_moved_registered_file_is_an_error(tmp_path):
    root = _folder(tmp_path)
    ids_path = str(tmp_path / "image_ids.json")
    folder_data.load_folder_dataset(root, ids_path=ids_path)
    # A new file that fails to decode gets no id: removing it afterwards is fine.
    _corrupt(root, "train/cat/c.png")
    with pytest.raises(data.DataError, match=r"cannot decode the image .*train/cat/c\.png"):
        folder_data.load_folder_dataset(root, ids_path=ids_path)
    assert "train/cat/c.png" not in folder_data.read_registry(ids_path)
    os.remove(os.path.join(root, "train", "cat", "c.png"))
    folder_data.load_folder_dataset(root, ids_path=ids_path)

    os.remove(os.path.join(root, "train", "dog", "x.png"))
    _write(root, "train/dog/y.png", 30)
    with pytest.raises(data.DataError, match=r"train/dog/x\.png \(id 2\).*new --workdir"):
        folder_data.load_folder_dataset(root, ids_path=ids_path)
    _write(root, "train/dog/x.png", 30)
    os.rename(os.path.join(root, "unlabeled", "m.png"), os.path.join(root, "train", "cat", "m.png"))
    with pytest.raises(data.DataError, match=r"unlabeled/m\.png \(id 5\).*moved"):
        folder_data.load_folder_dataset(root, ids_path=ids_path)
    with open(ids_path, "w") as f:
        json.dump({"train/cat/a.png": 3}, f)
    with pytest.raises(data.DataError, match="is not an image id registry"):
        folder_data.load_folder_dataset(root, ids_path=ids_path)


def test_assign_ids_appends_new_paths():
    ids, registry = folder_data.assign_ids(["b", "a", "c"], {"a": 1, "c": 0})
    assert ids.tolist() == [2, 1, 0] and registry == {"a": 1, "c": 0, "b": 2}
    assert folder_data.assign_ids(["b", "a"], {})[0].tolist() == [0, 1]
    with pytest.raises(data.DataError, match=r"c \(id 0\)"):
        folder_data.assign_ids(["a"], {"a": 1, "c": 0})


def test_mixed_sizes_need_image_size(tmp_path):
    layout = {**LAYOUT, "train/dog/x.png": np.full((9, 7, 1), 30, np.uint8)}
    root = _folder(tmp_path, layout)
    with pytest.raises(data.DataError, match=r"train/dog/x\.png is 9x7.*6x5.*--image_size"):
        folder_data.load_folder_dataset(root)
    ds = folder_data.load_folder_dataset(root, image_size=4)
    assert ds.x_train.shape == (7, 4, 4, 1) and ds.x_test.shape == (3, 4, 4, 1)
    assert _grey_of(ds.x_train) == [LAYOUT[p] for p in TRAIN_ORDER]
    assert all(len(np.unique(row)) == 1 for row in ds.x_train)  # flat images stay flat


def test_channels_follow_the_first_image(tmp_path):
    rgb, rgba = np.zeros((6, 5, 3), np.uint8), np.zeros((6, 5, 4), np.uint8)
    rgb[..., 0], rgba[..., 1], rgba[..., 3] = 200, 150, 7
    grey_first = _folder(tmp_path / "grey", {**LAYOUT, "train/dog/x.png": rgb})
    ds = folder_data.load_folder_dataset(grey_first)
    assert ds.x_train.shape[-1] == 1 and 0 < ds.x_train[2].mean() < 200  # RGB -> luminance

    colour_first = _folder(tmp_path / "colour", {
        **LAYOUT, "train/cat/a.png": rgba, "train/dog/x.png": rgb})
    ds = folder_data.load_folder_dataset(colour_first)
    assert ds.x_train.shape == (7, 6, 5, 3)
    assert ds.x_train[0, 0, 0].tolist() == [0, 150, 0]  # RGBA: alpha dropped
    assert ds.x_train[1, 0, 0].tolist() == [10, 10, 10]  # grey replicated
    assert ds.x_train[2, 0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("change, message", [
    (lambda root: os.remove(os.path.join(root, "train", "dog", "x.png")),
     r"no images .* class folder\(s\) train/dog/"),
    (lambda root: os.remove(os.path.join(root, "test", "eel", "t.png")),
     r"no images .* test/eel/"),
    (lambda root: os.makedirs(os.path.join(root, "train", "fox")),
     r"lacks the class folder\(s\) fox"),
    (lambda root: os.makedirs(os.path.join(root, "test", "gnu")),
     r"class folder\(s\) gnu that train/ lacks"),
    (lambda root: _write(root, "unlabeled/sub/u.png", 1),
     r"subfolder\(s\) sub: unlabeled/ must be flat"),
    (lambda root: os.makedirs(os.path.join(root, "validation")),
     r"unexpected folder\(s\) validation/"),
    (lambda root: _corrupt(root, "train/eel/1.png"), r"cannot decode the image .*train/eel/1\.png"),
    (lambda root: _corrupt(root, "unlabeled/z.png"), r"cannot decode the image .*unlabeled/z\.png"),
    (lambda root: _corrupt(root, "test/dog/t.png"), r"cannot decode the image .*test/dog/t\.png"),
])
def test_folder_problems_are_clear_errors(tmp_path, change, message):
    root = _folder(tmp_path)
    change(root)
    with pytest.raises(data.DataError, match=message):
        folder_data.load_folder_dataset(root)


def _corrupt(root, relpath):
    with open(os.path.join(root, *relpath.split("/")), "wb") as f:
        f.write(b"\x89PNG not really")


def test_layout_errors(tmp_path):
    def error(root, **kwargs):
        with pytest.raises(data.DataError) as info:
            folder_data.load_folder_dataset(str(root), **kwargs)
        return str(info.value)

    assert "does not exist" in error(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in error(tmp_path / "file")
    (tmp_path / "root" / "test").mkdir(parents=True)
    assert "no train/ folder" in error(tmp_path / "root") and "<root>/train/<class>" in \
        error(tmp_path / "root")
    (tmp_path / "root" / "train").mkdir()
    assert "has no class folders" in error(tmp_path / "root")
    for c in ("cat", "dog"):
        (tmp_path / "root" / "train" / c).mkdir()
        (tmp_path / "root" / "test" / c).mkdir()
    assert "no images" in error(tmp_path / "root") and "any class folder" in \
        error(tmp_path / "root")
    no_test = _folder(tmp_path / "no_test", {"train/cat/a.png": 1})
    assert "no test/ folder" in error(no_test) and "cat" in error(no_test)
    assert "--image_size=-1" in error(no_test, image_size=-1)


def test_load_dataset_dispatch_errors(data_dir, digits):
    with pytest.raises(data.DataError, match="--data_dir=<root>"):
        data.load_dataset("folder", "")
    with pytest.raises(data.DataError, match="--image_size=8 works only with --dataset=folder"):
        data.load_dataset("digits", data_dir, image_size=8)
    assert digits.class_names == tuple(str(i) for i in range(10))
