"""`DaboModel` and the unrolled hypergradient: correctness, BatchNorm, XLA, precision, guards."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import dabo_tf
from dabo_tf import augment, bilevel

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_classifier(shape=(8, 8, 3), classes=3, dtype=None, batchnorm=True, seed=0):
    """A conv-BN-dense classifier; `dtype=None` follows the global (mixed) precision policy."""
    inputs = keras.Input(shape, dtype=dtype)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", dtype=dtype,
                            kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    if batchnorm:
        h = keras.layers.BatchNormalization(momentum=0.9, dtype=dtype)(h)
    h = keras.layers.GlobalAveragePooling2D(dtype=dtype)(h)
    outputs = keras.layers.Dense(classes, dtype=dtype,
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(h)
    return keras.Model(inputs, outputs)


def batch(n=8, shape=(8, 8, 3), classes=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.random((n, *shape)).astype(dtype),
            rng.integers(0, classes, n).astype(np.int32))


def stream(n=32, batch_size=8, seed=0):
    x, y = batch(n, seed=seed)
    xv, yv = batch(n, seed=seed + 1)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(batch_size, drop_remainder=True)
    return dabo_tf.data.with_validation_stream(train, val)


def learned_augmenter(width):
    """Affine and colour ranges of half-width `width` (0: the identity, with no hypergradient)."""
    return augment.Augmenter(
        [augment.LearnedAffine(init_magnitude=width, init_relative=False,
                               magnitude_scale="linear", seed=1),
         augment.LearnedColor(init_magnitude=width, init_relative=False,
                              magnitude_scale="linear", seed=2)])


def dabo_model(classifier=None, augmenter=None, **kwargs):
    kwargs.setdefault("antithetic", False)  # exact comparisons need the whole batch
    classifier = classifier or tiny_classifier()
    augmenter = augmenter or learned_augmenter(0.1)
    return dabo_tf.DaboModel(classifier, augmenter, **kwargs)


def set_augmenter(model, scale=0.1, seed=5):
    rng = np.random.default_rng(seed)
    for w in model.augmenter.trainable_weights:
        w.assign(scale * rng.standard_normal(w.shape).astype(w.dtype))


@pytest.mark.parametrize("inner_steps, head", [(1, 0), (2, 0), (1, 1)])
def test_hypergradient_matches_finite_differences(inner_steps, head):
    dtype = "float64"
    classifier = tiny_classifier(dtype=dtype)
    augmenter = augment.Augmenter([augment.LearnedAffine(seed=1, dtype=dtype),
                                   augment.LearnedColor(seed=2, dtype=dtype)], dtype=dtype)
    # The exact truncated problem (the paper's step); the normalised one has its own test.
    # With `head` the look-ahead steps the last layer only (the Dense; BatchNorm's and the
    # convolution's weights held).
    model = dabo_tf.DaboModel(classifier, augmenter, inner_lr=0.5, inner_steps=inner_steps,
                              normalize_lookahead=False, lookahead_layers=head)
    moved = {id(v) for v in classifier.layers[-1].trainable_weights} if head else None
    assert model.get_config()["lookahead_layers"] == head
    with pytest.raises(ValueError, match="Received: lookahead_layers=1, inner_steps=2"):
        dabo_model(lookahead_layers=1, inner_steps=2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    set_augmenter(model)
    x, y = batch(dtype=np.float64)
    xv, yv = batch(seed=1, dtype=np.float64)
    t = augmenter.get_random_transformation(tf.constant(x))  # fixed augmentation noise

    result = model.hypergradient(x, y, xv, yv, transformation=t)
    analytic = np.concatenate([h.numpy().ravel() for h in result.hypergradients])

    weights = [v.numpy() for v in classifier.trainable_variables]
    non_trainable = [v.numpy() for v in classifier.non_trainable_variables]

    def objective():  # L_val(w_k(theta)), written out independently of the library
        w = [tf.constant(v) for v in weights]
        images = augmenter(x, training=True, transformation=t)
        for _ in range(inner_steps):
            with tf.GradientTape() as tape:
                tape.watch(w)
                logits, _ = classifier.stateless_call(w, non_trainable, images, training=True)
                train_loss = loss(y, logits)
            w = [wi - 0.5 * gi if moved is None or id(var) in moved else wi
                 for wi, gi, var in zip(w, tape.gradient(train_loss, w),
                                        classifier.trainable_variables)]
        logits, _ = classifier.stateless_call(w, non_trainable, xv, training=True)
        return float(loss(yv, logits))

    numeric = []
    eps = 1e-6
    for var in augmenter.trainable_variables:
        base = var.numpy()
        for i in range(base.size):
            for sign in (1, -1):
                v = base.copy().ravel()
                v[i] += sign * eps
                var.assign(v.reshape(base.shape))
                numeric.append(objective())
            var.assign(base)
    numeric = (np.array(numeric[::2]) - np.array(numeric[1::2])) / (2 * eps)
    assert np.abs(analytic).max() > 1e-4
    rel = np.abs(analytic - numeric).max() / np.abs(numeric).max()
    assert rel < 1e-4, (analytic, numeric)


def test_exact_batchnorm_moments_only_inside_their_context():
    """Second derivatives through BatchNorm: exact inside the context, Keras' own outside."""
    from dabo_tf.batchnorm import exact_batchnorm_moments, use_exact_batchnorm_moments

    patched = use_exact_batchnorm_moments(tiny_classifier())
    plain = tiny_classifier()  # same seeds, same weights, Keras' BatchNormalization
    x, y = batch()
    x = tf.constant(x)

    def mixed_second_derivative(classifier):  # d/dx (v . grad_w L), v = grad_w L
        w = [tf.convert_to_tensor(v) for v in classifier.trainable_variables]
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(w)
                logits, _ = classifier.stateless_call(
                    w, [v.value for v in classifier.non_trainable_variables], x, training=True)
                loss = LOSS(y, logits)
            g = inner.gradient(loss, w)
            dot = tf.add_n([tf.reduce_sum(gi * tf.stop_gradient(gi)) for gi in g])
        return outer.gradient(dot, x).numpy()

    keras_own = mixed_second_derivative(plain)
    np.testing.assert_allclose(mixed_second_derivative(patched), keras_own, rtol=1e-5,
                               atol=1e-7)
    with exact_batchnorm_moments():
        exact = mixed_second_derivative(patched)
    assert np.abs(exact - keras_own).max() > 1e-2 * np.abs(exact).max()


