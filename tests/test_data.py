"""Tests of dabo_tf.data: digits, TFDS (mocked, offline), image folders and pipelines."""

import collections
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from dabo_tf import data

FORMATS = ("png", "jpg", "bmp", "gif", "tiff")
COLORS = {"cat": (220, 30, 30), "dog": (30, 220, 30), "fish": (30, 30, 220)}


def _multiset(*arrays):
    return collections.Counter(img.tobytes() for x in arrays for img in x)


@pytest.mark.parametrize("image_size", [16, 32])
def test_digits_shapes_and_stats(image_size):
    d = data.load("digits", image_size=image_size)
    assert d.name == "digits" and d.num_classes == 10 and d.class_names[3] == "3"
    assert d.image_shape == (image_size, image_size, 1)
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        assert x.dtype == np.uint8 and x.shape[1:] == d.image_shape
        assert y.dtype == np.int32 and len(x) == len(y)
    assert d.sizes == dict(train=1006, val=252, test=539)
    assert len(d.mean) == 1 and 0.2 < d.mean[0] < 0.4 and 0.2 < d.std[0] < 0.45
    np.testing.assert_allclose(d.mean[0], d.x_train.mean() / 255.0, rtol=1e-6)
    assert "digits" in d.summary() and "1006 train" in d.summary()
    assert "x_train" not in repr(d)  # arrays are left out of the repr


def test_digits_splits_partition_and_stratified():
    d = data.load("digits", image_size=16)
    x_all, _, _ = data._load_digits(16)
    assert _multiset(d.x_train, d.x_val, d.x_test) == _multiset(x_all)
    val_counts = np.bincount(d.y_val, minlength=10)
    pool_counts = val_counts + np.bincount(d.y_train, minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * pool_counts) <= 1.0)


