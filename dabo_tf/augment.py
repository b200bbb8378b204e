"""Learned augmenters: Keras 3 layers whose augmentation distribution is trainable.

Every augmenter splits *sampling* a transformation from *applying* it, as Keras'
preprocessing layers do:

- `get_random_transformation(images)` draws the per-image noise (from a
  `keras.random.SeedGenerator`, so runs are reproducible from a seed) and returns it in a dict;
- `transform_images(images, transformation)` maps the noise to op parameters with the
  reparameterisation trick and applies them, differentiably in the layer's weights;
- `call(images, training=None, transformation=None)` does both when `training` is true and
  returns its input unchanged otherwise. Passing a `transformation` replays one sample.

Images are `[N, H, W, C]` floats in [0, 1] pixel units; the output has the input's shape and
dtype (float16/bfloat16 included), while the learned parameters and transforms stay float32.
Geometric ops use `dabo_tf.warp.projective_warp` (8-parameter output-to-input transforms).

`policy()` reports the learned distribution in human units as a plain dict
`{op: {"low": ..., "high": ..., "unit": ...}}` (ranges of a uniform distribution for the
distribution augmenters, 5th/95th percentiles for the noise network), the format that
`dabo_tf.policy` freezes into ordinary Keras augmentation layers.
"""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import tensorflow as tf

from dabo_tf import warp

_register = keras.saving.register_keras_serializable(package="dabo_tf")