def test_virtual_passes_leave_batchnorm_statistics_alone():
    model = dabo_model(augmenter=learned_augmenter(0.0))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    x, y = batch()
    xv, _ = batch(seed=1)
    xv = xv * 50.0 + 10.0  # a validation batch with wildly different statistics
    yv = y
    classifier = model.classifier
    before = [v.numpy() for v in classifier.non_trainable_variables]
    # The augmenter is the identity, so the real pass sees x itself.
    _, expected = classifier.stateless_call(
        [v.numpy() for v in classifier.trainable_variables], before, x, training=True)
    model.train_on_batch(((x, y), (xv, yv)))
    after = [v.numpy() for v in classifier.non_trainable_variables]
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(after, before))
    for got, want in zip(after, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_classifier_update_is_the_training_gradient():
    model = dabo_model(augmenter=learned_augmenter(0.0))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    x, y = batch()
    xv, yv = batch(seed=1)
    w0 = [v.numpy() for v in model.classifier.trainable_variables]
    with tf.GradientTape() as tape:
        loss = LOSS(y, model.classifier(x, training=True))
    grads = tape.gradient(loss, model.classifier.trainable_variables)
    for v, w in zip(model.classifier.trainable_variables, w0):
        v.assign(w)
    model.train_on_batch(((x, y), (xv, yv)))
    for v, w, g in zip(model.classifier.trainable_variables, w0, grads):
        np.testing.assert_allclose(v.numpy(), w - 0.1 * g.numpy(), atol=1e-6)


def fit_weights(jit_compile, **kwargs):
    keras.utils.set_random_seed(0)
    model = dabo_model(**kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  augmenter_optimizer=keras.optimizers.SGD(0.5), loss=LOSS,
                  metrics=["accuracy"], jit_compile=jit_compile)
    history = model.fit(stream(), epochs=2, verbose=0)
    return [w.numpy() for w in model.weights], history.history, model


@pytest.mark.parametrize("every", [1, 2])
def test_jit_compile_matches_eager_graph(every):
    xla, h_xla, model = fit_weights(True, augmenter_update_every=every)
    graph, h_graph, _ = fit_weights(False, augmenter_update_every=every)
    for a, b in zip(xla, graph):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(h_xla["loss"], h_graph["loss"], rtol=1e-4)
    np.testing.assert_allclose(h_xla["lookahead_val_loss"], h_graph["lookahead_val_loss"],
                               rtol=1e-4)
    assert h_xla["hypergrad_norm"][0] > 0
    assert model.jit_compile is True
    if every > 1:
        # Both kinds of step are XLA programs of their own (an XLA conditional around them
        # made steps about 25x slower on CPU), and the model saves as compiled with XLA.
        assert all(f._jit_compile for f in model._xla_steps)
        assert model.get_compile_config()["jit_compile"] is True


@pytest.mark.parametrize("every", [1, 2])
def test_xla_training_is_bit_reproducible(every):
    """Same seed, same weights to the last bit: what the README promises for --jit_compile.

    (Without XLA, `small_cnn`'s hypergradient varies in its last bits between runs on CPU:
    see the README's "Reproducibility". This tiny model happens not to show it.)
    """
    first, h_first, _ = fit_weights(True, augmenter_update_every=every)
    second, h_second, _ = fit_weights(True, augmenter_update_every=every)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert h_first == h_second


def test_logged_metrics_and_evaluation_without_augmentation():
    model = dabo_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, metrics=["accuracy"],
                  jit_compile=False)
    set_augmenter(model, 0.3)
    x, y = batch(16)
    history = model.fit(stream(), epochs=1, verbose=0,
                        validation_data=tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    logs = history.history
    for key in ("loss", "accuracy", "lookahead_val_loss", "hypergrad_norm", "skipped_steps",
                "aug_rotate_low", "aug_rotate_high", "aug_brightness_high", "val_loss",
                "val_accuracy"):
        assert key in logs, key
    assert "val_hypergrad_norm" not in logs
    # evaluate/predict use the classifier alone, without augmentation.
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               model.classifier.predict(x, verbose=0), atol=1e-6)
    model.classifier.compile(loss=LOSS, metrics=["accuracy"])
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0),
                               model.classifier.evaluate(x, y, verbose=0), rtol=1e-5)


