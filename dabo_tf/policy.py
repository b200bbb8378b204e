"""Frozen augmentation policies: learn once with DABO, reuse anywhere as plain Keras layers.

A *policy* is the plain dict that `dabo_tf.augment` augmenters report with `policy()`:
`{op: {"low": ..., "high": ..., "unit": ...}}` in human units. `policy_to_layers` turns it into
one ordinary (non-trainable) augmentation layer, `FrozenPolicy`, that draws, per image, each
op's value uniformly in `[low, high]`, for use in front of any classifier or in a `tf.data` map:

```python
policy = augmenter.policy()                   # after DABO training
dabo_tf.policy.save_policy(policy, "policy.json")
front_end = dabo_tf.policy.policy_to_layers(dabo_tf.policy.load_policy("policy.json"), seed=0)
inputs = keras.Input(image_shape)
model = keras.Model(inputs, classifier(front_end(inputs)))  # augments only in training
```

Ops (see `dabo_tf.augment.AFFINE_OPS` and `COLOR_OPS` for the units):

* geometric, combined into one warp per image (`FixedAffine`): `rotate` (degrees), `shear`
  (x += s y), `scale_x`/`scale_y` (scale factors, drawn log-uniformly, as `LearnedAffine`
  draws them), `translate_x`/`translate_y` (fractions of the size), `perspective_x/_y`, and
  `flip` / `vflip` (horizontal / vertical flip with probability `(low + high) / 2`);
* colour (`FixedColor`): `brightness` (additive delta; a multiplicative factor when its unit
  says "factor", as in `NoiseAugmenter.policy()`), `intensity_shift` (additive delta),
  `contrast` and `saturation` (factors; saturation is skipped on 1-channel images);
* erasing (`FixedCutout`): `cutout`, a square of side `low`..`high` (fraction of the size,
  uniform) erased with the key `probability` (default 1).

Extra keys of an op's entry (`mean`, `std`) are ignored.
"""

from __future__ import annotations

import json
import math
import os

import keras
import tensorflow as tf

from dabo_tf import augment, warp

_register = keras.saving.register_keras_serializable(package="dabo_tf")

GEOMETRIC_OPS = tuple(augment.AFFINE_OPS) + ("flip", "vflip")
COLOR_OPS = ("brightness", "brightness_factor", "intensity_shift", "contrast", "saturation")
ERASING_OPS = ("cutout",)
FLIP_UNIT = augment.FLIP_UNIT
_WARP_ARGS = {"rotate": "rotation", "shear": "shear", "scale_x": "log_scale_x",
              "scale_y": "log_scale_y", "translate_x": "translate_x",
              "translate_y": "translate_y", "perspective_x": "perspective_x",
              "perspective_y": "perspective_y"}
_IDENTITY = {"scale_x": 1.0, "scale_y": 1.0, "brightness_factor": 1.0, "contrast": 1.0,
             "saturation": 1.0}  # op values that change nothing (others: 0)


def policy_from_factors(*, rotate=0.0, shear=0.0, scale=0.0, translate=0.0, brightness=0.0,
                        contrast=0.0, saturation=None, flip=False) -> dict:
    """Symmetric policy from one magnitude per op (the Keras Tuner search space).

    Args:
        rotate: maximum rotation in degrees: `[-rotate, rotate]`.
        shear: maximum shear factor: `[-shear, shear]`.
        scale: relative zoom: `scale_x` and `scale_y` each in `[1 / (1 + scale), 1 + scale]`
            (symmetric in log-scale, like `LearnedAffine`'s distribution).
        translate: `translate_x` and `translate_y` each in `[-translate, translate]`
            (fractions of the size).
        brightness: additive delta in `[-brightness, brightness]`.
        contrast: contrast factor in `[1 - contrast, 1 + contrast]`.
        saturation: saturation factor in `[1 - saturation, 1 + saturation]`; None leaves the
            op out (1-channel data).
        flip: random horizontal flip with probability 0.5.

    Returns:
        A policy dict, same format as `dabo_tf.augment.Augmenter.policy()`.
    """
    units = {op: unit for op, (unit, _) in {**augment.AFFINE_OPS, **augment.COLOR_OPS}.items()}
    sym = lambda f, centre=0.0: (centre - float(f) + 0.0, centre + float(f))  # noqa: E731
    scale = float(scale)
    out = {
        "rotate": sym(rotate),
        "shear": sym(shear),
        "scale_x": (1.0 / (1.0 + scale), 1.0 + scale),
        "scale_y": (1.0 / (1.0 + scale), 1.0 + scale),
        "translate_x": sym(translate),
        "translate_y": sym(translate),
        "brightness": sym(brightness),
        "contrast": sym(contrast, 1.0),
    }
    if saturation is not None:
        out["saturation"] = sym(saturation, 1.0)
    policy = {op: {"low": lo, "high": hi, "unit": units[op]} for op, (lo, hi) in out.items()}
    p = 0.5 if flip else 0.0
    policy["flip"] = {"low": p, "high": p, "unit": FLIP_UNIT}
    return policy


