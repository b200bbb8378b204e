"""`projective_warp` against the raw TensorFlow op, finite differences and XLA."""

import numpy as np
import pytest
import tensorflow as tf

from dabo_tf.augment import warp
from dabo_tf.augment.warp import projective_warp


def random_transforms(rng, n, h, w, strength=1.0, projective=True):
    m = warp.affine_matrix(
        h, w,
        rotation=rng.uniform(-np.pi, np.pi, n) * strength,
        shear=rng.uniform(-0.4, 0.4, n) * strength,
        log_scale_x=rng.uniform(-0.5, 0.5, n) * strength,
        log_scale_y=rng.uniform(-0.5, 0.5, n) * strength,
        translate_x=rng.uniform(-0.4, 0.4, n) * strength,
        translate_y=rng.uniform(-0.4, 0.4, n) * strength,
        perspective_x=rng.uniform(-0.3, 0.3, n) * strength * projective,
        perspective_y=rng.uniform(-0.3, 0.3, n) * strength * projective,
    )
    return warp.matrices_to_transforms(m).numpy()


def raw_op(images, transforms, interpolation, fill_mode, fill_value=0.0, output_shape=None):
    shape = output_shape or images.shape[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=list(shape),
        fill_value=fill_value, interpolation=interpolation.upper(),
        fill_mode=fill_mode.upper()).numpy()