def augmenter_changes(steps, **kwargs):
    """`(model, [whether step i changed the augmenter])` over `steps` steps of one batch."""
    model = dabo_model(**kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS,
                  augmenter_optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
    set_augmenter(model)  # a zero-width range gets no hypergradient
    (x, y), (xv, yv) = batch(), batch(seed=1)
    snapshots = []
    for _ in range(steps):
        snapshots.append([w.numpy().copy() for w in model.augmenter.trainable_weights])
        model.train_on_batch(((x, y), (xv, yv)))
    snapshots.append([w.numpy().copy() for w in model.augmenter.trainable_weights])
    return model, [any(np.abs(a - b).max() > 0 for a, b in zip(s0, s1))
                   for s0, s1 in zip(snapshots, snapshots[1:])]


def test_augmenter_update_every_k_steps():
    _, changed = augmenter_changes(4, augmenter_update_every=2)
    assert changed == [True, False, True, False]


@pytest.mark.parametrize("every,warmup,want", [(1, 3, [False, False, False, True, True]),
                                                (2, 1, [False, False, True, False, True])])
def test_augmenter_warmup_steps(every, warmup, want):
    model, changed = augmenter_changes(5, augmenter_update_every=every,
                                       augmenter_warmup_steps=warmup)
    assert changed == want
    assert int(model.augmenter_optimizer.iterations) == sum(want)


def test_normalized_lookahead_equals_finite_differences_of_its_objective():
    # A toy in float64: augmented data a = theta * c, train loss 0.5 ||w - a||^2 (g = w - a),
    # validation loss sum(b * w) + 0.5 ||w||^2. The normalised look-ahead is
    # w' = w - lr * ||g_0|| * g(theta) / ||g(theta)||, with ||g_0|| held at theta_0.
    rng = np.random.default_rng(0)
    w0, c, b = (tf.constant(rng.standard_normal(5)) for _ in range(3))
    theta = keras.Variable([0.7], dtype="float64")
    lr = 0.3

    def run(normalize):
        return bilevel.unrolled_hypergradient(
            lambda: theta * c, lambda w, a: (0.5 * tf.reduce_sum((w[0] - a) ** 2), None),
            lambda w: tf.reduce_sum(b * w[0]) + 0.5 * tf.reduce_sum(w[0] ** 2), [w0],
            [theta], inner_lr=lr, normalize_lookahead=normalize).hypergradients[0].numpy()

    def objective(t, normalize):
        g, g0 = w0 - t * c, w0 - 0.7 * c
        step = g / tf.norm(g) * tf.norm(g0) if normalize else g
        w = w0 - lr * step
        return float(tf.reduce_sum(b * w) + 0.5 * tf.reduce_sum(w ** 2))

    eps = 1e-6
    for normalize in (False, True):
        fd = (objective(0.7 + eps, normalize) - objective(0.7 - eps, normalize)) / (2 * eps)
        np.testing.assert_allclose(run(normalize), [fd], rtol=1e-4)
    assert abs(run(True)[0] - run(False)[0]) > 1e-2 * abs(run(False)[0])


def test_calibrated_logits_fit_the_best_temperature_and_hold_it_constant():
    rng = np.random.default_rng(0)
    labels = tf.constant(rng.integers(0, 10, 64))
    for scale in (0.3, 20.0):  # underconfident, then overconfident logits
        z = tf.constant(rng.standard_normal((64, 10)) * scale + 1.5 * scale
                        * tf.one_hot(labels, 10).numpy(), tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(z)
            scaled = bilevel.calibrated_logits(z, labels)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, scaled))
        b = float(tf.reduce_sum(scaled * z) / tf.reduce_sum(z * z))
        grid = np.exp(np.linspace(-4.6, 4.6, 921))
        ce = [float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, z * g))) for g in grid]
        np.testing.assert_allclose(b, grid[int(np.argmin(ce))], rtol=0.02)
        assert (b > 1) == (scale < 1)
        # The temperature is a constant: the gradient is b times the scaled softmax's error.
        expected = b * (tf.nn.softmax(scaled) - tf.one_hot(labels, 10, dtype=z.dtype)) / 64
        np.testing.assert_allclose(tape.gradient(loss, z), expected, atol=1e-12)
    for other in (tf.one_hot(labels, 10, dtype=z.dtype), labels[:, None]):
        np.testing.assert_allclose(bilevel.calibrated_logits(z, other), scaled)
    model = dabo_model(calibrate_validation=True)
    assert model.get_config()["calibrate_validation"] is True


