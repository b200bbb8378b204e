"""Benchmark: cost of a DABO training step relative to a plain step, with and without XLA.

    python experiments/bench_step.py [--models small_cnn,resnet18] [--steps 8] [--batch 128]
    python experiments/bench_step.py --flops    # the same rows as counted work, no timing

For each classifier (32x32x3 inputs, batch 128) and XLA setting, measures the mean step
time (over a whole number of k-step cycles, so alternating schedules are amortised
correctly) of (a) plain training on augmented data with the augmenter frozen, (b) DABO every step,
(c) DABO every 2nd and every 4th step (`augmenter_update_every`), (b) and (c) again with a
look-ahead validation batch of half the training batch (`val_batch_size`), and the peak
resident memory of each configuration (each runs in its own subprocess, so peaks don't mix).
Prints ratios to (a) measured in the same run. Absolute times depend on the machine; the
ratios are what to compare.

Why about 3.3x for (b): in units of one forward pass F (a backward pass is about 2F), a
plain step is 3F. A DABO step is the training pass (3F), the look-ahead validation pass (3F)
and the double backward that pulls the validation gradient through the training gradient
into the augmenter (about 4F: per layer, the cotangent of the weight gradient, its flow
through the backward and forward chains, and the product with the validation gradient):
10F, 3.3x. Halving the validation batch removes 1.5F (2.8x).

`--flops` checks that model without a clock: it traces one plain and one DABO `train_step`
and counts the floating-point operations of their convolutions and matrix products
(`dense_flops`) in the part of each graph that runs (TensorFlow prunes the rest when it runs
a function, and XLA removes it too). The ratios are what a compute-bound accelerator would
approach; they do not depend on the machine.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

# Ops whose cost is a product of tensor sizes; element-wise work is left out.
_DENSE_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul",
              "BatchMatMulV2", "BatchMatMulV3")

CONFIGS = [("plain (augmenter frozen)", 0, 1), ("DABO every step", 1, 1),
           ("DABO every 2nd step", 2, 1), ("DABO every 4th step", 4, 1),
           ("DABO every step, val batch / 2", 1, 2),
           ("DABO every 2nd step, val batch / 2", 2, 2)]


def _model_and_batch(model_name, every, batch, image_size=32, classes=10, jit_compile=False):
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
                              augmenter_update_every=every)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model, x, y


def measure(model_name, every, jit, steps, batch, val_batch):
    """Runs in a subprocess: mean step time (s) and peak RSS (MiB) of one configuration."""
    import keras
    import tensorflow as tf

    model, x, y = _model_and_batch(model_name, every, batch, jit_compile=jit)
    one = tf.data.Dataset.from_tensors((x, y))
    val = tf.data.Dataset.from_tensors((x[:val_batch], y[:val_batch]))
    ds = tf.data.Dataset.zip((one, val)).repeat()
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    warmup = 4  # compilation and the first steps of every kind of step
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Timer()])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": float(np.mean(times[warmup:])), "peak_mib": peak}


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
        if op.type in _DENSE_OPS:
            counts[op.type] = counts.get(op.type, 0) + _op_flops(op)
        for attr in ("f", "then_branch", "else_branch", "body", "cond"):
            if attr in op.node_def.attr:
                dense_flops(graph._get_function(op.get_attr(attr).name).graph, counts)
    return counts


def step_flops(model_name, batch, val_batches, image_size=32, classes=10):
    """Dense FLOPs of one plain step and of one DABO step per validation batch.

    Returns `{"plain": counts, val_batch: counts, ...}`, each the per-op-type FLOPs
    (`dense_flops`) of one `train_step` traced at the given batch sizes (the augmenter is
    the default learned affine one).
    """
    import tensorflow as tf

    result = {}
    for every in (0, 1):  # a plain step, then a DABO step per validation batch
        model, x, y = _model_and_batch(model_name, every, batch, image_size, classes)
        model.train_on_batch(((x[:2], y[:2]), (x[:2], y[:2])))  # creates every variable
        step = tf.function(model.train_step)
        x, y = tf.constant(x), tf.constant(y)
        for val_batch in (val_batches if every else (batch,)):
            data = ((x, y), (x[:val_batch], y[:val_batch]))
            result[val_batch if every else "plain"] = dense_flops(
                step.get_concrete_function(data).graph)
    return result


def print_flops(model_names, batch):
    """Prints the rows of CONFIGS as counted work: every k-th step is (DABO + (k-1) plain) / k."""
    print(f"batch {batch}, 32x32x3: floating-point operations of the convolutions and matrix "
          "products of one step (every k-th: the mean over k steps)")
    print("| model | step | GFLOPs per step | ratio to plain |")
    print("| --- | --- | ---: | ---: |")
    for model_name in model_names:
        flops = {key: sum(counts.values()) for key, counts in
                 step_flops(model_name, batch, (batch, batch // 2)).items()}
        plain = flops["plain"]
        for label, every, divisor in CONFIGS:
            per_step = (plain if every == 0 else
                        (flops[batch // divisor] + (every - 1) * plain) / every)
            print(f"| {model_name} | {label} | {per_step / 1e9:.2f} | "
                  f"{per_step / plain:.2f}x |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small_cnn,resnet18")
    parser.add_argument("--steps", type=int, default=8, help="a multiple of 4")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--jit", default="0,1", help="XLA settings to run, e.g. '0,1'")
    parser.add_argument("--configs", default=",".join(map(str, range(len(CONFIGS)))),
                        help="rows of CONFIGS to run, e.g. '0,1' (0, the plain step, first)")
    parser.add_argument("--flops", action="store_true",
                        help="count each step's convolution and matmul work instead of timing")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flops:
        if args.batch < 2:
            parser.error("--flops needs --batch >= 2 (it halves the validation batch)")
        print_flops(args.models.split(","), args.batch)
        return
    if args._child:
        model_name, every, jit, val_batch = args._child.split(":")
        print("RESULT" + json.dumps(measure(model_name, int(every), jit == "1", args.steps,
                                           args.batch, int(val_batch))))
        return
    print(f"batch {args.batch}, 32x32x3, mean of {args.steps} steps after 4 warm-up steps")
    print("| model | XLA | step | mean step (s) | ratio to plain | peak RSS (MiB) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for model_name in args.models.split(","):
        for jit in args.jit.split(","):
            base = None
            for label, every, divisor in (CONFIGS[int(i)] for i in args.configs.split(",")):
                val_batch = args.batch // divisor
                proc = subprocess.run(
                    [sys.executable, __file__,
                     f"--_child={model_name}:{every}:{jit}:{val_batch}",
                     f"--steps={args.steps}", f"--batch={args.batch}"],
                    capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(proc.returncode)
                r = json.loads(proc.stdout.split("RESULT", 1)[1])
                base = base or r["step"]
                print(f"| {model_name} | {'on' if jit == '1' else 'off'} | {label} | "
                      f"{r['step']:.3f} | {r['step'] / base:.2f}x | {r['peak_mib']:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
