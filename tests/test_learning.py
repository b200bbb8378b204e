"""DABO learns the augmentation the validation data asks for (rotated digits)."""

import keras
import numpy as np
import tensorflow as tf

import dabo_tf
from dabo_tf import augment, data, models, warp

SIZE = 16


def rotate(images, seed, max_degrees=40.0):
    angles = np.radians(np.random.default_rng(seed).uniform(-max_degrees, max_degrees,
                                                            len(images)))
    m = warp.affine_matrix(SIZE, SIZE, rotation=angles)
    return warp.projective_warp(images.astype(np.float32) / 255.0,
                                warp.matrices_to_transforms(m), fill_mode="constant").numpy()


def test_dabo_learns_rotation_from_rotated_validation_data():
    splits = data.load("digits", image_size=SIZE, val_fraction=0.2, seed=0)
    x_train, y_train = splits.x_train, splits.y_train  # upright
    x_val, y_val = rotate(splits.x_val, 1), splits.y_val  # rotated by +-40 degrees
    x_test, y_test = rotate(splits.x_test, 2), splits.y_test
    train = data.make_pipeline(x_train, y_train, 64, training=True, seed=0)
    val = data.make_pipeline(x_val, y_val, 64, training=True, seed=1)
    test = data.make_pipeline(x_test, y_test, 256, training=False)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    epochs = 15

    def classifier():
        return models.build_classifier("small_cnn", (SIZE, SIZE, 1), 10, mean=splits.mean,
                                       std=splits.std, seed=0)

    keras.utils.set_random_seed(0)
    plain = classifier()
    plain.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss, metrics=["accuracy"],
                  jit_compile=True)
    plain.fit(train, epochs=epochs, verbose=0)
    plain_acc = plain.evaluate(test, verbose=0)[1]

    keras.utils.set_random_seed(0)
    augmenter = augment.Augmenter([augment.LearnedAffine(ops=("rotate",), fill_mode="constant",
                                                         seed=1)])
    model = dabo_tf.DaboModel(classifier(), augmenter)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  augmenter_optimizer=keras.optimizers.Adam(0.02), loss=loss,
                  metrics=["accuracy"], jit_compile=True)
    assert augmenter.policy()["rotate"]["high"] == 0.0  # identity at start
    history = model.fit(data.with_validation_stream(train, val), epochs=epochs, verbose=0)
    dabo_acc = model.evaluate(test, verbose=0)[1]
    spread = augmenter.policy()["rotate"]
    half_range = (spread["high"] - spread["low"]) / 2
    print(f"no augmentation {plain_acc:.3f}, DABO {dabo_acc:.3f}, learned rotation "
          f"[{spread['low']:.1f}, {spread['high']:.1f}] degrees; per epoch "
          f"{np.round(history.history['aug_rotate_deg'], 1).tolist()}")
    assert half_range > 15.0
    assert dabo_acc >= plain_acc + 0.10
    assert tf.math.is_finite(history.history["loss"][-1])
