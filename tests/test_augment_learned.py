"""Learned augmenter layers: identity at start, gradients, seeds, dtypes, serialisation."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import dabo_tf
from dabo_tf import augment
from dabo_tf.augment import warp

IMAGES = np.random.default_rng(0).random((4, 12, 12, 3)).astype(np.float32)
LIMITS = {**augment.MAX_MAGNITUDE, "zoom": augment.LINEAR_SCALE_LIMIT}
"""Largest half-width of each op a default `LearnedAffine`/`LearnedColor` learns (the zoom
drawn uniformly)."""


def make(kind, seed=1, init=0.0, scale="linear"):
    """An augmenter of `kind`; distribution layers start at half-width `init` (0: identity).

    The composite's affine part learns log half-widths (starting at `MIN_LOG_MAGNITUDE`,
    near the identity), the other layers the `scale` given."""
    return {
        "affine": lambda: augment.LearnedAffine(init_magnitude=init, magnitude_scale=scale,
                                                seed=seed),
        "projective": lambda: augment.LearnedAffine(projective=True, init_magnitude=init,
                                                    magnitude_scale=scale, seed=seed),
        "color": lambda: augment.LearnedColor(init_magnitude=init, magnitude_scale=scale,
                                              seed=seed),
        "network": lambda: augment.NoiseAugmenter(seed=seed),
        "network_color": lambda: augment.NoiseAugmenter(color=True, image_features=True,
                                                        seed=seed),
        "composite": lambda: augment.Augmenter(
            [augment.LearnedAffine(init_magnitude=init, magnitude_scale="log", seed=seed),
             augment.LearnedColor(init_magnitude=init, magnitude_scale=scale, seed=seed + 1)]),
    }[kind]()


KINDS = ["affine", "projective", "color", "network", "network_color", "composite"]


def perturb(layer, scale=0.2):
    """Moves every weight away from its initial value so the layer really augments."""
    rng = np.random.default_rng(3)
    for w in layer.trainable_weights:
        w.assign(w.numpy() + scale * rng.standard_normal(w.shape).astype(np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_constructs_without_arguments_and_is_identity_at_start(kind):
    for cls in (augment.LearnedAffine, augment.LearnedColor, augment.Augmenter,
                augment.NoiseAugmenter):
        cls()
    layer = make(kind)
    out = layer(IMAGES, training=True).numpy()
    # Exact up to float rounding of the identity matrix; the network and the composite's
    # log-parameterised affine part start near the identity.
    tol = 0.05 if kind.startswith("network") or kind == "composite" else 1e-6
    assert np.abs(out - IMAGES).max() <= tol
    perturb(layer)
    np.testing.assert_array_equal(layer(IMAGES, training=False).numpy(), IMAGES)
    np.testing.assert_array_equal(layer(IMAGES).numpy(), IMAGES)
    assert np.abs(layer(IMAGES, training=True).numpy() - IMAGES).max() > 0.05


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_shape_and_dtype_preserved(kind, dtype):
    layer = make(kind)
    perturb(layer)
    out = layer(tf.cast(IMAGES, dtype), training=True)
    assert out.dtype == tf.as_dtype(dtype)
    assert out.shape == IMAGES.shape
    assert np.isfinite(tf.cast(out, tf.float32).numpy()).all()


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_reaches_every_parameter(kind):
    layer = make(kind, init=0.05, scale="log")  # a zero-width range has no gradient
    layer.build(IMAGES.shape)
    if kind.startswith("network"):
        perturb(layer, 0.05)
    target = tf.constant(np.random.default_rng(1).random(IMAGES.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(IMAGES, training=True) - target))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == len(layer.trainable_weights) > 0
    for w, g in zip(layer.trainable_weights, grads):
        assert g is not None, w.path
        assert np.isfinite(g.numpy()).all(), w.path
        assert np.abs(g.numpy()).max() > 0, w.path


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output(kind):
    a, b, c = make(kind, seed=7), make(kind, seed=7), make(kind, seed=8)
    for layer in (a, b, c):
        layer.build(IMAGES.shape)
        perturb(layer)
    out_a = a(IMAGES, training=True).numpy()
    np.testing.assert_array_equal(out_a, b(IMAGES, training=True).numpy())
    assert np.abs(out_a - c(IMAGES, training=True).numpy()).max() > 1e-3
    # Consecutive calls draw fresh noise.
    assert np.abs(out_a - a(IMAGES, training=True).numpy()).max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_replaying_a_transformation(kind):
    layer = make(kind)
    layer.build(IMAGES.shape)
    perturb(layer)
    t = layer.get_random_transformation(tf.constant(IMAGES))
    first = layer(IMAGES, training=True, transformation=t).numpy()
    np.testing.assert_array_equal(first, layer(IMAGES, training=True, transformation=t).numpy())


def test_configs_saved_before_log_widths_load_as_linear_widths():
    old = {k: v for k, v in augment.LearnedAffine().get_config().items()
           if k != "magnitude_scale"}
    assert augment.LearnedAffine.from_config(old).magnitude_scale == "linear"
    # ... and before scale_draw existed, scale factors were drawn log-uniformly.
    old = {k: v for k, v in augment.LearnedAffine().get_config().items() if k != "scale_draw"}
    assert augment.LearnedAffine.from_config(old).scale_draw == "log"


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip_and_keras_file(kind, tmp_path):
    layer = make(kind)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    inputs = keras.Input((12, 12, 3))
    outputs = make(kind)(inputs, training=True)
    model = keras.Model(inputs, outputs)
    perturb(model)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for w1, w2 in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(w1), np.asarray(w2))


def test_policy_in_human_units():
    layer = augment.LearnedAffine(magnitude_scale="linear", seed=0)
    layer.build(IMAGES.shape)
    mag = np.zeros(6, np.float32)
    mag[layer.ops.index("rotate")] = math.radians(30)
    mag[layer.ops.index("zoom")] = 0.1
    mean = np.zeros(6, np.float32)
    mean[layer.ops.index("translate_x")] = 0.05
    layer.magnitude.assign(mag)
    layer.mean.assign(mean)
    policy = layer.policy()
    assert policy["rotate"]["unit"] == "degrees"
    assert policy["rotate"]["low"] == pytest.approx(-30, abs=1e-4)
    assert policy["rotate"]["high"] == pytest.approx(30, abs=1e-4)
    # Scale factors are drawn uniformly by default, and the policy says so.
    assert (policy["zoom"]["low"], policy["zoom"]["high"]) == pytest.approx((0.9, 1.1))
    assert policy["zoom"]["draw"] == augment.UNIFORM_DRAW
    assert "draw" not in policy["aspect"]
    assert policy["translate_x"]["low"] == pytest.approx(0.05)
    logs = dabo_tf.dabo_model.policy_logs(layer)
    assert (logs["aug_rotate_low"], logs["aug_rotate_high"]) == pytest.approx((-30, 30), abs=1e-4)
    assert logs["aug_translate_x_low"] == logs["aug_translate_x_high"] == pytest.approx(0.05)
    # The sampled transforms really are rotations within the policy's range.
    t = layer.get_random_transformation(tf.zeros((500, 12, 12, 1)))
    rot = warp.degrees(warp.decompose_affine(
        layer.matrices(tf.zeros((500, 12, 12, 1)), t), 12, 12)["rotation"]).numpy()
    assert -30.001 <= rot.min() < -25 and 25 < rot.max() <= 30.001

    color = augment.LearnedColor()
    color.build((None, 8, 8, 1))
    assert color.ops == ("brightness", "contrast")  # no saturation on grayscale
    net = augment.NoiseAugmenter(identity_init=False, seed=0)
    net.build((None, 8, 8, 1))
    p = net.policy()
    assert set(p) >= {"rotate", "shear", "scale_x", "translate_y"}
    assert p["rotate"]["low"] < p["rotate"]["high"]


def test_color_ops_do_what_they_name():
    x = tf.constant(np.random.default_rng(2).random((2, 6, 6, 3)).astype(np.float32))
    ones = tf.ones([2])
    np.testing.assert_allclose(augment.adjust_color(x, brightness=0.1 * ones), x + 0.1,
                               atol=1e-6)
    flat = augment.adjust_color(x, contrast=-1.0 * ones).numpy()
    np.testing.assert_allclose(flat, np.broadcast_to(x.numpy().mean(axis=(1, 2, 3),
                                                                    keepdims=True), x.shape),
                               atol=1e-6)
    grey = augment.adjust_color(x, saturation=-1.0 * ones).numpy()
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-6)
    np.testing.assert_allclose(grey[..., :1], tf.image.rgb_to_grayscale(x).numpy(), atol=1e-3)


def test_hash_noise_is_uniform_and_identical_under_xla():
    seed = tf.constant([3, 4], tf.int64)
    eager = augment.hash_uniform((2000, 5), seed, -1.0, 1.0).numpy()
    xla = tf.function(lambda: augment.hash_uniform((2000, 5), seed, -1.0, 1.0),
                      jit_compile=True)().numpy()
    np.testing.assert_array_equal(eager, xla)
    assert -1 <= eager.min() and eager.max() < 1
    assert abs(eager.mean()) < 0.03 and abs(eager.std() - 1 / math.sqrt(3)) < 0.02
    assert abs(np.corrcoef(eager[:, 0], eager[:, 1])[0, 1]) < 0.06
    # An offset draws a slice of a larger draw (what each replica does under tf.distribute).
    part = augment.hash_uniform((1000, 5), seed, -1.0, 1.0, offset=5000).numpy()
    np.testing.assert_array_equal(part, eager[1000:])


def test_works_in_tf_data_and_exported_names():
    layer = augment.Augmenter([augment.LearnedAffine(seed=0)])
    layer.build((None, 12, 12, 3))
    perturb(layer)
    ds = tf.data.Dataset.from_tensor_slices(IMAGES).batch(2).map(
        lambda x: layer(x, training=True))
    out = np.concatenate(list(ds.as_numpy_iterator()))
    assert out.shape == IMAGES.shape and np.abs(out - IMAGES).max() > 0.01
    assert dabo_tf.LearnedAffine is augment.LearnedAffine
    assert dabo_tf.Augmenter is augment.Augmenter
    assert dabo_tf.LearnedColor is augment.LearnedColor


def test_distributions_start_small_and_centred_on_the_identity():
    layer = augment.Augmenter([augment.LearnedAffine(seed=0), augment.LearnedColor(seed=1)])
    layer.build(IMAGES.shape)
    # Only the (log) half-widths learn; each starts at a twentieth of its op's limit.
    assert [w.name for w in layer.trainable_weights] == ["log_magnitude", "log_magnitude"]
    policy = layer.policy()
    assert policy["rotate"]["high"] == pytest.approx(9.0, rel=1e-5)
    assert policy["translate_x"]["high"] == pytest.approx(0.025, rel=1e-5)
    assert policy["brightness"]["high"] == pytest.approx(0.0125, rel=1e-5)
    assert policy["rotate"]["low"] == -policy["rotate"]["high"]
    assert policy["zoom"]["high"] == pytest.approx(1.025, rel=1e-5)  # 0.05 of x0.5-1.5
    assert policy["zoom"]["low"] + policy["zoom"]["high"] == pytest.approx(2.0)
    assert policy["aspect"]["high"] == pytest.approx(2 ** 0.05, rel=1e-5)
    assert policy["contrast"]["low"] + policy["contrast"]["high"] == pytest.approx(2.0)
    # The optimizer's update keeps each half-width in [MIN_LOG_MAGNITUDE (log) or 0 (linear),
    # MAX_MAGNITUDE[op]].
    grads = [-1.0, 1.0, -1.0, 1.0, -1.0, -1.0]
    for scale, floor in (("log", augment.MIN_LOG_MAGNITUDE), ("linear", 0.0)):
        affine = augment.LearnedAffine(magnitude_scale=scale, seed=0)
        affine.build(IMAGES.shape)
        keras.optimizers.SGD(100.0).apply([tf.constant(grads)], affine.trainable_weights)
        want = [LIMITS[op] if g < 0 else floor for op, g in zip(affine.ops, grads)]
        np.testing.assert_allclose(affine.half_widths().numpy(), want, rtol=1e-5)
        affine.set_half_widths(0.2)
        np.testing.assert_allclose(affine.half_widths().numpy(), 0.2, rtol=1e-6)


def test_build_augmenter_options():
    symmetric = augment.build_augmenter(learn_mean=False, color=True, seed=0)
    symmetric.build((None, 8, 8, 3))
    assert [w.name for w in symmetric.trainable_weights] == ["log_magnitude", "log_magnitude"]
    network = augment.build_augmenter("network", identity_init=False, seed=0)
    network.build((None, 8, 8, 3))
    images = tf.random.uniform((4, 8, 8, 3))
    assert np.abs(np.asarray(network(images, training=True)) - np.asarray(images)).max() > 0.05
    with pytest.raises(ValueError, match="kind"):
        augment.build_augmenter("gan")


def _grad(layer, variable, loss_fn, images=IMAGES):
    layer.build(images.shape)
    with tf.GradientTape() as tape:
        out = layer(images, training=True)
        loss = loss_fn(out)
    return float(tape.gradient(loss, getattr(layer, variable)))


@pytest.mark.parametrize("direction,axis", [("horizontal", 2), ("vertical", 1)])
def test_learned_flip_probability_gradient_has_the_right_sign(direction, axis):
    def flipped_target(out):  # a loss that wants flipped images
        return tf.reduce_mean(tf.square(out - tf.reverse(IMAGES, [axis])))

    def upright_target(out):  # a loss that wants the images as they are
        return tf.reduce_mean(tf.square(out - IMAGES))

    grads = [_grad(augment.LearnedFlip(direction, init_probability=0.3, seed=0), "probability",
                   fn) for fn in (flipped_target, upright_target)]
    assert np.all(np.isfinite(grads))
    assert grads[0] < 0 < grads[1]  # raise p where flips help, lower it where they hurt
    layer = augment.LearnedFlip(direction, init_probability=0.5, seed=0)
    out = layer(np.repeat(IMAGES, 16, axis=0), training=True).numpy()
    flipped = [np.allclose(o, np.flip(i, axis - 1), atol=1e-6) for o, i in
               zip(out, np.repeat(IMAGES, 16, axis=0))]
    assert 0.25 < np.mean(flipped) < 0.75  # hard flips, about half of them
    assert layer.policy() == {layer.op: {"low": 0.5, "high": 0.5,
                                         "unit": augment.FLIP_UNIT if axis == 2
                                         else augment.VFLIP_UNIT}}


def test_learned_cutout_gradients_have_the_right_sign():
    def keep(out):  # erasing hurts: size and probability should shrink
        return tf.reduce_mean(tf.square(out - IMAGES))

    mean = IMAGES.mean(axis=(1, 2), keepdims=True)

    def erase(out):  # a loss that wants mean-coloured images: erasing helps
        return tf.reduce_mean(tf.square(out - mean))

    for variable in ("size", "probability"):
        grads = [_grad(augment.LearnedCutout(init_size=0.4, init_probability=0.5, seed=0),
                       variable, fn) for fn in (keep, erase)]
        assert np.all(np.isfinite(grads)) and grads[0] > 0 > grads[1], (variable, grads)
    layer = augment.LearnedCutout(init_size=0.5, init_probability=1.0, seed=0)
    out = layer(IMAGES, training=True).numpy()
    changed = np.abs(out - IMAGES).max(axis=-1) > 1e-2  # the soft edges leave tiny tails
    assert 0.1 < changed.mean() < 0.5  # about a quarter of the pixels (squares at the border)
    policy = layer.policy()["cutout"]
    assert (policy["low"], policy["high"], policy["probability"]) == (0.5, 0.5, 1.0)


def test_flip_and_cutout_in_the_augmenter_and_its_frozen_policy():
    from dabo_tf.augment import policy as P

    layer = augment.build_augmenter(flip=True, vflip=True, cutout=True, seed=0)
    layer.build(IMAGES.shape)
    names = sorted(dabo_tf.dabo_model.policy_logs(layer))
    assert {"aug_flip_probability", "aug_vflip_probability", "aug_cutout_size",
            "aug_cutout_probability"} <= set(names)
    frozen = P.policy_to_layers({"flip": {"low": 1.0, "high": 1.0},
                                 "vflip": {"low": 0.0, "high": 0.0},
                                 "cutout": {"low": 0.0, "high": 0.0, "probability": 1.0}},
                                seed=0)
    np.testing.assert_allclose(frozen(IMAGES, training=True).numpy(), IMAGES[:, :, ::-1],
                               atol=1e-5)
    frozen = P.policy_to_layers({"vflip": {"low": 1.0, "high": 1.0},
                                 "cutout": {"low": 0.5, "high": 0.5, "probability": 1.0}},
                                seed=0)
    out = frozen(IMAGES, training=True).numpy()
    unchanged = np.isclose(out, IMAGES[:, ::-1], atol=1e-5).all(axis=-1)
    assert 0.5 < unchanged.mean() < 0.95  # flipped everywhere but inside the squares
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.policy().keys() == layer.policy().keys()


def test_build_augmenter_without_shear_learns_the_other_affine_ops():
    augmenter = augment.build_augmenter(shear=False, seed=0)
    augmenter.build((None, 8, 8, 1))
    assert list(augmenter.policy()) == ["rotate", "zoom", "aspect", "translate_x",
                                        "translate_y"]


def test_build_augmenter_scale_parameterisations():
    for scale, ops in augment.SCALE_PARAMETERISATIONS.items():
        augmenter = augment.build_augmenter(scale=scale, seed=0)
        augmenter.build((None, 8, 8, 1))
        policy = augmenter.policy()
        assert [op for op in policy if op in augment.LOG_SCALE_OPS] == list(ops)
        # Every scale op starts centred on 1 (scale factors symmetric, drawn uniformly; the
        # aspect ratio log-symmetric), and its frozen policy applies.
        for op in ops:
            if op in augment.LINEAR_SCALE_OPS:
                assert policy[op]["low"] + policy[op]["high"] == pytest.approx(2.0)
            else:
                assert policy[op]["low"] * policy[op]["high"] == pytest.approx(1.0)
        frozen = augment.policy_to_layers(policy, seed=0)
        assert frozen(IMAGES, training=True).shape == IMAGES.shape
    with pytest.raises(ValueError, match="Received: scale='iso'"):
        augment.build_augmenter(scale="iso")


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_widen_multiplies_half_widths_within_their_limits(scale):
    layer = augment.LearnedAffine(init_magnitude=0.1, init_relative=False,
                                  magnitude_scale=scale)
    layer.build((None, 12, 12, 3))
    layer.widen(math.log(2.0))
    np.testing.assert_allclose(layer.half_widths().numpy(), 0.2, rtol=1e-5)
    layer.widen(100.0)  # far past every op's limit: clipped to MAX_MAGNITUDE
    limits = [LIMITS[op] for op in layer.ops]
    np.testing.assert_allclose(layer.half_widths().numpy(), limits, rtol=1e-5)


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_relative_init_starts_each_op_at_a_fraction_of_its_limit(scale):
    augmenter = augment.build_augmenter(color=True, init_magnitude=0.1, init_relative=True,
                                        magnitude_scale=scale, seed=0)
    augmenter.build((None, 12, 12, 3))
    for layer in augmenter.augmenters:
        limits = [LIMITS[op] for op in layer.ops]
        np.testing.assert_allclose(layer.half_widths().numpy(), 0.1 * np.array(limits),
                                   rtol=1e-5)
        clone = type(layer).from_config(layer.get_config())
        clone.build((None, 12, 12, 3))
        np.testing.assert_allclose(clone.half_widths().numpy(), layer.half_widths().numpy())
    assert augmenter.policy()["rotate"]["high"] == pytest.approx(18.0)  # 0.1 of 180 degrees
    with pytest.raises(ValueError, match="Received: init_magnitude=2"):
        augment.LearnedAffine(init_magnitude=2.0, init_relative=True)


@pytest.mark.parametrize("scale,power", [("log", 2.0), ("linear", 2.0), ("log", 4.0)])
def test_widen_toward_a_prior_width_settles_there(scale, power):
    """With `prior_width` the step is `log_factor * (1 - (w / w0)**power)`: ranges below
    `w0 = prior_width * limit` widen, ranges above it narrow, and repeated steps converge."""
    layer = augment.LearnedAffine(ops=("rotate", "translate_x"), magnitude_scale=scale)
    layer.build((None, 12, 12, 3))
    w0 = 0.5 * np.array([math.pi, 0.5])
    start = np.array([0.2, 0.4])  # rotation below its prior width, the shift above
    layer.set_half_widths(start)
    layer.widen(0.1, prior_width=0.5, prior_power=power)
    expected = start * np.exp(0.1 * (1.0 - (start / w0) ** power))
    np.testing.assert_allclose(layer.half_widths().numpy(), expected, rtol=1e-5)
    for _ in range(300):
        layer.widen(0.1, prior_width=0.5, prior_power=power)
    np.testing.assert_allclose(layer.half_widths().numpy(), w0, rtol=1e-3)


def test_learned_fill_probability_gradient_is_the_two_fills_difference():
    """`fill`'s straight-through gradient of a linear loss is exactly the derivative of its
    expectation: the mean difference between the constant and the reflected fill."""
    bright = IMAGES * 0.5 + 0.5  # a constant black fill darkens the corners
    layer = augment.LearnedAffine(ops=("rotate",), init_magnitude=0.6, init_relative=False,
                                  learn_fill=True, init_fill_probability=0.4, seed=0)
    layer.build(bright.shape)
    transformation = layer.get_random_transformation(bright)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(bright, training=True, transformation=transformation))
    grad = float(tape.gradient(loss, layer.fill_probability))
    transforms = warp.matrices_to_transforms(layer.matrices(bright, transformation))
    reflect, constant = (warp.projective_warp(bright, transforms, fill_mode=mode)
                         for mode in ("reflect", "constant"))
    assert grad < 0  # darker corners lower this loss: raise p
    np.testing.assert_allclose(grad, float(tf.reduce_mean(constant - reflect)), rtol=1e-4)
    # Each image gets one fill: its output is one of the two warps.
    out = layer(bright, training=True, transformation=transformation).numpy()
    gate = transformation["gate"].numpy() < 0.4
    np.testing.assert_allclose(out[gate], constant.numpy()[gate], atol=1e-6)
    np.testing.assert_allclose(out[~gate], reflect.numpy()[~gate], atol=1e-6)
    assert layer.policy()["fill"]["low"] == pytest.approx(0.4)
    assert "aug_fill_probability" in dabo_tf.dabo_model.policy_logs(layer)
    with pytest.raises(ValueError, match="nothing to choose"):
        augment.LearnedAffine(learn_fill=True, fill_mode="constant")


def test_frozen_fill_and_build_augmenter():
    from dabo_tf.augment import policy as P

    rotate = {"rotate": {"low": 30.0, "high": 30.0}}
    x = IMAGES * 0.5 + 0.5
    outs = {p: P.policy_to_layers({**rotate, "fill": {"low": p, "high": p}}, seed=0)(
        x, training=True).numpy() for p in (0.0, 1.0)}
    corner = (slice(None), 0, 0)
    assert np.all(outs[1.0][corner] == 0.0) and np.all(outs[0.0][corner] > 0.2)
    native = P.policy_to_layers({**rotate, "fill": {"low": 1.0, "high": 1.0}},
                                keras_native=True)
    assert native.layers[0].fill_mode == "constant"
    augmenter = augment.build_augmenter(learn_fill=True, seed=0)
    augmenter.build(IMAGES.shape)
    assert "fill" in augmenter.policy()
    constant = augment.build_augmenter(learn_fill=True, fill_mode="constant", seed=0)
    constant.build(IMAGES.shape)
    assert "fill" not in constant.policy()  # nothing to learn with a constant fill


@pytest.mark.parametrize("draw", ["linear", "log"])
def test_scale_draw_samples_the_factors_policy_json_names(draw):
    """`scale_draw="linear"` draws zoom factors uniformly in [1 - w, 1 + w], as its policy
    (`"draw": "uniform"`) and the frozen policy say; `"log"` log-uniformly in [e^-w, e^w]."""
    layer = augment.LearnedAffine(ops=("zoom",), scale_draw=draw, seed=0)
    layer.build((None, 12, 12, 1))
    layer.set_half_widths(0.3)
    images = tf.zeros((4000, 12, 12, 1))

    def factors(matrices):  # the content's zoom, from the warp's output-to-input matrix
        return np.exp(warp.decompose_affine(matrices, 12, 12)["log_scale_x"].numpy())

    learned = factors(layer.matrices(images, layer.get_random_transformation(images)))
    policy = layer.policy()
    low, high = (0.7, 1.3) if draw == "linear" else (math.exp(-0.3), math.exp(0.3))
    assert (policy["zoom"]["low"], policy["zoom"]["high"]) == pytest.approx((low, high))
    assert ("draw" in policy["zoom"]) == (draw == "linear")
    frozen = augment.policy_to_layers(policy, seed=0)
    clone = type(frozen).from_config(frozen.get_config())
    frozen_factors = factors(clone.affine.matrices(images,
                                                   clone.affine.get_random_transformation(images)))
    # Uniform factors have mean 1; log-uniform ones sinh(0.3) / 0.3 = 1.015 (the sample's
    # standard error is 0.003).
    mean = 1.0 if draw == "linear" else math.sinh(0.3) / 0.3
    for sample in (learned, frozen_factors):
        assert low - 1e-4 <= sample.min() < low + 0.01 and high - 0.01 < sample.max() <= high + 1e-4
        assert sample.mean() == pytest.approx(mean, abs=0.006)
    with pytest.raises(ValueError, match="Received: scale_draw='cubic'"):
        augment.LearnedAffine(scale_draw="cubic")
    with pytest.raises(ValueError, match="'draw'"):
        augment.split_policy({"rotate": {"low": -1, "high": 1, "draw": "log-uniform"}})
