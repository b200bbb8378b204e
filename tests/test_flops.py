"""`dabo_tf.flops` (`benchmarks/bench_step.py --flops`): the work of a DABO step, counted."""

import re

import bench_step
import hypergradient_snr
import numpy as np
import pytest
import tensorflow as tf

from dabo_tf import flops


def test_dense_flops_counts_the_ops_that_run():
    x = tf.TensorSpec((2, 8, 8, 3), tf.float32)
    w = tf.TensorSpec((3, 3, 3, 4), tf.float32)
    a = tf.TensorSpec((5, 6), tf.float32)
    b = tf.TensorSpec((5, 7), tf.float32)

    @tf.function
    def step(x, w, a, b, flag):
        y = tf.nn.conv2d(x, w, 1, "SAME")
        tf.nn.conv2d(x, w, 2, "SAME")  # unused: pruned when the function runs
        product = tf.cond(flag, lambda: tf.matmul(a, b, transpose_a=True),
                          lambda: tf.zeros((6, 7)))
        return y, product

    graph = step.get_concrete_function(x, w, a, b, tf.TensorSpec((), tf.bool)).graph
    counts = flops.dense_flops(graph)
    assert counts == {"Conv2D": 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3), "MatMul": 2 * (6 * 7) * 5}


def test_dense_flops_refuses_dynamic_shapes():
    @tf.function
    def conv(x):
        return tf.nn.conv2d(x, tf.ones((3, 3, 3, 4)), 1, "SAME")

    graph = conv.get_concrete_function(tf.TensorSpec((None, 8, 8, 3), tf.float32)).graph
    with pytest.raises(ValueError, match="dynamic shape"):
        flops.dense_flops(graph)


def test_dabo_step_does_the_work_of_the_exact_hypergradient_and_no_more():
    """Per convolution: plain = forward F + input and filter gradients; DABO = 11.5F.

    A DABO step runs the convolutions of two forward passes (training, look-ahead), two
    backward passes and the double backward (which adds two convolutions, two input
    gradients and no filter gradient: nothing asks for d/dw of the training gradient): 10F.
    The unpaired half of the batch (`train_unpaired`, mirrored pairs are made of the first
    half) adds a plain pass on half the batch, 1.5F. Only the first layer's input
    gradients, which a plain step skips, make it differ from 11.5F/3F.
    """
    counted = flops.step_flops("tiny_cnn", 8, (8, 4), image_size=16,
                               variants=((1.0, 0), (1.0, 1)))
    plain, dabo, half = counted["plain"], counted[8, 1.0, 0], counted[4, 1.0, 0]
    forward = plain["Conv2D"]
    first_layer = forward - plain["Conv2DBackpropInput"]  # input gradient a plain step skips
    assert 0 < first_layer < forward / 2
    assert plain["Conv2DBackpropFilter"] == forward
    rest = forward // 2  # the plain pass on the unpaired half
    assert dabo["Conv2D"] == 4 * forward - first_layer + rest
    assert dabo["Conv2DBackpropInput"] == 4 * forward - 2 * first_layer + rest - first_layer // 2
    assert dabo["Conv2DBackpropFilter"] == 2 * forward + rest
    # Halving the look-ahead batch halves the look-ahead pass and nothing else.
    for op in ("Conv2D", "Conv2DBackpropFilter"):
        assert dabo[op] - half[op] == forward // 2
    ratio = sum(dabo.values()) / sum(plain.values())
    assert 11.5 / 3 <= ratio < 4.0
    # The look-ahead on the last layer (`lookahead_layers=1`): nothing is differentiated
    # twice below the head, so the pull-back is one input gradient per convolution (the
    # first layer's included: the images lead to theta) and the look-ahead a forward pass.
    head = counted[8, 1.0, 1]
    assert head["Conv2D"] == 2 * forward + rest
    assert head["Conv2DBackpropInput"] == 2 * forward - first_layer + rest - first_layer // 2
    assert head["Conv2DBackpropFilter"] == forward + rest
    assert 6.5 / 3 <= sum(head.values()) / sum(plain.values()) < 2.3


def test_bench_step_flops_command(capsys):
    bench_step.main(["--flops", "--models=tiny_cnn", "--batch=8"])
    rows = dict(re.findall(r"\| tiny_cnn \| ([^|]+?) \| [\d.]+ \| ([\d.]+)x \|",
                           capsys.readouterr().out))
    assert len(rows) == sum(every >= 0 for _, every, *_ in bench_step.CONFIGS)
    ratios = {label: float(value) for label, value in rows.items()}
    every, half = ratios["DABO every step"], ratios["DABO every step, val batch / 2"]
    assert ratios["plain (augmenter frozen)"] == 1.0
    assert 3.8 <= every < 4.0 and 3.3 <= half < every
    np.testing.assert_allclose(ratios["DABO every 2nd step"], (every + 1) / 2, atol=0.01)
    np.testing.assert_allclose(ratios["DABO every 4th step"], (every + 3) / 4, atol=0.01)
    # The formula `hypergradient_snr.py --shares` prints for a share is the counted work.
    np.testing.assert_allclose(ratios["DABO every step, bilevel on 1/4, val batch / 2"],
                               hypergradient_snr.counted_ratio(0.25, 4, 8), rtol=0.05)


def test_bench_step_repeats_report_the_median_of_each_rounds_ratio(capsys):
    # Round 1 runs at half the speed of rounds 0 and 2: each round's ratio is taken to its own
    # plain step, so the drift cancels (3x in every round), while the step time's median
    # is the middle round's.
    configs = [bench_step.CONFIGS[0], bench_step.CONFIGS[1]]
    plain, dabo = configs[0][0], configs[1][0]
    results = {}
    for r, speed in enumerate([1.0, 2.0, 1.0]):
        results["m", "0", r, plain] = {"step": 0.1 * speed, "peak_mib": 10.0}
        results["m", "0", r, dabo] = {"step": 0.3 * speed, "peak_mib": 20.0 + r}
    bench_step.print_timed("m", ["0"], 3, configs, results, {plain: 1.0, dabo: 3.75})
    row = next(line for line in capsys.readouterr().out.splitlines() if f"| {dabo} |" in line)
    assert row == f"| m | off | {dabo} | 0.300 | 3.00x (3.00-3.00) | 3.75x | 0.80 | 22 |"
    with pytest.raises(SystemExit):
        bench_step.main(["--repeats=0", "--models=tiny_cnn"])


def test_bench_step_statistics_are_taken_per_cycle():
    # Every 2nd step a DABO step (3 s) and a plain one (1 s), one cycle disturbed (+2 s):
    # the statistics are of the cycles' mean step, never of a lone plain step.
    stats = bench_step.step_statistics([3.0, 1.0, 3.0, 1.0, 5.0, 1.0], every=2)
    assert stats == {"mean": 7.0 / 3.0, "median": 2.0, "min": 2.0}
    assert bench_step.step_statistics([0.2, 0.1, 0.4], every=0)["min"] == 0.1
