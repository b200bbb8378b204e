"""Tests of frozen policies: `dabo_tf.policy`."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from dabo_tf import augment
from dabo_tf.augment import policy as P
from dabo_tf.augment import warp


def _images(n=16, size=12, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels)).astype("float32")


def _policy(**ranges):
    units = {**{k: v[0] for k, v in augment.AFFINE_OPS.items()},
             **{k: v[0] for k, v in augment.COLOR_OPS.items()}, "flip": P.FLIP_UNIT}
    return {op: {"low": lo, "high": hi, "unit": units[op]} for op, (lo, hi) in ranges.items()}


def test_sampled_transforms_stay_in_range():
    ranges = dict(rotate=(-30.0, 30.0), shear=(-0.2, 0.1), scale_x=(0.8, 1.25),
                  scale_y=(0.9, 1.1), translate_x=(-0.1, 0.1), translate_y=(0.0, 0.2))
    layer = P.policy_to_layers(_policy(**ranges), seed=3).affine
    images = tf.zeros([4000, 16, 16, 1])
    human = warp.decompose_affine(layer.matrices(images, layer.get_random_transformation(images)),
                                  16, 16)
    got = {"rotate": warp.degrees(human["rotation"]), "shear": human["shear"],
           "scale_x": tf.exp(human["log_scale_x"]), "scale_y": tf.exp(human["log_scale_y"]),
           "translate_x": human["translate_x_px"] / 16, "translate_y": human["translate_y_px"] / 16}
    for op, (lo, hi) in ranges.items():
        v = got[op].numpy()
        assert v.min() >= lo - 1e-4 and v.max() <= hi + 1e-4, op
        # Uniform: fills the range (log-uniform for scales).
        span = (math.log(hi) - math.log(lo)) if op.startswith("scale") else hi - lo
        w = np.log(v) - math.log(lo) if op.startswith("scale") else v - lo
        assert w.min() < 0.02 * span and w.max() > 0.98 * span, op
        assert abs(np.mean(w) / span - 0.5) < 0.03, op


def test_fixed_rotation_matches_raw_op():
    """A degenerate range [30, 30] rotates every image by 30 degrees, as the TF kernel does."""
    layer = P.FixedAffine({"rotate": (30.0, 30.0)}, interpolation="nearest", fill_mode="constant")
    images = _images(3, 15, 1)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=warp.matrices_to_transforms(
            warp.affine_matrix(15, 15, rotation=math.pi / 6)),
        output_shape=[15, 15], fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
    np.testing.assert_allclose(layer(images, training=True), expected, atol=1e-6)


def test_flip_probability():
    layer = P.FixedAffine({"flip": (0.5, 0.5)}, seed=0)
    images = _images(400, 6, 1)
    out = layer(images, training=True).numpy()
    flipped = np.all(np.isclose(out, images[:, :, ::-1]), axis=(1, 2, 3))
    same = np.all(np.isclose(out, images), axis=(1, 2, 3))
    assert np.all(flipped | same)
    assert 0.4 < flipped.mean() < 0.6


def test_color_ops():
    images = _images(64, 8, 3)
    out = P.FixedColor({"brightness": (0.1, 0.1)})(images, training=True)
    np.testing.assert_allclose(out, images + 0.1, atol=1e-6)
    out = P.FixedColor({"contrast": (0.5, 0.5)})(images, training=True).numpy()
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 0.5 * images.std(axis=(1, 2, 3)),
                               rtol=1e-4)
    out = P.FixedColor({"saturation": (0.0, 0.0)}, clip=True)(images, training=True).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)  # grey
    grey = images[..., :1]  # saturation is skipped on 1-channel images
    np.testing.assert_array_equal(P.FixedColor({"saturation": (0.0, 0.0)})(grey, training=True),
                                  grey)
    factor = _policy(brightness=(2.0, 2.0))
    factor["brightness"]["unit"] = "brightness factor"  # as NoiseAugmenter.policy() says
    np.testing.assert_allclose(P.policy_to_layers(factor)(images, training=True), 2 * images,
                               atol=1e-6)


def test_zero_policy_and_inference_are_identity():
    images = _images()
    zero = P.policy_from_factors(saturation=0.0)
    front = P.policy_to_layers(zero, seed=0)
    assert front.affine.ops == () and front.color.ops == ()
    np.testing.assert_array_equal(front(images, training=True), images)
    # An explicit zero range still warps, exactly by the identity.
    exact = P.FixedAffine({"rotate": (0.0, 0.0), "translate_x": (0.0, 0.0)})
    np.testing.assert_allclose(exact(images, training=True), images, atol=1e-6)
    busy = P.policy_to_layers(P.policy_from_factors(rotate=30, brightness=0.2, flip=True))
    np.testing.assert_array_equal(busy(images, training=False), images)
    np.testing.assert_array_equal(busy(images), images)


def test_seed_reproducible():
    images = _images()
    pol = P.policy_from_factors(rotate=20, translate=0.1, contrast=0.3, saturation=0.2)
    a, b = P.policy_to_layers(pol, seed=7), P.policy_to_layers(pol, seed=7)
    first = a(images, training=True)
    np.testing.assert_array_equal(first, b(images, training=True))
    assert not np.allclose(first, a(images, training=True))  # a new draw per call
    assert not np.allclose(first, P.policy_to_layers(pol, seed=8)(images, training=True))


def test_get_config_round_trip(tmp_path):
    pol = P.policy_from_factors(rotate=10, scale=0.1, brightness=0.1, flip=True)
    front = P.policy_to_layers(pol, seed=1, fill_mode="constant")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(front))
    assert isinstance(clone, P.FrozenPolicy) and clone.get_config() == front.get_config()
    for a, b in [(front.affine, clone.affine), (front.color, clone.color)]:
        assert a.get_config() == b.get_config()
        assert type(a).from_config(a.get_config()).get_config() == a.get_config()
    images = _images()
    np.testing.assert_array_equal(front(images, training=True), clone(images, training=True))
    P.save_policy(pol, tmp_path / "sub" / "policy.json")
    assert P.load_policy(tmp_path / "sub" / "policy.json") == pol


def test_bad_policies():
    with pytest.raises(ValueError, match="Unknown policy op"):
        P.split_policy(_policy(rotate=(0, 1)) | {"hue": {"low": 0, "high": 0}})
    with pytest.raises(ValueError, match="low"):
        P.split_policy({"rotate": {"max": 3}})
    with pytest.raises(ValueError, match="> 0"):
        P.FixedAffine({"scale_x": (0.0, 1.0)})


def test_learned_policy_freezes():
    augmenter = augment.build_augmenter(color=True, seed=0)
    augmenter.build((None, 8, 8, 3))
    for layer in augmenter.augmenters:
        layer.set_half_widths(0.1)
    front = P.policy_to_layers(augmenter.policy(), seed=0)
    assert len(front.affine.ops) == 6 and len(front.color.ops) == 3
    assert front(_images(4, 8, 3), training=True).shape == (4, 8, 8, 3)


def test_in_dataset_map_and_model():
    images = _images(32, 8, 1)
    labels = np.arange(32) % 2
    front = P.policy_to_layers(P.policy_from_factors(rotate=15, translate=0.1, contrast=0.2),
                               seed=0)
    unbatched = tf.data.Dataset.from_tensor_slices(images).map(
        lambda x: front(x, training=True))
    assert next(iter(unbatched)).shape == (8, 8, 1)
    assert front(tf.cast(images, tf.float16), training=True).dtype == tf.float16
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).map(
        lambda x, y: (front(x, training=True), y))
    batch = next(iter(ds))[0]
    assert batch.shape == (8, 8, 8, 1) and not np.allclose(batch, images[:8])

    inputs = keras.Input((8, 8, 1))
    x = P.policy_to_layers(P.policy_from_factors(rotate=15, brightness=0.1), seed=0)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Inference skips the front end: predictions are deterministic.
    np.testing.assert_array_equal(model.predict(images, verbose=0),
                                  model.predict(images, verbose=0))


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_fit_modes(mode):
    images = _images(16, 8, 3)
    front = P.policy_to_layers(P.policy_from_factors(rotate=15, brightness=0.1, saturation=0.2,
                                                     flip=True), seed=0)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling2D()(front(inputs))))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=mode == "eager", jit_compile=mode == "xla")
    history = model.fit(images, np.arange(16) % 2, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _blob(size=24):
    """A smooth, asymmetric image: a warp's direction and size show in it."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    image = np.exp(-((xx - 0.35) ** 2 + (yy - 0.6) ** 2) / 0.02) + 0.5 * np.exp(
        -((xx - 0.7) ** 2 + (yy - 0.3) ** 2) / 0.01)
    return np.repeat(image[None, :, :, None], 2, 0).astype("float32")


