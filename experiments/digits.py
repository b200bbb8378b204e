"""Digits: the default `python run.py` job (DABO on scikit-learn's embedded 8x8 digits).

    python run.py                      # same as: python run.py --experiment=digits

Expected: about 2 minutes on 2 CPU cores (measured: 2 min 8 s wall time, `python run.py` on a
shared 2-core machine), test accuracy 97.2-97.6% (two runs; CPU runs are not bit-exact); no
download, works offline. For comparison, 15 epochs of `--mode=none` take ~35 s (97.8%) and
`--mode=hand` (crop and rotate) ~47 s (95.7%): on these tiny, centred digits a learned
augmentation brings no gain over none in 15 epochs.

The 1,797 images are split 1,006 train / 252 validation / 539 test, upsampled to 32x32 and
classified by `small_cnn` (66k parameters). The learned augmenter is the distribution
augmenter over the six affine ops, trained with Adam at 0.003 (0.01 gave 95.7-96.1%). The
hand policy (for `--mode=hand`) is crop and a small rotation: digits must not be flipped.
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
        augmenter_optimizer="adam",
        augmenter_lr=0.003,
        hand_policy=("crop", "rotate"),
    )
    if variant == "smoke":
        from experiments import shrink

        config = shrink(config)
    return config
