"""Benchmark: images per second of `projective_warp` against `ImageProjectiveTransformV3`.

    python benchmarks/bench_warp.py [--batch 256] [--size 32] [--repeats 30]

Batch 256 of 32x32x3 float32 images, random affine+projective transforms, bilinear, reflect.
Rows: the raw TF op (eager-compiled graph; it has no XLA kernel and no transform gradient),
`projective_warp` in a `tf.function`, and `projective_warp` under XLA; forward, and forward +
backward (gradient w.r.t. images for the raw op, w.r.t. images and transforms for ours).
Ratios are to the raw op's forward, measured in the same run (absolute times depend on the
machine; ratios much less).
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from dabo_tf.augment import warp


def timed(fn, *args, repeats):
    fn(*args)  # trace / compile
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


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

    def with_grad(f, wrt_transforms):
        def g(a, t):
            with tf.GradientTape() as tape:
                tape.watch([a, t])
                loss = tf.reduce_sum(f(a, t) ** 2)
            return tape.gradient(loss, [a, t] if wrt_transforms else a)
        return g

    rows = [
        ("raw op (graph)", tf.function(raw), tf.function(with_grad(raw, False))),
        ("projective_warp (graph)", tf.function(ours), tf.function(with_grad(ours, True))),
        ("projective_warp (XLA)", tf.function(ours, jit_compile=True),
         tf.function(with_grad(ours, True), jit_compile=True)),
    ]
    results = []
    for name, fwd, bwd in rows:
        results.append((name, timed(fwd, images, transforms, repeats=args.repeats),
                        timed(bwd, images, transforms, repeats=args.repeats)))
    base = results[0][1]
    print(f"batch {n} of {s}x{s}x3, median of {args.repeats}; ratio = speed / raw op forward")
    print("| implementation | forward img/s | ratio | fwd+bwd img/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, f, b in results:
        print(f"| {name} | {n / f:,.0f} | {base / f:.2f}x | {n / b:,.0f} | {base / b:.2f}x |")
    print("(raw op fwd+bwd: gradient w.r.t. images only; it has none for transforms)")


if __name__ == "__main__":
    main()
