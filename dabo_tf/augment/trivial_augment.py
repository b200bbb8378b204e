"""Zero-search baselines: TrivialAugment and Keras' RandAugment.

`TrivialAugment` follows Müller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art
Data Augmentation" (ICCV 2021), wide augmentation space, as in the authors' code
(`automl/trivialaugment`, `aug_lib.py`, `set_augmentation_space("wide_standard", 31)`): per
image, one op drawn uniformly from 14 and a strength level drawn uniformly from
`{0, ..., 30}`; signed ops (rotate, shear, translate) get a random sign. With `L = bins - 1`:

| op | value at level l | | op | value at level l |
| --- | --- | --- | --- | --- |
| identity | - | | solarize | threshold `256 - floor(256 l / L)` (uint8 units) |
| auto_contrast | - | | posterize | `8 - floor(6 l / L)` bits |
| equalize | - | | color, contrast, | factor `0.01 + 1.99 l / L` |
| rotate | `+-floor(135 l / L)` degrees | | brightness, sharpness | (i.e. 0.01 .. 2.0) |
| shear_x, shear_y | `+-0.99 l / L` | | translate_x, _y | `+-floor(32 l / L)` pixels x size/32 |

Geometric ops are the PIL transforms of the reference code: shear about the top-left corner,
rotation about the centre, nearest-neighbour sampling, constant fill 128/255. All geometric
ops of a batch are done by one `dabo_tf.augment.warp.projective_warp` (images given a pixel op get
the identity transform); every pixel op runs on the whole batch with per-image parameters and
each image keeps the result of its own op (`tf.where`). No per-image loop, no `map_fn`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from dabo_tf.augment import warp
from dabo_tf.augment.base import AugmentationLayer
from dabo_tf.augment.ops import grey

_register = keras.saving.register_keras_serializable(package="dabo_tf")

WIDE_OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
            "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
            "translate_y")
WIDE_GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _grey(images):
    """Grey level of RGB images `[N, H, W, 1]` (PIL's "L"); other channel counts unchanged."""
    return grey(images) if images.shape[-1] == 3 else images


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])


def blend(degenerate, images, factor):
    """PIL's `ImageEnhance` blend `degenerate + factor (images - degenerate)`, clipped."""
    return tf.clip_by_value(degenerate + _per_image(factor) * (images - degenerate), 0.0, 1.0)


def auto_contrast(images):
    """Stretches each image channel linearly to [0, 1] (`ImageOps.autocontrast`)."""
    lo = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    scale = tf.where(hi > lo, 1.0 / tf.maximum(hi - lo, 1e-12), 1.0)
    return tf.where(hi > lo, (images - lo) * scale, images)