@pytest.mark.parametrize("op, value", [("rotate", 25.0), ("rotate", -40.0), ("scale_x", 1.3),
                                       ("scale_y", 0.8), ("zoom", 1.25), ("translate_x", 0.15),
                                       ("translate_y", -0.2), ("brightness", 0.1),
                                       ("contrast", 1.4)])
def test_keras_native_layers_match_the_frozen_policy(op, value):
    """Each op as Keras' own layer gives dabo-tf's result (a range of one value: exact)."""
    policy = _policy(**{op: (value, value)})
    x = _blob()
    ours = P.policy_to_layers(policy, fill_mode="constant", seed=0)(x, training=True)
    native = P.policy_to_layers(policy, fill_mode="constant", seed=0, keras_native=True)
    assert all(type(layer).__module__.startswith("keras.") for layer in native.layers)
    theirs = native(x, training=True)
    if op in ("brightness", "contrast"):
        ours = tf.clip_by_value(ours, 0.0, 1.0)  # Keras clips to the value range
    np.testing.assert_allclose(theirs, ours, atol=2e-3)
    np.testing.assert_array_equal(native(x, training=False), x)


def test_keras_native_ranges_and_what_has_no_equivalent():
    policy = _policy(rotate=(-20.0, 20.0), scale_x=(0.8, 1.25), translate_y=(-0.1, 0.1),
                     flip=(0.5, 0.5))
    native = P.policy_to_layers(policy, seed=3, keras_native=True)
    kinds = {type(layer).__name__: layer for layer in native.layers}
    assert list(kinds) == ["RandomZoom", "RandomRotation", "RandomTranslation", "RandomFlip"]
    assert kinds["RandomRotation"].factor == pytest.approx((-20 / 360, 20 / 360))
    assert kinds["RandomZoom"].width_factor == pytest.approx((1 / 1.25 - 1, 1 / 0.8 - 1))
    assert kinds["RandomZoom"].height_factor == pytest.approx((0.0, 0.0))
    out = native(_blob(), training=True)
    assert out.shape == (2, 24, 24, 1) and not np.allclose(out, _blob())
    assert isinstance(P.policy_to_layers({}, keras_native=True).layers[0],
                      keras.layers.Identity)
    for bad, fragment in [(_policy(shear=(-0.2, 0.2)), "shear"),
                          (_policy(flip=(0.3, 0.3)), "flip with probability 0.3"),
                          (_policy(contrast=(0.6, 1.1)), "contrast [0.6, 1.1]"),
                          (_policy(contrast=(0.5, 0.9)), "contrast [0.5, 0.9]")]:
        with pytest.raises(ValueError, match=r"No Keras equivalent for .*" + re.escape(fragment)):
            P.policy_to_layers(bad, keras_native=True)


