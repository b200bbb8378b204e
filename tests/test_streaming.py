"""Tests of dabo_tf.streaming: folders and TFDS data read per step, against in-memory loading."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from test_data import COLORS, _check_labels_follow_colors, _write_class

from dabo_tf import data, streaming


def _stream_arrays(splits, split):
    batches = list(splits.dataset(split, 7, training=False).as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _labels(splits, split, seed):
    return np.concatenate([y for _, y in splits.dataset(split, 4, training=True, seed=seed)
                           .as_numpy_iterator()])


def test_stream_folder_equals_memory(tmp_path):
    for k, (name, color) in enumerate(COLORS.items()):
        _write_class(tmp_path / name, color, 12, start=12 * k)  # png jpg bmp gif tiff
    (tmp_path / "cat" / "broken.png").write_bytes(b"this is not an image")
    with pytest.warns(UserWarning, match="broken.png"):
        memory = data.load("folder", data_dir=str(tmp_path), image_size=12, loading="memory",
                           train_size=20, seed=2)
    with pytest.warns(UserWarning, match="broken.png"):  # left out when listed
        streamed = data.load("folder", data_dir=str(tmp_path), image_size=12,
                             loading="stream", train_size=20, seed=2)
    assert isinstance(streamed, streaming.StreamedSplits) and streamed.streaming
    assert not memory.streaming and "streamed" in streamed.summary()
    assert streamed.sizes == memory.sizes == dict(train=16, val=4, test=11)
    assert (streamed.class_names, streamed.image_shape) == (memory.class_names, (12, 12, 3))
    for split in ("train", "val", "test"):  # the same images in the same splits
        x, y = _stream_arrays(streamed, split)
        np.testing.assert_array_equal(y, memory.arrays(split)[1])
        # PIL and TensorFlow resize (and decode JPEG) with other rounding.
        np.testing.assert_allclose(x, memory.arrays(split)[0] / 255.0, atol=0.06)
        _check_labels_follow_colors(x, y, streamed.class_names)
    np.testing.assert_allclose(streamed.mean, memory.mean, atol=0.01)
    np.testing.assert_allclose(streamed.std, memory.std, atol=0.01)
    assert streamed.sample_images(3).shape == (3, 12, 12, 3)
    # The training order is a function of the seed, and reshuffled every pass.
    np.testing.assert_array_equal(_labels(streamed, "train", 5), _labels(streamed, "train", 5))
    assert not np.array_equal(_labels(streamed, "train", 5), _labels(streamed, "train", 6))


def test_stream_folder_grayscale_and_damaged_file(tmp_path):
    for k, (name, color) in enumerate(COLORS.items()):
        _write_class(tmp_path / "train" / name, color, 6, start=k * 20, gray=True)
        _write_class(tmp_path / "test" / name, color, 2, start=k * 20 + 8, gray=True)
    good = tmp_path / "train" / "dog" / "img26.png"
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:60])  # a valid header, then truncated
    d = data.load("folder", data_dir=str(tmp_path), image_size=8, loading="stream",
                  val_fraction=0.25)
    assert d.image_shape == (8, 8, 1) and d.sizes == dict(train=14, val=5, test=6)
    # The damaged file fails when decoded; another image takes its place in the epoch.
    for split in ("train", "val"):
        x, y = _stream_arrays(d, split)
        assert len(y) == d.sizes[split] and x.shape[1:] == (8, 8, 1)


def test_auto_streams_what_would_not_fit(monkeypatch, tmp_path):
    _write_class(tmp_path / "a", (200, 0, 0), 5)
    _write_class(tmp_path / "b", (0, 200, 0), 5, start=5)
    monkeypatch.setattr(data, "available_memory", lambda: 10**12)
    assert not data.load("folder", data_dir=str(tmp_path), image_size=8).streaming
    monkeypatch.setattr(data, "available_memory", lambda: 4 * 10 * 8 * 8 * 3 - 1)
    assert data.load("folder", data_dir=str(tmp_path), image_size=8).streaming
    with pytest.raises(ValueError, match="eval_shift"):
        data.load("folder", data_dir=str(tmp_path), image_size=8, eval_shift="rotate:10")
    with pytest.raises(ValueError, match="Received: loading='stream'"):
        data.load("digits", loading="stream")


class DaboTinyImages(tfds.core.GeneratorBasedBuilder):
    """A prepared TFDS data set with real records and split metadata: 60 train, 15 test."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, supervised_keys=("image", "label"),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(60), "test": self._generate_examples(15)}

    def _generate_examples(self, n):
        rng = np.random.default_rng(n)
        for i in range(n):
            height, width = rng.integers(10, 30, 2)
            yield i, {"image": np.full((height, width, 3), 100 * (i % 3), np.uint8),
                      "label": i % 3}


