"""Learned augmenters: layers whose augmentation distribution is trainable by DABO.

- `LearnedAffine`, `LearnedColor`: per-op uniform distributions centred on the identity whose
  half-widths are learned (the default augmenter);
- `LearnedFlip`, `LearnedCutout`: non-differentiable ops with a learned probability (and
  size), relaxed by the straight-through estimator;
- `build_augmenter`: the named configurations `Config.augmenter` selects, composed in an
  `Augmenter` (`dabo_tf.augment.base`). The paper's noise network is in
  `dabo_tf.augment.network`.

Geometric ops use `dabo_tf.augment.warp.projective_warp` (8-parameter output-to-input
transforms); op names, units and limits come from `dabo_tf.augment.ops.OPS`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from dabo_tf.augment import warp
from dabo_tf.augment.base import AugmentationLayer, Augmenter, as_float32
from dabo_tf.augment.network import NoiseAugmenter
from dabo_tf.augment.ops import (
    AFFINE_OPS,
    COLOR_OPS,
    CUTOUT_UNIT,
    DEFAULT_AFFINE_OPS,
    DEFAULT_COLOR_OPS,
    FILL_UNIT,
    FLIP_UNIT,
    LINEAR_SCALE_LIMIT,
    LINEAR_SCALE_OPS,
    MAX_MAGNITUDE,
    OPS,
    SCALE_PARAMETERISATIONS,
    UNIFORM_DRAW,
    VFLIP_UNIT,
    adjust_color,
    affine_ops,
    cutout,
)
from dabo_tf.config import (
    DEFAULT_AUGMENTER_SCALE,
    DEFAULT_INIT_MAGNITUDE,
    DEFAULT_INIT_RELATIVE,
    DEFAULT_SCALE_DRAW,
    MAGNITUDE_SCALES,
    SCALE_DRAWS,
)
from dabo_tf.seeds import streams

_register = keras.saving.register_keras_serializable(package="dabo_tf")

@_register
class MagnitudeRange(keras.constraints.Constraint):
    """Clips a vector elementwise to `[minimum, maximum]` after each optimizer update."""

    def __init__(self, maximum, minimum=0.0):
        self.maximum = [float(m) for m in maximum]
        self.minimum = [float(m) for m in np.broadcast_to(minimum, [len(self.maximum)])]

    def __call__(self, w):
        bounds = [tf.reshape(tf.constant(b, w.dtype), tf.shape(w))
                  for b in (self.minimum, self.maximum)]
        return tf.clip_by_value(w, *bounds)

    def get_config(self):
        return {"maximum": self.maximum, "minimum": self.minimum}


MIN_LOG_MAGNITUDE = 1e-3
"""Smallest half-width of a log-parameterised op (0.06 degrees, 0.1% shifts): in effect off,
yet able to grow again when the hypergradient turns (a width of exactly 0 never would)."""


def _log_factor(offset):
    """`log(1 + offset)`, the warp's log-scale of a uniformly drawn factor `1 + offset`.

    The offset stays above -0.9: its half-width is capped at `LINEAR_SCALE_LIMIT`, but a
    learned mean (`learn_mean=True`) is not, and a factor must stay positive."""
    return tf.math.log1p(tf.maximum(offset, tf.cast(-0.9, offset.dtype)))


def _log_half_widths(values):
    """The `log_magnitude` of half-widths `values` (at least `MIN_LOG_MAGNITUDE`)."""
    return np.log(np.maximum(values, MIN_LOG_MAGNITUDE))


class _LearnedDistribution(AugmentationLayer):
    """Per-op uniform distributions `mean + magnitude * U(-1, 1)` with trainable parameters.

    The magnitude (half-width) stays in `[0, limits()[op]]` (`MAX_MAGNITUDE`). By default the
    mean is fixed at zero: every distribution is centred on the identity, as in every published
    learned-augmentation method (SLACK, DADA, Augerino, RangeAugment). A learned mean can
    shift all images the same way, which a small validation split rewards by chance.

    With `magnitude_scale="log"` (the default) the trainable variable is the logarithm of
    the half-width (`log_magnitude`, at least `log(MIN_LOG_MAGNITUDE)`): an optimizer step
    changes a width by a factor rather than by an amount, the same for radians, fractions
    and log-scales, and a width that shrank is never stuck at exactly zero, where a
    symmetric distribution gets no hypergradient. `"linear"` learns the half-width itself.
    """

    def __init__(self, learn_mean, init_magnitude, magnitude_scale,
                 init_relative=DEFAULT_INIT_RELATIVE, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if magnitude_scale not in MAGNITUDE_SCALES:
            raise ValueError(f"magnitude_scale must be one of {MAGNITUDE_SCALES}. "
                             f"Received: magnitude_scale={magnitude_scale!r}")
        if init_relative and not 0.0 <= init_magnitude <= 1.0:
            raise ValueError("With init_relative=True, init_magnitude is a fraction of each "
                             f"op's limit, in [0, 1]. Received: init_magnitude={init_magnitude}")
        self.learn_mean = learn_mean
        self.init_magnitude = float(init_magnitude)
        self.magnitude_scale = magnitude_scale
        self.init_relative = bool(init_relative)

    def limits(self):
        """`[n_ops]` largest half-widths (internal units, `MAX_MAGNITUDE`)."""
        return [MAX_MAGNITUDE[op] for op in self.ops]

    def initial_half_widths(self):
        """`[n_ops]` initial half-widths (internal units): `init_magnitude` for every op, or
        with `init_relative` that fraction of each op's limit (`limits()`), the unit
        the prior's width is given in."""
        if self.init_relative:
            return [self.init_magnitude * m for m in self.limits()]
        return [self.init_magnitude] * len(self.ops)

    def _add_distribution_weights(self):
        n = len(self.ops)
        maximum = self.limits()
        init = np.asarray(self.initial_half_widths(), np.float32).reshape([n])
        if self.magnitude_scale == "log":
            self.log_magnitude = self.add_weight(
                name="log_magnitude", shape=(n,), dtype=self.variable_dtype,
                initializer=keras.initializers.Constant(_log_half_widths(init)),
                constraint=MagnitudeRange([math.log(m) for m in maximum],
                                          math.log(MIN_LOG_MAGNITUDE)))
        else:
            self.magnitude = self.add_weight(
                name="magnitude", shape=(n,), dtype=self.variable_dtype,
                initializer=keras.initializers.Constant(init),
                constraint=MagnitudeRange(maximum))
        self.mean = self.add_weight(name="mean", shape=(n,), dtype=self.variable_dtype,
                                    initializer="zeros", trainable=self.learn_mean)

    def get_config(self):
        return {**super().get_config(), "learn_mean": self.learn_mean,
                "init_magnitude": self.init_magnitude, "magnitude_scale": self.magnitude_scale,
                "init_relative": self.init_relative}

    @classmethod
    def from_config(cls, config):
        # Files saved before `magnitude_scale` existed hold linear half-widths, and before
        # `init_relative` existed, absolute initial ones.
        return super().from_config({"magnitude_scale": "linear", "init_relative": False,
                                    **config})

    def half_widths(self):
        """`[n_ops]` half-widths of the distributions (internal units), a tensor."""
        if self.magnitude_scale == "log":
            return tf.exp(tf.convert_to_tensor(self.log_magnitude))
        return tf.abs(tf.convert_to_tensor(self.magnitude))

    def set_half_widths(self, values):
        """Assigns the half-widths (internal units), whatever the parameterisation."""
        values = np.broadcast_to(np.asarray(values, np.float32), [len(self.ops)])
        if self.magnitude_scale == "log":
            self.log_magnitude.assign(_log_half_widths(values))
        else:
            self.magnitude.assign(values)

    def widen(self, log_factor, prior_width=float("inf"), prior_power=2.0):
        """Multiplies every half-width by `exp(log_factor)`, within the op's limits.

        The step of `DaboModel(prior_pull=...)`: in the log parameterisation it adds
        `log_factor` to each log half-width (then clips, as the optimizer's constraint does).
        With `prior_width=inf` that is the KL gradient toward a flat prior (uniform over each
        op's full range). With `prior_width=f` the prior is a zero-centred Gaussian whose
        uniform-equivalent half-width (`sqrt(3)` standard deviations) is
        `w0 = f * limits()[op]`: the KL from `U(-w, w)` to it is
        `-log w + w**2 / (3 * w0**2)` up to a constant, so each op's step is
        `log_factor * (1 - (w / w0)**2)`, widening below `w0` and narrowing above.
        With `prior_power=p` the prior is a generalised Gaussian, density proportional to
        `exp(-|x / s|**p)`: the KL is `-log w + w**p / ((p + 1) s**p)` and the step
        `log_factor * (1 - (w / w0)**p)` with the same resting width `w0`; a larger `p` is
        flatter below `w0` and steeper above it (p -> inf: uniform on `[-w0, w0]`, a cap).
        """
        log_factor = tf.cast(log_factor, tf.float32)
        if math.isfinite(prior_width):
            w0 = tf.constant([prior_width * m for m in self.limits()], tf.float32)
            w = tf.cast(self.half_widths(), tf.float32)
            log_factor = log_factor * (1.0 - tf.pow(w / w0, float(prior_power)))
        if self.magnitude_scale == "log":
            variable = self.log_magnitude
            value = self.log_magnitude + tf.cast(log_factor, variable.dtype)
        else:
            variable = self.magnitude
            value = self.magnitude * tf.exp(tf.cast(log_factor, self.magnitude.dtype))
        variable.assign(variable.constraint(tf.cast(value, variable.dtype)))

    def get_random_transformation(self, images):
        return {"noise": self.uniform_noise((tf.shape(images)[0], len(self.ops)))}

    def op_values(self, transformation):
        """Reparameterisation: `[N, n_ops]` op parameters (internal units) from the noise."""
        return self.mean[None, :] + self.half_widths()[None, :] * transformation["noise"]


