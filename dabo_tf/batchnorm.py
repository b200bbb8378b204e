"""Exact BatchNorm moments for the pass DABO differentiates twice.

Keras' `BatchNormalization` computes its variance with `tf.nn.moments`, around
`stop_gradient(mean)`: first derivatives are exact, second derivatives (which the
hypergradient needs, since it differentiates the training gradient) miss terms.
"""

from __future__ import annotations

import contextlib
import threading

import keras
import tensorflow as tf

from dabo_tf import keras_compat

_second_order = threading.local()


@contextlib.contextmanager
def exact_batchnorm_moments():
    """Within this context, layers prepared by `use_exact_batchnorm_moments` use exact moments.

    Only the training pass that the hypergradient differentiates twice needs them; every
    other pass (plain steps, the look-ahead validation pass, inference) keeps Keras' own.
    The switch acts when a function is traced, which is when layers are called.
    """
    previous = getattr(_second_order, "active", False)
    _second_order.active = True
    try:
        yield
    finally:
        _second_order.active = previous


def _moments(layer, inputs, mask):
    if not getattr(_second_order, "active", False) or mask is not None or layer.synchronized:
        return keras_compat.batchnorm_moments(layer, inputs, mask)
    axes = keras_compat.batchnorm_reduction_axes(layer)
    # One reduction for the mean (squeezed, not recomputed): without XLA every reduction's
    # gradient materialises a full-size tensor (Tile) in both backward passes.
    expanded = tf.reduce_mean(inputs, axis=axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(inputs - expanded), axis=axes)
    return tf.squeeze(expanded, axis=axes), variance


def use_exact_batchnorm_moments(model):
    """Makes the model's BatchNormalization layers twice differentiable, exactly.

    `tf.nn.moments` (what Keras' BatchNormalization uses) computes the variance around
    `stop_gradient(mean)`. That leaves first derivatives exact but drops terms of second
    derivatives, which the hypergradient needs (it differentiates the training gradient):
    measured against finite differences, the hypergradient of a model with BatchNorm was off
    by up to 20% without this. Inside `exact_batchnorm_moments()` the layers compute the
    same values without the `stop_gradient`; outside it they behave exactly as Keras'.
    Applied per layer instance; masked and synchronized BatchNorm keep Keras' own moments.
    """
    for layer in keras_compat.flatten_layers(model, include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            keras_compat.replace_batchnorm_moments(layer, _moments)
    return model