# op name -> (human unit, factor from internal parameter to human unit)
AFFINE_OPS = {
    "rotate": ("degrees", 180.0 / math.pi),
    "shear": ("shear factor (x += s * y)", 1.0),
    "scale_x": ("scale factor", None),  # internal: log-scale; human: exp(value)
    "scale_y": ("scale factor", None),
    "translate_x": ("fraction of width", 1.0),
    "translate_y": ("fraction of height", 1.0),
    "perspective_x": ("projective term x size", 1.0),
    "perspective_y": ("projective term x size", 1.0),
}
COLOR_OPS = {
    "brightness": ("additive delta in [0, 1] pixel units", 1.0),
    "contrast": ("contrast factor", None),  # internal c: factor 1 + c
    "saturation": ("saturation factor", None),
}
DEFAULT_AFFINE_OPS = ("rotate", "shear", "scale_x", "scale_y", "translate_x", "translate_y")
DEFAULT_COLOR_OPS = ("brightness", "contrast", "saturation")
MAX_MAGNITUDE = {
    "rotate": math.pi, "shear": 1.0, "scale_x": math.log(2.0), "scale_y": math.log(2.0),
    "translate_x": 0.5, "translate_y": 0.5, "perspective_x": 1.0, "perspective_y": 1.0,
    "brightness": 0.5, "contrast": 0.9, "saturation": 1.0,
}
"""Largest learnable magnitude of each op (internal units): +-180 degrees, shear +-1, scale
x0.5-x2, shifts of half the size, brightness +-0.5, contrast and saturation factors from 0.1
and 0 up. A cap keeps a runaway hypergradient from producing meaningless images."""
DEFAULT_INIT_MAGNITUDE = 0.05
"""Initial half-width of every learned op (internal units: 2.9 degrees, 5% shifts, x0.95-1.05
scales...). A symmetric distribution of zero width gets no first-order hypergradient (the
noise averages out), so learning starts from a small width rather than exactly identity."""
MAGNITUDE_SCALES = ("log", "linear")
"""Parameterisations of a learned half-width: its logarithm (the default) or itself."""
FLIP_UNIT = "probability of a horizontal flip"
VFLIP_UNIT = "probability of a vertical flip"
CUTOUT_UNIT = "side of the erased square, fraction of the image size"


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser on int64 tensors holding 32-bit values."""
    mask = tf.constant(0xFFFFFFFF, tf.int64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = (x * 0x85EBCA6B) & mask
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
    x = (x * 0xC2B2AE35) & mask
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def hash_uniform(shape, seed, minval=0.0, maxval=1.0, offset=0):
    """Counter-based uniform float32 noise: `fmix32(counter + fmix32(seed))`.

    Bit-identical on every device and under XLA (unlike `tf.random.stateless_uniform`),
    so `jit_compile=True` and `False` train identically from the same seed.

    Args:
        shape: output shape (may hold tensors).
        seed: `[2]` integer tensor, e.g. `SeedGenerator.next()`.
        minval, maxval: range of the uniform distribution.
        offset: first counter value (a slice of a larger draw).
    """
    mask = tf.constant(0xFFFFFFFF, tf.int64)
    seed = tf.cast(seed, tf.int64) & mask
    key = _fmix32((seed[0] * 0x9E3779B9 + seed[1] * 0x7F4A7C15 + 0x2545F491) & mask)
    key = _fmix32(tf.bitwise.bitwise_xor(key, seed[1]) + 0x6A09E667 & mask)
    count = tf.reduce_prod(tf.cast(tf.stack(shape), tf.int64))
    counter = tf.range(count, dtype=tf.int64) + tf.cast(offset, tf.int64)
    bits = _fmix32(_fmix32((counter * 0x9E3779B9 + key) & mask) ^ key)
    unit = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / 16777216.0)
    return tf.reshape(minval + (maxval - minval) * unit, shape)


def _as_float32(images):
    return tf.cast(images, tf.float32) if images.dtype not in (tf.float32, tf.float64) else images


class _AugmentationLayer(keras.layers.Layer):
    """Shared plumbing: seed generator, identity at inference, input dtype preserved."""

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Keep the caller's image dtype; parameters and transforms use the variable dtype.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def __call__(self, images, *args, **kwargs):
        # Input conversion is off (to keep the caller's dtype); still hand Keras a tensor so
        # `build` receives the input shape.
        if not (tf.is_tensor(images) or isinstance(images, keras.KerasTensor)):
            images = tf.convert_to_tensor(images)
        return super().__call__(images, *args, **kwargs)

    def uniform_noise(self, shape, minval=-1.0, maxval=1.0):
        """Uniform noise from the layer's `SeedGenerator`, identical with and without XLA.

        TensorFlow's stateless generators give different numbers under XLA than with the
        default kernels, so the bits come from `hash_uniform` (plain integer arithmetic).
        Under `tf.distribute`, replica r draws rows `[r * n, (r + 1) * n)` of the noise the
        global batch would get on one device, so distributed and single-device runs agree.
        """
        offset = 0
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            offset = (tf.cast(ctx.replica_id_in_sync_group, tf.int64)
                      * tf.reduce_prod(tf.cast(tf.stack(shape), tf.int64)))
        noise = hash_uniform(shape, self.seed_generator.next(), minval, maxval, offset=offset)
        return tf.cast(noise, self.variable_dtype)

    def call(self, images, training=None, transformation=None):
        images = tf.convert_to_tensor(images)
        if not training:
            return images
        unbatched = images.shape.rank == 3  # one image, e.g. in tf.data before batching
        batch = images[None] if unbatched else images
        if transformation is None:
            transformation = self.get_random_transformation(batch)
        out = self.transform_images(batch, transformation)
        return out[0] if unbatched else out

    def mirror_transformation(self, transformation):
        """The antithetic sample of `transformation`: each op at the opposite end of its range.

        Noise in `[-1, 1]` (key `"noise"`) is negated, noise in `[0, 1)` (keys `"gate"` and
        `"centre"`) is replaced by `1 - u`; anything else (dropout masks) is kept. Used by
        `DaboModel(antithetic=True)` to pair each image with its mirrored transformation.
        """
        mirror = {"noise": lambda u: -u, "gate": lambda u: 1.0 - u, "centre": lambda u: 1.0 - u}
        return {key: mirror.get(key, lambda v: v)(value)
                for key, value in transformation.items()}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


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


class _LearnedDistribution(_AugmentationLayer):
    """Per-op uniform distributions `mean + magnitude * U(-1, 1)` with trainable parameters.

    The magnitude (half-width) stays in `[0, MAX_MAGNITUDE[op]]`. By default the mean is
    fixed at zero: every distribution is centred on the identity, as in every published
    learned-augmentation method (SLACK, DADA, Augerino, RangeAugment). A learned mean can
    shift all images the same way, which a small validation split rewards by chance.

    With `magnitude_scale="log"` (the default) the trainable variable is the logarithm of
    the half-width (`log_magnitude`, at least `log(MIN_LOG_MAGNITUDE)`): an optimizer step
    changes a width by a factor rather than by an amount, the same for radians, fractions
    and log-scales, and a width that shrank is never stuck at exactly zero, where a
    symmetric distribution gets no hypergradient. `"linear"` learns the half-width itself.
    """

    def __init__(self, learn_mean, init_magnitude, magnitude_scale, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if magnitude_scale not in MAGNITUDE_SCALES:
            raise ValueError(f"magnitude_scale must be one of {MAGNITUDE_SCALES}. "
                             f"Received: magnitude_scale={magnitude_scale!r}")
        self.learn_mean = learn_mean
        self.init_magnitude = float(init_magnitude)
        self.magnitude_scale = magnitude_scale

    def _add_distribution_weights(self):
        n = len(self.ops)
        maximum = [MAX_MAGNITUDE[op] for op in self.ops]
        if self.magnitude_scale == "log":
            self.log_magnitude = self.add_weight(
                name="log_magnitude", shape=(n,), dtype=self.variable_dtype,
                initializer=keras.initializers.Constant(
                    math.log(max(self.init_magnitude, MIN_LOG_MAGNITUDE))),
                constraint=MagnitudeRange([math.log(m) for m in maximum],
                                          math.log(MIN_LOG_MAGNITUDE)))
        else:
            self.magnitude = self.add_weight(
                name="magnitude", shape=(n,), dtype=self.variable_dtype,
                initializer=keras.initializers.Constant(self.init_magnitude),
                constraint=MagnitudeRange(maximum))
        self.mean = self.add_weight(name="mean", shape=(n,), dtype=self.variable_dtype,
                                    initializer="zeros", trainable=self.learn_mean)

    def get_config(self):
        return {**super().get_config(), "learn_mean": self.learn_mean,
                "init_magnitude": self.init_magnitude, "magnitude_scale": self.magnitude_scale}

    @classmethod
    def from_config(cls, config):
        # Files saved before `magnitude_scale` existed hold linear half-widths.
        return super().from_config({"magnitude_scale": "linear", **config})

    def half_widths(self):
        """`[n_ops]` half-widths of the distributions (internal units), a tensor."""
        if self.magnitude_scale == "log":
            return tf.exp(tf.convert_to_tensor(self.log_magnitude))
        return tf.abs(tf.convert_to_tensor(self.magnitude))

    def set_half_widths(self, values):
        """Assigns the half-widths (internal units), whatever the parameterisation."""
        values = np.broadcast_to(np.asarray(values, np.float32), [len(self.ops)])
        if self.magnitude_scale == "log":
            self.log_magnitude.assign(np.log(np.maximum(values, MIN_LOG_MAGNITUDE)))
        else:
            self.magnitude.assign(values)

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
    Internal units: radians (rotate), shear factor, log-scale (scale_x/y), fraction of the
    image size (translate_x/y), projective term times size (perspective_x/y).

    Args:
        ops: names of the ops to learn, from `AFFINE_OPS`. Defaults to the six affine ops.
        projective: also learn the two projective terms. Defaults to False.
        learn_mean: learn a mean (bias) per op besides the magnitude. Defaults to False
            (every range centred on the identity).
        init_magnitude: initial magnitude of every op (internal units). Defaults to
            `DEFAULT_INIT_MAGNITUDE` (0.05); 0 starts at the identity (with
            `magnitude_scale="log"`: at `MIN_LOG_MAGNITUDE`).
        magnitude_scale: `"log"` (learn log half-widths, the default) or `"linear"`.
        interpolation, fill_mode, fill_value: passed to `projective_warp`.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, ops=DEFAULT_AFFINE_OPS, projective=False, learn_mean=False,
                 init_magnitude=DEFAULT_INIT_MAGNITUDE, magnitude_scale="log",
                 interpolation="bilinear", fill_mode="reflect", fill_value=0.0, seed=None,
                 **kwargs):
        super().__init__(learn_mean, init_magnitude, magnitude_scale, seed=seed, **kwargs)
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
        self.ops = ops
        self.projective = projective
        self.interpolation = interpolation
        self.fill_mode = fill_mode
        self.fill_value = fill_value

    def build(self, input_shape=None):
        self._add_distribution_weights()
        self.built = True

    def matrices(self, images, transformation):
        """`[N, 3, 3]` output-to-input matrices of the sampled transforms."""
        values = self.op_values(transformation)
        kwargs = {}
        names = {"rotate": "rotation", "shear": "shear", "scale_x": "log_scale_x",
                 "scale_y": "log_scale_y", "translate_x": "translate_x",
                 "translate_y": "translate_y", "perspective_x": "perspective_x",
                 "perspective_y": "perspective_y"}
        for i, op in enumerate(self.ops):
            kwargs[names[op]] = values[:, i]
        shape = tf.shape(images)
        if not kwargs:
            kwargs["rotation"] = tf.zeros([shape[0]])
        return warp.affine_matrix(shape[1], shape[2], dtype=values.dtype, **kwargs)

    def transform_images(self, images, transformation):
        transforms = warp.matrices_to_transforms(self.matrices(images, transformation))
        return warp.projective_warp(images, transforms, interpolation=self.interpolation,
                                    fill_mode=self.fill_mode, fill_value=self.fill_value)

    def policy(self):
        mean = keras.ops.convert_to_numpy(self.mean)
        mag = keras.ops.convert_to_numpy(self.half_widths())
        out = {}
        for i, op in enumerate(self.ops):
            unit, factor = AFFINE_OPS[op]
            lo, hi = float(mean[i] - mag[i]), float(mean[i] + mag[i])
            if factor is None:
                lo, hi = math.exp(lo), math.exp(hi)
            else:
                lo, hi = lo * factor, hi * factor
            out[op] = {"low": lo, "high": hi, "unit": unit}
        return out

    def policy_scalars(self):
        """Scalar summaries for logs: half-range of each op in human units."""
        mag = self.half_widths()
        out = {}
        for i, op in enumerate(self.ops):
            factor = AFFINE_OPS[op][1]
            name = {"rotate": "rotate_deg"}.get(op, op)
            out[f"aug_{name}"] = mag[i] * (factor or 1.0)
        return out

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "projective": False,
                "interpolation": self.interpolation, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value}


def adjust_color(images, brightness=None, contrast=None, saturation=None):
    """Differentiable colour ops as plain tensor math (`tf.image.adjust_*` lack gradients).

    Args:
        images: `[N, H, W, C]` float32 in [0, 1].
        brightness: `[N]` additive delta, or None.
        contrast: `[N]` c, contrast factor `1 + c` about each image's mean, or None.
        saturation: `[N]` s, blend factor `1 + s` away from the grey image (luma weights of
            `tf.image.rgb_to_grayscale`); ignored for images with other than 3 channels.

    Returns:
        The adjusted images (not clipped, so gradients never vanish at the range limits).
    """
    if brightness is not None:
        images = images + brightness[:, None, None, None]
    if contrast is not None:
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = mean + (images - mean) * (1.0 + contrast[:, None, None, None])
    if saturation is not None and images.shape[-1] == 3:
        luma = tf.constant([0.2989, 0.5870, 0.1140], images.dtype)
        grey = tf.reduce_sum(images * luma, axis=-1, keepdims=True)
        images = grey + (images - grey) * (1.0 + saturation[:, None, None, None])
    return images


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
        init_magnitude: initial magnitude of every op. Defaults to `DEFAULT_INIT_MAGNITUDE`.
        magnitude_scale: `"log"` (learn log half-widths, the default) or `"linear"`.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, ops=DEFAULT_COLOR_OPS, learn_mean=False,
                 init_magnitude=DEFAULT_INIT_MAGNITUDE, magnitude_scale="log", seed=None,
                 **kwargs):
        super().__init__(learn_mean, init_magnitude, magnitude_scale, seed=seed, **kwargs)
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

    def policy_scalars(self):
        mag = self.half_widths()
        return {f"aug_{op}": mag[i] for i, op in enumerate(self.ops)}

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


class _LearnedGate(_AugmentationLayer):
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
        x = _as_float32(images)
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

    def policy_scalars(self):
        return {f"aug_{self.op}_probability": tf.convert_to_tensor(self.probability)}

    def get_config(self):
        return {**super().get_config(), "direction": self.direction}


def cutout_mask(height, width, centres, size, softness=0.5):
    """Soft square masks `[N, H, W, 1]`: 1 inside a square of side `size` (pixels), else 0.

    Args:
        height, width: image size.
        centres: `[N, 2]` centres `(y, x)` in pixels (a square may overlap the border, as in
            DeVries & Taylor's Cutout).
        size: scalar or `[N]` side of the square in pixels.
        softness: width of the edges' sigmoid ramp in pixels, which makes the mask
            differentiable in `size` (0 gives a hard mask with no gradient).
    """
    size = tf.broadcast_to(tf.cast(size, centres.dtype), tf.shape(centres)[:1])
    half = size[:, None] / 2.0

    def profile(n, centre):
        coords = tf.range(tf.cast(n, centres.dtype), dtype=centres.dtype)[None, :] + 0.5
        distance = tf.abs(coords - centre[:, None])
        if softness <= 0:
            return tf.cast(distance <= half, centres.dtype)
        return tf.sigmoid((half - distance) / softness)

    rows = profile(height, centres[:, 0])
    cols = profile(width, centres[:, 1])
    return (rows[:, :, None] * cols[:, None, :])[..., None]


def cutout(images, centre_noise, size, softness=0.5):
    """Erases a square per image, filled with the image's mean colour.

    Args:
        images: float `[N, H, W, C]`.
        centre_noise: `[N, 2]` in `[0, 1)`: each square's centre `(y, x)` as a fraction of
            the image size.
        size: scalar or `[N]` side of the square, a fraction of the smaller image side.
        softness: edge ramp of the mask in pixels (`cutout_mask`; 0: hard edges).
    """
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    extent = tf.cast(tf.minimum(height, width), images.dtype)
    centres = centre_noise * tf.cast(tf.stack([height, width]), images.dtype)
    mask = cutout_mask(height, width, centres, size * extent, softness=softness)
    fill = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return images + mask * (fill - images)


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

    def policy_scalars(self):
        return {"aug_cutout_size": tf.convert_to_tensor(self.size),
                "aug_cutout_probability": tf.convert_to_tensor(self.probability)}

    def get_config(self):
        return {**super().get_config(), "init_size": self.init_size, "max_size": self.max_size}


@_register
class NoiseAugmenter(_AugmentationLayer):
    """The paper's augmenter network: per-image noise -> MLP -> affine (and colour) parameters.

    As in the released DABO code (`small_affine`, `affine_color`): noise `z ~ U(-1, 1)^nz`
    per image (optionally concatenated with image features: per-channel mean and standard
    deviation) goes through `Dense(h1) -> ReLU -> Dropout -> Dense(h2) -> ReLU -> Dropout ->
    Dense(6 [+ 4])`. Six outputs are added to the identity 2x3 affine matrix in normalised
    coordinates (PyTorch `affine_grid(align_corners=True)` convention), so it starts *random
    around* the identity, as the paper's does. With `color=True` four more outputs, through
    tanh, drive brightness (multiply by 1 + c), an additive intensity shift, saturation
    (multiply by 1 + c) and contrast (instead of the paper's hue, which has no cheap
    differentiable form here), in a fixed order.

    Args:
        noise_dim: size of z. Defaults to 6 (10 with `color=True`, as in the paper).
        hidden: hidden layer sizes. Defaults to (6, 60) ((10, 100) with `color=True`).
        dropout: dropout rate after each hidden layer. Defaults to 0.2.
        color: also output colour parameters (`affine_color`). Defaults to False.
        image_features: concatenate per-channel mean and std of the image to the noise.
        identity_init: initialise the output layer near zero so training starts from (almost) no
            augmentation. Defaults to True; the paper's configuration (`NAME:paper` presets,
            `experiments.PAPER`) sets False: its network starts random around the identity.
        fill_mode, fill_value: passed to `projective_warp`. The paper fills with the data
            set's mean colour; `"reflect"` is the default here, as in Keras' layers.
        seed: seed of the layer's `SeedGenerator` (noise and dropout).
    """

    def __init__(self, noise_dim=None, hidden=None, dropout=0.2, color=False,
                 image_features=False, identity_init=True, fill_mode="reflect",
                 fill_value=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.noise_dim = int(noise_dim or (10 if color else 6))
        self.hidden = tuple(hidden or ((10, 100) if color else (6, 60)))
        self.dropout = float(dropout)
        self.color = bool(color)
        self.image_features = bool(image_features)
        self.identity_init = bool(identity_init)
        self.fill_mode = fill_mode
        self.fill_value = fill_value
        n_out = 6 + (4 if color else 0)
        def seeded(offset):
            return None if seed is None else seed * 7919 + offset

        self.dense = [keras.layers.Dense(
            h, activation="relu", dtype="float32", name=f"hidden_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seeded(i)))
            for i, h in enumerate(self.hidden)]
        init = (keras.initializers.RandomNormal(stddev=1e-3, seed=seeded(99))
                if self.identity_init else keras.initializers.GlorotUniform(seed=seeded(99)))
        self.out = keras.layers.Dense(n_out, kernel_initializer=init, dtype="float32",
                                      name="params")

    def build(self, input_shape=None):
        channels = 1 if input_shape is None else (input_shape[-1] or 1)
        self._channels = channels
        width = self.noise_dim + (2 * channels if self.image_features else 0)
        for layer in self.dense:
            layer.build((None, width))
            width = layer.units
        self.out.build((None, width))
        self.built = True

    def get_random_transformation(self, images):
        n = tf.shape(images)[0]
        noise = self.uniform_noise((n, self.noise_dim))
        keep = 1.0 - self.dropout
        masks = [tf.cast(self.uniform_noise((n, h), 0.0, 1.0) < keep,
                         tf.float32) / keep for h in self.hidden]
        return {"noise": noise, "dropout_masks": masks}

    def parameters(self, images, transformation):
        """`[N, 6 (+4)]` raw network outputs for the given noise (and images)."""
        h = transformation["noise"]
        if self.image_features:
            x = _as_float32(images)
            h = tf.concat([h, tf.reduce_mean(x, axis=[1, 2]), tf.math.reduce_std(x, axis=[1, 2])],
                          axis=-1)
        for layer, mask in zip(self.dense, transformation["dropout_masks"]):
            h = layer(h) * mask
        return self.out(h)

    def matrices(self, images, transformation, params=None):
        params = self.parameters(images, transformation) if params is None else params
        theta = tf.reshape(params[:, :6], [-1, 2, 3]) + tf.constant(
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[None]
        shape = tf.shape(images)
        return warp.normalized_affine_to_pixels(theta, shape[1], shape[2])

    def transform_images(self, images, transformation):
        params = self.parameters(images, transformation)
        transforms = warp.matrices_to_transforms(self.matrices(images, transformation, params))
        out = warp.projective_warp(images, transforms, fill_mode=self.fill_mode,
                                   fill_value=self.fill_value)
        if self.color:
            c = tf.tanh(params[:, 6:])
            x = _as_float32(out) * (1.0 + c[:, 0, None, None, None]) + c[:, 1, None, None, None]
            x = adjust_color(x, saturation=c[:, 2], contrast=c[:, 3])
            out = tf.cast(x, images.dtype)
        return out

    def _samples(self, n=2048, size=32):
        images = tf.fill([n, size, size, getattr(self, "_channels", 1)], 0.5)
        t = self.get_random_transformation(images)
        params = self.parameters(images, t)
        human = warp.decompose_affine(self.matrices(images, t, params), size, size)
        human = {
            "rotate": warp.degrees(human["rotation"]),
            "shear": human["shear"],
            "scale_x": tf.exp(human["log_scale_x"]),
            "scale_y": tf.exp(human["log_scale_y"]),
            "translate_x": human["translate_x_px"] / size,
            "translate_y": human["translate_y_px"] / size,
        }
        if self.color:
            c = tf.tanh(params[:, 6:])
            human.update(brightness=1.0 + c[:, 0], intensity_shift=c[:, 1],
                         saturation=1.0 + c[:, 2], contrast=1.0 + c[:, 3])
        return human

    def policy(self):
        """Distribution of the sampled transforms (Monte Carlo): 5th-95th percentiles."""
        units = {**{k: v[0] for k, v in AFFINE_OPS.items()},
                 "brightness": "brightness factor", "intensity_shift": "additive delta",
                 "saturation": "saturation factor", "contrast": "contrast factor"}
        out = {}
        for op, values in self._samples().items():
            v = keras.ops.convert_to_numpy(values)
            lo, hi = (float(q) for q in np.percentile(v, [5, 95]))
            out[op] = {"low": lo, "high": hi, "mean": float(v.mean()), "std": float(v.std()),
                       "unit": units[op]}
        return out

    def policy_scalars(self):
        s = self._samples(n=256)
        return {"aug_rotate_deg": tf.math.reduce_std(s["rotate"]),
                "aug_translate_x": tf.math.reduce_std(s["translate_x"]),
                "aug_scale_x": tf.math.reduce_std(s["scale_x"])}

    def get_config(self):
        return {**super().get_config(), "noise_dim": self.noise_dim, "hidden": list(self.hidden),
                "dropout": self.dropout, "color": self.color,
                "image_features": self.image_features, "identity_init": self.identity_init,
                "fill_mode": self.fill_mode,
                "fill_value": self.fill_value}


@_register
class Augmenter(_AugmentationLayer):
    """Applies several learned augmenters in sequence (geometry, then colour by default).

    Args:
        layers: augmenter layers (`LearnedAffine`, `LearnedColor`, `NoiseAugmenter`...).
            Defaults to `[LearnedAffine()]`, the geometric learned distribution.
        seed: unused by the container itself; each layer has its own seed.

    Example:
        ```python
        augmenter = dabo_tf.Augmenter([dabo_tf.LearnedAffine(seed=1),
                                       dabo_tf.LearnedColor(seed=2)])
        augmented = augmenter(images, training=True)
        augmenter.policy()  # {"rotate": {"low": ..., "high": ..., "unit": "degrees"}, ...}
        ```
    """

    def __init__(self, layers=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if layers is None:
            layers = [LearnedAffine(seed=seed)]
        self.augmenters = [keras.saving.deserialize_keras_object(layer)
                           if isinstance(layer, dict) else layer for layer in layers]

    def build(self, input_shape=None):
        for layer in self.augmenters:
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def get_random_transformation(self, images):
        return [layer.get_random_transformation(images) for layer in self.augmenters]

    def transform_images(self, images, transformation):
        for layer, t in zip(self.augmenters, transformation):
            images = layer.transform_images(images, t)
        return images

    def mirror_transformation(self, transformation):
        return [layer.mirror_transformation(t)
                for layer, t in zip(self.augmenters, transformation)]

    def policy(self):
        out = {}
        for layer in self.augmenters:
            out.update(layer.policy())
        return out

    def policy_scalars(self):
        out = {}
        for layer in self.augmenters:
            out.update(layer.policy_scalars())
        return out

    def get_config(self):
        return {**super().get_config(),
                "layers": [keras.saving.serialize_keras_object(layer)
                           for layer in self.augmenters]}


def build_augmenter(kind: str = "distribution", *, color: bool = False, projective=False,
                    flip: bool = False, vflip: bool = False, cutout: bool = False,
                    fill_mode="reflect", fill_value=0.0, identity_init=True, learn_mean=False,
                    init_magnitude=DEFAULT_INIT_MAGNITUDE, magnitude_scale="log", seed=None):
    """Named augmenter configurations.

    Args:
        kind: `"distribution"` (learned uniform distributions per op, the default) or
            `"network"` (the paper's noise MLP).
        color: add learned colour jitter.
        projective: add the projective terms (distribution augmenter only).
        flip, vflip: add a horizontal / vertical flip with a learned probability.
        cutout: add cutout with a learned size and probability.
        fill_mode, fill_value: how the warp fills outside the image.
        identity_init: start the network augmenter near the identity (False: the paper's
            random start around it).
        learn_mean: the distribution augmenter learns a mean (bias) per op besides its
            magnitude; False (the default) keeps every distribution centred on the identity.
        init_magnitude: initial half-width of the distribution augmenter's ops.
        magnitude_scale: `"log"` or `"linear"` parameterisation of those half-widths.
        seed: base seed (each layer draws from its own stream, `seed`, `seed + 1`, ...).
    """
    seeds = itertools.count(seed) if seed is not None else itertools.repeat(None)
    if kind == "distribution":
        layers = [LearnedAffine(projective=projective, fill_mode=fill_mode,
                                fill_value=fill_value, learn_mean=learn_mean,
                                init_magnitude=init_magnitude, magnitude_scale=magnitude_scale,
                                seed=next(seeds))]
        if color:
            layers.append(LearnedColor(learn_mean=learn_mean, init_magnitude=init_magnitude,
                                       magnitude_scale=magnitude_scale, seed=next(seeds)))
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
