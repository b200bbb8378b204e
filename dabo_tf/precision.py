"""Mixed precision: the dtype DABO's bilevel passes compute in."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from dabo_tf import keras_compat


def cast_floats(tensors, dtype=tf.float32):
    return [tf.cast(t, dtype) if t.dtype.is_floating else t for t in tensors]


@contextlib.contextmanager
def compute_dtype(model, dtype):
    """Within this context, the model's mixed-precision layers compute in `dtype`.

    A layer's compute dtype is read when it is called, i.e. when a function is traced, so
    the passes traced inside run in `dtype`; the layers' own policies are restored on exit.
    Only layers whose compute dtype is float16 or bfloat16 (with float32 variables) change;
    `dtype=None` changes nothing.
    """
    switched = []
    if dtype is not None:
        for layer in keras_compat.flatten_layers(model, include_self=True):
            policy = keras_compat.dtype_policy(layer)
            if (type(policy) is keras.DTypePolicy
                    and policy.compute_dtype in ("float16", "bfloat16")
                    and policy.variable_dtype == "float32"):
                switched.append((layer, policy))
    try:
        for layer, _ in switched:
            keras_compat.set_dtype_policy(layer, keras.DTypePolicy(dtype))
        yield
    finally:
        for layer, policy in switched:
            keras_compat.set_dtype_policy(layer, policy)
