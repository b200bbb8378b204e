"""Hand-written augmentation: named ops as Keras' own preprocessing layers, fixed strengths.

The ops of `Config.hand_policy` (`mode=hand`) and `Config.pre_augmentation` (in front of
DABO's learned augmenter, as the paper's flip on CIFAR).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import keras

from dabo_tf import seeds


class HandOp(NamedTuple):
    """A hand-written op: its Keras preprocessing layer and its fixed strength."""

    layer: Callable  # (image_size, seed) -> keras layer
    policy: Callable  # image_size -> {"low", "high", "unit"} (or "probability") in human units


def _crop_pixels(size):
    return max(1, round(size / 8))  # 4 pixels at 32x32, as CIFAR's pad-4-and-crop


def _crop(size, seed):
    # Integer shifts with zero fill: the same images as zero-padding and a random crop.
    factor = _crop_pixels(size) / size
    return keras.layers.RandomTranslation(factor, factor, fill_mode="constant",
                                          interpolation="nearest", seed=seed)


def _range(low, high, unit):
    return lambda size: {"low": low, "high": high, "unit": unit}


HAND_OPS = {
    "crop": HandOp(_crop, lambda size: {"low": -_crop_pixels(size), "high": _crop_pixels(size),
                                        "unit": "pixels of shift (zero-pad and random crop)"}),
    "flip": HandOp(lambda size, seed: keras.layers.RandomFlip("horizontal", seed=seed),
                   lambda size: {"probability": 0.5, "unit": "horizontal flip"}),
    "vflip": HandOp(lambda size, seed: keras.layers.RandomFlip("vertical", seed=seed),
                    lambda size: {"probability": 0.5, "unit": "vertical flip"}),
    "rotate": HandOp(lambda size, seed: keras.layers.RandomRotation(15 / 360, seed=seed),
                     _range(-15.0, 15.0, "degrees")),
    "translate": HandOp(lambda size, seed: keras.layers.RandomTranslation(0.1, 0.1, seed=seed),
                        _range(-0.1, 0.1, "fraction of width/height")),
    "zoom": HandOp(lambda size, seed: keras.layers.RandomZoom(0.1, seed=seed),
                   _range(0.9, 1.1, "scale factor")),
    "contrast": HandOp(
        lambda size, seed: keras.layers.RandomContrast(0.2, value_range=(0, 1), seed=seed),
        _range(0.8, 1.2, "contrast factor")),
    "brightness": HandOp(
        lambda size, seed: keras.layers.RandomBrightness(0.2, value_range=(0, 1), seed=seed),
        _range(-0.2, 0.2, "additive delta in [0, 1] pixel units")),
}
"""Hand-written ops by name (`hand_policy`, `pre_augmentation`)."""


def build_hand_augmentation(ops, image_size: int, seed: Optional[int] = None) -> list:
    """Keras preprocessing layers for hand ops (see `HAND_OPS`), in the given order."""
    return [HAND_OPS[op].layer(image_size, op_seed)
            for op, op_seed in zip(ops, seeds.streams(seed))]


def hand_policy(ops, image_size: int) -> dict:
    """The hand ops' fixed strengths in human units, in the `policy.json` format."""
    return {op: HAND_OPS[op].policy(image_size) for op in ops}