def test_stream_tfds_split_strings(tmp_path):
    DaboTinyImages(data_dir=str(tmp_path)).download_and_prepare()
    d = data.load("dabo_tiny_images", data_dir=str(tmp_path), image_size=8, loading="stream",
                  train_size=40)
    assert {k: s.split for k, s in d.sources.items()} == dict(
        train="train[8:40]", val="train[0:8]", test="test")
    assert d.sizes == dict(train=32, val=8, test=15) and d.image_shape == (8, 8, 3)
    memory = data.load("dabo_tiny_images", data_dir=str(tmp_path), image_size=8,
                       loading="memory")
    x, y = _stream_arrays(d, "test")  # the same records, decoded and resized the same way
    np.testing.assert_array_equal(y, memory.y_test)
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), memory.x_test)
    # Labels follow the images' constant grey (100 * label).
    x, y = _stream_arrays(d, "train")
    np.testing.assert_allclose(x[:, 0, 0, 0] * 255, 100 * y, atol=0.5)
    np.testing.assert_array_equal(_labels(d, "train", 1), _labels(d, "train", 1))
    with pytest.raises(ValueError, match="Received: train_size=61"):
        data.load("dabo_tiny_images", data_dir=str(tmp_path), loading="stream", train_size=61)


def test_imagenet_preset_end_to_end_on_mocked_tfds(monkeypatch, tmp_path, cli):
    monkeypatch.setattr(data, "is_online", lambda *a, **k: True)  # preparing is mocked
    out = tmp_path / "run"
    (tmp_path / "downloads" / "manual").mkdir(parents=True)  # where the ILSVRC tars go
    (tmp_path / "downloads" / "manual" / "ILSVRC2012_img_train.tar").write_bytes(b"")
    with tfds.testing.mock_data(num_examples=200):
        code, stdout, err = cli("--experiment=imagenet:smoke", f"--data_dir={tmp_path}",
                                "--mode=dabo", f"--output_dir={out}")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data_loading"] == "stream"
    assert metrics["num_classes"] == 1000 and metrics["image_shape"] == [16, 16, 3]
    assert metrics["dataset"] == "imagenet2012" and "streamed" in stdout


def _write_tiff_grid(path, label, rows=3, cols=4, cell=32):
    """A TIFF whose grid cell (r, c) is filled with 10 * (r * cols + c) + 100 * label."""
    image = np.zeros((rows * cell, cols * cell, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            image[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell, :2] = \
                10 * (r * cols + c) + 100 * label
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_patch_grid_examples_and_whole_image_test(tmp_path):
    for label, name in enumerate(("benign", "invasive")):
        for i in range(10):
            _write_tiff_grid(tmp_path / name / f"{i}.tif", label)
    d = data.load("folder", data_dir=str(tmp_path), image_size=8, patch_grid=(3, 4),
                  val_fraction=0.25)
    assert d.streaming and d.patches_per_image == 12 and d.image_shape == (8, 8, 3)
    assert d.sizes == dict(train=10 * 12, val=4 * 12, test=6)  # patches, patches, images
    x, y = next(iter(d.dataset("test", 6, training=False)))
    assert x.shape == (6, 12, 8, 8, 3)
    # Patch k of an image is grid cell k, row by row, at its own resolution.
    expected = 10 * np.arange(12)[None, :] + 100 * y.numpy()[:, None]
    np.testing.assert_allclose(x.numpy()[:, :, 4, 4, 0] * 255, expected, atol=0.6)
    x, y = _stream_arrays(d, "train")
    assert len(y) == 120 and x.shape[1:] == (8, 8, 3)
    cells = np.round((x[:, 4, 4, 0] * 255 - 100 * y) / 10)
    np.testing.assert_array_equal(np.bincount(cells.astype(int)), np.full(12, 10))


def test_bach_preset_end_to_end_on_generated_tiffs(tmp_path, cli):
    for label, name in enumerate(("Benign", "InSitu", "Invasive", "Normal")):
        for i in range(8):
            _write_tiff_grid(tmp_path / "Photos" / name / f"{name}{i}.tif", label % 2, cell=24)
    out = tmp_path / "run"
    code, stdout, err = cli("--experiment=bach:smoke", f"--data_dir={tmp_path / 'Photos'}",
                            "--train_size=20", "--epochs=1", f"--output_dir={out}")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["patches_per_image"] == 12 and "whole images" in metrics["test_unit"]
    assert metrics["data_sizes"] == dict(train=16 * 12, val=4 * 12, test=10)
    accuracy = metrics["test_accuracy"]
    assert abs(accuracy * 10 - round(accuracy * 10)) < 1e-6  # a share of the 10 test images
