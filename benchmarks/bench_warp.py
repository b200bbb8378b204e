"""Benchmark: images per second of `projective_warp` against `ImageProjectiveTransformV3`.

    python benchmarks/bench_warp.py [--batch 256] [--size 32] [--repeats 30]

Batch 256 of 32x32x3 float32 images, random affine+projective transforms, bilinear, reflect.
Rows: the raw TF op (eager-compiled graph; it has no XLA kernel and no transform gradient),
`projective_warp` in a `tf.function`, and `projective_warp` under XLA; forward, and forward +
backward: w.r.t. images for the raw op (its only gradient); for ours w.r.t. the transforms
only (what DABO needs: the source images are constants) and w.r.t. images and transforms.
Ratios are to the raw op's forward+backward, measured in the same run, every row timed in
turn (absolute times depend on the machine; ratios much less).
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from dabo_tf.augment import warp


def timed_round_robin(fns, *args, repeats):
    """Median seconds per call of each function, timed in turn (one call of each per
    round), so that a slow spell of a shared machine falls on all rows alike."""
    for fn in fns:
        fn(*args)  # trace / compile
        fn(*args)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, row in zip(fns, times):
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
            row.append(time.perf_counter() - start)
    return [float(np.median(row)) for row in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    n, s = args.batch, args.size
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((n, s, s, 3)).astype(np.float32))
    m = warp.affine_matrix(s, s, rotation=rng.uniform(-0.5, 0.5, n),
                           shear=rng.uniform(-0.2, 0.2, n),
                           log_scale_x=rng.uniform(-0.2, 0.2, n),
                           translate_x=rng.uniform(-0.1, 0.1, n),
                           perspective_x=rng.uniform(-0.05, 0.05, n))
    transforms = warp.matrices_to_transforms(m)

    def raw(a, t):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=a, transforms=t, output_shape=[s, s], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT")

    def ours(a, t):
        return warp.projective_warp(a, t)

    def with_grad(f, wrt):
        def g(a, t):
            with tf.GradientTape() as tape:
                tape.watch([a, t])
                loss = tf.reduce_sum(f(a, t) ** 2)
            return tape.gradient(loss, {"images": a, "transforms": t, "both": [a, t]}[wrt])
        return g

    rows = [("raw op (graph)", "forward", tf.function(raw)),
            ("raw op (graph)", "fwd+bwd w.r.t. images", tf.function(with_grad(raw, "images")))]
    for label, jit in (("graph", False), ("XLA", True)):
        name = f"projective_warp ({label})"
        rows += [(name, "forward", tf.function(ours, jit_compile=jit)),
                 (name, "fwd+bwd w.r.t. transforms",
                  tf.function(with_grad(ours, "transforms"), jit_compile=jit)),
                 (name, "fwd+bwd w.r.t. images and transforms",
                  tf.function(with_grad(ours, "both"), jit_compile=jit))]
    seconds = timed_round_robin([fn for _, _, fn in rows], images, transforms,
                                repeats=args.repeats)
    results = [(name, what, t) for (name, what, _), t in zip(rows, seconds)]
    base = results[1][2]
    print(f"batch {n} of {s}x{s}x3, median of {args.repeats}; ratio = speed / raw op's "
          "forward+backward")
    print("| implementation | pass | img/s | ratio |")
    print("| --- | --- | ---: | ---: |")
    for name, what, seconds in results:
        print(f"| {name} | {what} | {n / seconds:,.0f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
