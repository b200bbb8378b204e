"""Differentiable, XLA-compilable projective warp of images.

`tf.raw_ops.ImageProjectiveTransformV3` (used by Keras' RandomRotation, RandomZoom and
`keras.ops.image.affine_transform`) has no gradient with respect to `transforms` and no XLA
kernel. `projective_warp` reproduces its semantics with gathers and arithmetic only, so it
compiles under `jit_compile=True` and is differentiable in both the images and the transform.

Transform convention (the raw op's): a transform is 8 numbers
`[a0, a1, a2, b0, b1, b2, c0, c1]`. It maps each *output* pixel `(x, y)` (x = column,
y = row, integer pixel coordinates) to the *input* point
`((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k)` with `k = c0 x + c1 y + 1`.
As a 3x3 matrix it is `[[a0, a1, a2], [b0, b1, b2], [c0, c1, 1]]` acting on `(x, y, 1)`.

The helpers below build such output-to-input matrices about the image centre from human
parameters (rotation, shear, log-scales, translations) and compose them, all differentiably.
"""

from __future__ import annotations

import math

import tensorflow as tf

from dabo_tf.config import FILL_MODES

INTERPOLATIONS = ("bilinear", "nearest")


def _coordinate_dtype(*tensors):
    return tf.float64 if any(t.dtype == tf.float64 for t in tensors) else tf.float32


def _map_coordinate(coord, size, fill_mode):
    """Maps out-of-range sample coordinates into `[0, size - 1]` as the raw op does.

    Mirrors `map_coordinate` in tensorflow/core/kernels/image/image_ops.h: `reflect` is
    `(d c b a | a b c d | d c b a)`, `wrap` is `(a b c d | a b c d | a b c d)`, `nearest`
    clamps, `constant` leaves the coordinate alone (reads outside give `fill_value`). The
    integer parts carry no gradient, so the derivative is +-1 inside each fold.
    """
    if fill_mode == "constant":
        return coord
    size_f = tf.cast(size, coord.dtype)
    upper = size_f - 1.0
    if fill_mode == "nearest":
        return tf.clip_by_value(coord, 0.0, upper)
    if fill_mode == "reflect":
        sz2 = 2.0 * size_f
        neg = coord + sz2 * tf.stop_gradient(tf.math.floor(-coord / sz2))  # in (-sz2, 0]
        neg = tf.where(neg < -size_f, neg + sz2, -neg - 1.0)
        pos = coord - sz2 * tf.stop_gradient(tf.math.floor(coord / sz2))  # in [0, sz2)
        pos = tf.where(pos >= size_f, sz2 - pos - 1.0, pos)
        out = tf.where(coord < 0.0, neg, tf.where(coord > upper, pos, coord))
    elif fill_mode == "wrap":
        sz = tf.maximum(size_f - 1.0, 1.0)
        neg = coord + size_f * (tf.stop_gradient(tf.math.floor(-coord / sz)) + 1.0)
        pos = coord - size_f * tf.stop_gradient(tf.math.floor(coord / sz))
        out = tf.where(coord < 0.0, neg, tf.where(coord > upper, pos, coord))
    else:
        raise ValueError(f"Unknown fill_mode. Expected one of {FILL_MODES}. Received: "
                         f"fill_mode={fill_mode!r}")
    out = tf.where(size_f <= 1.0, tf.zeros_like(out), out)
    return tf.clip_by_value(out, 0.0, upper)


def _pixel(yi, xi, base, h, w, infinite):
    """`(inside, index)` of the pixels at integer-valued float coordinates `yi`, `xi`
    (`[N, P]`): whether each lies in the image (reads outside give `fill_value`) and its row
    in the `[N*H*W, C]` flattened images (clamped, so the gather stays in bounds)."""
    w_f, h_f = tf.cast(w, xi.dtype), tf.cast(h, xi.dtype)
    inside = (xi >= 0.0) & (xi < w_f) & (yi >= 0.0) & (yi < h_f) & ~infinite
    index = base + (tf.cast(tf.clip_by_value(yi, 0.0, h_f - 1.0), tf.int32) * w
                    + tf.cast(tf.clip_by_value(xi, 0.0, w_f - 1.0), tf.int32))
    return inside, index