def split_policy(policy: dict):
    """Splits a policy into `(geometric, color, erasing)` dicts of `op: (low, high)`.

    Identity ranges (rotate `[0, 0]`, scale `[1, 1]`, flip probability 0, ...) are dropped.
    An erasing op's range is `(low, high, probability)`.

    Raises:
        ValueError: an op is unknown or its entry has no `low`/`high`.
    """
    geometric, color, erasing = {}, {}, {}
    for op, entry in policy.items():
        if not isinstance(entry, dict) or "low" not in entry or "high" not in entry:
            raise ValueError(f"Each policy entry must be a dict with 'low' and 'high'. "
                             f"Received: policy[{op!r}]={entry!r}")
        lo, hi = float(entry["low"]), float(entry["high"])
        if op == "brightness" and "factor" in str(entry.get("unit", "")):
            op = "brightness_factor"
        known = GEOMETRIC_OPS + COLOR_OPS + ERASING_OPS
        if op not in known:
            raise ValueError(f"Unknown policy op. Expected one of {known}. Received: op={op!r}")
        if op in ERASING_OPS:
            p = float(entry.get("probability", 1.0))
            if hi > 0 and p > 0:
                erasing[op] = (lo, hi, p)
            continue
        identity = _IDENTITY.get(op, 0.0)
        if lo == identity and hi == identity:
            continue
        (geometric if op in GEOMETRIC_OPS else color)[op] = (lo, hi)
    return geometric, color, erasing


def save_policy(policy: dict, path) -> None:
    """Writes a policy as JSON (creating the parent folder)."""
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    plain = {op: {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "dtype") else v)
                  for k, v in entry.items()} for op, entry in policy.items()}
    with open(path, "w") as f:
        json.dump(plain, f, indent=2, sort_keys=True)


def load_policy(path) -> dict:
    """Reads a policy written by `save_policy` and checks its format."""
    with open(os.fspath(path)) as f:
        policy = json.load(f)
    split_policy(policy)
    return policy


