"""Distribution: the strategy a run trains under, and the guards DABO's step needs in it.

The guards keep a step correct on any number of replicas: a finiteness check, a sum over
replicas, and a conditional update that stays legal inside a replica context (where
`MirroredStrategy` cannot synchronise optimizer updates under a `tf.cond`).
"""

from __future__ import annotations

import os

import tensorflow as tf

from dabo_tf.config import DISTRIBUTE, ConfigError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`"none"`: the default strategy; `"mirrored"`: all local GPUs; `"multi_worker"`:
    `MultiWorkerMirroredStrategy` configured by the `TF_CONFIG` environment variable."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("distribute=multi_worker needs the TF_CONFIG environment variable "
                              "describing the cluster (see tf.distribute.MultiWorkerMirrored"
                              "Strategy). Received: distribute='multi_worker'")
        from dabo_tf import keras_compat

        keras_compat.build_from_local_batch_under_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"distribute must be one of {list(DISTRIBUTE)}. "
                      f"Received: distribute={name!r}")


def all_finite(*structures) -> tf.Tensor:
    """True when every tensor in the (nested lists of) tensors is finite."""
    checks = [tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32)))
              for s in structures for t in tf.nest.flatten(s) if t is not None]
    return tf.reduce_all(tf.stack(checks))


def replica_all_reduce_sum():
    """A sum over replicas for the current replica context, or None on a single replica."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return lambda values: ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def run_if(pred, fn, *args):
    """Runs `fn(*args)` only when `pred` holds (exactly on one replica).

    Without a distribution strategy this is a `tf.cond`. Under `MirroredStrategy` (even
    with one replica) TensorFlow cannot run the cross-replica synchronisation of optimizer
    updates inside a `tf.cond` in replica context, so `fn`
    always runs, with every floating argument replaced by zeros where `pred` is false: a
    skipped step applies zero gradients, and weights never receive a non-finite value (a
    momentum optimizer still moves by its momentum). `pred` must agree on all replicas.
    """
    if (not tf.distribute.has_strategy()
            or isinstance(tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy)):
        tf.cond(pred, lambda: fn(*args), lambda: None)
        return
    args = tf.nest.map_structure(
        lambda t: tf.where(pred, t, tf.zeros_like(t)) if t.dtype.is_floating else t, args)
    fn(*args)