def _bilinear(images, x, y, fill, infinite):
    """Bilinear samples `[N, P, C]` of `images` (`[N, H, W, C]`) at coordinates `x`, `y`
    (`[N, P]`, already mapped by the fill mode), with a hand-written gradient.

    Why our own sampling: one gather per output pixel. The images, padded with the fill
    value, are laid side by side with their copies shifted by one column, one row and both
    (`[N, H+2, W+2, 4C]`), so a pixel's four neighbours are one row of that table: one
    gather of 4C values instead of four gathers of C, and for the images' gradient one
    segment sum of 4C-wide rows instead of a scatter of four times as many C-wide ones
    (XLA's CPU gather and scatter cost per row, not per value). The price is a transient
    table four times the batch's size (627 MB for 256 ImageNet images at 224x224x3, small
    beside the classifier's activations). A top-left neighbour outside `[-1, size - 1]` has
    both its neighbours outside the image and reads the all-fill pad.

    Why a custom gradient: the derivative w.r.t. the coordinates is known in closed form
    from the four neighbours the forward pass gathers anyway (`(1 - fy)(v01 - v00) +
    fy (v11 - v10)` along x, alike along y); autodiff differentiates every weight, cast and
    mask separately. A gradient nobody uses (the images', in DABO) is pruned from the graph.
    """
    shape = tf.shape(images)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    padded = tf.pad(images, [[0, 0], [1, 2], [1, 2], [0, 0]], constant_values=fill)
    table = tf.reshape(tf.concat([padded[:, :-1, :-1], padded[:, :-1, 1:],
                                  padded[:, 1:, :-1], padded[:, 1:, 1:]], -1), [-1, 4 * c])
    x0, y0 = tf.math.floor(x), tf.math.floor(y)
    fx, fy = x - x0, y - y0
    w_f, h_f = tf.cast(w, x.dtype), tf.cast(h, x.dtype)
    x0 = tf.where((x0 >= -1.0) & (x0 <= w_f - 1.0), x0, w_f)
    y0 = tf.where((y0 >= -1.0) & (y0 <= h_f - 1.0), y0, h_f)
    index = (tf.range(n)[:, None] * ((h + 2) * (w + 2)) + tf.cast(y0 + 1.0, tf.int32) * (w + 2)
             + tf.cast(x0 + 1.0, tf.int32))  # [N, P] rows of `table`

    @tf.custom_gradient
    def sample(table, x, y):
        v00, v01, v10, v11 = tf.split(tf.gather(table, index), 4, axis=-1)
        ax = tf.cast(fx, table.dtype)[..., None]
        ay = tf.cast(fy, table.dtype)[..., None]
        top, bottom = v00 + ax * (v01 - v00), v10 + ax * (v11 - v10)
        out = tf.where(infinite[..., None], fill, top + ay * (bottom - top))

        def grad(upstream):
            g = tf.where(infinite[..., None], tf.zeros_like(upstream), upstream)
            d_x = tf.reduce_sum(g * ((1.0 - ay) * (v01 - v00) + ay * (v11 - v10)), -1)
            d_y = tf.reduce_sum(g * (bottom - top), -1)
            parts = tf.concat([g * ((1.0 - ax) * (1.0 - ay)), g * (ax * (1.0 - ay)),
                               g * ((1.0 - ax) * ay), g * (ax * ay)], -1)
            d_table = tf.math.unsorted_segment_sum(
                tf.reshape(parts, [-1, 4 * c]), tf.reshape(index, [-1]), tf.shape(table)[0])
            return d_table, tf.cast(d_x, x.dtype), tf.cast(d_y, y.dtype)

        return out, grad

    return sample(table, x, y)