@_register
class LearnedAffine(_LearnedDistribution):
    """Learned distribution over affine (optionally projective) warps.

    Each op's parameter is sampled per image as `magnitude * u`, `u ~ U(-1, 1)` (plus a
    trainable `mean` with `learn_mean=True`): a range centred on the identity whose
    half-width, trainable, starts small (`init_magnitude`) and learns how far to rotate,
    shear, scale and shift.
    Internal units: radians (rotate), shear factor, for zoom and scale_x/y the offset `c` of a
    factor `1 + c` (`scale_draw="linear"`, the default: uniform factors, at most x0.5-1.5) or
    its log-scale (`"log"`: log-uniform factors, at most x0.5-2), log-scale (aspect),
    fraction of the image size (translate_x/y), projective term times size (perspective_x/y).

    Args:
        ops: names of the ops to learn, from `AFFINE_OPS`. Defaults to `DEFAULT_AFFINE_OPS`:
            rotation, shear, zoom, aspect ratio and the two shifts.
        projective: also learn the two projective terms. Defaults to False.
        learn_mean: learn a mean (bias) per op besides the magnitude. Defaults to False
            (every range centred on the identity).
        init_magnitude: initial half-width of every op, a fraction of its limit
            (`MAX_MAGNITUDE`), or with `init_relative=False` one internal value for all.
            Defaults to `DEFAULT_INIT_MAGNITUDE` (0.05: +-9 degrees, shifts of +-2.5%...); 0
            starts at the identity (with `magnitude_scale="log"`: at `MIN_LOG_MAGNITUDE`).
        magnitude_scale: `"log"` (learn log half-widths, the default) or `"linear"`.
        init_relative: `init_magnitude` is a fraction of each op's limit rather than one
            internal value for all ops. Defaults to `DEFAULT_INIT_RELATIVE` (True).
        scale_draw: how the scale factors (`LINEAR_SCALE_OPS`: zoom, scale_x, scale_y) are
            drawn: `"linear"`, uniformly in `[1 - w, 1 + w]` (`w` at most
            `LINEAR_SCALE_LIMIT`), what torchvision's and kornia's `RandomAffine(scale=)`
            draw, so the range in `policy()` (marked `"draw": "uniform"`) reads as theirs;
            or `"log"`, log-uniformly in `[e**-w, e**w]`. Defaults to `DEFAULT_SCALE_DRAW`
            (`"linear"`). The aspect ratio is log-uniform either way.
        interpolation, fill_mode, fill_value: passed to `projective_warp`.
        learn_fill: also learn the probability `p` that an image's warp fills outside the
            image with the constant `fill_value` (black by default) instead of `fill_mode`
            (op `fill` of the policy). Which fill is right depends on the data (a
            reflected border adds strokes to a digit; images rotated by a scanner or by a
            test protocol have black corners; natural photographs have neither), so the
            hypergradient chooses: each image draws its fill, and `p` gets a
            straight-through gradient (`_straight_through`), the difference of the two
            fills' effects. Needs `fill_mode` other than `"constant"`. Defaults to False.
        init_fill_probability: initial `p`. Defaults to 0.5 (no preference).
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, ops=DEFAULT_AFFINE_OPS, projective=False, learn_mean=False,
                 init_magnitude=DEFAULT_INIT_MAGNITUDE, magnitude_scale="log",
                 interpolation="bilinear", fill_mode="reflect", fill_value=0.0,
                 learn_fill=False, init_fill_probability=0.5,
                 init_relative=DEFAULT_INIT_RELATIVE, scale_draw=DEFAULT_SCALE_DRAW, seed=None,
                 **kwargs):
        super().__init__(learn_mean, init_magnitude, magnitude_scale, init_relative,
                         seed=seed, **kwargs)
        if scale_draw not in SCALE_DRAWS:
            raise ValueError(f"scale_draw must be one of {SCALE_DRAWS}. "
                             f"Received: scale_draw={scale_draw!r}")
        ops = tuple(ops)
        if projective:
            ops += tuple(o for o in ("perspective_x", "perspective_y") if o not in ops)
        unknown = [o for o in ops if o not in AFFINE_OPS]
        if unknown:
            raise ValueError(f"Unknown affine ops {unknown}; expected names from "
                             f"{list(AFFINE_OPS)}. Received: ops={ops}")
        if interpolation != "bilinear":
            raise ValueError("A learned warp needs interpolation='bilinear' (nearest has no "
                             "gradient in the transform). "
                             f"Received: interpolation={interpolation!r}")
        if learn_fill and fill_mode == "constant":
            raise ValueError("learn_fill chooses between fill_mode and a constant fill; with "
                             "fill_mode='constant' there is nothing to choose. Pass another "
                             "fill_mode (e.g. 'reflect') or learn_fill=False. "
                             f"Received: fill_mode={fill_mode!r}, learn_fill={learn_fill}")
        if not 0.0 <= init_fill_probability <= 1.0:
            raise ValueError("init_fill_probability must be in [0, 1]. "
                             f"Received: init_fill_probability={init_fill_probability}")
        self.ops = ops
        self.scale_draw = scale_draw
        self.linear_ops = tuple(op for op in ops
                                if scale_draw == "linear" and op in LINEAR_SCALE_OPS)
        self.projective = projective
        self.interpolation = interpolation
        self.fill_mode = fill_mode
        self.fill_value = fill_value
        self.learn_fill = bool(learn_fill)
        self.init_fill_probability = float(init_fill_probability)

    def limits(self):
        return [LINEAR_SCALE_LIMIT if op in self.linear_ops else limit
                for op, limit in zip(self.ops, super().limits())]

    def build(self, input_shape=None):
        self._add_distribution_weights()
        if self.learn_fill:
            self.fill_probability = self.add_weight(
                name="fill_probability", shape=(), dtype=self.variable_dtype,
                initializer=keras.initializers.Constant(self.init_fill_probability),
                constraint=MagnitudeRange([1.0]))
        self.built = True

    def get_random_transformation(self, images):
        transformation = super().get_random_transformation(images)
        if self.learn_fill:
            transformation["gate"] = self.uniform_noise((tf.shape(images)[0],), 0.0, 1.0)
        return transformation

    def matrices(self, images, transformation):
        """`[N, 3, 3]` output-to-input matrices of the sampled transforms."""
        values = self.op_values(transformation)
        kwargs = {OPS[op].warp_arg: _log_factor(values[:, i]) if op in self.linear_ops
                  else values[:, i] for i, op in enumerate(self.ops)}
        shape = tf.shape(images)
        if not kwargs:
            kwargs["rotation"] = tf.zeros([shape[0]])
        return warp.affine_matrix(shape[1], shape[2], dtype=values.dtype, **kwargs)

    def transform_images(self, images, transformation):
        transforms = warp.matrices_to_transforms(self.matrices(images, transformation))
        if not self.learn_fill:
            return warp.projective_warp(images, transforms, interpolation=self.interpolation,
                                        fill_mode=self.fill_mode, fill_value=self.fill_value)
        gate = _straight_through(self.fill_probability, transformation["gate"])
        return warp.warp_with_fill_choice(images, transforms, gate, fill_mode=self.fill_mode,
                                          fill_value=self.fill_value,
                                          interpolation=self.interpolation)

    def policy(self):
        mean = keras.ops.convert_to_numpy(self.mean)
        mag = keras.ops.convert_to_numpy(self.half_widths())
        out = {}
        for i, op in enumerate(self.ops):
            unit, factor = AFFINE_OPS[op]
            lo, hi = float(mean[i] - mag[i]), float(mean[i] + mag[i])
            if op in self.linear_ops:
                out[op] = {"low": 1.0 + lo, "high": 1.0 + hi, "unit": unit,
                           "draw": UNIFORM_DRAW}
                continue
            if factor is None:
                lo, hi = math.exp(lo), math.exp(hi)
            else:
                lo, hi = lo * factor, hi * factor
            out[op] = {"low": lo, "high": hi, "unit": unit}
        if self.learn_fill:
            p = float(keras.ops.convert_to_numpy(self.fill_probability))
            out["fill"] = {"low": p, "high": p, "unit": FILL_UNIT}
        return out

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "projective": False,
                "interpolation": self.interpolation, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "learn_fill": self.learn_fill,
                "init_fill_probability": self.init_fill_probability,
                "scale_draw": self.scale_draw}

    @classmethod
    def from_config(cls, config):
        # Files saved before `scale_draw` existed drew scale factors log-uniformly.
        return super().from_config({"scale_draw": "log", **config})


@_register
class LearnedColor(_LearnedDistribution):
    """Learned distribution over colour jitter: brightness, contrast, saturation.

    Sampled per image as `magnitude * u`, `u ~ U(-1, 1)` (plus a learned mean with
    `learn_mean=True`), starting at a small width (`init_magnitude`).
    Ops that do not apply to the input (saturation on single-channel images) are dropped when
    the layer is built, so every trainable parameter receives a gradient.

    Args:
        ops: colour ops to learn, from `COLOR_OPS`. Defaults to all three.
        learn_mean: learn a mean per op besides the magnitude. Defaults to False.
        init_magnitude: initial half-width of every op. Defaults to `DEFAULT_INIT_MAGNITUDE`.
        magnitude_scale: `"log"` (learn log half-widths, the default) or `"linear"`.
        init_relative: `init_magnitude` is a fraction of each op's limit. Defaults to
            `DEFAULT_INIT_RELATIVE` (True).
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, ops=DEFAULT_COLOR_OPS, learn_mean=False,
                 init_magnitude=DEFAULT_INIT_MAGNITUDE, magnitude_scale="log",
                 init_relative=DEFAULT_INIT_RELATIVE, seed=None, **kwargs):
        super().__init__(learn_mean, init_magnitude, magnitude_scale, init_relative,
                         seed=seed, **kwargs)
        unknown = [o for o in ops if o not in COLOR_OPS]
        if unknown:
            raise ValueError(f"Unknown colour ops {unknown}; expected names from "
                             f"{list(COLOR_OPS)}. Received: ops={tuple(ops)}")
        self.requested_ops = tuple(ops)
        self.ops = tuple(ops)

    def build(self, input_shape=None):
        channels = None if input_shape is None else input_shape[-1]
        self.ops = tuple(o for o in self.requested_ops if not (o == "saturation" and channels != 3))
        self._add_distribution_weights()
        self.built = True

    def transform_images(self, images, transformation):
        if not self.ops:
            return images
        values = self.op_values(transformation)
        kwargs = {op: values[:, i] for i, op in enumerate(self.ops)}
        out = adjust_color(tf.cast(images, values.dtype), **kwargs)
        return tf.cast(out, images.dtype)

    def policy(self):
        mean = keras.ops.convert_to_numpy(self.mean)
        mag = keras.ops.convert_to_numpy(self.half_widths())
        out = {}
        for i, op in enumerate(self.ops):
            lo, hi = float(mean[i] - mag[i]), float(mean[i] + mag[i])
            if op != "brightness":
                lo, hi = 1.0 + lo, 1.0 + hi
            out[op] = {"low": lo, "high": hi, "unit": COLOR_OPS[op][0]}
        return out

    def get_config(self):
        return {**super().get_config(), "ops": list(self.requested_ops)}