def sample_points(transforms, h, w):
    """Input sample coordinates of every output pixel, `[N, H*W, 2]` (x, y)."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    xs, ys = xs.reshape(1, -1), ys.reshape(1, -1)
    t = transforms[:, :, None]
    k = t[:, 6] * xs + t[:, 7] * ys + 1
    return np.stack([(t[:, 0] * xs + t[:, 1] * ys + t[:, 2]) / k,
                     (t[:, 3] * xs + t[:, 4] * ys + t[:, 5]) / k], -1)


@pytest.mark.parametrize("fill_mode", warp.FILL_MODES)
@pytest.mark.parametrize("interpolation", warp.INTERPOLATIONS)
@pytest.mark.parametrize("strength", [0.3, 1.0, 3.0])
def test_matches_raw_op(fill_mode, interpolation, strength):
    rng = np.random.default_rng(int(strength * 10) + len(fill_mode) + len(interpolation))
    n, h, w = 8, 13, 17
    images = rng.random((n, h, w, 3)).astype(np.float32)
    transforms = random_transforms(rng, n, h, w, strength).astype(np.float32)
    expected = raw_op(images, transforms, interpolation, fill_mode, fill_value=0.25)
    got = projective_warp(images, transforms, interpolation=interpolation,
                          fill_mode=fill_mode, fill_value=0.25).numpy()
    assert np.abs(images - expected).mean() > 0.05  # the transforms really move pixels
    err = np.abs(got - expected)
    if interpolation == "bilinear":
        assert err.max() <= 1e-4
    else:
        # Equal except where a sample falls within 1e-4 of a rounding boundary.
        pts = sample_points(transforms.astype(np.float64), h, w)
        near = (np.abs(pts - np.round(pts - 0.5) - 0.5) < 1e-4).any(-1).reshape(n, h, w)
        assert err[~near].max() == 0.0


def test_broadcast_transform_and_output_shape():
    rng = np.random.default_rng(1)
    images = rng.random((4, 12, 10, 2)).astype(np.float32)
    transform = random_transforms(rng, 1, 12, 10).astype(np.float32)
    expected = raw_op(images, np.repeat(transform, 4, 0), "bilinear", "reflect",
                      output_shape=(7, 15))
    got = projective_warp(images, transform, output_shape=(7, 15)).numpy()
    assert got.shape == (4, 7, 15, 2)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_identity_transform_returns_input():
    images = np.random.default_rng(2).random((3, 9, 9, 1)).astype(np.float32)
    identity = np.array([[1, 0, 0, 0, 1, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(projective_warp(images, identity).numpy(), images)


def test_rotation_convention_is_counter_clockwise():
    image = np.zeros((1, 21, 21, 1), np.float32)
    image[0, 10, 18, 0] = 1.0  # right of the centre
    m = warp.affine_matrix(21, 21, rotation=[np.pi / 2])
    out = projective_warp(image, warp.matrices_to_transforms(m), fill_mode="constant")
    assert np.argwhere(out.numpy()[0, ..., 0] > 0.5).tolist() == [[2, 10]]  # now above it


@pytest.mark.parametrize("fill_mode", warp.FILL_MODES)
def test_xla_matches_eager(fill_mode):
    rng = np.random.default_rng(3)
    images = rng.random((5, 16, 16, 3)).astype(np.float32)
    transforms = random_transforms(rng, 5, 16, 16, 2.0).astype(np.float32)

    def f(a, t):
        return projective_warp(a, t, fill_mode=fill_mode)

    eager = f(images, transforms).numpy()
    xla = tf.function(f, jit_compile=True)(images, transforms).numpy()
    np.testing.assert_allclose(xla, eager, atol=1e-5)


def test_xla_gradients_and_dynamic_batch():
    rng = np.random.default_rng(4)
    images = tf.constant(rng.random((6, 8, 8, 3)).astype(np.float32))
    transforms = tf.constant(random_transforms(rng, 6, 8, 8, 0.5).astype(np.float32))

    def grads(a, t):
        with tf.GradientTape() as tape:
            tape.watch([a, t])
            loss = tf.reduce_sum(projective_warp(a, t) ** 2)
        return tape.gradient(loss, [a, t])

    spec = [tf.TensorSpec([None, 8, 8, 3]), tf.TensorSpec([None, 8])]
    xla = tf.function(grads, jit_compile=True, input_signature=spec)
    for got, want in zip(xla(images, transforms), grads(images, transforms)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    assert xla(images[:3], transforms[:3])[0].shape == (3, 8, 8, 3)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32])
def test_low_precision_dtypes(dtype):
    rng = np.random.default_rng(5)
    images = rng.random((3, 10, 10, 3)).astype(np.float32)
    transforms = random_transforms(rng, 3, 10, 10, 0.5).astype(np.float32)
    out = projective_warp(tf.cast(images, dtype), transforms)
    assert out.dtype == dtype
    tol = {tf.float16: 1e-2, tf.bfloat16: 5e-2, tf.float32: 1e-5}[dtype]
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(),
                               raw_op(images, transforms, "bilinear", "reflect"), atol=tol)
    xla = tf.function(lambda a: projective_warp(a, transforms), jit_compile=True)
    assert xla(tf.cast(images, dtype)).dtype == dtype


@pytest.mark.parametrize("fill_mode", warp.FILL_MODES)
def test_gradients_match_finite_differences(fill_mode):
    rng = np.random.default_rng(6)
    images = rng.random((2, 5, 6, 1))
    # Keep samples away from the kinks (bilinear cells at integers, reflect folds and
    # clamps at integers and half-integers): draw until every sample is 1e-3 clear of them.
    for _ in range(200):
        transforms = random_transforms(rng, 2, 5, 6, 0.4).astype(np.float64)
        frac = sample_points(transforms, 5, 6) % 0.5
        if ((frac > 1e-3) & (frac < 0.5 - 1e-3)).all():
            break
    else:
        pytest.fail("could not find a kink-free transform")

    def f_images(a):
        return projective_warp(a, tf.constant(transforms), fill_mode=fill_mode)

    def f_transforms(t):
        return projective_warp(tf.constant(images), t, fill_mode=fill_mode)

    for f, x in ((f_images, images), (f_transforms, transforms)):
        theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(x)], delta=1e-6)
        assert np.abs(theoretical[0]).max() > 0
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)


def test_human_parameters_round_trip_and_compose():
    h, w = 20, 30
    params = dict(rotation=[0.3, -1.0], shear=[0.1, -0.2], log_scale_x=[0.2, -0.3],
                  log_scale_y=[-0.1, 0.25], translate_x=[0.1, -0.05], translate_y=[-0.2, 0.1])
    m = warp.affine_matrix(h, w, dtype=tf.float64, **params)
    back = warp.decompose_affine(m, h, w)
    for key in ("rotation", "shear", "log_scale_x", "log_scale_y"):
        np.testing.assert_allclose(back[key].numpy(), params[key], atol=1e-9)
    np.testing.assert_allclose(back["translate_x_px"].numpy(), np.array([0.1, -0.05]) * w)
    np.testing.assert_allclose(back["translate_y_px"].numpy(), np.array([-0.2, 0.1]) * h)
    # Two rotations compose into their sum.
    r1 = warp.affine_matrix(h, w, rotation=[0.2], dtype=tf.float64)
    r2 = warp.affine_matrix(h, w, rotation=[0.5], dtype=tf.float64)
    np.testing.assert_allclose(warp.compose(r1, r2).numpy(),
                               warp.affine_matrix(h, w, rotation=[0.7], dtype=tf.float64).numpy(),
                               atol=1e-12)
    # The PyTorch-style normalised identity is the pixel identity.
    theta = tf.constant([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    np.testing.assert_allclose(warp.normalized_affine_to_pixels(theta, h, w).numpy()[0],
                               np.eye(3), atol=1e-6)


def test_zoom_and_aspect_are_the_axes_scales_in_other_coordinates():
    zoom, aspect = np.array([0.2, -0.3]), np.array([0.1, 0.4])
    ours = warp.affine_matrix(9, 13, rotation=[0.3, 0.1], log_zoom=zoom, log_aspect=aspect,
                              dtype=tf.float64)
    axes = warp.affine_matrix(9, 13, rotation=[0.3, 0.1], log_scale_x=zoom + aspect / 2,
                              log_scale_y=zoom - aspect / 2, dtype=tf.float64)
    np.testing.assert_allclose(ours.numpy(), axes.numpy(), atol=1e-12)


def test_helpers_are_differentiable():
    def loss(angle):
        m = warp.affine_matrix(10, 10, rotation=angle, translate_x=0.1)
        return tf.reduce_sum(warp.matrices_to_transforms(m))

    angle = tf.Variable([0.3])
    with tf.GradientTape() as tape:
        value = loss(angle)
    eps = 1e-2  # float32 maths: a central difference this wide is accurate to ~1e-4
    numeric = (loss(tf.constant([0.3 + eps])) - loss(tf.constant([0.3 - eps]))) / (2 * eps)
    np.testing.assert_allclose(tape.gradient(value, angle).numpy(), [numeric], rtol=1e-3)


def test_bad_arguments():
    images = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="fill_mode"):
        projective_warp(images, np.zeros((1, 8), np.float32), fill_mode="mirror")
    with pytest.raises(ValueError, match="interpolation"):
        projective_warp(images, np.zeros((1, 8), np.float32), interpolation="cubic")
    with pytest.raises(ValueError, match="transforms"):
        projective_warp(images, np.zeros((1, 6), np.float32))