def test_whole_step_lookahead_equals_finite_differences_of_its_objective():
    # The toy above, with the classifier's step mixing g(theta) (share 0.25) with a constant
    # gradient r of other images: w' = w - lr * s(theta), s = 0.25 g + 0.75 r, normalised
    # along s, not along g.
    rng = np.random.default_rng(1)
    w0, c, b, r = (tf.constant(rng.standard_normal(5)) for _ in range(4))
    theta = keras.Variable([0.7], dtype="float64")
    lr, share = 0.3, 0.25

    def run(normalize):
        return bilevel.unrolled_hypergradient(
            lambda: theta * c, lambda w, a: (0.5 * tf.reduce_sum((w[0] - a) ** 2), None),
            lambda w: tf.reduce_sum(b * w[0]) + 0.5 * tf.reduce_sum(w[0] ** 2), [w0],
            [theta], inner_lr=lr, normalize_lookahead=normalize,
            rest=(share, [r])).hypergradients[0].numpy()

    def objective(t, normalize):
        s, s0 = (share * (w0 - u * c) + (1 - share) * r for u in (t, 0.7))
        w = w0 - lr * (s / tf.norm(s) * tf.norm(s0) if normalize else s)
        return float(tf.reduce_sum(b * w) + 0.5 * tf.reduce_sum(w ** 2))

    eps = 1e-6
    for normalize in (False, True):
        fd = (objective(0.7 + eps, normalize) - objective(0.7 - eps, normalize)) / (2 * eps)
        np.testing.assert_allclose(run(normalize), [fd], rtol=1e-4)