class _FixedRanges(augment._AugmentationLayer):
    """Common part of the fixed-range layers: validated `{op: (low, high)}` ranges."""

    KNOWN_OPS = ()

    def __init__(self, ranges=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        ranges = dict(ranges or {})
        unknown = [op for op in ranges if op not in self.KNOWN_OPS]
        if unknown:
            raise ValueError(f"Unknown ops {unknown}. Expected names from {self.KNOWN_OPS}. "
                             f"Received: ranges={ranges}")
        self.ranges = {op: (float(lo), float(hi)) for op, (lo, hi) in ranges.items()}
        self.ops = tuple(op for op in self.KNOWN_OPS if op in self.ranges)

    def call(self, images, training=None, transformation=None):
        if not self.ops:
            return images
        return super().call(images, training=training, transformation=transformation)

    def get_random_transformation(self, images):
        """`{"noise": [N, n_ops]}` uniform in [0, 1) from the layer's `SeedGenerator`."""
        return {"noise": self.uniform_noise((tf.shape(images)[0], len(self.ops)), 0.0, 1.0)}

    def op_values(self, transformation):
        """Dict of `[N]` op values in human units.

        Scale ops are log-uniform in their range; `flip` is 1.0 (flipped) with probability
        `(low + high) / 2`, else 0.0; every other op is uniform in `[low, high]`.
        """
        noise = transformation["noise"]
        out = {}
        for i, op in enumerate(self.ops):
            lo, hi = self.ranges[op]
            if op in ("flip", "vflip"):
                out[op] = tf.cast(noise[:, i] < 0.5 * (lo + hi), noise.dtype)
            elif op in ("scale_x", "scale_y"):
                lo, hi = math.log(lo), math.log(hi)
                out[op] = tf.exp(lo + (hi - lo) * noise[:, i])
            else:
                out[op] = lo + (hi - lo) * noise[:, i]
        return out

    def get_config(self):
        return {**super().get_config(),
                "ranges": {op: list(self.ranges[op]) for op in self.ops}}


@_register
class FixedAffine(_FixedRanges):
    """Random affine (optionally projective) warps with fixed per-op ranges, one per image.

    Each op's value is drawn per image uniformly in its `(low, high)` range (log-uniformly
    for `scale_x`/`scale_y`) and all of them are combined into a single output-to-input
    matrix (`dabo_tf.warp.affine_matrix`, about the image centre, after an optional
    horizontal flip), applied with one `dabo_tf.warp.projective_warp`.

    Args:
        ranges: dict `{op: (low, high)}` in human units, ops from `GEOMETRIC_OPS`: `rotate`
            (degrees), `shear`, `scale_x`, `scale_y` (factors, > 0), `translate_x`,
            `translate_y` (fractions of the size), `perspective_x`, `perspective_y`, and
            `flip` (flip probability `(low + high) / 2`).
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        fill_mode: `"reflect"`, `"wrap"`, `"constant"` or `"nearest"`. Defaults to
            `"reflect"`.
        fill_value: value outside the image with `fill_mode="constant"`.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]` or `[H, W, C]`. Output shape: same, same dtype. Identity
    unless called with `training=True` (Keras passes it during `fit`).
    """

    KNOWN_OPS = GEOMETRIC_OPS

    def __init__(self, ranges=None, interpolation="bilinear", fill_mode="reflect",
                 fill_value=0.0, seed=None, **kwargs):
        super().__init__(ranges=ranges, seed=seed, **kwargs)
        for op in ("scale_x", "scale_y"):
            if op in self.ranges and min(self.ranges[op]) <= 0.0:
                raise ValueError(f"Scale factors must be > 0. Received: {op}={self.ranges[op]}")
        self.interpolation = interpolation
        self.fill_mode = fill_mode
        self.fill_value = float(fill_value)

    def matrices(self, images, transformation):
        """`[N, 3, 3]` output-to-input matrices of the sampled transforms."""
        values = self.op_values(transformation)
        shape = tf.shape(images)
        h, w = shape[1], shape[2]
        kwargs = {"rotation": tf.zeros_like(transformation["noise"][:, 0])}
        for op, value in values.items():
            if op == "rotate":
                kwargs["rotation"] = value * (math.pi / 180.0)
            elif op in ("scale_x", "scale_y"):
                kwargs[_WARP_ARGS[op]] = tf.math.log(value)
            elif op not in ("flip", "vflip"):
                kwargs[_WARP_ARGS[op]] = value
        matrices = warp.affine_matrix(h, w, **kwargs)
        # The image is flipped (x -> w - 1 - x, y -> h - 1 - y), then warped.
        for op, row, size in (("flip", 0, w), ("vflip", 1, h)):
            if op in values:
                sign = 1.0 - 2.0 * values[op]
                zeros, ones = tf.zeros_like(sign), tf.ones_like(sign)
                offset = (1.0 - sign) * 0.5 * (tf.cast(size, sign.dtype) - 1.0)
                rows = [[ones, zeros, zeros], [zeros, ones, zeros], [zeros, zeros, ones]]
                rows[row] = [sign, zeros, offset] if row == 0 else [zeros, sign, offset]
                flip = tf.stack([tf.stack(r, -1) for r in rows], -2)
                matrices = warp.compose(flip, matrices)
        return matrices

    def transform_images(self, images, transformation):
        transforms = warp.matrices_to_transforms(self.matrices(images, transformation))
        return warp.projective_warp(images, transforms, interpolation=self.interpolation,
                                    fill_mode=self.fill_mode, fill_value=self.fill_value)

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation,
                "fill_mode": self.fill_mode, "fill_value": self.fill_value}


@_register
class FixedColor(_FixedRanges):
    """Random colour jitter with fixed per-op ranges (plain tensor math).

    Per image, in this order: `brightness_factor` (multiply), `brightness` and
    `intensity_shift` (add), `contrast` (factor about the image mean) and `saturation` (factor
    away from the grey image; skipped unless the images have 3 channels), as
    `dabo_tf.augment.adjust_color` does for the learned augmenters.

    Args:
        ranges: dict `{op: (low, high)}`, ops from `COLOR_OPS`.
        clip: clip the result to [0, 1]. Defaults to False, as the learned augmenters.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]` or `[H, W, C]`. Output shape: same, same dtype.
    """

    KNOWN_OPS = COLOR_OPS

    def __init__(self, ranges=None, clip=False, seed=None, **kwargs):
        super().__init__(ranges=ranges, seed=seed, **kwargs)
        self.clip = bool(clip)

    def transform_images(self, images, transformation):
        v = self.op_values(transformation)
        x = tf.cast(images, tf.float32)
        if "brightness_factor" in v:
            x = x * v["brightness_factor"][:, None, None, None]
        shifts = [v[op] for op in ("brightness", "intensity_shift") if op in v]
        x = augment.adjust_color(
            x, brightness=tf.add_n(shifts) if shifts else None,
            contrast=v["contrast"] - 1.0 if "contrast" in v else None,
            saturation=v["saturation"] - 1.0 if "saturation" in v else None)
        if self.clip:
            x = tf.clip_by_value(x, 0.0, 1.0)
        return tf.cast(x, images.dtype)

    def get_config(self):
        return {**super().get_config(), "clip": self.clip}


