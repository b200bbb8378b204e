"""Counter-based random numbers, identical with and without XLA.

Why our own generator: `tf.random.stateless_uniform` gives different numbers under XLA than
with TensorFlow's default kernels, so a seeded run would not train the same with
`jit_compile=True` and `False`. A hash of a counter (MurmurHash3's finaliser) is plain integer
arithmetic, bit-identical on every device and compiler.
"""

from __future__ import annotations

import tensorflow as tf


def fmix32(x):
    """MurmurHash3's 32-bit finaliser on int64 tensors holding 32-bit values."""
    mask = tf.constant(0xFFFFFFFF, tf.int64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = (x * 0x85EBCA6B) & mask
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
    x = (x * 0xC2B2AE35) & mask
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def hash_uniform(shape, seed, minval=0.0, maxval=1.0, offset=0):
    """Counter-based uniform float32 noise: `fmix32(counter + fmix32(seed))`.

    Bit-identical on every device and under XLA (unlike `tf.random.stateless_uniform`),
    so `jit_compile=True` and `False` train identically from the same seed.

    Args:
        shape: output shape (may hold tensors).
        seed: `[2]` integer tensor, e.g. `SeedGenerator.next()`.
        minval, maxval: range of the uniform distribution.
        offset: first counter value (a slice of a larger draw).
    """
    mask = tf.constant(0xFFFFFFFF, tf.int64)
    seed = tf.cast(seed, tf.int64) & mask
    key = fmix32((seed[0] * 0x9E3779B9 + seed[1] * 0x7F4A7C15 + 0x2545F491) & mask)
    key = fmix32(tf.bitwise.bitwise_xor(key, seed[1]) + 0x6A09E667 & mask)
    count = tf.reduce_prod(tf.cast(tf.stack(shape), tf.int64))
    counter = tf.range(count, dtype=tf.int64) + tf.cast(offset, tf.int64)
    bits = fmix32(fmix32((counter * 0x9E3779B9 + key) & mask) ^ key)
    unit = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / 16777216.0)
    return tf.reshape(minval + (maxval - minval) * unit, shape)
