"""Digits: the default `python run.py` job (DABO on scikit-learn's embedded 8x8 digits).

    python run.py                      # same as: python run.py --experiment=digits

Expected: about 2 minutes on 2 CPU cores (measured: ~2 min wall time on a shared 2-core
machine, test accuracy ~96%); no download, works offline. `--mode=none` takes ~35 s.

The 1,797 images are split 1,006 train / 252 validation / 539 test, upsampled to 32x32 and
classified by `small_cnn` (66k parameters). The learned augmenter is the distribution
augmenter over the six affine ops, trained with Adam. The hand policy (for `--mode=hand`)
is crop and a small rotation: digits must not be flipped.
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
        augmenter_lr=0.01,
        hand_policy=("crop", "rotate"),
    )
    if variant == "smoke":
        from experiments import shrink

        config = shrink(config)
    return config
