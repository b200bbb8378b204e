"""Counted work: floating-point operations of the convolutions and matrix products a graph runs.

The cost model of a DABO step (`benchmarks/bench_step.py --flops`, README "Cost"): trace one
plain and one DABO `train_step`, count the dense ops in the part of each graph that runs
(TensorFlow prunes the rest when it runs a function, and XLA removes it too). The ratios are
what a compute-bound accelerator approaches; they do not depend on the machine.
"""

from __future__ import annotations

import numpy as np

from dabo_tf import keras_compat

# Ops whose cost is a product of tensor sizes; element-wise work is left out.
DENSE_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul",
              "BatchMatMulV2", "BatchMatMulV3")


def model_and_batch(model_name, every, batch, image_size=32, classes=10, jit_compile=False,
                    hypergradient_fraction=1.0, lookahead_layers=0, val_gradient_average=0.0):
    """A compiled `DaboModel` (default learned affine augmenter, SGD) and a seeded batch."""
    import keras

    import dabo_tf
    from dabo_tf import models

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (image_size, image_size, 3)
    x = rng.random((batch, *shape)).astype(np.float32)
    y = rng.integers(0, classes, batch).astype(np.int32)
    classifier = models.build_classifier(model_name, shape, classes, seed=0)
    model = dabo_tf.DaboModel(classifier, dabo_tf.augment.build_augmenter(seed=0),
                              augmenter_update_every=every,
                              hypergradient_fraction=hypergradient_fraction,
                              lookahead_layers=lookahead_layers,
                              val_gradient_average=val_gradient_average)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model, x, y


def _op_flops(op):
    """Floating-point operations (2 per multiply-add) of one dense op, from static shapes."""
    def shape(tensor):
        dims = tensor.shape.as_list()
        if None in dims:
            raise ValueError(f"{op.type} {op.name} has a dynamic shape {dims}: trace with "
                             "fixed batch and image sizes to count its work.")
        return dims

    if op.type.startswith("Conv2D"):
        # Conv2D(x, w) -> y; BackpropInput(x_shape, w, dy); BackpropFilter(x, w_shape, dy).
        out = shape(op.outputs[0] if op.type == "Conv2D" else op.inputs[2])
        kernel = shape(op.outputs[0] if op.type == "Conv2DBackpropFilter" else op.inputs[1])
        return 2 * int(np.prod(out)) * int(np.prod(kernel[:3]))
    a = shape(op.inputs[0])
    adjoint = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
    return 2 * int(np.prod(shape(op.outputs[0]))) * (a[-2] if adjoint else a[-1])


def _live_ops(graph):
    """The ops of `graph` that run: ancestors of its outputs or of a stateful op."""
    stack = [t.op for t in graph.outputs] + [
        op for op in graph.get_operations()
        if op.op_def.is_stateful and op.type not in ("Placeholder", "VarHandleOp")]
    live = set()
    while stack:
        op = stack.pop()
        if op not in live:
            live.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op in live]


def dense_flops(graph, counts=None):
    """Per-op-type FLOPs of the convolutions and matrix products that `graph` runs.

    Follows function calls, both branches of conditionals and loop bodies once (so trace
    graphs whose control flow doesn't choose or repeat heavy computations), and skips ops
    whose results nothing uses, which TensorFlow prunes when it runs a function (the double
    backward builds, for instance, gradients with respect to the weights that nothing asks
    for).
    """
    counts = {} if counts is None else counts
    for op in _live_ops(graph):
        if op.type in DENSE_OPS:
            counts[op.type] = counts.get(op.type, 0) + _op_flops(op)
        for attr in ("f", "then_branch", "else_branch", "body", "cond"):
            if attr in op.node_def.attr:
                dense_flops(keras_compat.function_graph(graph, op.get_attr(attr).name), counts)
    return counts


def step_flops(model_name, batch, val_batches, image_size=32, classes=10,
               variants=((1.0, 0),)):
    """Dense FLOPs of one plain step and of one DABO step per validation batch and variant.

    Returns `{"plain": counts, (val_batch, fraction, head): counts, ...}`, each the
    per-op-type FLOPs (`dense_flops`) of one `train_step` traced at the given batch sizes
    (the augmenter is the default learned affine one); a variant `(fraction, head)` is
    `DaboModel`'s `hypergradient_fraction` and `lookahead_layers` (`(1.0, 0)`: the exact
    step).
    """
    import tensorflow as tf

    result = {}
    steps = [(0, 1.0, 0)] + [(1, *v) for v in variants]  # a plain step, then DABO steps
    for every, fraction, head in steps:
        model, x, y = model_and_batch(model_name, every, batch, image_size, classes,
                                      hypergradient_fraction=fraction, lookahead_layers=head)
        model.train_on_batch(((x[:4], y[:4]), (x[:2], y[:2])))  # creates every variable
        step = tf.function(model.train_step)
        x, y = tf.constant(x), tf.constant(y)
        for val_batch in (val_batches if every else (batch,)):
            data = ((x, y), (x[:val_batch], y[:val_batch]))
            key = (val_batch, fraction, head) if every else "plain"
            result[key] = dense_flops(step.get_concrete_function(data).graph)
    return result