def equalize(images):
    """Histogram equalisation per image and channel, as `PIL.ImageOps.equalize`.

    On the uint8-quantised values `v`: with `h` the 256-bin histogram, `step = (count -
    h[last non-empty bin]) // 255` and `lut[v] = (step // 2 + sum(h[:v])) // step`; channels
    with `step == 0` are unchanged. Histograms come from one batched `bincount`.
    """
    shape = tf.shape(images)
    n, c = shape[0], shape[3]
    v = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.int32)
    rows = tf.reshape(tf.transpose(v, [0, 3, 1, 2]), [n * c, -1])  # [N*C, H*W]
    hist = tf.math.bincount(rows, minlength=256, maxlength=256, axis=-1)
    last = 255 - tf.argmax(tf.cast(tf.reverse(hist, [1]) > 0, tf.int32), axis=1,
                           output_type=tf.int32)
    h_last = tf.gather(hist, last, batch_dims=1)
    step = (tf.shape(rows)[1] - h_last) // 255
    safe = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((safe // 2 + tf.cumsum(hist, axis=1, exclusive=True)) // safe, 255)
    mapped = tf.where(step[:, None] > 0, tf.gather(lut, rows, batch_dims=1), rows)
    mapped = tf.transpose(tf.reshape(mapped, [n, c, shape[1], shape[2]]), [0, 2, 3, 1])
    return tf.cast(mapped, images.dtype) / 255.0


def solarize(images, threshold):
    """Inverts pixels `>= threshold` (`[N]`, uint8 units 0..256; 256 inverts nothing)."""
    return tf.where(images * 255.0 >= _per_image(tf.cast(threshold, images.dtype)) - 0.5,
                    1.0 - images, images)


def posterize(images, bits):
    """Keeps the `bits` (`[N]`, 1..8) most significant bits of each uint8 value."""
    v = tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0)
    q = _per_image(tf.pow(2.0, 8.0 - tf.cast(bits, images.dtype)))
    return tf.floor(v / q) * q / 255.0


def enhance_sharpness(images, factor):
    """`ImageEnhance.Sharpness`: blend with the 3x3 SMOOTH filter (border pixels kept)."""
    c = images.shape[-1]
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(tf.cast(kernel, images.dtype)[:, :, None, None], [1, 1, c, 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "VALID")
    smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
    shape = tf.shape(images)
    interior = tf.pad(tf.ones([shape[1] - 2, shape[2] - 2], tf.bool), [[1, 1], [1, 1]])
    degenerate = tf.where(interior[None, :, :, None], smooth, images)
    return blend(degenerate, images, factor)


def enhance_contrast(images, factor):
    """`ImageEnhance.Contrast`: blend with the (rounded) mean grey level of each image."""
    mean = tf.reduce_mean(_grey(images), axis=[1, 2, 3], keepdims=True)
    return blend(tf.floor(mean * 255.0 + 0.5) / 255.0, images, factor)


def enhance_color(images, factor):
    """`ImageEnhance.Color`: blend with the grey image (no-op unless 3 channels)."""
    return blend(_grey(images), images, factor)


def enhance_brightness(images, factor):
    """`ImageEnhance.Brightness`: blend with black."""
    return blend(tf.zeros_like(images), images, factor)


@_register
class TrivialAugment(AugmentationLayer):
    """TrivialAugment (wide): one random op at a random strength per image.

    See the module docstring for the ops and their ranges.

    Args:
        ops: names of the ops to choose from, a subset of `WIDE_OPS`. Defaults to all 14.
        num_magnitude_bins: number of strength levels. Defaults to 31, as the paper.
        interpolation: warp sampling, `"nearest"` (PIL's default, the reference code) or
            `"bilinear"`. Defaults to `"nearest"`.
        fill_mode, fill_value: outside the image. Defaults to `"constant"` and 128/255, the
            reference code's grey.
        seed: seed of the layer's `SeedGenerator`.

    Input shape: `[N, H, W, C]` or `[H, W, C]`, values in [0, 1]. Output shape: same, same
    dtype. Identity unless called with `training=True`.

    Example:
        ```python
        layer = TrivialAugment(seed=0)
        augmented = layer(images, training=True)
        replay = layer(images, training=True,
                       transformation=layer.get_random_transformation(images))
        ```
    """

    def __init__(self, ops=WIDE_OPS, num_magnitude_bins=31, interpolation="nearest",
                 fill_mode="constant", fill_value=128.0 / 255.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        ops = tuple(ops)
        unknown = [op for op in ops if op not in WIDE_OPS]
        if unknown or not ops:
            raise ValueError(f"ops must be a non-empty subset of {WIDE_OPS}. Received: ops={ops}")
        if int(num_magnitude_bins) < 2:
            raise ValueError("num_magnitude_bins must be >= 2. "
                             f"Received: num_magnitude_bins={num_magnitude_bins}")
        self.ops = ops
        self.num_magnitude_bins = int(num_magnitude_bins)
        self.interpolation = interpolation
        self.fill_mode = fill_mode
        self.fill_value = float(fill_value)

    def get_random_transformation(self, images):
        """Per image: `op` (index into `self.ops`), `level` (0..bins-1), `sign` (+-1)."""
        u = self.uniform_noise((tf.shape(images)[0], 3), 0.0, 1.0)
        op = tf.minimum(tf.cast(u[:, 0] * len(self.ops), tf.int32), len(self.ops) - 1)
        bins = self.num_magnitude_bins
        level = tf.minimum(tf.cast(u[:, 1] * bins, tf.int32), bins - 1)
        return {"op": op, "level": level, "sign": tf.where(u[:, 2] < 0.5, -1.0, 1.0)}

    def op_parameters(self, transformation, height, width):
        """Per-image values `[N]` of every op's parameter at the drawn level and sign."""
        level = transformation["level"]
        top = self.num_magnitude_bins - 1
        sign = tf.cast(transformation["sign"], tf.float32)
        lf = tf.cast(level, tf.float32)

        def int_param(maxval):
            return tf.cast((level * maxval) // top, tf.float32)

        return {
            "rotate": sign * int_param(135),
            "shear": sign * lf * 0.99 / top,
            "translate_x": sign * int_param(32) * tf.cast(width, tf.float32) / 32.0,
            "translate_y": sign * int_param(32) * tf.cast(height, tf.float32) / 32.0,
            "solarize": 256.0 - int_param(256),
            "posterize": 8.0 - int_param(6),
            "enhance": 0.01 + lf * 1.99 / top,
        }

    def transforms(self, images, transformation):
        """`[N, 8]` output-to-input transforms (identity for non-geometric ops)."""
        shape = tf.shape(images)
        p = self.op_parameters(transformation, shape[1], shape[2])
        n = tf.shape(p["rotate"])[0]
        zero, one = tf.zeros([n]), tf.ones([n])

        def affine(a1=zero, a2=zero, b0=zero, b2=zero):
            return tf.stack([one, a1, a2, b0, one, b2, zero, zero], axis=-1)

        candidates = {
            "rotate": warp.matrices_to_transforms(
                warp.affine_matrix(shape[1], shape[2], rotation=p["rotate"] * math.pi / 180)),
            "shear_x": affine(a1=p["shear"]),
            "shear_y": affine(b0=p["shear"]),
            "translate_x": affine(a2=p["translate_x"]),
            "translate_y": affine(b2=p["translate_y"]),
        }
        stacked = tf.stack([candidates.get(op, affine()) for op in self.ops], axis=1)
        return tf.gather(stacked, transformation["op"], batch_dims=1)

    def transform_images(self, images, transformation):
        x = tf.cast(images, tf.float32)
        shape = tf.shape(x)
        op = transformation["op"][:, None, None, None]
        p = self.op_parameters(transformation, shape[1], shape[2])
        out = x
        if any(name in WIDE_GEOMETRIC_OPS for name in self.ops):
            warped = warp.projective_warp(x, self.transforms(x, transformation),
                                          interpolation=self.interpolation,
                                          fill_mode=self.fill_mode, fill_value=self.fill_value)
            geometric = [i for i, name in enumerate(self.ops) if name in WIDE_GEOMETRIC_OPS]
            out = tf.where(tf.reduce_any(tf.equal(op, geometric), -1, keepdims=True), warped, x)
        pixel_ops = {
            "auto_contrast": lambda: auto_contrast(x),
            "equalize": lambda: equalize(x),
            "solarize": lambda: solarize(x, p["solarize"]),
            "posterize": lambda: posterize(x, p["posterize"]),
            "color": lambda: enhance_color(x, p["enhance"]),
            "contrast": lambda: enhance_contrast(x, p["enhance"]),
            "brightness": lambda: enhance_brightness(x, p["enhance"]),
            "sharpness": lambda: enhance_sharpness(x, p["enhance"]),
        }
        for i, name in enumerate(self.ops):
            if name in pixel_ops:
                out = tf.where(tf.equal(op, i), pixel_ops[name](), out)
        return tf.cast(out, images.dtype)

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops),
                "num_magnitude_bins": self.num_magnitude_bins,
                "interpolation": self.interpolation, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value}


def randaugment_layer(num_ops: int = 2, factor: float = 0.5, value_range=(0, 1), seed=None,
                      **kwargs) -> keras.layers.Layer:
    """Keras' own `keras.layers.RandAugment` on our [0, 1] images.

    Keras' implementation draws the `num_ops` ops once per *batch* (every image of a batch gets
    the same ops, with per-image strengths), from shear, translation, rotation, brightness,
    colour degeneration, contrast, sharpness, posterization, solarization, auto-contrast and
    equalization; `factor` in [0, 1] scales all strengths. It works on 1- and 3-channel
    images (colour degeneration is then a no-op).

    Args:
        num_ops: ops applied in sequence. Defaults to 2 (Keras' default).
        factor: strength in [0, 1]. Defaults to 0.5 (Keras' default).
        value_range: pixel range of the inputs. Defaults to (0, 1), ours (Keras: (0, 255)).
        seed: seed of the layer.
        **kwargs: passed to `keras.layers.RandAugment` (e.g. `interpolation`, `name`).

    Returns:
        A `keras.layers.RandAugment` (identity with `training=False`).
    """
    return keras.layers.RandAugment(value_range=tuple(value_range), num_ops=int(num_ops),
                                    factor=float(factor), seed=seed, **kwargs)
