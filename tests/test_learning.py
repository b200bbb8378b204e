"""DABO learns the augmentation a known shift asks for (rotated validation digits)."""

import keras
import numpy as np

import dabo_tf
from dabo_tf import augment, data, models

SIZE = 16
TRUE_DEGREES = 40.0


def test_dabo_recovers_the_rotation_range_of_rotated_validation_data():
    # Training digits upright; validation and test rotated by U(-40, 40) degrees.
    splits = data.load("digits", image_size=SIZE, val_fraction=0.2, seed=0,
                       eval_shift=f"rotate:{TRUE_DEGREES:g}")
    train = data.make_pipeline(splits.x_train, splits.y_train, 64, training=True, seed=0)
    val = data.make_pipeline(splits.x_val, splits.y_val, 64, training=True, seed=1)
    test = data.make_pipeline(splits.x_test, splits.y_test, 256, training=False)
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

    # The library's defaults (centred log half-widths from a twentieth of each op's limit,
    # the normalised look-ahead, mirrored pairs, Adam 0.03); XLA makes the run
    # bit-reproducible.
    keras.utils.set_random_seed(0)
    augmenter = augment.Augmenter([augment.LearnedAffine(ops=("rotate",), fill_mode="constant",
                                                         seed=1)])
    model = dabo_tf.DaboModel(classifier(), augmenter)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=loss,
                  metrics=["accuracy"], jit_compile=True)
    start = augmenter.policy()["rotate"]
    assert start["low"] == -start["high"] and abs(start["high"] - 9.0) < 1e-3  # small, centred
    history = model.fit(data.with_validation_stream(train, val), epochs=epochs, verbose=0)
    dabo_acc = model.evaluate(test, verbose=0)[1]
    learned = augmenter.policy()["rotate"]
    print(f"no augmentation {plain_acc:.3f}, DABO {dabo_acc:.3f}, learned rotation "
          f"[{learned['low']:.1f}, {learned['high']:.1f}] degrees (truth +-{TRUE_DEGREES:g}); "
          f"per epoch {np.round(history.history['aug_rotate_high'], 1).tolist()}")
    assert learned["low"] == -learned["high"]
    assert 0.6 * TRUE_DEGREES <= learned["high"] <= 1.4 * TRUE_DEGREES
    assert dabo_acc >= plain_acc + 0.10
