"""The bilevel maths of DABO: a truncated (unrolled) hypergradient, as one pure function.

Mounsaveng et al., "Learning Data Augmentation with Online Bilevel Optimization for Image
Classification", WACV 2021 (arXiv 2006.14699). The augmenter's parameters theta should
minimise the validation loss of the classifier trained on augmented data. Training to
convergence for each theta is out of reach, so the inner problem is truncated to `k` (by
default one) SGD steps from the current weights:

    w_0 = w,   w_{i+1} = w_i - lr * g_i,   g_i = grad_w L_train(w_i, augment(x; theta))
    hypergradient = d L_val(w_k) / d theta = (d w_k / d theta)^T  grad_w L_val(w_k)

It is computed as a vector-Jacobian product: the outer tape records the augmentation and the
inner gradients (double backward through `g`), the validation gradient `v = grad L_val(w_k)`
is taken on its own tape, and `outer.gradient(w_k, theta, output_gradients=v)` pulls it back.
That is the exact hypergradient of the truncated problem, not a finite-difference estimate.

With `normalize_lookahead=True` the virtual step keeps its length but its direction alone
depends on theta, `w' = w - lr * ||g|| * g / ||g||` with `||g||` held constant. Then

    hypergradient = -lr * (v - g_hat (g_hat . v))^T  d g / d theta,    g_hat = g / ||g||,

i.e. `v` with its component along `g` removed. The paper's step credits the augmenter for
anything that makes `g . v` larger, including making `g` longer, which harder augmentation
does (a larger training loss has a larger gradient): the greedy step then favours ever
stronger augmentation. The normalised step credits only turning `g` towards `v`, the
first-order change of `cos(g, v)` that DeepAA maximises. It costs two dot products.

When the classifier's step also holds images outside the bilevel pass (a sub-batch, or the
unpaired half of mirrored pairs), `rest=(share, gradients)` makes the look-ahead that step,
`w' = w - lr * (share * g + (1 - share) * r)` with `r` constant: the hypergradient is then
`share` times the one above with `v`'s component along the whole step removed. Removing it
along `g` of a small bilevel batch penalises the noise augmentation adds to `g`, whose share
of `||g||` grows as the batch shrinks (`||g||^2 ~ ||E g||^2 + tr(Cov) / n`), so the learned
ranges depend on the bilevel batch's size. Measured (README, *DABO step cost*): along the
whole step the known ranges overshoot (1.3-1.8x the truth) and a sub-batch's stay noisy, so
`DaboModel` leaves it off (`lookahead_whole_batch`).

With `lookahead_mask` the virtual step moves only some of the weights (e.g. the classifier's
last layer, `DaboModel(lookahead_layers=1)`), the others held at `w`: the hypergradient is
then exact for that truncated problem, `-lr * v_head^T d g_head / d theta`. It is cheaper
because nothing is differentiated twice through the rest of the network: the pull-back runs
once down its forward chain (the input gradients of its layers, about 1F), and the
look-ahead's validation pass needs the rest of the network's forward pass only (1F), where
the full look-ahead costs a forward and a backward pass (3F) and the double backward 4F.
What it gives up: how augmentation changes the gradients of the earlier layers, i.e. the
features (the head's gradient still depends on theta through them).

Under `tf.distribute` the caller passes `all_reduce` (a sum over replicas): the look-ahead
then uses the global gradient, as one device would for the same global batch, and `v` is
summed so each replica pulls back the gradient of the global validation loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import tensorflow as tf


@dataclasses.dataclass
class HypergradientResult:
    """What one bilevel step computed.

    Attributes:
        train_loss: training loss at `w` on the augmented batch (unscaled by `loss_scale`).
        aux: whatever `train_loss_fn` returned beside the loss at `w` (logits, BN stats...).
        gradients: gradients of `train_loss * loss_scale` at `w`, per replica (what the
            classifier's optimizer expects: it sums over replicas and removes loss scaling).
        val_loss: validation loss at the look-ahead weights `w_k`.
        hypergradients: d val_loss / d theta, one per augmenter weight, summed over nothing
            (per replica; the augmenter's optimizer sums over replicas).
    """

    train_loss: Any
    aux: Any
    gradients: list
    val_loss: Any
    hypergradients: list


def _zeros_for_none(grads, like):
    return [tf.zeros_like(x) if g is None else g for g, x in zip(grads, like)]


def mix(share, a, b):
    """`share * a + (1 - share) * b` in `a`'s dtype: a quantity of a batch made of two parts,
    `share` of its images in the part that gave `a` (a gradient, a loss, a statistic)."""
    return tf.cast(share, a.dtype) * a + tf.cast(1.0 - share, a.dtype) * tf.cast(b, a.dtype)


def unrolled_hypergradient(
    augment_fn: Callable[[], Any],
    train_loss_fn: Callable[[list, Any], tuple],
    val_loss_fn: Callable[[list], Any],
    weights: Sequence[tf.Tensor],
    augmenter_weights: Sequence[tf.Variable],
    *,
    inner_lr,
    inner_steps: int = 1,
    all_reduce: Callable[[list], list] | None = None,
    loss_scale=1.0,
    normalize_lookahead: bool = False,
    rest=None,
    lookahead_mask: Sequence[bool] | None = None,
    val_gradient_fn: Callable[[list], list] | None = None,
) -> HypergradientResult:
    """Truncated hypergradient of the validation loss with respect to the augmenter.

    Args:
        augment_fn: `() -> images`, the augmented training batch; reads `augmenter_weights`.
        train_loss_fn: `(weights, images) -> (loss, aux)`: classifier loss with the given
            weight tensors substituted (e.g. via `Model.stateless_call`).
        val_loss_fn: `(weights) -> loss` on the validation batch, same substitution.
        weights: current classifier weight values (tensors, in `trainable_variables` order).
        augmenter_weights: the augmenter's trainable variables (theta).
        inner_lr: learning rate of the virtual SGD steps (scalar or tensor).
        inner_steps: number of unrolled inner steps, `k`. Defaults to 1 (the paper).
        all_reduce: optional function summing a list of tensors over replicas.
        loss_scale: mixed-precision loss scale; losses are multiplied by it before
            differentiation and gradients divided by it, so float16 backprops don't underflow.
        normalize_lookahead: hold the length of the last virtual step fixed, so the
            hypergradient credits only the direction of the training gradient (see the
            module docstring). Defaults to False (the paper's step).
        rest: optional `(share, gradients)`: the last virtual step is the classifier's
            whole step, `share * g + (1 - share) * gradients`, where `gradients` (scaled by
            `loss_scale`, like `HypergradientResult.gradients`) come from images outside
            this pass and do not depend on theta (see the module docstring).
        lookahead_mask: optional, one bool per weight: the virtual step moves only the
            weights marked True and holds the others at `w` (see the module docstring).
            Defaults to None (every weight steps: the exact hypergradient). Needs
            `inner_steps=1`.
        val_gradient_fn: optional `(v) -> v`, applied to the validation gradient at the
            look-ahead weights (summed over replicas, unscaled, one tensor per moved
            weight) before it is pulled back: e.g. `DaboModel`'s running average over
            steps (`val_gradient_average`). The hypergradient is linear in `v`.

    Returns:
        A `HypergradientResult`.
    """
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1. Received: inner_steps={inner_steps}")
    if inner_steps > 1 and all_reduce is not None:
        raise NotImplementedError(
            "inner_steps > 1 is not supported with several replicas (it would need "
            f"collectives inside the differentiated graph). Received: inner_steps={inner_steps}")
    if lookahead_mask is not None:
        lookahead_mask = [bool(m) for m in lookahead_mask]
        if len(lookahead_mask) != len(weights) or not any(lookahead_mask):
            raise ValueError(
                "lookahead_mask needs one bool per weight and at least one True. Received: "
                f"lookahead_mask={lookahead_mask} for {len(weights)} weights")
        if inner_steps > 1:
            raise NotImplementedError(
                "lookahead_mask needs inner_steps=1. Received: "
                f"inner_steps={inner_steps}")
    # Keras variables wrap a tf.Variable, which is what tapes watch.
    augmenter_weights = [getattr(v, "value", v) for v in augmenter_weights]
    loss_scale = tf.cast(loss_scale, tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(augmenter_weights)
        images = augment_fn()
        w = list(weights)
        for step in range(inner_steps):
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(w)
                loss, aux = train_loss_fn(w, images)
                scaled = tf.cast(loss, tf.float32) * loss_scale
            grads = _zeros_for_none(inner.gradient(scaled, w), w)
            g = [tf.cast(gi, wi.dtype) / tf.cast(loss_scale, wi.dtype) for gi, wi in zip(grads, w)]
            if step == 0:
                first = (loss, aux, grads, g)
            if step < inner_steps - 1:
                w = [wi - tf.cast(inner_lr, wi.dtype) * gi for wi, gi in zip(w, g)]

    # The last step happens outside the outer tape: w_k = w_{k-1} - lr * G, with G the
    # gradient summed over replicas (the global batch's gradient). Summing outside any
    # differentiated graph keeps collectives out of the double backward.
    step = g
    if rest is not None:  # the classifier's whole step: g of this pass and the rest's
        share, rest_grads = rest
        step = [mix(share, gi, tf.cast(ri, gi.dtype) / tf.cast(loss_scale, gi.dtype))
                for gi, ri in zip(g, rest_grads)]
    # With a mask only the marked weights step (and are watched below): the rest of the
    # network is then a constant of the look-ahead, run forward only.
    moved = (list(range(len(w))) if lookahead_mask is None
             else [i for i, m in enumerate(lookahead_mask) if m])
    step = [step[i] for i in moved]
    big_g = step if all_reduce is None else all_reduce([tf.stop_gradient(s) for s in step])
    w_last = list(w)
    for i, gi in zip(moved, big_g):
        w_last[i] = w[i] - tf.cast(inner_lr, w[i].dtype) * gi
    w_last = [tf.stop_gradient(wi) for wi in w_last]
    w_moved = [w_last[i] for i in moved]

    # Validation gradient at the look-ahead weights, on its own (first-order) tape.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(w_moved)
        val_loss = val_loss_fn(w_last)
        scaled_val = tf.cast(val_loss, tf.float32) * loss_scale
    v = _zeros_for_none(tape.gradient(scaled_val, w_moved), w_moved)
    if all_reduce is not None:
        v = all_reduce(v)  # gradient of the global validation loss
    if val_gradient_fn is not None:  # on the unscaled gradient (the scale may change)
        v = [vi * tf.cast(loss_scale, vi.dtype)
             for vi in val_gradient_fn([vi / tf.cast(loss_scale, vi.dtype) for vi in v])]
    v_full = v
    # Pull v back into the augmenter (double backward): d w_k / d theta applied to v, where
    # w_k = w_{k-1}(theta) - lr * g(w_{k-1}(theta), theta). For k = 1, w_0 is fixed.
    if normalize_lookahead:
        v = remove_component_along(v, big_g)
    minus_lr_v = [-tf.cast(inner_lr, vi.dtype) * vi for vi in v]
    if rest is not None:  # g is `share` of the step
        minus_lr_v = [tf.cast(share, m.dtype) * m for m in minus_lr_v]
    targets, cotangents = [g[i] for i in moved], minus_lr_v
    if inner_steps > 1:
        targets, cotangents = list(w) + list(g), list(v_full) + minus_lr_v
    hyper = outer.gradient(targets, augmenter_weights, output_gradients=cotangents)
    hyper = _zeros_for_none(hyper, augmenter_weights)
    hyper = [h / tf.cast(loss_scale, h.dtype) for h in hyper]
    train_loss, aux, grads, _ = first
    return HypergradientResult(train_loss, aux, grads, val_loss, hyper)


def dot(a, b):
    """The inner product of two lists of tensors, in float32 (over all their elements)."""
    return tf.add_n([tf.reduce_sum(tf.cast(x, tf.float32) * tf.cast(y, tf.float32))
                     for x, y in zip(a, b)])


def remove_component_along(v, g):
    """`v - g (g . v) / (g . g)` over lists of tensors (v unchanged where g is zero)."""
    g = [tf.stop_gradient(gi) for gi in g]
    coefficient = tf.math.divide_no_nan(dot(g, v), dot(g, g))
    return [vi - tf.cast(coefficient, vi.dtype) * tf.cast(gi, vi.dtype) for vi, gi in zip(v, g)]


def calibrated_logits(logits, labels, iterations: int = 8):
    """`logits` times the inverse temperature that fits them best to `labels`, held constant.

    The validation cross-entropy mixes two things: whether the classifier ranks the right
    class first, and how confident it is. A classifier that has fitted a small training set
    is overconfident, and any augmentation that makes it less confident lowers the
    validation cross-entropy whether or not it helps it classify; temperature scaling (Guo et
    al., 2017) removes that part after training at the cost of one scalar. Scaling the
    validation logits by the best inverse temperature `b*` of the batch, with `b*` held
    constant (`stop_gradient`), leaves a hypergradient that credits the augmenter for what
    temperature scaling cannot fix: `d/dw CE(b* z)`, not `d/dw CE(z)`.

    `b*` minimises `mean(logsumexp(b z) - b z_y)`, convex in `b`: Newton's method from `b = 1`
    (first derivative `E_p[z] - z_y`, second `Var_p[z]`, averaged over the batch), a fixed
    number of `iterations` so it compiles under XLA, each step clipped to a factor of 2 and
    `b` kept in `[1e-2, 1e2]`.

    Args:
        logits: `[N, C]` logits (any float dtype; fitted in float32).
        labels: `[N]` (or `[N, 1]`) integer labels or `[N, C]` one-hot (or soft) labels.
        iterations: Newton steps.

    Returns:
        `logits * b*`, in the logits' dtype.
    """
    z = tf.stop_gradient(tf.cast(logits, tf.float32))
    classes = logits.shape[-1]
    if labels.shape.rank == logits.shape.rank and labels.shape[-1] == classes != 1:
        target = tf.cast(labels, tf.float32)  # one-hot or soft labels
    else:
        target = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), tf.shape(z)[-1])
    z_y = tf.reduce_sum(target * z, axis=-1) / tf.maximum(
        tf.reduce_sum(target, axis=-1), 1e-12)
    log_b = tf.zeros([])
    for _ in range(iterations):
        b = tf.exp(log_b)
        p = tf.nn.softmax(b * z)
        mean_z = tf.reduce_sum(p * z, axis=-1)
        first = tf.reduce_mean(mean_z - z_y)
        second = tf.reduce_mean(tf.reduce_sum(p * tf.square(z), axis=-1) - tf.square(mean_z))
        # Newton in b, taken as a step in log b (|step| <= log 2) so b stays positive.
        step = tf.math.divide_no_nan(first, second) / b
        log_b = tf.clip_by_value(log_b - tf.clip_by_value(step, -0.6931, 0.6931),
                                 -4.6052, 4.6052)
    return logits * tf.cast(tf.stop_gradient(tf.exp(log_b)), logits.dtype)
