"""Tests of dabo_tf.report: the figures and the end-of-run summary."""

import numpy as np
import pytest
from figures import assert_png
from PIL import Image

from dabo_tf.train import report


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_augmentations_grid(tmp_path, channels):
    rng = np.random.default_rng(0)
    images = rng.random((4, 16, 16, channels)).astype(np.float32)
    calls = []

    def augment(x):
        calls.append(1)
        return np.flip(x, axis=2) * 0.5

    path = report.plot_augmentations(images, augment, tmp_path / "aug.png", num_augmentations=3,
                                     title="test")
    assert len(calls) == 3  # one fresh draw per column
    assert_png(path)
    wider = report.plot_augmentations(images, augment, tmp_path / "wide.png",
                                      num_augmentations=7)
    with Image.open(path) as a, Image.open(wider) as b:
        assert b.width > a.width and b.height == a.height  # one column per augmentation


def test_plot_augmentations_without_augmentation(tmp_path):
    images = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
    assert_png(report.plot_augmentations(images, None, tmp_path / "aug.png"), 50, 100)


def test_plot_curves_with_policy_panels(tmp_path):
    history = {"epoch": [0, 1, 2], "loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.9],
               "accuracy": [0.2, 0.6, 0.8], "val_accuracy": [0.3, 0.5, 0.7],
               "aug_rotate_low": [-0.5, -2.0, -4.0], "aug_rotate_high": [0.5, 2.0, 4.0],
               "aug_translate_x_low": [0.0, -0.01, -0.03], "aug_translate_x_high": [0, 0.01, 0.03],
               "aug_flip_probability": [0.5, 0.4, 0.3]}
    path = report.plot_curves(history, tmp_path / "curves.png", title="digits")
    assert_png(path, 400, 300)
    plain = report.plot_curves({k: v for k, v in history.items() if not k.startswith("aug_")},
                               tmp_path / "plain.png")
    with Image.open(path) as a, Image.open(plain) as b:
        assert a.height > b.height  # the policy scalars add a row of panels
    # One panel per op: low and high share it.
    assert report.policy_panels(history) == {"flip_probability": ["aug_flip_probability"],
                                             "rotate": ["aug_rotate_low", "aug_rotate_high"],
                                             "translate_x": ["aug_translate_x_low",
                                                             "aug_translate_x_high"]}


def test_format_policy_and_summary(tmp_path):
    policy = {"rotate": {"low": -3.5, "high": 4.25, "unit": "degrees"},
              "flip": {"probability": 0.5, "unit": "horizontal flip"},
              "zoom": {"low": 0.7, "high": 1.3, "unit": "scale factor", "draw": "uniform"}}
    lines = report.format_policy(policy)
    assert lines[0].startswith("rotate") and "[-3.5, 4.25] degrees" in lines[0]
    assert "probability=0.5" in lines[1]
    assert lines[2].endswith("[0.7, 1.3] scale factor (uniform)")
    assert report.format_policy({}) == ["(no augmentation)"]
    metrics = {"mode": "dabo", "dataset": "digits", "test_accuracy": 0.9612,
               "best_val_accuracy": 0.97, "epochs": 15, "steps_per_epoch": 15,
               "data_sizes": {"train": 1006, "val": 252, "test": 539},
               "image_shape": [32, 32, 1], "num_classes": 10, "images_per_second": 141.7,
               "wall_time_s": 120.5, "outputs": {"metrics": "metrics.json"},
               "config": {"model": "small_cnn", "batch_size": 64, "lr": 0.05,
                          "lr_schedule": "cosine", "jit_compile": False}}
    text = report.format_summary(metrics, policy, tmp_path)
    for expected in ("mode=dabo", "digits", "small_cnn", "1006 train / 252 val / 539 test",
                     "96.12%", "rotate", "degrees", str(tmp_path), "metrics.json", "120.5 s"):
        assert expected in text, expected
    assert len(text.splitlines()) < 25  # one screen
