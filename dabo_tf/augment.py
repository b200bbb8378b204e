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

import math

import keras
import numpy as np
import tensorflow as tf

from dabo_tf import warp

_register = keras.saving.register_keras_serializable(package="dabo_tf")

# op name -> (human unit, factor from internal parameter to human unit, kind)
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

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


class _LearnedDistribution(_AugmentationLayer):
    """Per-op uniform distributions `mean + magnitude * U(-1, 1)` with trainable parameters."""

    def _add_distribution_weights(self):
        n = len(self.ops)
        self.magnitude = self.add_weight(
            name="magnitude", shape=(n,), dtype=self.variable_dtype,
            initializer=keras.initializers.Constant(self.init_magnitude))
        self.mean = self.add_weight(name="mean", shape=(n,), dtype=self.variable_dtype,
                                    initializer="zeros", trainable=self.learn_mean)

    def get_random_transformation(self, images):
        return {"noise": self.uniform_noise((tf.shape(images)[0], len(self.ops)))}

    def op_values(self, transformation):
        """Reparameterisation: `[N, n_ops]` op parameters (internal units) from the noise."""
        return self.mean[None, :] + self.magnitude[None, :] * transformation["noise"]


@_register
class LearnedAffine(_LearnedDistribution):
    """Learned distribution over affine (optionally projective) warps.

    Each op's parameter is sampled per image as `mean + magnitude * u`, `u ~ U(-1, 1)`, with
    trainable `mean` and `magnitude` vectors initialised to zero: the layer starts as the
    identity (no augmentation) and learns how far to rotate, shear, scale and shift.
    Internal units: radians (rotate), shear factor, log-scale (scale_x/y), fraction of the
    image size (translate_x/y), projective term times size (perspective_x/y).

    Args:
        ops: names of the ops to learn, from `AFFINE_OPS`. Defaults to the six affine ops.
        projective: also learn the two projective terms. Defaults to False.
        learn_mean: learn a mean (bias) per op besides the magnitude. Defaults to True.
        init_magnitude: initial magnitude of every op (internal units). Defaults to 0.
        interpolation, fill_mode, fill_value: passed to `projective_warp`.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, ops=DEFAULT_AFFINE_OPS, projective=False, learn_mean=True,
                 init_magnitude=0.0, interpolation="bilinear", fill_mode="reflect",
                 fill_value=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
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
        self.learn_mean = learn_mean
        self.init_magnitude = float(init_magnitude)
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
        mag = abs(keras.ops.convert_to_numpy(self.magnitude))
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
        mag = tf.abs(tf.convert_to_tensor(self.magnitude))
        out = {}
        for i, op in enumerate(self.ops):
            factor = AFFINE_OPS[op][1]
            name = {"rotate": "rotate_deg"}.get(op, op)
            out[f"aug_{name}"] = mag[i] * (factor or 1.0)
        return out

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "projective": False,
                "learn_mean": self.learn_mean, "init_magnitude": self.init_magnitude,
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

    Sampled per image as `mean + magnitude * u`, `u ~ U(-1, 1)`, starting at zero (identity).
    Ops that do not apply to the input (saturation on single-channel images) are dropped when
    the layer is built, so every trainable parameter receives a gradient.

    Args:
        ops: colour ops to learn, from `COLOR_OPS`. Defaults to all three.
        learn_mean: learn a mean per op besides the magnitude. Defaults to True.
        init_magnitude: initial magnitude of every op. Defaults to 0.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]`. Output shape: same, same dtype.
    """

    def __init__(self, ops=DEFAULT_COLOR_OPS, learn_mean=True, init_magnitude=0.0, seed=None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        unknown = [o for o in ops if o not in COLOR_OPS]
        if unknown:
            raise ValueError(f"Unknown colour ops {unknown}; expected names from "
                             f"{list(COLOR_OPS)}. Received: ops={tuple(ops)}")
        self.requested_ops = tuple(ops)
        self.ops = tuple(ops)
        self.learn_mean = learn_mean
        self.init_magnitude = float(init_magnitude)

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
        mag = abs(keras.ops.convert_to_numpy(self.magnitude))
        out = {}
        for i, op in enumerate(self.ops):
            lo, hi = float(mean[i] - mag[i]), float(mean[i] + mag[i])
            if op != "brightness":
                lo, hi = 1.0 + lo, 1.0 + hi
            out[op] = {"low": lo, "high": hi, "unit": COLOR_OPS[op][0]}
        return out

    def policy_scalars(self):
        mag = tf.abs(tf.convert_to_tensor(self.magnitude))
        return {f"aug_{op}": mag[i] for i, op in enumerate(self.ops)}

    def get_config(self):
        return {**super().get_config(), "ops": list(self.requested_ops),
                "learn_mean": self.learn_mean, "init_magnitude": self.init_magnitude}


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
            augmentation, like the distribution augmenters. Defaults to True; the paper's
            preset sets False (its network starts random around the identity).
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
                    fill_mode="reflect", fill_value=0.0, identity_init=True, learn_mean=True,
                    seed=None):
    """Named augmenter configurations.

    Args:
        kind: `"distribution"` (learned uniform distributions per op, the default) or
            `"network"` (the paper's noise MLP).
        color: add learned colour jitter.
        projective: add the projective terms (distribution augmenter only).
        fill_mode, fill_value: how the warp fills outside the image.
        identity_init: start the network augmenter near the identity (False: the paper's
            random start around it). The distribution augmenter always starts at identity.
        learn_mean: the distribution augmenter learns a mean (bias) per op besides its
            magnitude; False keeps every distribution centred on the identity.
        seed: base seed.
    """
    if kind == "distribution":
        layers = [LearnedAffine(projective=projective, fill_mode=fill_mode,
                                fill_value=fill_value, learn_mean=learn_mean, seed=seed)]
        if color:
            layers.append(LearnedColor(learn_mean=learn_mean,
                                       seed=None if seed is None else seed + 1))
        return Augmenter(layers, name="augmenter")
    if kind == "network":
        return Augmenter([NoiseAugmenter(color=color, fill_mode=fill_mode, fill_value=fill_value,
                                         identity_init=identity_init, seed=seed)],
                         name="augmenter")
    raise ValueError("Unknown augmenter kind. Expected 'distribution' or 'network'. "
                     f"Received: kind={kind!r}")