def projective_warp(
    images,
    transforms,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
    output_shape=None,
):
    """Warps images by projective transforms; semantics of `ImageProjectiveTransformV3`.

    Args:
        images: `[N, H, W, C]` float tensor (float16, bfloat16, float32 or float64).
        transforms: `[N, 8]` or `[1, 8]` (broadcast over the batch) output-to-input
            transforms, see the module docstring for the convention.
        interpolation: `"bilinear"` (differentiable in `transforms`) or `"nearest"`.
        fill_mode: how points outside the input are read: `"reflect"`, `"wrap"`,
            `"constant"` (`fill_value`) or `"nearest"` (edge pixel). Defaults to `"reflect"`.
        fill_value: value read outside the image when `fill_mode="constant"`.
        output_shape: optional `(out_height, out_width)`; defaults to the input's.

    Returns:
        `[N, out_height, out_width, C]` tensor of the images' dtype.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"Unknown interpolation. Expected one of {INTERPOLATIONS}. "
                         f"Received: interpolation={interpolation!r}")
    if fill_mode not in FILL_MODES:
        raise ValueError(f"Unknown fill_mode. Expected one of {FILL_MODES}. "
                         f"Received: fill_mode={fill_mode!r}")
    images = tf.convert_to_tensor(images)
    transforms = tf.convert_to_tensor(transforms)
    if images.shape.rank != 4:
        raise ValueError(f"images must be [N, H, W, C]. Received: images.shape={images.shape}")
    if transforms.shape.rank != 2 or transforms.shape[-1] != 8:
        raise ValueError("transforms must be [N, 8] or [1, 8]. "
                         f"Received: transforms.shape={transforms.shape}")
    in_dtype = images.dtype
    cdtype = _coordinate_dtype(images, transforms)
    work = images if in_dtype in (tf.float32, tf.float64) else tf.cast(images, tf.float32)
    transforms = tf.cast(transforms, cdtype)

    shape = tf.shape(images)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    if output_shape is None:
        out_h, out_w = h, w
    else:
        out_h, out_w = output_shape[0], output_shape[1]

    ys, xs = tf.meshgrid(tf.range(out_h), tf.range(out_w), indexing="ij")
    xs = tf.reshape(tf.cast(xs, cdtype), [1, -1])  # [1, P]
    ys = tf.reshape(tf.cast(ys, cdtype), [1, -1])
    t = transforms[:, :, None]  # [N or 1, 8, 1]
    k = t[:, 6] * xs + t[:, 7] * ys + 1.0
    safe_k = tf.where(tf.equal(k, 0.0), tf.ones_like(k), k)
    in_x = (t[:, 0] * xs + t[:, 1] * ys + t[:, 2]) / safe_k
    in_y = (t[:, 3] * xs + t[:, 4] * ys + t[:, 5]) / safe_k
    in_x = tf.broadcast_to(in_x, [n, tf.shape(in_x)[1]])  # [N, P]
    in_y = tf.broadcast_to(in_y, [n, tf.shape(in_y)[1]])
    infinite = tf.broadcast_to(tf.equal(k, 0.0), tf.shape(in_x))

    x = _map_coordinate(in_x, w, fill_mode)
    y = _map_coordinate(in_y, h, fill_mode)

    fill = tf.cast(fill_value, work.dtype)

    if interpolation == "nearest":
        # std::round rounds halves away from zero.
        xr = tf.sign(x) * tf.math.floor(tf.abs(x) + 0.5)
        yr = tf.sign(y) * tf.math.floor(tf.abs(y) + 0.5)
        base = tf.range(n)[:, None] * (h * w)  # [N, 1]
        inside, index = _pixel(tf.stop_gradient(yr), tf.stop_gradient(xr), base, h, w,
                               infinite)
        flat = tf.reshape(work, [-1, c])  # [N*H*W, C]
        out = tf.where(inside[..., None], tf.gather(flat, index), fill)  # [N, P, C]
    else:
        out = _bilinear(work, x, y, fill, infinite)

    out = tf.reshape(out, [n, out_h, out_w, c])
    return tf.cast(out, in_dtype)


# --------------------------------------------------------------------------------------
# Building transforms from human parameters.


def transforms_to_matrices(transforms):
    """`[N, 8]` transforms -> `[N, 3, 3]` output-to-input matrices."""
    transforms = tf.convert_to_tensor(transforms)
    ones = tf.ones_like(transforms[:, :1])
    return tf.reshape(tf.concat([transforms, ones], axis=-1), [-1, 3, 3])


def matrices_to_transforms(matrices):
    """`[N, 3, 3]` output-to-input matrices -> `[N, 8]` transforms (normalised by m[2, 2])."""
    matrices = tf.convert_to_tensor(matrices)
    flat = tf.reshape(matrices, [-1, 9])
    return flat[:, :8] / flat[:, 8:9]


def compose(*matrices):
    """Composes output-to-input matrices: `compose(A, B)` warps by A, then by B.

    Warping by A then by B samples output pixel p at `A @ (B @ p)`, so the composed
    output-to-input matrix is `A @ B`. All arguments are `[N, 3, 3]` (or broadcastable).
    """
    result = matrices[0]
    for m in matrices[1:]:
        result = tf.linalg.matmul(result, m)
    return result


def affine_matrix(
    height,
    width,
    *,
    rotation=0.0,
    shear=0.0,
    log_scale_x=0.0,
    log_scale_y=0.0,
    translate_x=0.0,
    translate_y=0.0,
    perspective_x=0.0,
    perspective_y=0.0,
    log_zoom=0.0,
    log_aspect=0.0,
    translation_in_pixels: bool = False,
    dtype=tf.float32,
):
    """Output-to-input matrices `[N, 3, 3]` for transforms about the image centre.

    The *image content* is rotated by `rotation` (radians, counter-clockwise on screen),
    sheared horizontally by `shear` (x += shear * y), scaled by `exp(log_scale_x)`,
    `exp(log_scale_y)` (> 0 enlarges) and shifted by `translate_x`, `translate_y` (fractions
    of width/height, or pixels if `translation_in_pixels`). `perspective_x/_y` add the
    projective terms (per pixel, scaled by 1/size). `log_zoom` and `log_aspect` are the same
    scales in other coordinates: they add `log_zoom + log_aspect / 2` to `log_scale_x` and
    `log_zoom - log_aspect / 2` to `log_scale_y` (a zoom of both axes, and the ratio of the
    width's scale to the height's). Every argument is a scalar or `[N]`
    tensor; the result is differentiable in all of them. Pass it to `matrices_to_transforms`.

    The forward (input-to-output) map is `T(centre) . Trans . R . Sh . S . T(-centre)`;
    the returned matrix is its inverse, computed in closed form.
    """
    args = [rotation, shear, log_scale_x, log_scale_y, translate_x, translate_y,
            perspective_x, perspective_y, log_zoom, log_aspect]
    args = [tf.reshape(tf.cast(a, dtype), [-1]) for a in args]
    n = tf.reduce_max(tf.stack([tf.shape(a)[0] for a in args]))
    args = [tf.broadcast_to(a, [n]) for a in args]
    rot, sh, lsx, lsy, tx, ty, px, py, zoom, aspect = args
    lsx, lsy = lsx + zoom + 0.5 * aspect, lsy + zoom - 0.5 * aspect
    h = tf.cast(height, dtype)
    w = tf.cast(width, dtype)
    if not translation_in_pixels:
        tx, ty = tx * w, ty * h
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    zeros, ones = tf.zeros_like(rot), tf.ones_like(rot)

    def mat(rows):
        return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)

    # Inverse of each factor, applied in reverse order: S^-1 Sh^-1 R^-1 Trans^-1.
    inv_scale = mat([[tf.exp(-lsx), zeros, zeros], [zeros, tf.exp(-lsy), zeros],
                     [zeros, zeros, ones]])
    inv_shear = mat([[ones, -sh, zeros], [zeros, ones, zeros], [zeros, zeros, ones]])
    # Screen coordinates have y downwards: counter-clockwise content rotation by r is the
    # forward map [[cos, sin], [-sin, cos]]; its inverse is the transpose.
    cos, sin = tf.cos(rot), tf.sin(rot)
    inv_rot = mat([[cos, -sin, zeros], [sin, cos, zeros], [zeros, zeros, ones]])
    inv_trans = mat([[ones, zeros, -tx], [zeros, ones, -ty], [zeros, zeros, ones]])
    to_centre = mat([[ones, zeros, -cx * ones], [zeros, ones, -cy * ones], [zeros, zeros, ones]])
    from_centre = mat([[ones, zeros, cx * ones], [zeros, ones, cy * ones], [zeros, zeros, ones]])
    persp = mat([[ones, zeros, zeros], [zeros, ones, zeros], [px / w, py / h, ones]])
    return compose(from_centre, inv_scale, inv_shear, inv_rot, inv_trans, persp, to_centre)


def normalized_affine_to_pixels(theta, height, width):
    """Converts `[N, 2, 3]` affine matrices in normalised coordinates to pixel matrices.

    `theta` follows PyTorch's `affine_grid(align_corners=True)` convention used by the
    original DABO code: it maps output points in `[-1, 1]^2` to input points in `[-1, 1]^2`.
    Returns `[N, 3, 3]` output-to-input matrices in pixel coordinates.
    """
    theta = tf.convert_to_tensor(theta)
    dtype = theta.dtype
    n = tf.shape(theta)[0]
    bottom = tf.broadcast_to(tf.constant([[0.0, 0.0, 1.0]], dtype), [n, 1, 3])
    theta3 = tf.concat([theta, bottom], axis=1)
    sx = 2.0 / tf.maximum(tf.cast(width, dtype) - 1.0, 1.0)
    sy = 2.0 / tf.maximum(tf.cast(height, dtype) - 1.0, 1.0)
    to_norm = tf.convert_to_tensor([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]])
    from_norm = tf.convert_to_tensor([[1.0 / sx, 0.0, 1.0 / sx], [0.0, 1.0 / sy, 1.0 / sy],
                                      [0.0, 0.0, 1.0]])
    return compose(from_norm[None], theta3, to_norm[None])


def decompose_affine(matrices, height, width):
    """Human parameters of the *content* transform whose output-to-input matrix is given.

    Inverts `affine_matrix` for affine matrices (no perspective). Returns a dict of `[N]`
    tensors: `rotation` (radians), `shear`, `log_scale_x`, `log_scale_y`, and the shift of
    the image centre in pixels, `translate_x_px`, `translate_y_px`. The forward 2x2 part is
    factored as `A = R Sh S` (a QR-like decomposition).
    """
    matrices = tf.convert_to_tensor(matrices)
    dtype = matrices.dtype
    forward = tf.linalg.inv(matrices)
    a = forward[:, :2, :2]
    a00, a01, a10, a11 = a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1]
    sx = tf.sqrt(a00 ** 2 + a10 ** 2)
    # Forward rotation is [[cos, sin], [-sin, cos]] in screen coordinates (y down).
    rotation = tf.atan2(-a10, a00)
    det = a00 * a11 - a01 * a10
    sy = det / sx
    shear = (a00 * a01 + a10 * a11) / (sx * sy)
    cx = (tf.cast(width, dtype) - 1.0) / 2.0
    cy = (tf.cast(height, dtype) - 1.0) / 2.0
    centre = tf.stack([cx, cy, 1.0])
    moved = tf.linalg.matvec(forward, tf.broadcast_to(centre, tf.shape(forward)[:2]))
    return {
        "rotation": rotation,
        "shear": shear,
        "log_scale_x": tf.math.log(sx),
        "log_scale_y": tf.math.log(tf.abs(sy)),
        "translate_x_px": moved[:, 0] / moved[:, 2] - cx,
        "translate_y_px": moved[:, 1] / moved[:, 2] - cy,
    }


def degrees(radians):
    return radians * (180.0 / math.pi)


def warp_with_fill_choice(images, transforms, constant_share, *, fill_mode: str = "reflect",
                          fill_value: float = 0.0, interpolation: str = "bilinear"):
    """`projective_warp` with each image's fill chosen between `fill_mode` and a constant.

    Computes both warps and mixes them per image, `out + c * (constant - out)`, so that with
    `constant_share` a hard 0/1 gate (a straight-through estimator in a learned layer) each
    image gets one fill and the mix is differentiable in the gate.

    Args:
        images: `[N, H, W, C]` float tensor.
        transforms: `[N, 8]` output-to-input transforms.
        constant_share: `[N]`: 1 where an image is filled with `fill_value`, 0 where with
            `fill_mode`.
        fill_mode, fill_value, interpolation: as for `projective_warp`.
    """
    out = projective_warp(images, transforms, interpolation=interpolation,
                          fill_mode=fill_mode, fill_value=fill_value)
    constant = projective_warp(images, transforms, interpolation=interpolation,
                               fill_mode="constant", fill_value=fill_value)
    share = tf.cast(constant_share, out.dtype)[:, None, None, None]
    return out + share * (constant - out)
