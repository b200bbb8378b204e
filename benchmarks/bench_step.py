"""Benchmark: cost of a DABO training step relative to a plain step, with and without XLA.

    python benchmarks/bench_step.py [--models small_cnn,resnet18] [--steps 8] [--batch 128]
    python benchmarks/bench_step.py --flops    # the same rows as counted work, no timing
    python benchmarks/bench_step.py --models=small_cnn --configs=0,8,1 --repeats=5

For each classifier (32x32x3 inputs, batch 128) and XLA setting, measures the mean step
time (over a whole number of k-step cycles, so alternating schedules are amortised
correctly) of (a) plain training on augmented data with the augmenter frozen, (b) DABO every step,
(c) DABO every 2nd and every 4th step (`augmenter_update_every`), (b) and (c) again with a
look-ahead validation batch of half the training batch (`val_batch_size`), (d) the bilevel
pass on 1/4, 1/8 or 3/8 of the batch (`hypergradient_fraction`) with a smaller validation
batch, (e) the look-ahead on the classifier's last 1 or 3 layers only (`lookahead_layers`), alone
and with a smaller validation batch and sub-batch, an ordinary Keras `fit` of the frozen
augmenter and classifier, and the peak resident memory of each configuration (each runs in
its own subprocess, so peaks don't mix).
Prints ratios to (a) measured in the same run. Absolute times depend on the machine; the
ratios are what to compare. On a shared machine one run's ratio moves by about +-10%:
`--repeats=N` runs every row in turn N times and reports the median and range of the rounds'
ratios (each round divided by its own plain step) beside the counted ratio, and
`--statistic=min` times each configuration by its least disturbed k-step cycle instead of
the mean of its cycles (`--statistic=mean,median,min`: a table each, from the same runs).

Why about 3.3x for (b): in units of one forward pass F (a backward pass is about 2F), a
plain step is 3F. A DABO step is the training pass (3F), the look-ahead validation pass (3F)
and the double backward that pulls the validation gradient through the training gradient
into the augmenter (about 4F: per layer, the cotangent of the weight gradient, its flow
through the backward and forward chains, and the product with the validation gradient):
10F, 3.3x. Halving the validation batch removes 1.5F (2.8x).

`--flops` checks that model without a clock: it traces one plain and one DABO `train_step`
and counts the floating-point operations of their convolutions and matrix products
(`dabo_tf.flops.dense_flops`) in the part of each graph that runs (TensorFlow prunes the rest
when it runs a function, and XLA removes it too). The ratios are what a compute-bound
accelerator would approach; they do not depend on the machine.
"""

import argparse
import functools
import json
import resource
import subprocess
import sys
import time

import numpy as np

from dabo_tf.flops import model_and_batch, step_flops
from dabo_tf.logs import Progress

CONFIGS = [("plain (augmenter frozen)", 0, 1, 1.0, 0, 0.0),
           ("DABO every step", 1, 1, 1.0, 0, 0.0),
           ("DABO every 2nd step", 2, 1, 1.0, 0, 0.0),
           ("DABO every 4th step", 4, 1, 1.0, 0, 0.0),
           ("DABO every step, val batch / 2", 1, 2, 1.0, 0, 0.0),
           ("DABO every 2nd step, val batch / 2", 2, 2, 1.0, 0, 0.0),
           ("DABO every step, bilevel on 1/4, val batch / 4", 1, 4, 0.25, 0, 0.0),
           ("DABO every step, bilevel on 1/8, val batch / 8", 1, 8, 0.125, 0, 0.0),
           ("ordinary Keras fit, frozen augmenter in front", -1, 1, 1.0, 0, 0.0),
           ("DABO every step, bilevel on 3/8, val batch / 4", 1, 4, 0.375, 0, 0.0),
           ("DABO every step, bilevel on 1/4, val batch / 2", 1, 2, 0.25, 0, 0.0),
           ("DABO every step, look-ahead on the last layer", 1, 1, 1.0, 1, 0.0),
           ("DABO every step, look-ahead on the last 3 layers", 1, 1, 1.0, 3, 0.0),
           ("DABO every step, look-ahead on the last 3 layers, val batch / 2", 1, 2, 1.0, 3, 0.0),
           ("DABO every step, look-ahead on the last 3 layers, bilevel on 1/4, val batch / 2",
            1, 2, 0.25, 3, 0.0),
           ("DABO every step, look-ahead on the last 3 layers, bilevel on 1/2, val batch / 2",
            1, 2, 0.5, 3, 0.0),
           ("DABO every step, look-ahead on the last 3 layers, val batch / 8, v averaged (0.97)",
            1, 8, 1.0, 3, 0.97)]