def test_digits_determinism_from_seed():
    a, b = data.load("digits", image_size=16, seed=0), data.load("digits", image_size=16, seed=0)
    c = data.load("digits", image_size=16, seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    np.testing.assert_array_equal(a.x_test, c.x_test)  # test split never depends on seed
    np.testing.assert_array_equal(a.y_test, c.y_test)
    assert not np.array_equal(a.x_val, c.x_val)
    assert _multiset(a.x_train, a.x_val) == _multiset(c.x_train, c.x_val)


def test_digits_train_size_subset_then_split():
    a = data.load("digits", image_size=16, train_size=200, val_fraction=0.2, seed=0)
    assert a.sizes == dict(train=160, val=40, test=539)
    per_class = np.bincount(np.concatenate([a.y_train, a.y_val]), minlength=10)
    assert per_class.min() >= 19 and per_class.max() <= 21
    b = data.load("digits", image_size=16, train_size=200, seed=1)
    assert _multiset(a.x_train, a.x_val) != _multiset(b.x_train, b.x_val)
    with pytest.raises(ValueError, match="Received: train_size=5000"):
        data.load("digits", train_size=5000)
    with pytest.raises(ValueError, match="Received: val_fraction=1.0"):
        data.load("digits", val_fraction=1.0)


@pytest.mark.parametrize("name, image_size, shape, classes", [
    ("cifar10", 32, (32, 32, 3), 10), ("mnist", 16, (16, 16, 1), 10)])
def test_tfds_mocked(monkeypatch, tmp_path, name, image_size, shape, classes):
    monkeypatch.setattr(data, "is_online", lambda *a, **k: True)  # prepare is mocked anyway
    with tfds.testing.mock_data(num_examples=20):
        d = data.load(name, data_dir=str(tmp_path), image_size=image_size, val_fraction=0.25)
    assert d.name == name and d.image_shape == shape and d.num_classes == classes
    assert len(d.class_names) == classes
    assert d.sizes == dict(train=15, val=5, test=20)
    assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int32
    assert d.y_train.max() < classes


def test_tfds_offline_raises_quickly(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "is_online", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(data.DataUnavailableError) as info:
        data.load("cifar10", data_dir=str(tmp_path / "tfds"))
    assert time.monotonic() - start < 10.0
    message = str(info.value)
    assert "cifar10" in message and "--data_dir" in message and "--dataset=digits" in message
    assert "--dataset=folder" in message


def test_is_online_fails_fast_on_closed_port():
    start = time.monotonic()
    assert data.is_online("127.0.0.1", port=9, timeout=1.0) is False
    assert time.monotonic() - start < 4.0


@pytest.mark.parametrize("name", ["no_such_dataset_xyz", "imdb_reviews"])
def test_unknown_or_non_image_name_raises(name):
    with pytest.raises(data.DataUnavailableError, match=f"Received: name='{name}'"):
        data.load(name)


def _write_class(folder, color, count, start=0, gray=False):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        fmt = FORMATS[(start + i) % len(FORMATS)]
        rgb = np.zeros((20, 24, 3), np.uint8) + np.array(color, np.uint8)
        rgb[:2] = (start + i) * 7 % 255  # a thin band making every image distinct
        img = Image.fromarray(rgb).convert("L") if gray else Image.fromarray(rgb)
        img.save(folder / f"img{start + i}.{fmt}")


def _check_labels_follow_colors(x, y, class_names):
    for img, label in zip(x, y, strict=True):
        assert np.argmax(img[-4:].reshape(-1, 3).mean(0)) == np.argmax(COLORS[class_names[label]])


def test_folder_flat_layout_with_corrupt_and_empty(tmp_path):
    for k, (name, color) in enumerate(COLORS.items()):
        _write_class(tmp_path / name, color, 10, start=10 * k)
    (tmp_path / "cat" / "broken.png").write_bytes(b"this is not an image")
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "empty").mkdir()
    with pytest.warns(UserWarning) as record:
        d = data.load("folder", data_dir=str(tmp_path), image_size=12, val_fraction=0.25)
    messages = " | ".join(str(w.message) for w in record)
    assert "Skipped 1 unreadable image file(s)" in messages and "broken.png" in messages
    assert "'empty' is dropped" in messages
    assert d.class_names == ["cat", "dog", "fish"] and d.num_classes == 3
    assert d.image_shape == (12, 12, 3)
    assert sum(d.sizes.values()) == 30 and d.sizes["test"] == 9
    x = np.concatenate([d.x_train, d.x_val, d.x_test])
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    _check_labels_follow_colors(x, y, d.class_names)
    assert len(_multiset(x)) == 30  # every image exactly once: the splits are disjoint


def test_folder_split_layout_and_grayscale(tmp_path):
    for k, (name, color) in enumerate(COLORS.items()):
        _write_class(tmp_path / "train" / name, color, 6, start=k * 20, gray=True)
        _write_class(tmp_path / "val" / name, color, 2, start=k * 20 + 6, gray=True)
        _write_class(tmp_path / "test" / name, color, 3, start=k * 20 + 8, gray=True)
    d = data.load("folder", data_dir=str(tmp_path), image_size=8, val_fraction=0.5)
    assert d.sizes == dict(train=18, val=6, test=9)  # val/ is the validation split
    assert d.image_shape == (8, 8, 1)
    np.testing.assert_array_equal(np.bincount(d.y_test), [3, 3, 3])


def test_folder_split_layout_without_val_and_test(tmp_path):
    for k, (name, color) in enumerate(COLORS.items()):
        _write_class(tmp_path / "train" / name, color, 10, start=k * 10)
    d = data.load("folder", data_dir=str(tmp_path), image_size=8, val_fraction=0.2, seed=3)
    assert d.sizes == dict(train=17, val=4, test=9)
    _check_labels_follow_colors(d.x_val, d.y_val, d.class_names)


def test_folder_unavailable(tmp_path):
    with pytest.raises(data.DataUnavailableError, match="does not exist"):
        data.load("folder", data_dir=str(tmp_path / "missing"))
    with pytest.raises(data.DataUnavailableError, match="--data_dir"):
        data.load("folder")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(UserWarning), pytest.raises(data.DataUnavailableError,
                                                  match="No readable images"):
        data.load("folder", data_dir=str(tmp_path))


def test_make_pipeline_batches(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    x[0] = 255
    y = np.arange(50) % 4
    train = data.make_pipeline(x, y, 16, training=True, seed=1)
    assert int(train.cardinality()) == 3  # remainder dropped when training
    xb, yb = next(iter(train))
    assert xb.dtype == tf.float32 and yb.dtype == tf.int32 and tuple(xb.shape) == (16, 6, 6, 3)
    test = data.make_pipeline(x, y, 16, training=False)
    batches = list(test)
    assert len(batches) == 4 and batches[-1][0].shape[0] == 2
    np.testing.assert_allclose(batches[0][0].numpy(), x[:16] / 255.0, atol=1e-6)
    assert float(batches[0][0].numpy().max()) == 1.0 and float(batches[0][0].numpy().min()) >= 0

    def epochs(ds, n=2):
        return [np.concatenate([b[1] for b in ds]) for _ in range(n)]

    first = epochs(data.make_pipeline(x, y, 16, training=True, seed=1))
    assert not np.array_equal(first[0], first[1])  # reshuffled every epoch
    again = epochs(data.make_pipeline(x, y, 16, training=True, seed=1))
    np.testing.assert_array_equal(np.stack(again), np.stack(first))  # deterministic from seed
    other = epochs(data.make_pipeline(x, y, 16, training=True, seed=2), 1)
    assert not np.array_equal(other[0], first[0])


def test_with_validation_stream_structure_and_cardinality():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8), np.arange(40) % 2
    train = data.make_pipeline(x, y, 8, training=True)
    val = data.make_pipeline(x[:10], y[:10], 4, training=True, seed=1)  # 2 batches per pass
    stream = data.with_validation_stream(train, val)
    assert int(stream.cardinality()) == int(train.cardinality()) == 5
    elements = list(stream)
    assert len(elements) == 5
    (xb, yb), (xv, yv) = elements[0]
    assert tuple(xb.shape) == (8, 4, 4, 1) and tuple(xv.shape) == (4, 4, 4, 1)
    assert yb.dtype == tf.int32 and xv.dtype == tf.float32
    with pytest.raises(ValueError, match="cardinality"):
        data.with_validation_stream(train, data.make_pipeline(x[:3], y[:3], 4, training=True))


def test_eval_shift_transforms_validation_and_test_only():
    plain = data.load("digits", image_size=16, train_size=200, seed=3)
    shifted = data.load("digits", image_size=16, train_size=200, seed=3,
                        eval_shift="rotate:40")
    np.testing.assert_array_equal(shifted.x_train, plain.x_train)
    np.testing.assert_array_equal(shifted.y_test, plain.y_test)
    for a, b in ((shifted.x_val, plain.x_val), (shifted.x_test, plain.x_test)):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() > 5
    again = data.load("digits", image_size=16, train_size=200, seed=3, eval_shift="rotate:40")
    np.testing.assert_array_equal(again.x_val, shifted.x_val)
    other_seed = data.load("digits", image_size=16, train_size=200, seed=4,
                           eval_shift="rotate:40")
    np.testing.assert_array_equal(other_seed.x_test, shifted.x_test)  # the test split is fixed


def test_parse_shift_forms_and_errors():
    assert data.parse_shift("") is None and data.parse_shift(None) is None
    assert data.parse_shift("rotate:40") == data.Shift("rotate", -40.0, 40.0)
    assert data.parse_shift("translate:0.2").policy_ops() == {"translate_x": (-0.2, 0.2),
                                                              "translate_y": (-0.2, 0.2)}
    assert data.parse_shift("scale:0.7:1.3").policy_ops() == {
        "zoom": (0.7, 1.3), "scale_x": (0.7, 1.3), "scale_y": (0.7, 1.3)}
    for bad in ("spin:3", "rotate", "rotate:x", "translate:1.5", "scale:1.3:0.7", "scale:2"):
        with pytest.raises(ValueError, match="Received: eval_shift"):
            data.parse_shift(bad)
    # A known shift of zoom 2 makes a centred dot bigger: scale acts about the centre.
    dot = np.zeros((1, 9, 9, 1), np.uint8)
    dot[0, 4, 4] = 255
    zoomed = data.apply_shift(dot, "scale:2:2", seed=0)
    assert zoomed[0, 4, 4, 0] > 0 and (zoomed > 0).sum() > 1
