"""The augmentation ops: one table of names, units, identities and limits, and their maths.

Every layer that samples or applies an op (learned, fixed, frozen) and every policy file
names it from `OPS`. An op's *internal* value is what a learned distribution samples and
the warp consumes (radians, log-scales, fractions of the size, colour offsets `c` of a
factor `1 + c`); its *human* value is what `policy()` and `policy.json` report (degrees,
scale factors, fractions, colour factors).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import tensorflow as tf

from dabo_tf.config import AUGMENTER_SCALES, DEFAULT_AUGMENTER_SCALE


@dataclasses.dataclass(frozen=True)
class Op:
    """One augmentation op.

    Attributes:
        kind: `"geometric"` (one warp per image), `"color"`, `"erasing"` or `"gate"` (the
            probability that an image is augmented at all).
        unit: the human unit of its values (`policy.json`).
        identity: the human value that changes nothing.
        warp_arg: keyword of `warp.affine_matrix` taking its internal value (geometric ops a
            learned distribution can sample), else None.
        to_human: internal -> human factor; None for factors stored as offsets (`exp` for
            log-scales, `1 + c` for colour factors).
        max_magnitude: largest half-width a learned distribution may reach (internal units;
            a cap keeps a runaway hypergradient from producing meaningless images), or None
            where no distribution learns it.
        limit: largest magnitude a policy value may have (human units): a generous bound
            that only catches values no augmentation can mean (a rotation of 1e308 degrees,
            a flip probability of 2).
    """

    kind: str
    unit: str
    identity: float = 0.0
    warp_arg: Optional[str] = None
    to_human: Optional[float] = 1.0
    max_magnitude: Optional[float] = None
    limit: float = 10.0


FLIP_UNIT = "probability of a horizontal flip"
VFLIP_UNIT = "probability of a vertical flip"
CUTOUT_UNIT = "side of the erased square, fraction of the image size"
FILL_UNIT = ("probability that the warp fills outside the image with the constant fill value "
             "(else the fill mode)")
AUGMENT_UNIT = "probability that an image is augmented (else it stays clean)"

OPS = {
    "rotate": Op("geometric", "degrees", 0.0, "rotation", 180.0 / math.pi, math.pi, 360.0),
    "shear": Op("geometric", "shear factor (x += s * y)", 0.0, "shear", 1.0, 1.0),
    "scale_x": Op("geometric", "scale factor", 1.0, "log_scale_x", None, math.log(2.0)),
    "scale_y": Op("geometric", "scale factor", 1.0, "log_scale_y", None, math.log(2.0)),
    "zoom": Op("geometric", "scale factor (both axes)", 1.0, "log_zoom", None, math.log(2.0)),
    "aspect": Op("geometric", "aspect factor (width scale / height scale)", 1.0, "log_aspect",
                 None, math.log(2.0)),
    "translate_x": Op("geometric", "fraction of width", 0.0, "translate_x", 1.0, 0.5, 2.0),
    "translate_y": Op("geometric", "fraction of height", 0.0, "translate_y", 1.0, 0.5, 2.0),
    "perspective_x": Op("geometric", "projective term x size", 0.0, "perspective_x", 1.0, 1.0),
    "perspective_y": Op("geometric", "projective term x size", 0.0, "perspective_y", 1.0, 1.0),
    "flip": Op("geometric", FLIP_UNIT, limit=1.0),
    "vflip": Op("geometric", VFLIP_UNIT, limit=1.0),
    "fill": Op("geometric", FILL_UNIT, limit=1.0),
    # +-0.25, not +-0.5: on natural images the hypergradient widens the brightness to
    # whatever cap it has, and a policy at +-0.5 retrained from the first epoch lost 3.3-3.6
    # points on cifar1000 where DABO itself did not (see the README, *Natural images*).
    "brightness": Op("color", "additive delta in [0, 1] pixel units", 0.0, None, 1.0, 0.25),
    "brightness_factor": Op("color", "brightness factor", 1.0),
    "intensity_shift": Op("color", "additive delta"),
    "contrast": Op("color", "contrast factor", 1.0, None, None, 0.9),
    "saturation": Op("color", "saturation factor", 1.0, None, None, 1.0),
    "cutout": Op("erasing", CUTOUT_UNIT, limit=1.0),
    "augment": Op("gate", AUGMENT_UNIT, 1.0, limit=1.0),
}
"""Every op by name. Learned limits: +-180 degrees, shear +-1, scales, zoom and aspect
x0.5-x2 (zoom and scales drawn uniformly: x0.5-1.5, `LINEAR_SCALE_LIMIT`), shifts of half the
size, brightness +-0.25, contrast and saturation factors from 0.1 and 0 up."""

AFFINE_OPS = {name: (op.unit, op.to_human) for name, op in OPS.items() if op.warp_arg}
"""Geometric ops a `LearnedAffine` samples: name -> (human unit, internal -> human factor)."""
COLOR_OPS = {name: (op.unit, op.to_human) for name, op in OPS.items()
             if op.kind == "color" and op.max_magnitude is not None}
"""Colour ops a `LearnedColor` samples: name -> (human unit, factor; None: `1 + c`)."""
MAX_MAGNITUDE = {name: op.max_magnitude for name, op in OPS.items()
                 if op.max_magnitude is not None}
POLICY_OPS = {kind: tuple(name for name, op in OPS.items() if op.kind == kind)
              for kind in ("geometric", "color", "erasing", "gate")}
"""Op names a policy may hold, by kind (frozen into `FixedAffine`, `FixedColor`,
`FixedCutout`; the gate `augment` into `FrozenPolicy` itself)."""
LOG_SCALE_OPS = tuple(name for name, op in OPS.items()
                      if op.kind == "geometric" and op.warp_arg and op.to_human is None)
"""Geometric ops whose internal value is a log-factor (human value `exp` of it), drawn
log-uniformly by frozen policies."""
LINEAR_SCALE_OPS = ("zoom", "scale_x", "scale_y")
"""Scale ops a learned augmenter can draw uniformly (`scale_draw="linear"`): a factor
`1 + c`, `c` uniform in `[-w, w]`, as torchvision's and kornia's `RandomAffine(scale=...)`
draw; `aspect`, a ratio of two scales, stays log-uniform (`r` and `1 / r` alike)."""
LINEAR_SCALE_LIMIT = 0.5
"""Largest half-width of a uniformly drawn scale factor: x0.5-1.5 (a factor must stay above 0;
the log-uniform draw's limit is x0.5-2)."""
UNIFORM_DRAW = "uniform"
"""The `"draw"` of a policy entry whose scale factor is drawn uniformly in `[low, high]`; a
scale op without it is drawn log-uniformly (as every policy written before 2026-12-07)."""
LOG_UNIFORM_DRAW = "log-uniform"
"""The `"draw"` a scale op's entry has when it says none."""
SCALE_PARAMETERISATIONS = dict(zip(AUGMENTER_SCALES,
                                   (("zoom",), ("zoom", "aspect"), ("scale_x", "scale_y"))))
"""How a learned augmenter scales images (`build_augmenter(scale=...)`,
`--augmenter_scale`): one zoom factor for both axes (what `keras.layers.RandomZoom` and
torchvision's `RandomAffine(scale=...)` draw by default), a zoom and an aspect ratio, or each
axis on its own."""


def affine_ops(scale=DEFAULT_AUGMENTER_SCALE, shear=True):
    """The geometric ops a learned augmenter samples, in order: rotation, shear (unless
    `shear=False`), the scale ops of `SCALE_PARAMETERISATIONS[scale]`, the two shifts."""
    return ("rotate", *(("shear",) if shear else ()), *SCALE_PARAMETERISATIONS[scale],
            "translate_x", "translate_y")


DEFAULT_AFFINE_OPS = affine_ops()
DEFAULT_COLOR_OPS = ("brightness", "contrast", "saturation")

LUMA = (0.299, 0.587, 0.114)
"""Grey-level weights of RGB (ITU-R 601; PIL's "L" conversion, `tf.image.rgb_to_grayscale`
to 1e-4): saturation blends away from this grey, TrivialAugment's ops follow PIL."""


def grey(images):
    """`[N, H, W, 1]` grey level of `[N, H, W, 3]` images (`LUMA`)."""
    return tf.reduce_sum(images * tf.constant(LUMA, images.dtype), axis=-1, keepdims=True)


def adjust_color(images, brightness=None, contrast=None, saturation=None):
    """Differentiable colour ops as plain tensor math (`tf.image.adjust_*` lack gradients).

    Args:
        images: `[N, H, W, C]` float32 in [0, 1].
        brightness: `[N]` additive delta, or None.
        contrast: `[N]` c, contrast factor `1 + c` about each image's mean, or None.
        saturation: `[N]` s, blend factor `1 + s` away from the grey image (`LUMA`);
            ignored for images with other than 3 channels.

    Returns:
        The adjusted images (not clipped, so gradients never vanish at the range limits).
    """
    if brightness is not None:
        images = images + brightness[:, None, None, None]
    if contrast is not None:
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = mean + (images - mean) * (1.0 + contrast[:, None, None, None])
    if saturation is not None and images.shape[-1] == 3:
        g = grey(images)
        images = g + (images - g) * (1.0 + saturation[:, None, None, None])
    return images



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