"""(label, augmenter_update_every, batch / val_batch, hypergradient_fraction,
lookahead_layers, val_gradient_average); -1: not a `DaboModel` but an ordinary `keras.Model`
of the same augmenter (frozen) and classifier, the baseline a user would compare with (timed
only: its work is the plain step's)."""

STATISTICS = ("mean", "median", "min")
"""What `--statistic` takes of each configuration's step times (`step_statistics`)."""


def measure(model_name, every, jit, steps, batch, val_batch, fraction=1.0, head=0,
            average=0.0):
    """Runs in a subprocess: step times (s, `step_statistics`) and peak RSS (MiB) of one
    configuration."""
    import keras
    import tensorflow as tf

    model, x, y = model_and_batch(model_name, max(every, 0), batch, jit_compile=jit,
                                  hypergradient_fraction=fraction, lookahead_layers=head,
                                  val_gradient_average=average)
    one = tf.data.Dataset.from_tensors((x, y))
    val = tf.data.Dataset.from_tensors((x[:val_batch], y[:val_batch]))
    ds = tf.data.Dataset.zip((one, val)).repeat()
    if every < 0:  # the same classifier behind the same augmenter, frozen, in plain Keras
        model.augmenter.trainable = False
        inputs = keras.Input(x.shape[1:])
        plain = keras.Model(inputs, model.classifier(model.augmenter(inputs, training=True)))
        plain.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit)
        model, ds = plain, one.repeat()
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    warmup = 4  # compilation and the first steps of every kind of step
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Timer()])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(step_statistics(times[warmup:], every), peak_mib=peak)


def step_statistics(times, every):
    """`{"mean", "median", "min"}` of the step times `times`, taken per k-step cycle (a DABO
    step and its k - 1 plain ones; k = `every`, 1 for a plain step), so that every statistic
    amortises an alternating schedule alike. The min is the least disturbed cycle: on a
    shared machine other processes only ever add time (the advice of Python's `timeit`)."""
    cycles = np.reshape(times, (-1, max(every, 1))).mean(axis=1)
    return {"mean": float(np.mean(cycles)), "median": float(np.median(cycles)),
            "min": float(np.min(cycles))}


def print_flops(model_names, batch):
    """Prints the rows of CONFIGS as counted work: every k-th step is (DABO + (k-1) plain) / k."""
    print(f"batch {batch}, 32x32x3: floating-point operations of the convolutions and matrix "
          "products of one step (every k-th: the mean over k steps)")
    print("| model | step | GFLOPs per step | ratio to plain |")
    print("| --- | --- | ---: | ---: |")
    for model_name in model_names:
        configs = [config for config in CONFIGS if config[1] >= 0]  # Keras fit: plain's work
        per_step, plain = step_work(model_name, batch, configs)
        for label, *_ in configs:
            print(f"| {model_name} | {label} | {per_step[label] / 1e9:.2f} | "
                  f"{per_step[label] / plain:.2f}x |", flush=True)


