"""Tests of dabo_tf.models: every classifier builds and maps [0, 1] images to logits."""

import keras
import numpy as np
import pytest

from dabo_tf import models

# name -> input shape used in the tests (the big models only at CIFAR size, one forward).
INPUT_SHAPES = {
    "small_cnn": (16, 16, 1),
    "tiny_cnn": (16, 16, 3),
    "resnet18": (16, 16, 3),
    "resnet18_imagenet": (32, 32, 3),
    "wrn28_10": (32, 32, 3),
    "wrn40_2": (16, 16, 3),
    "resnet50": (32, 32, 3),
}


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_every_model_is_tested():
    assert set(INPUT_SHAPES) == set(models.MODELS)


@pytest.mark.parametrize("name", models.MODELS)
def test_build_and_forward_gives_logits(name):
    shape = INPUT_SHAPES[name]
    model = models.build_classifier(name, shape, 7, mean=[0.4] * shape[-1], std=0.2, seed=1)
    assert model.name == name
    assert isinstance(model.layers[1], keras.layers.Normalization)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    logits = model(x, training=False)
    assert tuple(logits.shape) == (2, 7)
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))


def test_normalization_layer_uses_mean_and_std():
    model = models.build_classifier("tiny_cnn", (8, 8, 3), 3, mean=[0.1, 0.5, 0.9],
                                    std=[0.1, 0.2, 0.4])
    norm = keras.Model(model.input, model.get_layer("normalization").output)
    x = np.ones((1, 8, 8, 3), np.float32) * np.array([0.2, 0.5, 0.5], np.float32)
    out = np.asarray(norm(x))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 0.0, -1.0], atol=1e-5)


def test_default_normalization_and_scalar_stats():
    model = models.build_classifier("tiny_cnn", (8, 8, 2), 3)
    norm = keras.Model(model.input, model.get_layer("normalization").output)
    out = np.asarray(norm(np.full((1, 8, 8, 2), 0.75, np.float32)))
    np.testing.assert_allclose(out, 1.0, atol=1e-5)  # (0.75 - 0.5) / 0.25


@pytest.mark.parametrize("name, expected", [("resnet18", 11_173_962), ("wrn28_10", 36_479_194)])
def test_parameter_counts_match_reference(name, expected):
    # Trainable counts of the reference PyTorch models (kuangliu ResNet18, WRN-28-10) on
    # CIFAR-10; BatchNorm moving statistics come on top in Keras' count_params().
    model = models.build_classifier(name, (32, 32, 3), 10)
    assert _trainable_count(model) == expected
    assert model.count_params() == pytest.approx(expected, rel=0.002)
    if name == "wrn28_10":  # dropout 0.3 as in the paper's early code
        rates = {layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
        assert rates == {0.3}


def test_small_cnn_size_and_wrn_dropout_option():
    assert models.build_classifier("small_cnn", (32, 32, 3), 10).count_params() < 100_000
    wrn = models.build_classifier("wrn40_2", (16, 16, 3), 10, dropout=0.3)
    rates = {layer.rate for layer in wrn.layers if isinstance(layer, keras.layers.Dropout)}
    assert rates == {0.3}
    assert not any(isinstance(layer, keras.layers.Dropout)
                   for layer in models.build_classifier("wrn40_2", (16, 16, 3), 10).layers)


def test_resnet18_variants_stems():
    cifar = models.build_classifier("resnet18", (32, 32, 3), 10)
    imagenet = models.build_classifier("resnet18_imagenet", (64, 64, 3), 10)
    assert cifar.get_layer("stem_conv").kernel.shape[:2] == (3, 3)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in cifar.layers)
    assert imagenet.get_layer("stem_conv").kernel.shape[:2] == (7, 7)
    assert imagenet.get_layer("stem_conv").strides == (2, 2)
    assert imagenet.get_layer("stem_pool").output.shape[1:3] == (16, 16)


def test_wide_resnet_general_and_errors():
    model = models.wide_resnet(16, 2, 0.0, input_shape=(16, 16, 3), num_classes=5, seed=0)
    assert model.name == "wrn16_2"
    assert model(np.zeros((1, 16, 16, 3), np.float32)).shape == (1, 5)
    assert models.build_classifier("wrn10_1", (8, 8, 1), 2).name == "wrn10_1"
    with pytest.raises(ValueError, match="Received: depth=27"):
        models.wide_resnet(27, 2, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="Received: name='vgg99'"):
        models.build_classifier("vgg99", (16, 16, 3), 10)


def test_seed_makes_initialisation_deterministic():
    def weights(seed):
        return [np.asarray(w) for w in models.build_classifier(
            "small_cnn", (16, 16, 3), 4, seed=seed).weights]

    a, b, c = weights(5), weights(5), weights(6)
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a, c, strict=True))
    model = models.build_classifier("resnet18", (16, 16, 3), 4, seed=5)
    k1 = np.asarray(model.get_layer("stage1_block1_1_conv").kernel)
    k2 = np.asarray(model.get_layer("stage1_block1_2_conv").kernel)
    assert not np.array_equal(k1, k2)  # each layer gets its own seed


def test_tiny_cnn_batchnorm_behaviour():
    model = models.build_classifier("tiny_cnn", (8, 8, 3), 3, seed=0)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) == 2
    x = np.random.default_rng(1).random((8, 8, 8, 3), dtype=np.float32)
    moving_mean = np.asarray(bn[0].moving_mean).copy()
    train_out = np.asarray(model(x, training=True))
    infer_out = np.asarray(model(x, training=False))
    assert not np.allclose(train_out, infer_out)
    assert not np.allclose(np.asarray(bn[0].moving_mean), moving_mean)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18"])
def test_float32_logits_under_mixed_precision(mixed_precision, name):
    model = models.build_classifier(name, (16, 16, 3), 5)
    assert model.get_layer("logits").dtype_policy.compute_dtype == "float32"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[0].compute_dtype == "float16"
    logits = model(np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32))
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))


def test_saved_model_round_trip_keeps_normalization(tmp_path):
    model = models.build_classifier("tiny_cnn", (8, 8, 1), 3, mean=0.3, std=0.1, seed=0)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(2).random((2, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
