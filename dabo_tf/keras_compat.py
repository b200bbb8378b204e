"""The Keras and TensorFlow internals dabo-tf relies on, behind one small adapter.

Each function names the private attribute it touches and why no public API does the job.
When a Keras or TensorFlow release moves one, this module is the only place to change; the
tested ranges are pinned in `setup.cfg`. Two private hooks are *overridden* rather than
called, and so stay in their classes: `keras.Model._symbolic_build` (`DaboModel` hands
Keras the training pair of its `((x, y), (x_val, y_val))` batches to build metrics from) and
`Layer._convert_input_args` / `_allow_non_tensor_positional_args`
(`dabo_tf.augment.base.AugmentationLayer` keeps the caller's image dtype).
"""

from __future__ import annotations

import contextlib
import types

from keras.src.losses import loss as _keras_loss
from keras.src.saving import serialization_lib as _serialization
from tensorflow.python.framework import ops as tf_ops

from dabo_tf.logs import quiet_stderr


def flatten_layers(model, include_self=True):
    """Every layer nested in `model` (`Layer._flatten_layers`: Keras has no public walk that
    includes layers held in attributes of custom layers)."""
    return model._flatten_layers(include_self=include_self)


def dtype_policy(layer):
    """The layer's `DTypePolicy` (`Layer._dtype_policy`; the public `dtype_policy` property
    has no setter)."""
    return layer._dtype_policy


def set_dtype_policy(layer, policy):
    """Sets the policy a layer computes with from its next call (`Layer._dtype_policy`)."""
    layer._dtype_policy = policy


def batchnorm_moments(layer, inputs, mask):
    """Keras' own `BatchNormalization._moments` of `layer` (the method we patch per layer)."""
    return type(layer)._moments(layer, inputs, mask)


def replace_batchnorm_moments(layer, moments):
    """Makes one BatchNorm instance compute its moments with `moments(layer, inputs, mask)`
    (`BatchNormalization._moments`: no public hook exists for the moment computation)."""
    layer._moments = types.MethodType(moments, layer)


def batchnorm_reduction_axes(layer):
    """The axes a built BatchNorm layer reduces over (`BatchNormalization._reduction_axes`)."""
    return layer._reduction_axes


def learning_rate_schedule(optimizer):
    """The `LearningRateSchedule` an optimizer was given, or None for a fixed rate
    (`BaseOptimizer._learning_rate`: the public `learning_rate` property returns only the
    current value; a `LossScaleOptimizer` is looked through to its inner optimizer)."""
    import keras

    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    return None


def loss_tracker(model):
    """The `Mean` metric behind the `loss` entry of `fit`'s logs (`Model._loss_tracker`), which
    a custom `train_step` updating the loss itself must feed."""
    return model._loss_tracker


def unscale_loss_for_distribution(loss):
    """A replica's loss scaled back to the global batch (`keras.src.losses.loss`)."""
    return _keras_loss.unscale_loss_for_distribution(loss)


@contextlib.contextmanager
def jit_compile_off(model):
    """Builds `model`'s train function without XLA around it (`Model._jit_compile`), for a
    step that compiles its own parts with XLA."""
    model._jit_compile = False
    try:
        yield
    finally:
        model._jit_compile = True


def deserialize_compile_config(config):
    """The compile arguments of a saved model, deserialised as Keras' own `compile_from_config`
    does (`keras.src.saving.serialization_lib`), for a model with a second optimizer."""
    return _serialization.deserialize_keras_object(config)


def quiet_profiler_callback(base):
    """A subclass of Keras' `TensorBoard` callback whose profiler starts and stops quietly
    (`TensorBoard._start_profiler` / `_stop_profiler`: no public hook around them)."""

    class QuietTensorBoard(base):
        def _start_profiler(self, *args, **kwargs):
            with quiet_stderr():
                return super()._start_profiler(*args, **kwargs)

        def _stop_profiler(self, *args, **kwargs):
            with quiet_stderr():
                return super()._stop_profiler(*args, **kwargs)

    QuietTensorBoard.__name__ = QuietTensorBoard.__qualname__ = "TensorBoard"
    return QuietTensorBoard


def function_graph(graph, name):
    """The graph of the function `name` that `graph` calls (`FuncGraph._get_function`: TF has
    no public lookup of a graph's function library by name)."""
    return graph._get_function(name).graph


@contextlib.contextmanager
def release_traced_gradients():
    """Unregisters, on exit, the gradient functions registered by graphs traced inside.

    Each time a `tf.custom_gradient` function is traced into a graph, TensorFlow registers its
    gradient under a fresh name in a process-global registry and never removes it. Keras'
    optimizer all-reduces gradients through one (`ReplicaContext.all_reduce`) in every train
    step it traces, so the registry would keep every trial's traced train graph alive. The
    entries are only read while tracing, so dropping those of a finished training is safe.
    Together with the eager metric and optimizer build in `build_model`, this removes a
    growth of about 15 MB per trial (`tiny_cnn`; more for bigger graphs). Uses a private
    TensorFlow registry; does nothing where it is missing.
    """
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [k for k in registry if k not in before]:
                if name.startswith("CustomGradient-"):
                    registry.pop(name, None)


def build_from_local_batch_under_multi_worker():
    """Makes Keras' `fit` build its metrics from one replica's first batch.

    `TensorFlowTrainer._maybe_symbolic_build` (Keras 3.15) averages the whole nested first
    batch with `strategy.reduce("MEAN", batch)` only to learn its shapes. Under
    `MultiWorkerMirroredStrategy` the collective reduce takes one `PerReplica` at a time, so
    every `fit` fails ("Attempt to convert a value (PerReplica:...) ... to a Tensor"). The
    local values of the first replica have the shapes the build needs. Patched once, for
    every model in the process (plain Keras models and `DaboModel` alike); called by
    `dabo_tf.distribute.make_strategy("multi_worker")`.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    cls = trainer.TensorFlowTrainer
    original = cls._maybe_symbolic_build
    if getattr(original, "_uses_local_batch", False):
        return

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or data_batch is not None:
            return original(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            break
        local = tf.nest.map_structure(
            lambda v: (strategy.experimental_local_results(v)[0]
                       if isinstance(v, tf.distribute.DistributedValues) else v), batch)
        return original(self, data_batch=local)

    _maybe_symbolic_build._uses_local_batch = True
    cls._maybe_symbolic_build = _maybe_symbolic_build

    # `reduce_per_replica` (called by the train, test and predict functions with
    # reduction="auto", i.e. "mean") averages each step's scalar logs across workers with
    # `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar ("Invalid reduction
    # dimension 0 for input with 0 dimensions"). The mean over replicas is
    # `axis=None`; other values keep Keras' reduction.
    reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(
                strategy):
            def mean(v):
                local = strategy.experimental_local_results(v)
                if all(getattr(t, "shape", None) is not None and t.shape.rank == 0
                       for t in local):
                    return strategy.reduce("MEAN", v, axis=None)
                return reduce(v, strategy, reduction)

            return tf.nest.map_structure(mean, values)
        return reduce(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
