"""Tests of TrivialAugment, RandAugment and the front-end factory: `dabo_tf.trivial_augment`."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from dabo_tf import config as config_lib
from dabo_tf.augment import policy as policy_lib
from dabo_tf.augment import trivial_augment as T
from dabo_tf.train import augmentation_front_end

GREY = (128, 128, 128)


def _uint8(n=4, size=32, channels=3, low=20, high=200, seed=0):
    return np.random.default_rng(seed).integers(low, high, (n, size, size, channels),
                                                dtype=np.uint8)


def _apply(images_u8, op, level, sign=1.0, **kwargs):
    """Runs TrivialAugment with every image given `op` at `level` (a replayed draw)."""
    layer = T.TrivialAugment(**kwargs)
    n = len(images_u8)
    t = {"op": tf.fill([n], layer.ops.index(op)), "level": tf.fill([n], level),
         "sign": tf.fill([n], float(sign))}
    return layer(tf.constant(images_u8 / 255.0, tf.float32), training=True,
                 transformation=t).numpy()


def _pil(images_u8, fn):
    return np.stack([np.asarray(fn(Image.fromarray(im))) for im in images_u8]) / 255.0


# (op, level, PIL reference of the authors' code at that level, tolerance in uint8 units)
PIL_REFERENCES = [
    ("identity", 7, lambda im: im, 0),
    ("auto_contrast", 0, ImageOps.autocontrast, 1),
    ("equalize", 0, ImageOps.equalize, 0),
    ("solarize", 10, lambda im: ImageOps.solarize(im, 256 - 85), 0),
    ("posterize", 20, lambda im: ImageOps.posterize(im, 4), 0),
    ("color", 5, lambda im: ImageEnhance.Color(im).enhance(0.01 + 5 * 1.99 / 30), 1.5),
    ("contrast", 25, lambda im: ImageEnhance.Contrast(im).enhance(0.01 + 25 * 1.99 / 30), 1),
    ("brightness", 25, lambda im: ImageEnhance.Brightness(im).enhance(0.01 + 25 * 1.99 / 30), 1),
    ("sharpness", 30, lambda im: ImageEnhance.Sharpness(im).enhance(2.0), 1.5),
    ("rotate", 20, lambda im: im.rotate(90), 0),
    ("shear_x", 10, lambda im: im.transform(im.size, Image.AFFINE, (1, 0.33, 0, 0, 1, 0),
                                            fillcolor=GREY), 0),
    ("shear_y", 10, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0.33, 1, 0),
                                            fillcolor=GREY), 0),
    ("translate_x", 4, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 4, 0, 1, 0),
                                               fillcolor=GREY), 0),
    ("translate_y", 4, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, 4),
                                               fillcolor=GREY), 0),
]


@pytest.mark.parametrize("op, level, reference, tol", PIL_REFERENCES,
                         ids=[r[0] for r in PIL_REFERENCES])
def test_op_matches_reference_code(op, level, reference, tol):
    images = _uint8()
    out = _apply(images, op, level)
    np.testing.assert_allclose(out * 255, _pil(images, reference) * 255, atol=tol + 1e-3)


def test_rotate_90_asymmetric_pattern():
    pattern = np.zeros((1, 9, 9, 1), np.uint8)
    pattern[0, 1, 1:7] = 255  # a horizontal bar near the top-left
    pattern[0, 1:4, 1] = 255
    out = _apply(pattern, "rotate", 20, sign=1.0)  # level 20 of 30 = 90 degrees
    np.testing.assert_allclose(out[0, ..., 0], np.rot90(pattern[0, ..., 0]) / 255, atol=1e-6)
    out = _apply(pattern, "rotate", 20, sign=-1.0)
    np.testing.assert_allclose(out[0, ..., 0], np.rot90(pattern[0, ..., 0], -1) / 255,
                               atol=1e-6)


def test_geometric_ops_move_content():
    images = _uint8(2, 32, 1)
    x = images / 255.0
    out = _apply(images, "translate_x", 30, sign=1.0)  # 32 pixels: everything leaves
    np.testing.assert_allclose(out, 128 / 255, atol=1e-6)
    out = _apply(images, "translate_x", 15, sign=-1.0)  # 16 pixels to the right
    np.testing.assert_allclose(out[:, :, 16:], x[:, :, :16], atol=1e-6)
    np.testing.assert_allclose(out[:, :, :16], 128 / 255, atol=1e-6)
    out = _apply(images, "translate_y", 15, sign=1.0, fill_mode="wrap")
    np.testing.assert_allclose(out, np.roll(x, -16, axis=1), atol=1e-6)
    out = _apply(images, "shear_x", 30, sign=1.0)  # x_in = x + 0.99 y, about the top-left
    np.testing.assert_allclose(out[:, 0], x[:, 0], atol=1e-6)
    np.testing.assert_allclose(out[:, 10, :12], x[:, 10, 10:22], atol=1e-6)
    # Translation scales with the size: 16 pixels at 32 are 8 pixels at 16.
    small = _uint8(1, 16, 1)
    out = _apply(small, "translate_x", 15, sign=-1.0)
    np.testing.assert_allclose(out[:, :, 8:], small[:, :, :8] / 255, atol=1e-6)


def test_pixel_ops_do_what_they_name():
    images = _uint8(4, 16, 3, low=60, high=180)
    x = images / 255.0
    out = _apply(images, "solarize", 15)  # threshold 128
    np.testing.assert_allclose(out, np.where(images >= 128, 1 - x, x), atol=1e-6)
    assert len(np.unique(_apply(images, "posterize", 30))) <= 4  # 2 bits
    stretched = _apply(images, "auto_contrast", 0)
    np.testing.assert_allclose(stretched.min(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(stretched.max(axis=(1, 2)), 1.0, atol=1e-6)
    dull = _uint8(2, 32, 1, low=100, high=132)  # all values in one quarter of [0, 1]
    flat = _apply(dull, "equalize", 0)
    hist = np.histogram(flat, bins=4, range=(0, 1))[0] / flat.size
    assert flat.min() == 0.0 and flat.max() == 1.0 and hist.min() > 0.15, hist  # spread out
    assert _apply(images, "brightness", 30).mean() > x.mean() > _apply(images, "brightness",
                                                                        5).mean()
    assert _apply(images, "contrast", 30).std() > x.std() > _apply(images, "contrast", 5).std()
    sat = lambda y: np.abs(y - y.mean(-1, keepdims=True)).mean()  # noqa: E731
    assert sat(_apply(images, "color", 30)) > sat(x) > sat(_apply(images, "color", 5))
    edges = lambda y: np.abs(np.diff(y, axis=2)).mean()  # noqa: E731
    assert edges(_apply(images, "sharpness", 30)) > edges(x) > edges(
        _apply(images, "sharpness", 0))


def test_grayscale_images():
    images = _uint8(3, 16, 1)
    np.testing.assert_allclose(_apply(images, "color", 30), images / 255, atol=1e-6)
    out = T.TrivialAugment(seed=0)(tf.constant(images / 255, tf.float32), training=True)
    assert out.shape == (3, 16, 16, 1)


def test_op_frequencies_uniform():
    layer = T.TrivialAugment(seed=1)
    t = layer.get_random_transformation(tf.zeros([14000, 4, 4, 1]))
    counts = np.bincount(t["op"].numpy(), minlength=14)
    np.testing.assert_allclose(counts / 14000, 1 / 14, atol=0.01)
    levels = np.bincount(t["level"].numpy(), minlength=31)
    assert len(levels) == 31 and levels.min() > 0.6 * 14000 / 31
    assert abs(np.mean(t["sign"].numpy())) < 0.05


def test_seed_training_and_config():
    images = tf.constant(_uint8(8, 16, 3) / 255, tf.float32)
    a, b = T.TrivialAugment(seed=3), T.TrivialAugment(seed=3)
    first = a(images, training=True)
    np.testing.assert_array_equal(first, b(images, training=True))
    assert not np.allclose(first, a(images, training=True))
    np.testing.assert_array_equal(a(images, training=False), images)
    np.testing.assert_array_equal(a(images), images)
    layer = T.TrivialAugment(ops=("identity", "rotate"), num_magnitude_bins=11, seed=2,
                             interpolation="bilinear", fill_mode="reflect")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, T.TrivialAugment) and clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(images, training=True), layer(images, training=True))
    with pytest.raises(ValueError, match="subset"):
        T.TrivialAugment(ops=("cutout",))


def test_dataset_map_and_float16():
    images = (_uint8(8, 16, 3) / 255).astype("float32")
    layer = T.TrivialAugment(seed=0)
    ds = tf.data.Dataset.from_tensor_slices(images).map(lambda x: layer(x, training=True))
    assert next(iter(ds)).shape == (16, 16, 3)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(4).map(
        lambda x: layer(x, training=True))
    assert next(iter(ds)).shape == (4, 16, 16, 3)
    assert layer(tf.cast(images, tf.float16), training=True).dtype == tf.float16


@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_on_unit_range(channels):
    images = tf.constant(_uint8(8, 16, channels) / 255, tf.float32)
    layer = T.randaugment_layer(num_ops=2, factor=0.5, seed=0)
    assert layer.value_range == (0, 1) and layer.num_ops == 2
    out = layer(images, training=True).numpy()
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(layer(images, training=False), images)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(4).map(
        lambda x: layer(x, training=True))
    assert next(iter(ds)).shape == (4, 16, 16, channels)


def test_front_end_factory(tmp_path):
    config = config_lib.Config(seed=0, randaugment_num_ops=1, randaugment_factor=0.3)
    images = tf.constant(_uint8(4, 16, 1) / 255, tf.float32)
    ta = augmentation_front_end("trivialaugment", config, (16, 16, 1))
    ra = augmentation_front_end("randaugment", config, (16, 16, 1))
    assert isinstance(ta, T.TrivialAugment) and ra.num_ops == 1 and ra.factor == (0, 0.3)
    pol = policy_lib.policy_from_factors(rotate=10, brightness=0.1)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(pol))
    for front in (augmentation_front_end("policy", config, (16, 16, 1), policy=pol),
                  augmentation_front_end(str(path), config, (16, 16, 1))):
        assert isinstance(front, policy_lib.FrozenPolicy)
        assert front(images, training=True).shape == images.shape
    none = augmentation_front_end("none", config, (16, 16, 1))
    np.testing.assert_array_equal(none(images, training=True), images)
    with pytest.raises(ValueError, match="Unknown front end"):
        augmentation_front_end("autoaugment", config, (16, 16, 1))

    inputs = keras.Input((16, 16, 1))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(ta(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_xla_matches_eager():
    images = tf.constant(_uint8(28, 16, 3, low=0, high=256) / 255, tf.float32)
    layer = T.TrivialAugment(seed=0)
    n = tf.range(28)
    t = {"op": n % 14, "level": n % 31, "sign": tf.where(n % 2 == 0, 1.0, -1.0)}
    compiled = tf.function(lambda x: layer(x, training=True, transformation=t),
                           jit_compile=True)
    np.testing.assert_allclose(compiled(images), layer(images, training=True, transformation=t),
                               atol=1e-6)
