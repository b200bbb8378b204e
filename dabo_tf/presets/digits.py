"""Digits: the default `python run.py` job (DABO on scikit-learn's embedded 8x8 digits).

    python run.py                      # same as: python run.py --experiment=digits

Expected: about 1.5-2 minutes on 2 CPU cores (measured: 74 s wall time with the 10F step,
119.5 s with the unpaired half trained in a CI run on 2026-12-03, whose machine speed
varies), test accuracy about 97-98% (97.96% on the last run, 2026-12-07; CPU runs are not
bit-exact and move by about +-1 point); no download, works offline. For comparison, the same
15 epochs of `--mode=none` gave 97.59% in 32 s and `--mode=hand` (crop and rotate) 95.36% in
37 s (one run each): with 1,006 centred training digits little augmentation helps, and
DABO's learned ranges stay small (rotation +-6 degrees, shifts +-2-3%, scales within 2%).

The 1,797 images are split 1,006 train / 252 validation / 539 test, upsampled to 32x32 and
classified by `small_cnn` (66k parameters). The learned augmenter is the library default
(`dabo_tf.recipe.build_learned_augmenter`): ranges centred on the identity over the six affine
ops, log half-widths from a twentieth of each op's limit, Adam at 0.03, the normalised
look-ahead and mirrored pairs (README, *How the augmentation is learned*). The warp fills with
zeros, the digits' black background: a reflected border would add strokes (the development
suite measured it, `benchmarks/quality.py --ablation`, variant `reflect`). The hand policy
(for `--mode=hand`) is crop and a small rotation: digits must not be flipped.
"""


def get_config(variant=None) -> dict:
    config = dict(
        dataset="digits",
        image_size=32,
        model="small_cnn",
        epochs=15,
        batch_size=64,
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        lr_schedule="cosine",
        val_fraction=0.2,
        mode="dabo",
        augmenter="distribution",
        fill_mode="constant",  # digits are white on a black (zero) background
        augmenter_optimizer="adam",
        hand_policy=("crop", "rotate"),
    )
    if variant == "smoke":
        from dabo_tf.presets import shrink

        config = shrink(config)
    return config
