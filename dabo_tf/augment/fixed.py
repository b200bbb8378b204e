"""Fixed-range augmentation layers: a policy frozen into ordinary, non-trainable layers.

`FixedAffine` (one warp per image), `FixedColor` and `FixedCutout` draw each op uniformly in a
fixed `(low, high)` range in human units; `FrozenPolicy` composes them (an `Augmenter`) from a
policy dict (`dabo_tf.augment.policy`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from dabo_tf import seeds
from dabo_tf.augment import warp
from dabo_tf.augment.base import AugmentationLayer, Augmenter
from dabo_tf.augment.ops import LOG_SCALE_OPS, OPS, POLICY_OPS, adjust_color, cutout

_register = keras.saving.register_keras_serializable(package="dabo_tf")


class _FixedRanges(AugmentationLayer):
    """Common part of the fixed-range layers: validated `{op: (low, high)}` ranges."""

    KNOWN_OPS = ()

    uniform_scales = ()
    """Scale ops drawn uniformly rather than log-uniformly (`FixedAffine` sets them)."""

    def __init__(self, ranges=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        ranges = dict(ranges or {})
        unknown = [op for op in ranges if op not in self.KNOWN_OPS]
        if unknown:
            raise ValueError(f"Unknown ops {unknown}. Expected names from {self.KNOWN_OPS}. "
                             f"Received: ranges={ranges}")
        self.ranges = {op: (float(lo), float(hi)) for op, (lo, hi) in ranges.items()}
        self.ops = tuple(op for op in self.KNOWN_OPS if op in self.ranges)

    def get_random_transformation(self, images):
        """`{"uniform": [N, n_ops]}` in [0, 1) from the layer's `SeedGenerator`."""
        return {"uniform": self.uniform_noise((tf.shape(images)[0], len(self.ops)), 0.0, 1.0)}

    def op_values(self, transformation):
        """Dict of `[N]` op values in human units.

        Scale ops (`LOG_SCALE_OPS`) are log-uniform in their range, unless drawn uniformly
        (`uniform_scales` of `FixedAffine`); `flip`, `vflip` and
        `fill` are 1.0 (flipped, filled with the constant) with probability
        `(low + high) / 2`, else 0.0;
        every other op is uniform in `[low, high]`.
        """
        noise = transformation["uniform"]
        out = {}
        for i, op in enumerate(self.ops):
            lo, hi = self.ranges[op]
            if op in ("flip", "vflip", "fill"):
                out[op] = tf.cast(noise[:, i] < 0.5 * (lo + hi), noise.dtype)
            elif op in LOG_SCALE_OPS and op not in self.uniform_scales:
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
    for the scale ops `scale_x`, `scale_y`, `zoom`, `aspect`, except those in
    `uniform_scales`) and all of them are combined
    into a single output-to-input matrix (`dabo_tf.augment.warp.affine_matrix`, about the
    image centre, after an optional horizontal flip), applied with one
    `dabo_tf.augment.warp.projective_warp`.

    Args:
        ranges: dict `{op: (low, high)}` in human units, ops from
            `POLICY_OPS["geometric"]`: `rotate` (degrees), `shear`, `scale_x`, `scale_y`,
            `zoom` (both axes), `aspect` (width / height) (factors, > 0), `translate_x`,
            `translate_y` (fractions of the size),
            `perspective_x`, `perspective_y`, `flip` and `vflip` (flip probability
            `(low + high) / 2`), `fill` (probability of a constant fill, `fill_value`,
            instead of `fill_mode`).
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        fill_mode: `"reflect"`, `"wrap"`, `"constant"` or `"nearest"`. Defaults to
            `"reflect"`.
        fill_value: value outside the image with `fill_mode="constant"`.
        uniform_scales: scale ops of `ranges` drawn uniformly in `[low, high]` (a policy
            entry with `"draw": "uniform"`, what a `LearnedAffine` with
            `scale_draw="linear"` reports). Defaults to none.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]` or `[H, W, C]`. Output shape: same, same dtype. Identity
    unless called with `training=True` (Keras passes it during `fit`).
    """

    KNOWN_OPS = POLICY_OPS["geometric"]

    def __init__(self, ranges=None, interpolation="bilinear", fill_mode="reflect",
                 fill_value=0.0, uniform_scales=(), seed=None, **kwargs):
        super().__init__(ranges=ranges, seed=seed, **kwargs)
        unknown = [op for op in uniform_scales if op not in LOG_SCALE_OPS]
        if unknown:
            raise ValueError(f"uniform_scales names scale ops only, from {LOG_SCALE_OPS}. "
                             f"Received: uniform_scales={tuple(uniform_scales)}")
        self.uniform_scales = tuple(op for op in uniform_scales if op in self.ranges)
        for op in LOG_SCALE_OPS:
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
        kwargs = {"rotation": tf.zeros_like(transformation["uniform"][:, 0])}
        for op, value in values.items():
            if op == "rotate":
                kwargs["rotation"] = value * (math.pi / 180.0)
            elif op in LOG_SCALE_OPS:
                kwargs[OPS[op].warp_arg] = tf.math.log(value)
            elif op not in ("flip", "vflip", "fill"):
                kwargs[OPS[op].warp_arg] = value
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
        if not self.ops:
            return images
        transforms = warp.matrices_to_transforms(self.matrices(images, transformation))
        if "fill" in self.ranges:
            constant = self.op_values(transformation)["fill"]
            return warp.warp_with_fill_choice(images, transforms, constant,
                                              fill_mode=self.fill_mode,
                                              fill_value=self.fill_value,
                                              interpolation=self.interpolation)
        return warp.projective_warp(images, transforms, interpolation=self.interpolation,
                                    fill_mode=self.fill_mode, fill_value=self.fill_value)

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation,
                "fill_mode": self.fill_mode, "fill_value": self.fill_value,
                "uniform_scales": list(self.uniform_scales)}


@_register
class FixedColor(_FixedRanges):
    """Random colour jitter with fixed per-op ranges (plain tensor math).

    Per image, in this order: `brightness_factor` (multiply), `brightness` and
    `intensity_shift` (add), `contrast` (factor about the image mean) and `saturation` (factor
    away from the grey image; skipped unless the images have 3 channels), as
    `dabo_tf.augment.ops.adjust_color` does for the learned augmenters.

    Args:
        ranges: dict `{op: (low, high)}`, ops from `POLICY_OPS["color"]`.
        clip: clip the result to [0, 1]. Defaults to False, as the learned augmenters.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]` or `[H, W, C]`. Output shape: same, same dtype.
    """

    KNOWN_OPS = POLICY_OPS["color"]

    def __init__(self, ranges=None, clip=False, seed=None, **kwargs):
        super().__init__(ranges=ranges, seed=seed, **kwargs)
        self.clip = bool(clip)

    def transform_images(self, images, transformation):
        if not self.ops:
            return images
        v = self.op_values(transformation)
        x = tf.cast(images, tf.float32)
        if "brightness_factor" in v:
            x = x * v["brightness_factor"][:, None, None, None]
        shifts = [v[op] for op in ("brightness", "intensity_shift") if op in v]
        x = adjust_color(
            x, brightness=tf.add_n(shifts) if shifts else None,
            contrast=v["contrast"] - 1.0 if "contrast" in v else None,
            saturation=v["saturation"] - 1.0 if "saturation" in v else None)
        if self.clip:
            x = tf.clip_by_value(x, 0.0, 1.0)
        return tf.cast(x, images.dtype)

    def get_config(self):
        return {**super().get_config(), "clip": self.clip}


@_register
class FixedCutout(AugmentationLayer):
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
        unknown = [op for op in ranges if op not in POLICY_OPS["erasing"]]
        if unknown:
            raise ValueError(f"Unknown ops {unknown}. Expected names from "
                             f"{POLICY_OPS['erasing']}. "
                             f"Received: ranges={ranges}")
        self.ranges = {op: tuple(float(v) for v in r) for op, r in ranges.items()}

    def get_random_transformation(self, images):
        return {"uniform": self.uniform_noise((tf.shape(images)[0], 4), 0.0, 1.0)}

    def transform_images(self, images, transformation):
        if not self.ranges:
            return images
        low, high, probability = self.ranges["cutout"]
        noise = transformation["uniform"]
        x = tf.cast(images, tf.float32)
        erased = cutout(x, noise[:, 1:3], low + (high - low) * noise[:, 0],
                                softness=0.0)
        erase = (noise[:, 3] < probability)[:, None, None, None]
        return tf.cast(tf.where(erase, erased, x), images.dtype)

    def get_config(self):
        return {**super().get_config(),
                "ranges": {op: list(r) for op, r in self.ranges.items()}}


@_register
class FixedGate(AugmentationLayer):
    """Which images of a batch are augmented: each with probability `probability`.

    Not applied in sequence like the other parts: `select(images, augmented, noise)` keeps
    the augmented version of the chosen images and the original of the others (the clean
    share of a DABO run, `DaboModel(clean_fraction=...)`, frozen as a probability).

    Args:
        probability: the share of images augmented, in [0, 1].
        seed: seed of the layer's `SeedGenerator`.
    """

    def __init__(self, probability=1.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.probability = float(probability)

    def get_random_transformation(self, images):
        return self.uniform_noise((tf.shape(images)[0],), 0.0, 1.0)

    def transform_images(self, images, transformation):
        return images  # the gate chooses between versions: see `select`

    def select(self, images, augmented, transformation):
        keep = transformation >= self.probability
        return tf.where(keep[:, None, None, None], tf.cast(images, augmented.dtype), augmented)

    def get_config(self):
        return {**super().get_config(), "probability": self.probability}


@_register
class FrozenPolicy(Augmenter):
    """A frozen policy as one layer: `FixedAffine` (one warp), `FixedColor`, `FixedCutout`.

    An `Augmenter` of those three parts (each skipped when its ranges are all identities),
    so it samples, replays and reports (`policy()`) like the learned augmenter. A policy's
    gate `augment` (a DABO run's clean share) makes it augment only that share of the images
    (`FixedGate`); the others pass unchanged.

    Args:
        policy: `{op: {"low": ..., "high": ..., "unit": ...}}`, e.g. `augmenter.policy()`,
            `load_policy(path)` or `policy_from_factors(...)`.
        fill_mode: how the warp fills outside the image. Defaults to `"reflect"`.
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        clip: clip colour-jittered images to [0, 1]. Defaults to False.
        seed: base seed: the geometric, colour and erasing parts draw from `seed`, `seed + 1`
            and `seed + 2`.

    Input shape: `[N, H, W, C]` or `[H, W, C]`. Output shape: same, same dtype. Identity
    unless called with `training=True` (Keras passes it during `fit`).
    """

    def __init__(self, policy, fill_mode="reflect", interpolation="bilinear", clip=False,
                 seed=None, **kwargs):
        from dabo_tf.augment.policy import augment_probability, split_policy, uniform_scales

        super().__init__(layers=[], seed=seed, **kwargs)
        self.frozen_policy = {op: dict(entry) for op, entry in policy.items()}
        geometric, color, erasing = split_policy(self.frozen_policy)
        self.augment_probability = augment_probability(self.frozen_policy)
        self.fill_mode = fill_mode
        self.interpolation = interpolation
        self.clip = bool(clip)
        part_seeds = seeds.streams(seed)
        self.affine = FixedAffine(geometric, interpolation=interpolation, fill_mode=fill_mode,
                                  uniform_scales=uniform_scales(self.frozen_policy),
                                  seed=next(part_seeds),
                                  name="fixed_affine")
        self.color = FixedColor(color, clip=clip, seed=next(part_seeds), name="fixed_color")
        self.erasing = FixedCutout(erasing, seed=next(part_seeds), name="fixed_cutout")
        self.gate = FixedGate(self.augment_probability, seed=next(part_seeds),
                              name="fixed_gate")

    def parts(self):
        return [self.affine, self.color, self.erasing]

    def get_random_transformation(self, images):
        transformation = super().get_random_transformation(images)
        if self.augment_probability < 1.0:  # the gate: which images are augmented at all
            transformation.append(self.gate.get_random_transformation(images))
        return transformation

    def transform_images(self, images, transformation):
        n = len(self.parts())
        out = super().transform_images(images, transformation[:n])
        if self.augment_probability < 1.0:
            out = self.gate.select(images, out, transformation[n])
        return out

    def mirror_transformation(self, transformation):
        n = len(self.parts())
        return super().mirror_transformation(transformation[:n]) + list(transformation[n:])

    def policy(self):
        return {op: dict(entry) for op, entry in self.frozen_policy.items()}

    def get_config(self):
        config = AugmentationLayer.get_config(self)
        return {**config, "policy": self.frozen_policy, "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "clip": self.clip}