def test_antithetic_step_trains_on_mirrored_pairs():
    augmenter = augment.Augmenter([augment.LearnedAffine(seed=1), augment.LearnedColor(seed=2),
                                   augment.LearnedFlip(seed=3), augment.LearnedCutout(seed=4)])
    model = dabo_model(augmenter=augmenter, antithetic=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False)
    (x, y), (xv, yv) = batch(), batch(seed=1)
    x2, y2, t = model.antithetic_batch(tf.constant(x[:7]), tf.constant(y[:7]))  # odd: 3 pairs
    assert x2.shape[0] == 6 and np.array_equal(x2[:3], x2[3:]) and np.array_equal(y2[:3], y2[3:])
    np.testing.assert_array_equal(t[0]["noise"][3:], -t[0]["noise"][:3])
    np.testing.assert_allclose(t[2]["gate"][3:], 1.0 - t[2]["gate"][:3])
    np.testing.assert_allclose(t[3]["centre"][3:], 1.0 - t[3]["centre"][:3])
    before = [w.numpy().copy() for w in model.augmenter.trainable_weights]
    logs = model.train_on_batch(((x, y), (xv, yv)), return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["hypergrad_norm"] > 0
    assert all(np.abs(a - w.numpy()).max() > 0
               for a, w in zip(before, model.augmenter.trainable_weights))
    assert dabo_tf.DaboModel.from_config(model.get_config()).antithetic


def test_non_finite_step_is_skipped_and_counted():
    model = dabo_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False)
    (x, y), (xv, yv) = batch(), batch(seed=1)
    before = [w.numpy() for w in model.weights if "seed_generator" not in w.path
              and "iteration" not in w.path]
    xv_bad = xv.copy()
    xv_bad[0, 0, 0, 0] = np.nan
    logs = model.train_on_batch(((x, y), (xv_bad, yv)), return_dict=True)
    assert logs["skipped_steps"] == 1.0
    after = [w.numpy() for w in model.weights if "seed_generator" not in w.path
             and "iteration" not in w.path]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    logs = model.train_on_batch(((x, y), (xv, yv)), return_dict=True)  # resets metrics
    assert logs["skipped_steps"] == 0.0 and np.isfinite(logs["loss"])
    assert any(np.abs(a - w.numpy()).max() > 0 for a, w in zip(
        before, [w for w in model.weights if "seed_generator" not in w.path
                 and "iteration" not in w.path]))


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, every):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = dabo_model(augmenter_update_every=every)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS,
                      augmenter_optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(stream(), epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert np.isfinite(history.history["lookahead_val_loss"]).all()
        assert min(history.history["hypergrad_norm"]) > 0
        assert all(np.abs(w.numpy()).max() > 0 for w in model.augmenter.trainable_weights)
        assert all(w.dtype == "float32" for w in model.augmenter.trainable_weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_hypergradient_stays_float32(policy):
    """Same weights and noise under a mixed policy: by default the bilevel passes compute in
    float32 and the hypergradient equals float32's; with the classifier's own policy
    (`hypergradient_dtype=None`) it only approximates it."""
    x, y = batch(32)
    xv, yv = batch(32, seed=1)

    def hypergradient(name, **kwargs):
        keras.mixed_precision.set_global_policy(name)
        try:
            model = dabo_model(**kwargs)
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss=LOSS)
            set_augmenter(model, 0.3)
            t = model.augmenter.get_random_transformation(tf.constant(x))
            result = model.hypergradient(x, y, xv, yv, transformation=t)
            # The policy is restored after the bilevel passes.
            assert (model.classifier.layers[1].compute_dtype
                    == keras.DTypePolicy(name).compute_dtype)
            return np.concatenate([h.numpy().ravel() for h in result.hypergradients])
        finally:
            keras.mixed_precision.set_global_policy("float32")

    want = hypergradient("float32")
    assert np.linalg.norm(want) > 1e-4
    error = {dtype: np.linalg.norm(hypergradient(policy, hypergradient_dtype=dtype) - want)
             / np.linalg.norm(want) for dtype in ("float32", None)}
    assert error["float32"] < 1e-5, error
    assert 1e-4 < error[None] < 0.5, error  # the mixed passes really ran in low precision


def test_save_and_load_keras_file(tmp_path):
    model = dabo_model(augmenter_update_every=3, inner_steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False)
    model.fit(stream(), epochs=1, verbose=0)
    path = tmp_path / "dabo.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, dabo_tf.DaboModel)
    assert loaded.augmenter_update_every == 3 and loaded.inner_steps == 2
    assert loaded.augmenter.policy() == model.augmenter.policy()
    x, _ = batch()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert loaded.compiled and loaded.augmenter_optimizer is not None
    loaded.fit(stream(), epochs=1, verbose=0)  # trains on after loading


DISTRIBUTED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    if sys.argv[1].startswith("mirrored"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, {tests!r})
    from test_dabo_model import LOSS, dabo_model, stream, tiny_classifier
    from dabo_tf import distribute

    def run(strategy, **kwargs):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = dabo_model(tiny_classifier(batchnorm=False), **kwargs)
            model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=LOSS,
                          augmenter_optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
        history = model.fit(stream(n=48, batch_size=16), epochs=2, verbose=0)
        return {{"history": {{k: [float(v) for v in vs] for k, vs in history.history.items()}},
                "augmenter": [w.numpy().tolist() for w in model.augmenter.trainable_weights],
                "classifier": [w.numpy().tolist() for w in model.classifier.weights]}}

    single = lambda **kw: run(tf.distribute.OneDeviceStrategy("/cpu:0"), **kw)  # noqa: E731
    mirrored = lambda **kw: run(  # noqa: E731
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), **kw)
    result = {{"mirrored": lambda: {{"single": single(), "mirrored": mirrored()}},
               # the look-ahead on the last layer only (its all-reduces cover the head),
               # with the running average of v (its variables updated in replica context)
               "mirrored_head": lambda: {{
                   "single": single(lookahead_layers=1, val_gradient_average=0.9),
                   "mirrored": mirrored(lookahead_layers=1, val_gradient_average=0.9)}},
               "single": single,
               "worker": lambda: run(distribute.make_strategy("multi_worker"))}}[sys.argv[1]]()
    print("RESULT" + json.dumps(result))