@_register
class FixedCutout(augment._AugmentationLayer):
    """Cutout with a fixed size range and probability, as `LearnedCutout` applies it.

    With probability `probability` an image gets a square of side uniform in `[low, high]`
    (fractions of the smaller image side) at a uniformly random centre, filled with the
    image's mean colour (hard edges).

    Args:
        ranges: `{"cutout": (low, high, probability)}` (or empty: identity).
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]` or `[H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, ranges=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        ranges = dict(ranges or {})
        unknown = [op for op in ranges if op not in ERASING_OPS]
        if unknown:
            raise ValueError(f"Unknown ops {unknown}. Expected names from {ERASING_OPS}. "
                             f"Received: ranges={ranges}")
        self.ranges = {op: tuple(float(v) for v in r) for op, r in ranges.items()}

    def call(self, images, training=None, transformation=None):
        if not self.ranges:
            return images
        return super().call(images, training=training, transformation=transformation)

    def get_random_transformation(self, images):
        return {"noise": self.uniform_noise((tf.shape(images)[0], 4), 0.0, 1.0)}

    def transform_images(self, images, transformation):
        low, high, probability = self.ranges["cutout"]
        noise = transformation["noise"]
        x = tf.cast(images, tf.float32)
        erased = augment.cutout(x, noise[:, 1:3], low + (high - low) * noise[:, 0],
                                softness=0.0)
        erase = (noise[:, 3] < probability)[:, None, None, None]
        return tf.cast(tf.where(erase, erased, x), images.dtype)

    def get_config(self):
        return {**super().get_config(),
                "ranges": {op: list(r) for op, r in self.ranges.items()}}


@_register
class FrozenPolicy(augment._AugmentationLayer):
    """A frozen policy as one layer: `FixedAffine` (one warp), `FixedColor`, `FixedCutout`.

    Args:
        policy: `{op: {"low": ..., "high": ..., "unit": ...}}`, e.g. `augmenter.policy()`,
            `load_policy(path)` or `policy_from_factors(...)`.
        fill_mode: how the warp fills outside the image. Defaults to `"reflect"`.
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        clip: clip colour-jittered images to [0, 1]. Defaults to False.
        seed: seed of the geometric part (colour uses `seed + 1`, cutout `seed + 2`).

    Input shape: `[N, H, W, C]` or `[H, W, C]`. Output shape: same, same dtype. Identity
    unless called with `training=True` (Keras passes it during `fit`).
    """

    def __init__(self, policy, fill_mode="reflect", interpolation="bilinear", clip=False,
                 seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.policy = {op: dict(entry) for op, entry in policy.items()}
        geometric, color, erasing = split_policy(self.policy)
        self.fill_mode = fill_mode
        self.interpolation = interpolation
        self.clip = bool(clip)
        self.affine = FixedAffine(geometric, interpolation=interpolation, fill_mode=fill_mode,
                                  seed=seed, name="fixed_affine")
        self.color = FixedColor(color, clip=clip, seed=None if seed is None else seed + 1,
                                name="fixed_color")
        self.erasing = FixedCutout(erasing, seed=None if seed is None else seed + 2,
                                   name="fixed_cutout")

    def build(self, input_shape=None):
        for layer in (self.affine, self.color, self.erasing):
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def call(self, images, training=None):
        if not training:
            return images
        for layer in (self.affine, self.color, self.erasing):
            images = layer(images, training=True)
        return images

    def get_config(self):
        return {**super().get_config(), "policy": self.policy, "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "clip": self.clip}


def policy_to_layers(policy: dict, *, seed=None, fill_mode: str = "reflect",
                     interpolation: str = "bilinear", clip: bool = False,
                     name: str = "frozen_policy") -> FrozenPolicy:
    """Freezes a policy into one Keras augmentation layer (`FrozenPolicy`).

    Args:
        policy: `{op: {"low": ..., "high": ..., "unit": ...}}`, e.g. `augmenter.policy()`,
            `load_policy(path)` or `policy_from_factors(...)`.
        seed: seed of the geometric part (the colour part uses `seed + 1`).
        fill_mode: how the warp fills outside the image. Defaults to `"reflect"`.
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        clip: clip colour-jittered images to [0, 1]. Defaults to False.
        name: name of the layer.

    Returns:
        A `FrozenPolicy` layer that augments when called with `training=True` (as in `fit`)
        and is the identity otherwise; parts with only identity ranges are skipped.
    """
    return FrozenPolicy(policy, fill_mode=fill_mode, interpolation=interpolation, clip=clip,
                        seed=seed, name=name)