LOAD_SCRIPT = """
import sys
{imports}
model = keras.saving.load_model(sys.argv[1])
import numpy as np
x = np.random.default_rng(0).random((2, 12, 12, 1)).astype("float32")
out = model(x, training=True)
dabo_tf = any(m.startswith("dabo_tf") for m in sys.modules)
print(type(model.layers[1]).__module__, out.shape, dabo_tf)
"""


@pytest.mark.parametrize("keras_native", [True, False])
def test_both_kinds_of_frozen_policy_load_in_a_fresh_process(tmp_path, keras_native):
    import subprocess
    import sys

    front = P.policy_to_layers(_policy(rotate=(-20.0, 20.0), translate_x=(-0.1, 0.1)), seed=0,
                               keras_native=keras_native)
    inputs = keras.Input((12, 12, 1))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(front(inputs)))
    path = tmp_path / "model.keras"
    keras.Model(inputs, outputs).save(path)
    # Keras' layers need only Keras; dabo-tf's register on `import dabo_tf`, before Keras.
    imports = "import keras" if keras_native else "import dabo_tf\nimport keras"
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT.format(imports=imports), str(path)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, shape, dabo_loaded = proc.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert "(2, 3)" in proc.stdout.strip().splitlines()[-1]
    assert module.startswith("keras.") == keras_native
    assert dabo_loaded == str(not keras_native)


def test_the_gate_augments_a_share_of_the_images(tmp_path):
    pol = _policy(rotate=(-40.0, 40.0)) | {"augment": {"low": 0.25, "high": 0.25}}
    layer = augment.policy_to_layers(pol, seed=3)
    x = _images(n=400)
    changed = np.abs(layer(x, training=True).numpy() - x).reshape(400, -1).max(1) > 1e-6
    assert 0.18 < changed.mean() < 0.32
    assert P.split_policy(pol) == ({"rotate": (-40.0, 40.0)}, {}, {})
    P.save_policy(pol, tmp_path / "p.json")
    again = augment.policy_to_layers(P.load_policy(tmp_path / "p.json"), seed=3)
    np.testing.assert_array_equal(again(x, training=True).numpy(),
                                  layer.__class__.from_config(layer.get_config())(
                                      x, training=True).numpy())
    with pytest.raises(ValueError, match="augment"):
        P.split_policy({"augment": {"low": 1.5, "high": 1.5}})
    with pytest.raises(ValueError, match="gate augment"):
        augment.policy_to_keras_layers(pol)