""")


def _assert_same_training(got, want):
    for key in ("loss", "lookahead_val_loss", "hypergrad_norm"):
        np.testing.assert_allclose(got["history"][key], want["history"][key], rtol=1e-4,
                                   err_msg=key)
    for a, b in zip(got["augmenter"] + got["classifier"], want["augmenter"] + want["classifier"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert max(np.abs(np.array(a)).max() for a in want["augmenter"]) > 1e-3


@pytest.mark.parametrize("mode", ["mirrored", "mirrored_head"])
def test_mirrored_strategy_matches_single_device(tmp_path, mode):
    script = tmp_path / "distributed.py"
    script.write_text(DISTRIBUTED.format(tests=os.path.dirname(__file__)))
    proc = subprocess.run([sys.executable, str(script), mode], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    _assert_same_training(result["mirrored"], result["single"])


def test_multi_worker_matches_single_device(tmp_path):
    """Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, one CPU replica
    each) train as one process does on the same global batch."""
    import json

    from conftest import free_ports

    script = tmp_path / "distributed.py"
    script.write_text(DISTRIBUTED.format(tests=os.path.dirname(__file__)))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = [subprocess.Popen(
        [sys.executable, str(script), "worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})))
        for i in range(2)]
    single = subprocess.run([sys.executable, str(script), "single"], capture_output=True,
                            text=True, timeout=300)
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert single.returncode == 0, single.stderr[-3000:]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    single = json.loads(single.stdout.split("RESULT", 1)[1])
    for out, _ in outs:
        _assert_same_training(json.loads(out.split("RESULT", 1)[1]), single)


def test_fit_takes_what_keras_users_pass_and_names_the_right_call():
    x, y = batch(48, seed=3)
    xv, yv = batch(16, seed=4)
    model = dabo_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, metrics=["accuracy"],
                  augmenter_optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(x, y, hypergradient_split=0.25, batch_size=8, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
    assert int(model.augmenter_optimizer.iterations) == 36 // 8  # 12 of 48 held out
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8, drop_remainder=True)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(8, drop_remainder=True)
    history = model.fit(train, hypergradient_data=val, validation_data=val, epochs=1,
                        verbose=0)
    assert "val_accuracy" in history.history  # Keras' evaluation, besides the augmenter's
    assert int(model.augmenter_optimizer.iterations) == 36 // 8 + 48 // 8
    model.fit(x, y, hypergradient_data=(xv, yv), batch_size=8, epochs=1, verbose=0)
    for args, kwargs in (((train,), {}), ((x, y), {"validation_split": 0.2}),
                         ((x, y), {}), ((train,), {"validation_data": val})):
        with pytest.raises(ValueError, match=r"hypergradient_data=val_ds.*Received: x="):
            model.fit(*args, epochs=1, verbose=0, **kwargs)
    with pytest.raises(ValueError, match="cannot be combined"):
        model.fit(x, y, hypergradient_split=0.25, validation_split=0.1, verbose=0)
    with pytest.raises(ValueError, match=r"takes \(\(x, y\), \(x_val, y_val\)\)"):
        model.train_step((tf.constant(x[:8]), tf.constant(y[:8])))


@pytest.mark.parametrize("train_unpaired", [True, False])
def test_mirrored_pairs_train_on_the_unpaired_half(train_unpaired):
    # Identity augmentation and no BatchNorm: with the unpaired half trained, a bilevel step
    # is SGD on the whole batch (a pair counts as one image); without, on its first half.
    classifier = tiny_classifier(batchnorm=False)
    reference = keras.models.clone_model(classifier)
    reference.set_weights(classifier.get_weights())
    model = dabo_model(classifier, antithetic=True, train_unpaired=train_unpaired)
    for w in model.augmenter.trainable_weights:
        w.assign(tf.zeros_like(w))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False)
    (x, y), (xv, yv) = batch(), batch(seed=1)
    weights = reference.trainable_variables
    trained = slice(None) if train_unpaired else slice(0, len(x) // 2)
    with tf.GradientTape() as tape:
        loss = LOSS(y[trained], reference(x[trained]))
    grads = tape.gradient(loss, weights)
    model.train_on_batch(((x, y), (xv, yv)))
    for w, before, g in zip(classifier.trainable_variables, weights, grads):
        np.testing.assert_allclose(w.numpy(), before.numpy() - 0.1 * g.numpy(), atol=1e-6)
    assert dabo_tf.DaboModel.from_config(model.get_config()).train_unpaired is train_unpaired


@pytest.mark.parametrize("whole", [False, True])
def test_hypergradient_on_a_sub_batch_steps_the_classifier_on_the_whole_batch(whole):
    # Identity augmentation and no BatchNorm: the classifier's step must be plain SGD on the
    # whole batch, the look-ahead must use the sub-batch's gradient only (or, with
    # lookahead_whole_batch, the whole batch's).
    classifier = tiny_classifier(batchnorm=False)
    reference = keras.models.clone_model(classifier)
    reference.set_weights(classifier.get_weights())
    model = dabo_model(classifier, hypergradient_fraction=0.5, normalize_lookahead=False,
                       inner_lr=0.3, lookahead_whole_batch=whole)
    for w in model.augmenter.trainable_weights:
        w.assign(tf.zeros_like(w))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False)
    (x, y), (xv, yv) = batch(), batch(seed=1)
    weights = reference.trainable_variables

    def gradient(images, labels):
        with tf.GradientTape() as tape:
            loss = LOSS(labels, reference(images))
        return loss, tape.gradient(loss, weights)

    _, g_sub = gradient(x[:4], y[:4])
    loss, g_full = gradient(x, y)
    ahead = [w - 0.3 * g for w, g in zip(weights, g_full if whole else g_sub)]
    lookahead = LOSS(yv, reference.stateless_call(ahead, [], xv)[0])
    logs = model.train_on_batch(((x, y), (xv, yv)), return_dict=True)
    np.testing.assert_allclose(logs["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(logs["lookahead_val_loss"], lookahead, rtol=1e-5)
    for w, before, g in zip(classifier.trainable_variables, weights, g_full):
        np.testing.assert_allclose(w.numpy(), before.numpy() - 0.1 * g.numpy(), atol=1e-6)
    set_augmenter(model)  # away from |0|, where the width's gradient vanishes
    assert model.train_on_batch(((x, y), (xv, yv)), return_dict=True)["hypergrad_norm"] > 0
    restored = dabo_tf.DaboModel.from_config(model.get_config())
    assert restored.hypergradient_fraction == 0.5 and restored.lookahead_whole_batch is whole
    with pytest.raises(ValueError, match="Received: hypergradient_fraction=0"):
        dabo_model(hypergradient_fraction=0)


def test_clean_fraction_trains_the_end_of_each_batch_unaugmented(monkeypatch):
    model = dabo_model(augmenter=learned_augmenter(0.3), antithetic=True, clean_fraction=0.5)
    x, y = batch()
    images = model._frozen_augment(tf.constant(x), model._n_clean(tf.constant(x))).numpy()
    changed = np.abs(images - x).reshape(len(x), -1).max(1) > 1e-6
    assert changed[:4].all() and not changed[4:].any()
    assert model.policy()["augment"]["low"] == 0.5
    assert dabo_tf.dabo_model.policy_logs(model)["aug_augment_probability"] == 0.5
    # A bilevel step: the unpaired half is the clean share, counted on the whole batch.
    seen = []
    plain = model._plain_gradients
    monkeypatch.setattr(model, "_plain_gradients",
                        lambda xr, yr, n_clean=0: seen.append((len(xr), int(n_clean)))
                        or plain(xr, yr, n_clean))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False,
                  run_eagerly=True)
    model.train_on_batch((batch(), batch(seed=1)))
    assert seen == [(4, 4)]
    assert dabo_tf.DaboModel.from_config(model.get_config()).clean_fraction == 0.5
    with pytest.raises(ValueError, match="Received: clean_fraction=0.6"):
        dabo_model(antithetic=True, clean_fraction=0.6)
    assert dabo_model(antithetic=True).clean_fraction == 0.25  # the default
    assert dabo_model(antithetic=False).clean_fraction == 0.0


def test_prior_pull_widens_every_range_by_its_step():
    """One step with `prior_pull` widens each log half-width by `lr * prior_pull` more than
    the same step without it, and a scheduled learning rate scales the pull."""
    x, y = batch()
    xv, yv = batch(seed=1)
    widths = []
    for pull in (0.0, 0.5):
        augmenter = augment.Augmenter([augment.LearnedAffine(init_magnitude=0.1, seed=1),
                                       augment.LearnedColor(init_magnitude=0.1, seed=2)])
        model = dabo_model(augmenter=augmenter, prior_pull=pull, prior_width=float("inf"))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS,
                      augmenter_optimizer=keras.optimizers.Adam(0.02))
        model.train_on_batch(((x, y), (xv, yv)))
        widths.append(np.log(np.concatenate([layer.half_widths().numpy()
                                             for layer in augmenter.parts()])))
    np.testing.assert_allclose(widths[1] - widths[0], 0.02 * 0.5, atol=1e-5)

    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    model = dabo_model(prior_pull=0.5)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss=LOSS,
                  augmenter_optimizer=keras.optimizers.Adam(0.02))
    model.optimizer.iterations.assign(5)  # half way: the learning rate is half its first
    np.testing.assert_allclose(float(model._prior_pull_step()), 0.02 * 0.5 * 0.5, rtol=1e-5)


def test_prior_power_reaches_the_pull_and_older_models_keep_a_gaussian(monkeypatch):
    model = dabo_model(prior_pull=0.5, prior_power=4.0)
    calls = []
    for layer in model._ranged_layers():
        monkeypatch.setattr(layer, "widen", lambda factor, width, power=2.0:
                            calls.append((width, power)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, run_eagerly=True)
    model.train_on_batch((batch(), batch(seed=1)))
    assert calls and set(calls) == {(model.prior_width, 4.0)}
    assert dabo_tf.DaboModel.from_config(model.get_config()).prior_power == 4.0
    config = model.get_config()  # (deserialising consumes the classifier's config)
    del config["prior_power"]  # saved before the option existed: the Gaussian it trained with
    assert dabo_tf.DaboModel.from_config(config).prior_power == 2.0
    with pytest.raises(ValueError, match="Received: prior_power=0"):
        dabo_model(prior_power=0)


def test_val_gradient_average_pulls_back_the_running_mean_of_the_validation_gradients():
    """The hypergradient is linear in v: with the weights held, the averaged model's
    hypergradient is the bias-corrected running mean of the single-batch ones, and a
    non-finite v leaves the average untouched."""
    beta = 0.9
    x, y = batch(8, seed=0)
    vals = [batch(8, seed=1), batch(8, seed=2)]

    def make(**kwargs):
        model = dabo_model(**kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False)
        set_augmenter(model, 0.3)
        return model

    plain, averaged = make(), make(val_gradient_average=beta)
    t = plain.augmenter.get_random_transformation(tf.constant(x))

    def hyper(model, xv, yv):
        result = model.hypergradient(x, y, xv, yv, transformation=t)
        return np.concatenate([h.numpy().ravel() for h in result.hypergradients])

    h0, h1 = (hyper(plain, *v) for v in vals)
    assert np.linalg.norm(h1 - h0) > 0.1 * np.linalg.norm(h0)  # the batches disagree
    np.testing.assert_allclose(hyper(averaged, *vals[0]), h0, rtol=1e-4, atol=1e-9)
    want = (beta * (1 - beta) * h0 + (1 - beta) * h1) / (1 - beta ** 2)
    np.testing.assert_allclose(hyper(averaged, *vals[1]), want, rtol=1e-4, atol=1e-9)
    assert not np.isfinite(hyper(averaged, np.full_like(x, np.nan), vals[1][1])).all()
    want = (beta ** 2 * (1 - beta) * h0 + (beta * (1 - beta) + (1 - beta)) * h1) / (1 - beta ** 3)
    np.testing.assert_allclose(hyper(averaged, *vals[1]), want, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="val_gradient_average=1"):
        dabo_model(val_gradient_average=1)


def test_lookahead_layers_count_the_layers_with_weights_from_the_output():
    from dabo_tf import models

    classifier = models.build_classifier("small_cnn", (16, 16, 1), 10, seed=0)
    mask = dabo_tf.DaboModel(classifier, lookahead_layers=3)._lookahead_mask()
    assert [v.path for v, moved in zip(classifier.trainable_variables, mask) if moved] == [
        "block3_conv/kernel", "block3_bn/gamma", "block3_bn/beta", "logits/kernel",
        "logits/bias"]
    assert dabo_tf.DaboModel(classifier)._lookahead_mask() is None