def _straight_through(probability, noise):
    """Per-image Bernoulli gates `1[noise < p]` whose gradient in `p` is 1 (straight-through).

    The forward value is the hard 0/1 sample; `d gate / d p = 1`, so the gradient of an
    op `x + gate * (op(x) - x)` in `p` is `op(x) - x` for every image: its expectation is
    exactly `d E[x'] / d p`, and a loss sees a first-order estimate of `L(op(x)) - L(x)`
    (the relaxation Faster AutoAugment and DADA use for non-differentiable choices).
    """
    hard = tf.cast(noise < probability, noise.dtype)
    return hard + probability - tf.stop_gradient(probability)


class _LearnedGate(AugmentationLayer):
    """An op applied to each image with a learned probability (straight-through gradient)."""

    def __init__(self, init_probability, max_probability, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= init_probability <= max_probability <= 1.0:
            raise ValueError("Expected 0 <= init_probability <= max_probability <= 1. Received: "
                             f"init_probability={init_probability}, "
                             f"max_probability={max_probability}")
        self.init_probability = float(init_probability)
        self.max_probability = float(max_probability)

    def _add_probability(self):
        self.probability = self.add_weight(
            name="probability", shape=(), dtype=self.variable_dtype,
            initializer=keras.initializers.Constant(self.init_probability),
            constraint=MagnitudeRange([self.max_probability]))

    def get_config(self):
        return {**super().get_config(), "init_probability": self.init_probability,
                "max_probability": self.max_probability}

    def _gated(self, images, transformation, apply):
        x = as_float32(images)
        gate = _straight_through(self.probability, transformation["gate"])
        out = x + gate[:, None, None, None] * (apply(x) - x)
        return tf.cast(out, images.dtype)


@_register
class LearnedFlip(_LearnedGate):
    """Horizontal (or vertical) flip with a learned probability.

    Each image is flipped with probability `p` (trainable, in `[0, max_probability]`); the
    hard choice is made differentiable in `p` by the straight-through estimator (see
    `_straight_through`), so the hypergradient can raise `p` where flipped images help the
    validation loss and lower it where they hurt (digits: a flipped 2 is no 2).

    Args:
        direction: `"horizontal"` (op name `flip`) or `"vertical"` (op name `vflip`).
        init_probability: initial `p`. Defaults to 0.05.
        max_probability: largest `p`. Defaults to 0.5: a flip probability above one half
            would make flipped images the rule, a shift of the data rather than a symmetry.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, direction="horizontal", init_probability=0.05, max_probability=0.5,
                 seed=None, **kwargs):
        if direction not in ("horizontal", "vertical"):
            raise ValueError("direction must be 'horizontal' or 'vertical'. "
                             f"Received: direction={direction!r}")
        super().__init__(init_probability, max_probability, seed=seed, **kwargs)
        self.direction = direction
        self.op = "flip" if direction == "horizontal" else "vflip"

    def build(self, input_shape=None):
        self._add_probability()
        self.built = True

    def get_random_transformation(self, images):
        return {"gate": self.uniform_noise((tf.shape(images)[0],), 0.0, 1.0)}

    def transform_images(self, images, transformation):
        axis = 2 if self.direction == "horizontal" else 1
        return self._gated(images, transformation, lambda x: tf.reverse(x, [axis]))

    def policy(self):
        p = float(keras.ops.convert_to_numpy(self.probability))
        return {self.op: {"low": p, "high": p,
                          "unit": FLIP_UNIT if self.op == "flip" else VFLIP_UNIT}}

    def get_config(self):
        return {**super().get_config(), "direction": self.direction}


@_register
class LearnedCutout(_LearnedGate):
    """Cutout (random erasing) with a learned square size and a learned probability.

    With probability `p` an image gets a square of side `size * min(H, W)` at a uniformly
    random centre replaced by the image's mean colour. `size` is differentiable through the
    mask's soft edges (a sigmoid ramp of half a pixel, `cutout_mask`) and `p` through the
    straight-through estimator (`_straight_through`).

    Args:
        init_size: initial side, as a fraction of the image size. Defaults to 0.1.
        max_size: largest side. Defaults to 0.75.
        init_probability: initial `p`. Defaults to 0.05.
        max_probability: largest `p`. Defaults to 1.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, init_size=0.1, max_size=0.75, init_probability=0.05,
                 max_probability=1.0, seed=None, **kwargs):
        if not 0.0 <= init_size <= max_size <= 1.0:
            raise ValueError("Expected 0 <= init_size <= max_size <= 1. Received: "
                             f"init_size={init_size}, max_size={max_size}")
        super().__init__(init_probability, max_probability, seed=seed, **kwargs)
        self.init_size = float(init_size)
        self.max_size = float(max_size)

    def build(self, input_shape=None):
        self.size = self.add_weight(name="size", shape=(), dtype=self.variable_dtype,
                                    initializer=keras.initializers.Constant(self.init_size),
                                    constraint=MagnitudeRange([self.max_size]))
        self._add_probability()
        self.built = True

    def get_random_transformation(self, images):
        n = tf.shape(images)[0]
        return {"gate": self.uniform_noise((n,), 0.0, 1.0),
                "centre": self.uniform_noise((n, 2), 0.0, 1.0)}

    def transform_images(self, images, transformation):
        return self._gated(images, transformation,
                           lambda x: cutout(x, transformation["centre"], self.size))

    def policy(self):
        size = float(keras.ops.convert_to_numpy(self.size))
        p = float(keras.ops.convert_to_numpy(self.probability))
        return {"cutout": {"low": size, "high": size, "probability": p, "unit": CUTOUT_UNIT}}

    def get_config(self):
        return {**super().get_config(), "init_size": self.init_size, "max_size": self.max_size}