def step_work(model_name, batch, configs):
    """({label: counted FLOPs per step}, the plain step's FLOPs) for the rows of `configs`;
    the ordinary Keras fit (every < 0) counts as the plain step."""
    dabo = [config for config in configs if config[1] > 0]  # the rest count as plain steps
    variants = sorted({(fraction, head) for _, _, _, fraction, head, _ in dabo})
    val_batches = sorted({batch // divisor for _, _, divisor, *_ in dabo})
    flops = {key: sum(counts.values()) for key, counts in
             step_flops(model_name, batch, val_batches, variants=variants).items()}
    per_step = {}
    for label, every, divisor, fraction, head, _ in configs:  # averaging: no dense work
        key = (batch // divisor, fraction, head)
        per_step[label] = (flops["plain"] if every <= 0 else
                           (flops[key] + (every - 1) * flops["plain"]) / every)
    return per_step, flops["plain"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small_cnn,resnet18")
    parser.add_argument("--steps", type=int, default=8, help="a multiple of 4")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--jit", default="0,1", help="XLA settings to run, e.g. '0,1'")
    parser.add_argument("--configs", default=",".join(map(str, range(len(CONFIGS)))),
                        help="rows of CONFIGS to run, e.g. '0,1' (0, the plain step, first)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every row in turn; > 1 reports the median ratio, its "
                             "range and the counted ratio beside it")
    parser.add_argument("--statistic", default="mean",
                        help="of each configuration's step times (per k-step cycle): mean, "
                             "median or min (the least disturbed cycle, as timeit advises "
                             "on a shared machine); several, comma-separated, print a table "
                             "each from the same runs")
    parser.add_argument("--flops", action="store_true",
                        help="count each step's convolution and matmul work instead of timing")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flops:
        if args.batch < 2:
            parser.error("--flops needs --batch >= 2 (it halves the validation batch)")
        print_flops(args.models.split(","), args.batch)
        return
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1. Received: repeats={args.repeats}")
    statistics = args.statistic.split(",")
    if not set(statistics) <= set(STATISTICS):
        parser.error(f"--statistic takes {', '.join(STATISTICS)} (comma-separated). "
                     f"Received: statistic={args.statistic}")
    if args._child:
        model_name, every, jit, val_batch, fraction, head, average = args._child.split(":")
        print("RESULT" + json.dumps(measure(model_name, int(every), jit == "1", args.steps,
                                           args.batch, int(val_batch), float(fraction),
                                           int(head), float(average))))
        return
    models, jits = args.models.split(","), args.jit.split(",")
    configs = [CONFIGS[int(i)] for i in args.configs.split(",")]
    runs = [(model_name, jit, r, config) for model_name in models for jit in jits
            for r in range(args.repeats) for config in configs]
    counted = {}  # first: a failure here should not cost the timings
    if args.repeats > 1:
        for model_name in models:
            per_step, plain = step_work(model_name, args.batch, configs)
            counted[model_name] = {label: work / plain for label, work in per_step.items()}
    results = {}
    print(f"batch {args.batch}, 32x32x3, {args.steps} steps after 4 warm-up steps"
          + (f"; {args.repeats} rounds, each running every row in turn" if args.repeats > 1
             else ""), flush=True)
    progress = Progress(total=len(runs), label="bench_step",
                        log=functools.partial(print, file=sys.stderr))
    for model_name, jit, r, (label, every, divisor, fraction, head, average) in runs:
        proc = subprocess.run(
            [sys.executable, __file__,
             f"--_child={model_name}:{every}:{jit}:{args.batch // divisor}:{fraction}:{head}:"
             f"{average}",
             f"--steps={args.steps}", f"--batch={args.batch}"],
            capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(proc.returncode)
        results[model_name, jit, r, label] = json.loads(proc.stdout.split("RESULT", 1)[1])
        progress.end(f"{model_name}, XLA {jit}, round {r + 1}: {label}")
    for statistic in statistics:
        chosen = {key: dict(result, step=result[statistic]) for key, result in results.items()}
        for model_name in models:
            print_timed(model_name, jits, args.repeats, configs, chosen,
                        counted.get(model_name), statistic=statistic)


def print_timed(model_name, jits, repeats, configs, results, counted, statistic="mean"):
    """One row per XLA setting and configuration. With several rounds: the median step time,
    and the median (min-max) of the rounds' ratios, each round's row divided by the same
    round's plain step, so a machine whose speed drifts between rounds cancels out."""
    if repeats == 1:
        print(f"| model | XLA | step | {statistic} step (s) | ratio to plain | peak RSS (MiB) |")
        print("| --- | --- | --- | ---: | ---: | ---: |")
    else:
        print(f"| model | XLA | step | {statistic} step (s), median of rounds "
              "| ratio to plain, median (min-max) "
              "| counted | timed / counted | peak RSS (MiB) |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for jit in jits:
        base_label = configs[0][0]
        for label, *_ in configs:
            rows = [results[model_name, jit, r, label] for r in range(repeats)]
            ratios = [row["step"] / results[model_name, jit, r, base_label]["step"]
                      for r, row in enumerate(rows)]
            step = float(np.median([row["step"] for row in rows]))
            peak = max(row["peak_mib"] for row in rows)
            xla = "on" if jit == "1" else "off"
            if repeats == 1:
                print(f"| {model_name} | {xla} | {label} | {step:.3f} | {ratios[0]:.2f}x | "
                      f"{peak:.0f} |", flush=True)
            else:
                ratio = float(np.median(ratios))
                print(f"| {model_name} | {xla} | {label} | {step:.3f} | {ratio:.2f}x "
                      f"({min(ratios):.2f}-{max(ratios):.2f}) | {counted[label]:.2f}x | "
                      f"{ratio / counted[label]:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