def build_augmenter(kind: str = "distribution", *, color: bool = False, shear: bool = True,
                    scale: str = DEFAULT_AUGMENTER_SCALE, projective=False,
                    flip: bool = False, vflip: bool = False, cutout: bool = False,
                    fill_mode="reflect", fill_value=0.0, learn_fill=False,
                    identity_init=True, learn_mean=False,
                    init_magnitude=DEFAULT_INIT_MAGNITUDE, magnitude_scale="log",
                    init_relative=DEFAULT_INIT_RELATIVE, scale_draw=DEFAULT_SCALE_DRAW,
                    seed=None):
    """Named augmenter configurations.

    Args:
        kind: `"distribution"` (learned uniform distributions per op, the default) or
            `"network"` (the paper's noise MLP).
        color: add learned colour jitter.
        shear: learn a shear range (distribution augmenter only).
        scale: how the distribution augmenter scales images, a key of
            `SCALE_PARAMETERISATIONS`: `"zoom"` (one factor for both axes), `"zoom_aspect"`
            (a zoom and an aspect ratio) or `"axes"` (`scale_x` and `scale_y` on their own).
            Defaults to `DEFAULT_AUGMENTER_SCALE` (`"zoom_aspect"`).
        projective: add the projective terms (distribution augmenter only).
        flip, vflip: add a horizontal / vertical flip with a learned probability.
        cutout: add cutout with a learned size and probability.
        fill_mode, fill_value: how the warp fills outside the image.
        learn_fill: learn the probability of a constant fill instead of `fill_mode`
            (distribution augmenter only; ignored with `fill_mode="constant"`).
        identity_init: start the network augmenter near the identity (False: the paper's
            random start around it).
        learn_mean: the distribution augmenter learns a mean (bias) per op besides its
            magnitude; False (the default) keeps every distribution centred on the identity.
        init_magnitude: initial half-width of the distribution augmenter's ops.
        magnitude_scale: `"log"` or `"linear"` parameterisation of those half-widths.
        init_relative: `init_magnitude` is a fraction of each op's limit.
        scale_draw: `"linear"` (uniform scale factors, the default) or `"log"`
            (log-uniform), see `LearnedAffine`.
        seed: base seed (each layer draws from its own stream, `seed`, `seed + 1`, ...).
    """
    if scale not in SCALE_PARAMETERISATIONS:
        raise ValueError(f"scale must be one of {list(SCALE_PARAMETERISATIONS)}. "
                         f"Received: scale={scale!r}")
    seeds = streams(seed)
    if kind == "distribution":
        ops = affine_ops(scale, shear)
        layers = [LearnedAffine(ops, projective=projective, fill_mode=fill_mode,
                                fill_value=fill_value, learn_mean=learn_mean,
                                learn_fill=learn_fill and fill_mode != "constant",
                                init_magnitude=init_magnitude, magnitude_scale=magnitude_scale,
                                init_relative=init_relative, scale_draw=scale_draw,
                                seed=next(seeds))]
        if color:
            layers.append(LearnedColor(learn_mean=learn_mean, init_magnitude=init_magnitude,
                                       magnitude_scale=magnitude_scale,
                                       init_relative=init_relative, seed=next(seeds)))
    elif kind == "network":
        layers = [NoiseAugmenter(color=color, fill_mode=fill_mode, fill_value=fill_value,
                                 identity_init=identity_init, seed=next(seeds))]
    else:
        raise ValueError("Unknown augmenter kind. Expected 'distribution' or 'network'. "
                         f"Received: kind={kind!r}")
    if flip:
        layers.append(LearnedFlip("horizontal", seed=next(seeds)))
    if vflip:
        layers.append(LearnedFlip("vertical", seed=next(seeds)))
    if cutout:
        layers.append(LearnedCutout(seed=next(seeds)))
    return Augmenter(layers, name="augmenter")
